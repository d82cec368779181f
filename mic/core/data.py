"""Batches and iterators shared by every task."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import default_collate

from mic.core.errors import DatasetError


def split_sample(sample: Any) -> tuple[Any, Any]:
    """A sample (or batch) is an image or an ``(image, target)`` pair."""
    if isinstance(sample, (tuple, list)) and len(sample) == 2:
        return sample[0], sample[1]
    return sample, None


def collate_pairs(
    samples: list[Any],
    batch_images: Callable[[list[Any]], Any] = default_collate,
    batch_targets: Callable[[list[Any]], Any] = default_collate,
) -> tuple[Any, Any]:
    """Collate images and targets separately (each by its own function); targets are None for
    unlabelled data."""
    pairs = [split_sample(s) for s in samples]
    images = batch_images([p[0] for p in pairs])
    targets = [p[1] for p in pairs]
    if all(t is None for t in targets):
        return images, None
    if any(t is None for t in targets):
        raise DatasetError(
            "a batch mixes labelled and unlabelled samples; a dataset must be one or the other"
        )
    return images, batch_targets(targets)


def select_images(batch: Any, keep: Sequence[bool]) -> Any:
    """The images (or per-image labels) of ``batch`` whose ``keep`` flag is true: rows of a
    tensor, items of a list."""
    if isinstance(batch, torch.Tensor):
        return batch[torch.tensor(list(keep), dtype=torch.bool, device=batch.device)]
    return [item for item, k in zip(batch, keep, strict=True) if k]


def move_to(obj: Any, device: torch.device | str, non_blocking: bool = True) -> Any:
    """Move every tensor inside nested tuples, lists and dicts to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, Mapping):
        return type(obj)({k: move_to(v, device, non_blocking) for k, v in obj.items()})
    if isinstance(obj, tuple):
        return tuple(move_to(v, device, non_blocking) for v in obj)
    if isinstance(obj, list):
        return [move_to(v, device, non_blocking) for v in obj]
    return obj


class DatasetWrapper:
    """A dataset that changes how items of ``self.dataset`` are drawn or loaded; its length
    and every other attribute (``num_classes``, ``classes``, ``labelled``...) are the wrapped
    dataset's."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


class Forever(Iterator[Any]):
    """Cycle over a data loader without end, one epoch after another, knowing its position.

    At each epoch start it calls ``sampler.set_epoch(epoch)`` when the sampler has it, and
    re-seeds the loader's generator from ``(its initial seed, epoch)`` so that the seeds of
    worker processes do not depend on when the epoch started. ``state_dict`` holds the epoch
    and the number of batches consumed in it; after ``load_state_dict`` the next batch is the
    one that would have come next (the sampler starts part-way when it has ``set_start``, as
    ``ResumableSampler`` does; otherwise the consumed batches are drawn again and dropped).
    Raises a clear error for an empty loader.
    """

    def __init__(self, loader: Iterable[Any], name: str = "data") -> None:
        self.loader = loader
        self.name = name
        self.epoch = 0
        self.batches = 0
        generator = getattr(loader, "generator", None)
        self._seed = generator.initial_seed() if isinstance(generator, torch.Generator) else None
        self._it: Iterator[Any] | None = None

    def __next__(self) -> Any:
        if self._it is None:
            self._start_epoch()
        try:
            batch = next(self._it)  # type: ignore[arg-type]
        except StopIteration:
            self.epoch, self.batches = self.epoch + 1, 0
            self._start_epoch()
            try:
                batch = next(self._it)  # type: ignore[arg-type]
            except StopIteration:
                raise DatasetError(
                    f"the {self.name} loader yields no batch: the dataset is empty, or smaller "
                    "than one batch with drop_last=True; add data or lower the batch size"
                ) from None
        self.batches += 1
        return batch

    def _start_epoch(self) -> None:
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        if self._seed is not None:
            self.loader.generator.manual_seed(self._seed + 7919 * self.epoch)  # type: ignore[attr-defined]
        skip = self.batches
        batch_size = getattr(self.loader, "batch_size", None)
        if skip and hasattr(sampler, "set_start") and batch_size:
            sampler.set_start(skip * batch_size)
            skip = 0
        self._it = iter(self.loader)
        for _ in range(skip):
            next(self._it)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches": self.batches}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch, self.batches = int(state["epoch"]), int(state["batches"])
        self._it = None


def dataset_classes(dataset: Any) -> int | None:
    """The number of classes a dataset declares (``num_classes`` or ``classes``), if any."""
    n = getattr(dataset, "num_classes", None)
    if n is None and isinstance(getattr(dataset, "classes", None), Sequence):
        n = len(dataset.classes)
    return n


def check_num_classes(num_classes: int, datasets: Mapping[str, Any]) -> None:
    """Raise when a dataset declares a class count different from the task's."""
    declared = {name: dataset_classes(ds) for name, ds in datasets.items() if ds is not None}
    wrong = {name: n for name, n in declared.items() if n is not None and n != num_classes}
    if wrong:
        listing = ", ".join(f"{name} has {n}" for name, n in declared.items() if n is not None)
        raise DatasetError(
            f"class counts disagree: the task/model predicts {num_classes} classes but {listing}. "
            "Source and target must share one label space: fix the datasets or set "
            "dataset.num_classes to match."
        )
