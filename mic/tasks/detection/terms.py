"""MIC's masked branch for detection, with the published weightings of the masked losses and
the statistics a reader needs to see when it acts."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any, Literal

import torch
from torch import Tensor, nn

from mic.core import (
    QUALITY_THRESHOLD,
    ConfigError,
    IterationContext,
    MaskedImageConsistency,
    Masker,
    PseudoLabels,
    Task,
)
from mic.core.streams import Random
from mic.core.teacher import unwrap
from mic.core.weighting import WEIGHTING_MODES
from mic.tasks.detection.model import BOX_REGRESSION_PARTS, LOSS_PARTS

#: the masked branch's weightings: the core's (per pseudo-box) and the student's own confidence
DETECTION_WEIGHTINGS = (*WEIGHTING_MODES, "student")


def pseudo_box_statistics(pseudo: PseudoLabels, device: torch.device) -> dict[str, Tensor]:
    """For logs: ``boxes``, pseudo-boxes per target image; ``images``, the share of target
    images with at least one (those the masked branch trains on); ``score``, the pseudo-boxes'
    mean teacher score (0 without any); ``ignore_boxes``, ignore boxes per target image, where
    the task makes them (``task.ignore_threshold``). Detached 0-d float tensors on ``device``,
    made without a host synchronisation (the counts are known to the host)."""
    confidence = [c.detach().float() for c in pseudo.confidence]
    images = max(1, len(confidence))
    boxes = sum(len(c) for c in confidence)
    zero = torch.zeros((), device=device)
    kept = sum(len(c) > 0 for c in confidence)
    found = {
        "boxes": zero.new_full((), boxes / images),
        "images": zero.new_full((), kept / images),
        "score": torch.cat(confidence).mean() if boxes else zero,
    }
    ignored = [t["ignore_boxes"] for t in pseudo.labels if "ignore_boxes" in t]
    if ignored:
        found["ignore_boxes"] = zero.new_full((), sum(len(b) for b in ignored) / images)
    return found


class DetectionMIC(MaskedImageConsistency):
    """MIC for detection: the student on the masked target against the teacher's pseudo-boxes
    (score >= ``task.score_threshold``), images without any left out.

    Weightings of the masked losses:
        ``"student"`` (the default): each sampled anchor and proposal weighs the student's own
            detached confidence on it (``student_confidence_weights`` of the bundled
            detectors): the published masked branch's ``PSEUDO_LABEL_WEIGHT='prob'`` (there,
            the RPN weight is not detached; here it is). Ahead of ``"none"`` in 8 of 10 paired
            seeds on the bundled detection benchmarks
            (benchmarks/results/detection_student_weighting.md);
        ``"none"``: every pseudo-box weighs 1 (lambda alone);
        ``"prob"``: each pseudo-box weighs its teacher score (the anchors and proposals
            matched to it that weight, background samples its image's mean);
        ``"quality"``: every pseudo-box weighs the share of pseudo-boxes with score >= tau.

    ``statistics`` (logged as ``mic/<name>``): see ``pseudo_box_statistics``, which the
    loop's call (``forward``) adds; ``loss`` called alone sets the weighting's ``q`` and
    ``confidence`` only (``q`` means nothing under ``"student"`` weighting).

    Args:
        masker: the block masker (published 32 px blocks, ratio 0.5).
        weighting: one of the weightings above.
        tau: the quality weighting's threshold.
        weight: lambda (published 1).
        part_weights: a multiplier per detection loss part (None: the published, the
            box-regression parts 0; ``{}`` keeps every part at 1).

    Raises:
        ConfigError: an unknown weighting; in ``check_student`` and the first forward,
            ``"student"`` with a student that has no ``student_confidence_weights``.
    """

    def __init__(
        self,
        masker: Masker,
        weighting: Literal["none", "prob", "quality", "student"] = "student",
        tau: float = QUALITY_THRESHOLD,
        weight: float = 1.0,
        part_weights: Mapping[str, float] | None = None,
    ) -> None:
        if weighting not in DETECTION_WEIGHTINGS:
            raise ConfigError(
                f"detection MIC weighting must be one of {DETECTION_WEIGHTINGS}, got {weighting!r}"
            )
        self.student_weighted = weighting == "student"
        if part_weights is None:
            part_weights = dict.fromkeys(BOX_REGRESSION_PARTS, 0.0)
        unknown = sorted(set(part_weights) - set(LOSS_PARTS))
        if unknown:  # else told only at the first batch with pseudo-boxes
            raise ConfigError(
                f"method.terms.mic.part_weights name {unknown}, which the detection loss does "
                f"not have; its parts are {list(LOSS_PARTS)}"
            )
        super().__init__(
            masker, "none" if self.student_weighted else weighting, tau, weight, part_weights
        )
        self.statistics: dict[str, Tensor] = {}

    def check_student(self, student: nn.Module) -> None:
        """Raise ``ConfigError`` when ``student`` cannot weight its own samples (the
        ``"student"`` weighting needs its ``student_confidence_weights``); ``mic-train`` calls
        this when it builds the run, the masked branch before its first forward."""
        model = unwrap(student)
        if self.student_weighted and not hasattr(model, "student_confidence_weights"):
            raise ConfigError(
                "method.terms.mic.weighting=student (the default) needs a detector with "
                "student_confidence_weights (mic.tasks.detection.FasterRCNN or Detectron2RCNN: "
                f"it weights the detector's own samples), got {type(model).__name__}; "
                "method.terms.mic.weighting=none trains any detector"
            )

    def loss(
        self,
        student: nn.Module,
        task: Task,
        images: Any,
        pseudo: PseudoLabels,
        rng: Random = None,
        weights: Any = None,
    ) -> Tensor:
        """``MaskedImageConsistency.loss``, under the ``"student"`` weighting with the
        student's own samples weighted (``student_confidence_weights``), in the loop and in a
        loop of one's own alike (it was the loop's forward alone: a loop of one's own trained
        unweighted).

        Raises:
            ConfigError: as ``MaskedImageConsistency.loss``; ``"student"`` weighting with a
                student that has no ``student_confidence_weights`` (``check_student``).
        """
        self.check_student(student)
        model: Any = unwrap(student)
        weighted = model.student_confidence_weights() if self.student_weighted else nullcontext()
        with weighted:
            return super().loss(student, task, images, pseudo, rng, weights)

    def forward(self, ctx: IterationContext) -> Tensor:
        loss = super().forward(ctx)  # (its statistics: q and confidence, as every term's)
        device = next(ctx.student.parameters()).device
        self.statistics = {**self.statistics, **pseudo_box_statistics(ctx.pseudo_labels, device)}
        return loss
