"""The base methods every task shares: supervised training on the source, and mean-teacher
self-training, which MIC extends."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from mic.core.batch import LABEL_KEYS
from mic.core.checks import check_augmentation_instance
from mic.core.context import IterationContext
from mic.core.errors import ConfigError
from mic.core.masking import Augmentation, Masker
from mic.core.method import UDAMethod
from mic.core.streams import Random
from mic.core.terms import ConsistencyLoss, LossTerm, sum_parts
from mic.core.weighting import QUALITY_THRESHOLD, WeightingMode
from mic.training.batches import require_targets


class SourceSupervision(LossTerm):
    """The Task's supervised loss on the labelled source batch.

    Args:
        weight: the loss weight (published 1).
        part_weights: a multiplier per named part of the Task's loss (``sum_parts``).
    """

    uses_target = False

    def __init__(self, weight: float = 1.0, part_weights: Mapping[str, float] | None = None):
        super().__init__(weight)
        self.part_weights = dict(part_weights or {})

    def forward(self, ctx: IterationContext) -> Tensor:
        """The source loss.

        Raises:
            DatasetError: the source batch has no targets (an unlabelled source loader).
        """
        images = ctx.source_images  # other batches (no collate_fn: triples, labelled dicts)
        if isinstance(images, Tensor) or (  # the Task names; here before a loss meets None
            isinstance(images, Mapping) and not LABEL_KEYS & set(images)
        ):
            require_targets(ctx.source_targets, images)
        loss = ctx.task.loss(ctx.student, ctx.source_images, ctx.source_targets, rng=ctx.rng)
        return sum_parts(loss, self.part_weights)


def check_augmentation(augmentation: Any, term: str) -> None:
    """Raise ``ConfigError`` for a masker given as a base method's augmentation: the base
    method would withhold image blocks too, a second MIC (the reverse of an augmentation
    given as MIC's masker, which ``MaskedImageConsistency`` refuses); and for a class, or
    anything not callable, given for an instance (the images became its first argument)."""
    check_augmentation_instance(augmentation, term)
    if isinstance(augmentation, Masker):
        raise ConfigError(
            f"{term}'s augmentation is a {type(augmentation).__name__}, a masker: the base "
            "method would withhold image blocks too, a second MIC; give it an augmentation "
            "(e.g. mic.StrongAugmentation(mean, std)), and the masker to "
            "MaskedImageConsistency"
        )


class SelfTraining(ConsistencyLoss):
    """Mean-teacher self-training: the student on the (strongly augmented) target against the
    teacher's pseudo-labels.

    Args:
        augmentation: applied to the target first (e.g. ``mic.StrongAugmentation``); None: none.
        weighting, tau, weight, part_weights: as in ``ConsistencyLoss``.
    """

    def __init__(
        self,
        augmentation: Augmentation | None = None,
        weighting: WeightingMode = "quality",
        tau: float = QUALITY_THRESHOLD,
        weight: float = 1.0,
        part_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(weighting, tau, weight, part_weights)
        check_augmentation(augmentation, "self-training")
        self.augmentation = augmentation

    def transform(self, images: Any, rng: Random = None) -> Any:
        return images if self.augmentation is None else self.augmentation(images, rng)


def source_only() -> UDAMethod:
    """Supervised training on the source alone (the lower bound every method must beat)."""
    return UDAMethod({"source": SourceSupervision()})


def mean_teacher(
    augmentation: Augmentation | None = None,
    weighting: WeightingMode = "quality",
    tau: float = QUALITY_THRESHOLD,
    weight: float = 1.0,
) -> UDAMethod:
    """Terms ``source`` (``SourceSupervision``) and ``self_training`` (``SelfTraining``, which
    takes the arguments)."""
    return UDAMethod(
        {
            "source": SourceSupervision(),
            "self_training": SelfTraining(augmentation, weighting, tau, weight),
        }
    )
