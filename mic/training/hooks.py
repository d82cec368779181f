"""Hooks of the adaptation loop: progress bar, metric logs, evaluation, checkpoints."""

from __future__ import annotations

import contextlib
import difflib
import itertools
import json
import logging
import math
import os
import shutil
import sys
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mic.core.checks import check_loader, check_task, note_loader
from mic.core.errors import CheckpointError, ConfigError, DatasetError, MicError, is_whole
from mic.core.loop import AdaptationLoop, Hook
from mic.core.task import Task
from mic.training.batches import labelled_batch
from mic.training.checkpoint import (
    FINAL_WEIGHTS,
    checkpoint_step,
    copy_atomically,
    final_weights,
    load_checkpoint,
    periodic_name,
    save_checkpoint,
    save_weights,
    write_text_atomically,
)
from mic.training.distributed import broadcast_object, gather_objects, process_info
from mic.training.evaluation import (
    EMPTY_TEST,
    TEST_LOADER,
    check_scoring,
    check_test_set,
    fresh_metric,
    in_percent,
    recalibrated_batchnorm,
    scores_of,
    shown_metric,
    tracked_batchnorms,
)
from mic.training.guard import all_finite
from mic.training.rng import rng_state, set_rng_state
from mic.training.validators import (
    LabelFreeValidation,
    ModelSelection,
    eval_mode,
    lower_is_better,
    preserved_rng,
)

RUN_LOG_MARK = "mic_run_log"  # the attribute that marks a run log's handler (mic.cli reads it)


def adopt_run_logs() -> None:
    """Mark the root logger's file handlers open now as the run's log (mic-train calls this
    once Hydra has opened the job's ``<job>.log``), for ``to_run_log``."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            setattr(handler, RUN_LOG_MARK, True)


def to_run_log(text: str, level: int = logging.INFO) -> None:
    """Write ``text`` to the run's log file as well (mic-train's ``<job>.log``: the root
    logger's handlers that ``adopt_run_logs`` marked), where the console already shows it,
    at ``level`` (a handler's own level holds); nothing in Python use, where a caller's own
    log files are the caller's."""
    record = logging.LogRecord("mic", level, __file__, 0, text, None, None)
    for handler in logging.getLogger().handlers:
        if getattr(handler, RUN_LOG_MARK, False) and level >= handler.level:
            handler.handle(record)


def say(text: str, stream: Any = None, level: int = logging.INFO) -> None:
    """Print ``text`` (to ``stream``, default standard output; above a progress bar, if one
    runs) and write it to the run log at ``level`` (``to_run_log``). Under torchrun, below
    ``logging.ERROR`` only process 0 says it: the others would say the same (or, as a stop's
    checkpoint hint, say it before process 0 has saved); an error, which may be one
    process's own, every process that meets it."""
    if level < logging.ERROR and not process_info().is_main:
        return
    tqdm.write(text, file=stream or sys.stdout)
    to_run_log(text, level)


def _step_of(line: str) -> int:
    """The ``step`` of a ``metrics.jsonl`` line (0 without one; -1 for a line that is no JSON
    object, such as the last one of a crash)."""
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError, TypeError):
        return -1


def _due(step: int, interval: int, last: int) -> bool:
    return step == last or (interval > 0 and step % interval == 0)


def term_statistics(loop: AdaptationLoop) -> dict[str, Tensor]:
    """What the loss terms that ran in the last iteration report besides their losses, as
    ``<term>/<name>`` -> detached 0-d tensor on the device.

    A term reports by keeping a dict ``statistics`` (name -> detached 0-d tensor) that its
    forward sets (e.g. MIC's quality weight ``q``): for logs only, never back-propagated, and
    read with the losses in one host synchronisation (``iteration_floats``).
    """
    out: dict[str, Tensor] = {}
    for name, term in loop.active_terms(loop.step - 1):
        for k, v in (getattr(term, "statistics", None) or {}).items():
            if isinstance(v, Real) and not isinstance(v, bool):  # a number: one on the device
                v = torch.tensor(float(v), device=loop.device)
            if not (isinstance(v, Tensor) and v.numel() == 1):
                got = f"a tensor of shape {tuple(v.shape)}" if isinstance(v, Tensor) else type(v)
                raise ConfigError(
                    f"loss term {name!r} reports statistics[{k!r}] as {got}: a statistic is a "
                    "0-d tensor (or a number), logged as <term>/<name>; e.g. its mean"
                )
            out[f"{name}/{k}"] = v.detach()
    return out


#: the last iteration's floats of each loop, (step, name -> float)
_FLOATS: weakref.WeakKeyDictionary[AdaptationLoop, tuple[int, dict[str, float]]] = (
    weakref.WeakKeyDictionary()
)


def iteration_floats(
    loop: AdaptationLoop, losses: dict[str, Tensor]
) -> tuple[dict[str, float], dict[str, float]]:
    """The last iteration's losses and term statistics (``term_statistics``) as floats,
    averaged over processes: one host synchronisation and one collective, cached for the
    iteration, so every hook that asks shares it (every process must ask at the same
    iterations)."""
    stats = term_statistics(loop)
    cached = _FLOATS.get(loop)
    if cached is None or cached[0] != loop.step:
        named = {**losses, **stats}
        values = [v.float().reshape(()) for v in named.values()]
        means = loop.collective.mean(torch.stack(values)).tolist() if values else []
        cached = _FLOATS[loop] = (loop.step, dict(zip(named, means, strict=True)))
    floats = cached[1]
    return (
        {k: v for k, v in floats.items() if k not in stats},
        {k: v for k, v in floats.items() if k in stats},
    )


def _log_interval(interval: Any, hook: str) -> int:
    """``interval`` checked: a whole number >= 1 (0 and negatives acted as 1, silently)."""
    if not is_whole(interval, 1):
        raise ConfigError(f"{hook}(interval=...) must be a whole number >= 1, got {interval!r}")
    return int(interval)


def _on_terminal() -> bool:
    """Whether the progress bars write to a terminal (not into a file, a scheduler's log)."""
    return sys.stderr.isatty()


def _refresh_interval() -> float:
    """Seconds between two refreshes of a progress bar: into a file (a scheduler's log) a
    refresh a minute, not ten a second."""
    return 0.1 if _on_terminal() else 60.0


class ProgressBar(Hook):
    """A tqdm bar with ETA and the live losses (refreshed every ``interval`` iterations)."""

    def __init__(self, interval: int = 10, enabled: bool = True) -> None:
        self.interval = _log_interval(interval, "ProgressBar")
        self.enabled = enabled
        self.bar: Any = None

    def before_run(self, loop: AdaptationLoop) -> None:
        self.bar = tqdm(
            total=loop.iterations,
            initial=loop.step,
            disable=not self.enabled or not process_info().is_main,
            desc="adapting",
            dynamic_ncols=True,
            unit="it",
            mininterval=_refresh_interval(),
        )

    def after_step(self, loop: AdaptationLoop, losses: dict[str, Tensor]) -> None:
        self.bar.update(1)
        # enabled, not main: every process must ask for the losses at the same iterations
        if self.enabled and _due(loop.step, self.interval, loop.iterations):
            values, stats = iteration_floats(loop, losses)
            post = {k: f"{v:.3f}" for k, v in {**values, **stats}.items()}
            self.bar.set_postfix(post, refresh=False)

    def on_record(self, loop: AdaptationLoop, record: dict[str, Any]) -> None:
        if "summary" in record and process_info().is_main:
            say(record["summary"])

    def teardown(self, loop: AdaptationLoop) -> None:
        if self.bar is not None:
            self.bar.close()


