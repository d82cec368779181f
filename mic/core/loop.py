"""The generic adaptation loop: one loop for every task and every UDA method."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mic.core.data import Forever, move_to, split_sample
from mic.core.errors import ConfigError
from mic.core.method import UDAMethod
from mic.core.optim import SAM
from mic.core.task import PseudoLabels, Task
from mic.core.teacher import Teacher


class IterationContext:
    """What the loss terms of one iteration share: batches, models, and the pseudo-labels.

    The teacher predicts on the target at most once per iteration, the first time a term
    asks for ``pseudo_labels``; every later term reuses that prediction. ``shared`` is a
    scratch dict for terms of one method that reuse each other's intermediate results.
    ``adapting`` is False before the loop's ``adaptation_start``: a term that is active then
    (``uses_target = False``) may still add target-dependent parts once it turns True.

    With sharpness-aware minimisation (a ``SAM`` optimiser) an iteration has two passes;
    ``sam_pass`` is ``"first"`` or ``"second"`` (None without SAM). ``shared`` is emptied
    between the passes, since what it holds was computed with the weights of the first pass;
    ``memo`` keeps what does not depend on the student (e.g. a masked image) for the whole
    iteration, so both passes see the same random draws.
    """

    def __init__(
        self,
        loop: AdaptationLoop,
        step: int,
        source: Any,
        target: Any,
    ) -> None:
        self.step = step
        self.adaptation_start = loop.adaptation_start
        self.adapting = step >= loop.adaptation_start
        self.sam_pass: str | None = None
        self.task: Task = loop.task
        self.student: nn.Module = loop.student
        self.teacher: Teacher | None = loop.teacher
        self.generator: torch.Generator | None = loop.generator
        self.source_images, self.source_targets = split_sample(source)
        self.target_images, _ = split_sample(target)
        self.shared: dict[str, Any] = {}
        self._memo: dict[Any, Any] = {}
        self._pseudo: PseudoLabels | None = None

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()`` the first time ``key`` is asked for in this iteration, then the same
        value (for inputs that must not change between SAM's two passes)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def begin_pass(self, sam_pass: str) -> None:
        """Start SAM's ``"first"`` or ``"second"`` pass (``shared`` starts empty)."""
        self.sam_pass = sam_pass
        self.shared = {}

    @property
    def pseudo_labels(self) -> PseudoLabels:
        if self._pseudo is None:
            if self.teacher is None:
                raise ConfigError("a loss term asked for pseudo-labels but the loop has no teacher")
            prediction = self.teacher.predict(self.task, self.target_images)
            self._pseudo = self.task.pseudo_label(prediction)
        return self._pseudo


class Hook:
    """Called by the loop around training; override what you need."""

    def before_run(self, loop: AdaptationLoop) -> None:
        pass

    def after_step(self, loop: AdaptationLoop, losses: dict[str, Tensor]) -> None:
        """After iteration ``loop.step - 1`` (``loop.step`` iterations are done)."""

    def on_record(self, loop: AdaptationLoop, record: dict[str, Any]) -> None:
        """A record (e.g. evaluation results) that some hook emitted with ``loop.emit``."""

    def after_run(self, loop: AdaptationLoop) -> None:
        pass


