"""Detection readers on tiny trees written here (COCO json, Pascal VOC, Cityscapes with Foggy
Cityscapes, a folder of unlabelled images), their errors, and the bundled shapes benchmark."""

import json
import logging
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import ToTensor

from mic import DatasetError
from mic.core.batch import split_sample
from mic.datasets import UnlabeledImageFolder
from mic.datasets.detection import (
    CityscapesDetection,
    CocoDetection,
    ShapesDetection,
    VOCDetection,
)
from tests.det_helpers import task as det_task


def _png(path, h=20, w=30, value=120, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "RGB":
        Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)
    else:
        Image.fromarray(value).save(path)
    return path


# ------------------------------------------------------------------------------------ COCO
def _coco(tmp_path, annotations=None, images=None, categories=None):
    root = tmp_path / "coco"
    _png(root / "images" / "a.png")
    _png(root / "images" / "b.png")
    data = {
        "images": images
        if images is not None
        else [
            {"id": 1, "file_name": "a.png", "height": 20, "width": 30},
            {"id": 2, "file_name": "b.png", "height": 20, "width": 30},
        ],
        "annotations": annotations
        if annotations is not None
        else [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 5], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 9, "bbox": [0, 0, 30, 20], "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 9, "bbox": [1, 1, 2, 2], "iscrowd": 1},
        ],
        "categories": categories
        if categories is not None
        else [{"id": 9, "name": "bus"}, {"id": 7, "name": "car"}, {"id": 8, "name": "bike"}],
    }
    path = root / "ann.json"
    path.write_text(json.dumps(data))
    return root / "images", path


def test_coco_reader(tmp_path):
    images, ann = _coco(tmp_path)
    ds = CocoDetection(images, ann)
    assert ds.classes == ["car", "bike", "bus"] and ds.num_classes == 3  # by category id
    image, target = ds[0]
    assert image.shape == (3, 20, 30) and image.min() >= 0 and image.max() <= 1
    assert target["boxes"].tolist() == [[2, 3, 12, 8], [0, 0, 30, 20]]  # crowd left out
    assert target["labels"].tolist() == [0, 2]
    _, empty = ds[1]  # an image without objects is valid
    assert empty["boxes"].shape == (0, 4)
    only = CocoDetection(images, ann, classes=["bus"])
    assert only[0][1]["labels"].tolist() == [0]
    (said,) = only.found_problems  # the car box left out, as asked, but said (it was not)
    assert said.warning and said.detail == "1 annotation of car (1)"
    assert "{reader}.classes" in said.fix
    assert isinstance(CocoDetection(images, ann, labelled=False)[0], torch.Tensor)
    # the detection task batches it
    batch_images, batch_targets = det_task().collate([ds[0], ds[1]])
    assert batch_images.shape == (2, 3, 20, 30) and len(batch_targets) == 2


def test_the_data_check_counts_the_crowd_and_difficult_objects_left_out(tmp_path, caplog):
    """Left out of training by the data sets' protocols, they were counted nowhere: a set
    of many crowd regions trained on fewer boxes than it seemed, without a word."""
    import logging

    from mic.datasets.preflight import check_datasets

    images, ann = _coco(tmp_path)
    xml = _voc_xml([("dog", (1, 2, 10, 12), 0), ("cat", (5, 5, 30, 20), 1)])
    voc = VOCDetection(_voc(tmp_path, {"000001": xml}), "train")
    with caplog.at_level(logging.INFO, logger="mic.datasets.preflight"):
        check_datasets({"source": CocoDetection(images, ann), "test": voc})
    assert "1 iscrowd annotations (crowd regions; ++dataset.source.skip_crowd=" in caplog.text
    assert "test: 1 objects marked difficult (++dataset.test.keep_difficult=true" in caplog.text


