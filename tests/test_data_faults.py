"""Data as users bring it, on tiny inputs written here: image modes, hidden files, text files
from editors, EXIF orientation, labels of another size or format, binary masks saved as 0/255,
rare class statistics of labels in another folder, and the check before training
(``preflight``) that reports every problem at once, through ``mic-train`` in a subprocess."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from mic import ConfigError, DatasetError
from mic.datasets import ImageFolder, ImageList, UnlabeledImageFolder, load_image
from mic.datasets.detection import CocoDetection, VOCDetection
from mic.datasets.files import read_header
from mic.datasets.preflight import LISTED, check_datasets, collecting_problems
from mic.datasets.segmentation import (
    GTA5,
    Cityscapes,
    RareClassSampling,
    SegmentationFolder,
    SegmentationTransform,
)
from mic.datasets.segmentation.sampling import STATS_FILE
from mic.experiment import load_config, run_experiment
from tests.cli import run_mic_train
from tests.helpers import (
    TINY_RUN,
    class_folders,
    folder_overrides,
    seg_folder_overrides,
    seg_tree,
    two_class_label,
    write_label,
    write_png,
)

pytestmark = pytest.mark.usefixtures("one_thread")

APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        "  # a resource fork's header


def _hidden_files(folder):
    """What macOS, Jupyter and zip tools leave beside images: none of it is a sample."""
    (folder / "._0.png").write_bytes(APPLEDOUBLE)
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    write_png(folder / ".ipynb_checkpoints" / "0-checkpoint.png")
    (folder / "__MACOSX").mkdir(exist_ok=True)
    (folder / "__MACOSX" / "._1.png").write_bytes(APPLEDOUBLE)


# ----------------------------------------------------------------------------- image modes
def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize(
    ("name", "make", "grey"),
    [  # (file, how it is written, the 8-bit grey value it must load as)
        ("i16.png", lambda p: _save(p, np.full((4, 5), 30000, np.uint16)), 117),
        ("i16.tif", lambda p: _save(p, np.full((4, 5), 65535, np.uint16)), 255),
        ("i32.tif", lambda p: _save(p, np.full((4, 5), 257 * 40, np.int32)), 40),
        ("f.tif", lambda p: _save(p, np.full((4, 5), 0.5, np.float32)), 128),
        ("la.png", lambda p: _save(p, np.full((4, 5, 2), (90, 7), np.uint8), "LA"), 90),
        ("bw.png", lambda p: Image.new("1", (5, 4), 1).save(p), 255),
        ("p.png", lambda p: Image.new("L", (5, 4), 70).convert("P").save(p), 70),
        ("cmyk.tif", lambda p: Image.new("CMYK", (5, 4), (0, 0, 0, 155)).save(p), 100),
        ("rgba.png", lambda p: _save(p, np.full((4, 5, 4), (60, 60, 60, 0), np.uint8)), 60),
    ],
)
def test_every_image_mode_loads_as_8_bit_rgb(tmp_path, name, make, grey):
    path = tmp_path / name
    make(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (5, 4)
    assert np.abs(np.asarray(image).astype(int) - grey).max() <= 1, np.asarray(image)[0, 0]


def test_16_bit_greyscale_keeps_its_contrast(tmp_path):
    ramp = (np.arange(20, dtype=np.uint16) * 3000).reshape(4, 5)
    pixels = np.asarray(load_image(_save(tmp_path / "ramp.png", ramp)))[..., 0]
    assert len(np.unique(pixels)) == 20  # Pillow's own conversion: 255 everywhere
    assert pixels.min() == 0 and pixels.max() == round(57000 * 255 / 65535)


def test_labelme_json_files_where_label_maps_belong_are_not_offered_as_labels(tmp_path):
    """The message advised label_suffix=.json, which then failed as unreadable images."""
    root = seg_tree(tmp_path / "seg", n=2)
    for path in (root / "lbl").glob("*.png"):
        path.with_suffix(".json").write_text('{"shapes": []}')
        path.unlink()
    with pytest.raises(DatasetError) as info:
        SegmentationFolder(root / "img", root / "lbl", num_classes=2).preflight()
    assert "label_suffix=.json" not in str(info.value)
    assert "are there, but they are no images: labels are PNG maps" in str(info.value)


def test_a_class_folder_named_in_another_unicode_form_is_said_to_be_one(tmp_path):
    """'café' written by macOS (decomposed) beside the source's 'café' (composed): the message
    said "rename them ('café' -> 'café')", two names that look the same."""
    import unicodedata

    nfc, nfd = (unicodedata.normalize(f, "café") for f in ("NFC", "NFD"))
    root = class_folders(tmp_path / "test", ["a", nfd])
    with pytest.raises(DatasetError, match="differ only in how Unicode composes"):
        ImageFolder(root, classes=["a", nfc])


def test_images_that_are_their_own_labels_beside_json_files_are_not_told_to_read_them(
    tmp_path,
):
    """Labels pointed at the image folder, LabelMe's JSON beside the images: the message
    advised label_suffix=.json, which then failed as unreadable images."""
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(2):
        write_png(folder / f"{i}.png")
        (folder / f"{i}.json").write_text("{}")
    with pytest.raises(DatasetError, match="is its own label file") as info:
        SegmentationFolder(folder, folder, num_classes=2)
    assert "label_suffix=.json" not in str(info.value)


def test_a_class_folder_of_gifs_alone_says_they_are_not_read(tmp_path):
    """The message said the folder had no images, and said nothing of the GIFs in it."""
    root = class_folders(tmp_path / "src", ["a", "c"])
    (root / "b").mkdir()
    for i in range(2):
        Image.new("RGB", (8, 8)).save(root / "b" / f"{i}.gif")
    with pytest.raises(DatasetError, match=r"without images \['b'\] \(2 file\(s\) of formats "):
        ImageFolder(root, classes=["a", "b", "c"])


def test_12_bit_data_in_16_bit_files_is_warned_of_once(tmp_path, monkeypatch):
    """A 12-bit camera's values (0..4095) in 16-bit PNGs load with at most 17 grey levels,
    near black: said once per process, naming the first file."""
    import mic.datasets.files as files

    monkeypatch.setattr(files, "_LOW_BITS_SAID", [])
    ramp = (np.arange(64 * 64) % 4096).astype(np.uint16).reshape(64, 64)
    first, second = (_save(tmp_path / f"{i}.png", ramp) for i in range(2))
    said = r"0.png. \(16-bit, I;16\) has values that reach only 4095 "
    with pytest.warns(UserWarning, match=said):
        assert np.asarray(load_image(first)).max() == 16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image(second)
        load_image(_save(tmp_path / "full.png", ramp * 16))  # the full 16 bits


def test_images_whose_values_cannot_be_read_as_8_bit_are_refused(tmp_path):
    with pytest.raises(DatasetError, match=r"f\.tif' holds floating-point values in \[3, 3\]"):
        load_image(_save(tmp_path / "f.tif", np.full((2, 2), 3.0, np.float32)))
    with pytest.raises(DatasetError, match=r"i\.tif' is a I image with values in \[-5, -5\]"):
        load_image(_save(tmp_path / "i.tif", np.full((2, 2), -5, np.int32)))


# ---------------------------------------------------------------------------- hidden files
def test_hidden_files_and_folders_are_never_samples(tmp_path):
    classes = class_folders(tmp_path / "cls", ["a", "b"])
    _hidden_files(classes / "a")
    _hidden_files(classes)
    assert len(ImageFolder(classes)) == 4 and ImageFolder(classes).classes == ["a", "b"]
    assert len(UnlabeledImageFolder(classes)) == 4
    seg = seg_tree(tmp_path / "seg", n=2)
    _hidden_files(seg / "img")
    assert len(SegmentationFolder(seg / "img", seg / "lbl", num_classes=2)) == 2
    gta = tmp_path / "gta"
    write_png(gta / "images" / "00001.png")
    write_label(gta / "labels" / "00001.png", np.full((10, 10), 7))
    (gta / "images" / "._00001.png").write_bytes(APPLEDOUBLE)
    assert [p.name for p, _ in GTA5(gta).samples] == ["00001.png"]
    city = tmp_path / "cityscapes"
    name = "aachen_000000_000019"
    write_png(city / "leftImg8bit" / "val" / "aachen" / f"{name}_leftImg8bit.png")
    (city / "leftImg8bit" / "val" / "aachen" / f"._{name}_leftImg8bit.png").write_bytes(APPLEDOUBLE)
    assert len(Cityscapes(city, "val", labelled=False)) == 1


# ------------------------------------------------------------------------------ text files
def test_image_lists_read_as_editors_save_them(tmp_path):
    for c in ("a", "b"):
        write_png(tmp_path / "train" / c / "x 1.png")  # a space in the name
    lines = ["a/x 1.png 0  ", "", "b/x 1.png\t1 "]
    encodings = {
        "bom_crlf.txt": b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n",
        "utf16.txt": "\r\n".join(lines).encode("utf-16"),  # Notepad's "Unicode"
        "cr.txt": "\r".join(lines).encode(),
    }
    for name, data in encodings.items():
        (tmp_path / "train" / name).write_bytes(data)
        ds = ImageList(tmp_path / "train" / name, ["a", "b"])
        assert [(p.relative_to(tmp_path).as_posix(), y) for p, y in ds.samples] == [
            ("train/a/x 1.png", 0),
            ("train/b/x 1.png", 1),
        ], name
    (tmp_path / "bad.txt").write_bytes(b"a/x.png 0\n\xff\xfe\xfa 1\n")
    with pytest.raises(DatasetError, match="is not UTF-8 text"):
        ImageList(tmp_path / "bad.txt", ["a", "b"])


def test_annotation_files_with_a_byte_order_mark(tmp_path):
    voc = tmp_path / "voc"
    write_png(voc / "JPEGImages" / "000001.jpg", size=(30, 20))
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "train.txt").write_bytes(b"\xef\xbb\xbf000001\r\n")
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>\r\n<annotation><size><width>30</width>'
        "<height>20</height></size><object><name>car</name><bndbox><xmin>2</xmin><ymin>3"
        "</ymin><xmax>12</xmax><ymax>8</ymax></bndbox></object></annotation>\r\n"
    )
    (voc / "Annotations").mkdir()
    (voc / "Annotations" / "000001.xml").write_bytes(b"\xef\xbb\xbf" + xml.encode())
    assert VOCDetection(voc, "train", classes=["car"]).targets[0]["boxes"].tolist() == [
        [1, 2, 12, 8]
    ]
    write_png(tmp_path / "coco" / "a.png", size=(30, 20))
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 30, "height": 20}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
        "categories": [{"id": 1, "name": "car"}],
    }
    (tmp_path / "ann.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(data).encode())
    assert len(CocoDetection(tmp_path / "coco", tmp_path / "ann.json")) == 1


# -------------------------------------------------------------------------- EXIF orientation
def _phone_photo(path, upright: np.ndarray, orientation: int = 6) -> None:
    """A JPEG whose stored pixels are ``upright`` turned a quarter left, with the EXIF tag
    that turns them back (6: rotate 90 degrees clockwise to show), as phones save them."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    stored.save(path, exif=exif, quality=95)


