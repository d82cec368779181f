"""What the loss terms of one iteration share: the batches, the models, the teacher's
pseudo-labels, and forward passes that several terms read."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mic.core.batch import split_sample
from mic.core.errors import ConfigError
from mic.core.task import PseudoLabels, Task
from mic.core.teacher import Teacher


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
    ``pseudo_labels``; later terms reuse that prediction.

    Args:
        step: the iteration (0-based).
        task: the Task every model is trained and scored through.
        student: the model being adapted (possibly wrapped for data parallelism).
        source: the labelled source batch ``(images, targets)``, on the device.
        target: the target batch (images, or ``(images, anything)``: labels are not read).
        teacher: the teacher (None: no term may read ``pseudo_labels``).
        generator: the random stream maskers and augmentations draw from.
        adaptation_start: the first iteration of terms that use target data.

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
        generator: torch.Generator | None = None,
        adaptation_start: int = 0,
    ) -> None:
        self.step = step
        self.task = task
        self.student = student
        self.teacher = teacher
        self.generator = generator
        self.adaptation_start = adaptation_start
        self.adapting = step >= adaptation_start
        self.source_images, self.source_targets = split_sample(source)
        self.target_images, _ = split_sample(target)
        self._pseudo: PseudoLabels | None = None
        self._shared: dict[SharedForward, Any] = {}

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

    def forget_shared(self) -> None:
        """Drop the shared forward passes computed so far (for a step strategy that runs the
        terms again at other weights); the pseudo-labels are kept."""
        self._shared = {}
