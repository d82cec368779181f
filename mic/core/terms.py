"""Loss terms: the pieces a UDA method is made of, and the consistency losses (MIC)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mic.core.context import IterationContext, Random, SharedForward
from mic.core.errors import ConfigError
from mic.core.masking import Augmentation, Masker
from mic.core.task import PseudoLabels, Task
from mic.core.weighting import QUALITY_THRESHOLD, PseudoLabelWeighting, WeightingMode


def sum_parts(
    loss: Tensor | Mapping[str, Tensor], part_weights: Mapping[str, float] | None
) -> Tensor:
    """A Task loss as one scalar: the loss itself, or the sum of its named parts, each scaled by
    ``part_weights[name]`` (missing names weigh 1; weight 0 leaves a part out entirely).

    Raises:
        ConfigError: ``part_weights`` names a part the loss does not have (or the loss has
            no parts at all).
    """
    if not isinstance(loss, Mapping):
        if part_weights:
            raise ConfigError(
                f"part_weights {dict(part_weights)} were given but the task's loss has no "
                "named parts; remove part_weights"
            )
        return loss
    weights = dict(part_weights or {})
    unknown = sorted(set(weights) - set(loss))
    if unknown:
        raise ConfigError(
            f"part_weights name {unknown}, which the task's loss does not have; its parts are "
            f"{sorted(loss)}"
        )
    parts = [weights.get(k, 1.0) * v for k, v in loss.items() if weights.get(k, 1.0) != 0]
    if not parts:
        return next(iter(loss.values())).new_zeros(())
    return torch.stack([p.reshape(()) for p in parts]).sum()


class LossTerm(nn.Module, ABC):
    """One loss branch of a UDA method; the loop back-propagates each term on its own.

    A term owns the modules it trains (e.g. a domain discriminator): they are its submodules,
    so the optimiser and checkpoints find them through the method.

    Class attributes:
        uses_target: the term needs target images (the loop skips it before
            ``adaptation_start``).
        uses_pseudo_labels: the term reads the teacher's pseudo-labels (the loop then needs a
            teacher).
        shared_forward: the ``SharedForward`` this term reads, if any; the terms that read
            one are run one after another and back-propagated together.

    Args:
        weight: the loss weight.
    """

    uses_target: bool = True
    uses_pseudo_labels: bool = False
    shared_forward: SharedForward | None = None

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = float(weight)

    @abstractmethod
    def forward(self, ctx: IterationContext) -> Tensor | dict[str, Tensor]:
        """This iteration's weighted loss, a scalar tensor; or named parts of it (a dict),
        back-propagated together and logged one by one."""


class SourceSupervision(LossTerm):
    """The Task's supervised loss on the labelled source batch.

    Args:
        weight: the loss weight (published 1).
        part_weights: for a Task whose loss has named parts, a multiplier per part.
    """

    uses_target = False

    def __init__(self, weight: float = 1.0, part_weights: Mapping[str, float] | None = None):
        super().__init__(weight)
        self.part_weights = dict(part_weights or {})

    def forward(self, ctx: IterationContext) -> Tensor:
        loss = ctx.task.loss(ctx.student, ctx.source_images, ctx.source_targets, rng=ctx.rng)
        return self.weight * sum_parts(loss, self.part_weights)


class ConsistencyLoss(LossTerm):
    """The student, on a transformed view of the target, must predict the teacher's
    pseudo-labels; subclasses choose the view (``transform``).

    loss = weight x sum over parts of part_weight x Task loss of the student on
    ``transform(images)`` against the pseudo-labels, each element weighted by ``weighting``.
    Images that the pseudo-labels' ``keep`` leaves out are dropped after the transform (so
    each image's draws do not depend on which others are kept); none left: 0.

    Args:
        weighting: ``"quality"``, ``"prob"`` or ``"none"`` (see ``PseudoLabelWeighting``).
        tau: the quality weight's threshold (``QUALITY_THRESHOLD``, published 0.968).
        weight: the loss weight, lambda (published 1).
        part_weights: a multiplier per named part of the Task's loss.
    """

    uses_pseudo_labels = True

    def __init__(
        self,
        weighting: WeightingMode = "quality",
        tau: float = QUALITY_THRESHOLD,
        weight: float = 1.0,
        part_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(weight)
        self.weighting = PseudoLabelWeighting(weighting, tau)
        self.part_weights = dict(part_weights or {})

    @abstractmethod
    def transform(self, images: Any, rng: Random = None) -> Any:
        """What the student sees instead of the teacher's view of the target."""

    def loss(
        self,
        student: nn.Module,
        task: Task,
        images: Any,
        pseudo: PseudoLabels,
        rng: Random = None,
        weights: Any = None,
    ) -> Tensor:
        """The weighted consistency loss on ``images`` against ``pseudo``.

        Args:
            student: the model being trained.
            task: the Task whose ``loss`` is used.
            images: the teacher's view (e.g. B x C x H x W float).
            pseudo: the teacher's pseudo-labels for ``images``.
            rng: what ``transform`` draws from (the term's ``RandomStream`` in the loop).
            weights: per-element weights in the layout of ``pseudo.confidence`` that replace
                ``weighting(pseudo)`` (e.g. for inputs that mix labelled source images,
                weight 1, with pseudo-labelled target ones); None: ``weighting(pseudo)``.

        Returns:
            A scalar tensor.
        """
        views, weights, pseudo = pseudo.kept(self.transform(images, rng), weights)
        if task.count(views) == 0:
            return next(student.parameters()).new_zeros(())
        if weights is None:
            weights = self.weighting(pseudo)
        loss = task.loss(student, views, pseudo.labels, weights, rng=rng)
        return self.weight * sum_parts(loss, self.part_weights)

    def forward(self, ctx: IterationContext) -> Tensor:
        pseudo = ctx.pseudo_labels
        weights = self.weighting(pseudo, ctx.mean)  # q of the whole batch, every process
        return self.loss(ctx.student, ctx.task, ctx.target_images, pseudo, ctx.rng, weights)


class MaskedImageConsistency(ConsistencyLoss):
    """MIC: the student on the masked (and strongly augmented) target must predict what the
    teacher predicted on the full target.

    Args:
        masker: withholds image regions (``BlockMasker`` is MIC's).
        weighting: ``"quality"`` (published for segmentation), ``"prob"`` (published for ViT
            classification) or ``"none"`` (published for ResNet classification and detection).
        tau: the quality weight's threshold (published 0.968).
        weight: lambda, the loss weight (published 1).
        part_weights: a multiplier per named part of the Task's loss (e.g. 0 for the
            box-regression parts, as published for the masked branch of a two-stage detector).
    """

    def __init__(
        self,
        masker: Masker,
        weighting: WeightingMode = "quality",
        tau: float = QUALITY_THRESHOLD,
        weight: float = 1.0,
        part_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(weighting, tau, weight, part_weights)
        self.masker = masker

    def transform(self, images: Any, rng: Random = None) -> Any:
        return self.masker(images, rng)


class SelfTraining(ConsistencyLoss):
    """Mean-teacher self-training: the student on the (strongly augmented) target against the
    teacher's pseudo-labels.

    Args:
        augmentation: applied to the target before the student sees it (``mic.
            StrongAugmentation``); None: none.
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
        self.augmentation = augmentation

    def transform(self, images: Any, rng: Random = None) -> Any:
        return images if self.augmentation is None else self.augmentation(images, rng)
