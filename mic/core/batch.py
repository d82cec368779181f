"""What a batch is to the loop: images or ``(images, targets)``, on a device, drawn without end."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import default_collate

from mic.core import checks
from mic.core.errors import DatasetError

#: keys that mark a dict sample as labelled (an (image, target) pair in a dict), not an image
LABEL_KEYS = frozenset({"label", "labels", "target", "targets", "mask", "boxes", "y"})


def split_sample(sample: Any) -> tuple[Any, Any]:
    """``(images, targets)`` of a sample or batch (a non-pair is images, targets None)."""
    if isinstance(sample, (tuple, list)) and len(sample) == 2:
        return sample[0], sample[1]
    return sample, None


def collate_pairs(
    samples: list[Any],
    batch_images: Callable[[list[Any]], Any] = default_collate,
    batch_targets: Callable[[list[Any]], Any] = default_collate,
) -> tuple[Any, Any]:
    """``(images, targets)``, each batched by its function; targets None when no sample has one
    (a 1-tuple, ``TensorDataset(x)``'s sample, is an image).

    Raises:
        DatasetError: images (or targets) of different sizes, images that are no tensors (PIL
            images: a transform without ``ToTensor``), or labelled and unlabelled samples mixed.
    """
    alone = lambda s: s[0] if isinstance(s, (tuple, list)) and len(s) == 1 else s  # noqa: E731
    pairs = [split_sample(alone(s)) for s in samples]
    images = _stacked(batch_images, [p[0] for p in pairs], "images")
    targets = [p[1] for p in pairs]
    if all(t is None for t in targets):
        return images, None
    if any(t is None for t in targets):
        raise DatasetError(
            "a batch mixes labelled and unlabelled samples; a dataset must be one or the other"
        )
    return images, _stacked(batch_targets, targets, "targets")


def _stacked(batch: Callable[[list[Any]], Any], items: list[Any], what: str) -> Any:
    try:
        return batch(items)
    except (TypeError, RuntimeError) as e:  # (a PIL image, images of different sizes)
        said = checks.batching_error(items, what, e)
        if said is None:
            raise
        raise said from None


def select_images(batch: Any, keep: Sequence[bool]) -> Any:
    """The rows (tensor) or items (list) of ``batch`` whose ``keep`` flag is true; of a dict,
    those of each value."""
    if isinstance(batch, torch.Tensor):
        return batch[torch.tensor(list(keep), dtype=torch.bool, device=batch.device)]
    if isinstance(batch, Mapping):
        return type(batch)({k: select_images(v, keep) for k, v in batch.items()})
    return [item for item, k in zip(batch, keep, strict=True) if k]


def count_images(batch: Any) -> int:
    """The number of images of a batch: a tensor's rows, a list's items, a dict's first value's."""
    return count_images(next(iter(batch.values()))) if isinstance(batch, Mapping) else len(batch)


def move_to(obj: Any, device: torch.device | str, non_blocking: bool = True) -> Any:
    """Every tensor inside nested tuples, lists and dicts, moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, Mapping):
        return type(obj)({k: move_to(v, device, non_blocking) for k, v in obj.items()})
    if isinstance(obj, tuple):
        return tuple(move_to(v, device, non_blocking) for v in obj)
    if isinstance(obj, list):
        return [move_to(v, device, non_blocking) for v in obj]
    return obj


class EndlessLoader(Iterator[Any]):
    """A data loader cycled epoch after epoch, knowing its position for exact resume.

    Each epoch calls ``sampler.set_epoch(epoch)`` if present and re-seeds the loader's
    generator from (initial seed, epoch), so worker seeds do not depend on when it started.
    ``state_dict`` is the epoch and the batches and samples drawn in it; after a resume the next
    batch starts at the next sample (through ``sampler.set_start``, as in
    ``mic.training.ResumableSampler``; otherwise by drawing and dropping batches).

    Args:
        loader: any iterable of batches (a ``DataLoader``, a list of batches).
        name: how errors call it (``"source"``, ``"target"``).

    Raises:
        ConfigError: a loader that is no iterable (None).
        DatasetError: a one-pass iterator or a map-style ``Dataset`` (``checks.check_loader``);
            (from ``next``) the loader yields no batch at all.
    """

    def __init__(self, loader: Iterable[Any], name: str = "data") -> None:
        checks.check_loader(loader, f"the {name} loader", "the loop draws from it without end")
        if not isinstance(loader, Iterable):  # (None too: even a source-only run draws targets)
            raise checks.not_iterable(loader, f"the {name} loader")
        self.loader, self.name = loader, name
        self.epoch = self.batches = self.samples = 0
        generator = getattr(loader, "generator", None)
        self._seed = generator.initial_seed() if isinstance(generator, torch.Generator) else None
        self._it: Iterator[Any] | None = None

    def __next__(self) -> Any:
        try:
            return self._next()
        except DatasetError as e:
            checks.note_loader(e, f"the {self.name} loader")
            raise

    def _next(self) -> Any:
        if self._it is None:
            self._start_epoch()
        try:
            batch = next(self._it)  # type: ignore[arg-type]
        except StopIteration:
            self.epoch, self.batches, self.samples = self.epoch + 1, 0, 0
            self._start_epoch()
            try:
                batch = next(self._it)  # type: ignore[arg-type]
            except StopIteration:
                raise DatasetError(
                    f"the {self.name} loader yields no batch: the dataset is empty, or smaller "
                    "than one batch with drop_last=True; add data or lower the batch size"
                ) from None
        self.batches += 1
        self.samples += getattr(self.loader, "batch_size", None) or 0
        return batch

    def _start_epoch(self) -> None:
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        if self._seed is not None:
            self.loader.generator.manual_seed(self._seed + 7919 * self.epoch)  # type: ignore[attr-defined]
        skip = self.batches
        if skip and self.samples and hasattr(sampler, "set_start"):
            sampler.set_start(self.samples)
            skip = 0
        self._it = iter(self.loader)
        for _ in range(skip):
            next(self._it)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches": self.batches, "samples": self.samples}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch, self.batches = int(state["epoch"]), int(state["batches"])
        self.samples = int(state.get("samples", 0))
        self._it = None
