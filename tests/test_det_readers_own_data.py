"""Users' own COCO / VOC detection data, as exporters write it: class ids that follow the
source's category names in every split, and clear refusals of boxes and files that would
otherwise train on the wrong thing (normalised boxes, string ids, duplicated category names),
each problem reported once and in its format's own terms."""

import json

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from mic import DatasetError
from mic.datasets.detection import CocoDetection, VOCDetection
from mic.datasets.preflight import check_datasets, collecting_problems
from mic.experiment import _source_classes

RGB = [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}, {"id": 3, "name": "blue"}]


def _png(path, w=64, h=48):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(path)


def _coco(root, annotations, categories=RGB, sizes=True, w=64, h=48):
    """Two images a.png and b.png (``w`` x ``h``) and a json with ``annotations``, given as
    (image id, category id, bbox) triples."""
    images = []
    for i, name in enumerate(("a.png", "b.png"), start=1):
        _png(root / "images" / name, w, h)
        images.append({"id": i, "file_name": name, **({"width": w, "height": h} if sizes else {})})
    anns = [
        {"id": n, "image_id": im, "category_id": c, "bbox": bbox, "iscrowd": 0}
        for n, (im, c, bbox) in enumerate(annotations, start=1)
    ]
    path = root / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return root / "images", path


def _message(dataset) -> str:
    with pytest.raises(DatasetError) as info:
        check_datasets({"source": dataset})
    return str(info.value)


# ---------------------------------------------------------------- 1. classes by name
def test_a_test_json_with_other_category_ids_maps_to_the_source_classes_by_name(tmp_path):
    src = _coco(tmp_path / "src", [(1, 1, [2, 2, 10, 10]), (2, 3, [5, 5, 8, 8])])
    swapped = [{"id": 2, "name": "red"}, {"id": 1, "name": "green"}, {"id": 3, "name": "blue"}]
    # in the test json, red is category 2: a red box there must get red's class index
    tst = _coco(tmp_path / "tst", [(1, 2, [2, 2, 10, 10]), (2, 1, [4, 4, 6, 6])], swapped)
    source = CocoDetection(*src)
    assert source.classes == ["red", "green", "blue"]
    assert source.targets[0]["labels"].tolist() == [0]  # red
    alone = CocoDetection(*tst)  # by its own ids, as before: red would be class 1
    assert alone.classes == ["green", "red", "blue"]
    test = CocoDetection(*tst, source_classes=source.classes)
    assert test.classes == source.classes
    assert test.targets[0]["labels"].tolist() == [0]  # red, as in the source
    assert test.targets[1]["labels"].tolist() == [1]  # green
    # read by its own ids, the test set is refused where the source's order is known
    from mic.tasks.detection import DetectionTask

    with pytest.raises(DatasetError, match="'green' is its class 0, the task's class 1"):
        DetectionTask(3, class_names=source.classes).check_datasets({"test": alone})
    with pytest.raises(DatasetError, match="the test set names the classes of source in another"):
        DetectionTask(3).check_datasets({"source": source, "test": alone})
    DetectionTask(3, class_names=source.classes).check_datasets({"test": test})


def test_annotations_of_unknown_ids_are_named_at_once_with_the_other_problems(tmp_path):
    images, ann = _coco(
        tmp_path, [(1, 7, [2, 2, 10, 10]), (1, 8, [2, 2, 10, 10]), (3, 1, [2, 2, 9, 9])]
    )
    with collecting_problems():
        message = _message(CocoDetection(images, ann))
    assert "category_id is the id of none of the json's categories (2)" in message
    assert "annotation 1: category_id 7" in message and "annotation 2: category_id 8" in message
    assert "image_id is the id of none of the json's images (1)" in message
    assert "annotation 3: image_id 3" in message
    with pytest.raises(DatasetError, match="category_id 7"):  # outside mic-train: raised
        CocoDetection(images, ann)


def test_an_annotation_path_that_is_a_folder_is_named_as_one(tmp_path):
    images, annotations = _coco(tmp_path / "src", [(1, 1, [2, 2, 10, 10])])
    with pytest.raises(DatasetError, match=r"is a folder, not a file \(it holds ann.json\)"):
        CocoDetection(images, annotations.parent)


