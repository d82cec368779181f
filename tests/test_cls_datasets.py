"""VisDA-2017, Office-Home and Office-31 readers on tiny trees written here in each dataset's
layout, the published pre-processing, and the dataset configs end to end."""

import json
import re
import warnings

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from mic import DatasetError
from mic.datasets import (
    ImageFolder,
    ImageList,
    Office31,
    OfficeHome,
    VisDA2017,
    classification_transform,
    domain_pair,
)
from mic.datasets.office import OFFICE31_CLASSES, OFFICE_HOME_CLASSES
from mic.datasets.visda import VISDA_CLASSES
from mic.experiment import load_config, run_experiment
from tests.helpers import TINY_RUN, run_cli, write_png


def _png(path, value=100, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def _visda(root, layout="released", per_class=1):
    """A VisDA-2017 tree: every class in train/ (synthetic) and validation/ (real)."""
    for split, prefix in (("train", "src"), ("validation", "real")):
        lines = []
        for label, name in enumerate(VISDA_CLASSES):
            for i in range(per_class):
                rel = f"{name}/{prefix}_{i} {label:02d}.png"  # a space in the file name
                _png(root / split / rel, value=20 * label)
                path = rel if layout == "released" else f"{split}/{rel}"
                lines.append(f"{path} {label}")
        listing = root / split / "image_list.txt"
        if layout == "published":
            listing = root / "image_list" / f"{split}.txt"
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text("\n".join(lines) + "\n")
    return root


def test_a_visda_list_whose_labels_name_other_classes_than_the_folders_is_refused(tmp_path):
    from mic import DatasetError

    root = _visda(tmp_path)
    listing = root / "train" / "image_list.txt"
    lines = listing.read_text().splitlines()
    shifted = [
        f"{line.rsplit(' ', 1)[0]} {(int(line.rsplit(' ', 1)[1]) + 1) % 12}" for line in lines
    ]
    listing.write_text("\n".join(shifted) + "\n")
    with pytest.raises(DatasetError, match=r"12 of the 12 images .* in 'aeroplane/' with label 1"):
        VisDA2017(root, "synthetic")
    VisDA2017(root, "real")  # the validation list is right


@pytest.mark.parametrize("layout", ["released", "published"])
def test_visda_reads_both_list_layouts(tmp_path, layout):
    root = _visda(tmp_path, layout)
    tf = classification_transform(False, size=8, resize=10, square=True)
    source = VisDA2017(root, "synthetic", transform=tf)
    assert len(source) == 12 and source.num_classes == 12 and source.targets == list(range(12))
    x, y = source[3]
    assert x.shape == (3, 8, 8) and y == 3
    target = VisDA2017(root, "real", transform=tf, labelled=False)
    assert isinstance(target[0], torch.Tensor)
    assert all("real_" in p.name for p, _ in target.samples)
    assert len(VisDA2017(root, "validation")) == 12


def test_visda_errors_name_the_problem(tmp_path):
    root = _visda(tmp_path)
    with pytest.raises(DatasetError, match="'synthetic' or 'real'"):
        VisDA2017(root, "clipart")
    with pytest.raises(DatasetError, match=f"'{tmp_path}' holds it: is that the dataset root"):
        VisDA2017(tmp_path / "train", "real")  # one level too low
    inner = _visda(tmp_path / "datasets" / "visda")
    with pytest.raises(DatasetError, match=f"'{inner}' holds it: is that the dataset root"):
        VisDA2017(inner.parent, "real")  # one level too high
    listing = root / "train" / "image_list.txt"
    listing.write_text("aeroplane/src_0 00.png 12\n")
    with pytest.raises(
        DatasetError,
        match=re.escape("label 12 (line 1: 'aeroplane/src_0 00.png 12'), outside the 12 classes"),
    ):
        VisDA2017(root, "synthetic")
    listing.write_text("".join(f"aeroplane/src_0 00.png {y}\n" for y in (3, 1, 12, 7)))
    with pytest.raises(DatasetError, match=r"12 classes \[0, 11\]; its labels run from 1 to the"):
        VisDA2017(root, "synthetic")  # 1..12: numbered from 1
    listing.write_text("".join(f"aeroplane/src_0 00.png {y}\n" for y in (0, 1, 12)))
    with pytest.raises(DatasetError, match=r"outside the 12 classes \[0, 11\]$"):
        VisDA2017(root, "synthetic")  # a 0 as well: no such hint
    listing.write_text("aeroplane/src_0 00.png\n")
    with pytest.raises(DatasetError, match="line 1: expected '<image path> <class index>'"):
        VisDA2017(root, "synthetic")
    listing.write_text("aeroplane/src_0 00.png,0\n")  # (a CSV file's line)
    with pytest.raises(DatasetError, match=r"00\.png,0' \(fields separated by ',': separate"):
        VisDA2017(root, "synthetic")
    listing.write_text("aeroplane/missing.png 0\n")
    with pytest.raises(DatasetError, match="does not exist; relative paths are taken from"):
        VisDA2017(root, "synthetic")
    with pytest.raises(DatasetError, match="does not exist"):
        ImageList(tmp_path / "nope.txt", VISDA_CLASSES)


def _office_home(root, domains=("Art", "Real World"), classes=OFFICE_HOME_CLASSES):
    for d in domains:
        for i, c in enumerate(classes):
            _png(root / d / c / f"{c}_1.jpg", value=i)
    return root


def test_office_home_folders_with_the_published_class_order(tmp_path):
    root = _office_home(tmp_path)
    art = OfficeHome(root, "Ar")
    assert art.num_classes == 65 and len(art) == 65
    labels = {p.parent.name: y for p, y in art.samples}
    assert labels["Drill"] == 0 and labels["Alarm_Clock"] == 33 and labels["Marker"] == 64
    real = OfficeHome(root, "Rw", labelled=False)  # the release's "Real World" folder
    assert real.folder.name == "Real World" and not isinstance(real[0], tuple)
    assert OfficeHome(root, "Art").domain == "Ar"
    with pytest.raises(DatasetError, match=r"domains Ar \(Art\), Cl"):
        OfficeHome(root, "Sketch")
    with pytest.raises(DatasetError, match="domain Cl: no folder"):
        OfficeHome(root, "Cl")


def test_office_home_subset_needs_allow_empty_classes(tmp_path):
    root = _office_home(tmp_path, ("Clipart",), OFFICE_HOME_CLASSES[:3])
    with pytest.raises(
        DatasetError,
        match=re.escape(
            "Clipart' missing ['Glasses', 'Computer', 'File_Cabinet', 'Shelf', 'Toys', ...] "
            "(62 of 65);"
        ),
    ):
        OfficeHome(root, "Cl")  # 3 of the 65 class folders
    subset = OfficeHome(root, "Cl", allow_empty_classes=True)
    assert len(subset) == 3
    # as a test set: its mean class accuracy averages the 3 classes it holds, which is said
    (said,) = [p for p in subset.preflight(training=False) if p.warning]
    assert said.kind == "test sets with classes that no image has"
    assert "mean class accuracy averages the 3 classes the set holds" in said.fix
    assert "class 0 (Drill)" not in said.detail and "(Glasses)" in said.detail
    (root / "Clipart" / "Unicorn").mkdir()
    _png(root / "Clipart" / "Unicorn" / "u.jpg")
    with pytest.raises(DatasetError, match="not among its 65 classes"):
        OfficeHome(root, "Cl", allow_empty_classes=True)
    (root / "Clipart" / "Unicorn").rename(root / "Clipart" / "alarm clock")
    with pytest.raises(
        DatasetError, match=re.escape("rename them ('alarm clock' -> 'Alarm_Clock')")
    ):
        OfficeHome(root, "Cl", allow_empty_classes=True)


def test_office31_both_layouts(tmp_path):
    for c in OFFICE31_CLASSES:
        _png(tmp_path / "amazon" / "images" / c / "frame_0001.jpg")  # the release's layout
        _png(tmp_path / "webcam" / c / "frame_0001.jpg")
    amazon = Office31(tmp_path, "A")
    assert amazon.num_classes == 31 and len(amazon) == 31 and amazon.folder.name == "images"
    assert amazon.class_to_idx["back_pack"] == 0 and amazon.class_to_idx["trash_can"] == 30
    assert len(Office31(tmp_path, "webcam")) == 31
    with pytest.raises(DatasetError, match="domain D: no folder"):
        Office31(tmp_path, "D")


def test_domain_pair():
    assert domain_pair("Ar2Cl", "source") == "Ar" and domain_pair("Ar2Cl", "target") == "Cl"
    # a domain adapted to itself ran silently, scoring the source as the target
    with pytest.warns(UserWarning, match="dataset.pair=Ar2ar adapts a domain to itself"):
        assert domain_pair("Ar2ar", "target") == "ar"
    for bad in ("ArCl", "2Cl", "Ar2Cl2Pr"):
        with pytest.raises(DatasetError):
            domain_pair(bad, "source")


def test_published_preprocessing_resizes_to_a_square_first():
    image = Image.fromarray(np.arange(20 * 40 * 3, dtype=np.uint8).reshape(20, 40, 3))
    test = classification_transform(
        False, size=8, resize=10, square=True, mean=[0] * 3, std=[1] * 3
    )
    want = np.asarray(image.resize((10, 10), Image.BILINEAR))[1:9, 1:9] / 255.0
    torch.testing.assert_close(
        test(image), torch.tensor(want, dtype=torch.float32).permute(2, 0, 1)
    )
    train = classification_transform(True, size=8, resize=10, crop="random_resized", square=True)
    assert train.transforms[0].size == (10, 10)
    assert type(train.transforms[1]).__name__ == "RandomResizedCrop"
    assert type(train.transforms[2]).__name__ == "RandomHorizontalFlip"
    assert train(image).shape == (3, 8, 8)
    kept = classification_transform(False, size=8, resize=10)  # aspect kept: shorter side
    assert kept.transforms[0].size == 10


SMALL = ["dataset.size=8", "dataset.resize=10"]


@pytest.mark.parametrize(
    ("dataset", "pair", "n"), [("officehome", "Ar2Rw", 65), ("office31", "A2W", 31)]
)
def test_office_dataset_configs_build_source_target_and_test(tmp_path, dataset, pair, n):
    if dataset == "officehome":
        _office_home(tmp_path)
    else:
        for d in ("amazon", "webcam"):
            for c in OFFICE31_CLASSES:
                _png(tmp_path / d / "images" / c / "1.jpg")
    cfg = load_config(
        [f"dataset={dataset}", f"dataset.root={tmp_path}", f"dataset.pair={pair}", *SMALL]
    )
    source, target, test = (instantiate(cfg.dataset[k]) for k in ("source", "target", "test"))
    assert (
        source.domain == pair.split("2")[0] and target.domain == test.domain == pair.split("2")[1]
    )
    assert source.num_classes == n and cfg.task.primary_metric == "accuracy"
    assert not isinstance(target[0], tuple) and test[0][0].shape == (3, 8, 8)


@pytest.mark.parametrize(("dataset", "pair"), [("officehome", "Ar2Rw"), ("office31", "A2W")])
def test_office_datasets_train_through_mic_train(tmp_path, dataset, pair):
    # these readers have a fixed class list and take no classes=; mic-train gave them the
    # source's, and no Office run could start. MIC's block follows dataset.size (2 px at 8 px)
    if dataset == "officehome":
        _office_home(tmp_path / "data")
    else:
        for d in ("amazon", "webcam"):
            for c in OFFICE31_CLASSES:
                _png(tmp_path / "data" / d / "images" / c / "1.jpg")
    done = run_cli(
        f"dataset={dataset}",
        f"dataset.root={tmp_path / 'data'}",
        f"dataset.pair={pair}",
        *SMALL,
        "model=small_cnn",
        *TINY_RUN,
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["metric"] == "accuracy"
    assert "adapts a domain to itself" not in done.stderr  # two domains: no such warning


def test_a_target_reader_with_another_fixed_class_list_than_the_source_is_refused(tmp_path):
    # a class-per-folder source (classes sorted by name) beside Office-Home's published order
    _office_home(tmp_path / "data", ("Art",))
    done = run_cli(
        "dataset=officehome",
        f"dataset.root={tmp_path / 'data'}",
        "dataset.pair=Ar2Ar",
        "dataset.source._target_=mic.datasets.ImageFolder",
        "~dataset.source.domain",
        f"dataset.source.root={tmp_path / 'data' / 'Art'}",
        *SMALL,
        "model=small_cnn",
        *TINY_RUN,
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    said = "mic: error: dataset.target, dataset.test: the reader OfficeHome has its own fixed"
    assert said in done.stderr  # (the datasets named)
    assert (
        "(65 classes: Alarm_Clock, Backpack, Batteries and 62 more; the reader's 65: Drill"
        in done.stderr
    )


def test_visda_experiment_runs_and_scores_mean_class_accuracy(tmp_path):
    root = _visda(tmp_path / "visda", per_class=2)
    cfg = load_config(
        [
            "dataset=visda2017",
            f"dataset.root={root}",
            *SMALL,
            "method=sdat",
            "model=small_cnn",
            "iterations=2",
            "adaptation_start=0",
            "eval.interval=0",
            "eval.adabn_batches=0",
            "loader.source_batch_size=8",
            "loader.target_batch_size=8",
            "log.progress=false",
            "log.tensorboard=false",
            "device=cpu",
        ]
    )
    assert cfg.method.terms.mic.masker.block_size == 2  # follows dataset.size (64 px at 224)
    summary = run_experiment(cfg, tmp_path / "run")
    assert summary["metric"] == "mean_class_accuracy"
    assert 0.0 <= summary["after_adaptation"]["student"] <= 1.0
    records = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "eval/student/accuracy" in records and "loss/cdan" in records and "loss/mic" in records


def test_the_resize_follows_the_crop_by_default_and_may_not_fall_below_it():
    from PIL import Image

    from mic import ConfigError

    image = Image.new("RGB", (80, 64), (200, 10, 10))
    image.paste((10, 200, 10), (0, 0, 40, 64))  # left half green
    # a 32 px evaluation crop of the whole (shorter side resized to 37), not of the middle of a
    # 256 px one: both halves are in it
    crop = classification_transform(False, size=32)(image)
    assert crop.shape == (3, 32, 32)
    assert crop[1, :, 0].mean() > crop[1, :, -1].mean()  # green at the left, red at the right
    assert [type(t).__name__ for t in classification_transform(False).transforms][:2] == [
        "Resize",
        "CenterCrop",
    ]
    assert classification_transform(False).transforms[0].size == 256  # the published default
    with pytest.raises(ConfigError, match=r"resized to 16 px \(dataset.resize\) and then"):
        classification_transform(False, size=32, resize=16)


def test_splits_that_read_each_others_images_are_named(tmp_path):
    import warnings

    from mic import DatasetError
    from mic.experiment import build_datasets

    root = tmp_path / "office31"
    for d in ("amazon", "webcam"):
        for c in OFFICE31_CLASSES:
            _png(root / d / "images" / c / "1.jpg")
    office = ["dataset=office31", f"dataset.root={root}", *SMALL]
    with pytest.warns(UserWarning, match="the source and the target read the same folder"):
        build_datasets(load_config([*office, "dataset.pair=A2A"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # two domains: neither warning
        build_datasets(load_config([*office, "dataset.pair=A2W"]))
    folders = [
        "dataset=folders",
        "dataset.num_classes=31",
        "dataset.size=8",
        f"dataset.root_source={root / 'amazon' / 'images'}",
        f"dataset.root_target={root / 'webcam' / 'images'}",
        f"dataset.root_test={root / 'webcam' / 'images'}",
    ]
    with pytest.raises(DatasetError, match=r"the target's folder .* holds the source's"):
        build_datasets(load_config([*folders, f"dataset.root_target={root}"]))
    source_as_test = f"dataset.root_test={root / 'amazon' / 'images'}"
    with pytest.warns(UserWarning, match="the source and the test set read the same folder"):
        build_datasets(load_config([*folders, source_as_test]))
    one_level_up = f"dataset.root_test={root / 'webcam'}"
    with pytest.raises(DatasetError, match=r"holds the folder 'images', whose sub-folders are"):
        build_datasets(load_config([*folders, one_level_up]))
    visda = ["dataset=visda2017", f"dataset.root={_visda(tmp_path / 'visda', per_class=1)}"]
    with pytest.warns(UserWarning, match="the source and the target read the same image list"):
        build_datasets(load_config([*visda, *SMALL, "dataset.target_domain=synthetic"]))


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("/elsewhere/train/a/1.png 0", "absolute paths, and this one is not here"),
        ("a\\1.png 0", r"paths with '\\' \(Windows\): write them with '/'"),
        ("train/a/1.png 0", "start with 'train/', which the root .* already ends in"),
        ("b/1.png 0", "relative paths are taken from .*: check the dataset root"),
    ],
)
def test_an_image_list_whose_paths_are_not_found_says_why(tmp_path, line, named):
    from mic import DatasetError

    root = tmp_path / "train"
    _png(root / "a" / "1.png")
    (root / "list.txt").write_text(line + "\n")
    with pytest.raises(DatasetError, match=named):
        ImageList(root / "list.txt", ["a"])


@pytest.mark.parametrize("pair", [None, "ArCl", "Ar2", 12])
def test_a_domain_pair_that_is_not_source2target_names_the_setting(pair):
    from mic import DatasetError
    from mic.datasets.office import domain_pair

    with pytest.raises(DatasetError, match=r"written <source>2<target> .*\(dataset.pair\)"):
        domain_pair(pair, "source")
    assert domain_pair("Ar2Cl", "target") == "Cl"


def test_office_domains_are_found_in_any_case_beside_empty_twins_and_roots_a_level_off(tmp_path):
    from mic import DatasetError

    root = tmp_path / "office31"
    for c in OFFICE31_CLASSES:
        _png(root / "Amazon" / "images" / c / "1.jpg")  # the domain's name in another case
    assert len(Office31(root, "A")) == 31
    home = tmp_path / "home"
    for c in OFFICE_HOME_CLASSES:
        _png(home / "Real World" / c / "1.jpg")
    (home / "Real_World").mkdir()  # an empty twin, first in the reader's spellings
    assert len(OfficeHome(home, "Rw")) == 65
    _png(tmp_path / "o31" / "data" / "amazon" / "images" / "bike" / "1.jpg")
    with pytest.raises(DatasetError, match=r"o31/data' holds 'amazon/': is that the dataset"):
        Office31(tmp_path / "o31", "A")  # the root one level too high


def test_split_folders_read_as_classes_are_warned_of(tmp_path):
    # src/train/<class>, src/val/<class> read as the classes 'train' and 'val'; the error that
    # followed blamed the test set's class folders
    for split in ("train", "val"):
        for c in ("apple", "bird"):
            _png(tmp_path / "src" / split / c / "0.png")
    with pytest.warns(
        UserWarning,
        match=r"each hold the same sub-folders \(apple, bird\) and "
        r"no image: if those are the classes, the root is one level too high",
    ):
        ImageFolder(tmp_path / "src")
    for c in ("apple", "bird"):  # classes of the same sub-folders, with images: no warning
        _png(tmp_path / "cls" / c / "0.png")
        _png(tmp_path / "cls" / c / "day" / "1.png")
        _png(tmp_path / "cls" / c / "night" / "2.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(ImageFolder(tmp_path / "cls")) == 6


def test_a_run_on_class_folders_records_their_names_for_load_run_and_holds_to_them(tmp_path):
    """load_run's task named no class: index i meant "the i-th sorted folder of whatever
    the source folder holds today". The names the run read are in its config.yaml now."""
    import mic
    from tests.helpers import TINY_RUN, class_folders, folder_overrides

    overrides = [*TINY_RUN, *folder_overrides(tmp_path), "log.tensorboard=false"]
    cfg = load_config(overrides)
    run_experiment(cfg, tmp_path / "run")
    task, _ = mic.load_run(tmp_path / "run")
    assert task.class_names == ["a", "b", "c"]
    # a task given names checks the folders against them: another order is refused
    other = class_folders(tmp_path / "other", ["a", "b", "c"])
    with pytest.raises(DatasetError, match="order"):
        mic.tasks.classification.ClassificationTask(3, class_names=["c", "b", "a"]).check_datasets(
            {"source": ImageFolder(other)}
        )
    with pytest.raises(mic.ConfigError, match=r"task\.class_names names 2 classes but num_classes"):
        mic.tasks.classification.ClassificationTask(3, class_names=["a", "b"])


def test_a_class_folder_linked_to_a_folder_that_is_gone_is_named(tmp_path):
    """src/zebra -> /nonexistent: the run trained on the other classes, without a word."""
    from tests.helpers import class_folders

    root = class_folders(tmp_path / "src", ["a", "b"])
    (root / "zebra").symlink_to(tmp_path / "gone")
    said = r"1 entry of .* link to what does not exist \(e\.g\. 'zebra' -> .*gone'\): a class"
    with pytest.raises(DatasetError, match=said):
        ImageFolder(root)


def test_the_documented_image_list_config_trains(tmp_path):
    """docs/own_dataset.md's dataset config for image lists, as written there (its list
    paths pointed at lists made here), trains through mic-train."""
    from pathlib import Path

    from tests.cli import run_mic_train

    text = (Path(__file__).parents[1] / "docs" / "own_dataset.md").read_text()
    section = text.split("## Image lists (no code)", 1)[1]
    config = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    folder = tmp_path / "myconf" / "dataset"
    folder.mkdir(parents=True)
    (folder / "mylists.yaml").write_text(config)
    paths = {}
    for split in ("source", "target_train", "target_test"):
        lines = []
        for c in range(3):
            for i in range(4):
                write_png(tmp_path / split / f"{c}_{i}.png", value=40 + 80 * c, size=(12, 12))
                lines.append(f"{split}/{c}_{i}.png {c}")
        (tmp_path / f"{split}.txt").write_text("\n".join(lines) + "\n")
        paths[split] = tmp_path / f"{split}.txt"
    out = run_mic_train(
        [
            "--config-dir",
            str(tmp_path / "myconf"),
            "dataset=mylists",
            f"dataset.source.list_file={paths['source']}",
            f"dataset.target.list_file={paths['target_train']}",
            f"dataset.test.list_file={paths['target_test']}",
            "dataset.size=32",
            *TINY_RUN,
            "loader.source_batch_size=4",
            "loader.target_batch_size=4",
            f"hydra.run.dir={tmp_path / 'run'}",
        ]
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary  # a finished run
    record = (tmp_path / "run" / "config.yaml").read_text()
    assert "mic.datasets.ImageList" in record and "classes:" in record
