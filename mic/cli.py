"""The ``mic-train`` command's entry point: ``mic.train.main``, with a Ctrl-C that arrives
outside the training iterations (while torch and the rest are imported, the run is built, or
it finishes) reported as one line instead of Python's traceback. Imports nothing heavy itself.

A Ctrl-C there raises ``KeyboardInterrupt`` and is also recorded: some imports swallow the
exception or turn it into another error (a half-imported module, a RecursionError), and the
record keeps such a run from training on as if nothing had been pressed."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Any, NoReturn

#: the line mic-train prints when a Ctrl-C stops it outside the training iterations
INTERRUPTED = (
    "mic: interrupted while starting up or finishing (outside the training iterations); "
    "what was saved before stays in the run folder"
)

_RECEIVED: list[int] = []  # the Ctrl-Cs received outside the training iterations


def _interrupt(signum: int, _: Any) -> None:
    _RECEIVED.append(signum)
    raise KeyboardInterrupt


def catch_interrupts() -> None:
    """From now on, record every Ctrl-C (SIGINT) and SIGTERM (a scheduler's stop) before
    raising ``KeyboardInterrupt`` (the training guard's own handlers replace these while the
    iterations run); a SIGTERM killed the process without a word."""
    _on_stop_signals(_interrupt)


def leave_at_next_signal(finished: bool = False) -> None:
    """The command has ended and said so (its run saved, or stopped and its checkpoint named):
    from now on a Ctrl-C or SIGTERM ends the process at once, not with the tracebacks of the
    clean-up it interrupts (a DataLoader joining its workers): with status 0 where the
    command ``finished`` (nothing is left to do: a scheduler's SIGTERM must not mark a done
    job failed), else with 128 + the signal."""
    _on_stop_signals(_leave_finished if finished else _leave)


def _on_stop_signals(handler: Any) -> None:
    """``handler`` for Ctrl-C (SIGINT) and SIGTERM, from the main thread (the only one in
    which Python sets handlers)."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)


def _leave(signum: int, _: Any, status: int | None = None) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # (a write the signal interrupted)
            stream.flush()
    os._exit(128 + signum if status is None else status)


def _leave_finished(signum: int, frame: Any) -> None:
    _leave(signum, frame, 0)


def interrupted() -> bool:
    """Whether a Ctrl-C arrived outside the training iterations, even one whose
    ``KeyboardInterrupt`` a library caught."""
    return bool(_RECEIVED)


def exit_interrupted() -> NoReturn:
    """Print ``INTERRUPTED`` (naming a SIGTERM as such) and exit with 128 + the signal, as a
    shell reports it."""
    signum = _RECEIVED[-1] if _RECEIVED else signal.SIGINT
    said = INTERRUPTED.replace("interrupted", "stopped by SIGTERM", 1)
    said = INTERRUPTED if signum == signal.SIGINT else said
    print(said, file=sys.stderr)
    record = logging.LogRecord("mic", logging.WARNING, __file__, 0, said, None, None)
    for handler in logging.getLogger().handlers:  # the run's log, where one was opened
        if getattr(handler, "mic_run_log", False) and handler.stream is not None:  # (RUN_LOG_MARK)
            handler.handle(record)  # (not one a refused run closed, its log put back)
    sys.exit(128 + signum)


def main() -> None:
    catch_interrupts()
    try:
        from mic.train import main as train
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt) or interrupted():
            exit_interrupted()
        raise
    train()