def test_crowd_and_difficult_objects_can_be_kept_for_evaluation_to_ignore(tmp_path):
    images, ann = _coco(tmp_path)
    target = CocoDetection(images, ann, ignore_crowd=True)[0][1]
    assert target["boxes"].tolist() == [[2, 3, 12, 8], [0, 0, 30, 20], [1, 1, 3, 3]]
    assert target["iscrowd"].tolist() == [0, 0, 1]
    assert "iscrowd" not in CocoDetection(images, ann)[0][1]  # training: left out, no flags
    xml = _voc_xml([("dog", (1, 2, 10, 12), 0), ("cat", (5, 5, 30, 20), 1)])
    target = VOCDetection(_voc(tmp_path, {"000001": xml}), "train", ignore_difficult=True)[0][1]
    assert target["labels"].tolist() == [11, 7] and target["iscrowd"].tolist() == [0, 1]
    # the metric ignores a flagged object: missing it is no miss (flags dropped: it is one)
    from mic.tasks.detection import DetectionTask

    found = {
        "boxes": target["boxes"][:1],
        "scores": torch.tensor([0.9]),
        "labels": target["labels"][:1],
    }
    unflagged = {k: v for k, v in target.items() if k != "iscrowd"}
    for truth, expected in ((target, 1.0), (unflagged, 0.5)):
        metric = DetectionTask(20).metric()
        metric.update([found], [truth])
        assert metric.compute()["map_50"] == pytest.approx(expected)


def test_coco_errors(tmp_path):
    images, ann = _coco(tmp_path)
    ann.write_text("")
    with pytest.raises(DatasetError, match="is empty"):
        CocoDetection(images, ann)
    ann.write_text("{not json")
    with pytest.raises(DatasetError, match="not valid json"):
        CocoDetection(images, ann)
    images, ann = _coco(tmp_path, images=[])
    with pytest.raises(DatasetError, match="lists no images"):
        CocoDetection(images, ann)
    bad = [{"id": 5, "image_id": 1, "category_id": 7, "bbox": [2, 3, 0, 5]}]
    images, ann = _coco(tmp_path, annotations=bad)
    with pytest.raises(DatasetError, match=r"a\.png.*degenerate box"):
        CocoDetection(images, ann)
    outside = [{"id": 5, "image_id": 1, "category_id": 7, "bbox": [25, 3, 20, 5]}]
    images, ann = _coco(tmp_path, annotations=outside)
    with pytest.raises(DatasetError, match="outside the 30 x 20"):
        CocoDetection(images, ann)
    unknown = [{"id": 5, "image_id": 1, "category_id": 99, "bbox": [2, 3, 5, 5]}]
    images, ann = _coco(tmp_path, annotations=unknown)
    with pytest.raises(DatasetError, match="category_id 99"):
        CocoDetection(images, ann)
    images, ann = _coco(tmp_path)
    with pytest.raises(DatasetError, match=r"\['truck'\] are not categories"):
        CocoDetection(images, ann, classes=["truck"])


# ------------------------------------------------------------------------------------- VOC
def _voc_xml(objects, w=30, h=20):
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects
    )
    return f"<annotation><size><width>{w}</width><height>{h}</height></size>{objs}</annotation>"


def _voc(tmp_path, xmls):
    root = tmp_path / "VOC2007"
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for name, xml in xmls.items():
        _png(root / "JPEGImages" / f"{name}.jpg")
        (root / "Annotations" / f"{name}.xml").write_text(xml)
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(xmls) + "\n")
    return root


