"""Checks of what a dataset or loader yields, with messages that name the structure received:
samples and batches must be images, or ``(images, targets)`` pairs.

The tasks' ``collate`` checks every sample (``plain_samples``: a 1-tuple, as
``TensorDataset(x)`` yields, is an image alone); the tasks' ``loss`` and ``predict`` check
the batch they get with an ``isinstance`` (``require_images``, ``require_targets``), which
costs nothing per iteration, for loaders batched without ``collate_fn=task.collate``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mic.core.batch import LABEL_KEYS
from mic.core.errors import DatasetError

#: what the messages ask for
PAIRS = (
    "mic takes samples that are an image alone (unlabelled target) or an (image, target) pair "
    "(source, test), batched by the task's collate (DataLoader(..., collate_fn=task.collate))"
)


def describe(obj: Any, depth: int = 1) -> str:
    """A short description of ``obj`` for messages: its type, a tensor's shape and dtype, a
    dict's keys, a tuple's or list's length and (``depth`` levels down) items."""
    if isinstance(obj, torch.Tensor):
        return f"a {tuple(obj.shape)} {str(obj.dtype).replace('torch.', '')} tensor"
    if isinstance(obj, Mapping):
        return f"a dict with keys {sorted(map(str, obj))}"
    if isinstance(obj, (tuple, list)):
        n = len(obj)
        kind = f"a {type(obj).__name__} of {n} item{'s' * (n != 1)}"
        if depth <= 0 or not n:
            return kind
        shown = ", ".join(describe(x, depth - 1) for x in obj[:4]) + (", ..." if n > 4 else "")
        return f"{kind} ({shown})"
    return f"a {type(obj).__name__}"


def _hint(obj: Any) -> str:
    if isinstance(obj, Mapping):
        return (
            "Return (image, label) from the dataset's __getitem__ (or the image alone for the "
            "unlabelled target), or turn the dicts into pairs in a collate_fn"
        )
    if isinstance(obj, (tuple, list)) and len(obj) == 1:
        return (
            "A TensorDataset(x) batched without collate_fn=task.collate gives such 1-item "
            "batches: give the DataLoader collate_fn=task.collate, which reads them as images"
        )
    if isinstance(obj, (tuple, list)) and len(obj) > 2:
        return (
            "Return (image, label) only (drop extra items such as an index), e.g. with a "
            "dataset wrapper or a collate_fn"
        )
    return "Give the DataLoader collate_fn=task.collate"


def plain_samples(samples: list[Any]) -> list[Any]:
    """``samples`` with 1-tuples (``TensorDataset(x)``'s samples) replaced by their image.

    Args:
        samples: what a DataLoader hands its ``collate_fn``.

    Returns:
        The samples: images, or ``(image, target)`` pairs.

    Raises:
        DatasetError: a sample is a dict, or a tuple or list of more than 2 items.
    """
    out = []
    for sample in samples:
        if isinstance(sample, (tuple, list)) and len(sample) == 1:
            sample = sample[0]
        elif isinstance(sample, Mapping) or (isinstance(sample, (tuple, list)) and len(sample) > 2):
            raise DatasetError(
                f"the dataset yields samples that are {describe(sample)}, not an image or an "
                f"(image, target) pair; {PAIRS}. {_hint(sample)}"
            )
        out.append(sample)
    return out


def require_images(images: Any, allow_list: bool = False) -> None:
    """Raise ``DatasetError`` when ``images`` is a whole batch that is not an image batch: a
    dict, or a tuple or list (with ``allow_list``, a list of C x H x W image tensors of
    different sizes is a batch). ``isinstance`` checks: no cost per iteration.

    Args:
        images: the images part of a batch (``split_sample``), as a task's ``loss`` or
            ``predict`` gets it.
        allow_list: whether a list of C x H x W tensors is a batch (detection).

    Raises:
        DatasetError: a dict, or a tuple or list that is not a list of C x H x W images (the
            message names the structure received); images channels last (H x W x C).
    """
    if isinstance(images, torch.Tensor) or not isinstance(images, (Mapping, list, tuple)):
        _refuse_channels_last(images)
        return
    if (
        allow_list
        and isinstance(images, (list, tuple))
        and all(isinstance(x, torch.Tensor) and x.ndim == 3 for x in images)
    ):
        for x in images:
            _refuse_channels_last(x)
        return
    raise DatasetError(
        f"a batch reached the task as {describe(images)} where it takes images (a B x C x H "
        f"x W float tensor): a loader yields batches that are not images or (images, "
        f"targets) pairs; {PAIRS}. {_hint(images)}"
    )