class OwnCoco(CocoDetection):
    def __init__(self, images, annotations, classes=None):
        super().__init__(images, annotations, classes=classes)


def test_mic_train_passes_the_source_classes_to_a_test_json_that_names_none(tmp_path):
    source = CocoDetection(*_coco(tmp_path / "src", [(1, 1, [2, 2, 10, 10])]))
    cfg = OmegaConf.create(
        {
            "dataset": {
                "classes": None,
                "source": {"_target_": "mic.datasets.detection.CocoDetection", "classes": None},
                "test": {"_target_": "mic.datasets.detection.CocoDetection", "classes": None},
                "voc": {"_target_": "mic.datasets.detection.VOCDetection"},
                "chosen": {"_target_": "mic.datasets.detection.CocoDetection", "classes": ["x"]},
                "target": {"_target_": "mic.datasets.UnlabeledImageFolder"},
            }
        }
    )
    data = {"source": source}
    assert _source_classes(cfg, "test", data) == {"source_classes": ["red", "green", "blue"]}
    assert _source_classes(cfg, "voc", data) == {"source_classes": ["red", "green", "blue"]}
    # dataset.classes=[...] decides the classes; the source's let its json lack a category
    assert _source_classes(cfg, "chosen", data) == {"source_classes": ["red", "green", "blue"]}
    # a reader of one's own that takes no source_classes is not given them
    cfg.dataset.chosen._target_ = f"{__name__}.OwnCoco"
    assert _source_classes(cfg, "chosen", data) == {}
    assert _source_classes(cfg, "target", data) == {}
    assert _source_classes(cfg, "source", data) == {}


def test_a_test_category_the_source_lacks_is_named_and_a_missing_one_is_fine(tmp_path):
    classes = ["red", "green", "blue"]
    other = [{"id": 1, "name": "red"}, {"id": 2, "name": "purple"}]
    images, ann = _coco(tmp_path / "tst", [(1, 2, [2, 2, 10, 10])], other)
    with pytest.raises(DatasetError, match=r"categories \['purple'\] that the source does not"):
        CocoDetection(images, ann, source_classes=classes)
    # the message offers the classes both have
    with pytest.raises(DatasetError, match=r"dataset\.classes=\[red\]"):
        CocoDetection(images, ann, source_classes=classes)
    # no name in common: no empty class list is offered
    apart = [{"id": 1, "name": "Red"}, {"id": 2, "name": "Green"}]
    with pytest.raises(DatasetError) as info:
        CocoDetection(*_coco(tmp_path / "a", [(1, 2, [2, 2, 9, 9])], apart), source_classes=classes)
    assert "share no category name" in str(info.value) and "dataset.classes" not in str(info.value)
    # a category listed without a box changes no class: accepted (a labelling tool's export
    # lists every category in each split's json)
    listed = [*other, {"id": 3, "name": "green"}]
    unboxed = _coco(tmp_path / "u", [(1, 3, [2, 2, 10, 10])], listed)
    test = CocoDetection(*unboxed, source_classes=classes)
    assert test.classes == classes and test.targets[0]["labels"].tolist() == [1]
    # a name that differs from a source class only in case, spaces or dashes is pointed out
    cased = [{"id": 1, "name": "Red "}, {"id": 2, "name": "green"}]
    twin = r"'Red ' differs from 'red' only in case, spaces or dashes"
    with pytest.raises(DatasetError, match=twin):
        CocoDetection(*_coco(tmp_path / "c", [(1, 1, [2, 2, 9, 9])], cased), source_classes=classes)
    # a source class without a category here is fine: the class count stays the source's
    fewer = [{"id": 5, "name": "blue"}, {"id": 6, "name": "red"}]
    test = CocoDetection(
        *_coco(tmp_path / "t2", [(1, 5, [1, 1, 4, 4])], fewer), source_classes=classes
    )
    assert test.num_classes == 3 and test.targets[0]["labels"].tolist() == [2]
    # dataset.classes (classes=) still picks and orders categories, and wins
    only = CocoDetection(images, ann, classes=["red"], source_classes=classes)
    assert only.classes == ["red"] and only.targets[0]["labels"].tolist() == []
    # also with dataset.classes: a source class without a category here is fine (it was
    # refused as 'not categories of' the test json), a class neither has stays an error
    named = CocoDetection(
        *_coco(tmp_path / "t3", [(1, 5, [1, 1, 4, 4])], fewer),
        classes=classes,
        source_classes=classes,
    )
    assert named.classes == classes and named.targets[0]["labels"].tolist() == [2]
    with pytest.raises(DatasetError, match=r"classes \['green'\] are not categories"):
        CocoDetection(tmp_path / "t3" / "images", tmp_path / "t3" / "ann.json", classes=classes)
    with pytest.raises(DatasetError, match=r"are not categories of .* Did you mean: blue\?"):
        CocoDetection(tmp_path / "t3" / "images", tmp_path / "t3" / "ann.json", classes=["bleu"])