def test_voc_reader(tmp_path):
    root = _voc(
        tmp_path,
        {
            "000001": _voc_xml([("dog", (1, 2, 10, 12), 0), ("cat", (5, 5, 30, 20), 1)]),
            "000002": _voc_xml([]),
        },
    )
    ds = VOCDetection(root, "train")
    assert ds.num_classes == 20
    image, target = ds[0]
    assert image.shape == (3, 20, 30)
    assert target["boxes"].tolist() == [[0, 1, 10, 12]]  # 1-based to 0-based; difficult dropped
    assert target["labels"].tolist() == [11]  # dog
    assert ds[1][1]["boxes"].shape == (0, 4)
    assert len(VOCDetection(root, "train", keep_difficult=True)[0][1]["boxes"]) == 2
    small = VOCDetection(root, "train", classes=["cat", "dog"], keep_difficult=True)
    assert small[0][1]["labels"].tolist() == [1, 0]
    # some exporters write the flag as a word: "True" was read as not difficult
    (root / "Annotations" / "000001.xml").write_text(
        _voc_xml([("dog", (1, 2, 10, 12), "False"), ("cat", (5, 5, 30, 20), " True ")])
    )
    assert VOCDetection(root, "train")[0][1]["labels"].tolist() == [11]


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("", "is empty"),
        ("<annotation><object>", "not valid XML"),
        (_voc_xml([("dragon", (1, 1, 5, 5), 0)]), "class 'dragon'"),
        (_voc_xml([("dog", (8, 1, 5, 5), 0)]), "degenerate box"),
        (_voc_xml([("dog", (1, 1, 50, 5), 0)]), "outside the 30 x 20"),
    ],
)
def test_voc_errors(tmp_path, xml, message):
    root = _voc(tmp_path, {"000001": xml})
    with pytest.raises(DatasetError, match=message):
        VOCDetection(root, "train")


def test_voc_size_0_means_unstated_and_boxes_are_checked_against_the_image(tmp_path):
    root = _voc(tmp_path, {"000001": _voc_xml([("dog", (1, 2, 10, 12), 0)], w=0, h=0)})
    assert VOCDetection(root, "train")[0][1]["boxes"].tolist() == [[0, 1, 10, 12]]
    root = _voc(tmp_path / "far", {"000001": _voc_xml([("dog", (1, 1, 50, 5), 0)], w=0, h=0)})
    with pytest.raises(DatasetError, match="outside the 30 x 20"):
        VOCDetection(root, "train")[0]


def test_voc_missing_split(tmp_path):
    root = _voc(tmp_path, {"000001": _voc_xml([])})
    with pytest.raises(DatasetError, match=r"split file.*does not exist") as missing:
        VOCDetection(root, "val")
    said = "(the split files of ImageSets/Main: train; choose the split with split=, in mic-train"
    assert said in str(missing.value)
    (root / "ImageSets" / "Main" / "val.txt").write_text("\n")
    (root / "ImageSets" / "Main" / "dog_train.txt").write_text("000001 1\n")  # (a class's)
    with pytest.raises(DatasetError, match=re.escape("is empty (it lists no image id) (the sp")):
        VOCDetection(root, "val")


def test_voc_root_a_level_off_names_the_folder_that_holds_the_dataset(tmp_path):
    root = _voc(tmp_path / "VOCdevkit", {"000001": _voc_xml([])})
    for given in (root.parent, root / "JPEGImages"):
        with pytest.raises(DatasetError, match=f"'{root}' holds 'ImageSets/'"):
            VOCDetection(given, "train")


# ------------------------------------------------------------------------------ Cityscapes
def _cityscapes(tmp_path):
    root = tmp_path / "cityscapes"
    name = "aachen_000000_000019"
    for split in ("train", "val"):
        _png(root / "leftImg8bit" / split / "aachen" / f"{name}_leftImg8bit.png", 16, 24)
        for beta in (0.01, 0.02):
            foggy = root / "leftImg8bit_foggy" / split / "aachen"
            _png(foggy / f"{name}_leftImg8bit_foggy_beta_{beta}.png", 16, 24, value=200)
        ids = np.zeros((16, 24), np.int32)
        ids[2:6, 3:9] = 26001  # a car
        ids[8:15, 10:12] = 24000  # a person
        ids[0:16, 20:24] = 26002  # another car
        ids[10:12, 0:2] = 33000  # a bicycle of 4 pixels: below min_pixels
        ids[12:16, 0:5] = 7  # road (no instance)
        ids[0:2, 12:15] = 29000  # a caravan: not one of the 8 classes
        ids[14:16, 14:18] = 26  # a group of cars: no instance, left out as published
        gt = root / "gtFine" / split / "aachen" / f"{name}_gtFine_instanceIds.png"
        gt.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ids.astype(np.uint16)).save(gt)
    return root


