"""Random streams: each loss term's (and its masker's) draws, derived from (seed, term,
iteration) and keyed to each sample's place in the optimiser step's global batch, so that
adding or removing a term leaves every other term's draws as they were (paired comparisons)."""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from mic.core import checks
from mic.core.errors import ConfigError


def stream_seed(*key: object) -> int:
    """A 63-bit seed derived from ``key`` (e.g. seed, term, iteration), the same everywhere."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class RandomStream:
    """The random draws of one loss term in one iteration (mask blocks, augmentation coins,
    ClassMix classes), keyed to each sample's place in the optimiser step's global batch.

    Seeded from (seed, term, iteration), a term's draws do not change when other terms are
    added or removed (paired comparisons), after a resume, or when a step runs the terms twice
    (SAM). N processes with B / N samples, or A micro-batches of B / A, draw what one process
    draws for B (in ``mic.training.ResumableSampler``'s order of dealing samples).

    Args:
        seed: the stream's seed (``stream_seed``).
        rank, world_size: this process's place among the data-parallel processes.
        micro, micro_batches: this micro-batch's place among the step's micro-batches.

    Raises:
        ConfigError: a seed outside [-2**63, 2**64) (torch's generators take no other), a rank
            or micro-batch outside [0, world_size) or [0, micro_batches).
    """

    def __init__(
        self, seed: int, rank: int = 0, world_size: int = 1, micro: int = 0, micro_batches: int = 1
    ) -> None:
        checks.check_stream(seed, rank, world_size, micro, micro_batches)
        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        self.micro, self.micro_batches = micro, micro_batches
        self._generators: dict[torch.device, torch.Generator] = {}
        self._parts: dict[str, RandomStream] = {}
        self._sample_calls: dict[tuple[int, int], int] = {}  # (i, n) -> for_sample's calls

    def rand(self, n: int, *shape: int, device: torch.device | str | None = None) -> Tensor:
        """(n, *shape) uniform [0, 1) float32 draws on ``device``, one row per sample of this
        micro-batch (every process and micro-batch must ask for the same n)."""
        device = torch.device(device if device is not None else "cpu")
        if device not in self._generators:
            self._generators[device] = torch.Generator(device).manual_seed(self.seed)
        everyone = n * self.world_size * self.micro_batches
        draws = torch.rand(everyone, *shape, generator=self._generators[device], device=device)
        first = self.micro * n * self.world_size + self.rank
        return draws[first : first + n * self.world_size : self.world_size]

    def substream(self, name: str) -> RandomStream:
        """The stream (a plain ``RandomStream``) of one part of this stream's draws (e.g. a
        masker's blocks), independent of the others: a change in the draws of one part moves
        no other's. The same object for the same name: its draws go on from call to call."""
        if not isinstance(name, str):
            raise ConfigError(f"RandomStream.substream takes a name (text), got {name!r}")
        if name not in self._parts:
            layout = (self.rank, self.world_size, self.micro, self.micro_batches)
            self._parts[name] = RandomStream(stream_seed(self.seed, name), *layout)
        return self._parts[name]

    def for_sample(self, i: int, n: int) -> RandomStream:
        """The stream of sample ``i`` of ``n`` alone (images transformed one at a time); a
        second call for the same sample gives the next one, as a second ``rand`` call draws
        anew (two masked views of a list of images are two views)."""
        index = (self.micro * n + i) * self.world_size + self.rank
        calls = self._sample_calls[i, n] = self._sample_calls.get((i, n), 0) + 1
        key = (self.seed, index) if calls == 1 else (self.seed, index, calls)
        return RandomStream(stream_seed(*key))


#: what maskers and augmentations draw from: a stream, a generator, or None (torch's global one)
Random = RandomStream | torch.Generator | None


def uniform(rng: Random, n: int, *shape: int, device: torch.device | str) -> Tensor:
    """(n, *shape) uniform [0, 1) float32 draws of ``rng`` on ``device``."""
    if isinstance(rng, RandomStream):
        return rng.rand(n, *shape, device=device)
    if not (rng is None or isinstance(rng, torch.Generator)):
        raise ConfigError(f"rng must be a RandomStream, torch.Generator or None, got {rng!r}")
    return torch.rand(n, *shape, generator=rng, device=device)


def per_sample(rng: Random, n: int) -> list[Random]:
    """One stream per sample of a batch of ``n`` transformed one at a time."""
    if isinstance(rng, RandomStream):
        return [rng.for_sample(i, n) for i in range(n)]
    return [rng] * n