def _refuse_channels_last(images: Any) -> None:
    """Raise ``DatasetError`` for an image batch (B x H x W x C) or image (H x W x C) whose
    last dimension holds 1 or 3 channels where the channel dimension holds neither: an array
    laid out as image files and NumPy hold it, which convolutions would read as H channels."""
    if not isinstance(images, torch.Tensor) or images.ndim not in (3, 4):
        return
    channels = images.shape[-3]
    if images.shape[-1] in (1, 3) and channels not in (1, 3) and images.shape[-2] > 3:
        raise DatasetError(
            f"the images come as {'x'.join(str(n) for n in images.shape)} tensors, channels "
            "last (H x W x C), but mic's tasks take channels first (C x H x W): convert each "
            "image with torchvision.transforms.ToTensor() (from a PIL image or an H x W x C "
            "array), or permute a batch with images.permute(0, 3, 1, 2)"
        )


def require_targets(targets: Any, images: Any = None) -> None:
    """Raise ``DatasetError`` when a supervised loss gets no targets: the source loader
    yields images alone (an unlabelled dataset).

    Args:
        targets: the targets part of a batch (``split_sample``), as a task's ``loss`` gets it.
        images: its images part, for the message (a dict of images names its keys) and
            the count (a tensor's first dimension, a list's length).

    Raises:
        DatasetError: ``targets`` is None, or holds another count than ``images`` (torch's
            "Expected input batch_size (4) to match target batch_size (3)").
    """
    counts = [
        len(x) if isinstance(x, (list, tuple)) or (isinstance(x, torch.Tensor) and x.ndim) else None
        for x in (images, targets)
    ]
    if None not in counts and counts[0] != counts[1]:
        raise DatasetError(
            f"the task's loss got {counts[0]} images but {counts[1]} targets: give one target "
            "per image (a label, a label map, an image's boxes), in the images' order"
        )
    if targets is None:
        keys = sorted(map(str, images)) if isinstance(images, Mapping) else None
        dicts = (  # {"image": x, "depth": y}: one image of two inputs, no label
            f"; its samples are dicts with keys {keys}, read as one image of several inputs "
            f"(a dict holding a key among {sorted(LABEL_KEYS)} is refused as a labelled one)"
            if keys
            else ""
        )
        raise DatasetError(
            "the task's loss got images without targets: the source loader yields images "
            f"alone (an unlabelled dataset such as TensorDataset(x) or labelled=False){dicts}, "
            "but the source must be labelled; give it (image, label) samples, e.g. "
            "TensorDataset(x, y), batched with collate_fn=task.collate"
        )


def labelled_batch(batch: Any, where: str = "the test loader") -> tuple[Any, Any]:
    """``(images, targets)`` of a batch that must be labelled (evaluation).

    Args:
        batch: one batch of the loader.
        where: how the message names the loader.

    Returns:
        ``(images, targets)``.

    Raises:
        DatasetError: the batch is not an ``(images, targets)`` pair (the message names the
            structure received), or its targets are None (an unlabelled set).
    """
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        if batch[1] is not None:
            return batch[0], batch[1]
        structure = "(images, None) pairs: unlabelled images"
    elif isinstance(batch, torch.Tensor):
        structure = "images alone (a tensor): the set is unlabelled"
    else:
        raise DatasetError(
            f"evaluation needs labelled batches, (images, targets) pairs, but {where} yields "
            f"{describe(batch)}; {PAIRS}. {_hint(batch)}"
        )
    raise DatasetError(
        f"evaluation needs labelled batches, (images, targets) pairs, but {where} yields "
        f"{structure}; give it the labelled target test split (e.g. TensorDataset(x, y) or "
        "labelled=True), batched with collate_fn=task.collate"
    )


def require_float32_images(images: Any) -> None:
    """Raise ``DatasetError`` for float64 images (a tensor, or a list of them), which the
    data check before training refuses too (docs/own_dataset.md): a float32 model cannot
    take them.

    Args:
        images: a batch's images, as a task's ``collate`` made them.

    Raises:
        DatasetError: float64 images; the message says to convert them to float32.
    """
    first = images[0] if isinstance(images, (list, tuple)) and images else images
    if isinstance(first, torch.Tensor) and first.dtype == torch.float64:
        raise DatasetError(
            "the dataset yields torch.float64 images, but models take float32 images: "
            "convert them in the dataset's transform or before wrapping them (x.float(), "
            "torch.from_numpy(array).float()), as the data check before training asks"
        )


def with_int64_labels(batch: Any) -> Any:
    """A batch of ``Task.collate`` (images, or ``(images, labels)``) with float32 images
    required and integer labels of any width (int32, uint8 label maps) as int64, as the
    losses take them.

    Args:
        batch: what the base ``Task.collate`` returned.

    Returns:
        The images, or ``(images, labels)`` with int64 labels.

    Raises:
        DatasetError: float64 images (``require_float32_images``).
    """
    images, labels = batch if isinstance(batch, tuple) else (batch, None)
    require_float32_images(images)
    return images if labels is None else (images, labels.long())
