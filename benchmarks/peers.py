"""pytorch-adapt's DANN, CDAN and MCC as mic loss terms: the peer library side by side.

Each class here is a ``LossTerm`` whose adaptation loss is computed by pytorch-adapt's own
hooks (``pytorch_adapt.hooks``: one forward pass per domain, its discriminator, its domain and
classification losses, its reducer), while everything else comes from the ``mic-train`` run
it is put in: the CNN and its initial weights, the batches in the same order, the optimiser
and its schedule, the gradient-reversal schedule, the loss weights and the AdaBN evaluation.
Before ``adaptation_start`` a term is mic's source cross-entropy (``SourceSupervision``), so a
seed's mic and pytorch-adapt runs are bitwise equal up to that iteration. ``digits.py`` names
them ``pa_dann``, ``pa_cdan``, ``pa_mcc`` (``--methods``); they replace the method's terms
(digits.py's ``PEER_OVERRIDES``) and take the method config's settings.

pytorch-adapt 0.0.83 pins torchmetrics 0.9.3, older than mic's; its code runs with the
current one, so it is installed without its pins (and pytorch-metric-learning at its pin,
1.6.3): ``bash scripts/install_peers.sh``.

What each term keeps of pytorch-adapt and what it takes from mic:

- ``PytorchAdaptDANN``: ``DANNHook``'s losses (features of each domain through the gradient
  reversal layer into pytorch-adapt's ``Discriminator``, 3 linear layers without BatchNorm or
  dropout; binary cross-entropy per domain; source cross-entropy), weighted as mic's DANN:
  ``c_loss + weight x (src_domain_loss + target_domain_loss) / 2`` (pytorch-adapt's default
  weighter would take the mean of the three); the reversal coefficient follows mic's
  ``GradientReversalRamp`` (pytorch-adapt's default: a constant 1). The discriminator is the
  term's submodule, so mic's optimiser steps it with the student, as pytorch-adapt's DANN
  steps it with its own optimiser of the same kind.
- ``PytorchAdaptCDAN``: ``CDANHook``, a GAN in two steps, not a gradient reversal: first the
  discriminator on detached conditioned features (its own optimiser, built from the run's
  optimiser config; not one of mic's parameters, so not in mic-train's checkpoints), then the
  student on the source cross-entropy plus the domain loss with the domain labels swapped,
  the reversed gradient also reaching the classifier through the softmax prediction (mic's
  ``detach_prediction=false``). The domain losses weighted ``weight / 2`` per domain as mic's
  CDAN; the student's domain loss also scaled by mic's ramp (the role of the reversal
  coefficient). The conditioning is the full multilinear map (mic's ``MultilinearMap``).
- ``PytorchAdaptMCC``: ``ClassifierHook`` with ``MCCHook`` (``MCCLoss`` at mic's temperature),
  ``c_loss + weight x mcc_loss``.

Raises ``ConfigError`` for a setting pytorch-adapt's hook does not have (a joint forward pass,
DANN's BatchNorm discriminator, CDAN+E, the randomised map, a detached prediction).
``pa_cdan_bn`` is pytorch-adapt's CDAN with mic's BatchNorm discriminator, which tells the GAN
step's effect from the discriminator's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from mic.core import ConfigError, IterationContext
from mic.core.teacher import unwrap
from mic.methods import SourceSupervision
from mic.tasks.classification import DomainDiscriminator, GradientReversalRamp, MultilinearMap


def _require_pytorch_adapt(term: str) -> None:
    """Raises ``ConfigError`` naming the install script when pytorch-adapt is missing."""
    try:
        import pytorch_adapt.hooks  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"{term} runs pytorch-adapt's hooks, which this Python environment cannot import "
            f"({e}); install it with: bash scripts/install_peers.sh"
        ) from e


class _Features(nn.Module):
    """pytorch-adapt's ``G``: the student's bottleneck features (B x F)."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(self, x: Tensor) -> Tensor:
        return self.student.forward_features(x)


def _inputs(ctx: IterationContext, **models: Any) -> dict[str, Any]:
    """A pytorch-adapt hook's inputs: ``G`` (features) and ``C`` (the head) of the student,
    the batches, and the domain labels (source 0, target 1, as pytorch-adapt's datasets)."""
    student = unwrap(ctx.student)
    src, target = ctx.source_images, ctx.target_images
    return {
        "G": _Features(student),
        "C": student.head,
        **models,
        "src_imgs": src,
        "src_labels": ctx.source_targets,
        "target_imgs": target,
        "src_domain": torch.zeros(len(src), dtype=torch.long, device=src.device),
        "target_domain": torch.ones(len(target), dtype=torch.long, device=target.device),
    }


