"""Loss terms: the pieces a UDA method is made of, and the consistency losses (MIC)."""

from __future__ import annotations

import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from mic.core.augment import StrongAugmentation
from mic.core.errors import ConfigError
from mic.core.masking import Masker
from mic.core.task import PseudoLabels, Task
from mic.core.teacher import unwrap
from mic.core.weighting import PseudoLabelWeighting, WeightingMode

if TYPE_CHECKING:
    from mic.core.loop import IterationContext


def sum_parts(
    loss: Tensor | Mapping[str, Tensor], part_weights: Mapping[str, float] | None
) -> Tensor:
    """A Task loss as one scalar: the loss itself, or the sum of its named parts, each scaled by
    ``part_weights[name]`` (missing names weigh 1; weight 0 leaves a part out entirely)."""
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


@functools.cache
def _forward_takes_return_features(model_type: type) -> bool:
    return "return_features" in inspect.signature(model_type.forward).parameters


def require_features(model: nn.Module, needed_by: str) -> None:
    """Raise a ConfigError unless ``model(x, return_features=True)`` is supported (it returns
    the logits and the features that ``needed_by`` reads); checked once per model class."""
    model = unwrap(model)
    if not _forward_takes_return_features(type(model)):
        raise ConfigError(
            f"{needed_by} needs the model's features, but the forward of "
            f"{type(model).__name__} takes no return_features; use one of mic's models "
            "(mic.tasks.classification.Classifier, the mic.tasks.segmentation models) or add "
            "forward(x, return_features=False) returning (logits, features) when it is True"
        )


class LossTerm(nn.Module, ABC):
    """One loss branch of a UDA method; the loop calls ``backward`` on each term on its own.

    A term owns the modules it trains (e.g. a domain discriminator): they are its submodules,
    so the optimiser and checkpoints find them through the method.

    Class attributes:
        uses_target: the term needs target images (skipped before ``adaptation_start``).
        uses_pseudo_labels: the term needs the teacher's pseudo-labels (the loop then needs
            a teacher).
        sam_first_pass: with sharpness-aware minimisation (a ``SAM`` optimiser), the term
            also takes part in the first pass, whose gradient sets the perturbation (SDAT
            leaves the adversarial terms out of it). Every term takes part in the second.
        backward_group: terms with the same group name share one forward pass (through
            ``ctx.shared``) and are back-propagated together, after the last of them; None:
            the term is back-propagated on its own.
    """

    uses_target: bool = True
    uses_pseudo_labels: bool = False
    sam_first_pass: bool = True
    backward_group: str | None = None

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = float(weight)

    @abstractmethod
    def forward(self, ctx: IterationContext) -> Tensor | dict[str, Tensor]:
        """The weighted loss of this iteration (or named parts of it, each back-propagated
        together and logged on its own)."""


class SourceSupervision(LossTerm):
    """The Task's supervised loss on labelled source images.

    Args:
        weight: the loss weight.
        part_weights: for a Task whose loss has named parts, a multiplier per part.
    """

    uses_target = False

    def __init__(self, weight: float = 1.0, part_weights: Mapping[str, float] | None = None):
        super().__init__(weight)
        self.part_weights = dict(part_weights or {})

    def forward(self, ctx: IterationContext) -> Tensor:
        loss = ctx.task.loss(ctx.student, ctx.source_images, ctx.source_targets)
        return self.weight * sum_parts(loss, self.part_weights)