def strict_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of ``obj`` with every float that is NaN or Inf (an undefined score, a
    diverged loss) written as ``null``: strict JSON, which jq, JavaScript and most readers
    other than Python's take (Python's own writes the bare ``NaN``, which they refuse)."""

    def finite(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: finite(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [finite(v) for v in x]
        return x

    return json.dumps(finite(obj), allow_nan=False, **kwargs)


class RandomStateAtBuild(Hook):
    """Before the first ``run``, the global random state (torch, NumPy, Python) that the
    experiment was built with, captured by ``capture``: the draws made inside the model
    (dropout, a detector's box sampling) are then the same whatever ran between the build and
    ``loop.run()`` (a draw of one's own, another experiment's build, which seeds the
    generators). Unless the loop moved since (``mic.resume.resume`` of a checkpoint, which
    restores that checkpoint's state, or iterations run by hand): its state stands. A later
    ``run`` (after a stop) goes on from the state the last one left."""

    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None
        self.step = -1

    def capture(self, loop: AdaptationLoop) -> None:
        self.state, self.step = rng_state(), loop.step

    def before_run(self, loop: AdaptationLoop) -> None:
        if self.state is not None and loop.step == self.step:
            set_rng_state(self.state)
        self.state = None


#: logged iterations in a row of a quality weight of 0 after which it is warned of
ZERO_Q_RECORDS = 3

#: the sections of a metrics record that a loss term's name (its statistics' prefix) would
#: write into, with what they hold
RECORD_SECTIONS = {
    "loss": "the losses (loss/<term>)",
    "time": "the speed",
    "eval": "the evaluations",
    "validator": "the label-free validators' scores",
}


def check_term_name(name: str) -> None:
    """Raise ``ConfigError`` for a loss term named as a section of the metrics record
    (``RECORD_SECTIONS``): its statistics, logged as ``<term>/<name>``, would write into it (a
    statistic 'source' of a term 'loss' replaced the logged source loss, in silence)."""
    if name in RECORD_SECTIONS:
        raise ConfigError(
            f"loss term {name!r}: its statistics are logged as {name}/<name>, where the metrics "
            f"record keeps {RECORD_SECTIONS[name]}; give the term another name"
        )


class MetricsLogger(Hook):
    """Losses (``loss/<name>``), the loss terms' statistics (``<term>/<name>``, see
    ``term_statistics``), the learning rate the logged iteration trained with (``lr``), speed
    (``time/iteration_s``: wall seconds per iteration since the last record, evaluations and
    checkpoints in between included) every ``interval`` iterations, plus every record
    emitted by other hooks, to ``metrics.jsonl`` (one JSON object per line, flushed at once;
    NaN and Inf as ``null``, see ``strict_json``) and to TensorBoard under ``tensorboard/``."""

    def __init__(self, run_dir: str | Path, interval: int = 20, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        if self.run_dir.is_file():  # (Python's FileExistsError at the start of the run)
            raise ConfigError(
                f"MetricsLogger's run folder '{self.run_dir}' is a file: give a folder for "
                "metrics.jsonl and tensorboard/ (it is made where missing)"
            )
        self.interval = _log_interval(interval, "MetricsLogger")
        self.tensorboard = tensorboard
        self.writer: Any = None
        self._file: Any = None
        self._t0 = 0.0
        self._step0 = 0
        self._lr: float | None = None  # the rate the next iteration trains with
        self._zero_q: dict[str, int] = {}  # a term's quality weight: logged 0s in a row

    def before_run(self, loop: AdaptationLoop) -> None:
        for name, _ in getattr(loop, "method", None) or ():
            check_term_name(name)
        self._t0, self._step0 = time.perf_counter(), loop.step
        self._lr = loop.lr() if callable(getattr(loop, "lr", None)) else None
        if not process_info().is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / "metrics.jsonl"
        for leftover in self.run_dir.glob(".*.tmp"):  # a rewrite a crash interrupted
            leftover.unlink(missing_ok=True)
        if path.exists():  # resumed or restarted: forget what came after the checkpoint
            owed = any(getattr(h, "owed", None) == loop.step for h in getattr(loop, "hooks", []))
            kept = [  # a line a crash cut off (-1) goes too, and an evaluation run again now
                x
                for x in path.read_text().splitlines()
                if 0 <= _step_of(x) <= loop.step
                and not (
                    owed and _step_of(x) == loop.step and ('"eval/' in x or '"validator/' in x)
                )
            ]
            write_text_atomically(path, "".join(x + "\n" for x in kept))
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115
        if self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=loop.step + 1)

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:  # not the main process
            return
        if os.fstat(self._file.fileno()).st_nlink == 0:  # (written on into the deleted file)
            raise MicError(
                f"'{self.run_dir / 'metrics.jsonl'}' was deleted while the run went on (its run "
                "folder removed?): stopped, as every record from here on would be lost"
            )
        self._file.write(strict_json(record) + "\n")
        self._file.flush()
        if self.writer is None:
            return
        try:
            for key, value in record.items():
                if (
                    key != "step"
                    and isinstance(value, (int, float))
                    and not isinstance(value, bool)
                ):
                    self.writer.add_scalar(key, value, record["step"])
            self.writer.flush()
        except OSError as e:  # its folder deleted, a full disk: the run goes on without it
            writer, self.writer = self.writer, None
            with contextlib.suppress(Exception):  # its thread stops (it met the error too)
                writer.close()
            warnings.warn(
                f"TensorBoard's log could not be written ({e}): the run goes on without it "
                "(metrics.jsonl holds every record)",
                stacklevel=2,
            )

    def after_step(self, loop: AdaptationLoop, losses: dict[str, Tensor]) -> None:
        # the scheduler steps within an iteration: loop.lr() is already the next one's
        trained_with, self._lr = (loop.lr() if self._lr is None else self._lr), loop.lr()
        if not _due(loop.step, self.interval, loop.iterations):
            return
        now = time.perf_counter()
        seconds = (now - self._t0) / max(1, loop.step - self._step0)
        self._t0, self._step0 = now, loop.step
        record = {
            "step": loop.step,
            "lr": trained_with,
            "time/iteration_s": seconds,
            "skipped_steps": loop.skipped_steps,
        }
        values, stats = iteration_floats(loop, losses)
        record.update({f"loss/{k}": v for k, v in values.items()})
        record.update(stats)
        self.write(record)
        self._warn_zero_quality(loop, stats)

    def _warn_zero_quality(self, loop: AdaptationLoop, stats: dict[str, float]) -> None:
        """Warn once per term weighted by its quality weight (``weighting="quality"``) whose
        ``<term>/q`` was 0 at every logged iteration of a quarter of the adapting iterations
        (at least ``ZERO_Q_RECORDS`` in a row) after ``adaptation_start``: no pseudo-label's
        confidence reaches tau, and the term trains nothing (a '+MIC' run that is its base
        run). A model trained from scratch starts so, for its first few hundred iterations."""
        start = getattr(loop, "adaptation_start", 0)
        terms = dict(getattr(loop, "method", None) or {})
        for key, q in stats.items():
            term = key[: -len("/q")]
            mode = getattr(getattr(terms.get(term), "weighting", None), "mode", None)
            if not key.endswith("/q") or mode != "quality" or loop.step <= start:
                continue
            if self._zero_q.get(key) == -1:  # said
                continue
            self._zero_q[key] = self._zero_q.get(key, 0) + 1 if q == 0 else 0
            quarter = math.ceil((loop.iterations - start) / 4 / self.interval)
            if self._zero_q[key] >= max(ZERO_Q_RECORDS, quarter) and self._file is not None:
                self._zero_q[key] = -1
                warnings.warn(
                    f"loss term {term!r}: its quality weight q was 0 at the last "
                    f"{max(ZERO_Q_RECORDS, quarter)} logged iterations (up to {loop.step}): no "
                    "pseudo-label's confidence reaches its tau, so it trains nothing; lower "
                    f"method.terms.{term}.tau, or weigh by confidence (weighting=prob) or not "
                    "at all (weighting=none)",
                    stacklevel=2,
                )

    def on_record(self, loop: AdaptationLoop, record: dict[str, Any]) -> None:
        # a record without "step" (a hook's loop.emit({...})) is logged at the loop's step
        self.write({"step": loop.step, **{k: v for k, v in record.items() if k != "summary"}})

    def teardown(self, loop: AdaptationLoop) -> None:
        if self._file is not None:
            self._file.close()
        if self.writer is not None:
            self.writer.close()
        self._file = self.writer = None


class Evaluation(Hook):
    """Scores the student and the teacher on a labelled target loader every ``interval``
    iterations, at the end, and at the iterations listed in ``at``; with ``validation``, also
    by label-free validators on unlabelled target batches (records ``validator/<model>/<name>``
    beside the labelled ``eval/<model>/<metric>``).

    BatchNorm protocol: with ``adabn_batches > 0`` (and a model with BatchNorm), every
    evaluated model first re-estimates its BatchNorm statistics on that many batches of
    ``adabn_loader`` (target training images), and the training statistics are restored
    afterwards; this stops the source, mixed and masked batches that the student's running
    statistics mix from deciding the score. The records say which protocol was used. The
    validators score each model under the same protocol; the reference pseudo-labels of
    ``masked_agreement`` are the teacher's (under its own protocol), or each model's own in a
    run without a teacher. A model whose weights hold NaN or Inf scores NaN, with a warning
    (with the default ``Guard`` nothing stops a step that made them so). With
    ``adabn_batches=0``, a model some of whose BatchNorm layers still hold the statistics they
    were built with (mean 0, variance 1: estimated from no batch, as the teacher's before it
    first predicts, with ``buffers="own"``, or a new bottleneck's beside pretrained layers) is
    scored with them and warned of once; its records say ``initial-statistics``.

    A stop request (SIGTERM, SIGINT) met between two batches ends an evaluation without a
    record, and so does an error (a bad test file, a metric that fails); list
    ``OwedEvaluation(evaluation)`` after every other hook so that a run resumed from that
    iteration's checkpoint makes it up first (``mic-train`` does).

    Args:
        task: the task every model is scored through.
        loader: labelled target batches (None: no labelled scores, validators alone).
        interval: evaluate every this many iterations (0: only at the end and at ``at``).
        models: which models are scored: ``student``, ``teacher`` (one name alone is a list
            of one).
        adabn_loader, adabn_batches: the AdaBN protocol (see above).
        at: further iterations to evaluate at; 0 is the start model's score, taken when the
            run starts by ``OwedEvaluation(evaluation)`` (listed after every other hook).
        validation: the label-free validators (``mic.training.validators``).
        progress: show a progress bar of the test batches while a model is scored, on a
            terminal (on the process that scores; ``mic-train``: ``log.progress``).

    Raises:
        ConfigError: an unknown model name or none, ``at`` that is no list of iterations,
            neither labels nor validators to score with,
            validators the task cannot feed, or a loader that is a one-pass iterator or a
            dataset (``check_loader``).
        DatasetError: the labelled loader's dataset declares another class count than the
            task (``Task.check_datasets``): a test reader that numbered its own classes.
        DatasetError: (at ``before_run``, from the loader's first batch) a labelled loader
            that yields no batch, unlabelled batches, batches that are not ``(images,
            targets)`` pairs, or targets the task's ``check_targets`` refuses: found before
            training, not at the first evaluation.
        ConfigError: (at ``before_run``) ``models`` names only the teacher of a loop that has
            none.
        ConfigError: (at ``before_run``, scoring the first batch with the student) a
            ``Task.metric()`` that returns a class or an object without ``update`` and
            ``compute``, or whose ``compute()`` lacks ``primary_metric`` or gives it as
            something other than one number: found before training as well.
    """

    def __init__(
        self,
        task: Task,
        loader: Iterable[Any] | None,
        interval: int = 0,
        models: str | Sequence[str] = ("student", "teacher"),
        adabn_loader: Iterable[Any] | None = None,
        adabn_batches: int = 0,
        at: Sequence[int] = (),
        validation: LabelFreeValidation | None = None,
        progress: bool = False,
    ) -> None:
        for key, value in (("interval", interval), ("adabn_batches", adabn_batches)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"eval.{key} must be a whole number >= 0, got {value!r}")
        check_task(task)
        models = [models] if isinstance(models, str) else list(models)
        unknown = set(models) - {"student", "teacher"}
        if unknown:
            raise ConfigError(
                f"eval.models may list 'student' and 'teacher', not {sorted(unknown)}"
            )
        if not models:  # (it scored nothing, and no best.pt was chosen, without a word)
            raise ConfigError("eval.models names no model: list 'student', 'teacher' or both")
        steps = [at] if is_whole(at, 0) else at
        text = isinstance(steps, (str, bytes)) or not isinstance(steps, Iterable)
        if text or not all(is_whole(s, 0) for s in steps):  # ("3" never matched step 3)
            raise ConfigError(
                f"Evaluation(at=...) takes iterations, whole numbers >= 0, got {at!r}"
            )
        self.task = task
        self.loader = loader
        self.interval = interval
        self.models = tuple(models)
        self.adabn_loader = adabn_loader
        self.adabn_batches = adabn_batches if adabn_loader is not None else 0
        self.at = {int(s) for s in steps}
        if loader is None and validation is None:
            raise ConfigError("evaluation needs a labelled loader, label-free validators or both")
        for name, given in (("loader", loader), ("adabn_loader", adabn_loader)):
            again = "every evaluation passes over it again"
            check_loader(given, f"Evaluation's {name}", again, ConfigError)
        if validation is not None:
            validation.check(task)
        check_test_set(task, loader, "Evaluation's test loader")
        self.validation = validation
        self.progress = bool(progress)
        #: what the progress bar names beside the iteration (``score_run``: the checkpoint,
        #: whose iteration ``best.pt`` and an ``iter_*.pt`` may share); None: nothing
        self.progress_label: str | None = None
        #: called as ``view(step, name, model, device)`` for each scored model after its
        #: scores, inside its BatchNorm protocol (the model in eval mode, with the statistics
        #: it was scored with): what is drawn of a model (segmentation's ``PredictionImages``)
        #: shows the predictions that were scored. A viewer's ``OSError`` (a full disk, a
        #: file where its folder goes) is warned of, and the evaluation goes on: a picture
        #: costs no scores (``view_evaluations`` adds one)
        self.viewers: list[Callable[[int, str, torch.nn.Module, torch.device], None]] = []
        self.history: list[dict[str, Any]] = []
        self._warned_unfinite: set[str] = set()  # the models warned of non-finite weights
        self._warned_initial: set[str] = set()  # and of BatchNorm statistics never estimated
        #: the iteration whose evaluation a stop request or an error cut short (None: none),
        #: run by ``run_owed`` when the run resumes there
        self.owed: int | None = None
        #: the scores its records will hold, as scored on the first test batch by
        #: ``before_run`` (None: it could not tell)
        self.expected: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        """The evaluation records so far and the iteration of an evaluation that a stop
        request or an error cut short (plain types), for checkpoints."""
        return {"history": self.history, "owed": self.owed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))
        self.owed = state.get("owed")

    def protocol(self, model: torch.nn.Module) -> str:
        """How ``model``'s BatchNorm layers were scored (the ones with running statistics):
        ``adabn:<batches>``, ``train-statistics``, ``initial-statistics`` (some never
        estimated: see above) or ``plain`` (no such layer)."""
        norms = tracked_batchnorms(model)
        if not norms:
            return "plain"
        if self.adabn_batches > 0:
            return f"adabn:{self.adabn_batches}"
        return "initial-statistics" if _initial_norms(norms) else "train-statistics"

    def before_run(self, loop: AdaptationLoop) -> None:
        """Check the labelled loader's first batch (labelled, a pair, targets the task takes)
        and score it with the student as ``evaluate`` does (the task's metric an accumulator
        instance whose ``compute()`` gives ``primary_metric`` as one number), so that a wrong
        test set or a broken ``Task.metric()`` stops the run before training rather than at
        the first evaluation (with ``interval=0``: after all of training). Without a labelled
        loader, only what ``Task.metric()`` returns is checked.

        Training is left as it was: the random generators that starting the loader (or the
        scoring) draws from are put back, and the student is scored without gradients, in
        eval mode (BatchNorm statistics untouched), then put back in its mode; no AdaBN. Called
        without a loop (``loop=None``), the batch is checked but not scored. Records of
        iterations after the loop's step (this hook's, reused from another run) are dropped."""
        if loop is not None:  # (a seed sweep reusing the hook carried the last run's records)
            self.history = [r for r in self.history if r.get("step", 0) <= loop.step]
        student = getattr(loop, "student", None)
        if student is not None and loop.teacher is None and "student" not in self.models:
            raise ConfigError(
                f"the Evaluation hook scores only {list(self.models)}, but the method has no "
                "teacher (none of its terms uses pseudo-labels): nothing would be scored; score "
                "the student (models=('student',))"
            )
        if self.loader is None:
            if student is not None:
                with preserved_rng():
                    fresh_metric(self.task, loop.device)
                self._expect(loop, {})
                self._check_agreement(loop)
            return
        sampler = getattr(self.loader, "sampler", None)
        generators = [
            g
            for g in (getattr(self.loader, "generator", None), getattr(sampler, "generator", None))
            if isinstance(g, torch.Generator)
        ]
        states = [g.get_state() for g in generators]
        with preserved_rng():
            try:
                batch = next(iter(self.loader), None)
                if batch is not None:
                    _, targets = labelled_batch(batch, "the Evaluation hook's loader")
                    self.task.check_targets(targets)
            except DatasetError as e:
                note_loader(e, TEST_LOADER, "the test set")
                raise
            finally:
                for g, state in zip(generators, states, strict=True):
                    g.set_state(state)
        if batch is None:
            raise DatasetError(EMPTY_TEST)
        if student is not None:
            with preserved_rng():
                self._expect(loop, check_scoring(self.task, student, batch, loop.device))
            self._check_agreement(loop)  # (after the test batch, whose errors say more)

    def _check_agreement(self, loop: AdaptationLoop) -> None:
        """The validation's early check of masked_agreement (``check_agreement``), on the
        teacher's pseudo-labels, or the student's own without a teacher."""
        if self.validation is not None:
            model = loop.teacher.model if loop.teacher is not None else loop.student
            self.validation.check_agreement(self.task, model, loop.device)

    def _expect(self, loop: AdaptationLoop, scores: dict[str, Any] | None) -> None:
        """Set ``expected`` from the first test batch's ``scores`` (None: unknown)."""
        if scores is None:
            return
        models = [m for m in self.models if m != "teacher" or loop.teacher is not None]
        validators = dict.fromkeys(self.validation.names if self.validation else [], 0.0)
        self.expected = {
            f"{kind}/{m}/{k}": v
            for kind, named in (("eval", scores), ("validator", validators))
            for m in models
            for k, v in named.items()
        }

    def after_step(self, loop: AdaptationLoop, losses: dict[str, Tensor]) -> None:
        if _due(loop.step, self.interval, loop.iterations) or loop.step in self.at:
            self.run(loop)

    def after_run(self, loop: AdaptationLoop) -> None:
        # a run resumed at its end after its final evaluation met a data error: evaluate now
        finished = loop.interrupted_by is None and loop.step == loop.iterations
        if finished and loop.step not in {r.get("step") for r in self.history}:
            self.run(loop)

    def run(self, loop: AdaptationLoop) -> dict[str, Any] | None:
        """Score on the main process; every process receives the same record. A stop request
        (SIGTERM, SIGINT; one process, not under ``torchrun``) met between two batches ends it
        at once: no record (None), and ``owed`` names the iteration, for ``run_owed``.

        Raises:
            DatasetError, ConfigError: what scoring raised (a bad test file, a metric without
                the primary score); under ``torchrun`` every process raises it (the others
                naming the main process; a RuntimeError for an error not of mic's), so that
                none waits for a record that never comes.
        """
        info = process_info()
        try:  # training draws the same with and without evaluations (a test loader without
            with preserved_rng(), self._stoppable(loop):  # a generator draws its seed from
                record: Any = self.score(loop) if info.is_main else None  # the global one)
        except _Stopped:
            self.owed = loop.step
            when = "this run resumes (resume=auto)" if loop.step else "the run starts again"
            warnings.warn(
                f"{loop.stop_reason}: the evaluation at iteration {loop.step} was stopped "
                f"before it finished; it runs first when {when}",
                stacklevel=2,
            )
            return None
        except Exception as e:
            self.owed = loop.step  # the checkpoint saved before the error is reported owes it
            if info.enabled:  # the others wait for the record: they stop with this error
                broadcast_object((type(e) if isinstance(e, MicError) else RuntimeError, str(e)))
            raise
        record = broadcast_object(record)  # the record itself in one process
        if isinstance(record, tuple):  # the main process's error
            kind, message = record
            self.owed = loop.step
            raise kind(f"the main process's evaluation stopped: {message}")
        self.history.append(record)
        try:
            loop.emit(record)
        except Exception:  # a hook after the failed one (the checkpointer's choice of best.pt)
            self.history.pop()  # never saw the record: the resumed run evaluates here again
            self.owed = loop.step
            raise
        return record

    def run_owed(self, loop: AdaptationLoop) -> None:
        """The evaluation a stop request or an error cut short at this iteration (``owed``),
        or the start model's (``at`` holds 0, a run at iteration 0 not yet scored), if any: to
        be called when every hook has started (``OwedEvaluation``), before training goes on."""
        at_start = loop.step == 0 and 0 in self.at and not self.history
        if (self.owed is not None and self.owed == loop.step) or at_start:
            self.owed = None
            self.run(loop)
        elif self.owed is not None and self.owed > loop.step:  # resumed from before it
            self.owed = None

    @contextlib.contextmanager
    def _stoppable(self, loop: AdaptationLoop) -> Iterator[None]:
        """Inside, the loaders end the evaluation between two batches once the loop has a
        stop request (one process: under ``torchrun`` requests are shared at training steps)."""
        if loop.collective.world_size > 1:
            yield
            return
        validation = self.validation
        loaders = self.loader, self.adabn_loader, getattr(validation, "loader", None)
        self.loader, self.adabn_loader = (_Stoppable.wrap(x, loop) for x in loaders[:2])
        if validation is not None:
            validation.loader = _Stoppable.wrap(loaders[2], loop)
        try:
            yield
        finally:
            self.loader, self.adabn_loader = loaders[:2]
            if validation is not None:
                validation.loader = loaders[2]

    def recalibrated(self, model: torch.nn.Module, device: torch.device | None) -> Any:
        """The context in which ``model`` is scored (AdaBN, see the class documentation)."""
        loader = self.adabn_loader if self.adabn_loader is not None else ()  # (a wrapped loader
        return recalibrated_batchnorm(model, loader, self.adabn_batches, device)  # has no bool)

    def _view(self, step: int, name: str, model: torch.nn.Module, device: Any) -> None:
        """Every viewer of ``model`` (in eval mode), an ``OSError`` of one warned of."""
        with eval_mode(model):
            for view in self.viewers:
                try:
                    view(step, name, model, device)
                except OSError as e:
                    warnings.warn(
                        f"{_viewer_name(view)} could not write what it shows of the {name} at "
                        f"iteration {step} ({e}); the evaluation and training go on",
                        stacklevel=4,
                    )

    def _warn_of_initial(self, name: str, model: torch.nn.Module, step: int) -> None:
        """Warn (once per model) of a model scored with BatchNorm statistics that some of its
        layers never estimated (the teacher's, ``buffers=own``, before it first predicts)."""
        if name in self._warned_initial:
            return
        self._warned_initial.add(name)
        norms = tracked_batchnorms(model)
        warnings.warn(
            f"the {name} is scored at iteration {step} with BatchNorm statistics that "
            f"{_initial_norms(norms)} of its {len(norms)} BatchNorm layers hold as they were "
            "built (mean 0, variance 1), estimated from no batch (the teacher's before it first "
            "predicts, a new layer's beside pretrained ones), so its score says little; "
            "eval.adabn_batches > 0 re-estimates them on target batches first (AdaBN, the "
            "default)",
            stacklevel=3,
        )

    def _unscored(self, name: str, scores: dict[str, Any]) -> dict[str, Any]:
        """``scores`` of a model whose weights hold NaN or Inf, as NaN (its predictions,
        e.g. the argmax of NaN logits, scored a class's share), with a warning (once)."""
        if name not in self._warned_unfinite:
            self._warned_unfinite.add(name)
            warnings.warn(
                f"the {name}'s weights hold NaN or Inf (a loss or gradient went non-finite and "
                "nothing stopped the step): its scores are NaN; guard=mic.TrainingGuard() "
                "(mic-train's) skips such steps or stops the run",
                stacklevel=3,
            )
        nan = [math.nan]
        return {
            k: math.nan if isinstance(v, float) else nan * len(v) if isinstance(v, list) else v
            for k, v in scores.items()
        }

    def score(self, loop: AdaptationLoop) -> dict[str, Any]:
        """The record of an evaluation of ``loop``'s models now (``score_models``)."""
        teacher = loop.teacher.model if loop.teacher is not None else None
        return self.score_models(loop.step, loop.student, teacher, loop.device)

    def score_models(
        self,
        step: int,
        student: torch.nn.Module,
        teacher: torch.nn.Module | None = None,
        device: torch.device | None = None,
    ) -> dict[str, Any]:
        """The record of one evaluation of ``student`` and ``teacher`` (those of ``models``;
        None: no teacher) as of iteration ``step``, on ``device`` (None: the student's),
        under the BatchNorm protocol above:
        ``{"step", "eval/<model>/<metric>", "eval/<model>/protocol",
        "validator/<model>/<name>", "summary"}``; each scored model is also handed to the
        ``viewers`` (which may write files: an ``OSError`` of one is warned of). Draws from
        the global generators (the loop's evaluations keep them as they were);
        ``mic.scoring.score_run`` scores a run's saved checkpoints through it.

        Raises:
            DatasetError, ConfigError: a bad test file, a metric without the primary score.
            Exception: what a viewer raises other than ``OSError`` (the record is lost, and
                ``run`` owes the evaluation).
        """
        record: dict[str, Any] = {"step": step}
        lines, unlabelled = [], []
        device = device if device is not None else next(student.parameters()).device
        references = None
        validation = self.validation
        with contextlib.ExitStack() as held:  # the teacher's AdaBN: its references, its scores
            if validation is not None and validation.needs_reference and teacher is not None:
                held.enter_context(self.recalibrated(teacher, device))
                references = validation.references(self.task, teacher, device)
            for name in self.models:
                if name == "teacher" and teacher is None:
                    continue
                model = student if name == "student" else teacher
                assert model is not None  # (for type checkers: skipped above)
                scores: dict[str, Any] = {}
                again = model is not teacher or references is None  # (else recalibrated above)
                with self.recalibrated(model, device) if again else contextlib.nullcontext():
                    if self.loader is not None:
                        loader = self.loader
                        if self.progress:
                            where = f"{self.progress_label}, " if self.progress_label else ""
                            loader = _Shown(loader, f"scoring the {name} ({where}iteration {step})")
                        scores = scores_of(self.task, model, loader, device)
                        if not all_finite(list(model.parameters())):
                            scores = self._unscored(name, scores)
                    if self.validation is not None:
                        found = self.validation.score(self.task, model, device, references)
                        record.update({f"validator/{name}/{k}": v for k, v in found.items()})
                        said = ", ".join(f"{k} {v:.4g}" for k, v in found.items())
                        unlabelled.append(f"{name} {said}")
                    self._view(step, name, model, device)
                record[f"eval/{name}/protocol"] = self.protocol(model)
                if record[f"eval/{name}/protocol"] == "initial-statistics":
                    self._warn_of_initial(name, model, step)
                record.update({f"eval/{name}/{k}": v for k, v in scores.items()})
                primary = scores.get(self.task.primary_metric)
                if isinstance(primary, float):
                    shown = shown_metric(primary, in_percent(self.task), unit="")
                    lines.append(f"{name} {self.task.primary_metric} {shown}")
        said = ", ".join(lines)
        if not said:  # label-free: the validators' scores, which choose best.pt
            said = "(no labels)" + (", validators (higher is better): " if unlabelled else "")
            said += "; ".join(unlabelled)
        record["summary"] = f"[iteration {step}] target {said}"
        return record


def _initial_norms(norms: list[Any]) -> int:
    """How many of the BatchNorm layers ``norms`` hold the statistics they were built with."""
    return sum(not m.running_mean.any() and bool(m.running_var.eq(1).all()) for m in norms)


def view_evaluations(
    loop: AdaptationLoop, viewer: Callable[[int, str, torch.nn.Module, torch.device], None]
) -> None:
    """Add ``viewer`` to the ``viewers`` of every ``Evaluation`` hook of ``loop`` (once), so
    that it sees each scored model as it was scored (e.g. drawings of its predictions); a
    hook calls it at ``before_run`` and ``unview_evaluations`` at ``teardown``, so that a
    later loop that reuses the ``Evaluation`` without the hook sees nothing of it.

    Raises:
        ConfigError: ``loop`` has no ``Evaluation`` hook: nothing is scored, nothing seen.
    """
    evaluations = [h for h in loop.hooks if isinstance(h, Evaluation)]
    if not evaluations:
        raise ConfigError(
            f"{_viewer_name(viewer)} shows the models that an Evaluation hook scores, at its "
            "evaluations: list an Evaluation hook in the loop's hooks"
        )
    for evaluation in evaluations:
        if viewer not in evaluation.viewers:
            evaluation.viewers.append(viewer)


def _viewer_name(viewer: Callable[..., Any]) -> str:
    """A viewer as its messages name it: a hook's method by its class, a function by name."""
    owner = getattr(viewer, "__self__", None)
    if owner is not None:
        return type(owner).__name__
    return getattr(viewer, "__qualname__", "a viewer")


def unview_evaluations(loop: AdaptationLoop, viewer: Callable[..., None]) -> None:
    """Remove ``viewer`` from the ``viewers`` of every ``Evaluation`` hook of ``loop``."""
    for hook in loop.hooks:
        if isinstance(hook, Evaluation) and viewer in hook.viewers:
            hook.viewers.remove(viewer)


class _Stopped(Exception):
    """A stop request met between two batches of an evaluation."""


class _LoaderView:
    """A loader wrapped for an evaluation's pass: its length and every other attribute (its
    sampler, generator, collate_fn, dataset) are the loader's; a subclass's ``__iter__``
    passes over it."""

    loader: Iterable[Any]

    def __len__(self) -> int:  # (TypeError for a loader without a length, as len's)
        return len(self.loader)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # (not set yet: no endless recursion)
            raise AttributeError(name)
        return getattr(self.loader, name)


class _Stoppable(_LoaderView):
    """``loader``, raising ``_Stopped`` before each batch once ``loop`` has a stop request."""

    def __init__(self, loader: Iterable[Any], loop: AdaptationLoop) -> None:
        self.loader, self.loop = loader, loop

    @classmethod
    def wrap(cls, loader: Any, loop: AdaptationLoop) -> Any:
        return None if loader is None else cls(loader, loop)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            if self.loop.stop_reason is not None:
                raise _Stopped
            yield batch


class _Shown(_LoaderView):
    """``loader`` with a progress bar of its batches, described by ``desc``, on a terminal
    (closed, and cleared, when a pass ends or stops: into a file it would leave its control
    codes alone)."""

    def __init__(self, loader: Iterable[Any], desc: str) -> None:
        self.loader, self.desc = loader, desc

    def __iter__(self) -> Iterator[Any]:
        try:
            total = len(self.loader)  # type: ignore[arg-type]
        except TypeError:  # (an iterable without a length)
            total = None
        with tqdm(
            total=total,
            desc=self.desc,
            leave=False,
            dynamic_ncols=True,
            unit="batch",
            disable=not _on_terminal(),
        ) as bar:
            for batch in self.loader:
                yield batch
                bar.update(1)


class OwedEvaluation(Hook):
    """Runs, when every other hook has started, the evaluation that a stop request or an error
    cut short at the iteration this run resumes from (``Evaluation.run_owed``), before training goes
    on: so that its record, ``best.pt`` and ``metrics.jsonl`` are those of a run never stopped;
    and the start model's evaluation that ``Evaluation(at=[0, ...])`` asks for. List it after
    every other hook.

    Args:
        evaluation: the loop's ``Evaluation`` hook.
    """

    def __init__(self, evaluation: Evaluation) -> None:
        self.evaluation = evaluation

    def before_run(self, loop: AdaptationLoop) -> None:
        self.evaluation.run_owed(loop)


class Checkpointer(Hook):
    """Saves the loop's full state every ``interval`` iterations, at the end and when the run
    is interrupted, keeping the last ``keep`` files (``iter_<step>.pt``), plus ``best.pt``
    whenever ``best_metric`` improves. At the end it also exports weights-only files for
    inference (``student.pt``, ``teacher.pt``: a model's ``state_dict``). A new run (at
    iteration 0) into a folder that already holds another run's ``iter_*.pt`` or ``best.pt``
    moves that run's files into ``previous_run/`` there, with a warning (``mic-train``
    refuses such a folder).

    ``best_metric`` is a key of the evaluation records: a labelled score
    (``eval/student/accuracy``) or a label-free validator's (``validator/student/snd``);
    higher is better, except for the task's labelled primary metric when the loop's task sets
    ``higher_is_better = False`` (an error: lower is better); NaN never counts. ``selection``
    (a ``ModelSelection``) records which evaluation every score would pick.

    The state is the loop's, the global random generators of every process (Python's,
    NumPy's, torch's: under ``torchrun`` every process takes part in gathering them; the main
    process writes), the selection record, and the state of the ``stateful`` hooks (e.g. the
    evaluation history); ``load_state_dict`` puts the last two back on resume. Temporary files
    that a crash during a save left behind are removed when a run starts.

    Args:
        directory: the checkpoint folder.
        interval: save every this many iterations (0: only at the end and on interruption).
        keep: how many ``iter_*.pt`` files to keep (>= 1).
        best_metric: the record key whose improvement saves ``best.pt`` (None: never). The
            first evaluation record is checked for it: a key whose model is scored there but
            whose metric is not (a typo) raises a ConfigError with the closest keys; a model
            that is not scored (a teacher in a run without one) warns, and so does a loop
            without an ``Evaluation`` hook (at ``before_run``).
        extra: plain values stored in every checkpoint.
        stateful: name -> object with ``state_dict()`` / ``load_state_dict()`` (plain types)
            whose state travels in checkpoints.

    Raises:
        ConfigError: ``keep`` below 1 or ``interval`` below 0 (or either no whole number); a
            ``best_metric`` that is not of the form
            ``eval/<model>/<metric>`` or ``validator/<model>/<name>``; (in ``before_run``,
            after an ``Evaluation`` hook listed before it has scored its first test batch, or
            else at the first evaluation) a ``best_metric`` that the records will not hold.
    """

    def __init__(
        self,
        directory: str | Path,
        interval: int = 0,
        keep: int = 1,
        best_metric: str | None = None,
        extra: dict[str, Any] | None = None,
        stateful: dict[str, Any] | None = None,
    ) -> None:
        if not is_whole(keep):
            raise ConfigError(f"checkpoint.keep must be a whole number >= 1, got {keep!r}")
        if not is_whole(interval, 0):  # (-1 acted as 0)
            raise ConfigError(f"checkpoint.interval must be a whole number >= 0, got {interval!r}")
        parts = str(best_metric).split("/")
        if best_metric is not None and (
            len(parts) != 3 or parts[0] not in ("eval", "validator") or not all(parts)
        ):
            raise ConfigError(
                f"Checkpointer(best_metric={best_metric!r}): not a key of the evaluation "
                "records; give eval/<model>/<metric> (e.g. eval/student/accuracy), "
                "validator/<model>/<name> (e.g. validator/student/snd), or None"
            )
        self.directory = Path(directory)
        if self.directory.is_file():  # (found at the first save, after training had begun)
            raise ConfigError(
                f"Checkpointer's folder '{self.directory}' is a file: give a folder for the "
                "checkpoints (it is made where missing)"
            )
        #: files that the run's next checkpoint supersedes (an earlier end's summary and final
        #: weights, set by a resume that trains on): removed once it is written
        self.superseded: list[Path] = []
        self.interval = interval
        self.keep = keep
        self.best_metric = best_metric
        self.selection = ModelSelection()
        self.extra = extra or {}
        self.stateful = dict(stateful or {})
        #: the iteration of the last checkpoint this run wrote (-1: none yet)
        self.saved_step = -1
        self._metric_seen = best_metric is None
        self._metric_recorded = False  # best_metric in an evaluation record of this run
        #: the file that holds the best state so far: this run's ``best.pt``, or, after a
        #: resume from another folder, that folder's (None: no best state yet)
        self.best_file: Path | None = None
        self._resumed = False  # load_state_dict ran: iteration 0 may be a resumed run's

    @property
    def best(self) -> float | None:
        """The best value of ``best_metric`` so far (None before the first finite one)."""
        return self.selection.score(self.best_metric) if self.best_metric else None

    def state(self, loop: AdaptationLoop) -> dict[str, Any]:
        rng = gather_objects(rng_state())
        selection = self.selection.state_dict()
        hooks = {name: obj.state_dict() for name, obj in self.stateful.items()}
        return {
            **loop.state_dict(),
            "rng": rng,
            "selection": selection,
            "hooks": hooks,
            **self.extra,
        }

    def load_state_dict(self, state: dict[str, Any], path: str | Path | None = None) -> None:
        """Restore the selection record and the stateful hooks from a checkpoint's state (a
        checkpoint written before the record existed holds only the best value of
        ``best_metric``).

        Args:
            state: the checkpoint's contents.
            path: the checkpoint file it was read from: the ``best.pt`` beside it, when it
                holds the recorded best state, is the best file until this run saves one of
                its own (a run resumed into another folder names it, not a file it never wrote).
        """
        self._resumed = True
        if "selection" in state:
            self.selection.load_state_dict(state["selection"])
        elif isinstance(state.get("best"), float) and self.best_metric:
            self.selection.load_state_dict(
                {"best": {self.best_metric: {"step": -1, "score": state["best"], "metrics": {}}}}
            )
        for name, obj in self.stateful.items():
            if name in state.get("hooks", {}):
                obj.load_state_dict(state["hooks"][name])
        folder = Path(path).parent if path else self.directory
        self.best_file = self._recorded_best_file(folder)
        recorded = "selection" in state  # (older checkpoints hold only the best value)
        own = self.best_file is None or self.best_file.name != "best.pt"
        if recorded and own and process_info().is_main:
            if folder == self.directory:
                self._set_aside_best()
            if self.best_file is not None:  # the best state's own checkpoint is on disk
                here = self.directory / "best.pt"  # (also when resumed into a new folder)
                here.parent.mkdir(parents=True, exist_ok=True)
                copy_atomically(self.best_file, here)
                self.best_file = here

    def _set_aside_best(self) -> None:
        """Rename this folder's ``best.pt`` that does not hold the recorded best state of
        ``best_metric`` (chosen by another ``checkpoint.best_by``, or by iterations after the
        checkpoint resumed from) to ``best_superseded_<step>.pt``, so that ``best.pt`` never
        holds a state that ``best_metric`` did not choose."""
        here = self.directory / "best.pt"
        if not here.is_file():
            return
        try:
            step = int(load_checkpoint(here, mmap=True, verify=False).get("step", -1))
        except CheckpointError:
            return
        kept = here.with_name(f"best_superseded_{step:08d}.pt")
        here.replace(kept)
        warnings.warn(
            f"{here} held iteration {step}, which "
            f"{'best_metric=' + repr(self.best_metric) if self.best_metric else 'no best_metric'} "
            f"did not choose in the record resumed (another checkpoint.best_by, or iterations "
            f"after the checkpoint resumed from): renamed {kept.name}; best.pt is written anew "
            "when the metric improves",
            stacklevel=2,
        )

    def _recorded_best_file(self, folder: Path) -> Path | None:
        """``folder``'s ``best.pt`` when it holds the best state of the selection record (the
        same iteration), else its ``iter_*.pt`` of that iteration (a ``checkpoint.best_by``
        changed on resume may have chosen the iteration resumed from), else None."""
        entry = self.selection.best.get(self.best_metric) if self.best_metric else None
        if entry is None:
            return None
        for candidate in (folder / "best.pt", folder / periodic_name(entry["step"])):
            if checkpoint_step(candidate) == entry["step"]:  # (None: none, or unreadable)
                return candidate
        return None

    def before_run(self, loop: AdaptationLoop) -> None:
        if getattr(loop, "step", 0) == 0 and not self._resumed:  # a new run (the hook reused:
            self.selection = ModelSelection(self.selection.lower_is_better)  # not the last
            self.best_file = None  # run's best carried into this one)
        hooks = getattr(loop, "hooks", None)
        evaluated = hooks is None or any(isinstance(h, Evaluation) for h in hooks)
        if self.best_metric is not None and not evaluated:
            warnings.warn(
                f"Checkpointer(best_metric={self.best_metric!r}) but the loop has no "
                "Evaluation hook, so no evaluation record is emitted and best.pt will never be "
                "written; add mic.Evaluation(task, test_loader, ...) to the loop's hooks (or "
                "best_metric=None)",
                stacklevel=2,
            )
        expected = next((h.expected for h in hooks or () if isinstance(h, Evaluation)), None)
        model = str(self.best_metric).split("/")[1] if self.best_metric is not None else None
        if expected and any(k.split("/")[1] == model for k in expected):  # a typo, told now
            self._check_metric(expected)
            self._metric_seen = False  # the first record is judged as well
        if process_info().is_main and self.directory.is_dir():
            for leftover in self.directory.glob(".*.tmp"):  # a save a crash interrupted
                leftover.unlink(missing_ok=True)
            if getattr(loop, "step", 0) == 0 and not self._resumed:  # (a stop after the
                self._set_aside_earlier_run()  # start model's evaluation left best.pt alone)
            elif loop.step < getattr(loop, "iterations", math.inf):  # something left to train
                self._set_aside_abandoned(loop.step)

    def _set_aside_abandoned(self, step: int) -> None:
        """A run resumed from an earlier checkpoint of this folder than its newest: move the
        ``iter_*.pt`` after ``step`` (the path it abandons, e.g. at another learning rate, or
        newer files that could not be read) into ``abandoned_at_<step>/`` (a new folder each
        time), with a warning, so that ``resume=auto`` after a crash continues this run."""
        name = periodic_name(step)
        later = sorted(p for p in self.directory.glob("iter_*.pt") if p.name > name)
        if not later:
            return
        aside = self.directory / f"abandoned_at_{step:08d}"
        for n in itertools.count(2):
            if not aside.exists():
                break
            aside = self.directory / f"abandoned_at_{step:08d}_{n}"
        aside.mkdir()
        for path in later:
            path.replace(aside / path.name)
        names = f"{later[0].name} to {later[-1].name}" if len(later) > 1 else later[0].name
        warnings.warn(
            f"Checkpointer: the run resumed at iteration {step}, before this folder's "
            f"{len(later)} later checkpoint(s) ({names}): moved to '{aside}', so that "
            "resume=auto continues this run from here",
            stacklevel=3,
        )

    def _set_aside_earlier_run(self) -> None:
        """A new run into a folder of another run's checkpoints: move that run's files
        (``iter_*.pt``, ``best*.pt``, ``student.pt``, ``teacher.pt``) into ``previous_run/``
        (replacing an older one), with a warning, so that the folder holds one run's files
        and ``latest_checkpoint`` finds this run's, not a later iteration of the other's."""
        earlier = sorted(p.name for p in self.directory.glob("iter_*.pt"))
        best = ["best.pt"] if (self.directory / "best.pt").is_file() else []
        final = [*best, *final_weights(self.directory)]
        if not earlier and not final:  # (a finished run's final weights alone are one too)
            return
        names = ("iter_*.pt", "best.pt", "best_superseded_*.pt", *FINAL_WEIGHTS)
        aside = self.directory / "previous_run"
        replaced = " (the run before it, there, removed)" if aside.exists() else ""
        shutil.rmtree(aside, ignore_errors=True)
        aside.mkdir()
        for pattern in names:
            for path in self.directory.glob(pattern):
                path.replace(aside / path.name)
        held = ", ".join(earlier[-2:]) or ", ".join(final)
        warnings.warn(
            f"Checkpointer: '{self.directory}' held checkpoints ({held}) of another run: "
            f"moved to '{aside}'{replaced}, which a later new run replaces; give each run a folder "
            "of its own, or resume that run (mic.resume.resume) to continue it",
            stacklevel=3,
        )

    def save(self, loop: AdaptationLoop) -> Path:
        state = self.state(loop)
        path = self.directory / periodic_name(loop.step)
        if process_info().is_main:
            save_checkpoint(state, path)
            for old in sorted(self.directory.glob("iter_*.pt"))[: -self.keep]:
                old.unlink()
            for stale in self.superseded:  # the run has gone past them
                stale.unlink(missing_ok=True)
            self.superseded = []
        self.saved_step = loop.step
        return path

    def after_step(self, loop: AdaptationLoop, losses: dict[str, Tensor]) -> None:
        if self.interval > 0 and loop.step % self.interval == 0:
            self.save(loop)

    def on_record(self, loop: AdaptationLoop, record: dict[str, Any]) -> None:
        task = getattr(loop, "task", None)
        if task is not None:  # ranked as the task says
            self.selection.lower_is_better = lower_is_better(task)
        if not self._metric_seen:
            self._check_metric(record)
        self._metric_recorded |= self.best_metric in record
        if self.best_metric in self.selection.update(record):
            state = self.state(loop)
            if process_info().is_main:
                save_checkpoint(state, self.directory / "best.pt")
            self.best_file = self.directory / "best.pt"

    def _check_metric(self, record: dict[str, Any]) -> None:
        """At the first evaluation record: is ``best_metric`` among its keys?

        Raises:
            ConfigError: its model is scored there, its metric is not (a typo); a labelled
                score where the evaluation has no labelled loader.
        """
        keys = sorted(k for k in record if k.startswith(("eval/", "validator/")))
        if not keys:
            return  # no evaluation record (or nothing scored): wait for one
        self._metric_seen = True
        metric = str(self.best_metric)
        if metric in record:
            return
        kind, model, _ = metric.split("/")
        scored = sorted({k.split("/")[1] for k in keys})
        numeric = [  # the scores best.pt can follow
            k
            for k in keys
            if isinstance(record[k], (int, float)) and not isinstance(record[k], bool)
        ]
        if kind == "eval" and not any(k.startswith("eval/") for k in keys):
            raise ConfigError(
                f"Checkpointer(best_metric={metric!r}): the evaluation has no labelled test "
                "loader, so it records no labelled score (eval/...) and best.pt would never be "
                f"written; follow a label-free validator's score: {', '.join(numeric)}"
            )
        if model in scored:
            close = difflib.get_close_matches(metric, numeric, n=3, cutoff=0.6)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"Checkpointer(best_metric={metric!r}): the evaluation records have no such "
                f"key, so best.pt would never be written.{hint} The records' scores: "
                f"{', '.join(numeric) or 'none'}"
            )
        warnings.warn(
            f"Checkpointer(best_metric={metric!r}): the evaluation does not score the {model} "
            f"(it scores: {', '.join(scored)}), so best.pt is not written; follow the score of "
            f"a scored model, e.g. {kind}/{scored[0]}/{metric.split('/')[2]}",
            stacklevel=2,
        )

    def after_run(self, loop: AdaptationLoop) -> None:
        if loop.step != self.saved_step and loop.step > 0:
            self.save(loop)
        entry = self.selection.best.get(self.best_metric) if self.best_metric else None
        missed = self._metric_recorded and self.best_file is None and loop.interrupted_by is None
        final = "student.pt" + (" and teacher.pt" if loop.teacher is not None else "")
        if missed and entry is not None:  # chosen before the checkpoint resumed from
            at = f"at iteration {entry['step']}, " if entry["step"] >= 0 else ""
            warnings.warn(
                f"Checkpointer(best_metric={self.best_metric!r}): its best score was {at}"
                "at or before the checkpoint this run resumed from, and no "
                "later evaluation beat it; that iteration's checkpoint is not on disk, so no "
                f"best.pt was written (the final weights are in {final})",
                stacklevel=2,
            )
        elif missed:
            warnings.warn(
                f"Checkpointer(best_metric={self.best_metric!r}): the score was not a finite "
                "number at any evaluation of the run (NaN: undefined, e.g. masked_agreement "
                "while the teacher's pseudo-labels hold nothing above the threshold), so no "
                f"best.pt was written; the final weights are in {final}",
                stacklevel=2,
            )
        if loop.interrupted_by is None and process_info().is_main:
            save_weights(loop.student, self.directory / "student.pt")
            if loop.teacher is not None:
                save_weights(loop.teacher.model, self.directory / "teacher.pt")