def _losses(optimizer_hook: Any, inputs: dict[str, Any]) -> Tensor:
    """What pytorch-adapt's ``OptimizerHook`` back-propagates, without its step: the wrapped
    hook's losses, reduced and weighted into one scalar (mic's loop back-propagates it and
    steps its optimiser)."""
    outputs, losses = optimizer_hook.hook(inputs, {})
    _, losses = optimizer_hook.reducer({**inputs, **outputs}, losses)
    return optimizer_hook.weighter(losses)[0]


def _sum_weighter(weights: dict[str, float]) -> Any:
    from pytorch_adapt.weighters import SumWeighter

    return SumWeighter(weights=weights)


class _PeerTerm(SourceSupervision):
    """mic's source cross-entropy before ``adaptation_start``, then ``adaptation_loss``, a
    pytorch-adapt hook's loss (which has its own source cross-entropy).

    Raises:
        ConfigError: no pytorch-adapt, or a joint ``forward_pass``.
    """

    def __init__(self, forward_pass: str) -> None:
        _require_pytorch_adapt(type(self).__name__)
        super().__init__()
        self.require(forward_pass == "separate", "forward_pass must be 'separate'")

    def require(self, ok: bool, message: str) -> None:
        """Raises ``ConfigError`` with ``message`` unless ``ok`` (a setting pytorch-adapt's
        hook does not have)."""
        if not ok:
            raise ConfigError(
                f"{type(self).__name__}: {message} (pytorch-adapt's hook has no such setting)"
            )

    def adaptation_loss(self, ctx: IterationContext) -> Tensor:
        """The term's loss from ``adaptation_start`` on."""
        raise NotImplementedError

    def forward(self, ctx: IterationContext) -> Tensor:
        return self.adaptation_loss(ctx) if ctx.adapting else super().forward(ctx)


class PytorchAdaptDANN(_PeerTerm):
    """pytorch-adapt's DANN (``DANNHook``) in mic's loop; see the module docstring.

    Args:
        features_dim: the feature width (``model.bottleneck_dim``).
        hidden_dim: the discriminator's hidden width.
        batch_norm: must be False (pytorch-adapt's ``Discriminator`` has no BatchNorm).
        coefficient: the reversal coefficient's schedule (default ``GradientReversalRamp()``).
        part_weight: the domain loss's weight (mic's DANN term's ``weight``).
        forward_pass: must be ``"separate"`` (pytorch-adapt forwards each domain alone).

    Raises:
        ConfigError: ``batch_norm``, a joint ``forward_pass``, or no pytorch-adapt.
    """

    def __init__(
        self,
        features_dim: int,
        hidden_dim: int = 1024,
        batch_norm: bool = False,
        coefficient: GradientReversalRamp | None = None,
        part_weight: float = 1.0,
        forward_pass: str = "separate",
    ) -> None:
        super().__init__(forward_pass)
        from pytorch_adapt.hooks import DANNHook, GradientReversalHook
        from pytorch_adapt.hooks.domain import FeaturesForDomainLossHook
        from pytorch_adapt.models import Discriminator

        self.require(not batch_norm, "batch_norm must be false")
        self.discriminator = Discriminator(in_size=features_dim, h=hidden_dim)
        self.coefficient = coefficient if coefficient is not None else GradientReversalRamp()
        # a float weight: its default (the int 1) makes a buffer that truncates update_weight's
        self.reversal = GradientReversalHook(
            weight=1.0, apply_to=FeaturesForDomainLossHook().out_keys
        )
        half = float(part_weight) / 2
        hook = DANNHook(
            opts=[],
            gradient_reversal=self.reversal,
            weighter=_sum_weighter({"src_domain_loss": half, "target_domain_loss": half}),
        )
        self.optimizer_hook = hook.hook.hooks[0]

    def adaptation_loss(self, ctx: IterationContext) -> Tensor:
        self.reversal.fn.update_weight(self.coefficient(ctx.step - ctx.adaptation_start))
        return _losses(self.optimizer_hook, _inputs(ctx, D=self.discriminator))


