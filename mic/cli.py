"""The ``mic-train`` command's entry point: ``mic.train.main``, with a Ctrl-C that arrives
outside the training iterations (while torch and the rest are imported, the run is built, or
it finishes) reported as one line instead of Python's traceback. Imports nothing heavy itself.

A Ctrl-C there raises ``KeyboardInterrupt`` and is also recorded: some imports swallow the
exception or turn it into another error (a half-imported module, a RecursionError), and the
record keeps such a run from training on as if nothing had been pressed."""

from __future__ import annotations

import argparse
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


class _Parser(argparse.ArgumentParser):
    """argparse's parser with mic's one error line: ``mic: error: ...`` and status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"mic: error: {message} ({self.prog} --help lists the arguments)", file=sys.stderr)
        sys.exit(2)


def score_parser() -> argparse.ArgumentParser:
    """``mic-score``'s arguments (here, to answer ``--help`` before torch is imported)."""
    parser = _Parser(
        prog="mic-score",
        description=(
            "Score a finished (or running) run's saved checkpoints as its evaluations did "
            "(mic.score_run), one line per checkpoint as it is scored, and say which of them "
            "each label-free validator, the labelled metric and the last pick (for the "
            "student, or the first scored model; among the checkpoints scored, not every "
            "evaluation of the run). Nothing is written unless --json is given."
        ),
        epilog=(
            "examples: mic-score runs/x  |  mic-score runs/x best.pt iter_00000500.pt "
            "--validators snd,bnm  |  mic-score runs/x dataset.root_target=/mnt/target "
            "--device auto --json scores.json  (docs/model_selection.md)"
        ),
    )
    parser.add_argument("run", help="the run folder (its hydra.run.dir, which holds config.yaml)")
    parser.add_argument(
        "items",
        nargs="*",
        default=[],  # (else argparse names it as required)
        metavar="CHECKPOINT | KEY=VALUE",
        help=(
            "checkpoints to score (best.pt, iter_00000500.pt: names in the run's checkpoints/, "
            "or paths; none: every one, by iteration), and settings of the data and the "
            "evaluation in Hydra's syntax: dataset.* but the class count and names and MIC's "
            "block size, eval.models, eval.adabn_batches, eval.validators, eval.validation.*, "
            "loader.test_batch_size, loader.num_workers (an argument with '=' is a setting "
            "unless it names a file)"
        ),
    )
    parser.add_argument(
        "--validators",
        metavar="NAME,...",
        help=(
            "the label-free validators to compute, comma-separated (entropy, im, snd, bnm, "
            "masked_agreement; '' for none); default: the run's eval.validators"
        ),
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help=(
            "where the models are scored: cpu (default), cuda, cuda:N, auto; the run's own "
            "device gives its records again"
        ),
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        help=(
            "write the records (by iteration) and every model's picks to FILE (strict JSON): "
            "a new file or an earlier mic-score output, not in the run's checkpoints/"
        ),
    )
    return parser


def score() -> None:
    """``mic-score``: ``mic.scoring.main``, a Ctrl-C or SIGTERM (also while torch and the rest
    are imported) reported as one line."""
    catch_interrupts()
    score_parser().parse_intermixed_args()  # (--help, a missing run folder: said at once)
    try:
        from mic.scoring import main as score_main

        score_main()  # (a reader that stops reading its lines, | head: mic.scoring._Lines)
        leave_at_next_signal(finished=True)  # (a Ctrl-C now: the scores are out)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt) or interrupted():
            signum = _RECEIVED[-1] if _RECEIVED else signal.SIGINT
            print(
                "mic: interrupted (mic-score writes its --json file once every checkpoint "
                "is scored)",
                file=sys.stderr,
            )
            sys.exit(128 + signum)
        raise


def main() -> None:
    catch_interrupts()
    try:
        from mic.train import main as train
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt) or interrupted():
            exit_interrupted()
        raise
    train()
