"""Loss functions that more than one task uses."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def weighted_cross_entropy(
    logits: Tensor, targets: Tensor, weights: Tensor | None = None, ignore_index: int = -100
) -> Tensor:
    """Cross-entropy per element times its weight, averaged over all elements.

    ``logits`` is N x C (x ...), ``targets`` N (x ...) and ``weights`` broadcastable to the
    targets. Ignored elements contribute 0 but still count in the mean (the published
    convention, mmseg's ``weight_reduce_loss`` with reduction 'mean').
    """
    loss = F.cross_entropy(logits.float(), targets, reduction="none", ignore_index=ignore_index)
    if weights is not None:
        loss = loss * weights
    return loss.mean()


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.factor, None


def scale_gradient(x: Tensor, factor: float) -> Tensor:
    """The identity forward; backward multiplies the gradient by ``factor``."""
    return _ScaleGradient.apply(x, float(factor))


def reverse_gradient(x: Tensor, coefficient: float = 1.0) -> Tensor:
    """Gradient reversal (adversarial domain alignment): the identity forward; backward
    multiplies the gradient by ``-coefficient``."""
    return scale_gradient(x, -float(coefficient))
