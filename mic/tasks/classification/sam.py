"""Sharpness-aware minimisation, the step of SDAT (Rangwani et al., CVPR 2022): the SAM
optimiser, and the step strategy that runs an iteration's two passes in the generic loop."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from mic.core import (
    AdaptationLoop,
    ConfigError,
    ConsistencyLoss,
    IterationContext,
    LossTerm,
    PseudoLabelWeighting,
    StepStrategy,
)
from mic.core.weighting import WEIGHTING_MODES, WeightingMode


class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimisation (Foret et al., ICLR 2021) around a base optimiser.

    An iteration has two passes. The first-pass loss is back-propagated and ``first_step``
    moves every parameter that received a gradient to ``w + e(w)``, with
    ``e(w) = rho * g / ||g||`` (``||g||`` over all those parameters together; with
    ``adaptive``, ASAM's ``e(w) = rho * w^2 * g / ||w * g||``), then clears the gradients. The
    second-pass loss is back-propagated at the perturbed weights, and ``step`` (the same as
    ``second_step``) puts every parameter back to ``w`` and lets the base optimiser step with
    the second pass's gradients. Parameters without a gradient in the first pass (e.g. a
    discriminator that only the second pass uses) are not perturbed. In the adaptation loop,
    ``SharpnessAwareMinimization`` runs the two passes around the loop's optimiser.

    The parameter groups, the state and the ``state_dict`` are the base optimiser's, so a
    learning-rate scheduler built on the SAM schedules the base optimiser, and checkpoints
    hold its momentum buffers.

    Args:
        base: the optimiser that takes the actual step (SDAT: SGD with Nesterov momentum).
        rho: the radius of the perturbation (SAM's paper: 0.05; SDAT: 0.02, what
            ``SharpnessAwareMinimization`` gives it).
        adaptive: scale the perturbation per parameter by its magnitude (ASAM).
        eps: added to the gradient norm before dividing by it.

    Raises:
        ConfigError: a negative ``rho``, or a ``base`` that is no torch optimiser.
    """

    def __init__(
        self,
        base: torch.optim.Optimizer,
        rho: float = 0.05,
        adaptive: bool = False,
        eps: float = 1e-12,
    ) -> None:
        if rho < 0:
            raise ConfigError(f"SAM rho must be non-negative, got {rho}")
        if not isinstance(base, torch.optim.Optimizer):
            raise ConfigError(f"SAM wraps a torch optimizer, got {type(base).__name__}")
        # copies of the group dicts, so that Optimizer.__init__ leaves the base's untouched
        super().__init__([dict(g) for g in base.param_groups], {})
        self.base = base
        self.param_groups = base.param_groups
        self.state = base.state
        self.defaults = base.defaults
        self.rho, self.adaptive, self.eps = float(rho), bool(adaptive), float(eps)
        self._perturbation: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def perturbed(self) -> bool:
        """Whether the weights are at ``w + e(w)`` (between ``first_step`` and ``step``)."""
        return bool(self._perturbation)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = True) -> None:
        """Move to ``w + e(w)`` along the current gradients."""
        if self._perturbation:
            raise RuntimeError("SAM.first_step called twice without a step in between")
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if params:
            grads = [p.grad * p.abs() if self.adaptive else p.grad for p in params]
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            scale = self.rho / (norm + self.eps)
            for p, g in zip(params, grads, strict=True):
                e = (g * p.abs() if self.adaptive else g) * scale.to(p)
                p.add_(e)
                self._perturbation.append((p, e))
        if zero_grad:
            self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Back to ``w``, then the base optimiser's step with the current gradients."""
        self.restore()
        self.base.step()
        if zero_grad:
            self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def restore(self) -> None:
        """Back to ``w`` without a step (an iteration that is skipped)."""
        for p, e in self._perturbation:
            p.sub_(e)
        self._perturbation = []

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        """``second_step``; with a ``closure`` (which must recompute the loss and call
        backward), the whole SAM update from the gradients already present."""
        loss = None
        if closure is not None:
            self.first_step(zero_grad=True)
            with torch.enable_grad():
                loss = closure()
        self.second_step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base.load_state_dict(state_dict)
        self.param_groups = self.base.param_groups
        self.state = self.base.state

    def __repr__(self) -> str:
        return f"SAM(rho={self.rho}, adaptive={self.adaptive}, base={self.base!r})"


