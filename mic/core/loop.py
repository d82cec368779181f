"""The generic adaptation loop: one loop for every task and every UDA method."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mic.core import checks
from mic.core.batch import EndlessLoader, move_to, split_sample
from mic.core.context import IterationContext, changed_since, versions_of
from mic.core.errors import ConfigError, DatasetError, MicError
from mic.core.method import UDAMethod
from mic.core.task import Task
from mic.core.teacher import Teacher, unwrap
from mic.core.terms import LossTerm, scalar_loss


class Collective:
    """The processes of a data-parallel run; this default is one process
    (``mic.training.ProcessGroup`` is ``torchrun``'s)."""

    rank: int = 0
    world_size: int = 1

    def broadcast_module(self, module: nn.Module) -> None:
        """Make every process's parameters and buffers equal to process 0's."""

    def average_gradients(self, params: Sequence[nn.Parameter]) -> None:
        """Average the gradients of ``params`` over processes."""

    def mean(self, values: Tensor) -> Tensor:
        """The mean of a float tensor over processes."""
        return values


class StepStrategy:
    """How an iteration's gradients become an optimiser step; this default makes one pass
    (SDAT's two passes are a subclass)."""

    def check(self, loop: AdaptationLoop) -> None:
        """Raise ``ConfigError`` when the loop's settings do not suit this strategy."""

    def __call__(
        self,
        loop: AdaptationLoop,
        contexts: list[IterationContext],
        terms: list[tuple[str, LossTerm]],
    ) -> dict[str, Tensor]:
        """Run the iteration; return the detached losses by name, averaged over micro-batches."""
        losses = loop.backward(contexts, terms)
        loop.finish_step(losses)
        return losses


class Hook:
    """Called by the loop around training (logging, evaluation, checkpoints ...)."""

    def before_run(self, loop: AdaptationLoop) -> None:
        """Before the first iteration of ``run`` (``loop.step`` > 0 after a resume)."""

    def after_step(self, loop: AdaptationLoop, losses: dict[str, Tensor]) -> None:
        """After iteration ``loop.step - 1``, with its detached losses on the device."""

    def on_record(self, loop: AdaptationLoop, record: dict[str, Any]) -> None:
        """A record (e.g. evaluation results) that a hook emitted with ``loop.emit``."""

    def after_run(self, loop: AdaptationLoop) -> None:
        """After the last iteration, or after a stop (``loop.interrupted_by`` says why)."""

    def teardown(self, loop: AdaptationLoop) -> None:
        """Last, also when ``run`` raises, in the reverse order of the hooks (the first
        hook's last): release what ``before_run`` took (files, bars)."""


class Guard:
    """What watches a run for stop requests and numerical faults; this default watches nothing
    (``mic.training.TrainingGuard`` is ``mic-train``'s)."""

    def running(self, loop: AdaptationLoop) -> contextlib.AbstractContextManager[Any]:
        """The context ``run`` trains in (e.g. one that catches SIGTERM)."""
        return contextlib.nullcontext()

    def before_step(self, loop: AdaptationLoop) -> None:
        """Before an iteration's passes (e.g. snapshot what a skipped step restores)."""

    def allow_step(self, loop: AdaptationLoop, losses: dict[str, Tensor]) -> bool:
        """Whether the iteration's averaged gradients may be stepped (False: the guard has
        undone the iteration and counted it in ``loop.skipped_steps``)."""
        return True


class AdaptationLoop:
    """Iteration-based UDA training, the same for every task. Per iteration: the teacher's
    update; the next source and target batches; each active term (or ``SharedForward`` group)
    computed and back-propagated on its own; gradients averaged over processes; if the guard
    allows, one optimiser step and one scheduler step; the hooks.

    Args:
        task: the Task through which every model is trained and scored.
        student: the model being adapted.
        method: the UDA method (its loss terms and the modules they own).
        optimizer: optimises the student's and the method's parameters.
        source: loader of labelled source batches ``(images, targets)``.
        target: loader of target batches (images, or ``(images, anything)``).
        iterations: total number of iterations (>= 1).
        teacher: the teacher (required when a term uses pseudo-labels).
        scheduler: a learning-rate scheduler stepped once per iteration.
        hooks: logging, evaluation, checkpoints ...
        device: where models and batches live (default: the student's device).
        adaptation_start: first iteration of the terms that use target data (published 0).
        seed: the seed of every term's random stream (any int: hashed into each stream's).
        max_grad_norm: clip the global gradient norm to this value (None: no clipping).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast; fp16 adds a GradScaler).
        accumulate: micro-batches per optimiser step (gradient accumulation, >= 1).
        channels_last: keep the student and the images in channels-last memory format.
        step_strategy, collective, guard: the seams above (default: their base classes).

    Raises:
        ConfigError: a task, student, method or teacher of the wrong kind (a class, a config node; a
            task lacking a ``Task`` method); a count that is no int or out of range, a seed that is
            no int; a ``device`` that is none or that this machine lacks (CUDA, MPS; the meta
            device); pseudo-labels without a teacher; every term of weight 0, or none that runs
            before ``adaptation_start``; hooks that are no ``Hook`` instances or listed twice; a
            teacher sharing the student's parameters (a teacher is a copy); a ``task.loss`` without
            ``weights`` and ``rng``; an optimizer without any of the student's parameters or without
            some of the method's trainable ones; a ``torchrun`` process group without a
            ``collective`` to average over it; a scheduler of another optimizer, or whose ``step``
            takes arguments (``ReduceLROnPlateau``); a loader that is no iterable; what
            ``step_strategy.check`` refuses.
        DatasetError: a loader that is a one-pass iterator or a map-style ``Dataset``.

    Warned of: the student's parameters left out, loaders without ``task.collate``.
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
        precision: str = "fp32",
        accumulate: int = 1,
        channels_last: bool = False,
        step_strategy: StepStrategy | None = None,
        collective: Collective | None = None,
        guard: Guard | None = None,
    ) -> None:
        collective = collective or Collective()
        checks.check_kinds(  # (every refusal is listed under Raises above)
            task=(task, object, "a Task"),  # (a Task may be duck-typed, but not a class)
            student=(student, nn.Module, "an nn.Module"),
            method=(method, UDAMethod, "a UDAMethod"),
            teacher=(teacher, (Teacher, type(None)), "a mic.Teacher (EMATeacher(student, alpha))"),
        )
        checks.check_loop_arguments(
            task, student, method, optimizer, teacher, scheduler, collective.world_size, device,
            precision, max_grad_norm, iterations, adaptation_start, seed, accumulate,
        )  # fmt: skip
        self.task, self.channels_last = task, channels_last
        given = device if device is not None else next(student.parameters()).device
        self.device = torch.device(given)  # (0 is cuda:0)
        self.student = student.to(self.device)
        if channels_last:
            self.student = self.student.to(memory_format=torch.channels_last)
        self.method = method.to(self.device)
        self.teacher = teacher.to(self.device) if teacher is not None else None
        self.optimizer, self.scheduler = optimizer, scheduler
        self.source, self.target = EndlessLoader(source, "source"), EndlessLoader(target, "target")
        if getattr(type(task), "collate", None) is not Task.collate:  # (targets made there)
            checks.warn_default_collate(task, {"source": source, "target": target})
        self.iterations, self.adaptation_start = int(iterations), int(adaptation_start)
        self.hooks: list[Hook] = checks.check_hooks(hooks, Hook)
        self.seed, self.max_grad_norm, self.precision = int(seed), max_grad_norm, precision
        self.accumulate, self.collective = int(accumulate), collective
        self.guard, self.step_strategy = guard or Guard(), step_strategy or StepStrategy()
        self.step_strategy.check(self)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        self._gradless: set[str] = set()  # the losses warned of as having no gradient
        #: completed iterations (the index of the next one)
        self.step = 0
        #: iterations whose optimiser step the guard skipped
        self.skipped_steps = 0
        #: whether the last iteration took its optimiser step (else the teacher waits)
        self.stepped = True
        #: why the run was asked to stop (``request_stop``); None while nobody asked
        self.stop_reason: str | None = None
        #: why the run stopped early (None while it runs or after it finished)
        self.interrupted_by: str | None = None
        self._finished = False  # this object's run() reached iterations
        self._bad_batch = False  # the last train_step met a bad batch before its passes

    def run(self) -> None:
        """Train from ``self.step`` to ``self.iterations``, or until a stop request.

        Raises:
            DatasetError: a batch or an evaluation met a bad file (after ``after_run``); one
                that a loss term raises, without it (its step is half done: nothing to save).
            MicError: what the guard raises.
            Exception: what a hook's ``after_step`` raised (e.g. an evaluation's metric),
                after ``after_run`` in one process (the checkpointer saves the step it
                followed).
        """
        if self.step > self.iterations or (self._finished and self.step == self.iterations):
            checks.warn_nothing_to_train(self.step, self.iterations)
        self.collective.broadcast_module(self.student)
        self.collective.broadcast_module(self.method)
        self.stop_reason = self.interrupted_by = None  # a stop ended the last run, not this
        with self.guard.running(self), contextlib.ExitStack() as teardown:
            for hook in self.hooks:  # (a teardown only for a hook whose before_run was called)
                teardown.callback(hook.teardown, self)
                self._call_hooks("before_run", hooks=[hook])
            while self.step < self.iterations and self.stop_reason is None:
                # a bad file in a batch (the loop as before the step), or any error of a hook
                # after a whole step (an evaluation's): save, then report it; an error inside
                # the step (a term's, also a DatasetError) leaves a half-done step: no saving
                completed = self._bad_batch = False
                try:
                    losses = self.train_step()
                    self.step, completed = self.step + 1, True
                    self._call_hooks("after_step", losses)
                except Exception as e:  # (torchrun: a hook's error may be one process's)
                    alone = completed and self.collective.world_size == 1
                    data = isinstance(e, DatasetError) and (completed or self._bad_batch)
                    if not (alone or data):
                        raise  # a step cut short: no state to save
                    self.interrupted_by = "a data error" if data else "an error"
                    self._call_hooks("after_run")
                    raise
            self.interrupted_by = self.stop_reason
            self._finished = self.step >= self.iterations
            self._call_hooks("after_run")

    def _call_hooks(self, event: str, *args: Any, hooks: Sequence[Hook] | None = None) -> None:
        """Call ``event`` of each hook (of ``hooks``), an error noted with its hook; ``after_run``
        reaches every hook (a checkpointer after a failing logger), then the first error."""
        first = None
        for hook in self.hooks if hooks is None else hooks:
            try:
                getattr(hook, event)(self, *args)
            except Exception as e:
                if hasattr(e, "add_note") and not isinstance(e, MicError):  # (said in full)
                    e.add_note(f"(raised in {type(hook).__name__}.{event}, step {self.step})")
                if event != "after_run":
                    raise
                first = first or e
        if first is not None:
            raise first

    def train_step(self) -> dict[str, Tensor]:
        """The passes and the optimiser step of iteration ``loop.step``; returns the detached
        loss of every term (and named part). ``run`` then advances ``loop.step`` and calls
        the hooks' ``after_step``: a loop of one's own that calls it does both (``loop.step
        += 1``), else every call trains the same iteration (step 0: the teacher copied
        again, adaptation never starting, the same random draws)."""
        step, failed = self.step, None
        positions = self.source.state_dict(), self.target.state_dict()
        try:  # the batches first: a bad file leaves the loop as it was before the iteration
            contexts = [self.context(step, micro) for micro in range(self.accumulate)]
            for ctx in contexts:  # (statistics of the step's whole batch, e.g. q)
                ctx.step_contexts = contexts
        except DatasetError as e:
            failed = e
        if self.collective.world_size > 1:  # every process stops together (one flag's mean)
            flag = torch.tensor([float(failed is not None)], device=self.device)
            if self.collective.mean(flag).item() > 0 and failed is None:
                failed = DatasetError("another process met a bad file (its message names it)")
        if failed is not None:
            self.source.load_state_dict(positions[0])
            self.target.load_state_dict(positions[1])
            self._bad_batch = True  # (``run`` saves the state, which is as it was)
            raise failed
        self.student.train()
        self.method.train()
        if self.teacher is not None and (step == 0 or self.stepped):
            self.teacher.update(self.student, step)
        self.guard.before_step(self)
        self.optimizer.zero_grad(set_to_none=True)
        return self.step_strategy(self, contexts, self.active_terms(step))

    def active_terms(self, step: int) -> list[tuple[str, LossTerm]]:
        """The terms that run at ``step``: those using target data from ``adaptation_start``,
        none of weight 0 (switched off: no compute, no draws, nothing a NaN could spoil)."""
        adapting = step >= self.adaptation_start
        return [(n, t) for n, t in self.method if (adapting or not t.uses_target) and t.weight]

    def context(self, step: int, micro: int = 0) -> IterationContext:
        """The next source and target batches, on the device, for the loss terms."""
        source, target = self._to_device(next(self.source)), self._to_device(next(self.target))
        c = self.collective
        layout = (self.seed, c.rank, c.world_size, micro, self.accumulate)
        return IterationContext(
            step, self.task, self.student, source, target, self.teacher, self.adaptation_start,
            *layout, mean=c.mean if c.world_size > 1 else None,
        )  # fmt: skip

    def backward(
        self, contexts: list[IterationContext], terms: list[tuple[str, LossTerm]]
    ) -> dict[str, Tensor]:
        """The forward and backward passes of ``terms`` (``backward_terms``) on every
        micro-batch; returns their losses averaged over the micro-batches, and each term's
        ``statistics`` (what it reports for logs, e.g. q) are averaged over them too."""
        per_micro, reported = [], []
        for ctx in contexts:
            per_micro.append(self.backward_terms(ctx, terms))
            reported.append([dict(getattr(t, "statistics", None) or {}) for _, t in terms])
        if len(contexts) > 1:
            _average_statistics(terms, reported)
        return {k: torch.stack([m[k] for m in per_micro]).mean() for k in per_micro[0]}

    def backward_terms(
        self, ctx: IterationContext, terms: list[tuple[str, LossTerm]]
    ) -> dict[str, Tensor]:
        """Compute ``terms`` in order and back-propagate each branch (a term, or the terms of
        one ``SharedForward``, summed) once; return the detached losses by name.

        Raises:
            ConfigError: two terms report a loss under the same name, a term changed the
                batch's images in place, or every loss that is not 0 has no gradient (nothing
                would train). Another error raised in a term carries a note naming the term
                and the iteration.
        """
        losses: dict[str, Tensor] = {}
        graded: set[str] = set()  # the losses with a gradient
        ctx.term = ""  # between terms (SAM's second pass comes after the first's last term)
        batch = [ctx.source_images, ctx.source_targets, ctx.target_images]
        versions = versions_of(batch)  # the terms after one see its batch, and the teacher
        for branch in _branches(terms):
            parts: list[Tensor] = []
            for name, term in branch:
                ctx.term, ctx.term_forward = name, term.shared_forward
                try:
                    with self.autocast():
                        named = _weighted(term(ctx), name, term.weight, self.device)
                except Exception as e:  # a term's own bug: say where it was met
                    if hasattr(e, "add_note") and not isinstance(e, (ConfigError, DatasetError)):
                        e.add_note(f"(raised in loss term {name!r} at iteration {ctx.step + 1})")
                    raise
                swapped = ctx.source_images is not batch[0] or ctx.source_targets is not batch[1]
                if swapped or changed_since(versions, batch):
                    raise checks.batch_changed_error(name)
                checks.check_new_losses(named, losses)
                losses.update({k: v.detach().float() for k, v in named.items()})
                parts.extend(named.values())
                graded.update(k for k, v in named.items() if v.requires_grad)
                for key in [k for k, v in named.items() if not v.requires_grad]:
                    checks.warn_gradless(self._gradless, name, key, named[key])
            total = sum(parts)
            if isinstance(total, Tensor) and total.requires_grad:
                self.scaler.scale(total / self.accumulate).backward()
        ctx.term = ""  # a step strategy's code between passes is no term
        if self._gradless:  # (a loss was warned of: does anything train?)
            checks.check_something_trains(ctx.step, losses, graded)
        return losses

    def finish_step(
        self, losses: dict[str, Tensor], restore: Callable[[], None] | None = None
    ) -> None:
        """Average the gradients, call ``restore`` (e.g. to undo a perturbation), and step
        (clip, optimiser, scheduler) if the guard allows it."""
        self.collective.average_gradients(self.parameters())
        if restore is not None:
            restore()
        self.stepped = self.guard.allow_step(self, losses)
        if not self.stepped:
            return
        if self.max_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.parameters(), self.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()

    def autocast(self) -> torch.autocast:
        """The mixed-precision context every branch's forward runs in."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def emit(self, record: dict[str, Any]) -> None:
        """Hand a record (e.g. evaluation results) to every hook's ``on_record``."""
        for hook in self.hooks:
            hook.on_record(self, record)

    def request_stop(self, reason: str = "a stop request") -> None:
        """Finish the current iteration, then stop."""
        self.stop_reason = reason

    def lr(self) -> float:
        """The learning rate of the first parameter group."""
        return float(self.optimizer.param_groups[0]["lr"])

    def parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser updates."""
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def state_dict(self) -> dict[str, Any]:
        """Everything the loop's next iteration depends on, except the global random generators
        (``mic.training.Checkpointer`` adds those of every process). Its tensors are the live
        ones, as torch's ``state_dict``'s: to keep this iteration's, save it or deepcopy it."""
        state: dict[str, Any] = {
            "step": self.step,
            "student": unwrap(self.student).state_dict(),
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "optimizer_class": type(self.optimizer).__name__,  # its state fits no other class
            "source": self.source.state_dict(),
            "target": self.target.state_dict(),
            "scaler": self.scaler.state_dict(),
            "skipped_steps": self.skipped_steps,
            "stepped": self.stepped,
        }
        if self.teacher is not None:
            state["teacher"] = self.teacher.state_dict()
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned. A state without a teacher (its loop had none,
        e.g. source-only) starts this loop's teacher as a copy of the loaded student; one
        without a scheduler state starts the scheduler from its beginning (warned of).

        Raises:
            CheckpointError: ``state`` is no loop state, or a loop of another optimiser wrote it.
        """
        checks.check_loop_state(state, type(self.optimizer).__name__)
        unwrap(self.student).load_state_dict(state["student"])
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.teacher is not None and "teacher" in state:
            self.teacher.load_state_dict(state["teacher"])
        elif self.teacher is not None:  # (a loop without one wrote it): it follows the student
            self.teacher.update(self.student, 0)  # (step 0: a copy)
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        elif self.scheduler is not None:
            checks.warn_no_scheduler_state(int(state["step"]))
        for name in ("source", "target"):
            if name in state:
                getattr(self, name).load_state_dict(state[name])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.stepped = bool(state.get("stepped", True))
        self.step = int(state["step"])

    def _to_device(self, batch: Any) -> Any:
        batch = move_to(batch, self.device)
        if self.channels_last:
            images, targets = split_sample(batch)
            if isinstance(images, Tensor) and images.dim() == 4:
                images = images.contiguous(memory_format=torch.channels_last)
                batch = images if targets is None else (images, targets)
        return batch


def _weighted(out: Any, name: str, weight: float, device: torch.device) -> dict[str, Tensor]:
    """A term's output (a scalar, or named scalars) as named losses times its ``weight``.

    Raises:
        ConfigError: the output is not a scalar tensor or number, or a dict of them.
    """
    said = (
        f"loss term {name!r} (or the Task.loss it calls) returned {{key!r}} as {{got}}; a term "
        "returns a scalar tensor, or a dict of them by name (e.g. the mean)"
    )
    named = dict(out) if isinstance(out, Mapping) else {name: out}
    named = {k: scalar_loss(v, k, device, said) for k, v in named.items()}
    return {k: v * weight if weight != 1.0 else v for k, v in named.items()}


def _average_statistics(
    terms: list[tuple[str, LossTerm]], reported: list[list[dict[str, Any]]]
) -> None:
    """Set each term's ``statistics`` (term i's in micro-batch m: ``reported[m][i]``) to their
    mean over micro-batches where they are 0-d tensors in all; others keep the last one's."""
    scalar = lambda v: isinstance(v, Tensor) and v.dim() == 0  # noqa: E731
    for i, (_, term) in enumerate(terms):
        seen = [micro[i] for micro in reported]
        shared = [k for k in seen[-1] if all(scalar(r.get(k)) for r in seen)]
        if shared:
            mean = {k: torch.stack([r[k].float() for r in seen]).mean() for k in shared}
            term.statistics = {**seen[-1], **mean}


def _branches(terms: list[tuple[str, LossTerm]]) -> list[list[tuple[str, LossTerm]]]:
    """Each term alone, except that the terms reading one ``SharedForward`` form one branch,
    at the place of the first of them."""
    branches: list[list[tuple[str, LossTerm]]] = []
    by_forward: dict[Any, list[tuple[str, LossTerm]]] = {}
    for name, term in terms:
        shared = term.shared_forward
        if shared is not None and shared in by_forward:
            by_forward[shared].append((name, term))
            continue
        branches.append([(name, term)])
        if shared is not None:
            by_forward[shared] = branches[-1]
    return branches