class AdaptationLoop:
    """Iteration-based UDA training, the same for every task.

    Per iteration: (1) the teacher follows the student (EMA update from the weights of the
    previous optimiser step); (2) one source and one target batch are drawn from loaders that
    never run dry; (3) every loss term of the method is computed in order and back-propagated
    on its own, so only one branch's activations are alive at a time; the teacher's
    pseudo-labels are computed once, when the first term needs them, and shared; (4) one
    optimiser step on the accumulated gradients and one scheduler step; (5) the hooks run
    (logging, evaluation, checkpoints). Terms of one ``backward_group`` share a forward pass
    and are back-propagated together.

    With a ``SAM`` optimiser, (3) runs twice: first the terms with ``sam_first_pass``, whose
    gradient sets the perturbation ``SAM.first_step`` applies, then every term at the
    perturbed weights; (4) restores the weights and steps with the second pass's gradients.
    The logged losses are the second pass's.

    Args:
        task: the Task through which every model is trained and scored.
        student: the model being adapted.
        method: the UDA method (its loss terms and the modules they own).
        optimizer: optimises the student's and the method's parameters.
        source: loader of labelled source batches ``(images, targets)``.
        target: loader of target batches (images, or ``(images, anything)``: labels unused).
        iterations: total number of iterations.
        teacher: the teacher (required when a term uses pseudo-labels).
        scheduler: a learning-rate scheduler stepped once per iteration.
        hooks: logging, evaluation, checkpointing, ...
        device: where models and batches live (default: the student's device).
        adaptation_start: terms that use target data are skipped before this iteration
            (a source-only warm-up; 0 = adapt from the first iteration, as published).
        seed: seeds the generator that maskers and augmentations draw from.
        max_grad_norm: clip the global gradient norm to this value (None: no clipping).
    """

    def __init__(
        self,
        task: Task,
        student: nn.Module,
        method: UDAMethod,
        optimizer: torch.optim.Optimizer,
        source: Iterable[Any],
        target: Iterable[Any],
        iterations: int,
        *,
        teacher: Teacher | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        hooks: Sequence[Hook] = (),
        device: torch.device | str | None = None,
        adaptation_start: int = 0,
        seed: int = 0,
        max_grad_norm: float | None = None,
    ) -> None:
        if iterations < 1:
            raise ConfigError(f"iterations must be at least 1, got {iterations}")
        if not 0 <= adaptation_start <= iterations:
            raise ConfigError(
                f"adaptation_start must lie in [0, iterations={iterations}], got {adaptation_start}"
            )
        if method.uses_pseudo_labels and teacher is None:
            raise ConfigError(
                "the method uses pseudo-labels but no teacher was given: pass "
                "teacher=EMATeacher(student, alpha) (or set teacher in the config)"
            )
        self.task = task
        self.device = torch.device(device) if device is not None else _device_of(student)
        self.student = student.to(self.device)
        self.method = method.to(self.device)
        self.teacher = teacher.to(self.device) if teacher is not None else None
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.source = Forever(source, "source")
        self.target = Forever(target, "target")
        self.iterations = int(iterations)
        self.adaptation_start = int(adaptation_start)
        self.hooks = list(hooks)
        self.max_grad_norm = max_grad_norm
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        #: number of completed iterations (the index of the next one)
        self.step = 0

    # ----------------------------------------------------------------------------- running
    def run(self) -> None:
        """Train from ``self.step`` to ``self.iterations``."""
        for hook in self.hooks:
            hook.before_run(self)
        while self.step < self.iterations:
            losses = self.train_step()
            self.step += 1
            for hook in self.hooks:
                hook.after_step(self, losses)
        for hook in self.hooks:
            hook.after_run(self)

    def active_terms(self, step: int) -> list[tuple[str, Any]]:
        adapting = step >= self.adaptation_start
        return [(n, t) for n, t in self.method if adapting or not t.uses_target]

    def train_step(self) -> dict[str, Tensor]:
        """One iteration; returns the detached loss of every term (and named part)."""
        step = self.step
        self.student.train()
        self.method.train()
        if self.teacher is not None:
            self.teacher.update(self.student, step)
        source = move_to(next(self.source), self.device)
        target = move_to(next(self.target), self.device)
        ctx = IterationContext(self, step, source, target)
        self.optimizer.zero_grad(set_to_none=True)
        terms = self.active_terms(step)
        if isinstance(self.optimizer, SAM):
            ctx.begin_pass("first")
            self.backward_terms(ctx, [(n, t) for n, t in terms if t.sam_first_pass])
            self.optimizer.first_step(zero_grad=True)
            ctx.begin_pass("second")
        losses = self.backward_terms(ctx, terms)
        self.optimizer_step()
        return losses

    def backward_terms(self, ctx: IterationContext, terms: list[tuple[str, Any]]) -> dict:
        """Compute ``terms`` in order and back-propagate each on its own, except that terms
        of one ``backward_group`` (which share a forward pass through ``ctx.shared``) are
        back-propagated together, once the last of them has run. Returns the detached
        losses."""
        last = {t.backward_group: i for i, (_, t) in enumerate(terms) if t.backward_group}
        pending: dict[str, list[Any]] = {}
        losses = {}
        for i, (name, term) in enumerate(terms):
            out = term(ctx)
            parts = out if isinstance(out, dict) else {name: out}
            losses.update({k: v.detach() for k, v in parts.items()})
            total = sum(parts.values())
            group = term.backward_group
            if group:
                pending.setdefault(group, []).append(total)
                if i < last[group]:
                    continue
                total = sum(pending.pop(group))
            if isinstance(total, Tensor) and total.requires_grad:
                total.backward()
        return losses

    def optimizer_step(self) -> None:
        """Clip (optionally), step the optimiser and the scheduler."""
        if self.max_grad_norm is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def emit(self, record: dict[str, Any]) -> None:
        """Hand a record (e.g. evaluation results) to every hook."""
        for hook in self.hooks:
            hook.on_record(self, record)

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "step": self.step,
            "student": self.student.state_dict(),
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }
        if self.teacher is not None:
            state["teacher"] = self.teacher.state_dict()
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.student.load_state_dict(state["student"])
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        if self.teacher is not None and "teacher" in state:
            self.teacher.load_state_dict(state["teacher"])
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])

    def lr(self) -> float:
        """The learning rate of the first parameter group."""
        return float(self.optimizer.param_groups[0]["lr"])


def _device_of(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")