def test_voc_test_split_follows_the_source_classes(tmp_path):
    root = _voc(tmp_path, {"000001": _voc_xml([("blue", 2, 2, 10, 10)])})
    test = VOCDetection(root, "train", source_classes=["red", "green", "blue"])
    assert test.classes == ["red", "green", "blue"]
    assert test.targets[0]["labels"].tolist() == [2]
    with pytest.raises(DatasetError, match="'blue'"):
        VOCDetection(root, "train", source_classes=["red", "green"])


# ---------------------------------------------------------------- 2. normalised boxes
def test_boxes_normalised_to_0_1_are_refused(tmp_path):
    anns = [(1, 1, [0.1, 0.2, 0.3, 0.25]), (2, 2, [0.5, 0.5, 0.4, 0.4])]
    images, ann = _coco(tmp_path / "n", anns)
    with pytest.raises(DatasetError) as info:
        CocoDetection(images, ann)
    message = str(info.value)
    assert "look normalised to [0, 1]" in message and "all its 2 boxes" in message
    assert "64 x 48 pixels" in message and "[x, y, width, height] in pixels" in message
    with collecting_problems():  # mic-train: reported with the other problems
        kept = CocoDetection(images, ann)
    assert "look normalised" in _message(kept)
    # boxes in pixels that happen to be small are not, nor boxes in images of a few pixels
    assert CocoDetection(*_coco(tmp_path / "p", [(1, 1, [0.1, 0.2, 3, 2])])).preflight(False) == []
    tiny = _coco(tmp_path / "t", [(1, 1, [0.1, 0.1, 0.5, 0.5])], w=2, h=2)
    assert len(CocoDetection(*tiny)) == 2


# ---------------------------------------------------------------- 3. string ids
def test_a_category_id_written_as_a_string_says_so(tmp_path):
    images, ann = _coco(tmp_path, [(1, "3", [2, 2, 10, 10])])
    with pytest.raises(DatasetError) as info:
        CocoDetection(images, ann)
    message = str(info.value)
    assert "category_id '3' (a string)" in message and "the listed id is 3" in message
    images, ann = _coco(tmp_path / "img", [("1", 1, [2, 2, 10, 10])])
    with pytest.raises(DatasetError, match=r"image_id '1' \(a string\)"):
        CocoDetection(images, ann)


@pytest.mark.parametrize("flag", ["0", "1", 2, 0.5, "no"])
def test_an_iscrowd_flag_that_is_not_0_or_1_is_named(tmp_path, flag):
    """The text '0' is true to Python: every such box was taken for a crowd (and left out of
    training, or ignored by evaluation), said only when no box was left."""
    images, ann = _coco(tmp_path, [(1, 1, [2, 2, 10, 10]), (2, 2, [3, 3, 9, 9])])
    data = json.loads(ann.read_text())
    data["annotations"][0]["iscrowd"] = flag
    ann.write_text(json.dumps(data))
    with pytest.raises(DatasetError) as info:
        CocoDetection(images, ann)
    message = str(info.value)
    assert "Annotations whose iscrowd is not 0 or 1 (1): " in message
    assert "Write iscrowd as the number 0 (one object) or 1 (a crowd region)" in message
    unlabelled = CocoDetection(images, ann, labelled=False)  # (the flag unread: not judged)
    assert len(unlabelled) == 2
    for kept in (True, 1.0, None, False):  # COCO's 0 and 1 in other json spellings
        data["annotations"][0]["iscrowd"] = kept
        ann.write_text(json.dumps(data))
        source = CocoDetection(images, ann, skip_crowd=True)
        assert len(source.targets[0]["boxes"]) == int(not kept)