def _coco_photo(tmp_path, stated=(20, 30), bbox=(2, 20, 6, 8)):
    """An upright 20 x 30 (W x H) photo with a white patch at x 2..8, y 20..28, drawn on the
    upright image; the json states ``stated`` (W, H) and one box ``bbox`` (x y w h)."""
    upright = np.zeros((30, 20, 3), np.uint8)
    upright[20:28, 2:8] = 255
    _phone_photo(tmp_path / "images" / "phone.jpg", upright)
    data = {
        "images": [{"id": 1, "file_name": "phone.jpg", "width": stated[0], "height": stated[1]}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": list(bbox)}],
        "categories": [{"id": 1, "name": "sign"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    return tmp_path / "images", tmp_path / "ann.json"


def test_exif_orientation_puts_boxes_on_the_right_pixels(tmp_path):
    images, ann = _coco_photo(tmp_path)
    header = read_header(images / "phone.jpg")
    assert header.size == (20, 30) and header.stored_size == (30, 20)
    ds = CocoDetection(images, ann)
    image, target = ds[0]
    assert image.shape == (3, 30, 20)
    x1, y1, x2, y2 = (int(v) for v in target["boxes"][0])
    inside = image[:, y1 + 1 : y2 - 1, x1 + 1 : x2 - 1]
    assert inside.mean() > 0.9 and image.mean() < 0.15  # the box holds the white patch
    assert ds.preflight() == []
    # read as stored, the box falls outside the image, and the check says which option reads it
    stored = CocoDetection(images, ann, apply_exif_orientation=False)
    (problem,) = stored.preflight()
    assert problem.file.endswith("phone.jpg") and "stated 20 x 30" in problem.detail
    assert "apply_exif_orientation=true" in problem.fix


def test_stated_size_of_the_stored_pixels_is_named(tmp_path):
    images, ann = _coco_photo(tmp_path, stated=(30, 20), bbox=(1, 1, 4, 4))
    with pytest.raises(DatasetError) as info:
        check_datasets({"source": CocoDetection(images, ann)})
    message = str(info.value)
    assert "Images whose size differs from the annotation's (1)" in message
    assert (
        "phone.jpg' (stated 30 x 20, the file is 20 x 30 after its EXIF orientation 6)" in message
    )
    assert "++dataset.source.apply_exif_orientation=false" in message


def test_a_quarter_turned_photo_whose_annotation_states_no_size_is_warned_of(tmp_path):
    """Without a stated width and height, boxes drawn on the stored pixels of a sideways
    phone photo fit inside the turned image too, and trained on the wrong pixels without a
    word; the stated size tells the two apart, and then nothing is said."""
    images, ann = _coco_photo(tmp_path, bbox=(1, 1, 4, 4))
    data = json.loads(ann.read_text())
    del data["images"][0]["width"], data["images"][0]["height"]
    ann.write_text(json.dumps(data))
    (warned,) = CocoDetection(images, ann).preflight()
    assert warned.warning and warned.file.endswith("phone.jpg")
    assert warned.detail == (
        "EXIF orientation 6: a quarter turn, and its annotation states no image size"
    )
    assert "{reader}.apply_exif_orientation=false" in warned.fix and "boxes" in warned.fix
    assert CocoDetection(images, ann, apply_exif_orientation=False).preflight() == []
    assert CocoDetection(images, _coco_photo(tmp_path / "sized")[1]).preflight() == []
    # a box past the stored pixels (30 x 20) fits the turned image alone: settled, no warning
    data["annotations"][0]["bbox"] = [2, 20, 6, 8]  # y2 = 28 > 20
    ann.write_text(json.dumps(data))
    assert CocoDetection(images, ann).preflight() == []


def _oriented(path, orientation: int, size=(16, 12)) -> None:
    """A JPEG of ``size`` (W x H) with the EXIF ``orientation`` tag, its folder made."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(path, exif=exif)


def test_labelled_images_turned_without_a_change_of_size_are_warned_of(tmp_path):
    """A half turn or a mirror (EXIF 2, 3, 4) keeps the size: labels drawn on the stored
    pixels were read against the turned image without a word (every object misplaced)."""
    root = seg_tree(tmp_path / "seg", n=3)
    (root / "img" / "0.png").unlink()
    _oriented(root / "img" / "0.jpg", 3)
    (root / "img" / "1.png").unlink()
    _oriented(root / "img" / "1.jpg", 6, size=(12, 12))  # a square image turned a quarter
    write_label(root / "lbl" / "1.png", two_class_label((12, 12)))
    found = SegmentationFolder(root / "img", root / "lbl", num_classes=2).preflight()
    assert [(p.file.rsplit("/", 1)[-1], p.warning) for p in found] == [
        ("0.jpg", True),
        ("1.jpg", True),
    ]
    assert found[0].detail == "EXIF orientation 3: turned 180 degrees"
    assert "{reader}.apply_exif_orientation=false" in found[0].fix
    as_stored = SegmentationFolder(
        root / "img", root / "lbl", num_classes=2, apply_exif_orientation=False
    )
    assert as_stored.preflight() == []
    images, ann = _coco_photo(tmp_path / "coco")
    _oriented(images / "phone.jpg", 4, size=(20, 30))
    (warned,) = CocoDetection(images, ann).preflight()
    assert warned.warning and "mirrored upside down" in warned.detail and "boxes" in warned.fix
    unlabelled = CocoDetection(images, ann, labelled=False).preflight()
    assert not [p for p in unlabelled if "EXIF" in p.detail]  # no boxes to misplace


# ------------------------------------------------------------------- segmentation labels
def test_label_of_another_size_is_found_from_headers_and_resized_on_request(tmp_path):
    root = seg_tree(tmp_path / "seg", n=3)
    write_label(root / "lbl" / "1.png", two_class_label((20, 10)))
    ds = SegmentationFolder(root / "img", root / "lbl", num_classes=2)
    (problem,) = ds.preflight()
    assert problem.kind == "labels whose size differs from their image"
    assert problem.file.endswith("1.png") and problem.detail.startswith("20 x 10, its image")
    assert "label_size_mismatch=resize" in problem.fix
    fixed = SegmentationFolder(
        root / "img", root / "lbl", num_classes=2, label_size_mismatch="resize"
    )
    assert fixed.preflight() == []
    _, label = fixed.load(1)
    assert label.shape == (12, 16) and set(np.unique(label)) == {0, 1}
    x, y = SegmentationFolder(
        root / "img",
        root / "lbl",
        SegmentationTransform(crop_size=(8, 8)),
        num_classes=2,
        label_size_mismatch="resize",
    )[1]
    assert x.shape == (3, 8, 8) and y.shape == (8, 8)


def _cityscapes_label_ids_only(root):
    name = "aachen_000000_000019"
    write_png(root / "leftImg8bit" / "val" / "aachen" / f"{name}_leftImg8bit.png", size=(8, 6))
    label_ids = np.full((6, 8), 7, np.uint8)  # road
    label_ids[:, 4:] = 26  # car
    write_label(root / "gtFine" / "val" / "aachen" / f"{name}_gtFine_labelIds.png", label_ids)
    return root


def test_missing_labels_name_the_option_that_reads_the_files_there(tmp_path):
    city = _cityscapes_label_ids_only(tmp_path / "cityscapes")
    with pytest.raises(DatasetError, match="label_format=labelIds") as info:
        Cityscapes(city, "val")
    assert "_gtFine_labelIds.png' are there" in str(info.value)
    assert "labelled=false" not in str(info.value)
    released = Cityscapes(city, "val", label_format="labelIds")
    assert len(released) == 1
    assert len(pickle.loads(pickle.dumps(released))) == 1  # for DataLoader workers
    gta = tmp_path / "gta"
    write_png(gta / "images" / "00001.png")
    write_label(gta / "labels" / "00001.png", np.full((10, 10), 7))
    with pytest.raises(DatasetError, match="label_format=ids"):
        GTA5(gta, label_format="trainids")
    seg = seg_tree(tmp_path / "seg", n=2)
    for path in (seg / "lbl").glob("*.png"):
        path.rename(path.with_name(path.stem + "_mask.png"))
    with pytest.raises(DatasetError, match=r"label_suffix=_mask\.png"):
        SegmentationFolder(seg / "img", seg / "lbl", num_classes=2)


def test_binary_masks_saved_as_0_255_are_found_and_read_with_label_mapping(tmp_path):
    root = seg_tree(tmp_path / "seg", n=3, right=255)
    ds = SegmentationFolder(root / "img", root / "lbl", num_classes=2)
    (problem,) = ds.preflight()
    assert (
        "only class 0 occurs in the 3 label files read; class 1 of num_classes=2" in problem.detail
    )
    assert "label_mapping='{255: 1}'" in problem.fix
    mapped = SegmentationFolder(root / "img", root / "lbl", num_classes=2, label_mapping={255: 1})
    assert mapped.preflight() == []
    assert set(np.unique(mapped.load(0)[1])) == {0, 1}


def test_a_label_mapping_that_makes_a_listed_and_an_unlisted_id_one_class_is_warned_of(
    tmp_path,
):
    """Cityscapes' labelIds with only the ids above the class count mapped ({24: 11}): the
    unlisted building (11) and the listed person (24) both trained as class 11, silently. A
    mapping that merges nothing it leaves out ({5: 1} for 0/5 masks) stays quiet."""
    root = seg_tree(tmp_path / "seg", n=3, right=5)  # stored ids 0 and 5

    def problems(mapping):
        ds = SegmentationFolder(root / "img", root / "lbl", num_classes=3, label_mapping=mapping)
        return [p for p in ds.preflight() if "one class" in p.kind]

    (problem,) = problems({5: 0})
    assert problem.warning
    assert "0 (not listed) and 5 are both read as class 0 ('0')" in problem.detail
    assert problems({5: 1}) == [] and problems({0: 0, 5: 0}) == [] and problems({5: 255}) == []
    trees = {k: seg_tree(tmp_path / k, n=n) for k, n in (("source", 4), ("test", 2))}
    for path in [*(trees["source"] / "lbl").glob("*.png"), *(trees["test"] / "lbl").glob("*.png")]:
        ids = np.zeros((12, 16), np.uint8)
        ids[:, 5:10], ids[:, 10:] = 1, 5  # stored 0, 1 and 5
        write_label(path, ids)
    overrides = [*seg_folder_overrides(tmp_path, num_classes=3, **trees), "device=cpu"]
    out = run_mic_train([*overrides, "dataset.label_mapping={5: 1}", f"hydra.run.dir={tmp_path}/r"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert "1 (not listed) and 5 are both read as class 1" in out.stderr + out.stdout


def test_negative_label_ids_are_outside_every_mapping():
    """An int32 label's -1 was looked up from the end of the table (read as 255, -256 as 0)."""
    from mic.datasets.segmentation.labels import LabelMap

    labels = LabelMap.train_ids(3)
    ids = np.array([[0, 1], [-1, -256]], dtype=np.int32)
    assert labels.check(ids) == (
        "ids [-256, -1] outside the training-id (0..2) mapping (known ids: 0..2)"
    )
    with pytest.raises(DatasetError, match=r"ids \[-256, -1\] outside"):
        labels(ids, "a.png")
    # ids above the training ids: a class count too small is one cause named (it was not)
    with pytest.raises(DatasetError, match=r"\(label ids vs. training ids\), a class count"):
        labels(np.array([[0, 3]], dtype=np.uint8), "a.png")
    assert labels.check(np.array([[-1, 7], [300, 2]])).startswith("ids [-1, 7, 300] outside")


def test_rare_class_sampling_names_the_setting_that_leaves_a_class_out(tmp_path, caplog):
    """It said "no image > 3000 px" without the key to lower (the published value is for
    GTA5's 1914 x 1052 images)."""
    root = seg_tree(tmp_path / "seg", n=2)
    label = np.zeros((12, 16), dtype=np.uint8)
    label[:2, :2] = 1  # 4 px of class 1
    for i in range(2):
        write_label(root / "lbl" / f"{i}.png", label)
    ds = SegmentationFolder(root / "img", root / "lbl", num_classes=2)
    caplog.set_level("WARNING")
    assert RareClassSampling(ds, min_pixels=10).sampled_classes == [0]
    assert "leaves out classes [1] (no image holds more than 10 px of them: lower " in caplog.text
    assert "dataset.source.min_pixels" in caplog.text


def test_rare_class_sampling_with_labels_in_another_folder_and_a_cache_keyed_on_content(
    tmp_path,
):
    root = seg_tree(tmp_path / "seg", n=3)  # images in img/, labels in lbl/
    ds = SegmentationFolder(root / "img", root / "lbl", num_classes=3)
    rcs = RareClassSampling(ds, min_pixels=5)
    assert (root / "img" / STATS_FILE).is_file()
    assert rcs.sampled_classes == [0, 1]
    # a label rewritten in place (same name, same file size): its new counts are read
    label = root / "lbl" / "2.png"
    before = label.stat()
    write_label(label, two_class_label(right=2))
    os.utime(label, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    assert RareClassSampling(ds, min_pixels=5).sampled_classes == [0, 1, 2]
    # unchanged files: the cache is read, not the labels
    ds.class_pixel_counts = None
    assert RareClassSampling(ds, min_pixels=5).sampled_classes == [0, 1, 2]


def test_rare_class_statistics_name_every_label_file_they_cannot_use(tmp_path):
    root = seg_tree(tmp_path / "seg", n=4)
    for i in (1, 3):
        write_label(root / "lbl" / f"{i}.png", two_class_label(right=7))  # 7 >= num_classes
    ds = SegmentationFolder(root / "img", root / "lbl", num_classes=2)
    with pytest.raises(DatasetError) as info:
        RareClassSampling(ds, min_pixels=5, cache=False)
    message = str(info.value)
    assert "Label files that rare class sampling's statistics cannot use (2)" in message
    assert "1.png" in message and "3.png" in message and "ids [7]" in message
    with collecting_problems():  # kept for the check before training
        rcs = RareClassSampling(ds, min_pixels=5, cache=True)
    assert sorted(p.file[-5:] for p in rcs.preflight()) == ["1.png", "3.png"]
    assert not (root / "img" / STATS_FILE).exists()  # incomplete statistics are not cached


# ------------------------------------------------------------ the check before training
def test_every_problem_at_once_with_a_listing_cap(tmp_path):
    root = seg_tree(tmp_path / "seg", n=LISTED + 5)
    for i in range(LISTED + 3):
        write_label(root / "lbl" / f"{i}.png", two_class_label((20, 10)))
    (root / "lbl" / f"{LISTED + 4}.png").unlink()
    with collecting_problems():
        source = SegmentationFolder(root / "img", root / "lbl", num_classes=2)
    listing = tmp_path / "run" / "data_problems.txt"
    with pytest.raises(DatasetError) as info:
        check_datasets({"source": source}, listing)
    message = str(info.value)
    assert message.startswith(f"the data check before training found {LISTED + 4} problems")
    assert "Missing label files (1)" in message
    assert f"Labels whose size differs from their image ({LISTED + 3})" in message
    assert "; and 4 more." in message and f"The whole list: '{listing}'" in message
    assert len(listing.read_text().splitlines()) == LISTED + 4


def _cli(*args):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mic.train", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_mic_train_reports_every_problem_before_the_first_iteration(tmp_path):
    src = seg_tree(tmp_path / "src", n=6)
    write_label(src / "lbl" / "1.png", two_class_label((20, 10)))  # GTA5's quirk
    (src / "lbl" / "2.png").unlink()  # a pair incomplete
    (src / "img" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    write_label(src / "lbl" / "4.png", two_class_label(right=9))  # an id outside 0..1
    tgt = seg_tree(tmp_path / "tgt", labels=False)
    _hidden_files(tgt / "img")  # skipped, not problems
    run = tmp_path / "run"
    overrides = seg_folder_overrides(tmp_path, source=src, target=tgt)
    out = _cli(*TINY_RUN, *overrides, f"hydra.run.dir={run}")
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    message = out.stderr.split("mic: error: ", 1)[1]
    assert message.startswith("the data check before training found 4 problems")
    for fragment in (
        "Labels whose size differs from their image (1): '",
        "++dataset.source.dataset.label_size_mismatch=resize",
        "Missing label files (1)",
        "Unreadable image files (1)",
        "Label files with ids outside the mapping (1)",
    ):
        assert fragment in message
    assert not (run / "checkpoints").exists()
    # the fixes the message names make the run go through
    os.replace(tgt / "img" / "0.png", src / "img" / "3.png")
    write_label(src / "lbl" / "2.png", two_class_label())
    write_label(src / "lbl" / "4.png", two_class_label())
    summary = run_experiment(
        load_config(
            [
                *TINY_RUN,
                *overrides,
                "++dataset.source.dataset.label_size_mismatch=resize",
                "log.tensorboard=false",
            ]
        ),
        tmp_path / "run2",
    )
    assert summary["after_adaptation"]["step"] == 2


def test_images_as_users_bring_them_train(tmp_path):
    """Hidden files, 16-bit, palette, CMYK and phone photos in the folders of a run: it trains."""
    src = class_folders(tmp_path / "src", ["a", "b", "c"])
    _save(src / "a" / "16bit.png", np.full((10, 10), 40000, np.uint16))
    Image.new("L", (10, 10), 70).convert("P").save(src / "b" / "palette.png")
    Image.new("CMYK", (10, 10), (0, 50, 0, 0)).save(src / "c" / "cmyk.jpg")
    _phone_photo(src / "c" / "phone.jpg", np.full((12, 10, 3), 90, np.uint8))
    _hidden_files(src / "a")
    tgt = class_folders(tmp_path / "tgt", ["x"], n=4)
    _hidden_files(tgt)
    overrides = [*TINY_RUN, *folder_overrides(tmp_path, source=src, target=tgt)]
    summary = run_experiment(
        load_config([*overrides, "iterations=2", "log.tensorboard=false"]), tmp_path / "run"
    )
    assert summary["after_adaptation"]["step"] == 2
    assert torch.isfinite(torch.tensor(summary["after_adaptation"]["student"]))


def test_classes_absent_from_the_source_labels_are_a_warning(tmp_path, caplog):
    root = seg_tree(tmp_path / "seg", n=3)  # classes 0 and 1 of 3
    ds = SegmentationFolder(root / "img", root / "lbl", num_classes=3)
    with caplog.at_level("WARNING", logger="mic.datasets.preflight"):
        check_datasets({"source": ds, "test": ds})
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and warnings[0].startswith("dataset.source: Label sets in which")
    assert "class 2 in none of the 3 label files read" in warnings[0]
    # read through rare class sampling's statistics: every file, the same finding
    (problem,) = [p for p in RareClassSampling(ds, min_pixels=5).preflight() if p.warning]
    assert "class 2 in none of the 3 label files read" in problem.detail


def test_classes_a_dataset_is_known_to_lack_are_no_warning(tmp_path):
    from mic.datasets.segmentation import SynthiaRandCityscapes

    root = tmp_path / "synthia"
    write_png(root / "RGB" / "0000000.png", size=(8, 6))
    label = root / "GT" / "LABELS" / "0000000_labelTrainIds.png"
    present = [c for c in range(19) if c not in (9, 14, 16)]  # SYNTHIA has no terrain, truck, train
    write_label(label, np.resize(np.array(present, np.uint8), (6, 8)))
    assert SynthiaRandCityscapes(root, label_format="trainids").preflight() == []
    present.remove(10)
    write_label(label, np.resize(np.array(present, np.uint8), (6, 8)))
    (warning,) = SynthiaRandCityscapes(root, label_format="trainids").preflight()
    assert warning.warning and warning.detail.startswith("class 10 (sky) in none of the 1")


def test_a_final_evaluation_that_meets_bad_test_data_keeps_the_training_and_runs_on_resume(
    tmp_path,
):
    # the test set's images have two sizes: batched two at a time, the final evaluation fails
    # (in the second batch: the Evaluation hook checks the first one before training; the
    # data check, which would name the sizes before training, is off)
    tst = seg_tree(tmp_path / "tst", n=4)
    Image.fromarray(np.zeros((10, 20, 3), dtype=np.uint8)).save(tst / "img" / "3.png")
    write_label(tst / "lbl" / "3.png", two_class_label((20, 10)))
    overrides = [*seg_folder_overrides(tmp_path, test=tst), "checkpoint.interval=0"]
    overrides.append("preflight=false")
    run = tmp_path / "run"
    with pytest.raises(DatasetError, match=r"the test set holds images \(or labels\) of diff"):
        run_experiment(load_config(overrides), run)
    # the training is kept (the state after the last iteration)...
    assert [p.name for p in (run / "checkpoints").glob("iter_*.pt")] == ["iter_00000002.pt"]
    # ... and a resume evaluates what the failed evaluation could not
    again = [*overrides, "loader.test_batch_size=1", "resume=auto"]
    summary = run_experiment(load_config(again), run)
    assert summary["after_adaptation"]["step"] == 2 and "student" in summary["after_adaptation"]


def test_the_data_check_logs_how_many_samples_each_split_holds(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="mic.datasets.preflight"):
        sample = (torch.zeros(3, 4, 4), 0)
        check_datasets({"source": [sample] * 3, "target": [sample[0]] * 5, "test": None})
    assert "(samples: source 3, target 5)" in caplog.text


def test_a_target_of_1_tuples_passes_the_data_check_as_the_collate_reads_it():
    """TensorDataset(x) yields (image,): the collate reads it as the image, but the data check
    refused it as 'images that are not tensors'; a labelled split still needs its label."""
    from torch.utils.data import TensorDataset

    x, y = torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long)
    check_datasets({"source": TensorDataset(x, y), "target": TensorDataset(x)})  # (raised)
    with pytest.raises(DatasetError, match=r"not \(image, label\) pairs \(1\)"):
        check_datasets({"source": TensorDataset(x)})
    grey = TensorDataset(x[:, :1])  # judged as the image it holds
    with pytest.raises(DatasetError, match="other channels than the source's") as info:
        check_datasets({"source": TensorDataset(x, y), "target": grey})
    assert "the source's too" not in str(info.value)
    with pytest.raises(DatasetError, match=r"x\.expand\(3, -1, -1\)\), the source's too\."):
        check_datasets({"source": TensorDataset(x[:, :1], y), "target": TensorDataset(x)})


# ------------------------------------------------- one sample of each split, custom datasets
def grey_digits(**kwargs):
    """Unlabelled digits as 1-channel tensors (grey images, not converted to RGB)."""
    from mic.datasets import DigitsDomain

    ds = DigitsDomain(**kwargs)
    return [ds[i][:1] for i in range(len(ds))]


def pil_digits(**kwargs):
    """Unlabelled digits as PIL images (a transform without ToTensor)."""
    from mic.datasets import DigitsDomain

    ds = DigitsDomain(**kwargs)
    to_pil = lambda x: Image.fromarray((x.permute(1, 2, 0).numpy() * 60 + 128).astype(np.uint8))  # noqa: E731
    return [to_pil(ds[i].clamp(-2, 2)) for i in range(len(ds))]


def float64_digits(**kwargs):
    """Unlabelled digits as float64 tensors."""
    from mic.datasets import DigitsDomain

    ds = DigitsDomain(**kwargs)
    return [ds[i].double() for i in range(len(ds))]


def dict_digits(**kwargs):
    """Unlabelled digits as {"image": x} samples."""
    from mic.datasets import DigitsDomain

    ds = DigitsDomain(**kwargs)
    return [{"image": ds[i]} for i in range(len(ds))]


def unlabelled_test_digits(**kwargs):
    """The digits test set without its labels."""
    from mic.datasets import DigitsDomain

    ds = DigitsDomain(**kwargs)
    return [ds[i][0] for i in range(len(ds))]


def nan_digits(**kwargs):
    """Unlabelled digits whose first image holds a NaN."""
    from mic.datasets import DigitsDomain

    ds = DigitsDomain(**kwargs)
    images = [ds[i] for i in range(len(ds))]
    images[0][0, 3, 5] = float("nan")
    return images


def hwc_digits(**kwargs):
    """Unlabelled digits, channels last (H x W x C)."""
    from mic.datasets import DigitsDomain

    ds = DigitsDomain(**kwargs)
    return [ds[i].permute(1, 2, 0) for i in range(len(ds))]


def byte_digits(**kwargs):
    """Unlabelled digits as pixel values in [0, 255] (a transform without ToTensor's scaling)."""
    from mic.datasets import DigitsDomain

    ds = DigitsDomain(**kwargs)
    return [ds[i] * 255 for i in range(len(ds))]


def test_mic_train_warns_of_images_in_0_255_and_trains(tmp_path):
    out = run_mic_train(
        [
            *TINY_RUN,
            "iterations=1",
            "dataset.target._target_=tests.test_data_faults.byte_digits",
            f"hydra.run.dir={tmp_path / 'run'}",
        ]
    )
    assert out.returncode == 0, out.stderr[-2000:]
    log = next((tmp_path / "run").glob("*.log")).read_text()
    assert "dataset.target: Images of values far outside [0, 1] (1): 'sample 0'" in log
    assert "if these are pixel values in [0, 255], scale them" in log


def test_the_sample_check_warns_of_colour_values_alone(caplog):
    """Values far outside [0, 1] in the colour channels are warned of; a fourth channel in
    other units (depth in mm) is not, and neither are images normalised as usual."""
    normalised = [((torch.rand(3, 8, 8) - 0.485) / 0.229, 0) for _ in range(2)]
    depth = [(torch.cat([torch.rand(3, 8, 8), torch.full((1, 8, 8), 3000.0)]), 0)] * 2
    pixels = [(torch.rand(3, 8, 8) * 255, 0)] * 2
    for data, warned in [(normalised, False), (depth, False), (pixels, True)]:
        caplog.clear()
        check_datasets({"source": data})  # a warning only: nothing raised
        assert ("far outside [0, 1]" in caplog.text) == warned, caplog.text


@pytest.mark.parametrize(
    "split, factory, fragment",
    [
        ("target", "dict_digits", "Samples that are not (image, label) pairs or images (1)"),
        ("test", "unlabelled_test_digits", "Samples that are not (image, label) pairs (1)"),
        ("target", "nan_digits", "Images with NaN or Inf values (1): 'sample 0' (1 of its"),
        ("target", "hwc_digits", "Images that are H x W x C, not C x H x W (1): 'sample 0'"),
    ],
)
def test_mic_train_refuses_samples_of_the_wrong_form_before_training(
    tmp_path, split, factory, fragment
):
    out = run_mic_train(
        [
            *TINY_RUN,
            f"dataset.{split}._target_=tests.test_data_faults.{factory}",
            "adaptation_start=2",
            f"hydra.run.dir={tmp_path / 'run'}",
        ]
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    message = out.stderr.split("mic: error: ", 1)[1]
    assert f"dataset.{split} (list): {fragment}" in message
    assert "[iteration" not in out.stdout  # refused before the first iteration
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_sample_check_leaves_the_random_generators_as_they_were():
    """A dataset whose samples draw random numbers: a seeded run draws what it drew before."""

    class Drawing:
        def __len__(self):
            return 4

        def __getitem__(self, index):
            import random

            random.random()
            np.random.rand()
            return torch.rand(3, 8, 8), int(torch.randint(0, 2, ()))

    torch.manual_seed(0)
    np.random.seed(0)
    import random

    random.seed(0)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    check_datasets({"source": Drawing(), "target": Drawing(), "test": Drawing()})
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert random.getstate() == states[2]


def test_a_first_sample_that_raises_is_named_before_training_unless_mic_s_own_error():
    """A dataset of one's own whose first sample fails was left to training, where it ended
    in a traceback; a reader's own error (a bad file: its own check names it) still is."""

    class Broken:
        def __init__(self, error):
            self.error = error

        def __len__(self):
            return 2

        def __getitem__(self, index):
            raise self.error

    with pytest.raises(DatasetError, match=r"first sample raises an error \(1\): 'sample 0' "
                       r"\(OSError: disk gone\)\. Mend the dataset's __getitem__"):  # fmt: skip
        check_datasets({"source": Broken(OSError("disk gone"))})
    check_datasets({"source": Broken(DatasetError("a bad file"))})


def test_a_symlink_loop_in_an_image_folder_lists_each_image_once(tmp_path):
    tgt = class_folders(tmp_path / "tgt", ["x", "y"], n=3)
    (tgt / "x" / "sub").mkdir()
    (tgt / "x" / "sub" / "loop").symlink_to(tgt / "x")  # a loop
    (tgt / "z").symlink_to(tgt / "y")  # the same folder twice
    assert len(UnlabeledImageFolder(tgt)) == 6


def test_files_of_formats_mic_does_not_read_are_counted_in_a_warning(tmp_path, caplog):
    import logging

    src = class_folders(tmp_path / "src", ["a", "b"])
    Image.new("RGB", (10, 10)).save(src / "a" / "anim.gif")
    tgt = class_folders(tmp_path / "tgt", ["x"])
    for name in ("1.gif", "2.GIF", "3.heic"):
        (tgt / "x" / name).write_bytes(b"GIF89a")
    (tgt / "notes.txt").write_text("not an image: no warning")
    with caplog.at_level(logging.WARNING, logger="mic.datasets.preflight"):
        check_datasets({"source": ImageFolder(src), "target": UnlabeledImageFolder(tgt)})
    assert "source: Files of image formats mic does not read, left out (1): '" in caplog.text
    assert "target: Files of image formats mic does not read, left out (3): '" in caplog.text
    assert "notes.txt" not in caplog.text


def test_random_crops_larger_than_the_images_are_a_warning(tmp_path, caplog):
    import logging

    root = seg_tree(tmp_path / "seg", n=3, size=(16, 12))
    crop = SegmentationTransform(crop_size=(64, 64))
    fitting = SegmentationTransform(crop_size=(12, 12))
    with caplog.at_level(logging.WARNING, logger="mic.datasets.preflight"):
        source = SegmentationFolder(root / "img", root / "lbl", fitting, num_classes=2)
        check_datasets({"source": source})
        assert "padding" not in caplog.text
        source = SegmentationFolder(root / "img", root / "lbl", crop, num_classes=2)
        check_datasets({"source": source})
        check_datasets({"target": UnlabeledImageFolder(root / "img", crop)})
    assert "source: Image sets whose random crops are mostly padding (1)" in caplog.text
    assert "3 of 3 images fill less than half of the 64 x 64 crop (e.g. 16 x 12)" in caplog.text
    assert "target: Image sets whose random crops are mostly padding (1)" in caplog.text
    assert "resizes them up (++dataset.target.transform.scale=[long,short]," in caplog.text


def test_a_resize_that_enlarges_most_images_many_times_is_a_warning(tmp_path, caplog):
    """GTA5's published scale on 128 px images enlarged them 10-20 times: 75 s an iteration
    of a dry run, without a word."""
    import logging

    root = seg_tree(tmp_path / "seg", n=3, size=(16, 12))
    with caplog.at_level(logging.WARNING, logger="mic.datasets.preflight"):
        near = SegmentationTransform(scale=(24, 18))  # 1.5 times
        check_datasets(
            {"source": SegmentationFolder(root / "img", root / "lbl", near, num_classes=2)}
        )
        assert "enlarged" not in caplog.text
        published = SegmentationTransform(scale=(1280, 720))
        check_datasets(
            {"source": SegmentationFolder(root / "img", root / "lbl", published, num_classes=2)}
        )
        check_datasets({"target": UnlabeledImageFolder(root / "img", published)})
    assert "source: Image sets enlarged many times by their first resize (1)" in caplog.text
    assert (
        "3 of 3 images are enlarged more than 2 times by the resize to scale [1280, 720] (e.g. "
        "16 x 12 to 960 x 720, 60 times)" in caplog.text
    )
    assert "target: Image sets enlarged many times" in caplog.text
    assert "(++dataset.target.transform.scale=[long,short]), or null for none" in caplog.text


@pytest.mark.parametrize(
    ("size", "block", "refused"),
    [
        ((28, 28), 100, True),
        ((40, 40), 32, True),
        ((32, 64), 32, False),
        ((64, 64), 8, False),
        ((32, 32), 32.0, True),  # a whole number written as a float (skipped before)
        ((32, 32), 1e30, True),
        ((64, 64), 8.0, False),
    ],
)
def test_a_mic_block_is_refused_where_the_masker_makes_one_block(size, block, refused):
    """The masker's grid is round(H / b) x round(W / b): a non-square crop of two blocks is
    masked in halves (allowed), a 40 px crop with 32 px blocks is one block (refused); a
    block written as a float (``dataset.mic_block_size=32.0``) is judged as its number."""
    from omegaconf import OmegaConf

    from mic.datasets.preflight import block_problems

    cfg = OmegaConf.create({"method": {"terms": {"mic": {"masker": {"block_size": block}}}}})
    cfg.dataset = {"size": size[0]}
    found = block_problems(cfg.dataset, size)
    assert bool(found) is refused
    if refused:
        assert found[0].file == "method.terms.mic.masker.block_size"
        assert "a grid of 1 x 1 block" in found[0].detail


def test_images_of_one_pixel_are_named_too_small_for_any_block():
    from omegaconf import OmegaConf

    from mic.datasets.preflight import block_problems

    cfg = OmegaConf.create({"method": {"terms": {"mic": {"masker": {"block_size": 1}}}}})
    cfg.dataset = {"size": 1}
    (found,) = block_problems(cfg.dataset, (1, 1))
    assert found.kind == "target images too small for MIC's masking blocks"
    assert "or run without MIC (mic=none)" in found.fix


@pytest.mark.parametrize(
    "kwargs, said",
    [
        ({"min_pixels": -5}, "min_pixels must be a whole number of pixels >= 0 (mic-train: "),
        ({"min_pixels": 2.5}, "min_pixels must be a whole number"),
        ({"min_pixels": float("nan")}, "min_pixels must be a whole number"),
        ({"min_crop_ratio": float("nan")}, "min_crop_ratio must be a finite number >= 0"),
        ({"temperature": 0}, "temperature must be > 0"),
        ({"cache": 2}, "cache must be true (beside the dataset), false / null (never) or a file"),
        ({"cache": ""}, "(mic-train: dataset.source.cache), got ''"),
        ({"cache": 1}, "(mic-train: dataset.source.cache), got 1"),
    ],
)
def test_rare_class_sampling_settings_out_of_range_are_refused(tmp_path, kwargs, said):
    from mic.datasets.segmentation import RareClassSampling, SegmentationFolder

    root = seg_tree(tmp_path / "seg", n=3)
    ds = SegmentationFolder(root / "img", root / "lbl", num_classes=3)
    with pytest.raises(ConfigError, match=re.escape(said)):
        RareClassSampling(ds, **{"cache": False, **kwargs})


def test_a_min_pixels_no_image_reaches_names_its_key_and_the_largest_count(tmp_path):
    from mic.datasets.segmentation import RareClassSampling, SegmentationFolder

    root = seg_tree(tmp_path / "seg", n=3)
    ds = SegmentationFolder(root / "img", root / "lbl", num_classes=3)
    with pytest.raises(DatasetError, match=r"the most of one class in one image: \d+ px\)"):
        RareClassSampling(ds, min_pixels=10**6, cache=False)


def test_the_data_check_names_test_sizes_that_batches_cannot_stack(tmp_path):
    tst = seg_tree(tmp_path / "tst", n=3)
    Image.fromarray(np.zeros((24, 32, 3), dtype=np.uint8)).save(tst / "img" / "2.png")
    write_label(tst / "lbl" / "2.png", two_class_label((32, 24)))
    overrides = seg_folder_overrides(tmp_path, test=tst)
    with pytest.raises(DatasetError, match=r"images come in 2 sizes \(16 x 12, 32 x 24\)"):
        run_experiment(load_config(overrides), tmp_path / "run")
    # one at a time they evaluate; so do images that the test transform makes one size, with
    # labels that it resizes too
    scale = "++dataset.test.transform.scale=[16,12]"
    with pytest.raises(DatasetError, match=r"label maps come in 2 sizes \(16 x 12, 32 x 24, k"):
        run_experiment(load_config([*overrides, scale]), tmp_path / "run")
    resized = "++dataset.test.transform.keep_label_size=false"
    for fix in (["loader.test_batch_size=1"], [scale, resized]):
        summary = run_experiment(load_config([*overrides, *fix]), tmp_path / str(len(fix)))
        assert "student" in summary["after_adaptation"]


def test_a_missing_image_beside_its_name_in_another_case_or_behind_a_broken_link_says_so(
    tmp_path,
):
    """'Missing image files ... Check the dataset paths' left the user to find that the file
    is 003.JPG where the list says 003.jpg, or that a link's target is gone."""
    from mic.datasets.preflight import check_images

    Image.new("RGB", (8, 8)).save(tmp_path / "003.JPG")
    (tmp_path / "004.jpg").symlink_to(tmp_path / "gone" / "004.jpg")
    cased, linked = check_images([tmp_path / "003.jpg", tmp_path / "004.jpg"], "images")
    assert cased.kind == linked.kind == "missing image files"
    assert cased.detail == "'003.JPG' is there: file names are read case-sensitively"
    assert (
        linked.detail
        == f"a symbolic link to '{tmp_path / 'gone' / '004.jpg'}', which does not exist"
    )


def test_a_dataset_whose_len_counts_more_than_it_holds_is_named_before_training():
    """The loader met the IndexError mid-run (an index near the end), as a traceback."""
    from torch.utils.data import TensorDataset

    class Longer(TensorDataset):
        def __len__(self) -> int:
            return super().__len__() + 3

    x, y = torch.rand(5, 3, 8, 8), torch.zeros(5, dtype=torch.long)
    said = r"'sample 7' \(__len__ gives 8, but dataset\[7\] raises IndexError"
    with pytest.raises(DatasetError, match=said):
        check_datasets({"source": Longer(x, y)})
    check_datasets({"source": TensorDataset(x, y), "target": TensorDataset(x)})
