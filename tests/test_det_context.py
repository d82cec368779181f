"""The context shapes benchmark (``ContextShapes``, ``experiment=det_context``): reproducible,
valid boxes; on the target the look-alike classes share their appearance and differ by their
context; fog and blur grow with distance; the source keeps its colour cue; mic-train runs it."""

import numpy as np
import pytest
import torch

from mic.datasets.detection import ContextShapes
from mic.datasets.detection.context_shapes import (
    BALL,
    BIKE,
    CAR,
    KIOSK,
    LOOKALIKES,
    RIDER,
    _beside,
    make_context_scene,
)
from tests.cli import run_mic_train
from tests.det_helpers import TINY_DET
from tests.helpers import user_error_of

SIZE = 64
TINY_CONTEXT = ["experiment=det_context", *TINY_DET[1:]]


def _scenes(n: int, target: bool = True, **kwargs):
    return [make_context_scene(np.random.default_rng(i), SIZE, target, **kwargs) for i in range(n)]


def test_scenes_are_a_function_of_the_seed_and_index():
    a, ta = ContextShapes("target", "train", size=SIZE, length=4)[2]
    b, tb = ContextShapes("target", "train", size=SIZE, length=4)[2]
    assert torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"])
    assert torch.equal(ta["labels"], tb["labels"])
    c, _ = ContextShapes("target", "train", size=SIZE, length=4, seed=1)[2]
    assert not torch.equal(a, c)
    assert not torch.equal(ContextShapes("target", "test", size=SIZE)[0][0], a)
    unlabelled = ContextShapes("target", "train", labelled=False, size=SIZE, length=2)[0]
    assert isinstance(unlabelled, torch.Tensor) and unlabelled.shape == (3, SIZE, SIZE)


@pytest.mark.parametrize("domain", ["source", "target"])
def test_boxes_lie_inside_the_images_with_valid_classes(domain):
    data = ContextShapes(domain, "train", size=SIZE, length=40)
    seen = set()
    for i in range(len(data)):
        image, target = data[i]
        assert image.dtype == torch.float32 and image.min() >= 0 and image.max() <= 1
        boxes = target["boxes"]
        assert len(boxes) >= 1
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= SIZE).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        assert (target["labels"] >= 0).all()
        assert (target["labels"] < ContextShapes.num_classes).all()
        seen |= set(target["labels"].tolist())
    assert seen == set(range(ContextShapes.num_classes))


def _objects(scenes):
    """Per class: (foot row share below the horizon proxy, side, mean centre colour) rows,
    and the context facts: foot centre on the road, a bike beside it."""
    rows = {k: [] for k in range(5)}
    for img, boxes, labels, road in scenes:
        bikes = [b for b, k in zip(boxes, labels, strict=True) if k == BIKE]
        for b, k in zip(boxes, labels, strict=True):
            x1, y1, x2, y2 = b
            cx, foot = int((x1 + x2) / 2), int(y2) - 1
            w = x2 - x1
            inner = img[int(y1 + w / 4) : int(y2 - w / 4), int(x1 + w / 4) : int(x2 - w / 4)]
            on_road = bool(road[foot, cx - 1 : cx + 2].any())  # within a pixel
            off_road = not road[foot, int(x1) : int(np.ceil(x2))].any()
            beside = any(_beside(tuple(b), tuple(o)) for o in bikes)
            colour = inner.reshape(-1, 3).mean(0)
            rows[int(k)].append((y2, w, *colour, on_road, off_road, beside))
    return {k: np.array(v, np.float64) for k, v in rows.items()}


def test_lookalikes_share_their_target_appearance_and_differ_by_context():
    rows = _objects(_scenes(400))
    for a, b in LOOKALIKES:
        ra, rb = rows[a], rows[b]
        assert len(ra) > 100 and len(rb) > 100
        # foot row (distance), size and the colour inside the outline: the same distributions
        assert abs(ra[:, 0].mean() - rb[:, 0].mean()) < 0.05 * SIZE
        assert abs(ra[:, 1].mean() - rb[:, 1].mean()) < 0.1 * ra[:, 1].mean()
        assert np.abs(ra[:, 2:5].mean(0) - rb[:, 2:5].mean(0)).max() < 0.04
        assert np.abs(ra[:, 2:5].std(0) - rb[:, 2:5].std(0)).max() < 0.04
    car, kiosk, rider, ball = rows[CAR], rows[KIOSK], rows[RIDER], rows[BALL]
    assert car[:, 5].all() and not kiosk[:, 5].any()  # the car's foot on the road
    assert kiosk[:, 6].all()  # the kiosk's whole foot beside it
    assert rider[:, 7].all() and not ball[:, 7].any()  # a bike beside the rider, none by a ball


def test_the_source_keeps_its_colour_cue():
    cue = _objects(_scenes(150, target=False, source_lookalike=0.0))
    shared = _objects(_scenes(150, target=False, source_lookalike=1.0))
    for a, b in LOOKALIKES:
        assert np.abs(cue[a][:, 2:5].mean(0) - cue[b][:, 2:5].mean(0)).max() > 0.3
        assert np.abs(shared[a][:, 2:5].mean(0) - shared[b][:, 2:5].mean(0)).max() < 0.1


def test_fog_and_blur_grow_with_distance():
    # the same scenes (same draws) with and without fog and blur: the deviation grows from
    # the bottom rows (near) to the rows below the horizon (far); the sky is farthest
    foggy = _scenes(20)
    clear = _scenes(20, beta=0.0, blur=0.0)
    near, far = [], []
    for (img, *_), (plain, *_) in zip(foggy, clear, strict=True):
        deviation = np.abs(img - plain).mean(axis=(1, 2))
        near.append(deviation[-SIZE // 8 :].mean())
        far.append(deviation[int(0.45 * SIZE) : int(0.55 * SIZE)].mean())
    assert np.mean(far) > 2 * np.mean(near)
    # the scattering blur alone (fog fixed) takes the edges of far objects more than near ones
    sharp = _scenes(60, blur=0.0)
    blurred = _scenes(60)

    def edge_loss(foot_share):
        lost = []
        for (a, boxes, *_), (b, *_) in zip(sharp, blurred, strict=True):
            for x1, y1, x2, y2 in boxes.astype(int):
                if (y2 / SIZE > 0.75) == (foot_share == "near") and x2 - x1 >= 4:
                    grad_a = np.abs(np.diff(a[y1:y2, x1:x2], axis=1)).mean()
                    grad_b = np.abs(np.diff(b[y1:y2, x1:x2], axis=1)).mean()
                    lost.append(1 - grad_b / max(grad_a, 1e-6))
        return np.mean(lost)

    assert edge_loss("far") > edge_loss("near")


def test_bad_settings_are_config_errors():
    assert "blur" in user_error_of([*TINY_CONTEXT, "dataset.blur=-1"])
    assert "source_lookalike" in user_error_of([*TINY_CONTEXT, "dataset.source_lookalike=2"])


def test_mic_train_runs_the_context_benchmark(tmp_path):
    run = run_mic_train([*TINY_CONTEXT, f"hydra.run.dir={tmp_path}", "eval.models=[student]"])
    assert run.returncode == 0, run.stderr[-3000:]
    table = (tmp_path / "ap_per_class.md").read_text()
    for name in ("car", "kiosk", "rider", "ball", "bike"):
        assert name in table