# ---------------------------------------------------------------- 4. duplicated names
def test_two_categories_of_one_name_are_named(tmp_path):
    dup = [*RGB, {"id": 4, "name": "red"}]
    images, ann = _coco(tmp_path, [(1, 4, [2, 2, 10, 10])], dup)
    with pytest.raises(DatasetError, match=r"categories of one name: 'red' \(ids 1, 4\)"):
        CocoDetection(images, ann)


# ---------------------------------------------------------------- 5. bad boxes, once
@pytest.mark.parametrize("sizes", [True, False])  # False: checked against the image files
def test_a_bad_coco_box_is_reported_once_as_the_json_writes_it(tmp_path, sizes):
    anns = [(1, 1, [37, 22, 0, 26]), (2, 2, [50, 40, 30, 20])]
    with collecting_problems():
        ds = CocoDetection(*_coco(tmp_path, anns, sizes=sizes))
    message = _message(ds)
    assert "found 2 problems" in message
    assert message.count("a.png") == 1 and message.count("b.png") == 1
    assert (
        "bbox [37, 22, 0, 26] (x, y, width, height) is a degenerate box, of zero width" in message
    )
    assert "bbox [50, 40, 30, 20] (x, y, width, height) reaches outside the 64 x 48" in message
    assert "x + width = 80 > 64" in message and "x1 y1 x2 y2" not in message


def test_a_bad_voc_box_is_reported_once_in_voc_terms(tmp_path):
    root = _voc(
        tmp_path,
        {"000001": _voc_xml([("red", 8, 1, 5, 5)]), "000002": _voc_xml([("red", 1, 1, 90, 5)])},
    )
    with collecting_problems():
        ds = VOCDetection(root, "train", classes=["red"])
    message = _message(ds)
    assert "found 2 problems" in message
    assert "object 'red' has <bndbox> xmin 8, ymin 1, xmax 5, ymax 5, a degenerate box" in message
    assert "xmin 1, ymin 1, xmax 90, ymax 5, outside the 64 x 48 (W x H) image" in message
    assert "x y w h" not in message


# ---------------------------------------------------------------- 6. VOC split files
def _voc_xml(objects, w=64, h=48):
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
        f"<ymax>{d}</ymax></bndbox></object>"
        for n, a, b, c, d in objects
    )
    return f"<annotation><size><width>{w}</width><height>{h}</height></size>{objs}</annotation>"


def _voc(tmp_path, xmls, listed=None):
    root = tmp_path / "VOC"
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for name, xml in xmls.items():
        _png(root / "JPEGImages" / f"{name}.jpg")
        (root / "Annotations" / f"{name}.xml").write_text(xml)
    lines = listed if listed is not None else list(xmls)
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(lines) + "\n")
    return root


def test_voc_ids_with_an_image_extension_are_read_without_it_and_warned_of(tmp_path):
    xmls = {"a": _voc_xml([("red", 2, 2, 9, 9)]), "b": _voc_xml([])}
    root = _voc(tmp_path, xmls, listed=["a.jpg", "b.JPG"])
    with collecting_problems():
        ds = VOCDetection(root, "train", classes=["red"])
    assert [f.name for f in ds.files] == ["a.jpg", "b.jpg"]
    assert ds.targets[0]["labels"].tolist() == [0]
    (warning,) = ds.preflight(training=False)
    assert warning.warning and "2 of its 2 ids, such as 'a.jpg', read as 'a'" in warning.detail
    assert "without extension" in warning.fix


def test_a_voc_id_listed_twice_is_named_as_a_coco_image_under_two_ids_is(tmp_path):
    """A split file listing an id twice held the image twice, without a word (oversampling,
    if meant: a warning)."""
    xmls = {"a": _voc_xml([("red", 2, 2, 9, 9)]), "b": _voc_xml([])}
    root = _voc(tmp_path, xmls, listed=["a", "b", "a"])
    with collecting_problems():
        ds = VOCDetection(root, "train", classes=["red"])
    assert len(ds) == 3
    (twice,) = [p for p in ds.preflight(training=False) if "more than once" in p.kind]
    assert twice.warning and twice.detail == "1 id listed twice or more, e.g. a"


