"""The generic adaptation loop: one loop for every task and every UDA method."""

from __future__ import annotations

import re
import signal
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mic.core.data import Forever, move_to, split_sample
from mic.core.distributed import (
    all_reduce_gradients,
    all_reduce_mean,
    broadcast_state,
    gather_objects,
    info,
)
from mic.core.errors import CheckpointError, ConfigError, MicError
from mic.core.method import UDAMethod
from mic.core.optim import SAM
from mic.core.rng import rng_state, set_rng_state
from mic.core.task import PseudoLabels, Task
from mic.core.teacher import Teacher, unwrap


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

    With ``accumulate > 1``, (2) and (3) run for that many micro-batches (each loss divided
    by their number) before the one optimiser step. Under ``torchrun`` the gradients are
    averaged across processes before (4) (see ``mic.core.distributed``).

    Numerical faults: with ``nan_policy="skip"`` (default) an iteration whose loss or
    gradients hold NaN or Inf takes no optimiser step (the student, and so the teacher that
    follows it, stay as they were; counted in ``skipped_steps`` and logged); ``"stop"`` raises
    ``NumericalError`` naming the branch and iteration; ``"ignore"`` checks nothing (and
    saves the one host synchronisation per iteration that the check costs).

    SIGTERM and SIGINT (when ``run`` is called from the main thread) finish the current
    iteration, let the hooks run (the checkpointer saves), and raise ``TrainingInterrupted``.

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
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``: every branch's forward (and the
            teacher's) runs under ``torch.autocast`` in that type; fp16 adds a GradScaler.
        accumulate: micro-batches per optimiser step (gradient accumulation).
        nan_policy: ``"skip"``, ``"stop"`` or ``"ignore"`` (see above).
        channels_last: keep the student and the images in channels-last memory format.
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
        channels_last: bool = False,
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
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        if precision == "fp16" and isinstance(optimizer, SAM):
            raise ConfigError(
                "precision=fp16 cannot be combined with a SAM optimiser (its loss scaling "
                "would have to unscale twice per iteration); use precision=bf16"
            )
        if int(accumulate) < 1:
            raise ConfigError(f"accumulate must be at least 1, got {accumulate}")
        if nan_policy not in ("skip", "stop", "ignore"):
            raise ConfigError(f"nan_policy must be 'skip', 'stop' or 'ignore', got {nan_policy!r}")
        self.task = task
        self.device = torch.device(device) if device is not None else _device_of(student)
        self.student = student.to(self.device)
        self.channels_last = channels_last
        if channels_last:
            self.student = self.student.to(memory_format=torch.channels_last)
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
        self.precision = precision
        self.accumulate = int(accumulate)
        self.nan_policy = nan_policy
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        #: number of completed iterations (the index of the next one)
        self.step = 0
        #: iterations whose optimiser step was skipped for NaN / Inf
        self.skipped_steps = 0
        #: the signal that stopped the run (None while it runs or after it finished)
        self.interrupted_by: str | None = None
        self._stop_signal: str | None = None
        self._loss_floats: tuple[int, dict[str, float]] | None = None

    # ----------------------------------------------------------------------------- running
    def run(self) -> None:
        """Train from ``self.step`` to ``self.iterations``."""
        broadcast_state(self.student)
        broadcast_state(self.method)
        restore = self._catch_signals()
        try:
            for hook in self.hooks:
                hook.before_run(self)
            while self.step < self.iterations and not self._should_stop():
                losses = self.train_step()
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

    def loss_floats(self, losses: dict[str, Tensor]) -> dict[str, float]:
        """The losses of the iteration just run as floats, under ``torchrun`` their mean over
        processes (every process must ask at the same iterations): one host synchronisation
        and one all-reduce per iteration, however many hooks ask."""
        if self._loss_floats is None or self._loss_floats[0] != self.step:
            values = [v.float().reshape(()) for v in losses.values()]
            floats = all_reduce_mean(torch.stack(values)).tolist() if values else []
            self._loss_floats = (self.step, dict(zip(losses, floats, strict=True)))
        return self._loss_floats[1]

    def request_stop(self, reason: str = "a stop request") -> None:
        """Finish the current iteration, then stop (what SIGTERM / SIGINT do)."""
        self._stop_signal = reason

    def _should_stop(self) -> bool:
        flag = torch.tensor([1.0 if self._stop_signal else 0.0], device=self._comm_device())
        if all_reduce_mean(flag).item() > 0 and self._stop_signal is None:
            self._stop_signal = "a stop request on another process"
        return self._stop_signal is not None

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

    def active_terms(self, step: int) -> list[tuple[str, Any]]:
        adapting = step >= self.adaptation_start
        return [(n, t) for n, t in self.method if adapting or not t.uses_target]

    def context(self, step: int) -> IterationContext:
        """Draw the next source and target batches and wrap them for the loss terms."""
        source = self._to_device(next(self.source))
        target = self._to_device(next(self.target))
        return IterationContext(self, step, source, target)

    def train_step(self) -> dict[str, Tensor]:
        """One iteration; returns the detached loss of every term (and named part)."""
        step = self.step
        self.student.train()
        self.method.train()
        if self.teacher is not None:
            self.teacher.update(self.student, step)
        contexts = [self.context(step) for _ in range(self.accumulate)]
        self.optimizer.zero_grad(set_to_none=True)
        terms = self.active_terms(step)
        sam = isinstance(self.optimizer, SAM)
        if sam:
            first = [(n, t) for n, t in terms if t.sam_first_pass]
            for ctx in contexts:
                ctx.begin_pass("first")
                self.backward_terms(ctx, first)
            all_reduce_gradients(self._params())
            self.optimizer.first_step(zero_grad=True)
            for ctx in contexts:
                ctx.begin_pass("second")
        per_micro = [self.backward_terms(ctx, terms) for ctx in contexts]
        losses = {k: torch.stack([m[k] for m in per_micro]).mean() for k in per_micro[0]}
        all_reduce_gradients(self._params())
        if self._numerics_ok(losses, step):
            self.optimizer_step()
        else:
            if sam:
                self.optimizer.restore()
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_steps += 1
            if self.scheduler is not None:  # the schedule follows the iteration, stepped or not
                with warnings.catch_warnings():
                    message = re.escape("Detected call of `lr_scheduler.step()`")
                    warnings.filterwarnings("ignore", message)
                    self.scheduler.step()
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
            with self.autocast():
                out = term(ctx)
            parts = out if isinstance(out, dict) else {name: out}
            losses.update({k: v.detach().float() for k, v in parts.items()})
            total = sum(parts.values())
            group = term.backward_group
            if group:
                pending.setdefault(group, []).append(total)
                if i < last[group]:
                    continue
                total = sum(pending.pop(group))
            if isinstance(total, Tensor) and total.requires_grad:
                self.scaler.scale(total / self.accumulate).backward()
        return losses

    def autocast(self) -> torch.autocast:
        """The mixed-precision context every branch's forward runs in."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def optimizer_step(self) -> None:
        """Clip (optionally), step the optimiser and the scheduler."""
        if self.max_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self._params(), self.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()

    def _numerics_ok(self, losses: dict[str, Tensor], step: int) -> bool:
        """False (or NumericalError) when a loss, or a gradient, is NaN or Inf. One host
        synchronisation; with fp16 the GradScaler handles overflowing gradients itself."""
        if self.nan_policy == "ignore":
            return True
        names = list(losses)
        flags = [~torch.isfinite(v).all() for v in losses.values()]
        grads = [p.grad for p in self._params() if p.grad is not None]
        if grads and not self.scaler.is_enabled():
            names.append("gradients")
            flags.append(~torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())
        if not flags:
            return True
        bad = all_reduce_mean(torch.stack(flags).float().to(self._comm_device())).tolist()
        faulty = [n for n, b in zip(names, bad, strict=True) if b > 0]
        if not faulty:
            return True
        if self.nan_policy == "stop":
            raise NumericalError(
                f"the loss '{faulty[0]}' is NaN or Inf at iteration {step} (also: "
                f"{faulty[1:] or 'nothing else'}); no update was made. Lower the learning "
                "rate, clip gradients (max_grad_norm), use precision=fp32, or set "
                "nan_policy=skip to skip such iterations"
            )
        return False

    def _params(self) -> list[nn.Parameter]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _comm_device(self) -> torch.device:
        # NCCL reduces CUDA tensors only; gloo reduces CPU tensors
        return self.device if info().enabled and self.device.type == "cuda" else torch.device("cpu")

    def _to_device(self, batch: Any) -> Any:
        batch = move_to(batch, self.device)
        if self.channels_last:
            images, targets = split_sample(batch)
            if isinstance(images, Tensor) and images.dim() == 4:
                images = images.contiguous(memory_format=torch.channels_last)
                batch = images if targets is None else (images, targets)
        return batch

    def emit(self, record: dict[str, Any]) -> None:
        """Hand a record (e.g. evaluation results) to every hook."""
        for hook in self.hooks:
            hook.on_record(self, record)

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything the next iteration depends on (RNG states of every process included:
        call it on every process under ``torchrun``, it gathers them)."""
        state: dict[str, Any] = {
            "step": self.step,
            "student": unwrap(self.student).state_dict(),
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "source": self.source.state_dict(),
            "target": self.target.state_dict(),
            "scaler": self.scaler.state_dict(),
            "skipped_steps": self.skipped_steps,
            "rng": gather_objects(rng_state()),
        }
        if self.teacher is not None:
            state["teacher"] = self.teacher.state_dict()
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unwrap(self.student).load_state_dict(state["student"])
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
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
        rngs = state.get("rng")
        if rngs:
            rank = info().rank
            if rank >= len(rngs):
                raise CheckpointError(
                    f"the checkpoint holds the random states of {len(rngs)} processes, this is "
                    f"process {rank}: resume with the same number of processes"
                )
            set_rng_state(rngs[rank])
        self.step = int(state["step"])

    def lr(self) -> float:
        """The learning rate of the first parameter group."""
        return float(self.optimizer.param_groups[0]["lr"])


PRECISIONS = {"fp32", "bf16", "fp16"}


class TrainingInterrupted(MicError):
    """The run stopped early on a signal (after saving through its hooks)."""

    def __init__(self, reason: str, step: int) -> None:
        super().__init__(f"stopped by {reason} after iteration {step}")
        self.reason, self.step = reason, step


class NumericalError(MicError, FloatingPointError):
    """A loss or gradient became NaN or Inf and ``nan_policy`` is ``"stop"``."""


def _device_of(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")