def test_cityscapes_root_a_level_off_names_the_folder_that_holds_the_dataset(tmp_path):
    root = _cityscapes(tmp_path)
    for given in (tmp_path, root / "gtFine"):
        with pytest.raises(DatasetError, match=f"'{root}' holds 'leftImg8bit/'"):
            CityscapesDetection(given, "train")
    CityscapesDetection(root, "val", foggy=True)
    with pytest.raises(DatasetError, match=f"'{root}' holds 'leftImg8bit_foggy/'"):  # foggy too
        CityscapesDetection(tmp_path, "val", foggy=True)


def test_cityscapes_boxes_from_instance_ids(tmp_path):
    root = _cityscapes(tmp_path)
    ds = CityscapesDetection(root, "train")
    assert ds.num_classes == 8
    image, target = ds[0]
    assert image.shape == (3, 16, 24)
    rows = sorted(zip(target["labels"].tolist(), target["boxes"].tolist(), strict=True))
    assert rows == [(0, [10, 8, 12, 15]), (2, [3, 2, 9, 6]), (2, [20, 0, 24, 16])]
    assert len(CityscapesDetection(root, "train", min_pixels=1)[0][1]["boxes"]) == 4


def test_cityscapes_instance_files_missing_or_not_16_bit_are_named_where_read(tmp_path):
    root = _cityscapes(tmp_path)
    gt = next((root / "gtFine" / "train").glob("*/*_instanceIds.png"))
    # a labelIds file renamed: read as ids, it gave an image without boxes, without a word
    Image.fromarray(np.full((16, 24), 26, np.uint8)).save(gt)
    with pytest.raises(DatasetError, match=rf"'{re.escape(str(gt))}' is L: gtFine's .* 16-bit"):
        CityscapesDetection(root, "train")[0]
    gt.unlink()
    with pytest.raises(DatasetError) as missing:
        CityscapesDetection(root, "train")
    assert f"Missing instance annotation files (1): '{gt}' (no such file)." in str(missing.value)
    # a labelled set is not told to go without labels, as if it were the target
    assert "Only a target training set may go without labels" in str(missing.value)


def test_foggy_cityscapes_at_the_chosen_beta(tmp_path):
    root = _cityscapes(tmp_path)
    foggy = CityscapesDetection(root, "val", foggy=True)  # beta 0.02 by default
    assert foggy.files[0].name.endswith("_leftImg8bit_foggy_beta_0.02.png")
    image, target = foggy[0]
    assert image.mean() == pytest.approx(200 / 255)
    assert len(target["boxes"]) == 3  # boxes from the clear image's gtFine
    assert (
        CityscapesDetection(root, "val", foggy=True, beta=0.01)
        .files[0]
        .name.endswith("beta_0.01.png")
    )
    unlabelled = CityscapesDetection(root, "train", foggy=True, labelled=False)
    assert isinstance(unlabelled[0], torch.Tensor)
    missing = re.escape("no '*_leftImg8bit_foggy_beta_0.005.png' images")
    with pytest.raises(DatasetError, match=missing):
        CityscapesDetection(root, "val", foggy=True, beta=0.005)
    with pytest.raises(DatasetError, match=re.escape("beta 0.005, 0.01 and 0.02")):
        CityscapesDetection(root, "val", foggy=True, beta=0.3)
    text = CityscapesDetection(root, "val", foggy=True, beta="0.01")  # beta: "0.01" in YAML
    assert text.files[0].name.endswith("beta_0.01.png")
    with pytest.raises(DatasetError, match=re.escape("got beta='dense'")):
        CityscapesDetection(root, "val", foggy=True, beta="dense")
    # a fog density not on disk: those that are, named
    with pytest.raises(DatasetError, match=re.escape("(it holds beta 0.01, 0.02: set beta")):
        CityscapesDetection(root, "val", foggy=True, beta=0.005)
    # Foggy Cityscapes (a download of its own) not under the Cityscapes root: foggy_root named
    moved = shutil.move(root / "leftImg8bit_foggy", tmp_path / "foggy")
    with pytest.raises(DatasetError, match=r"give its folder as foggy_root \(mic-train: dataset"):
        CityscapesDetection(root, "val", foggy=True)
    assert len(CityscapesDetection(root, "val", foggy=True, foggy_root=moved)) == 1