def test_voc_objects_of_classes_not_in_the_list_name_the_class_list_to_set(tmp_path):
    xmls = {"a": _voc_xml([("red", 2, 2, 9, 9)]), "b": _voc_xml([("Blue", 2, 2, 9, 9)])}
    with collecting_problems():
        ds = VOCDetection(_voc(tmp_path, xmls), "train", classes=["red", "green"])
    message = _message(ds)
    assert "Annotation files with objects of classes outside the class list (1)" in message
    assert "b.xml' (an object of class 'Blue')" in message
    assert "The class list lacks ['Blue']: give the reader the classes the annotations" in message
    with pytest.raises(DatasetError) as built:  # in Python: the reader's own words
        VOCDetection(_voc(tmp_path, xmls), "train", classes=["red", "green"])
    assert "(classes=[...] (an argument of VOCDetection);" in str(built.value)
    assert "{reader}" not in str(built.value)
    with collecting_problems():
        ds = VOCDetection(_voc(tmp_path, xmls), "train", classes=["red", "blue"])
    twin = "('Blue' differs from 'blue' only in case, spaces or dashes)"
    assert f"lacks ['Blue'] {twin}" in _message(ds)
    assert "hold no box" not in message  # the unread file's boxes are unknown, not absent
    # nor are its classes absent (VOC's 20 default classes were all warned of)
    with collecting_problems():
        ds = VOCDetection(_voc(tmp_path, xmls), "train", classes=["red", "green"])
    assert not [p for p in ds.preflight(training=True) if p.warning]


def _difficult_xml(n: int) -> str:
    objs = "".join(
        "<object><name>red</name><difficult>1</difficult><bndbox><xmin>2</xmin><ymin>2</ymin>"
        "<xmax>9</xmax><ymax>9</ymax></bndbox></object>"
        for _ in range(n)
    )
    return f"<annotation><size><width>64</width><height>48</height></size>{objs}</annotation>"


@pytest.mark.parametrize(
    "options, said",
    [
        ({}, "all 3 objects are marked difficult, and are left out"),
        ({"ignore_difficult": True}, "all 3 objects are marked difficult (kept to be ignored"),
    ],
)
def test_a_voc_set_of_difficult_objects_alone_names_the_options_that_count_them(
    tmp_path, options, said
):
    root = _voc(tmp_path, {"a": _difficult_xml(2), "b": _difficult_xml(1)})
    with collecting_problems():
        ds = VOCDetection(root, "train", classes=["red"], **options)
    with pytest.raises(DatasetError) as info:
        check_datasets({"test": ds})
    message = str(info.value)
    assert said in message and "iscrowd" not in message
    assert "keep_difficult=true and" in message and "ignore_difficult=false" in message
    counted = VOCDetection(root, "train", classes=["red"], keep_difficult=True)
    assert sum(len(t["labels"]) for t in counted.targets) == 3


@pytest.mark.parametrize("flag, hard", [("1.0", 1), ("True", 1), ("0", 0), (" 0.0 ", 0)])
def test_a_voc_difficult_flag_written_as_a_float_or_word_is_read(tmp_path, flag, hard):
    # tools write <difficult>1.0</difficult>: it was read as not difficult
    xml = _difficult_xml(1).replace("<difficult>1</difficult>", f"<difficult>{flag}</difficult>")
    plain = _voc_xml([("red", 2, 2, 9, 9)])
    ds = VOCDetection(_voc(tmp_path, {"a": xml, "b": plain}), "train", classes=["red"])
    assert [len(t["labels"]) for t in ds.targets] == [1 - hard, 1]


def test_a_voc_difficult_flag_that_is_no_number_is_named(tmp_path):
    xml = _difficult_xml(1).replace("<difficult>1</difficult>", "<difficult>yes?</difficult>")
    with pytest.raises(DatasetError, match=r"whose <difficult> is 'yes\?': give 0 or 1"):
        VOCDetection(_voc(tmp_path, {"a": xml}), "train", classes=["red"])


