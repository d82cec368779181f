"""What the loss terms of one iteration share: batches, models, pseudo-labels, shared forward
passes and each term's random stream (``mic.core.streams``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from mic.core import checks
from mic.core.batch import split_sample
from mic.core.errors import ConfigError

# (Random, per_sample and uniform importable from here too, as before mic.core.streams)
from mic.core.streams import Random, RandomStream, per_sample, stream_seed, uniform  # noqa: F401
from mic.core.task import PseudoLabels, Task
from mic.core.teacher import Teacher
from mic.core.weighting import PseudoLabelWeighting


def versions_of(obj: Any) -> list[tuple[Tensor, int]]:
    """Every tensor in ``obj`` (nested in PseudoLabels' fields, lists, tuples and dicts) with
    its in-place change counter."""
    if isinstance(obj, Tensor):
        return [] if obj.is_inference() else [(obj, obj._version)]
    if isinstance(obj, PseudoLabels):
        obj = [obj.labels, obj.confidence, obj.valid, obj.keep]
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    return [v for item in items for v in versions_of(item)]


def changed_since(before: list[tuple[Tensor, int]], obj: Any) -> bool:
    """Whether a tensor of ``obj`` changed in place or was replaced since ``versions_of``."""
    after = versions_of(obj)
    return len(after) != len(before) or any(
        x is not y or u != v for (x, u), (y, v) in zip(before, after)
    )


class SharedForward:
    """A forward pass ``ctx -> outputs`` that several loss terms read, computed once per
    iteration (a decorator). Terms that read it name it as ``shared_forward``: the loop runs
    them together and back-propagates their summed losses once.

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
    """One micro-batch of one iteration, as every loss term sees it.

    Args:
        step: the iteration (0-based).
        task: the Task every model is trained and scored through.
        student: the model being adapted (possibly wrapped in DDP).
        source: the labelled source batch ``(images, targets)``, on the device.
        target: the target batch (images, or ``(images, anything)``: labels are not read).
        teacher: the teacher (None: no term may read ``pseudo_labels``).
        adaptation_start: the first iteration of terms that use target data.
        seed, rank, world_size, micro, micro_batches: as in ``RandomStream``.
        mean: the mean of a tensor over processes (None: one process), for statistics of
            the global batch such as the quality weight.

    Attributes:
        adapting: ``step >= adaptation_start`` (when a term with ``uses_target = False`` may
            add target-dependent parts).
        term: the running term's name (set by the loop); ``rng`` is its stream.
        term_forward: the running term's ``shared_forward`` (set by the loop): the terms
            that name one run together, as one branch.
        step_contexts: the contexts of every micro-batch of the optimiser step, this one
            among them (set by the loop; ``quality`` reads them).
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
        self.step, self.task, self.student, self.teacher = step, task, student, teacher
        self.term, self.mean = "", mean  # term: set by the loop
        self.term_forward: SharedForward | None = None  # the term's shared_forward
        self.adaptation_start, self.adapting = adaptation_start, step >= adaptation_start
        self.source_images, self.source_targets = split_sample(source)
        self._target_images, _ = split_sample(target)
        self._layout = (seed, rank, world_size, micro, micro_batches)
        self._pseudo: PseudoLabels | None = None
        self._pseudo_versions: list[tuple[Tensor, int]] | None = None  # see versions_of
        self._readers: list[str] = []  # the terms that read them
        self._shared: dict[SharedForward, Any] = {}
        #: the branch (and term) that first read each shared pass
        self._pass_readers: dict[SharedForward, tuple[Any, str]] = {}
        self._streams: dict[str, RandomStream] = {}
        self.step_contexts: list[IterationContext] = [self]

    @property
    def target_images(self) -> Any:
        """The target batch's images.

        Raises:
            ConfigError: read by a term before ``adaptation_start`` (one with ``uses_target =
                False`` that reads them without asking ``ctx.adapting``): the iterations that
                precede adaptation would adapt (and the score before adaptation with them).
        """
        if self.term and not self.adapting:
            raise checks.early_target_error(self.term, self.adaptation_start)
        return self._target_images

    @target_images.setter
    def target_images(self, images: Any) -> None:
        if self.term:  # the teacher predicts on them when a later term first asks
            raise checks.replaced_target_error(self.term)
        self._target_images = images

    @property
    def rng(self) -> RandomStream:
        """The running term's ``RandomStream``."""
        if self.term not in self._streams:
            seed, *layout = self._layout
            stream = RandomStream(stream_seed(seed, self.term, self.step), *layout)
            self._streams[self.term] = stream
        return self._streams[self.term]

    @property
    def pseudo_labels(self) -> PseudoLabels:
        """The teacher's pseudo-labels of the target batch, predicted on first use.

        Raises:
            ConfigError: there is no teacher, or a term that read them changed them in place.
        """
        if self._pseudo_versions is None:  # made here below, or assigned to _pseudo by a test
            self._pseudo_versions = versions_of(self._pseudo) if self._pseudo is not None else None
        elif changed_since(self._pseudo_versions, self._pseudo):
            raise checks.changed_pseudo_labels_error(self._readers, self.term)
        self._readers = [*dict.fromkeys([*self._readers, self.term])]
        if self._pseudo is None:
            if self.teacher is None:
                raise checks.no_teacher_error(self.term)
            prediction = self.teacher.predict(self.task, self.target_images)
            self._pseudo = self.task.pseudo_label(prediction)
            if not isinstance(self._pseudo, PseudoLabels):
                kind = type(self._pseudo).__name__
                raise ConfigError(f"Task.pseudo_label returned a {kind}, not mic.PseudoLabels")
            if self.step == self.adaptation_start:  # one look at the values, not every step
                checks.check_first_pseudo_labels(
                    self.task, self._pseudo, prediction, self.source_targets
                )
            self._pseudo_versions = versions_of(self._pseudo)
        return self._pseudo

    def quality(self, weighting: PseudoLabelWeighting) -> Tensor | None:
        """The quality weight q of ``weighting`` over the optimiser step's global batch: every
        micro-batch's pseudo-labels (the teacher predicts on the others' targets now if no
        term has yet) and every process's; None where that batch is this one (one process,
        one micro-batch) or ``weighting`` is no quality weighting: it then takes its own."""
        if weighting.mode != "quality" or (self.mean is None and len(self.step_contexts) < 2):
            return None
        counts = []
        for ctx in self.step_contexts:
            term, ctx.term = ctx.term, self.term  # read for this term
            try:
                counts.append(weighting.counts(ctx.pseudo_labels.confidence))
            finally:
                ctx.term = term
        total = torch.stack(counts).sum(0) if len(counts) > 1 else counts[0]
        total = self.mean(total) if self.mean is not None else total
        return total[0] / total[1].clamp_min(1.0)

    def shared(self, forward: SharedForward) -> Any:
        """The outputs of ``forward`` in this iteration (computed on the first call).

        Raises:
            ConfigError: terms of two branches read it (a term that does not name it as its
                ``shared_forward`` is a branch of its own): the second would back-propagate
                through the graph that the first one's backward pass freed.
        """
        branch = self.term_forward or self.term  # the loop runs a branch's terms together
        first = self._pass_readers.setdefault(forward, (branch, self.term)) if self.term else None
        if first is not None and first[0] != branch:
            raise checks.two_branches_error(first[1], self.term, forward)
        if forward not in self._shared:
            self._shared[forward] = forward.compute(self)
        return self._shared[forward]

    def restart(self) -> None:
        """Drop the shared forward passes and rewind the streams, keeping the pseudo-labels
        (for a step strategy that runs the terms again at other weights)."""
        self._shared, self._streams, self._pass_readers = {}, {}, {}
