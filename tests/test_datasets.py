import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mic import DatasetError, check_num_classes
from mic.datasets import DigitsDomain, ImageFolder, UnlabeledImageFolder, classification_transform
from tests.helpers import write_png


def _png(path, value=128, size=(12, 10)):
    write_png(path, value, size)


@pytest.fixture
def class_tree(tmp_path):
    root = tmp_path / "src"
    for c, n in (("bike", 2), ("car", 3), ("dog", 1)):
        for i in range(n):
            _png(root / c / f"{i}.png", value=40 * i)
    return root


def test_image_folder_reads_class_per_folder(class_tree):
    ds = ImageFolder(class_tree, transform=classification_transform(False, size=8, resize=8))
    assert ds.classes == ["bike", "car", "dog"] and ds.num_classes == 3
    assert len(ds) == 6 and ds.targets == [0, 0, 1, 1, 1, 2]
    x, y = ds[2]
    assert x.shape == (3, 8, 8) and y == 1


def test_image_folder_uses_a_given_class_order_and_allows_missing_classes(class_tree):
    ds = ImageFolder(class_tree, classes=["dog", "car", "bike", "zebra"], allow_empty_classes=True)
    assert ds.num_classes == 4
    assert {p.parent.name: y for p, y in ds.samples} == {"dog": 0, "car": 1, "bike": 2}


def test_unlabelled_folder_reads_every_image_recursively(tmp_path):
    _png(tmp_path / "a.jpg")
    _png(tmp_path / "sub" / "deeper" / "b.png")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = UnlabeledImageFolder(tmp_path, transform=classification_transform(True, size=8, resize=8))
    assert len(ds) == 2
    assert isinstance(ds[1], torch.Tensor) and ds[1].shape == (3, 8, 8)
    assert len(UnlabeledImageFolder(tmp_path, recursive=False)) == 1


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        UnlabeledImageFolder(tmp_path / "nope")
    with pytest.raises(DatasetError, match="does not exist"):
        ImageFolder(tmp_path / "nope")


def test_empty_folder(tmp_path):
    with pytest.raises(DatasetError, match="no images found"):
        UnlabeledImageFolder(tmp_path)
    with pytest.raises(DatasetError, match="it is empty"):
        ImageFolder(tmp_path)


