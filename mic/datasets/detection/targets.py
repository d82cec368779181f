"""Detection targets: the format, its checks (with messages that say what to fix) and batching
of their images (shared by the dataset readers and the detection task).

A target is a dict with ``boxes`` (N x 4 float, x1 y1 x2 y2 in pixels of the image as the model
gets it) and ``labels`` (N int64, 0-based class ids); an image without objects has N = 0 and
is a valid (background) sample. Other keys (e.g. ``weights``) pass through.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mic.core.errors import DatasetError

#: how far (pixels) a box may reach beyond the image border before it counts as outside
BORDER_TOLERANCE = 1.0


def make_target(boxes: Any, labels: Any, iscrowd: Any = None) -> dict[str, Tensor]:
    """A target from anything array-like (an empty list gives an image without objects);
    ``iscrowd`` (0/1 per box) marks boxes that evaluation ignores: a detection on one is
    neither a hit nor a false positive (COCO crowds, VOC difficult objects)."""
    b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    target = {"boxes": b, "labels": torch.as_tensor(labels, dtype=torch.int64).reshape(-1)}
    if iscrowd is not None:
        target["iscrowd"] = torch.as_tensor(iscrowd, dtype=torch.int64).reshape(-1)
    return target


def check_target(
    target: Any,
    num_classes: int,
    size: tuple[int, int] | None = None,
    where: str = "a target",
    warn_normalised: bool = True,
) -> None:
    """Raise ``DatasetError`` for a target the detector cannot train on: wrong format,
    degenerate boxes (zero or negative width or height), boxes outside the image (more than
    ``BORDER_TOLERANCE`` px), class ids out of range. ``size`` is the image's (H, W).
    ``warn_normalised``: warn (once) of a target whose every box lies within [0, 1] x [0, 1]
    of a larger image (the readers judge a whole set of such boxes themselves)."""
    if not isinstance(target, dict) or "boxes" not in target or "labels" not in target:
        raise DatasetError(
            f"{where} must be a dict with 'boxes' (N x 4, x1 y1 x2 y2 pixels) and 'labels' "
            f"(N class ids), got {type(target).__name__}"
            + (f" with keys {sorted(target)}" if isinstance(target, dict) else "")
        )
    boxes, labels = target["boxes"], target["labels"]
    if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[-1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise DatasetError(f"{where}: 'boxes' must be an N x 4 tensor, got {shape}")
    if not boxes.is_floating_point():
        raise DatasetError(f"{where}: 'boxes' must be floating point, got {boxes.dtype}")
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.ndim != 1:
        raise DatasetError(
            f"{where}: 'labels' must be a 1-d tensor of integer class ids, got "
            + (f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else "")
            + ("" if isinstance(labels, Tensor) else type(labels).__name__)
        )
    if len(labels) != len(boxes):
        raise DatasetError(f"{where} has {len(boxes)} boxes but {len(labels)} labels")
    if len(boxes) == 0:
        return
    faults = box_faults(boxes, size)
    if faults["non-finite"].any():
        raise DatasetError(
            f"{where} has a box with a non-finite coordinate: {_first(boxes[faults['non-finite']])}"
        )
    if faults["degenerate"].any():
        raise DatasetError(
            f"{where} has a degenerate box {_first(boxes[faults['degenerate']])} (x1 y1 x2 y2): "
            "width and height must be positive; fix or drop the annotation (boxes are x1 y1 x2 "
            "y2, not x y w h)"
        )
    if warn_normalised and size is not None and max(size) > 2 and bool((boxes[:, 2:] <= 1).all()):
        _warn_normalised(where, boxes, size)
    if faults["outside"].any():
        h, w = size  # type: ignore[misc]  (no box is outside without a size)
        raise DatasetError(
            f"{where} has a box {_first(boxes[faults['outside']])} outside the {w} x {h} "
            "(W x H) image; fix the annotation, or resize boxes together with the image"
        )
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.numel():
        raise DatasetError(
            f"{where} has class id {int(bad[0])}, outside [0, {num_classes - 1}]: the data has "
            f"more classes than task.num_classes={num_classes}, or the ids are 1-based (class "
            "ids are 0-based, background is not a class); fix the labels or num_classes"
        )


_NORMALISED_SAID: list[str] = []  # warned once per process


def _warn_normalised(where: str, boxes: Tensor, size: tuple[int, int]) -> None:
    """Warn, once per process, of a target whose every box lies within [0, 1] x [0, 1] of a
    larger image: coordinates normalised to the image's size (the readers refuse a set of
    such boxes; a batch's one image may hold one tiny box in a corner, after a flip too)."""
    if _NORMALISED_SAID:
        return
    _NORMALISED_SAID.append(where)
    h, w = size
    warnings.warn(
        f"{where}: every box lies within [0, 1] x [0, 1] of the {w} x {h} (W x H) image "
        f"(e.g. {_first(boxes)}): boxes are pixels (x1 y1 x2 y2); if these are coordinates "
        "normalised to the image's size, multiply them by its width and height",
        stacklevel=3,
    )


def box_faults(boxes: Tensor, size: tuple[int, int] | None = None) -> dict[str, Tensor]:
    """Which boxes a detector cannot train on, by fault: the one check behind ``check_target``
    and the readers' messages, which name the boxes as their files write them.

    Args:
        boxes: N x 4 float, x1 y1 x2 y2 in pixels.
        size: the image's (H, W); None: no box counts as outside.

    Returns:
        For each fault a bool tensor of N, each box under its first fault only:
        ``"non-finite"`` (a coordinate NaN or infinite), ``"degenerate"`` (zero or negative
        width or height), ``"outside"`` (more than ``BORDER_TOLERANCE`` px beyond the image).
    """
    finite = torch.isfinite(boxes).all(dim=1)
    degenerate = finite & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
    outside = torch.zeros_like(finite)
    if size is not None:
        h, w = size
        t = BORDER_TOLERANCE
        x1, y1, x2, y2 = boxes.unbind(dim=1)
        beyond = (x1 < -t) | (y1 < -t) | (x2 > w + t) | (y2 > h + t)
        outside = finite & ~degenerate & beyond
    return {"non-finite": ~finite, "degenerate": degenerate, "outside": outside}


def _first(boxes: Tensor) -> list[float]:
    return [round(float(v), 2) for v in boxes[0]]


def image_size(image: Any) -> tuple[int, int]:
    return int(image.shape[-2]), int(image.shape[-1])


def batch_images(images: Sequence[Tensor]) -> Tensor | list[Tensor]:
    """One B x C x H x W tensor when every image has the same size, else the list."""
    images = list(images)
    if images and all(x.shape == images[0].shape for x in images):
        return torch.stack(images)
    return images
