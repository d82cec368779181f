"""MIC's masked branch for detection: the published weightings (teacher score per pseudo-box,
the student's own confidence per sample) and the statistics it logs."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
import torch.nn.functional as F

import mic
from mic.core import ConfigError, PseudoLabels, RandomStream
from mic.experiment import load_config, run_experiment
from mic.tasks.detection import DetectionMIC, pseudo_box_statistics
from mic.tasks.detection.model import sampling_from
from tests.det_helpers import tiny_batch, tiny_det, tiny_detector

pytestmark = pytest.mark.usefixtures("one_thread")


def test_roi_classifier_weights_each_proposal_by_its_own_detached_confidence():
    heads = tiny_detector().roi_heads
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g, requires_grad=True)
    boxes = torch.randn(6, 16, generator=g)
    labels = [torch.tensor([1, 0, 2]), torch.tensor([0, 3, 0])]
    regression = [torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)]
    weights = [torch.tensor([1.0, 0.5, 1.0]), torch.tensor([1.0, 1.0, 0.2])]
    heads.confidence_weighted = True
    loss = heads.losses(logits, boxes, labels, regression, weights)["roi_classifier"]
    confidence = logits.detach().softmax(1).amax(1)
    expected = F.cross_entropy(logits, torch.cat(labels), reduction="none") * confidence
    expected = (expected * torch.cat(weights)).mean()
    assert torch.allclose(loss, expected)
    (grad,) = torch.autograd.grad(loss, logits)
    (want,) = torch.autograd.grad(expected, logits)
    assert torch.allclose(grad, want)  # the confidence is a constant, not trained


@pytest.mark.parametrize("backend", ["torchvision", "detectron2"])
def test_student_confidence_lowers_the_classification_losses_alone(backend):
    model = tiny_detector(backend=backend)
    model.train()
    images, targets = tiny_batch()
    losses = []
    for weighted in (False, True):
        with sampling_from(RandomStream(4), "cpu"):  # the same samples both times
            if weighted:
                with model.student_confidence_weights():
                    losses.append(model(images, targets))
            else:
                losses.append(model(images, targets))
    plain, weighted = losses
    for part in ("rpn_objectness", "roi_classifier"):  # confidences < 1
        assert 0 < weighted[part] < plain[part]
    for part in ("rpn_box", "roi_box"):
        assert torch.equal(weighted[part], plain[part])
    heads = (
        (model.rcnn.proposal_generator, model.rcnn.roi_heads)
        if backend == "detectron2"
        else (
            model.rpn,
            model.roi_heads,
        )
    )
    assert not any(h.confidence_weighted for h in heads)  # switched off on leaving


@pytest.mark.parametrize("backend", ["torchvision", "detectron2"])
def test_the_rpn_weights_each_sampled_anchor_by_its_own_objectness_probability(backend):
    """The RPN objectness loss with the confidence weights equals the plain one re-weighted
    by hand: each sampled anchor's loss times its own objectness probability."""
    model = tiny_detector(backend=backend)
    model.train()
    images, targets = tiny_batch()
    rpn = model.rcnn.proposal_generator if backend == "detectron2" else model.rpn
    seen: dict[str, torch.Tensor] = {}
    original = F.binary_cross_entropy_with_logits

    def spy(logits, labels, **kwargs):
        seen["logits"], seen["labels"] = logits.detach(), labels
        return original(logits, labels, **kwargs)

    losses = []
    for weighted in (False, True):
        with sampling_from(RandomStream(4), "cpu"), pytest.MonkeyPatch.context() as mp:
            mp.setattr(F, "binary_cross_entropy_with_logits", spy)
            with model.student_confidence_weights() if weighted else contextlib.nullcontext():
                losses.append(model(images, targets)["rpn_objectness"])
    plain, weighted_loss = losses
    bce = original(seen["logits"], seen["labels"], reduction="none")
    ratio = (bce * seen["logits"].sigmoid()).sum() / bce.sum()
    assert rpn.confidence_weighted is False
    assert torch.allclose(weighted_loss, plain * ratio, rtol=1e-4)


