"""Loss functions that more than one task uses."""

from __future__ import annotations

from numbers import Real
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def weighted_cross_entropy(
    logits: Tensor, targets: Tensor, weights: Tensor | None = None, ignore_index: int = -100
) -> Tensor:
    """Cross-entropy per element times its weight, averaged over all elements.

    Ignored elements contribute 0 but still count in the mean (the published convention,
    mmseg's ``weight_reduce_loss`` with reduction 'mean').

    Args:
        logits: N x C (x ...) float scores.
        targets: N (x ...) int64 class indices (or ``ignore_index``).
        weights: None (all 1), a number, or a float tensor of the targets' shape or of one
            with as many dimensions that broadcasts to it without enlarging it (0-d, or
            N x 1 x 1 for N x H x W).
        ignore_index: the target value that is ignored.

    Returns:
        The mean weighted loss, a float32 scalar (float64 with float64 weights; 0, with a
        gradient, for no elements).

    Raises:
        ValueError: weights whose shape would broadcast the loss to a larger one (N x 1
            against N targets would weigh every element by every weight), or that have fewer
            dimensions than the targets but are no 0-d tensor (N weights against N x H x W
            targets would weigh columns, not images, when N = W); weights that are no tensor
            or number (a list).
    """
    loss = F.cross_entropy(logits.float(), targets, reduction="none", ignore_index=ignore_index)
    if weights is not None:
        if not isinstance(weights, (Tensor, Real)) or isinstance(weights, bool):
            raise ValueError(
                f"weights must be a float tensor (or a number), got {type(weights).__name__}: "
                "give torch.tensor(weights)"
            )
        shape = tuple(getattr(weights, "shape", ()))  # a number: ()
        try:
            fits = torch.broadcast_shapes(loss.shape, shape) == loss.shape
        except RuntimeError:  # shapes that do not broadcast at all
            fits = False
        if not fits or 0 < len(shape) < loss.dim():
            per_item = f"weights.view(-1{', 1' * (loss.dim() - 1)})"
            raise ValueError(
                f"weights of shape {shape} do not fit targets of shape "
                f"{tuple(targets.shape)}: give one weight per target (its shape), or a shape "
                "of as many dimensions that broadcasts to it"
                + (f" (one weight per image: {per_item})" if len(shape) == 1 else "")
            )
        loss = loss * weights
    if loss.numel() == 0:  # an empty batch: no loss (the mean of nothing would be NaN)
        return loss.sum()
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
