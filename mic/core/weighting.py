"""Pseudo-label weighting: how much each pseudo-labelled element counts in a loss."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from mic.core.errors import ConfigError
from mic.core.task import PseudoLabels

WeightingMode = Literal["quality", "prob", "none"]
_MODES = ("quality", "prob", "none")


def _flat(x: Tensor | list[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in x]) if isinstance(x, (list, tuple)) else x.reshape(-1)


def _map(fn, *xs):  # type: ignore[no-untyped-def]
    if isinstance(xs[0], (list, tuple)):
        return [fn(*parts) for parts in zip(*xs, strict=True)]
    return fn(*xs)


class PseudoLabelWeighting:
    """Per-element weights for pseudo-labels.

    Modes:
        ``"quality"``: every element weighs q = (elements with confidence >= tau) / (all
            elements), one scalar per batch, kept as a tensor (no host synchronisation);
        ``"prob"``: every element weighs its own teacher confidence;
        ``"none"``: every element weighs 1.
    Elements outside ``PseudoLabels.valid`` weigh 0 in every mode (q counts all elements, as
    published).
    """

    def __init__(self, mode: WeightingMode = "quality", tau: float = 0.968) -> None:
        if mode not in _MODES:
            raise ConfigError(f"pseudo-label weighting must be one of {_MODES}, got {mode!r}")
        if not 0.0 <= tau <= 1.0:
            raise ConfigError(f"pseudo-label threshold tau must lie in [0, 1], got {tau}")
        self.mode = mode
        self.tau = float(tau)

    def quality(self, confidence: Tensor | list[Tensor]) -> Tensor:
        flat = _flat(confidence)
        if flat.numel() == 0:
            return flat.new_zeros(())
        return (flat >= self.tau).float().mean()

    def __call__(self, pseudo: PseudoLabels) -> Tensor | list[Tensor]:
        conf = pseudo.confidence
        if self.mode == "quality":
            q = self.quality(conf)
            weights = _map(lambda c: q.expand_as(c).to(c.dtype), conf)
        elif self.mode == "prob":
            weights = _map(lambda c: c.detach(), conf)
        else:
            weights = _map(torch.ones_like, conf)
        if pseudo.valid is not None:
            weights = _map(lambda w, v: w * v.to(w.dtype), weights, pseudo.valid)
        return weights

    def __repr__(self) -> str:
        return f"PseudoLabelWeighting(mode={self.mode!r}, tau={self.tau})"
