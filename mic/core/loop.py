"""The generic adaptation loop: one loop for every task and every UDA method."""

from __future__ import annotations

import re
import signal
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from mic.core.batch import EndlessLoader, move_to, split_sample
from mic.core.context import IterationContext
from mic.core.errors import ConfigError, DatasetError, MicError
from mic.core.method import UDAMethod
from mic.core.task import Task
from mic.core.teacher import Teacher, unwrap
from mic.core.terms import LossTerm

PRECISIONS = ("fp32", "bf16", "fp16")
NAN_POLICIES = ("skip", "stop", "ignore")


class Collective:
    """How the processes of a data-parallel run talk to each other (the loop's only view of
    them). This default is one process, where every operation is the identity;
    ``mic.training.ProcessGroup`` implements it for ``torchrun``."""

    rank: int = 0
    world_size: int = 1

    def broadcast_module(self, module: nn.Module) -> None:
        """Make every process's parameters and buffers equal to process 0's."""

    def average_gradients(self, params: Sequence[nn.Parameter]) -> None:
        """Average the gradients of ``params`` over processes."""

    def mean(self, values: Tensor) -> Tensor:
        """The mean of ``values`` (a float tensor) over processes."""
        return values


class StepStrategy:
    """How an iteration's gradients become an optimiser step. This default makes one pass:
    every active term of every micro-batch back-propagated, then ``finish_step``. A method
    that needs more (sharpness-aware minimisation's two passes) brings its own subclass."""

    def check(self, loop: AdaptationLoop) -> None:
        """Raise ``ConfigError`` when the loop's settings do not suit this strategy."""

    def __call__(
        self,
        loop: AdaptationLoop,
        contexts: list[IterationContext],
        terms: list[tuple[str, LossTerm]],
    ) -> dict[str, Tensor]:
        """Run one iteration's passes and its step; return the detached losses by name,
        averaged over micro-batches."""
        losses = loop.backward(contexts, terms)
        loop.finish_step(losses)
        return losses


class Hook:
    """Called by the loop around training (logging, evaluation, checkpoints ...)."""

    def before_run(self, loop: AdaptationLoop) -> None:
        """Before the first iteration of ``run`` (``loop.step`` > 0 after a resume)."""

    def after_step(self, loop: AdaptationLoop, losses: dict[str, Tensor]) -> None:
        """After iteration ``loop.step - 1``, with its detached losses on the device
        (``loop.loss_floats`` reads them with one host synchronisation)."""

    def on_record(self, loop: AdaptationLoop, record: dict[str, Any]) -> None:
        """A record (e.g. evaluation results) that some hook emitted with ``loop.emit``."""

    def after_run(self, loop: AdaptationLoop) -> None:
        """After the last iteration, or after a stop request (``loop.interrupted_by``)."""