def test_a_voc_source_trains_on_a_subset_of_its_classes_with_skip_unlisted(tmp_path):
    """VOC -> Watercolor trains on six of VOC's classes: the objects of the others are left
    out when asked (counted in a warning); without asking they are an error naming the
    option (a misspelt class list would drop a class)."""
    from tests.cli import run_mic_train
    from tests.det_helpers import TINY_DET

    objects = [("cat", 2, 2, 20, 20), ("car", 30, 10, 50, 30), ("dog", 5, 25, 25, 45)]
    root = _voc(tmp_path, {"a": _voc_xml(objects), "b": _voc_xml(objects[:2])})
    (root / "ImageSets" / "Main" / "test.txt").write_text("a\nb\n")
    _png(tmp_path / "tgt" / "t.png")
    _png(tmp_path / "tgt" / "u.png")
    args = [
        *(o for o in TINY_DET if not o.startswith("dataset.")),
        "dataset=det_voc",
        "dataset.num_classes=2",
        "dataset.classes=[cat,dog]",
        f"dataset.root_source={root}",
        f"dataset.target_images={tmp_path / 'tgt'}",
        f"dataset.root_test={root}",
        "dataset.source_split=train",
        "loader.source_batch_size=2",
        "loader.target_batch_size=2",
    ]
    out = run_mic_train([*args, f"hydra.run.dir={tmp_path / 'refused'}"])
    assert out.returncode == 2 and "dataset.skip_unlisted=true (read by source and" in out.stderr
    out = run_mic_train([*args, "dataset.skip_unlisted=true", f"hydra.run.dir={tmp_path / 'run'}"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert "2 objects of car (2)" in out.stderr + out.stdout
    ds = VOCDetection(root, "train", classes=["cat", "dog"], skip_unlisted=True)
    assert [t["labels"].tolist() for t in ds.targets] == [[0, 1], [0]]


def test_a_missing_voc_image_is_listed_once(tmp_path):
    root = _voc(tmp_path, {"a": _voc_xml([])}, listed=["a", "gone"])
    (root / "Annotations" / "gone.xml").write_text(_voc_xml([]))
    with collecting_problems():
        ds = VOCDetection(root, "train", classes=["red"])
    message = _message(ds)
    assert "Missing image files (1)" in message and message.count("gone.jpg") == 1
    assert "not 000001.jpg" in message


# ---------------------------------------------------------------- sets without a box
def _coco_run(
    tmp_path, source_annotations, test_annotations, images=None, crowd=False, **test_json
):
    """``mic-train`` on a COCO source and test of two 64 x 48 images each (``_coco``'s
    triples; ``images`` replaces the source json's image list; ``crowd``: every source
    annotation ``iscrowd``; ``test_json``: ``_coco``'s settings for the test json, and
    ``extra``: more overrides)."""
    from tests.cli import run_mic_train
    from tests.det_helpers import TINY_DET

    src_images, src_json = _coco(tmp_path / "src", source_annotations)
    data = json.loads(src_json.read_text())
    if images is not None:
        data["images"] = images
    for a in data["annotations"]:
        a["iscrowd"] = int(crowd)
    src_json.write_text(json.dumps(data))
    extra = test_json.pop("extra", [])
    tst_images, tst_json = _coco(tmp_path / "tst", test_annotations, **test_json)
    _png(tmp_path / "tgt" / "t.png")
    _png(tmp_path / "tgt" / "u.png")
    return run_mic_train(
        [
            *(o for o in TINY_DET if not o.startswith("dataset.")),
            "dataset=det_coco",
            "dataset.num_classes=3",
            f"dataset.source_images={src_images}",
            f"dataset.source_annotations={src_json}",
            f"dataset.target_images={tmp_path / 'tgt'}",
            f"dataset.test_images={tst_images}",
            f"dataset.test_annotations={tst_json}",
            "loader.source_batch_size=2",
            "loader.target_batch_size=2",
            f"hydra.run.dir={tmp_path / 'run'}",
            *extra,
        ]
    )


BOX = [(1, 1, [2, 2, 10, 10]), (2, 2, [4, 4, 10, 10])]


def test_a_test_json_without_a_category_of_the_class_list_runs(tmp_path):
    # dataset.classes=[red,green,blue] refused a test json written with red and green alone
    fewer = [{"id": 7, "name": "green"}, {"id": 8, "name": "red"}]
    run = _coco_run(
        tmp_path,
        BOX,
        [(1, 8, [2, 2, 10, 10]), (2, 7, [4, 4, 10, 10])],
        categories=fewer,
        extra=["dataset.classes=[red,green,blue]"],
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "are not categories" not in run.stderr


def test_a_source_whose_boxes_are_all_crowd_is_refused_saying_why(tmp_path):
    out = _coco_run(tmp_path, BOX, BOX, crowd=True)
    assert out.returncode == 2, out.stderr[-2000:]
    message = out.stderr.split("mic: error: ", 1)[1]
    assert "dataset.source (CocoDetection): Annotation sets without a box (1)" in message
    assert "all 2 annotations are iscrowd, and skip_crowd left them out" in message
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_test_set_without_a_box_is_refused_and_its_map_is_nan(tmp_path):
    from mic.tasks.detection import DetectionMetrics

    out = _coco_run(tmp_path, BOX, [])
    assert out.returncode == 2, out.stderr[-2000:]
    message = out.stderr.split("mic: error: ", 1)[1]
    assert "dataset.test (CocoDetection): Annotation sets without a box (1)" in message
    assert "its mAP would be undefined" in message
    # without the check (preflight=false) the score is NaN, never a best: not torchmetrics' -1
    import torch

    metric = DetectionMetrics(num_classes=2)
    none = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    guess = {"boxes": torch.tensor([[1.0, 1, 5, 5]]), "scores": torch.tensor([0.9])}
    metric.update([{**guess, "labels": torch.tensor([0])}], [none])
    scores = metric.compute()
    assert np.isnan(scores["map_50"]) and np.isnan(scores["map"])


@pytest.mark.parametrize("test", ["labelled", "none"])
def test_a_loaded_run_names_the_classes_its_coco_json_gave(tmp_path, test):
    """With dataset.classes=null the names come from the json's categories: the run's
    config.yaml records them, so load_run's task names them without the data (it named them
    '0', '1', '2'; a run without a test set, label-free, took them from none)."""
    import mic

    extra = ["dataset.test=null", "checkpoint.best_by=im"] if test == "none" else []
    out = _coco_run(tmp_path, BOX, BOX, extra=extra)
    assert out.returncode == 0, out.stderr[-2000:]
    task, _ = mic.load_run(tmp_path / "run")
    assert task.class_names == ["red", "green", "blue"]


def test_duplicate_image_ids_are_named(tmp_path):
    images = [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}]
    out = _coco_run(tmp_path, BOX, BOX, images=images)
    assert out.returncode == 2, out.stderr[-2000:]
    message = out.stderr.split("mic: error: ", 1)[1]
    assert "gives several images the same id: id 1 is that of ['a.png', 'b.png']" in message


def test_one_file_listed_under_two_ids_is_named(tmp_path):
    """A copy of an image entry without its boxes would train its objects as background."""
    images, path = _coco(tmp_path, [(1, 1, [2, 2, 10, 10])])
    data = json.loads(path.read_text())
    data["images"].append({**data["images"][0], "id": 100})
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError) as info:
        CocoDetection(images, path)
    message = str(info.value)
    assert "Image files listed under several ids (1):" in message
    assert "a.png' (ids 1, 100)" in message and "List each file once" in message


@pytest.mark.parametrize(
    "change, said",
    [
        (lambda d: d["images"][0].pop("id"), "entry 0 of 'images' has no 'id'"),
        (lambda d: d["images"][1].pop("file_name"), "entry 1 of 'images' has no 'file_name'"),
        # a table export's ids: the message said it had none
        (lambda d: d["images"][0].update(id=1.0), "entry 0 of 'images' has an 'id' of 1.0, wh"),
        (lambda d: d.update(images={"a.png": 1}), "gives 'images' as dict; COCO lists them"),
        (lambda d: d.update(annotations={"1": 1}), "gives 'annotations' as dict"),
        (lambda d: d["annotations"].append("box"), "entry 2 of 'annotations' is 'box', not an"),
    ],
)
def test_a_coco_json_of_another_shape_names_the_file_and_the_entry(tmp_path, change, said):
    """These ended in a KeyError or TypeError from inside the reader, without the file."""
    images, ann = _coco(tmp_path, BOX)
    data = json.loads(ann.read_text())
    change(data)
    ann.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=f"annotation file '{ann}'") as info:
        CocoDetection(images, ann)
    assert said in str(info.value)