class PytorchAdaptCDAN(_PeerTerm):
    """pytorch-adapt's CDAN (``CDANHook``, a discriminator step, then the student's loss) in
    mic's loop; see the module docstring.

    Args:
        features_dim: the feature width (``model.bottleneck_dim``).
        num_classes: the number of classes.
        optimizer: builds the discriminator's optimiser from its parameters (the run's
            optimiser config, ``${optimizer}``).
        hidden_dim: the discriminator's hidden width.
        coefficient: scales the student's domain loss (default ``GradientReversalRamp()``).
        part_weight: the domain losses' weight (mic's CDAN term's ``weight``).
        batch_norm: False: pytorch-adapt's ``Discriminator`` (no BatchNorm, no dropout);
            True: mic's ``DomainDiscriminator`` with BatchNorm (mic's CDAN default), to tell
            the GAN step's effect from the discriminator's.
        forward_pass, entropy_conditioning, randomized, detach_prediction: must be
            pytorch-adapt's (``"separate"``, False, False, False).
        randomized_dim, seed: accepted from the method config, unused.

    Raises:
        ConfigError: a setting other than pytorch-adapt's, no ``optimizer``, or no
            pytorch-adapt.
    """

    def __init__(
        self,
        features_dim: int,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        hidden_dim: int = 1024,
        coefficient: GradientReversalRamp | None = None,
        part_weight: float = 1.0,
        batch_norm: bool = False,
        forward_pass: str = "separate",
        entropy_conditioning: bool = False,
        randomized: bool = False,
        detach_prediction: bool = False,
        randomized_dim: int = 1024,
        seed: int = 0,
    ) -> None:
        super().__init__(forward_pass)
        from pytorch_adapt.hooks import CDANHook
        from pytorch_adapt.models import Discriminator

        self.require(optimizer is not None, "optimizer (the discriminator's) is required")
        self.require(not entropy_conditioning, "entropy_conditioning must be false")
        self.require(not randomized, "randomized must be false")
        self.require(not detach_prediction, "detach_prediction must be false")
        self.combiner = MultilinearMap(features_dim, num_classes)
        # not a submodule: its own optimiser steps it, mic's must not
        width = self.combiner.output_dim
        self._discriminator = (
            nn.Sequential(DomainDiscriminator(width, hidden_dim), nn.Flatten(0))
            if batch_norm
            else Discriminator(in_size=width, h=hidden_dim),
        )
        d_optimizer = optimizer(self._discriminator[0].parameters())
        self.coefficient = coefficient if coefficient is not None else GradientReversalRamp()
        self.domain_weight = float(part_weight)  # self.weight stays the source loss's 1
        half = self.domain_weight / 2
        hook = CDANHook(
            d_opts=[d_optimizer],
            g_opts=[],
            d_weighter=_sum_weighter({"d_src_domain_loss": half, "d_target_domain_loss": half}),
            g_weighter=_sum_weighter({}),
        )
        self.discriminator_step, self.student_loss = hook.hook.hooks[:2]

    @property
    def discriminator(self) -> nn.Module:
        """The discriminator on the conditioned features (its own optimiser)."""
        return self._discriminator[0]

    def adaptation_loss(self, ctx: IterationContext) -> Tensor:
        d = self.discriminator.to(ctx.source_images.device).train()
        half = self.domain_weight / 2 * self.coefficient(ctx.step - ctx.adaptation_start)
        self.student_loss.weighter.weights.update(
            {"g_src_domain_loss": half, "g_target_domain_loss": half}
        )
        inputs = _inputs(ctx, D=d, feature_combiner=self.combiner)
        outputs, _ = self.discriminator_step(inputs, {})
        return _losses(self.student_loss, {**inputs, **outputs})


class PytorchAdaptMCC(_PeerTerm):
    """pytorch-adapt's MCC (``ClassifierHook`` with ``MCCHook``) in mic's loop.

    Args:
        temperature: ``MCCLoss``'s T (mic's method config: 2.0).
        part_weight: the MCC loss's weight (mic's MCC term's ``weight``).
        forward_pass: must be ``"separate"``.

    Raises:
        ConfigError: a joint ``forward_pass``, or no pytorch-adapt.
    """

    def __init__(
        self, temperature: float = 2.0, part_weight: float = 1.0, forward_pass: str = "separate"
    ) -> None:
        super().__init__(forward_pass)
        from pytorch_adapt.hooks import ClassifierHook, MCCHook
        from pytorch_adapt.layers import MCCLoss

        hook = ClassifierHook(
            opts=[],
            post=[MCCHook(loss_fn=MCCLoss(T=temperature))],
            weighter=_sum_weighter({"mcc_loss": float(part_weight)}),
        )
        self.optimizer_hook = hook.hook.hooks[0]

    def adaptation_loss(self, ctx: IterationContext) -> Tensor:
        return _losses(self.optimizer_hook, _inputs(ctx))


if __name__ == "__main__":  # (a module of terms, not a script: say what runs them)
    raise SystemExit(
        "benchmarks/peers.py holds pytorch-adapt's terms, which digits.py runs beside mic's: "
        "python benchmarks/digits.py --methods dann pa_dann cdan pa_cdan mcc pa_mcc "
        "(results/digits_peers.md)"
    )