class AdaptationLoop:
    """Iteration-based UDA training, the same for every task.

    Per iteration: (1) the teacher follows the student (the EMA update from the weights of
    the previous optimiser step); (2) one source and one target batch are drawn from loaders
    that never run dry (``accumulate`` of each with gradient accumulation); (3) the step
    strategy computes every active loss term in order and back-propagates each on its own, so
    that one branch's activations are alive at a time (terms reading one ``SharedForward``
    run together and share one backward); the teacher predicts once, when a term first reads
    the pseudo-labels, and each term draws from its own ``RandomStream``; (4) one optimiser
    step on the gradients averaged over processes, and one scheduler step; (5) the hooks run.

    Numerical faults (one host synchronisation per iteration, docs/training.md): under
    ``nan_policy="skip"`` an iteration with NaN or Inf losses or gradients changes nothing
    but the schedule, and more than ``max_skipped`` of them (from the fifth) raise
    ``NumericalError``; ``"stop"`` raises it at once; ``"ignore"`` checks nothing. Weights
    made non-finite by a step always raise it. SIGTERM and SIGINT (``run`` called from the
    main thread) finish the iteration, let the hooks save, and raise ``TrainingInterrupted``.

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
        adaptation_start: terms that use target data are skipped before this iteration (a
            source-only warm-up; 0, as published, adapts from the first iteration).
        seed: the seed of every term's random stream.
        max_grad_norm: clip the global gradient norm to this value (None: no clipping).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``: every branch's forward (and the
            teacher's) runs under ``torch.autocast`` in that type; fp16 adds a GradScaler,
            which handles overflowing gradients itself.
        accumulate: micro-batches per optimiser step (gradient accumulation, >= 1).
        nan_policy: ``"skip"``, ``"stop"`` or ``"ignore"`` (see above).
        max_skipped: the share of skipped iterations past which ``"skip"`` stops, in [0, 1].
        channels_last: keep the student and the images in channels-last memory format.
        step_strategy: how gradients become a step (default ``StepStrategy()``: one pass).
        collective: the processes of a data-parallel run (default: this process alone).

    Raises:
        ConfigError: a setting out of range, pseudo-labels without a teacher, or a
            ``torchrun`` process group without a ``collective`` to average over it.
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
        nan_policy: str = "skip",
        max_skipped: float = 0.1,
        channels_last: bool = False,
        step_strategy: StepStrategy | None = None,
        collective: Collective | None = None,
    ) -> None:
        checks = [
            (iterations >= 1, f"iterations must be at least 1, got {iterations}"),
            (
                0 <= adaptation_start <= iterations,
                f"adaptation_start must lie in [0, iterations={iterations}], "
                f"got {adaptation_start}",
            ),
            (
                teacher is not None or not method.uses_pseudo_labels,
                "the method uses pseudo-labels but no teacher was given: pass "
                "teacher=EMATeacher(student, alpha) (or set teacher in the config)",
            ),
            (precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {precision!r}"),
            (int(accumulate) >= 1, f"accumulate must be at least 1, got {accumulate}"),
            (nan_policy in NAN_POLICIES, f"nan_policy must be one of {NAN_POLICIES}"),
            (0 <= max_skipped <= 1, f"max_skipped must lie in [0, 1], got {max_skipped}"),
        ]
        collective = collective or Collective()
        alone = "a torchrun process group is set up but the loop would train each process "
        alone += "alone; pass collective=mic.training.ProcessGroup()"
        if dist.is_initialized() and dist.get_world_size() > collective.world_size:
            checks.append((False, alone))
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.task = task
        self.device = torch.device(device) if device is not None else _device_of(student)
        self.student = student.to(self.device)
        self.channels_last = channels_last
        if channels_last:
            self.student = self.student.to(memory_format=torch.channels_last)
        self.method = method.to(self.device)
        self.teacher = teacher.to(self.device) if teacher is not None else None
        self.optimizer, self.scheduler = optimizer, scheduler
        self.source = EndlessLoader(source, "source")
        self.target = EndlessLoader(target, "target")
        self.iterations, self.adaptation_start = int(iterations), int(adaptation_start)
        self.hooks = list(hooks)
        self.seed, self.max_grad_norm, self.precision = int(seed), max_grad_norm, precision
        self.accumulate, self.nan_policy, self.max_skipped = (
            int(accumulate),
            nan_policy,
            max_skipped,
        )
        self.collective = collective
        self.step_strategy = step_strategy or StepStrategy()
        self.step_strategy.check(self)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        #: number of completed iterations (the index of the next one)
        self.step = 0
        #: iterations whose optimiser step was skipped for NaN / Inf
        self.skipped_steps = 0
        #: the signal that stopped the run (None while it runs or after it finished)
        self.interrupted_by: str | None = None
        self._stop_signal: str | None = None
        self._stepped = True  # whether the last iteration took its optimiser step
        self._snapshot: list[Tensor] = []
        self._loss_floats: tuple[int, dict[str, float]] | None = None

    # ----------------------------------------------------------------------------- running
    def run(self) -> None:
        """Train from ``self.step`` to ``self.iterations``.

        Raises:
            TrainingInterrupted: a stop request (SIGTERM, SIGINT) ended the run early.
            NumericalError: see the class documentation.
            DatasetError: a batch could not be loaded; the hooks ran first (a checkpointer
                saves the state before that iteration, ``interrupted_by`` says why).
        """
        self.collective.broadcast_module(self.student)
        self.collective.broadcast_module(self.method)
        restore = self._catch_signals()
        try:
            for hook in self.hooks:
                hook.before_run(self)
            while self.step < self.iterations and self._stop_signal is None:
                try:
                    losses = self.train_step()
                except DatasetError:  # a bad file met mid-run: save (hooks), then report it
                    self.interrupted_by = "a data error"
                    for hook in self.hooks:
                        hook.after_run(self)
                    raise
                self.step += 1
                for hook in self.hooks:
                    hook.after_step(self, losses)
            self.interrupted_by = self._stop_signal
            for hook in self.hooks:
                hook.after_run(self)
        finally:
            restore()
        if self.interrupted_by is not None:
            raise TrainingInterrupted(self.interrupted_by, self.step)

    def train_step(self) -> dict[str, Tensor]:
        """One iteration; returns the detached loss of every term (and named part)."""
        step = self.step
        positions = self.source.state_dict(), self.target.state_dict()
        try:  # the batches first: a bad file leaves the loop as it was before the iteration
            contexts = [self.context(step, micro) for micro in range(self.accumulate)]
        except DatasetError:
            self.source.load_state_dict(positions[0])
            self.target.load_state_dict(positions[1])
            raise
        self.student.train()
        self.method.train()
        if self.teacher is not None and (step == 0 or self._stepped):
            self.teacher.update(self.student, step)
        if self.nan_policy == "skip":  # a skipped step restores the BatchNorm statistics
            self._snapshot_buffers()
        self.optimizer.zero_grad(set_to_none=True)
        return self.step_strategy(self, contexts, self.active_terms(step))

    def active_terms(self, step: int) -> list[tuple[str, LossTerm]]:
        """The terms that run at ``step`` (those using target data from ``adaptation_start``)."""
        adapting = step >= self.adaptation_start
        return [(n, t) for n, t in self.method if adapting or not t.uses_target]

    def context(self, step: int, micro: int = 0) -> IterationContext:
        """Draw the next source and target batches and wrap them for the loss terms."""
        source = self._to_device(next(self.source))
        target = self._to_device(next(self.target))
        c = self.collective
        layout = (self.seed, c.rank, c.world_size, micro, self.accumulate)
        return IterationContext(
            step, self.task, self.student, source, target, self.teacher, self.adaptation_start,
            *layout, mean=c.mean if c.world_size > 1 else None,
        )  # fmt: skip

    def backward(
        self, contexts: list[IterationContext], terms: list[tuple[str, LossTerm]]
    ) -> dict[str, Tensor]:
        """``backward_terms`` for every micro-batch; the losses averaged over them."""
        per_micro = [self.backward_terms(ctx, terms) for ctx in contexts]
        return {k: torch.stack([m[k] for m in per_micro]).mean() for k in per_micro[0]}

    def backward_terms(
        self, ctx: IterationContext, terms: list[tuple[str, LossTerm]]
    ) -> dict[str, Tensor]:
        """Compute ``terms`` in order and back-propagate each on its own; the terms reading
        one ``SharedForward`` run together, at the place of the first of them, and their
        summed losses are back-propagated once. Returns the detached losses by name.

        Raises:
            ConfigError: two terms report a loss under the same name.
        """
        losses: dict[str, Tensor] = {}
        for branch in _branches(terms):
            parts: list[Tensor] = []
            for name, term in branch:
                ctx.term = name
                with self.autocast():
                    out = term(ctx)
                named = out if isinstance(out, dict) else {name: out}
                if set(named) & set(losses):
                    clash = sorted(set(named) & set(losses))
                    raise ConfigError(f"two loss terms report a loss named {clash}; rename one")
                losses.update({k: v.detach().float() for k, v in named.items()})
                parts.extend(named.values())
            total = sum(parts)
            if isinstance(total, Tensor) and total.requires_grad:
                self.scaler.scale(total / self.accumulate).backward()
        return losses

    def finish_step(
        self, losses: dict[str, Tensor], restore: Callable[[], None] | None = None
    ) -> None:
        """Average the gradients over processes and call ``restore`` (e.g. to put perturbed
        weights back); then step (clip, optimiser, scheduler) if the numerics are sound, or
        skip the step under ``nan_policy``.

        Raises:
            NumericalError: see the class documentation.
        """
        self.collective.average_gradients(self.parameters())
        if restore is not None:
            restore()
        self._stepped = self._check(losses)
        if self._stepped:
            self.optimizer_step()
            return
        self.optimizer.zero_grad(set_to_none=True)
        if self._snapshot:
            torch._foreach_copy_(self._buffers(), self._snapshot)
        self.skipped_steps += 1
        if self.scheduler is not None:  # the schedule follows the iteration, stepped or not
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler"))
                self.scheduler.step()
        if self.skipped_steps >= 5 and self.skipped_steps > self.max_skipped * (self.step + 1):
            raise NumericalError(
                f"{self.skipped_steps} of the first {self.step + 1} iterations had NaN or Inf "
                f"losses or gradients and were skipped, more than max_skipped="
                f"{self.max_skipped}; lower the learning rate, clip gradients (max_grad_norm) "
                "or use precision=fp32"
            )

    def optimizer_step(self) -> None:
        """Clip (optionally), step the optimiser and the scheduler."""
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

    def loss_floats(self, losses: dict[str, Tensor]) -> dict[str, float]:
        """The losses of the iteration just run as floats, averaged over processes (every
        process must ask at the same iterations): one host synchronisation and one collective
        per iteration, however many hooks ask."""
        if self._loss_floats is None or self._loss_floats[0] != self.step:
            values = [v.float().reshape(()) for v in losses.values()]
            floats = self.collective.mean(torch.stack(values)).tolist() if values else []
            self._loss_floats = (self.step, dict(zip(losses, floats, strict=True)))
        return self._loss_floats[1]

    def emit(self, record: dict[str, Any]) -> None:
        """Hand a record (e.g. evaluation results) to every hook's ``on_record``."""
        for hook in self.hooks:
            hook.on_record(self, record)

    def request_stop(self, reason: str = "a stop request") -> None:
        """Finish the current iteration, then stop (what SIGTERM / SIGINT do)."""
        self._stop_signal = reason

    def lr(self) -> float:
        """The learning rate of the first parameter group."""
        return float(self.optimizer.param_groups[0]["lr"])

    def parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser updates."""
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _check(self, losses: dict[str, Tensor]) -> bool:
        """Whether the numerics allow this iteration's step, with the stop requests of every
        process: one collective and one host synchronisation (none alone without checks)."""
        stop = float(self._stop_signal is not None)
        if self.nan_policy == "ignore":
            if self.collective.world_size > 1 and self.collective.mean(torch.tensor([stop])) > 0:
                self._stop_signal = self._stop_signal or "a stop request on another process"
            return True
        params = self.parameters()
        grads = [p.grad for p in params if p.grad is not None]
        named = {n: ~torch.isfinite(v).all() for n, v in losses.items()}
        named["weights"] = ~torch.isfinite(torch.stack(torch._foreach_norm(params))).all()
        if grads and not self.scaler.is_enabled():
            named["gradients"] = ~torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()
        flags = torch.stack([torch.full((), stop, device=self.device), *named.values()])
        bad = self.collective.mean(flags.float()).tolist()
        if bad[0] > 0:
            self._stop_signal = self._stop_signal or "a stop request on another process"
        faulty = [n for n, b in zip(named, bad[1:], strict=True) if b > 0]
        if "weights" in faulty:
            raise NumericalError(
                f"the optimiser step of iteration {self.step} made weights NaN or Inf; no "
                "checkpoint holds them. Lower the learning rate or clip gradients "
                "(max_grad_norm)"
            )
        if faulty and self.nan_policy == "stop":
            raise NumericalError(
                f"the loss '{faulty[0]}' is NaN or Inf at iteration {self.step + 1} (also: "
                f"{faulty[1:] or 'nothing else'}); no update was made. Lower the learning "
                "rate, clip gradients (max_grad_norm), use precision=fp32, or set "
                "nan_policy=skip to skip such iterations"
            )
        return not faulty

    def _buffers(self) -> list[Tensor]:
        models = (unwrap(self.student), self.method, self.teacher)
        return [b for m in models if m is not None for b in m.buffers()]

    def _snapshot_buffers(self) -> None:
        buffers = self._buffers()
        if len(self._snapshot) != len(buffers):
            self._snapshot = [b.clone() for b in buffers]
        elif buffers:
            torch._foreach_copy_(self._snapshot, buffers)

    def _catch_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, lambda signum, _: self.request_stop(signal.Signals(signum).name))

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _to_device(self, batch: Any) -> Any:
        batch = move_to(batch, self.device)
        if self.channels_last:
            images, targets = split_sample(batch)
            if isinstance(images, Tensor) and images.dim() == 4:
                images = images.contiguous(memory_format=torch.channels_last)
                batch = images if targets is None else (images, targets)
        return batch

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything the next iteration depends on, except the global random generators
        (``mic.training.Checkpointer`` adds those of every process)."""
        state: dict[str, Any] = {
            "step": self.step,
            "student": unwrap(self.student).state_dict(),
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "source": self.source.state_dict(),
            "target": self.target.state_dict(),
            "scaler": self.scaler.state_dict(),
            "skipped_steps": self.skipped_steps,
            "stepped": self._stepped,
        }
        if self.teacher is not None:
            state["teacher"] = self.teacher.state_dict()
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        unwrap(self.student).load_state_dict(state["student"])
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.teacher is not None and "teacher" in state:
            self.teacher.load_state_dict(state["teacher"])
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        for name in ("source", "target"):
            if name in state:
                getattr(self, name).load_state_dict(state[name])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self._stepped = bool(state.get("stepped", True))
        self.step = int(state["step"])


def _branches(terms: list[tuple[str, LossTerm]]) -> list[list[tuple[str, LossTerm]]]:
    """The terms grouped into back-propagation branches: each term alone, except that the
    terms reading one ``SharedForward`` form one branch at the place of the first of them."""
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


class TrainingInterrupted(MicError):
    """The run stopped early on a signal (after saving through its hooks)."""

    def __init__(self, reason: str, step: int) -> None:
        super().__init__(f"stopped by {reason} after iteration {step}")
        self.reason, self.step = reason, step


class NumericalError(MicError, FloatingPointError):
    """NaN or Inf that ``nan_policy`` does not skip (or too many skipped iterations)."""


def _device_of(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")