def test_a_coco_file_name_written_on_windows_finds_its_image(tmp_path):
    """'sub\\a.png' (a Windows tool's export) was a missing file named 'sub\\a.png' on Linux."""
    images, ann = _coco(tmp_path, BOX)
    data = json.loads(ann.read_text())
    (images / "sub").mkdir()
    for entry in data["images"]:
        (images / entry["file_name"]).rename(images / "sub" / entry["file_name"])
        entry["file_name"] = "sub\\" + entry["file_name"]
    ann.write_text(json.dumps(data))
    dataset = CocoDetection(images, ann)
    assert [f.relative_to(images).as_posix() for f in dataset.files] == ["sub/a.png", "sub/b.png"]
    check_datasets({"source": dataset})


def test_a_coco_json_of_another_shape_through_mic_train(tmp_path):
    images = [{"id": 1, "file_name": "a.png"}, {"file_name": "b.png"}]
    out = _coco_run(tmp_path, BOX, BOX, images=images)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "entry 1 of 'images' has no 'id' (a number or a string)" in out.stderr
    assert "Traceback" not in out.stderr


def test_image_ids_of_numbers_and_strings_mixed_are_read_in_the_file_s_order(tmp_path):
    images, ann = _coco(tmp_path, [(1, 1, [2, 2, 10, 10]), ("2", 2, [4, 4, 10, 10])])
    data = json.loads(ann.read_text())
    data["images"][1]["id"] = "2"
    ann.write_text(json.dumps(data))
    ds = CocoDetection(images, ann)
    assert [f.name for f in ds.files] == ["a.png", "b.png"]
    assert [t["labels"].tolist() for t in ds.targets] == [[0], [1]]