def test_pseudo_box_statistics():
    pseudo = PseudoLabels(
        labels=[{}, {}, {}, {}],
        confidence=[torch.tensor([0.9, 0.8]), torch.zeros(0), torch.tensor([1.0]), torch.zeros(0)],
    )
    stats = pseudo_box_statistics(pseudo, torch.device("cpu"))
    assert stats["boxes"].item() == pytest.approx(0.75)
    assert stats["images"].item() == pytest.approx(0.5)
    assert stats["score"].item() == pytest.approx(0.9)
    empty = pseudo_box_statistics(PseudoLabels([{}], [torch.zeros(0)]), torch.device("cpu"))
    assert empty["boxes"].item() == empty["images"].item() == empty["score"].item() == 0
    assert "ignore_boxes" not in stats  # (no task.ignore_threshold: none are made)
    unsure = [{"ignore_boxes": torch.zeros(n, 4)} for n in (3, 0)]
    ignoring = PseudoLabels(unsure, [torch.tensor([0.9]), torch.zeros(0)])
    assert pseudo_box_statistics(ignoring, torch.device("cpu"))["ignore_boxes"].item() == 1.5


def test_unknown_weighting_is_refused():
    with pytest.raises(ConfigError, match="student"):
        DetectionMIC(mic.BlockMasker(8), weighting="teacher_score")


@pytest.mark.parametrize(
    ("weighting", "backend"),
    [("prob", "torchvision"), ("student", "torchvision"), (None, "detectron2")],
)
def test_the_masked_branch_logs_its_pseudo_boxes_and_loss(tmp_path, weighting, backend):
    overrides = [
        *tiny_det(backend),
        "method=mean_teacher",
        "task.score_threshold=0.05",  # (the detector's floor) an untrained teacher's boxes count
        "log.interval=1",
    ]
    if weighting is not None:
        overrides.append(f"method.terms.mic.weighting={weighting}")
    config = load_config(overrides)
    assert config.method.terms.mic.weighting == (weighting or "student")  # the default
    run_experiment(config, tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in lines if "loss/mic" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert r["mic/boxes"] > 0 and r["mic/images"] == 1.0 and 0 < r["mic/score"] <= 1
        # and, as every consistency term, its quality weight and mean confidence (they were
        # replaced by the pseudo-box counts)
        assert 0 <= r["mic/q"] <= 1 and r["mic/confidence"] == pytest.approx(r["mic/score"])


def test_a_detector_that_cannot_weight_its_own_samples_is_refused_when_the_run_is_built(
    monkeypatch,
):
    """The default weighting needs the detector's student_confidence_weights: a detector
    without it stops the run when it is built, not at the first masked iteration."""
    from mic.experiment import build_experiment
    from mic.tasks.detection import FasterRCNN

    term = DetectionMIC(mic.BlockMasker(8))
    term.check_student(tiny_detector())  # the bundled detectors can
    with pytest.raises(ConfigError, match="weighting=none trains any detector"):
        term.check_student(torch.nn.Linear(2, 2))
    DetectionMIC(mic.BlockMasker(8), weighting="none").check_student(torch.nn.Linear(2, 2))
    monkeypatch.delattr(FasterRCNN, "student_confidence_weights")
    with pytest.raises(ConfigError, match="needs a detector with student_confidence_weights"):
        build_experiment(load_config(tiny_det()))


def test_detection_mic_loss_weights_the_student_s_samples_in_a_loop_of_one_s_own_too():
    """The "student" weighting (the default) was switched on by the loop's forward alone:
    DetectionMIC(...).loss in a loop of one's own trained unweighted, without a word."""
    from mic.tasks.detection import DetectionTask

    images, targets = tiny_batch()
    student, task = tiny_detector().train(), DetectionTask(3)
    pseudo = PseudoLabels(targets, [torch.full(t["labels"].shape, 0.9) for t in targets])
    masker = mic.BlockMasker(16, 0.5)

    def loss(term, weighted=False):
        torch.manual_seed(1)
        with student.student_confidence_weights() if weighted else contextlib.nullcontext():
            return term.loss(student, task, images, pseudo, torch.Generator().manual_seed(0))

    unweighted = loss(DetectionMIC(masker, weighting="none"))
    student_weighted = loss(DetectionMIC(masker, weighting="none"), weighted=True)
    assert not torch.equal(unweighted, student_weighted)
    torch.testing.assert_close(loss(DetectionMIC(masker)), student_weighted, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="weighting=none trains any detector"):
        DetectionMIC(masker).loss(torch.nn.Linear(2, 2), task, images, pseudo)
