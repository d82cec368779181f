"""Sampling for exact resume: a sampler whose position can be saved and restored, datasets that
draw each sample's randomness from a seed paired with its index, and the base of dataset
wrappers."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from mic.core.errors import ConfigError, MicError, is_whole

#: the largest sampler seed: each epoch's permutation is seeded by seed x 1,000,003 + epoch, a
#: 64-bit number (torch.Generator.manual_seed)
_SEED_LIMIT = 2**63 // 1_000_003 - 2**20


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


class ResumableSampler(Sampler[int]):
    """Shuffles each epoch with a permutation fixed by ``(seed, epoch)``, deals the indices to
    ``world_size`` ranks, and can start an epoch part-way (``set_start``), so that a run
    resumed from a checkpoint continues with exactly the samples it would have seen.

    Every rank gets ``len(dataset) // world_size`` indices per epoch (the remainder is left
    out, a different part every epoch when shuffling), so ranks always agree on the number of
    batches.

    With ``with_seeds``, it yields ``(index, seed)`` pairs instead of indices, the seed a
    function of ``(seed, epoch, position)``; wrap the dataset in ``SeededDataset`` and every
    sample's random transforms (crops, flips, rare class draws) are drawn from that seed, the
    same whichever process or worker loads it and whenever.

    Args:
        length: the dataset's length.
        shuffle: a new permutation every epoch; False: dataset order.
        seed: fixes the permutations (and the per-sample seeds).
        rank, world_size: this process's share under data parallelism.
        with_seeds: yield ``(index, per-sample seed)`` pairs for a ``SeededDataset``.

    Raises:
        ConfigError: a rank outside [0, world_size); a length, rank or world size that is no
            whole number (>= 0, >= 0, >= 1), a seed below 0 or so large that the 64-bit
            seed of an epoch's permutation (seed x 1,000,003 + epoch) overflows.
    """

    def __init__(
        self,
        length: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        with_seeds: bool = False,
    ) -> None:
        for key, value, least in (
            ("length", length, 0),
            ("rank", rank, 0),
            ("world_size", world_size, 1),
            ("seed", seed, 0),
        ):  # (2.5 images read as 2, a seed of 1.5 as 1; "0" failed in '<=')
            if not is_whole(value, least) or (key == "seed" and value > _SEED_LIMIT):
                at_least = f"a whole number >= {least}"
                at_least += f" and <= {_SEED_LIMIT}" if key == "seed" else ""
                raise ConfigError(f"ResumableSampler's {key} must be {at_least}, got {value!r}")
        length, rank, world_size = int(length), int(rank), int(world_size)
        if not 0 <= rank < world_size:
            raise ConfigError(f"sampler rank {rank} is outside [0, world_size={world_size})")
        self.length = int(length)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank, self.world_size = rank, world_size
        self.with_seeds = with_seeds
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, index: int) -> None:
        """Skip the first ``index`` of this rank's indices in the current epoch (once)."""
        self.start = int(index)

    def indices(self) -> list[int]:
        """This rank's indices of the current epoch, from the beginning."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        usable = self.length // self.world_size * self.world_size
        return order[self.rank : usable : self.world_size]

    def __iter__(self) -> Iterator[Any]:
        start, self.start = self.start, 0
        indices = self.indices()[start:]
        if not self.with_seeds:
            return iter(indices)
        base = (self.seed * 1_000_003 + self.epoch) * 1_000_033
        return iter(
            (i, (base + (start + n) * self.world_size + self.rank) % 2**63)
            for n, i in enumerate(indices)
        )

    def __len__(self) -> int:
        return max(0, self.length // self.world_size - self.start)


#: the global random generators a dataset's ``__getitem__`` may draw from
GENERATORS = ("torch", "numpy", "python")


class SeededDataset(DatasetWrapper):
    """Loads item ``index`` of ``dataset`` with the global random generators it draws from
    seeded by the seed paired with it (``ResumableSampler(with_seeds=True)``); other
    attributes are the dataset's.

    Which generators: ``generators``; else the dataset's ``random_sources`` attribute (a
    sequence of ``GENERATORS`` names, passed on by ``DatasetWrapper``s; mic's bundled
    benchmarks declare theirs: the digits draw nothing, the street scenes torch's); else all
    three: torch's CPU generator (torchvision's transforms, mic's segmentation transforms),
    NumPy's and Python's (e.g. albumentations; mic's detection readers flip with Python's).

    torch's generator is restored afterwards (it also drives the model's initialisation and
    dropout in the main process). NumPy's and Python's are left seeded by the last sample
    loaded (restoring them costs more than loading a small image); they stay a function of
    the position in the sample sequence, so runs remain repeatable. Seeding costs about 3 us
    per sample for torch's generator (saved and restored), 3 us for NumPy's and 7 us for
    Python's; ``benchmarks/loading.py`` compares whole batches with a plain DataLoader.

    Raises:
        ConfigError: an unknown generator name.
    """

    def __init__(self, dataset: Any, generators: Sequence[str] | None = None) -> None:
        super().__init__(dataset)
        if generators is None:
            generators = getattr(dataset, "random_sources", GENERATORS)
        generators = [generators] if isinstance(generators, str) else generators  # (one name)
        unknown = sorted(set(generators) - set(GENERATORS))
        if unknown:
            raise ConfigError(
                f"{type(dataset).__name__}: random_sources names {unknown}; a dataset may draw "
                f"from {', '.join(GENERATORS)} (the global generators that SeededDataset seeds)"
            )
        self.generators = tuple(g for g in GENERATORS if g in generators)
        self._torch, self._numpy, self._python = (g in self.generators for g in GENERATORS)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        try:
            return self._load(*key)
        except Exception as e:  # a dataset's own fault keeps its traceback, with the sample
            if hasattr(e, "add_note") and not isinstance(e, MicError):
                name = type(self.dataset).__name__
                e.add_note(f"(raised by {name} loading sample {key[0]}: dataset[{key[0]}] again)")
            raise

    def _load(self, index: int, seed: int) -> Any:
        if self._python:
            random.seed(seed)
        if self._numpy:
            np.random.seed(seed % 2**32)
        if not self._torch:
            return self.dataset[index]
        # the CPU generator alone, saved and restored by hand: torch.random.fork_rng would also
        # look for accelerators (and torch.manual_seed queue every CUDA device's seeding)
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            generator.set_state(state)