def test_cityscapes_missing_annotation(tmp_path):
    root = _cityscapes(tmp_path)
    for f in (root / "gtFine" / "val").rglob("*.png"):
        f.unlink()
    with pytest.raises(DatasetError, match="Missing instance annotation files"):
        CityscapesDetection(root, "val")


# ------------------------------------------------------------------------ unlabelled folder
def test_any_folder_of_unlabelled_target_images(tmp_path):
    _png(tmp_path / "t" / "x.png", 20, 30)
    _png(tmp_path / "t" / "sub" / "y.jpg", 40, 10)
    ds = UnlabeledImageFolder(tmp_path / "t", transform=ToTensor())
    # two images of different sizes: a list of two, which must not read as (image, target)
    images, targets = split_sample(det_task().collate([ds[0], ds[1]]))
    assert targets is None and isinstance(images, list)
    assert {tuple(x.shape) for x in images} == {(3, 40, 10), (3, 20, 30)}


# ------------------------------------------------------------------------------- shapes
def test_shapes_benchmark_is_deterministic_valid_and_foggy():
    src = ShapesDetection("source", "train", size=64, length=6)
    tgt = ShapesDetection("target", "train", size=64, length=6)
    a, ta = src[3]
    b, tb = ShapesDetection("source", "train", size=64, length=6)[3]
    assert torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"])
    for i in range(6):
        image, target = src[i]
        assert image.shape == (3, 64, 64) and image.min() >= 0 and image.max() <= 1
        assert 1 <= len(target["boxes"]) <= 6
        assert (target["labels"] < ShapesDetection.num_classes).all()
    # fog pulls every pixel toward the grey airlight (0.8); the same scenes without fog are
    # farther from it, and their objects lie where the foggy ones do
    clear = ShapesDetection("target", "train", size=64, length=6, beta=0.0)
    for i in range(6):
        (foggy, t_fog), (plain, t_plain) = tgt[i], clear[i]
        assert torch.equal(t_fog["boxes"], t_plain["boxes"])
        assert (foggy - 0.8).abs().mean() < 0.8 * (plain - 0.8).abs().mean()
    # disjoint splits: the test split is other scenes
    assert not torch.equal(ShapesDetection("target", "test", size=64)[0][0], tgt[0][0])
    assert isinstance(ShapesDetection("target", "train", labelled=False, length=2)[0], torch.Tensor)


def test_a_cityscapes_image_without_its_foggy_copy_is_named_not_left_out_in_silence(
    tmp_path, caplog
):
    root = _cityscapes(tmp_path)
    clear = root / "leftImg8bit" / "val" / "aachen" / "aachen_000000_000020_leftImg8bit.png"
    _png(clear, 16, 24)  # a second image, whose foggy copy the download lacks
    with caplog.at_level(logging.WARNING, logger="mic"):
        foggy = CityscapesDetection(root, "val", foggy=True, labelled=False)
    assert len(foggy) == 1  # read as it is
    said = "Cityscapes images without a foggy copy (1): '" + str(
        root / "leftImg8bit_foggy" / "val" / "aachen"
    )
    assert (
        said + "/aachen_000000_000020_leftImg8bit_foggy_beta_0.02.png' (not there)" in caplog.text
    )
    assert [p.warning for p in foggy.found_problems] == [True]
    assert CityscapesDetection(root, "train", foggy=True).found_problems == []  # complete
