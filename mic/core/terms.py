"""Loss terms: the pieces a UDA method is made of, and the consistency losses (MIC)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from numbers import Real
from typing import Any

import torch
from torch import Tensor, nn

from mic.core import checks
from mic.core.context import IterationContext, SharedForward
from mic.core.errors import ConfigError
from mic.core.masking import Masker
from mic.core.streams import Random
from mic.core.task import PseudoLabels, Task
from mic.core.weighting import QUALITY_THRESHOLD, PseudoLabelWeighting, WeightingMode


def sum_parts(
    loss: Tensor | Mapping[str, Tensor],
    part_weights: Mapping[str, float] | None,
    setting: str = "part_weights",
) -> Tensor:
    """A Task loss as one scalar: the loss, or the sum of its named parts each scaled by
    ``part_weights[name]`` (default 1; 0 leaves the part out).

    Raises:
        ConfigError: ``part_weights`` (made by the option ``setting``) names a part the loss
            does not have or holds a weight that is no finite number >= 0, a part is not a
            scalar tensor or a number, or ``loss`` is an empty mapping.
    """
    weights = dict(part_weights or {})
    checks.check_part_weights(weights, loss, setting)
    if not isinstance(loss, Mapping):
        return loss
    device = next((v.device for v in loss.values() if isinstance(v, Tensor)), None)
    said = "Task.loss's part {key!r} is {got}, not a scalar tensor or a number"
    loss = {k: scalar_loss(v, k, device, said) for k, v in loss.items()}  # 0.0: no such loss
    parts = [weights.get(k, 1.0) * v for k, v in loss.items() if weights.get(k, 1.0) != 0]
    if not parts:
        return next(iter(loss.values())).new_zeros(())
    return torch.stack([p.reshape(()) for p in parts]).sum()


def scalar_loss(value: Any, key: str, device: torch.device | None, said: str) -> Tensor:
    """``value`` as a one-element tensor: a plain number (e.g. 0.0: no loss this time) becomes
    one on ``device``.

    Raises:
        ConfigError: ``said.format(key=key, got=...)`` for anything else (a batch of losses).
    """
    if isinstance(value, Real) and not isinstance(value, bool):  # NumPy's numbers too
        return torch.tensor(float(value), device=device)
    if not isinstance(value, Tensor) or value.numel() != 1:
        shape = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor) else ""
        raise ConfigError(said.format(key=key, got=shape or type(value)))
    return value


class LossTerm(nn.Module, ABC):
    """One loss branch of a UDA method, back-propagated on its own. The modules a term trains
    (e.g. a domain discriminator) are its submodules, so the optimiser and checkpoints find
    them through the method.

    Class attributes:
        uses_target: needs target images (skipped before ``adaptation_start``).
        uses_pseudo_labels: reads the teacher's pseudo-labels (the loop needs a teacher).
        shared_forward: the ``SharedForward`` it reads, if any.

    A term may set ``statistics``, a dict of 0-d tensors that the loop logs as
    ``<term>/<key>`` (MIC's quality weight ``q``).

    Args:
        weight: the loss weight, finite and >= 0 (else a ConfigError): the loop multiplies
            what ``forward`` returns by it, and skips a term of weight 0.
    """

    uses_target: bool = True
    uses_pseudo_labels: bool = False
    shared_forward: SharedForward | None = None

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = checks.loss_weight(self, weight)

    @abstractmethod
    def forward(self, ctx: IterationContext) -> Tensor | dict[str, Tensor]:
        """The loss (before ``weight``): a scalar tensor, or a dict of named ones (logged one
        by one); a plain number such as 0.0 is no loss this time (another number trains
        nothing, and is warned of)."""


class ConsistencyLoss(LossTerm):
    """The student on ``transform(target)`` (chosen by a subclass) against the teacher's
    pseudo-labels: the Task loss (times ``weight``, by the loop), each element weighted by
    ``weighting``, parts scaled by ``part_weights``. Images that ``PseudoLabels.keep`` leaves
    out are dropped after the transform (each image's draws stay the same); none left: 0.

    Args:
        weighting: ``"quality"``, ``"prob"`` or ``"none"`` (``PseudoLabelWeighting``).
        tau: the quality weight's threshold (published 0.968, ``QUALITY_THRESHOLD``).
        weight: lambda, the loss weight (published 1).
        part_weights: a multiplier per named part of the Task's loss (``sum_parts``).
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
        self.parts_setting = "part_weights"  # how messages name them (a subclass may set them)
        #: the last call's quality weight ``q`` and mean teacher confidence, for logs (the
        #: loop's ``forward``, or ``loss`` called alone without ``weights``)
        self.statistics: dict[str, Tensor] = {}

    @abstractmethod
    def transform(self, images: Any, rng: Random = None) -> Any:
        """What the student sees instead of the teacher's view."""

    def loss(
        self,
        student: nn.Module,
        task: Task,
        images: Any,
        pseudo: PseudoLabels,
        rng: Random = None,
        weights: Any = None,
    ) -> Tensor:
        """The consistency loss (a scalar tensor, before ``weight``) on ``images`` against
        ``pseudo``.

        Args:
            student: the model being trained.
            task: the Task whose ``loss`` is used.
            images: the teacher's view (e.g. (B, C, H, W) float).
            pseudo: the teacher's pseudo-labels for ``images``.
            rng: what ``transform`` draws from (the term's ``RandomStream`` in the loop).
            weights: per-element weights in ``pseudo.confidence``'s layout (e.g. 1 for mixed-in
                source pixels); None: ``weighting(pseudo)``.

        Raises:
            ConfigError: ``pseudo`` is no ``PseudoLabels``, or labels another number of images;
                a transform that returns another kind than the images; ``part_weights`` that
                ``sum_parts`` refuses.
        """
        checks.check_consistency_inputs(self, task, images, pseudo, PseudoLabels)
        views = self.transform(images, rng)
        checks.check_views(self, views, images)
        if weights is None:  # q over every image, as the loop's (before any is left out)
            self.statistics = self.weighting.statistics(pseudo.confidence)  # (called alone)
            weights = self.weighting(pseudo)
        views, weights, pseudo = pseudo.kept(views, weights)
        if task.count(views) == 0:
            return next(student.parameters()).new_zeros(())
        loss = task.loss(student, views, pseudo.labels, weights=weights, rng=rng)
        return sum_parts(loss, self.part_weights, self.parts_setting)

    def forward(self, ctx: IterationContext) -> Tensor:
        pseudo = ctx.pseudo_labels
        self.statistics = self.weighting.statistics(pseudo.confidence)
        weights = self.weighting(pseudo, q=ctx.quality(self.weighting))  # q: the step's
        try:
            return self.loss(ctx.student, ctx.task, ctx.target_images, pseudo, ctx.rng, weights)
        except ConfigError as e:  # (its part_weights, its masker: which of the terms)
            if type(e) is not ConfigError or f"'{ctx.term}'" in str(e):
                raise
            raise ConfigError(f"loss term '{ctx.term}': {e}") from e


class MaskedImageConsistency(ConsistencyLoss):
    """MIC: the student on the masked (and strongly augmented) target against the teacher's
    pseudo-labels of the full target.

    Args:
        masker: withholds image regions (``BlockMasker`` is MIC's).
        weighting: published ``"quality"`` for segmentation, ``"prob"`` for ViT
            classification, ``"none"`` for ResNet (detection: ``DetectionMIC``'s ``"student"``).
        tau, weight: as in ``ConsistencyLoss``.
        part_weights: as in ``ConsistencyLoss`` (published 0 for a two-stage detector's
            box-regression parts).

    Raises:
        ConfigError: a masker that is no ``Masker`` (a class, an augmentation, None; a plain
            function ``f(images, rng)`` is taken); (from ``loss``) one that returns other than
            the images' kind (an ``(images, mask)`` pair), or images of another shape, dtype or
            device than it was given.
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
        checks.check_masker(masker, Masker)
        self.masker = masker

    def transform(self, images: Any, rng: Random = None) -> Any:
        masked = self.masker(images, rng)
        checks.check_masked(self.masker, masked, images)
        return masked
