"""What watches a run (the loop's ``Guard``): stop signals and numerical faults."""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import warnings
from collections.abc import Iterator
from typing import Literal

import torch
from torch import Tensor

from mic.core.errors import ConfigError, MicError
from mic.core.loop import AdaptationLoop, Guard
from mic.core.teacher import unwrap

NanPolicy = Literal["skip", "stop", "ignore"]
NAN_POLICIES = ("skip", "stop", "ignore")


class TrainingInterrupted(MicError):
    """The run stopped early on a stop request (after saving through its hooks)."""

    def __init__(self, reason: str, step: int) -> None:
        super().__init__(f"stopped by {reason} after iteration {step}")
        self.reason, self.step = reason, step

    def __reduce__(self) -> tuple[type[TrainingInterrupted], tuple[str, int]]:
        # rebuilt from its arguments, so that it crosses process boundaries (a run in a
        # process pool stopped by Ctrl-C reaches the parent as itself)
        return type(self), (self.reason, self.step)


class NumericalError(MicError, FloatingPointError):
    """NaN or Inf that ``nan_policy`` does not skip (or too many skipped iterations)."""


class TrainingGuard(Guard):
    """Stop signals and NaN / Inf policy of ``mic-train`` (docs/training.md).

    SIGTERM and SIGINT (when ``run`` is called from the main thread) finish the iteration, let
    the hooks save, and raise ``TrainingInterrupted``; a stop request on one process stops
    every process. Each iteration's check costs one collective and one host synchronisation.
    Under ``"skip"`` an iteration with non-finite losses or gradients changes nothing but the
    schedule (weights, optimiser state, every BatchNorm buffer stay as they were), and more
    than ``max_skipped`` such iterations (from the fifth) raise ``NumericalError``; ``"stop"``
    raises it at the first; ``"ignore"`` checks nothing. Under both checking policies, weights
    made non-finite by a step raise it.

    Args:
        nan_policy: ``"skip"`` (default), ``"stop"`` or ``"ignore"``.
        max_skipped: the share of skipped iterations past which ``"skip"`` stops, in [0, 1]
            (default 0.1).

    Raises:
        ConfigError: an unknown policy or ``max_skipped`` outside [0, 1].
    """

    def __init__(self, nan_policy: NanPolicy = "skip", max_skipped: float = 0.1) -> None:
        if nan_policy not in NAN_POLICIES:
            raise ConfigError(f"nan_policy must be one of {NAN_POLICIES}")
        if not 0 <= max_skipped <= 1:
            raise ConfigError(f"max_skipped must lie in [0, 1], got {max_skipped}")
        self.nan_policy, self.max_skipped = nan_policy, max_skipped
        self._snapshot: list[Tensor] = []

    @contextlib.contextmanager
    def running(self, loop: AdaptationLoop) -> Iterator[None]:
        """Catch SIGTERM and SIGINT during ``run``; raise ``TrainingInterrupted`` after it when
        a stop request ended it."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.getsignal(sig)
                signal.signal(sig, lambda signum, _: loop.request_stop(signal.Signals(signum).name))
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if loop.interrupted_by is not None:
            raise TrainingInterrupted(loop.interrupted_by, loop.step)

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
                warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler"))
                loop.scheduler.step()
        n = loop.step + 1
        if loop.skipped_steps >= 5 and loop.skipped_steps > self.max_skipped * n:
            raise NumericalError(
                f"{loop.skipped_steps} of the first {n} iterations had NaN or Inf losses or "
                f"gradients and were skipped, more than max_skipped={self.max_skipped}; lower "
                "the learning rate, clip gradients (max_grad_norm) or use precision=fp32"
            )
        return False

    def _faults(self, loop: AdaptationLoop, losses: dict[str, Tensor]) -> list[str]:
        """The names of the non-finite losses (and "gradients"): one collective, shared with
        the stop requests, and one host synchronisation (none alone under "ignore")."""
        stop = float(loop.stop_reason is not None)
        c, other = loop.collective, "a stop request on another process"
        if self.nan_policy == "ignore":
            if c.world_size > 1 and c.mean(torch.tensor([stop])) > 0 and loop.stop_reason is None:
                loop.request_stop(other)
            return []
        params = loop.parameters()
        grads = [p.grad for p in params if p.grad is not None]
        named = {n: ~torch.isfinite(v).all() for n, v in losses.items()}
        named["weights"] = ~torch.isfinite(torch.stack(torch._foreach_norm(params))).all()
        if grads and not loop.scaler.is_enabled():
            named["gradients"] = ~torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()
        flags = torch.stack([torch.full((), stop, device=loop.device), *named.values()])
        bad = c.mean(flags.float()).tolist()
        if bad[0] > 0 and loop.stop_reason is None:
            loop.request_stop(other)
        faulty = [n for n, b in zip(named, bad[1:], strict=True) if b > 0]
        if "weights" in faulty:
            raise NumericalError(
                f"the optimiser step of iteration {loop.step} made weights NaN or Inf; no "
                "checkpoint holds them. Lower the learning rate or clip gradients "
                "(max_grad_norm)"
            )
        if faulty and self.nan_policy == "stop":
            raise NumericalError(
                f"the loss '{faulty[0]}' is NaN or Inf at iteration {loop.step + 1} (also: "
                f"{faulty[1:] or 'nothing else'}); no update was made. Lower the learning "
                "rate, clip gradients (max_grad_norm), use precision=fp32, or set "
                "nan_policy=skip to skip such iterations"
            )
        return faulty


def _buffers(loop: AdaptationLoop) -> list[Tensor]:
    """The buffers (BatchNorm statistics ...) of the student, the method and the teacher."""
    models = (unwrap(loop.student), loop.method, loop.teacher)
    return [b for m in models if m is not None for b in m.buffers()]
