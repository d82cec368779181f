"""One suite over the bundled benchmarks: MIC against its base, paired by seed.

    python -m benchmarks                            # --quick: a few minutes on 2 CPU cores
    python -m benchmarks --full                     # about 2 h 15 min on 2 CPU cores (README.md)
    python -m benchmarks --full --device cuda --jobs 8
    python -m benchmarks --tasks classification --seeds 0 1 2 3
    python -m benchmarks --from-cache               # table and plot again, no training

Each task compares one base method with the same method plus MIC, every seed run by both
(same seed: same initial weights, data order and random streams of the shared terms). The runs
are those of the task's own script, imported, with its method table:

- classification (``digits.py``): ``mean_teacher`` against ``mean_teacher_mic`` on the bundled
  digits; score: target test accuracy of the EMA teacher (and of the student), AdaBN.
- segmentation (``segmentation.py``): ``dacs`` against ``dacs_mic`` on the bundled street
  scenes (``experiment=streets``) at the reduced CPU schedule of segmentation.py (32 px, batch
  4 + 4, a narrower U-Net); score: target test mIoU of the EMA teacher, and per-class IoU.
- detection (``detection.py``): ``sada`` against ``sada_mic`` on the bundled fog shapes, both
  from the same source-only warm-up model of the seed; score: target test mAP@0.5 of the
  student (SADA has no teacher), and per-class AP@0.5.
- context (``segmentation.py``): ``dacs`` against ``dacs_mic`` on the context street scenes
  (``experiment=streets_context``: look-alike classes told apart on the target by their
  surroundings at the scale of several MIC blocks), both from the same source-only model of
  the seed, at the experiment's own recipe and model (the SmallUNet with LayerNorm); score:
  target test mIoU of the EMA teacher, and per-class IoU.

``--quick`` (default) shortens every schedule to tiny iteration counts and 2-3 seeds: it shows
that the suite runs end to end, not MIC's effect. ``--full`` runs every task with 10 seeds:
digits at mic-train's defaults, the street scenes at segmentation.py's CPU schedule,
detection with a 1000-iteration warm-up and 500 iterations per arm, and the context scenes
with a 2000-iteration source stage and 300 iterations per arm (``schedules``). On digits and
the warm-started tasks a third arm, the base given MIC's wall time (``<base>_equal_time``:
more iterations, in proportion to MIC's measured cost per iteration), tells MIC's effect from
that of its extra compute.

Every finished run is cached in the JSON file beside the table, keyed by (task, method, seed,
settings) and stamped with the resolved config it trained with and, if warm-started, that of
its source model (``configs`` in the JSON; a source model's record is also kept beside it in
``--work``, and one without a readable record or made with another config is trained again).
A cached run whose config differs from the one it would get now (a default changed since it
ran), or that has no record of it, is stale: named on stderr with what changed, marked in the
table, run again when a call chooses it (``--accept-stale`` takes it as current instead, for a
change known not to touch it; the table lists that call). Only the composed config is
compared: code changes are ``python -m benchmarks.checksums``'s to catch. Each run also records
the environment it ran in (``checksums.environment``: the CPU model, its vector instruction set,
the library versions), which decides the last bits of its weights and so its scores: a cached
run made in another environment than the call's, or without that record, is named on stderr
with what differs and marked in the table, but kept as current (``--fresh`` runs it again).
So a rerun only adds the runs it lacks and the stale ones, and ``--from-cache`` rewrites the
table (markdown and JSON; every mode with cached runs, the full one first) and the plot (PNG,
of the chosen mode; matplotlib from the ``bench`` extra) without training. The summary rows
with a stale run, or one from another environment, carry a mark. Ctrl-C stops the runs at
once, keeps the finished ones (exit status 130) and names the command that runs the rest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import signal
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import active_children, get_context
from pathlib import Path
from typing import Any

from checksums import environment
from common import (
    add_device_options,
    config_changes,
    end_workers_on_sigterm,
    interval95_bounds,
    mean_std,
    note_text,
    paired_differences,
    threads_per_run,
)

from mic.core.errors import MicError
from mic.training.checkpoint import write_text_atomically

RESULTS = Path(__file__).parent / "results"
#: where the source-only (warm-up) models are kept unless ``--work`` says otherwise
WORK = Path(tempfile.gettempdir()) / "mic_suite"
MODELS = ("student", "teacher")


@dataclass(frozen=True)
class Task:
    """One bundled benchmark of the suite.

    Args:
        script: the benchmark script (module in benchmarks/) whose ``run_one`` runs a method.
        benchmark: what the benchmark is, in words.
        metric: the score, in words.
        base: the base method (a key of the script's ``METHODS``).
        mic: the base method with MIC.
        model: the model whose score the summary, the plot and the per-class rows use.
        digits: decimals of the table's cells.
        experiment: the ``experiment=`` config the script runs (segmentation.py only; None:
            the script's own).
    """

    script: str
    benchmark: str
    metric: str
    base: str
    mic: str
    model: str
    digits: int = 1
    experiment: str | None = None

    @property
    def equal_time(self) -> str:
        """The base method given MIC's extra compute: the base with the schedule's
        ``equal_time`` overrides (more iterations, for the wall time of the MIC run)."""
        return f"{self.base}_equal_time"

    def methods(self, settings: dict[str, Any]) -> tuple[str, ...]:
        """The methods run with ``settings``: base, base + MIC and, where the schedule
        has ``equal_time`` overrides, the base given MIC's wall time."""
        extra = (self.equal_time,) if settings.get("equal_time") else ()
        return (self.base, self.mic, *extra)


TASKS: dict[str, Task] = {
    "classification": Task(
        "digits",
        "digits: scikit-learn digits -> digits on scikit-image photos",
        "target test accuracy (%)",
        "mean_teacher",
        "mean_teacher_mic",
        "teacher",
        2,
    ),
    "segmentation": Task(
        "segmentation",
        "street scenes: synthetic -> 'real' (experiment=streets)",
        "target test mIoU (%)",
        "dacs",
        "dacs_mic",
        "teacher",
    ),
    "detection": Task(
        "detection",
        "fog shapes: clear scenes -> fog, texture and noise (experiment=det_shapes)",
        "target test mAP@0.5 (%)",
        "sada",
        "sada_mic",
        "student",
    ),
    "context": Task(
        "segmentation",
        "context street scenes: road / sidewalk and person / pole told apart on the target by "
        "their surroundings alone (experiment=streets_context)",
        "target test mIoU (%)",
        "dacs",
        "dacs_mic",
        "teacher",
        experiment="streets_context",
    ),
}
#: the source stage of a warm start on the context scenes (conf/experiment/streets_context.yaml),
#: with rare class sampling: person and pole are thin and rare (about 1.6 % of the pixels each)
CONTEXT_SOURCE_STAGE = [
    "optimizer.lr=6e-4",
    "scheduler.warmup_iters=150",
    "+method.rare_class_sampling=true",
]
#: the context scenes' model: the experiment's SmallUNet with LayerNorm
CONTEXT_MODEL = "model.norm=layer"


def schedules(mode: str) -> dict[str, dict[str, Any]]:
    """Task -> the settings of ``mode`` (``quick`` or ``full``): ``seeds``, ``overrides``
    (mic-train overrides on top of the script's own) and, for the tasks that start from a
    source-only model, its ``warmup`` iterations, the ``iterations`` of each arm and (context)
    the ``warmup_overrides`` of the source stage; ``equal_time``, where a task has it, the
    overrides of the base given MIC's wall time (an ``iterations=`` there replaces the
    ``iterations`` of a warm-started task)."""
    from segmentation import CPU_BUDGET

    if mode not in ("quick", "full"):
        raise ValueError(f"mode must be 'quick' or 'full', not {mode!r}")
    quick = mode == "quick"
    streets = [o for o in CPU_BUDGET if not o.startswith("iterations=")]
    return {
        "classification": {
            "seeds": [0, 1, 2] if quick else list(range(10)),
            # full: mic-train's digits defaults (1000 iterations, 200 on the source alone)
            "overrides": ["iterations=150", "adaptation_start=50"] if quick else [],
            # the base given MIC's wall time: a MIC iteration took 1.56x a mean-teacher one
            # in the full runs (0.108 against 0.069 s), so the base's whole schedule is
            # stretched by 1.56 (the table reports the wall-time ratio that resulted)
            "equal_time": (
                ["iterations=234", "adaptation_start=78"]
                if quick
                else ["iterations=1560", "adaptation_start=312"]
            ),
        },
        "segmentation": {
            "seeds": [0, 1] if quick else list(range(10)),
            # full: segmentation.py --cpu-budget (900 iterations)
            "overrides": [*streets, "iterations=150" if quick else "iterations=900"],
        },
        "detection": {
            "seeds": [0, 1] if quick else list(range(10)),
            "warmup": 150 if quick else 1000,
            "iterations": 60 if quick else 500,
            "overrides": ["dataset.test.length=100"] if quick else [],
            # the base given MIC's wall time: a SADA + MIC iteration took 1.62x a SADA one in
            # the full runs (0.452 against 0.279 s), so SADA runs 1.62x the iterations
            "equal_time": ["iterations=97"] if quick else ["iterations=810"],
        },
        "context": {
            "seeds": [0, 1] if quick else list(range(10)),
            # full: the experiment's recipe, a 2000-iteration source stage, 300 of each arm
            "warmup": 100 if quick else 2000,
            "iterations": 30 if quick else 300,
            # quick: a warm-up of 10 of its 100 iterations (150 would never end)
            "warmup_overrides": (
                [o.replace("warmup_iters=150", "warmup_iters=10") for o in CONTEXT_SOURCE_STAGE]
                if quick
                else CONTEXT_SOURCE_STAGE
            ),
            # the base given MIC's wall time: a DACS + MIC iteration took 1.45x a DACS one in
            # the full runs (0.214 against 0.148 s), so DACS runs 1.45x the iterations (its
            # poly schedule stretched with them)
            "equal_time": ["iterations=44"] if quick else ["iterations=435"],
            # the experiment's LayerNorm U-Net, stated so that the cache keys and the rerun
            # commands tell these runs from the BatchNorm U-Net's (the experiment's model
            # before; benchmarks/results/context_ablation.md)
            "overrides": [CONTEXT_MODEL, *(["dataset.test_count=100"] if quick else [])],
        },
    }


def settings_key(settings: dict[str, Any]) -> str:
    """What identifies a run's schedule in the cache: the settings without the seeds and the
    equal-time overrides (which only the equal-time runs' keys hold)."""
    kept = {k: v for k, v in settings.items() if k not in ("seeds", "equal_time")}
    return json.dumps(kept, sort_keys=True)


def run_key(task: str, method: str, seed: int, settings: dict[str, Any]) -> str:
    key: list[Any] = [task, method, seed, settings_key(settings)]
    if method == TASKS[task].equal_time:
        key.append(settings["equal_time"])
    return json.dumps(key)


#: the files the suite writes, OUT + each
OUT_SUFFIXES = (".md", ".json", ".png")


def out_file(out: Path, suffix: str) -> Path:
    """The file ``OUT`` + ``suffix`` (``suite_v1.5`` -> ``suite_v1.5.json``)."""
    return out.with_name(out.name + suffix)


def default_jobs(device: str) -> int:
    """Runs at a time when ``--jobs`` is not given: one per CPU core this process may use on a
    CPU (each run on one thread: a run's results do not depend on how many run beside it),
    one on an accelerator (``--jobs N`` shares it out)."""
    if device != "cpu":
        return 1
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return max(1, len(cores) if cores else os.cpu_count() or 1)


def _device(p: argparse.ArgumentParser, device: str) -> str:
    """``--device`` checked, ``auto`` resolved (cuda where there is one, else cpu)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError:
        kind = None
    if kind not in ("cpu", "cuda"):
        p.error(f"--device {device}: choose cpu, cuda, cuda:N or auto")
    if kind == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {device}: there is no CUDA device here; use --device cpu")
    return device


def _unwritable(folder: Path) -> str | None:
    """Why no file could be written in ``folder`` (made when the suite writes there, if
    missing), or None if one could: the nearest existing folder on its path is looked at,
    nothing is created or written."""
    found = folder
    while not found.exists() and found.parent != found:
        found = found.parent
    if not found.is_dir():
        return f"{found} is not a folder"
    if os.statvfs(found).f_flag & os.ST_RDONLY:
        return f"{found} is on a read-only file system"
    if not os.access(found, os.W_OK | os.X_OK):
        return f"no permission to write in {found}"
    return None


def _out(text: str) -> Path:
    """``--out``: a folder (written with a trailing slash, or an existing one) holds
    suite.md, suite.json and suite.png; anything else names the files, with or without one of
    their suffixes (``x`` and ``x.md`` both write x.md, x.json and x.png)."""
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        return path / "suite"
    return path.with_suffix("") if path.suffix in OUT_SUFFIXES else path


def _is_fresh(word: str) -> bool:
    """Whether a word of the command line is ``--fresh`` (or an abbreviation argparse takes)."""
    return word.startswith("--fre") and "--fresh".startswith(word)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The suite's options; ``args.settings`` is task -> settings of the chosen mode and tasks
    (``--seeds`` replacing each task's seeds)."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", dest="mode", action="store_const", const="quick", help="(default) minutes"
    )
    mode.add_argument(
        "--full",
        dest="mode",
        action="store_const",
        const="full",
        help="about 2 h 15 min on 2 CPU cores",
    )
    p.set_defaults(mode="quick")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument(
        "--methods", nargs="+", default=None, help="only these methods of the chosen tasks"
    )
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="(default: the mode's)")
    add_device_options(
        p,
        None,
        "runs in parallel processes (default: one per CPU core on a CPU, one on a GPU; more "
        "than the cores is allowed, with a warning)",
        "where each run trains: cpu (default), cuda, cuda:N, or auto (cuda where there is "
        "one, else cpu)",
    )
    p.add_argument(
        "--out",
        type=_out,
        default=RESULTS / "suite",
        help="writes OUT.md, OUT.json (table and cached runs) and OUT.png; a folder (a "
        "trailing slash, or an existing folder) gets suite.md, suite.json and suite.png "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--work",
        type=Path,
        default=WORK,
        help="where the source-only (warm-up) models are kept (default: %(default)s)",
    )
    p.add_argument(
        "--from-cache",
        "--table-only",
        dest="from_cache",
        action="store_true",
        help="rewrite table and plot from the cached runs of the mode (all of them), no training",
    )
    p.add_argument(
        "--note",
        default=None,
        help="a paragraph for the table of this mode (or @file); replaces the previous one",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="run the chosen runs again (the warm-up models in --work are kept)",
    )
    p.add_argument(
        "--accept-stale",
        action="store_true",
        help="take the chosen stale runs (made with another config than the current one, or "
        "without a record of it) as made with the current config, without running them: for "
        "a change you know does not touch them; the table lists the call",
    )
    args = p.parse_args(argv)
    args.words = list(sys.argv[1:] if argv is None else argv)
    every = schedules(args.mode)
    known = {m for t in args.tasks for m in TASKS[t].methods(every[t])}
    unknown = sorted(set(args.methods or []) - known)
    if unknown:
        p.error(
            f"--methods {' '.join(unknown)}: not a method of the tasks {' '.join(args.tasks)}; "
            f"choose from {' '.join(sorted(known))}"
        )
    args.device = _device(p, args.device)
    if args.jobs is None:
        args.jobs = default_jobs(args.device)
    if args.jobs < 1:
        p.error("--jobs must be at least 1")
    cores = default_jobs("cpu")
    if args.jobs > cores and not args.from_cache:
        print(
            f"warning: --jobs {args.jobs} is more than the {cores} CPU cores this process may "
            "use: the runs share them, and each takes longer",
            file=sys.stderr,
        )
    if args.threads < 0:
        p.error("--threads must be at least 0 (0: one per run on a CPU)")
    seeds = args.seeds or []
    if len(set(seeds)) < len(seeds) or any(s < 0 for s in seeds):
        p.error(f"--seeds must be distinct and at least 0, got {' '.join(map(str, args.seeds))}")
    given = [
        option
        for option, value in (
            ("--tasks", args.tasks != list(TASKS)),
            ("--methods", args.methods is not None),
            ("--seeds", args.seeds is not None),
        )
        if value
    ]
    if args.from_cache and args.fresh:  # (--fresh was ignored)
        p.error("--fresh trains the runs again and --from-cache trains none: give one of them")
    if args.from_cache and not args.accept_stale and given:  # (they were ignored)
        p.error(
            f"{' and '.join(given)} choose the runs to train (or, with --accept-stale, to "
            "take as current); --from-cache writes the table of every cached run of the mode: "
            "leave them out"
        )
    if args.note is not None:
        try:
            args.note = note_text(args.note).strip()
        except OSError as e:
            p.error(f"--note {args.note}: {e.strerror or e}")
    folders = [("--out", args.out.parent)]
    if not args.from_cache:  # --from-cache writes nothing in --work
        folders.append(("--work", args.work))
    for name, folder in folders:
        problem = _unwritable(folder)
        if problem:
            p.error(f"{name}: cannot write in {folder} ({problem}); choose another folder")
    args.settings = {t: every[t] for t in args.tasks}
    if args.seeds is not None:
        args.settings = {t: {**s, "seeds": list(args.seeds)} for t, s in args.settings.items()}
    return args


# ---------------------------------------------------------------------------- running


def run(
    task: str,
    method: str,
    seed: int,
    settings: dict[str, Any],
    device: str,
    threads: int,
    start: str | None = None,
    config_only: bool = False,
) -> dict:
    """One run of ``method`` on ``task`` by its script's ``run_one`` (in this process), from
    the source-only model saved at ``start`` for the tasks with a ``warmup``; ``config_only``:
    the resolved config it would train with (``common.config_record``), without training."""
    import importlib

    spec = TASKS[task]
    script = importlib.import_module(spec.script)
    extra = list(settings["overrides"])
    if method == spec.equal_time:
        arm = equal_time_arm(settings)
        row = run(task, spec.base, seed, arm, device, threads, start, config_only)
        return row if config_only else {**row, "method": method}
    if task == "classification":
        return script.run_one(method, seed, device, threads, extra, config_only=config_only)
    if task == "detection":
        steps = settings["iterations"]
        return script.run_one(
            method, seed, steps, device, threads, extra, start, config_only=config_only
        )
    if "iterations" in settings:
        extra.append(f"iterations={settings['iterations']}")
    experiment = spec.experiment or "streets"
    return script.run_one(
        method, seed, device, threads, extra, experiment, start, config_only=config_only
    )


def equal_time_arm(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings of the equal-time arm: an ``iterations=`` of ``equal_time`` replaces the
    ``iterations`` of a warm-started task (its own schedule key), the other overrides follow
    the schedule's."""
    arm = {**settings, "overrides": list(settings["overrides"]), "equal_time": None}
    for o in settings["equal_time"]:
        if o.startswith("iterations=") and "iterations" in settings:
            arm["iterations"] = int(o.split("=", 1)[1])
        else:
            arm["overrides"].append(o)
    return arm


#: config keys a source-only warm-up does not use (no teacher, no pseudo-labels): a change of
#: them leaves its model as it is
SOURCE_STAGE_UNUSED = (
    "teacher.",
    "pseudo_label_threshold",
    "task.score_threshold",
    "task.ignore_threshold",
)


def warm_up(
    task: str,
    seed: int,
    settings: dict[str, Any],
    device: str,
    threads: int,
    path: str,
    config_only: bool = False,
) -> dict:
    """The source-only model of ``seed`` (the script's ``warmup``), saved at ``path``, with
    the record of its config beside it (``config_file``, composed before it trains);
    ``config_only``: that record (``common.config_record``), without training."""
    extra = [*settings.get("warmup_overrides", []), *settings["overrides"]]
    steps = settings["warmup"]
    if not config_only:
        record = warm_up(task, seed, settings, device, threads, path, config_only=True)
        Path(path).parent.mkdir(parents=True, exist_ok=True)  # (a --work folder not made yet)
    if task == "detection":
        import detection

        row = detection.warmup(
            seed, steps, device, threads, extra, path, "torchvision", config_only=config_only
        )
    else:
        import segmentation

        experiment = TASKS[task].experiment or "streets"
        row = segmentation.warmup(
            seed, steps, device, threads, extra, path, experiment, config_only=config_only
        )
    if config_only:
        return row
    write_text_atomically(config_file(path), json.dumps(record, indent=1, sort_keys=True))
    return row


def run_stamped(
    task: str,
    method: str,
    seed: int,
    settings: dict[str, Any],
    device: str,
    threads: int,
    start: str | None,
) -> tuple[dict, dict[str, Any], dict[str, Any] | None]:
    """``run`` in a worker process: its row, the config it trains with (composed in the same
    process just before) and the record of the source model it starts from (None without
    one)."""
    record = run(task, method, seed, settings, device, threads, start, config_only=True)
    source = read_record(config_file(start)) if start else None
    return run(task, method, seed, settings, device, threads, start), record, source


def config_file(warmup: str | Path) -> Path:
    """The file beside a warm-up model that records the config it was trained with."""
    return Path(warmup).with_suffix(".config.json")


def read_record(path: Path) -> dict[str, Any] | None:
    """The config record in ``path``; None when there is none or it cannot be read."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def warmup_current(path: Path, task: str, settings: dict[str, Any], configs: Configs) -> bool:
    """Whether the warm-up model at ``path`` exists with a readable record of its config
    equal to the current one (else ``train`` trains it again)."""
    record = read_record(config_file(path))
    if record is None or not path.exists():
        return False
    return not config_changes(record, configs.warmup(task, settings), SOURCE_STAGE_UNUSED)


# ---------------------------------------------------------------------------- stale runs


def config_digest(record: dict[str, Any]) -> str:
    """A short name of a ``common.config_record``: the key of ``state["configs"]``."""
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def describe_changes(changes: dict[str, tuple[Any, Any]], limit: int = 4) -> str:
    """``common.config_changes`` in words: ``key: old -> new`` for the first ``limit``."""
    words = [f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(changes.items())[:limit]]
    if len(changes) > limit:
        words.append(f"and {len(changes) - limit} more")
    return "; ".join(words)


class Configs:
    """The resolved configs the suite's runs and warm-ups train with now, composed once per
    (task, method, settings) and per warm-up schedule (no model is built), for telling the
    cached runs made with another config (a default changed since) from the current ones."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._runs: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._warmups: dict[tuple[str, str], dict[str, Any]] = {}

    def run(self, task: str, method: str, settings: dict[str, Any]) -> dict[str, Any]:
        key = (task, method, json.dumps([settings_key(settings), settings.get("equal_time")]))
        if key not in self._runs:
            self._runs[key] = run(task, method, 0, settings, self.device, 1, None, True)
        return self._runs[key]

    def warmup(self, task: str, settings: dict[str, Any]) -> dict[str, Any]:
        key = (task, settings_key(settings))
        if key not in self._warmups:
            self._warmups[key] = warm_up(task, 0, settings, self.device, 1, "", True)
        return self._warmups[key]


def stamp(
    state: dict, row: dict, record: dict[str, Any], source: dict[str, Any] | None = None
) -> None:
    """Records in ``row`` the config it trained with and, for a warm-started run, that of its
    source model (kept once each under ``state["configs"]``); clears a stale mark."""
    for field, r in (("config", record), ("source_config", source)):
        if r is not None:
            row[field] = config_digest(r)
            state.setdefault("configs", {})[row[field]] = r
    row.pop("stale", None)


def staleness(
    state: dict, task: str, settings: dict[str, Any], row: dict, configs: Configs
) -> str | None:
    """Why a cached run of ``task`` with ``settings`` is not the run the settings give now
    (its config, or its source model's, recorded when it ran, differs from the current one,
    or was not recorded); None: it is current."""
    stored = state.get("configs", {})
    if row.get("config") not in stored:
        return "no config recorded"
    changes = config_changes(stored[row["config"]], configs.run(task, row["method"], settings))
    if changes:
        return describe_changes(changes)
    if "warmup" not in settings:
        return None
    if row.get("source_config") not in stored:
        return "no config of its source model recorded"
    source = stored[row["source_config"]]
    changes = config_changes(source, configs.warmup(task, settings), SOURCE_STAGE_UNUSED)
    return "its source model's config changed: " + describe_changes(changes) if changes else None


def mark_stale(
    state: dict, configs: Configs, modes: tuple[str, ...] = ("full", "quick")
) -> dict[str, tuple[str, str]]:
    """Marks every cached run of the schedules of ``modes`` (any seed) that ``staleness``
    finds not current: ``row["stale"]`` says why; clears the mark of the current ones.
    Returns key -> (mode, reason) of the stale runs."""
    return _mark(state, modes, "stale", lambda t, s, row: staleness(state, t, s, row, configs))


def _mark(state: dict, modes: tuple[str, ...], field: str, why: Any) -> dict[str, tuple[str, str]]:
    """Sets ``row[field]`` of every cached run of the schedules of ``modes`` to ``why(task,
    settings, row)`` where that gives a reason, and removes it where it gives None. Returns
    key -> (mode, reason) of the marked runs."""
    marked = {}
    for mode in modes:
        for task, settings in schedules(mode).items():
            for k, row in _matching(state["runs"], task, settings).items():
                reason = why(task, settings, row)
                if reason:
                    row[field] = reason
                    marked[k] = (mode, reason)
                else:
                    row.pop(field, None)
    return marked


def stamp_environment(state: dict, row: dict, here: dict[str, str]) -> None:
    """Records in ``row`` the environment it ran in (``checksums.environment``: the CPU, its
    vector instruction set, the library versions; kept once under
    ``state["environments"]``); clears an other-environment mark."""
    row["environment"] = config_digest(here)
    state.setdefault("environments", {})[row["environment"]] = here
    row.pop("other_environment", None)


def environment_change(state: dict, row: dict, here: dict[str, str]) -> str | None:
    """How the environment a cached run was made in differs from ``here``, in words (``no
    environment recorded`` for a run cached before the suite recorded it); None: the same."""
    made = state.get("environments", {}).get(row.get("environment"))
    if not isinstance(made, dict):
        return "no environment recorded"
    changes = {k: (made.get(k), here.get(k)) for k in made | here if made.get(k) != here.get(k)}
    return describe_changes(changes) if changes else None


def mark_environment(
    state: dict, here: dict[str, str], modes: tuple[str, ...] = ("full", "quick")
) -> dict[str, tuple[str, str]]:
    """Marks every cached run of the schedules of ``modes`` made in another environment than
    ``here``, or without a record of it: ``row["other_environment"]`` says what differs (the
    last bits of the weights, and so the scores, may); clears the mark of the others. Unlike
    a stale run, such a run is kept as current (``--fresh`` runs it again). Returns key ->
    (mode, what differs) of the marked runs."""
    return _mark(
        state, modes, "other_environment", lambda _t, _s, row: environment_change(state, row, here)
    )


def accept_stale(args: argparse.Namespace, state: dict, configs: Configs) -> int:
    """``--accept-stale``: stamps the stale runs that ``args`` chooses with the current config
    (and source model config) without running them; returns how many."""
    n = 0
    for task, method, _, key in chosen_runs(args):
        row = state["runs"].get(key)
        if row is not None and "stale" in row:
            settings = args.settings[task]
            source = configs.warmup(task, settings) if "warmup" in settings else None
            stamp(state, row, configs.run(task, method, settings), source)
            n += 1
    return n


def warmup_score(row: dict) -> float | None:
    """The source-only model's score (a fraction) in a warm-up row: mAP@0.5 or mIoU."""
    return row.get("map_50", row.get("miou"))


def warmup_path(work: Path, task: str, seed: int, settings: dict[str, Any]) -> Path:
    tag = hashlib.sha1(settings_key(settings).encode()).hexdigest()[:10]
    return work / f"{task}_warmup_seed{seed}_{tag}.pt"


def _seeds_by(pairs: Iterable[tuple[Any, int]]) -> dict[Any, str]:
    """Group -> its seeds, in words (``"0 1 2"``), from (group, seed) pairs."""
    grouped: dict[Any, list[int]] = {}
    for group, seed in pairs:
        grouped.setdefault(group, []).append(seed)
    return {g: " ".join(map(str, sorted(seeds))) for g, seeds in grouped.items()}


def stale_lines(stale: dict[str, tuple[str, str]]) -> str:
    """``mark_stale``'s stale runs (or ``mark_environment``'s runs) in words, one line per
    mode, task, method and reason."""
    keys = {k: json.loads(k)[:3] for k in stale}
    grouped = _seeds_by(((mode, *keys[k][:2], why), keys[k][2]) for k, (mode, why) in stale.items())
    return "\n".join(
        f"  --{mode} {task} {method} seeds {seeds}: {why}"
        for (mode, task, method, why), seeds in grouped.items()
    )


def chosen_runs(args: argparse.Namespace) -> list[tuple[str, str, int, str]]:
    """(task, method, seed, cache key) of every run that ``args`` chooses (its tasks, methods
    and seeds), seed by seed so that pairs complete early."""
    chosen = []
    for task, settings in args.settings.items():
        methods = [m for m in TASKS[task].methods(settings) if m in (args.methods or [m])]
        for seed in settings["seeds"]:
            chosen += [(task, m, seed, run_key(task, m, seed, settings)) for m in methods]
    return chosen


def missing_runs(args: argparse.Namespace, state: dict) -> list[tuple[str, str, int, str]]:
    """The ``chosen_runs`` of ``args`` that ``state`` lacks, holds marked stale
    (``mark_stale``) or holds marked ``rerun`` (by a ``--fresh`` call that stopped before it
    ran them again); all of them with ``--fresh``."""
    runs = state["runs"]
    return [
        job
        for job in chosen_runs(args)
        if args.fresh or job[3] not in runs or {"stale", "rerun"} & set(runs[job[3]])
    ]


def train(args: argparse.Namespace, state: dict, configs: Configs, here: dict[str, str]) -> int:
    """Runs the ``missing_runs`` of ``args`` (the warm-ups first: those missing, or whose
    record of their config is missing, unreadable or not the current one; a warm-started run
    starts when its warm-up is done), saving ``state`` as each finishes, every run stamped
    with its config, its source model's and the environment ``here`` (``stamp_environment``);
    returns how many ran.

    Raises:
        SystemExit: Ctrl-C (status 130) or a run's error (a ``MicError``, e.g. a bad setting,
            or a process that died), after saving what finished: one message, with what is
            kept and the command that runs the rest. Any other error is raised as it is,
            after the queued and running runs are stopped.
    """
    cache = out_file(args.out, ".json")
    threads = threads_per_run(args.device, args.jobs, args.threads)
    todo = missing_runs(args, state)
    at_once = max(1, min(args.jobs, len(todo)))
    print(
        f"{_count(len(todo), 'run')} to do, {at_once} at a time, {threads} thread(s) each",
        flush=True,
    )
    if not todo:
        return 0
    t0 = time.perf_counter()
    done = 0

    def save() -> None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(cache, json.dumps(state, indent=1))

    again = [key for *_, key in todo if args.fresh and key in state["runs"]]
    for key in again:  # until each runs again: a call without --fresh runs those a stop left
        state["runs"][key]["rerun"] = "--fresh runs it again"
    if again:
        save()

    pool = ProcessPoolExecutor(
        args.jobs, mp_context=get_context("spawn"), initializer=_worker_start
    )
    pending: dict[Future, tuple[str, str, Any]] = {}  # -> ("warmup", task, seed) or ("run", ...)

    def submit(task: str, m: str, seed: int, key: str, start: str | None = None) -> None:
        chosen = args.settings[task]
        job = pool.submit(run_stamped, task, m, seed, chosen, args.device, threads, start)
        pending[job] = ("run", task, key)

    try:
        starts: dict[tuple[str, int], str] = {}
        for task, _, seed, _ in todo:
            settings = args.settings[task]
            if "warmup" not in settings or (task, seed) in starts:
                continue
            path = warmup_path(args.work, task, seed, settings)
            starts[task, seed] = str(path)
            if not warmup_current(path, task, settings, configs):
                path.parent.mkdir(parents=True, exist_ok=True)
                job = pool.submit(warm_up, task, seed, settings, args.device, threads, str(path))
                pending[job] = ("warmup", task, seed)
        waiting = {(task, seed) for kind, task, seed in pending.values()}
        # the warm-ups first; the other runs queue behind them, a warm-started one is submitted
        # when its warm-up is done
        for job in todo:
            if (job[0], job[2]) not in waiting:
                submit(*job, starts.get((job[0], job[2])))
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                kind, task, key = pending.pop(future)
                if kind == "warmup":
                    seed = key
                    w = future.result()
                    state["warmups"][run_key(task, "warmup", seed, args.settings[task])] = w
                    save()
                    print(f"{task} warm-up seed {seed}: {100 * warmup_score(w):.1f}", flush=True)
                    for job in todo:
                        if (job[0], job[2]) == (task, seed):
                            submit(*job, starts[task, seed])
                    continue
                row, record, source = future.result()
                state["runs"][key] = {"task": task, **row}
                stamp(state, state["runs"][key], record, source)
                stamp_environment(state, state["runs"][key], here)
                save()
                done += 1
                s = scores(task, row)
                print(
                    f"{task} {row['method']} seed {row['seed']}: "
                    + ", ".join(f"{who} {100 * v:.2f}" for who, v in s.items() if v is not None)
                    + f" ({row['seconds_per_iteration']:.3f} s/it; "
                    f"{time.perf_counter() - t0:.0f} s since the start)",
                    flush=True,
                )
    except (KeyboardInterrupt, MicError, BrokenProcessPool) as e:
        _stop(pool)
        if done and getattr(args, "call", None):  # (listed in the table with the runs kept)
            minutes = (time.perf_counter() - t0) / 60
            state["calls"].append(call_record(args, done, minutes, interrupted=True))
            save()
        kept = (
            f"{_count(done, 'run')} of {len(todo)} finished and kept in {cache}"
            if done
            else f"none of the {_count(len(todo), 'run')} finished, nothing kept"
        )
        again = _rest(args, done)
        if isinstance(e, KeyboardInterrupt) or type(e).__name__ == "TrainingInterrupted":
            print(f"interrupted: {kept}; {again}", file=sys.stderr)
            raise SystemExit(130) from None
        if isinstance(e, BrokenProcessPool):
            raise SystemExit(
                f"a run's process died (out of memory? fewer --jobs use less): {kept}; {again}"
            ) from None
        raise SystemExit(f"a run failed: {type(e).__name__}: {e}\n({kept})") from None
    except BaseException:  # anything else (a bug) keeps its traceback, without the queue
        _stop(pool)
        raise
    pool.shutdown()
    return len(todo)


def call_record(
    args: argparse.Namespace, runs: int, minutes: float, interrupted: bool = False
) -> dict[str, Any]:
    """A call of the suite as the table lists it: its command (``args.call``), mode, wall
    time, runs finished, jobs and threads, the machine; ``interrupted``: stopped (Ctrl-C, a
    failed run) after finishing ``runs``."""
    threads = threads_per_run(args.device, args.jobs, args.threads)
    machine = args.device if args.device != "cpu" else f"{os.cpu_count()} CPU cores"
    record = {
        "command": args.call,
        "mode": args.mode,
        "minutes": minutes,
        "runs": runs,
        "jobs": args.jobs,
        "threads": threads,
        "machine": f"{machine}, load average {os.getloadavg()[0]:.1f} at the end",
        "finished": _now(),
    }
    return {**record, "interrupted": True} if interrupted else record


def _rest(args: argparse.Namespace, done: int) -> str:
    """The command that runs what an interrupted call left, in words: the same command, but
    without ``--fresh`` once runs finished (with it, they would run again)."""
    if not (args.fresh and done):
        return "the same command runs the rest"
    rest = "python -m benchmarks " + shlex.join(w for w in args.words if not _is_fresh(w))
    return f"without --fresh, `{rest.strip()}` runs the rest (with it, all of them run again)"


def _worker_start() -> None:
    """Each worker process's start: tqdm's write lock a thread lock, not the process lock it
    would make itself (a named semaphore that ``_stop``'s kill would leave behind, with a
    warning at exit; a process of its own shares it with no one)."""
    import threading

    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued runs and end the running ones at once (their processes are killed:
    a SIGTERM would let mic's training guard finish the run cleanly, and the process would
    then take the next run already handed to it, whose result nobody waits for). A second
    Ctrl-C meanwhile (GNU timeout's signal to the group) is ignored: it ended the call in a
    traceback, without the record of the runs it had finished."""
    held = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        pool.shutdown(wait=False, cancel_futures=True)
        for child in active_children():
            child.kill()
        for child in active_children():
            child.join(timeout=10)
    finally:
        signal.signal(signal.SIGINT, held)


# ---------------------------------------------------------------------------- the table


def scores(task: str, row: dict) -> dict[str, float | None]:
    """The student's and the teacher's score (a fraction) of a script's run row."""
    if TASKS[task].script == "segmentation":
        return {"student": row.get("student_miou"), "teacher": row.get("teacher_miou")}
    return {"student": row.get("student"), "teacher": row.get("teacher")}


def per_class(task: str, row: dict, model: str) -> dict[str, float]:
    """Class -> score (a fraction) of ``model`` in a run row: per-class IoU for segmentation,
    AP@0.5 per class for detection (detection.py's ``CLASSES`` order), none for digits;
    missing and NaN scores left out."""
    if TASKS[task].script == "segmentation":
        found = dict(row.get(f"{model}_iou") or {})
    elif task == "detection":
        from detection import CLASSES

        found = dict(zip(CLASSES, row.get(f"{model}_per_class") or []))
    else:
        found = {}
    return {c: v for c, v in found.items() if v is not None and not math.isnan(v)}


def _matching(cached: dict[str, dict], task: str, settings: dict[str, Any]) -> dict[str, dict]:
    """The cached entries (key -> row) of ``task`` run with ``settings`` (any seeds; equal-time
    runs only with the schedule's ``equal_time`` overrides)."""
    wanted = settings_key(settings)
    found = {}
    for k, r in cached.items():
        key = json.loads(k)
        if key[0] == task and key[3] == wanted and key[4:] in ([], [settings.get("equal_time")]):
            found[k] = r
    return found


def _by_method(state: dict, task: str, settings: dict[str, Any]) -> dict[str, dict[int, dict]]:
    """Method -> seed -> the scores of the cached runs of ``task`` with ``settings``: both
    models' scores, the task model's per-class scores, seconds per iteration, device."""
    by: dict[str, dict[int, dict]] = {}
    for r in _matching(state["runs"], task, settings).values():
        by.setdefault(r["method"], {})[r["seed"]] = {
            **scores(task, r),
            "per_class": per_class(task, r, TASKS[task].model),
            "seconds_per_iteration": r.get("seconds_per_iteration"),
            "seconds": _seconds(r, _schedule_iterations(task, r["method"], settings)),
            "device": r.get("device"),
            "stale": r.get("stale"),
            "other_environment": r.get("other_environment"),
        }
    return by


def _schedule_iterations(task: str, method: str, settings: dict[str, Any]) -> int | None:
    """The iterations of ``method``'s arm in a warm-started schedule (the equal-time arm's
    own ``iterations=``); None for the tasks without an ``iterations`` setting."""
    if "iterations" not in settings:
        return None
    if method == TASKS[task].equal_time and settings.get("equal_time"):
        return int(equal_time_arm(settings)["iterations"])
    return int(settings["iterations"])


def _seconds(row: dict, scheduled: int | None = None) -> float | None:
    """A run's training time: seconds per iteration x its iterations (the last
    ``iterations=`` of its overrides, else the row's ``iterations``, else ``scheduled``, the
    arm's iterations in the suite's schedule, else conf/config.yaml's)."""
    spi = row.get("seconds_per_iteration")
    told = [o.split("=", 1)[1] for o in row.get("overrides", []) if o.startswith("iterations=")]
    if told:
        n = int(told[-1])
    elif row.get("iterations"):
        n = int(row["iterations"])
    elif scheduled is not None:
        n = scheduled
    else:
        from omegaconf import OmegaConf

        n = int(OmegaConf.load(Path(__file__).parents[1] / "conf" / "config.yaml").iterations)
    return None if spi is None else spi * n


def _describe(values: list[float | None]) -> dict | None:
    kept = [100 * v for v in values if v is not None and not math.isnan(v)]
    if not kept:
        return None
    std = statistics.stdev(kept) if len(kept) > 1 else None  # one value has no spread
    return {"n": len(kept), "mean": statistics.mean(kept), "std": std, "values": kept}


def _paired(a: dict[int, dict], b: dict[int, dict], field: str) -> dict | None:
    """Per-seed ``a - b`` of ``field`` (points) over the seeds both scored: the differences,
    mean, std and the 95 % interval of the mean (both None below two seeds) and the seeds
    ahead."""
    seeds = [
        s
        for s in sorted(set(a) & set(b))
        if a[s].get(field) is not None and b[s].get(field) is not None
    ]
    if not seeds:
        return None
    d = [a[s][field] - b[s][field] for s in seeds]
    bounds = interval95_bounds(d)
    return {
        "seeds": seeds,
        "per_seed": [100 * x for x in d],
        "n": len(d),
        "mean": 100 * statistics.mean(d),
        "std": 100 * statistics.stdev(d) if len(d) > 1 else None,
        "ci95": list(bounds) if bounds else None,
        "mic_ahead": sum(x > 0 for x in d),
    }


def _command(
    mode: str,
    task: str,
    methods: list[str],
    seeds: list[int],
    out: Path,
    devices: Iterable[str],
    work: Path = WORK,
) -> str:
    """The suite's command that runs ``methods`` of ``task`` again for ``seeds`` (on a GPU
    where ``devices``, the rows' device names, are not all the CPU), with the call's cache
    (``--out``) and warm-up folder (``--work``) where they are not the defaults."""
    words = ["python", "-m", "benchmarks", f"--{mode}", "--tasks", task, "--methods", *methods]
    words += ["--seeds", *map(str, seeds), "--fresh"]
    if any(d not in ("cpu", None, "None") for d in devices):
        words += ["--device", "cuda"]
    if out != RESULTS / "suite":
        words += ["--out", str(out)]
    if Path(work) != WORK:
        words += ["--work", str(work)]
    return shlex.join(words)


def summarise(
    state: dict,
    settings: dict[str, dict[str, Any]],
    mode: str,
    out: Path = RESULTS / "suite",
    work: Path | dict[str, Path] = WORK,
) -> dict:
    """The results table as data: per task (of ``settings``), each method's scores over the
    cached seeds of that schedule, the paired MIC - base differences of both models and, for
    the task's model, per class; each entry with the command that reruns it (with ``out``
    and ``work``, the call's ``--out`` and ``--work``)."""
    tasks = {}
    own = work
    for task, s in settings.items():
        spec = TASKS[task]
        by = _by_method(state, task, s)
        if not by:
            continue
        work = own.get(task, WORK) if isinstance(own, dict) else own
        work = work if "warmup" in s else WORK  # (a task without source models needs none)
        methods = {}
        for m in spec.methods(s):
            runs = by.get(m, {})
            if not runs:
                continue
            seeds = sorted(runs)
            spi = [runs[x]["seconds_per_iteration"] for x in seeds]
            devices = sorted({str(runs[x]["device"]) for x in seeds})
            methods[m] = {
                "seeds": seeds,
                **{who: _describe([runs[x][who] for x in seeds]) for who in MODELS},
                "seconds_per_iteration": statistics.mean(v for v in spi if v is not None),
                "devices": devices,
                "command": _command(mode, task, [m], seeds, out, devices, work),
                "stale": {x: runs[x]["stale"] for x in seeds if runs[x]["stale"]},
                "other_environment": {
                    x: runs[x]["other_environment"] for x in seeds if runs[x]["other_environment"]
                },
            }
        pair = {"mic": spec.mic, "base": spec.base, "models": {}, "per_class": {}}
        a, b = by.get(spec.mic, {}), by.get(spec.base, {})
        for who in MODELS:
            d = _paired(a, b, who)
            if d:
                pair["models"][who] = d
        mic_classes = {seed: r["per_class"] for seed, r in a.items()}
        base_classes = {seed: r["per_class"] for seed, r in b.items()}
        classes = dict.fromkeys(c for r in [*a.values(), *b.values()] for c in r["per_class"])
        for c in classes:
            d = _paired(mic_classes, base_classes, c)
            if d:
                pair["per_class"][c] = d
        both = sorted(set(a) & set(b))
        paired = [r["device"] for x in both for r in (a[x], b[x])]
        pair["command"] = (
            _command(mode, task, [spec.base, spec.mic], both, out, paired, work) if both else None
        )
        c = by.get(spec.equal_time, {})
        if c:
            pair["equal_time"] = {
                "method": spec.equal_time,
                "overrides": s["equal_time"],
                "models": {w: d for w in MODELS if (d := _paired(a, c, w))},
                # the equal-time base's training time over MIC's, per seed both ran
                "time_ratio": [c[x]["seconds"] / a[x]["seconds"] for x in sorted(set(a) & set(c))],
            }
        warm = list(_matching(state.get("warmups", {}), task, s).values())
        tasks[task] = {
            "benchmark": spec.benchmark,
            "metric": spec.metric,
            "model": spec.model,
            "script": f"benchmarks/{spec.script}.py",
            "settings": {k: v for k, v in s.items() if k != "seeds"},
            "methods": methods,
            "pair": pair,
            "warmup": _describe([warmup_score(w) for w in warm]) if warm else None,
        }
    return {"mode": mode, "tasks": tasks}


def _identical(pair: dict) -> bool:
    """Whether every paired difference of ``summarise``'s ``pair`` is exactly zero."""
    found = [*pair["models"].values(), *pair["per_class"].values()]
    return bool(found) and all(x == 0 for d in found for x in d["per_seed"])


def _std(d: dict, digits: int) -> str:
    """The std of ``d``'s values, ``-`` for one value (it has none)."""
    return "-" if d["n"] < 2 else f"{d['std']:.{digits}f}"


def _cell(d: dict | None, digits: int) -> str:
    return "-" if d is None else f"{d['mean']:.{digits}f} ± {_std(d, digits)}"


def _diff_cells(d: dict | None, digits: int) -> str:
    if d is None:
        return "- | - | -"
    ci = "-" if d["ci95"] is None else f"[{d['ci95'][0]:+.{digits}f}, {d['ci95'][1]:+.{digits}f}]"
    return f"{d['mean']:+.{digits}f} ± {_std(d, digits)} | {ci} | {d['mic_ahead']} / {d['n']}"


#: the summary rows' marks: a row with a run of either method marked so (stale, or from another
#: environment) carries the mark, explained under the summary
SUMMARY_MARKS = (("†", "stale"), ("‡", "other_environment"))
SUMMARY_NOTES = {
    "stale": "Includes stale runs, made with another config than the current one or without a "
    "record of it (the task's section names them).",
    "other_environment": "Includes runs made in another environment (CPU, library versions) "
    "than this table's call, or without a record of it (the task's section names them).",
}


def markdown(table: dict, state: dict) -> str:
    """suite.md from ``summarise``'s table and the cached runs (the paired rows through
    common.paired_differences, with 95 % intervals)."""
    mode = table["mode"]
    lines = [
        f"# MIC against its base on the bundled benchmarks ({mode} mode)",
        "",
        "Written by `python -m benchmarks` (benchmarks/suite.py; its docstring gives the "
        "protocol). Scores in points, mean ± std over seeds; paired differences are MIC minus "
        "its base over the seeds both ran (same seed: same initial weights, data order and "
        "random streams of the shared terms), with the 95 % interval of the mean difference "
        "(Student's t) and the count of seeds where MIC is ahead.",
        "",
    ]
    calls = [c for c in state.get("calls", []) if c.get("mode") == mode]
    if calls:
        lines += ["Commands (wall time, machine):", ""]
        lines += [
            f"- `{c['command']}`: {c['accepted']} stale runs taken as made with the current "
            f"config, not run again ({c['finished']})"
            if "accepted" in c
            else f"- `{c['command']}`: {c['minutes']:.1f} min for {_count(c['runs'], 'run')}, "
            f"{c['jobs']} at a time, {c['threads']} thread(s) each, on {c['machine']} "
            f"({c['finished']})"
            + "; interrupted there, the runs it finished kept"
            * bool(c.get("interrupted"))
            for c in calls
        ]
        lines.append("")
    note = state.get("notes", {}).get(mode)
    if note:
        lines += [note, ""]
    if mode == "quick":
        lines += [
            "Quick mode: tiny schedules and 2-3 seeds, to show that every task runs end to end "
            "and how the table is read; these figures do not measure MIC's effect (use "
            "`--full`).",
            "",
        ]
    lines += [
        "## Summary",
        "",
        "| task | score | base method | base | + MIC | MIC − base (paired) | 95 % interval | "
        "seeds where MIC is ahead |",
        "|---|---|---|---|---|---|---|---|",
    ]
    used = set()
    for task, t in table["tasks"].items():
        spec = TASKS[task]
        who = t["model"]
        mic = t["methods"].get(spec.mic, {})
        compared = [(spec.base, t["pair"]["models"].get(who))]
        if "equal_time" in t["pair"]:
            compared.append((spec.equal_time, t["pair"]["equal_time"]["models"].get(who)))
        for name, diff in compared:
            base = t["methods"].get(name, {})
            marks = "".join(
                mark
                for mark, field in SUMMARY_MARKS
                if base.get(field) or mic.get(field)  # any run of either method
            )
            used.update(marks)
            lines.append(
                f"| {task}{' ' + marks if marks else ''} | {t['metric']}, {who} | {name} "
                f"| {_cell(base.get(who), spec.digits)} | {_cell(mic.get(who), spec.digits)} "
                f"| {_diff_cells(diff, spec.digits)} |"
            )
    for mark, field in SUMMARY_MARKS:
        if mark in used:
            lines += ["", f"{mark} {SUMMARY_NOTES[field]}"]
    for task, t in table["tasks"].items():
        spec = TASKS[task]
        lines += ["", f"## {task}: {t['benchmark']}", ""]
        extra = " ".join(t["settings"]["overrides"])
        schedule = f"Runs of `{t['script']}` " + (
            f"with the overrides `{extra}`" if extra else "at its defaults"
        )
        if "warmup" in t["settings"]:
            schedule += (
                f", each arm from the seed's source-only model after {t['settings']['warmup']} "
                f"warm-up iterations, then {t['settings']['iterations']} iterations"
            )
        lines += [schedule + f"; score: {t['metric']}.", ""]
        if t["warmup"]:
            lines += [
                f"Source model after the warm-up: {_cell(t['warmup'], spec.digits)} "
                f"({t['warmup']['n']} seeds).",
                "",
            ]
        lines += [
            "| method | seeds | student | teacher | s / iteration | device | rerun |",
            "|---|---|---|---|---|---|---|",
        ]
        for m, e in t["methods"].items():
            lines.append(
                f"| {m} | {len(e['seeds'])} | {_cell(e['student'], spec.digits)} "
                f"| {_cell(e['teacher'], spec.digits)} | {e['seconds_per_iteration']:.3f} "
                f"| {', '.join(e['devices'])} | `{e['command']}` |"
            )
        marks = {
            "stale": "**Stale runs**: made with another config than the current one, or without "
            "a record of it (why, below); the suite runs them again when it is called for them.",
            "other_environment": "**Runs from another environment**: made on another CPU (or "
            "instruction set) or with other library versions than those of the call that wrote "
            "this table, or without a record of it (what differs, below; `python -m "
            "benchmarks.checksums` records the same environment): the last bits of their "
            "weights, and so their scores, may differ from a run here. They are kept as "
            "current; `--fresh` runs them again.",
        }
        for field, heading in marks.items():
            marked = {m: e[field] for m, e in t["methods"].items() if e.get(field)}
            if marked:
                lines += ["", heading, ""]
            for m, found in marked.items():
                grouped = _seeds_by((why, seed) for seed, why in found.items())
                lines += [f"- {m}, seeds {seeds}: {why}" for why, seeds in grouped.items()]
        by = _by_method(state, task, t["settings"])
        by_class = {m: {s: r["per_class"] for s, r in runs.items()} for m, runs in by.items()}
        pairs = [(spec.mic, spec.base)]
        equal = t["pair"].get("equal_time")
        rows = paired_differences(
            by,
            [*pairs, *([(spec.mic, spec.equal_time)] if equal else [])],
            MODELS,
            spec.digits,
            True,
        )
        if rows:
            lines += [
                "",
                "Paired differences, points (same seed):",
                "",
                "| pair | model | seeds | difference | 95 % interval | seeds where MIC is ahead |",
                "|---|---|---|---|---|---|",
                *rows,
            ]
            if t["pair"]["command"]:
                lines += ["", f"Rerun the pair: `{t['pair']['command']}`"]
            if equal:
                r = equal["time_ratio"]
                ratio = (
                    f"{statistics.mean(r):.2f}x, {min(r):.2f}x to {max(r):.2f}x over {len(r)} seeds"
                    if len(r) > 1
                    else f"{r[0]:.2f}x (1 seed)"
                    if r
                    else "not measured: no seed ran both"
                )
                lines += [
                    "",
                    f"`{spec.equal_time}` is `{spec.base}` with `{' '.join(equal['overrides'])}`: "
                    "its schedule stretched so that it trains about as long as MIC does "
                    f"(its training time over MIC's: {ratio}).",
                ]
            if _identical(t["pair"]):
                lines += [
                    "",
                    "MIC and its base scored identically in every seed, for every model and "
                    "class: on this schedule MIC's term left the weights unchanged (its loss is "
                    "weighted by the share of confident teacher predictions, which can stay at "
                    "zero early in training) and the shared terms drew the same random numbers.",
                ]
        classes = list(t["pair"]["per_class"])
        rows = paired_differences(by_class, pairs, tuple(classes), spec.digits, interval=True)
        if rows:
            what = "IoU" if spec.script == "segmentation" else "AP@0.5"
            lines += [
                "",
                f"Per class: {what} of the {spec.model}, paired differences, points:",
                "",
                "| pair | class | seeds | difference | 95 % interval | seeds where MIC is ahead |",
                "|---|---|---|---|---|---|",
                *rows,
            ]
            means = {
                m: {c: mean_std([r.get(c) for r in by_class.get(m, {}).values()]) for c in classes}
                for m in (spec.base, spec.mic)
            }
            lines += [
                "",
                f"Per class: {what} of the {spec.model}, mean ± std:",
                "",
                "| method | " + " | ".join(classes) + " |",
                "|---|" + "---|" * len(classes),
                *(f"| {m} | " + " | ".join(means[m].values()) + " |" for m in means),
            ]
    return "\n".join(lines) + "\n"


def _count(n: int, noun: str) -> str:
    """``1 seed``, ``2 seeds``."""
    return f"{n} {noun}{'s' * (n != 1)}"


def plot(table: dict, path: Path) -> None:
    """suite.png: per task, each method's mean score with the std over seeds as error
    bars (top) and the paired MIC - base differences, overall (and against the base given
    MIC's wall time, where it ran) and per class, with their 95 % intervals (bottom); no error
    bar where one seed (one pair) gives no spread.

    Raises:
        SystemExit: matplotlib (the ``bench`` extra) is not installed.
    """
    try:
        import matplotlib
    except ImportError as e:
        raise SystemExit(
            f"{path} needs matplotlib, which is in the bench extra: pip install -e '.[bench]' "
            "(the table is written; run `python -m benchmarks --from-cache` for the plot)."
        ) from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(table["tasks"].items())
    fig, axes = plt.subplots(2, len(tasks), figsize=(4.6 * len(tasks), 7.5), squeeze=False)
    for k, (task, t) in enumerate(tasks):
        who = t["model"]
        top, bottom = axes[0][k], axes[1][k]
        names = list(t["methods"])
        cells = [t["methods"][m][who] for m in names]
        for x, c in enumerate(cells):  # points, not bars: the axis does not start at zero
            if c:  # one seed: no spread, no error bar
                color = ["tab:gray", "tab:blue", "tab:olive"][x % 3]
                spread = None if c["std"] is None else [c["std"]]
                top.errorbar([x], [c["mean"]], yerr=spread, fmt="o", capsize=4, color=color)
        labels = [  # method names broken at underscores, so that three fit side by side
            "\n".join(textwrap.wrap(m.replace("_", " "), 12)).replace(" ", "_")
            + f"\n({_count(c['n'] if c else 0, 'seed')})"
            for m, c in zip(names, cells)
        ]
        top.set_xticks(range(len(names)), labels)
        top.set_xlim(-0.5, len(names) - 0.5)
        top.set_ylabel(f"{t['metric']}, {who}")
        top.set_title(task)
        low = [c["mean"] - (c["std"] or 0.0) for c in cells if c]
        high = [c["mean"] + (c["std"] or 0.0) for c in cells if c]
        if low:  # (every error bar inside the axes)
            top.set_ylim(max(0.0, min(low) - 5), max(high) + 2)
        diffs = {}
        if who in t["pair"]["models"]:
            diffs["overall"] = t["pair"]["models"][who]
        equal = t["pair"].get("equal_time", {}).get("models", {}).get(who)
        if equal:  # MIC against the base given its wall time
            diffs["overall, vs\nequal time"] = equal
        diffs.update(t["pair"]["per_class"])
        for x, d in enumerate(diffs.values()):  # one pair: no interval, no error bar
            ci = d["ci95"]
            spread = None if ci is None else [[d["mean"] - ci[0]], [ci[1] - d["mean"]]]
            color = "tab:olive" if d is equal else "tab:blue"
            bottom.errorbar([x], [d["mean"]], yerr=spread, fmt="o", capsize=4, color=color)
        xs = list(range(len(diffs)))
        bottom.axhline(0, color="black", linewidth=0.8)
        bottom.set_xticks(xs, list(diffs))
        plt.setp(bottom.get_xticklabels(), rotation=30, ha="right")
        bottom.set_ylabel("difference, points (95 % interval)")
        n = next(iter(diffs.values()))["n"] if diffs else 0
        bottom.set_title(f"MIC − base, {who}, paired by seed ({_count(n, 'pair')})")
    fig.suptitle(f"MIC against its base, paired by seed ({table['mode']} mode)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(
    state: dict,
    settings: dict[str, dict[str, Any]],
    mode: str,
    out: Path,
    work: Path | dict[str, Path] = WORK,
) -> dict:
    """Writes OUT.md (the table of every mode the cache holds runs of, the full one first),
    OUT.json (the tables under ``tables``, beside the cached runs) and OUT.png (the plot of
    ``mode``); returns the table of ``mode`` (its rerun commands with ``--work work`` where
    that is not the default).

    Raises:
        SystemExit: the cache holds no run of ``mode``'s schedules.
    """
    tables = {
        m: summarise(state, settings if m == mode else schedules(m), m, out, work)
        for m in ("full", "quick")
    }
    table = tables[mode]
    if not table["tasks"]:
        raise SystemExit(f"{out_file(out, '.json')} holds no runs of --{mode}: run it first")
    state["tables"] = {m: t for m, t in tables.items() if t["tasks"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out_file(out, ".json").write_text(json.dumps(state, indent=1))
    out_file(out, ".md").write_text("\n".join(markdown(t, state) for t in state["tables"].values()))
    plot(table, out_file(out, ".png"))
    return table


def load(out: Path) -> dict:
    """The cache OUT.json (empty if there is none).

    Raises:
        SystemExit: OUT.json is not a suite cache (unreadable, not JSON, another shape).
    """
    cache = out_file(out, ".json")
    try:
        state = json.loads(cache.read_text()) if cache.exists() else {}
    except (OSError, ValueError) as e:
        state = e
    shapes = {"runs": dict, "warmups": dict, "configs": dict, "calls": list}
    if not isinstance(state, dict) or any(
        not isinstance(state.get(k, t()), t) for k, t in shapes.items()
    ):
        why = state if isinstance(state, Exception) else "not the suite's JSON"
        raise SystemExit(
            f"{cache} is not a cache of the suite ({why}); move it away, or choose another --out"
        )
    for key, kind in shapes.items():
        state.setdefault(key, kind())
    return state


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    end_workers_on_sigterm()
    state = load(args.out)
    if args.from_cache and not state["runs"]:
        raise SystemExit(f"{out_file(args.out, '.json')} holds no runs: run the suite first")
    configs = Configs(args.device)
    stale = mark_stale(state, configs)
    here = environment()
    other = mark_environment(state, here)
    threads = os.environ.get("OMP_NUM_THREADS")  # (unset: none to replay)
    command = f"OMP_NUM_THREADS={threads} " * (threads is not None)
    command += "python -m benchmarks " + shlex.join(args.words)
    if args.accept_stale:
        n = accept_stale(args, state, configs)
        state["calls"].append(
            {"command": command, "mode": args.mode, "accepted": n, "finished": _now()}
        )
        stale = {k: r for k, r in stale.items() if "stale" in state["runs"][k]}
        print(f"{n} stale runs taken as made with the current config", file=sys.stderr)
    if stale:
        print(
            f"{len(stale)} cached runs are stale: made with another config than the current "
            "one, or without a record of it (the table marks them; those this call chooses "
            "run again unless --from-cache; --accept-stale takes them as current):\n"
            + stale_lines(stale),
            file=sys.stderr,
        )
    if other:
        print(
            f"{len(other)} of the cached runs were made in another environment than this one "
            "(CPU, library versions: the last bits of the weights, and so the scores, may "
            "differ), or have no record of it; they are kept as current (the table marks them; "
            "--fresh runs them again):\n" + stale_lines(other),
            file=sys.stderr,
        )
    if not args.from_cache:
        works = state["work"] if isinstance(state.get("work"), dict) else {}
        for task in args.tasks:  # each task's warm-up folder: what --from-cache names
            works[task] = str(Path(args.work).resolve())
        state["work"] = works
        t0 = time.perf_counter()
        args.call = command  # (an interrupted call records itself with what it finished)
        n = train(args, state, configs, here)
        if n:
            state["calls"].append(call_record(args, n, (time.perf_counter() - t0) / 60))
    if args.note is not None:
        state.setdefault("notes", {})[args.mode] = args.note
    # the table covers every task of the mode (runs cached earlier included)
    work: Path | dict[str, Path] = args.work  # --from-cache without --work: each task's
    if args.from_cache and Path(args.work) == WORK and isinstance(state.get("work"), dict):
        work = {task: Path(folder) for task, folder in state["work"].items()}  # own folder
    write(state, schedules(args.mode) | args.settings, args.mode, args.out, work)
    print(out_file(args.out, ".md").read_text())
    written = ", ".join(str(out_file(args.out, x)) for x in OUT_SUFFIXES)
    print(f"written: {written}", file=sys.stderr)


if __name__ == "__main__":
    main()
