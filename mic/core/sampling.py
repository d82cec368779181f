"""A sampler whose position can be saved and restored, so a resumed run sees the same batches."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from mic.core.errors import ConfigError


class ResumableSampler(Sampler[int]):
    """Shuffles each epoch with a permutation fixed by ``(seed, epoch)``, deals the indices to
    ``world_size`` ranks, and can start an epoch part-way (``set_start``), so that a run
    resumed from a checkpoint continues with exactly the samples it would have seen.

    Every rank gets ``len(dataset) // world_size`` indices per epoch (the remainder is left
    out, a different part every epoch when shuffling), so ranks always agree on the number of
    batches.

    Args:
        length: the dataset's length.
        shuffle: a new permutation every epoch; False: dataset order.
        seed: fixes the permutations.
        rank, world_size: this process's share under data parallelism.
    """

    def __init__(
        self, length: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if not 0 <= rank < world_size:
            raise ConfigError(f"sampler rank {rank} is outside [0, world_size={world_size})")
        self.length = int(length)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank, self.world_size = rank, world_size
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

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        return iter(self.indices()[start:])

    def __len__(self) -> int:
        return max(0, self.length // self.world_size - self.start)