class ConsistencyLoss(LossTerm):
    """The student, on a transformed target image, must predict the teacher's pseudo-labels.

    ``loss`` = weight x Task loss of the student on ``transform(images)`` against the pseudo-
    labels, weighted per element by ``weighting``. Images that the pseudo-labels' ``keep``
    leaves out are removed first (no image left: the loss is 0). ``part_weights`` scales the
    named parts of a Task loss that has them. Subclasses choose the transform.

    Inside the loop the inputs and their transform are drawn once per iteration, so both
    passes of sharpness-aware minimisation see the same images; ``second_pass_weighting``
    (None: ``weighting``) is the weighting of SAM's second pass.
    """

    uses_pseudo_labels = True

    def __init__(
        self,
        weighting: WeightingMode = "quality",
        tau: float = 0.968,
        weight: float = 1.0,
        part_weights: Mapping[str, float] | None = None,
        second_pass_weighting: WeightingMode | None = None,
    ) -> None:
        super().__init__(weight)
        self.weighting = PseudoLabelWeighting(weighting, tau)
        self.part_weights = dict(part_weights or {})
        self.second_pass_weighting = (
            None
            if second_pass_weighting is None
            else PseudoLabelWeighting(second_pass_weighting, tau)
        )

    @abstractmethod
    def transform(self, images: Any, generator: torch.Generator | None = None) -> Any:
        """What the student sees instead of the teacher's view of the target."""

    def loss(
        self,
        student: nn.Module,
        task: Task,
        images: Any,
        pseudo: PseudoLabels,
        generator: torch.Generator | None = None,
        ctx: IterationContext | None = None,
    ) -> Tensor:
        images, pseudo = pseudo.kept(images)
        if task.count(images) == 0:
            return next(student.parameters()).new_zeros(())
        weighting = self.weighting
        if ctx is not None and ctx.sam_pass == "second" and self.second_pass_weighting:
            weighting = self.second_pass_weighting
        weights = weighting(pseudo)
        if ctx is None:
            transformed = self.transform(images, generator)
        else:
            transformed = ctx.memo((self, "transform"), lambda: self.transform(images, generator))
        loss = task.loss(student, transformed, pseudo.labels, weights)
        return self.weight * sum_parts(loss, self.part_weights)

    def forward(self, ctx: IterationContext) -> Tensor:
        return self.loss(
            ctx.student, ctx.task, ctx.target_images, ctx.pseudo_labels, ctx.generator, ctx
        )


class MaskedImageConsistency(ConsistencyLoss):
    """MIC: consistency between the teacher on the full target and the student on the masked
    (and strongly augmented) target.

    Args:
        masker: withholds image regions (``BlockMasker`` is MIC's).
        weighting: ``"quality"`` (published for segmentation), ``"prob"`` (published for ViT
            classification) or ``"none"`` (published for ResNet classification).
        tau: the confidence threshold of the quality weight.
        weight: lambda, the loss weight (published 1).
        part_weights: a multiplier per named part of the Task's loss (e.g. 0 for the
            box-regression parts, as published for the masked branch of a two-stage model).
        second_pass_weighting: the weighting in the second pass of sharpness-aware
            minimisation (None: ``weighting``; the published SDAT + MIC code uses ``"none"``
            there, see docs/classification.md).
    """

    def __init__(
        self,
        masker: Masker,
        weighting: WeightingMode = "quality",
        tau: float = 0.968,
        weight: float = 1.0,
        part_weights: Mapping[str, float] | None = None,
        second_pass_weighting: WeightingMode | None = None,
    ) -> None:
        super().__init__(weighting, tau, weight, part_weights, second_pass_weighting)
        self.masker = masker

    def transform(self, images: Any, generator: torch.Generator | None = None) -> Any:
        return self.masker(images, generator)


class SelfTraining(ConsistencyLoss):
    """Mean-teacher self-training: the student on the (strongly augmented) target against the
    teacher's pseudo-labels, weighted by their quality.

    Args:
        augmentation: applied to the target before the student sees it; None: none.
    """

    def __init__(
        self,
        augmentation: StrongAugmentation | None = None,
        weighting: WeightingMode = "quality",
        tau: float = 0.968,
        weight: float = 1.0,
        part_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(weighting, tau, weight, part_weights)
        self.augmentation = augmentation

    def transform(self, images: Any, generator: torch.Generator | None = None) -> Any:
        return images if self.augmentation is None else self.augmentation(images, generator)