def test_a_nan_box_is_reported_as_such_not_as_normalised(tmp_path):
    images, ann = _coco(tmp_path, [(1, 1, [float("nan"), 0.2, 0.3, 0.25]), (2, 2, [3, 3, 9, 9])])
    with pytest.raises(DatasetError) as info:
        CocoDetection(images, ann)
    assert "non-finite value" in str(info.value) and "normalised" not in str(info.value)


def test_file_names_that_repeat_the_image_folder_say_so(tmp_path):
    """COCO exporters often write file_name 'images/a.png' beside an 'images' folder: the
    image folder given as that folder doubles it."""
    images, ann = _coco(tmp_path, BOX)
    data = json.loads(ann.read_text())
    for im in data["images"]:
        im["file_name"] = f"images/{im['file_name']}"
    ann.write_text(json.dumps(data))
    with collecting_problems():
        ds = CocoDetection(images, ann)
    message = _message(ds)
    assert "the folder name 'images' is doubled" in message
    assert f"the file is at '{images / 'a.png'}'" in message
    assert len(CocoDetection(images.parent, ann)) == 2  # the folder above: read


def test_a_declared_class_without_a_box_is_warned_of_naming_the_json(tmp_path):
    """The warning named the image folder, where the json is what a user fixes."""
    images, ann = _coco(tmp_path, [(1, 1, [2, 2, 10, 10]), (2, 2, [5, 5, 8, 8])])
    (warned,) = CocoDetection(images, ann).preflight()
    assert warned.warning and warned.kind == "annotation sets in which declared classes have no box"
    assert warned.file == str(ann) and warned.detail == "class 2 (blue)"


def test_a_json_none_of_whose_images_is_in_the_folder_asks_for_the_folder_or_split(tmp_path):
    images, ann = _coco(tmp_path, [(1, 1, [2, 2, 10, 10])])
    data = json.loads(ann.read_text())
    for im in data["images"]:
        im["file_name"] = f"val_{im['file_name']}"  # another split's json
    ann.write_text(json.dumps(data))
    with pytest.raises(DatasetError) as info:
        CocoDetection(images, ann)
    message = str(info.value)
    assert "Annotation files none of whose images is in the image folder (1):" in message
    assert "none of its 2 images (e.g. 'val_a.png') is in" in message
    assert "the annotation file of another split" in message
