"""What the loss terms of one iteration share: the batches, the models, the teacher's
pseudo-labels, forward passes that several terms read, and each term's random stream."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from mic.core.batch import split_sample
from mic.core.errors import ConfigError
from mic.core.task import PseudoLabels, Task
from mic.core.teacher import Teacher


def stream_seed(*key: object) -> int:
    """A 63-bit seed derived from ``key`` (e.g. seed, term name, iteration), the same on every
    process and in every run."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class RandomStream:
    """The random draws of one loss term in one iteration (a masker's blocks, an augmentation's
    coins, ClassMix's classes), keyed to each sample's place in the global batch.

    The loop seeds each term's stream from (seed, term name, iteration): adding or removing a
    term leaves every other term's draws unchanged (paired comparisons), a resumed run draws
    what the uninterrupted one drew, and a step that runs the terms twice (SAM) draws the same
    twice. ``rand(n, ...)`` draws for the whole batch of the optimiser step (n x world_size x
    micro_batches samples) and returns this process's n rows, in the order in which
    ``mic.training.ResumableSampler`` deals samples to processes: N processes with B / N
    samples each, or A accumulated micro-batches of B / A, draw what one process draws for B.

    Args:
        seed: the stream's seed (see ``stream_seed``).
        rank, world_size: this process's place among the data-parallel processes.
        micro, micro_batches: this micro-batch's place among the step's micro-batches.
    """

    def __init__(
        self, seed: int, rank: int = 0, world_size: int = 1, micro: int = 0, micro_batches: int = 1
    ) -> None:
        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        self.micro, self.micro_batches = micro, micro_batches
        self._generators: dict[torch.device, torch.Generator] = {}

    def rand(self, n: int, *shape: int, device: torch.device | str | None = None) -> Tensor:
        """Uniform [0, 1) float32 draws of shape (n, *shape) on ``device``, one row per sample
        of this micro-batch (every process and micro-batch must ask for the same n)."""
        device = torch.device(device or "cpu")
        if device not in self._generators:
            self._generators[device] = torch.Generator(device).manual_seed(self.seed)
        everyone = n * self.world_size * self.micro_batches
        draws = torch.rand(everyone, *shape, generator=self._generators[device], device=device)
        first = self.micro * n * self.world_size + self.rank
        return draws[first : first + n * self.world_size : self.world_size]

    def for_sample(self, i: int, n: int) -> RandomStream:
        """The stream of sample ``i`` of this micro-batch's ``n`` alone (for images of
        different sizes, transformed one at a time)."""
        index = (self.micro * n + i) * self.world_size + self.rank
        return RandomStream(stream_seed(self.seed, index))


#: what maskers and augmentations draw from: a term's stream, a torch generator, or None
#: (torch's global generator, e.g. a direct call in research code)
Random = RandomStream | torch.Generator | None


def uniform(rng: Random, n: int, *shape: int, device: torch.device | str) -> Tensor:
    """(n, *shape) uniform [0, 1) float32 draws of ``rng`` on ``device``."""
    if isinstance(rng, RandomStream):
        return rng.rand(n, *shape, device=device)
    return torch.rand(n, *shape, generator=rng, device=device)


def per_sample(rng: Random, n: int) -> list[Random]:
    """One stream per sample of a batch of ``n`` transformed one at a time."""
    if isinstance(rng, RandomStream):
        return [rng.for_sample(i, n) for i in range(n)]
    return [rng] * n


class SharedForward:
    """A forward pass of the student that several loss terms read, computed once per iteration.

    Decorate a function ``ctx -> outputs``; calling the decorated object with an
    ``IterationContext`` runs the function the first time in that iteration and returns the
    same outputs after. Terms that read it set ``shared_forward`` to it: the loop then runs
    them one after another, at the place of the first of them, and back-propagates the sum of
    their losses once, so the pass's activations are freed after one backward.

    Example::

        @SharedForward
        def joint_forward(ctx):  # one student pass over source and target
            return ctx.student(torch.cat([ctx.source_images, ctx.target_images]))
    """

    def __init__(self, compute: Callable[[IterationContext], Any]) -> None:
        self.compute = compute
        functools.update_wrapper(self, compute)

    def __call__(self, ctx: IterationContext) -> Any:
        return ctx.shared(self)


class IterationContext:
    """One iteration's (one micro-batch's) inputs, as every loss term sees them.

    The teacher predicts on the target at most once, the first time a term reads
    ``pseudo_labels``; later terms reuse that prediction. ``rng`` is the random stream of the
    term that is running (the loop sets ``term`` before calling each).

    Args:
        step: the iteration (0-based).
        task: the Task every model is trained and scored through.
        student: the model being adapted (possibly wrapped for data parallelism).
        source: the labelled source batch ``(images, targets)``, on the device.
        target: the target batch (images, or ``(images, anything)``: labels are not read).
        teacher: the teacher (None: no term may read ``pseudo_labels``).
        adaptation_start: the first iteration of terms that use target data.
        seed: the run's seed, from which every term's stream is derived.
        rank, world_size, micro, micro_batches: this micro-batch's place in the step's global
            batch (see ``RandomStream``).
        mean: the mean of a tensor over the data-parallel processes (None: one process), for
            statistics of the whole batch such as the quality weight.

    Attributes:
        adapting: ``step >= adaptation_start``; a term active before that (one with
            ``uses_target = False``) may add target-dependent parts once it is True.
    """

    def __init__(
        self,
        step: int,
        task: Task,
        student: nn.Module,
        source: Any,
        target: Any,
        teacher: Teacher | None = None,
        adaptation_start: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        micro: int = 0,
        micro_batches: int = 1,
        mean: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self.step = step
        self.mean = mean
        self.task = task
        self.student = student
        self.teacher = teacher
        self.adaptation_start = adaptation_start
        self.adapting = step >= adaptation_start
        self.source_images, self.source_targets = split_sample(source)
        self.target_images, _ = split_sample(target)
        self.term = ""
        self._layout = (seed, rank, world_size, micro, micro_batches)
        self._pseudo: PseudoLabels | None = None
        self._shared: dict[SharedForward, Any] = {}
        self._streams: dict[str, RandomStream] = {}

    @property
    def rng(self) -> RandomStream:
        """The random stream of the running term, seeded from (seed, term, iteration)."""
        if self.term not in self._streams:
            seed, *layout = self._layout
            self._streams[self.term] = RandomStream(
                stream_seed(seed, self.term, self.step), *layout
            )
        return self._streams[self.term]

    @property
    def pseudo_labels(self) -> PseudoLabels:
        """The teacher's pseudo-labels of the target batch (predicted once, then reused).

        Raises:
            ConfigError: there is no teacher.
        """
        if self._pseudo is None:
            if self.teacher is None:
                raise ConfigError("a loss term asked for pseudo-labels but the loop has no teacher")
            prediction = self.teacher.predict(self.task, self.target_images)
            self._pseudo = self.task.pseudo_label(prediction)
        return self._pseudo

    def shared(self, forward: SharedForward) -> Any:
        """The outputs of ``forward`` in this iteration (computed on the first call)."""
        if forward not in self._shared:
            self._shared[forward] = forward.compute(self)
        return self._shared[forward]

    def restart(self) -> None:
        """Start the terms over (for a step strategy that runs them again at other weights):
        the shared forward passes are dropped and the random streams rewound; the
        pseudo-labels are kept."""
        self._shared, self._streams = {}, {}