def test_wrong_layout_flat_images_for_class_per_folder(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    with pytest.raises(
        DatasetError, match="found 2 images directly in it but no class sub-folders"
    ):
        ImageFolder(tmp_path)


def test_class_folders_one_level_down_are_named_not_read_as_one_class(class_tree, tmp_path):
    wrapper = tmp_path / "wrapped"
    wrapper.mkdir()
    class_tree.rename(wrapper / "images")
    with pytest.raises(DatasetError, match=r"holds one folder, 'images', whose sub-folders "):
        ImageFolder(wrapper)
    assert ImageFolder(wrapper / "images").classes == ["bike", "car", "dog"]


def test_images_beside_the_class_folders_are_left_out_with_a_warning(class_tree):
    _png(class_tree / "stray.png")
    ds = ImageFolder(class_tree)
    assert len(ds) == 6 and [p.name for p in ds.loose] == ["stray.png"]
    (problem,) = [p for p in ds.preflight() if "in no class folder" in p.kind]
    assert problem.warning and "1 left out, e.g. 'stray.png'" in problem.detail


def test_empty_class_folder_and_unknown_class(class_tree):
    (class_tree / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"without images.*\['empty'\]"):
        ImageFolder(class_tree)
    with pytest.raises(DatasetError, match="not among its 2 classes"):
        ImageFolder(class_tree, classes=["bike", "car"])


def test_unreadable_image_names_the_file(tmp_path):
    _png(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    ds = UnlabeledImageFolder(tmp_path)
    with pytest.raises(DatasetError, match=r"cannot read image '.*broken.png'"):
        [ds[i] for i in range(len(ds))]


def test_class_count_mismatch_between_domains(class_tree, tmp_path):
    for c in ("bike", "car"):
        _png(tmp_path / "tgt" / c / "0.png")
    data = {"source": ImageFolder(class_tree), "test": ImageFolder(tmp_path / "tgt")}
    with pytest.raises(DatasetError, match=r"class counts disagree.*source has 3 \(") as info:
        check_num_classes(3, data)
    assert "test has 2 (bike, car)" in str(info.value)  # the names show which class is extra
    # the test set alone differs: its advice (it said source and target must share classes)
    assert "The test set must be scored in the source's classes" in str(info.value)
    assert "dataset.num_classes to match" not in str(info.value)
    data = {"source": ImageFolder(class_tree), "target": ImageFolder(tmp_path / "tgt")}
    with pytest.raises(DatasetError, match="Source and target must share one label space"):
        check_num_classes(3, data)


def test_an_evaluation_over_a_test_reader_that_numbered_its_own_classes_is_refused(
    class_tree, tmp_path
):
    from mic import Evaluation
    from mic.datasets import classification_transform
    from mic.tasks.classification import ClassificationTask

    for c in ("car", "dog"):  # the target test set lacks 'bike': car would be read as 0
        _png(tmp_path / "tgt" / c / "0.png")
    transform = classification_transform(False, size=8, resize=8)
    source = ImageFolder(class_tree, transform=transform)
    own = ImageFolder(tmp_path / "tgt", transform=transform)
    task = ClassificationTask(3)
    with pytest.raises(DatasetError, match=r"test has 2 \(car, dog\)") as info:
        Evaluation(task, DataLoader(own, batch_size=2))
    assert "ImageFolder(..., classes=source.classes)" in str(info.value)

    class Boxes(list):  # a reader of detection's kind takes the source's classes so
        def __init__(self, items, source_classes=None):
            super().__init__(items)
            self.classes = ["dog", "car"]

    with pytest.raises(DatasetError, match=r"e\.g\. Boxes\(\.\.\., source_classes=source"):
        Evaluation(task, DataLoader(Boxes([]), batch_size=2))
    kept = ImageFolder(
        tmp_path / "tgt", transform=transform, classes=source.classes, allow_empty_classes=True
    )
    assert [kept.classes.index(c) for c in ("car", "dog")] == [1, 2]
    Evaluation(task, DataLoader(kept, batch_size=2))  # the source's indices: accepted


def test_a_source_and_target_of_one_folder_are_warned_of(tmp_path):
    from mic.experiment import build_datasets, load_config
    from tests.helpers import class_folders, folder_overrides

    source = class_folders(tmp_path / "src", ["a", "b", "c"])
    cfg = load_config(folder_overrides(tmp_path, source=source, target=source))
    with pytest.warns(UserWarning, match="the source and the target read the same folder"):
        build_datasets(cfg)


def test_a_test_split_s_class_folders_take_the_source_s_indices(tmp_path):
    # source a, b, c; test b, c: sorted on its own the test split would call b class 0
    from mic.experiment import build_datasets, load_config
    from tests.helpers import class_folders, folder_overrides

    test = class_folders(tmp_path / "tst", ["b", "c"], n=1)
    data = build_datasets(load_config(folder_overrides(tmp_path, test=test)))
    assert data["test"].classes == data["source"].classes == ["a", "b", "c"]
    assert sorted((p.parent.name, label) for p, label in data["test"].samples) == [
        ("b", 1),
        ("c", 2),
    ]


def test_digits_domains_are_disjoint_stratified_and_shifted():
    src = DigitsDomain("source", "train")
    tgt_train = DigitsDomain("target", "train", labelled=False)
    tgt_test = DigitsDomain("target", "test")
    assert src.images.shape[1:] == (3, 32, 32)
    assert len(src) + len(DigitsDomain("source", "test")) + len(tgt_train) + len(tgt_test) == 1797
    assert torch.bincount(src.targets).min() >= 40  # every class, balanced
    assert isinstance(tgt_train[0], torch.Tensor)
    image, label = tgt_test[0]
    assert image.shape == (3, 32, 32) and 0 <= int(label) < 10
    # the target carries photo texture: colour varies across channels, the source does not
    assert (src.images[:, 0] - src.images[:, 1]).abs().max() == 0
    assert (tgt_test.images[:, 0] - tgt_test.images[:, 1]).abs().mean() > 0.02
    assert torch.equal(DigitsDomain("target", "test").images, tgt_test.images)  # fixed seed


def test_digits_split_indices_do_not_overlap():
    from mic.datasets.digits import _split

    parts = _split(0)
    all_idx = np.concatenate(list(parts.values()))
    assert len(np.unique(all_idx)) == len(all_idx) == 1797


def test_digits_bad_arguments():
    from mic.core import ConfigError

    with pytest.raises(ConfigError):
        DigitsDomain("mnist")
    with pytest.raises(ConfigError):
        DigitsDomain("target", beta=2.0)


def test_folders_scale_mics_block_with_the_image_size():
    """dataset=folders: the published 64 px block at 224 px, scaled to dataset.size, so that
    small images are masked in blocks rather than whole."""
    from mic.experiment import load_config

    roots = ["dataset.root_source=/s", "dataset.root_target=/t", "dataset.root_test=/u"]
    blocks = {}
    for size in (224, 32):
        cfg = load_config(
            ["dataset=folders", "dataset.num_classes=3", f"dataset.size={size}", *roots]
        )
        blocks[size] = (cfg.dataset.mic_block_size, cfg.method.terms.mic.masker.block_size)
    assert blocks == {224: (64, 64), 32: (9, 9)}


def test_jpeg_files_under_jfif_and_jpe_names_are_read(tmp_path):
    from PIL import Image

    for i, ext in enumerate((".jpg", ".jfif", ".jpe")):
        path = tmp_path / "a" / f"{i}{ext}"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (8, 8), (200, 0, 0)).save(path, format="JPEG")
    ds = ImageFolder(tmp_path, transform=classification_transform(False, size=8, resize=8))
    assert len(ds) == 3 and ds[1][0].shape == (3, 8, 8)


def test_an_empty_class_per_folder_root_is_not_told_to_be_read_as_unlabelled(tmp_path):
    from mic import DatasetError

    with pytest.raises(DatasetError, match=r"but it is empty\.$"):
        ImageFolder(tmp_path)
    write_png(tmp_path / "1.png", 0)
    with pytest.raises(DatasetError, match=r"directly in it .* use UnlabeledImageFolder"):
        ImageFolder(tmp_path)


def test_a_set_that_names_its_classes_otherwise_at_the_same_count_is_warned_of():
    """A test set of 10 folders a to j beside the digits' 0 to 9 was scored silently: the counts
    agree and the names share no order to compare."""
    from types import SimpleNamespace

    from mic.datasets.preflight import check_class_order

    source = SimpleNamespace(classes=[str(i) for i in range(10)])
    test = SimpleNamespace(classes=list("abcdefghij"))
    with pytest.warns(UserWarning, match=r"the test set names 10 of its classes otherwise than "):
        check_class_order({"source": source, "test": test})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same names, or a subset of another count: silent
        check_class_order({"source": source, "test": SimpleNamespace(classes=source.classes)})
        check_class_order({"source": source, "test": SimpleNamespace(classes=["0", "1"])})
