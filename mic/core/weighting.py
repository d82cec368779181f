"""Pseudo-label weighting: how much each pseudo-labelled element counts in a loss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from mic.core import checks
from mic.core.errors import ConfigError
from mic.core.task import PseudoLabels

WeightingMode = Literal["quality", "prob", "none"]
WEIGHTING_MODES: tuple[str, ...] = get_args(WeightingMode)

#: tau, the teacher confidence at or above which a pseudo-label counts as reliable in the
#: quality weight (DACS, DAFormer, HRDA and MIC's published ``pseudo_threshold``)
QUALITY_THRESHOLD = 0.968


def _flat(x: Tensor | list[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in x]) if isinstance(x, (list, tuple)) else x.reshape(-1)


def _map(fn: Callable[..., Tensor], *xs: Any) -> Any:
    if isinstance(xs[0], (list, tuple)):
        return [fn(*parts) for parts in zip(*xs, strict=True)]
    return fn(*xs)


class PseudoLabelWeighting:
    """Per-element weights of pseudo-labels; elements where ``PseudoLabels.valid`` is 0 weigh
    0, the others keep their weight whatever valid's value (q counts all, as published).

    Args:
        mode: ``"quality"``: every element weighs q, the batch's share of elements with
            confidence >= tau (a tensor: no host synchronisation; published for
            segmentation); ``"prob"``: its own confidence (published for ViT classification);
            ``"none"``: 1 (published for ResNet classification; detection: see DetectionMIC).
        tau: the quality weight's threshold, in [0, 1] (``QUALITY_THRESHOLD``).

    Raises:
        ConfigError: an unknown mode, or tau outside [0, 1].
    """

    def __init__(self, mode: WeightingMode = "quality", tau: float = QUALITY_THRESHOLD) -> None:
        checks.check_weighting(mode, tau, WEIGHTING_MODES)
        self.mode, self.tau = mode, float(tau)

    def counts(self, confidence: Tensor | list[Tensor]) -> Tensor:
        """(elements with confidence >= tau, elements), a float tensor of 2: q's parts."""
        flat = _flat(confidence)
        total = flat.new_tensor(flat.numel(), dtype=torch.float32)  # (bf16 has 8 bits)
        return torch.stack([(flat >= self.tau).float().sum(), total])

    def quality(self, confidence: Tensor | list[Tensor]) -> Tensor:
        """q of these elements, a float 0-d tensor (0 for no elements); the optimiser step's
        global batch's: ``IterationContext.quality``."""
        flat = _flat(confidence)
        if flat.numel() == 0:
            return flat.new_zeros(())
        return (flat >= self.tau).float().mean()

    def statistics(self, confidence: Tensor | list[Tensor]) -> dict[str, Tensor]:
        """For logs (a term's ``statistics``): ``q``, this batch's share of elements with
        confidence >= tau, and ``confidence``, their mean; detached 0-d float tensors on the
        confidence's device (no host synchronisation)."""
        flat = _flat(confidence).detach().float()
        mean = flat.mean() if flat.numel() else flat.new_zeros(())
        return {"q": self.quality(flat), "confidence": mean}

    def __call__(self, pseudo: PseudoLabels, *, q: Tensor | None = None) -> Tensor | list[Tensor]:
        """The weights in ``pseudo.confidence``'s layout and dtype (float32 for an integer
        one); ``q``, if given, is the quality weight (``IterationContext.quality``: that of the
        optimiser step's global batch), else that of ``pseudo`` alone.

        Raises:
            ConfigError: ``pseudo`` is no ``PseudoLabels`` (e.g. a confidence tensor).
        """
        if not isinstance(pseudo, PseudoLabels):
            raise ConfigError(f"the weighting takes PseudoLabels, got a {type(pseudo).__name__}")
        conf = _map(lambda c: c if c.is_floating_point() else c.float(), pseudo.confidence)
        if self.mode == "quality":
            q = self.quality(conf) if q is None else q
            weights = _map(lambda c: q.expand_as(c).to(c.dtype, copy=True), conf)  # its own
        elif self.mode == "prob":
            weights = _map(lambda c: c.detach(), conf)
        else:
            weights = _map(torch.ones_like, conf)
        if pseudo.valid is not None:
            weights = _map(lambda w, v: w * v.bool().to(w.dtype), weights, pseudo.valid)
        return weights

    def __repr__(self) -> str:
        return f"PseudoLabelWeighting(mode={self.mode!r}, tau={self.tau})"
