"""What watches a run (the loop's ``Guard``): stop signals and numerical faults."""

from __future__ import annotations

import collections
import contextlib
import signal
import threading
import warnings
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import Tensor

from mic.core.errors import ConfigError, MicError
from mic.core.loop import AdaptationLoop, Guard
from mic.core.teacher import unwrap

NanPolicy = Literal["skip", "stop", "ignore"]
NAN_POLICIES = ("skip", "stop", "ignore")
#: torch's warning when a schedule steps after an optimiser step that was skipped (this
#: guard's, or fp16's loss scaler's while it finds its scale): the loop steps the schedule
#: every iteration, as torch's mixed-precision recipe does, so its advice fits no mic run
SCHEDULE_WITHOUT_STEP = r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`"
#: what to look at when losses are NaN or Inf (``nan_causes`` adds fp32 to mixed precision)
NAN_CAUSES = (
    "look for NaN or Inf in the images or the targets (e.g. depth maps with NaN where "
    "nothing was measured; the data check before training samples one image per split), lower "
    "the learning rate or clip gradients (max_grad_norm)"
)


def all_finite(tensors: list[Tensor]) -> Tensor:
    """Whether every value of ``tensors`` is finite, as a 0-d bool tensor on their device
    (one fused norm per tensor, no host synchronisation; True for no tensors)."""
    if not tensors:
        return torch.tensor(True)
    return torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all()


def nan_causes(loop: AdaptationLoop) -> str:
    """``NAN_CAUSES``, with precision=fp32 for a run in bf16 or fp16."""
    return NAN_CAUSES if loop.precision == "fp32" else f"{NAN_CAUSES}, or use precision=fp32"


#: the signals that stop a run cleanly (``TrainingGuard``); each has a slot in the stop flags
#: that the processes of a ``torchrun`` group share, so that every process knows which one
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(MicError):
    """The run stopped early on a stop request (after saving through its hooks).

    Attributes:
        reason: what stopped it: a signal's name (``"SIGTERM"``), ``"<signal name> on another
            process"`` under ``torchrun``, or the reason given to ``loop.request_stop``.
        step: the iteration it stopped after.
    """

    def __init__(self, reason: str, step: int) -> None:
        super().__init__(f"stopped by {reason} after iteration {step}")
        self.reason, self.step = reason, step

    @property
    def stop_signal(self) -> signal.Signals | None:
        """The signal that stopped the run, on this process or another one (None: a stop
        requested otherwise)."""
        words = self.reason.split()
        return signal.Signals.__members__.get(words[0]) if words else None

    @property
    def exit_code(self) -> int:
        """The process's exit status: 128 + the signal number, as a process killed by the
        signal would report it (on every process of a ``torchrun`` group, so that a scheduler
        sees a pre-emption); 1 for a stop without a signal."""
        sig = self.stop_signal
        return 128 + int(sig) if sig is not None else 1

    def __reduce__(self) -> tuple[type[TrainingInterrupted], tuple[str, int]]:
        # rebuilt from its arguments, so that it crosses process boundaries (a run in a
        # process pool stopped by Ctrl-C reaches the parent as itself)
        return type(self), (self.reason, self.step)


class StoppedAtOnce(KeyboardInterrupt):
    """A second Ctrl-C (SIGINT) while a run was finishing the iteration its first one asked
    to stop after (an iteration, a ``torch.compile`` or a save that takes long): the run
    stops where it is, without saving; the checkpoints saved before stay.

    Attributes:
        step: the iterations done when it stopped.
    """

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped at once by a second SIGINT after iteration {step}, unsaved")
        self.step = step

    def __reduce__(self) -> tuple[type[StoppedAtOnce], tuple[int]]:
        return type(self), (self.step,)  # (rebuilt from its step, across processes)


class NumericalError(MicError, FloatingPointError):
    """NaN or Inf that ``nan_policy`` does not skip (or too many skipped iterations)."""


class TrainingGuard(Guard):
    """Stop signals and NaN / Inf policy of ``mic-train`` (docs/training.md).

    SIGTERM and SIGINT (when ``run`` is called from the main thread) finish the iteration, let
    the hooks save, and raise ``TrainingInterrupted``; a second SIGINT before then raises
    ``StoppedAtOnce`` where the run is, unsaved (one process); a stop request on one process stops
    every process (a signal's name travels with it: ``TrainingInterrupted.exit_code`` is the
    same on every process). Each iteration's check costs one collective and one host
    synchronisation, and the check of the weights after its optimiser step a second one.
    Under ``"skip"`` an iteration with non-finite losses or gradients changes nothing but the
    schedule (weights, optimiser state, every BatchNorm buffer stay as they were), and more
    than ``max_skipped`` such iterations (from the fifth), or every iteration of a shorter
    run, raise ``NumericalError``; ``"stop"`` raises it at the first;
    ``"ignore"`` checks nothing. Under both checking policies, weights made non-finite by a
    step raise it right after that step, before the hooks score or save them.

    Args:
        nan_policy: ``"skip"`` (default), ``"stop"`` or ``"ignore"``.
        max_skipped: the share of skipped iterations past which ``"skip"`` stops, in [0, 1]
            (default 0.1).
        warn_skipped: warn at the end of ``run`` of the iterations it skipped, if any (False:
            the caller reports ``loop.skipped_steps``, as ``mic-train``'s summary does).

    Raises:
        ConfigError: an unknown policy or ``max_skipped`` outside [0, 1].

    Warns:
        UserWarning: (``warn_skipped``) a run that skipped iterations and did not stop.
    """

    def __init__(
        self, nan_policy: NanPolicy = "skip", max_skipped: float = 0.1, warn_skipped: bool = True
    ) -> None:
        if nan_policy not in NAN_POLICIES:
            raise ConfigError(f"nan_policy must be one of {NAN_POLICIES}")
        if not 0 <= max_skipped <= 1:
            raise ConfigError(f"max_skipped must lie in [0, 1], got {max_skipped}")
        self.nan_policy, self.max_skipped = nan_policy, max_skipped
        self.warn_skipped = warn_skipped
        self._snapshot: list[Tensor] = []
        self._faulty: collections.Counter[str] = collections.Counter()  # skipped: what was NaN
        #: a signal received under torchrun, not yet shared with the other processes
        self._signalled: str | None = None

    @contextlib.contextmanager
    def running(self, loop: AdaptationLoop) -> Iterator[None]:
        """Catch SIGTERM and SIGINT during ``run``; raise ``TrainingInterrupted`` after it when
        a stop request ended it.

        Under ``torchrun`` a signal becomes this process's stop request at the next check
        (``allow_step``), which every process passes in the same iteration: a signal that
        arrived after that iteration's check must not stop this process alone.
        """
        previous = {}
        shared = loop.collective.world_size > 1
        self._signalled = None
        start, skipped = loop.step, loop.skipped_steps

        def stop(signum: int, _: Any) -> None:
            name = signal.Signals(signum).name
            if shared:
                self._signalled = self._signalled or name
            elif name == "SIGINT" and loop.stop_reason == name:  # pressed again: at once
                raise StoppedAtOnce(loop.step)
            else:
                loop.request_stop(name)

        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                previous[sig] = signal.getsignal(sig)
                signal.signal(sig, stop)
        checked = None  # each step's weights, before the hooks save or score them
        optimizer = getattr(loop, "optimizer", None)
        if self.nan_policy != "ignore" and optimizer is not None:
            checked = optimizer.register_step_post_hook(lambda *_: self._check_weights(loop))
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if checked is not None:
                checked.remove()
        if loop.interrupted_by is not None:
            raise TrainingInterrupted(loop.interrupted_by, loop.step)
        ran = loop.step - start
        if ran > 0 and loop.skipped_steps - skipped == ran:  # too few for max_skipped to stop
            raise NumericalError(
                f"every one of the {ran} iterations run had NaN or Inf losses or gradients and "
                f"was skipped, so nothing trained ({self._which()}); {nan_causes(loop)}"
            )
        if ran > 0 and loop.skipped_steps > skipped and self.warn_skipped:  # (fewer than 5)
            warnings.warn(
                f"{loop.skipped_steps - skipped} of the {ran} iterations run had NaN or Inf "
                f"losses or gradients and took no optimiser step ({self._which()}); "
                f"{nan_causes(loop)}",
                stacklevel=4,  # (this generator, contextlib's exit, loop.run: its caller)
            )

    def before_step(self, loop: AdaptationLoop) -> None:
        if self.nan_policy != "skip":
            return
        buffers = _buffers(loop)
        if len(self._snapshot) != len(buffers):
            self._snapshot = [b.clone() for b in buffers]
        elif buffers:
            torch._foreach_copy_(self._snapshot, buffers)

    def allow_step(self, loop: AdaptationLoop, losses: dict[str, Tensor]) -> bool:
        """Whether the numerics allow the step, with every process's stop requests; a
        skipped step is undone here.

        Raises:
            NumericalError: see the class documentation.
        """
        if not self._faults(loop, losses):
            return True
        loop.optimizer.zero_grad(set_to_none=True)
        if self._snapshot:
            torch._foreach_copy_(_buffers(loop), self._snapshot)
        loop.skipped_steps += 1
        if loop.scheduler is not None:  # the schedule follows the iteration, stepped or not
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", SCHEDULE_WITHOUT_STEP)
                loop.scheduler.step()
        n = loop.step + 1
        if loop.skipped_steps >= 5 and loop.skipped_steps > self.max_skipped * n:
            raise NumericalError(
                f"{loop.skipped_steps} of the first {n} iterations had NaN or Inf losses or "
                f"gradients and were skipped, more than max_skipped={self.max_skipped} "
                f"({self._which()}); {nan_causes(loop)}"
            )
        return False

    def _faults(self, loop: AdaptationLoop, losses: dict[str, Tensor]) -> list[str]:
        """The names of the non-finite losses (and "gradients"): one collective, shared with
        the stop requests, and one host synchronisation (none alone under "ignore")."""
        if self._signalled is not None and loop.stop_reason is None:
            loop.request_stop(self._signalled)
        c, stop = loop.collective, _stop_flags(loop.stop_reason)
        if self.nan_policy == "ignore":
            if c.world_size > 1:
                _follow_stop(loop, c.mean(torch.tensor(stop)).tolist())
            return []
        params = loop.parameters()
        grads = [p.grad for p in params if p.grad is not None]
        named = {n: ~torch.isfinite(v).all() for n, v in losses.items()}
        named["weights"] = ~all_finite(params)
        if grads and not loop.scaler.is_enabled():
            named["gradients"] = ~all_finite(grads)
        faults = torch.stack([*named.values()]).float()
        flags = torch.cat([torch.tensor(stop, device=loop.device), faults])
        bad = c.mean(flags).tolist()
        _follow_stop(loop, bad[: len(stop)])
        faulty = [n for n, b in zip(named, bad[len(stop) :], strict=True) if b > 0]
        if "weights" in faulty:
            raise NumericalError(
                f"the optimiser step of iteration {loop.step} made weights NaN or Inf; no "
                "checkpoint holds them. Lower the learning rate or clip gradients "
                "(max_grad_norm)"
            )
        if faulty and self.nan_policy == "stop":
            what = {"gradients": "the gradients are"}.get(faulty[0], f"the loss '{faulty[0]}' is")
            raise NumericalError(
                f"{what} NaN or Inf at iteration {loop.step + 1} (also: "
                f"{faulty[1:] or 'nothing else'}); no update was made. {NAN_CAUSES[0].upper()}"
                f"{nan_causes(loop)[1:]}, or set nan_policy=skip to skip such iterations"
            )
        self._faulty.update(faulty)
        return faulty

    def _check_weights(self, loop: AdaptationLoop) -> None:
        """Raise ``NumericalError`` when the optimiser step just taken made weights NaN or
        Inf (one host synchronisation; the weights are the same on every process)."""
        if not all_finite(loop.parameters()):
            raise NumericalError(
                f"the optimiser step of iteration {loop.step + 1} made weights NaN or Inf; no "
                "checkpoint holds them. Lower the learning rate or clip gradients "
                "(max_grad_norm); an optimizer.eps of 0 divides 0 by 0 where a gradient is 0"
            )

    @property
    def non_finite(self) -> dict[str, int]:
        """What was NaN or Inf in the skipped iterations (a loss's name, ``"gradients"``) ->
        in how many, the most frequent first; kept in checkpoints (``state_dict``), so that a
        resumed run counts the iterations before it too."""
        return dict(self._faulty.most_common())

    def state_dict(self) -> dict[str, int]:
        return self.non_finite

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._faulty = collections.Counter({str(k): int(v) for k, v in state.items()})

    def _which(self) -> str:
        """The non-finite values of the skipped iterations, the most frequent first."""
        counts = self._faulty.most_common()
        return "NaN or Inf: " + ", ".join(
            f"{n!r} in {c} iteration{'s' * (c != 1)}" for n, c in counts
        )


#: why a process stops when another one was asked to stop without a signal
OTHER_STOP = "a stop request on another process"


def _stop_flags(reason: str | None) -> list[float]:
    """This process's stop request as flags: [any stop, then one per ``STOP_SIGNALS``]."""
    return [float(reason is not None), *(float(reason == s.name) for s in STOP_SIGNALS)]


def _follow_stop(loop: AdaptationLoop, flags: list[float]) -> None:
    """Stop this process when another one asked to (``flags``: ``_stop_flags`` averaged over
    the processes), giving the signal it received as the reason."""
    if flags[0] <= 0 or loop.stop_reason is not None:
        return
    sent = [s for s, f in zip(STOP_SIGNALS, flags[1:], strict=True) if f > 0]
    loop.request_stop(f"{sent[0].name} on another process" if sent else OTHER_STOP)


def _buffers(loop: AdaptationLoop) -> list[Tensor]:
    """The buffers (BatchNorm statistics ...) of the student, the method and the teacher."""
    models = (unwrap(loop.student), loop.method, loop.teacher)
    return [b for m in models if m is not None for b in m.buffers()]