class SharpnessAwareMinimization(StepStrategy):
    """SDAT's two-pass iteration in the generic loop, around the loop's optimiser.

    First pass: the active terms except ``first_pass_skips`` are computed and back-propagated
    (for every micro-batch; gradients averaged over processes); ``SAM.first_step`` moves the
    weights to ``w + e(w)``. Second pass: every active term at the perturbed weights, with the
    same random draws (each term's stream starts over) and the same pseudo-labels (the
    teacher predicts once per iteration); then the weights go back to ``w`` and the loop's
    optimiser steps with the second pass's gradients. The logged losses are the second pass's.

    Args:
        rho: the perturbation radius (published SDAT: 0.02, also in conf/method/sdat.yaml).
        adaptive: ASAM's per-parameter scaling of the perturbation.
        first_pass_skips: names of terms left out of the first pass, so that the perturbation
            follows the other losses (SDAT leaves out the adversarial term, ``cdan``).
        second_pass_weighting: the pseudo-label weighting of every consistency term (MIC) in
            the second pass; None keeps each term's own. The published SDAT + MIC code weights
            the masked loss by the teacher's confidence in the first pass only (``"none"``).

    Raises:
        ConfigError: (when the loop is built) fp16 precision (its loss scaling would have to
            unscale twice per iteration), a skipped name the method lacks, or an unknown
            weighting mode.
    """

    #: precision -> why not, what ``mic.schema`` refuses in a config before anything is built
    refused_precisions: ClassVar[dict[str, str]] = {
        "fp16": "its loss scaling would have to unscale twice per iteration"
    }

    def __init__(
        self,
        rho: float = 0.02,
        adaptive: bool = False,
        first_pass_skips: Sequence[str] = (),
        second_pass_weighting: WeightingMode | None = None,
    ) -> None:
        if second_pass_weighting is not None and second_pass_weighting not in WEIGHTING_MODES:
            raise ConfigError(
                f"second_pass_weighting must be one of {WEIGHTING_MODES} or null, "
                f"got {second_pass_weighting!r}"
            )
        if not (isinstance(rho, (int, float)) and math.isfinite(rho) and rho >= 0):
            raise ConfigError(f"SAM rho must be a finite number >= 0, got {rho!r}")
        if rho == 0:
            warnings.warn(
                "SAM rho=0 perturbs nothing: every iteration makes sharpness-aware "
                "minimisation's two passes (twice the compute) for a plain step; SDAT's base "
                "without SAM is method=cdan (in Python: a loop without this step strategy)",
                stacklevel=2,
            )
        self.rho, self.adaptive = float(rho), bool(adaptive)
        # one name given alone (mic-train: method.step.first_pass_skips=cdan) is one name
        skips = [first_pass_skips] if isinstance(first_pass_skips, str) else first_pass_skips
        self.first_pass_skips = tuple(skips)
        self.second_pass_weighting = second_pass_weighting
        self.sam: SAM | None = None

    def check(self, loop: AdaptationLoop) -> None:
        if loop.precision == "fp16":
            raise ConfigError(
                "precision=fp16 cannot be combined with sharpness-aware minimisation (its loss "
                "scaling would have to unscale twice per iteration); use precision=bf16"
            )
        names = [name for name, _ in loop.method]
        unknown = [n for n in self.first_pass_skips if n not in names]
        if unknown:
            raise ConfigError(
                f"first_pass_skips names {unknown}, which the method does not have; its terms "
                f"are {names}"
            )
        self.sam = SAM(loop.optimizer, self.rho, self.adaptive)

    def __call__(
        self,
        loop: AdaptationLoop,
        contexts: list[IterationContext],
        terms: list[tuple[str, LossTerm]],
    ) -> dict[str, Tensor]:
        if self.sam is None or self.sam.base is not loop.optimizer:
            self.check(loop)  # a strategy moved to another loop
        sam: SAM = self.sam  # type: ignore[assignment]
        loop.backward(contexts, [(n, t) for n, t in terms if n not in self.first_pass_skips])
        loop.collective.average_gradients(loop.parameters())
        sam.first_step(zero_grad=True)
        for ctx in contexts:  # forward passes anew, the same masks and mixes drawn again
            ctx.restart()
        with self._second_pass_weighting(terms):
            losses = loop.backward(contexts, terms)
        loop.finish_step(losses, restore=sam.restore)
        return losses

    @contextlib.contextmanager
    def _second_pass_weighting(self, terms: list[tuple[str, LossTerm]]) -> Iterator[None]:
        consistency = [t for _, t in terms if isinstance(t, ConsistencyLoss)]
        if self.second_pass_weighting is None or not consistency:
            yield
            return
        own = [t.weighting for t in consistency]
        for t in consistency:
            t.weighting = PseudoLabelWeighting(self.second_pass_weighting, t.weighting.tau)
        try:
            yield
        finally:
            for t, w in zip(consistency, own, strict=True):
                t.weighting = w

    def __repr__(self) -> str:
        return (
            f"SharpnessAwareMinimization(rho={self.rho}, adaptive={self.adaptive}, "
            f"first_pass_skips={list(self.first_pass_skips)}, "
            f"second_pass_weighting={self.second_pass_weighting!r})"
        )
