"""The context street scenes: labels match what is drawn, the look-alike classes share their
appearance on the target, the scenes are fixed by their seed, and mic-train runs them."""

import numpy as np
import pytest
import torch

from mic import ConfigError
from mic.datasets.segmentation import ContextStreets
from mic.datasets.segmentation.context_streets import context_layout, make_context_streets
from mic.datasets.segmentation.streets import CAR, PERSON, POLE, ROAD, SIDEWALK
from tests.cli import run_mic_train

pytestmark = pytest.mark.usefixtures("one_thread")


def _pixels(domain: str, count: int = 120):
    """Images (N, H, W, 3) in [0, 1], labels and part ids of the test split."""
    images, labels, parts = make_context_streets(domain, "test", count)
    return images.permute(0, 2, 3, 1).numpy(), labels.numpy(), parts.numpy()


def test_samples_have_the_shapes_dtypes_and_label_range_of_the_task():
    data = ContextStreets("target", "test", count=4)
    x, y = data[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert y.shape == (64, 64) and y.dtype == torch.int64
    assert set(data.labels.unique().tolist()) <= set(range(8)) and data.num_classes == 8
    assert data.classes[ROAD] == "road" and data.classes[POLE] == "pole"
    assert data.parts.shape == (4, 64, 64) and data.parts.dtype == torch.int32
    unlabelled = ContextStreets("source", "train", count=2, labelled=False, size=32)
    assert unlabelled[1].shape == (3, 32, 32)
    assert data.random_sources == ("torch",)  # its flips: what SeededDataset seeds


def test_the_scenes_are_fixed_by_their_seed_and_differ_between_seeds_and_splits():
    a = make_context_streets.__wrapped__("target", "train", 3, 64, 0)
    b = make_context_streets.__wrapped__("target", "train", 3, 64, 0)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    other = make_context_streets.__wrapped__("target", "train", 3, 64, 1)
    test = make_context_streets.__wrapped__("target", "test", 3, 64, 0)
    assert not torch.equal(a[1], other[1]) and not torch.equal(a[1], test[1])


def test_labels_match_what_is_drawn():
    rng = np.random.default_rng(3)
    for _ in range(50):
        label, parts = context_layout(rng, 64)
        # the kerb (a light line) is sidewalk wherever it shows; figures are person or pole
        assert (label[parts == 1] == SIDEWALK).all()
        assert np.isin(label[parts >= 2], (PERSON, POLE)).all()
        assert np.isin(label[np.isin(label, (PERSON, POLE))], label[parts >= 2]).all()
        for part in np.unique(parts[parts >= 2]):  # one figure, one class
            assert len(np.unique(label[parts == part])) == 1
    _, labels, parts = _pixels("target", 40)
    assert (labels[parts == 1] == SIDEWALK).all() and (labels[labels == CAR] != SIDEWALK).all()


def _stats(images, where):
    pixels = images[where]
    return pixels.mean(0), pixels.std(0), np.percentile(pixels, [10, 50, 90], axis=0)


@pytest.mark.parametrize("pair", [(ROAD, SIDEWALK), (PERSON, POLE)])
def test_on_the_target_the_look_alike_classes_share_their_colour_distribution(pair):
    images, labels, parts = _pixels("target")
    a, b = (_stats(images, (labels == c) & (parts != 1)) for c in pair)
    for u, v in zip(a, b, strict=True):  # mean, std, 10/50/90th percentiles per channel
        assert np.abs(u - v).max() < 0.03, (u, v)
    # while the other classes differ from them by more than that (the test can fail)
    car = _stats(images, labels == CAR)
    assert np.abs(car[0] - a[0]).max() > 0.1


def test_on_the_target_people_and_poles_have_one_shape_and_differ_by_place():
    rng = np.random.default_rng(0)
    sizes = {PERSON: [], POLE: []}
    for _ in range(300):
        label, parts = context_layout(rng, 64)
        for part in np.unique(parts[parts >= 2]):
            rows, cols = np.nonzero(parts == part)
            if rows.max() < 63 and len(rows) > 4:  # whole, unoccluded by the bottom edge
                sizes[int(label[rows[0], cols[0]])].append(
                    (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
                )
    person, pole = (np.array(sizes[c], np.float32) for c in (PERSON, POLE))
    assert len(person) > 100 and len(pole) > 100
    assert np.abs(person.mean(0) - pole.mean(0)).max() < 1.5  # height and width in px


def test_source_and_target_differ_and_the_source_teaches_appearance():
    source, s_labels, _ = _pixels("source", 60)
    target, t_labels, _ = _pixels("target", 60)
    for c, gap in ((ROAD, 0.05), (SIDEWALK, 0.2), (PERSON, 0.1)):  # the colours shift
        assert np.abs(source[s_labels == c].mean(0) - target[t_labels == c].mean(0)).max() > gap
    # the target is textured: within one scene's road, its pixels spread far more
    spread = [
        [images[i][labels[i] == ROAD].std(0).mean() for i in range(20)]
        for images, labels in ((source, s_labels), (target, t_labels))
    ]
    assert np.median(spread[1]) > 2 * np.median(spread[0])
    # in the source, poles take the people's colour in only part of the scenes
    person, pole = source[s_labels == PERSON].mean(0), source[s_labels == POLE].mean(0)
    assert np.abs(person - pole).max() > 0.1


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="at least 32 px"):
        ContextStreets(size=16)
    with pytest.raises(ConfigError, match="domain"):
        ContextStreets(domain="real")


@pytest.mark.parametrize("model", ["small_unet", "context_unet"])
def test_mic_train_runs_the_context_experiment(tmp_path, model):
    out = run_mic_train(
        [
            "experiment=streets_context",
            f"model={model}",
            "iterations=2",
            "dataset.train_count=8",
            "dataset.test_count=4",
            "model.widths=[4,8,8]",
            "loader.source_batch_size=2",
            "loader.target_batch_size=2",
            "loader.test_batch_size=4",
            "eval.adabn_batches=1",
            "log.progress=false",
            "log.tensorboard=false",
            "device=cpu",
            f"hydra.run.dir={tmp_path}",
        ]
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert "sidewalk" in text and "pole" in text  # the IoU table names the classes
    assert (tmp_path / "metrics.jsonl").exists()
