"""What the benchmark scripts share: timing training alone, peak memory of a few iterations,
starting a run from saved weights, the resolved config a run trains with, mean ± std cells,
95 % intervals, paired differences over seeds, and the name of the device a row ran on."""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any


def time_training(loop: Any) -> list[float]:
    """Wrap ``loop.train_step`` so that the seconds spent training (evaluation excluded,
    CUDA work waited for) are summed into the returned one-element list."""
    import torch

    spent = [0.0]
    step = loop.train_step
    cuda = loop.device.type == "cuda"

    def timed() -> Any:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = step()
        if cuda:
            torch.cuda.synchronize()
        spent[0] += time.perf_counter() - t0
        return out

    loop.train_step = timed
    return spent


def run_timed(exp: Any) -> tuple[dict, float]:
    """Train the experiment ``exp`` to its end: its last evaluation record and the seconds per
    training iteration (evaluation excluded)."""
    spent = time_training(exp.loop)
    exp.loop.run()
    return exp.evaluation.history[-1], spent[0] / exp.loop.iterations


def record_training(loop: Any, every: int = 10) -> list[dict]:
    """Put first among ``loop``'s hooks one that records the losses and the terms' statistics
    (floats) at iteration 1 and every ``every``-th; returns the list it fills, one
    ``{"step": ..., <name>: value}`` per record."""
    from mic.core.loop import Hook
    from mic.training.hooks import iteration_floats

    records: list[dict] = []

    class Recorder(Hook):
        def after_step(self, loop: Any, losses: Any) -> None:
            if loop.step == 1 or loop.step % every == 0:
                values, stats = iteration_floats(loop, losses)
                records.append({"step": loop.step, **values, **stats})

    loop.hooks.insert(0, Recorder())
    return records


def train_steps(loop: Any, n: int) -> None:
    """``n`` iterations of ``loop`` without its hooks (no evaluation, logs or checkpoints)."""
    for _ in range(n):
        loop.train_step()
        loop.step += 1


def peak_memory(overrides: list[str], iterations: int = 3) -> dict:
    """Peak memory of ``iterations`` training iterations of the experiment of ``overrides``,
    built in this process (call it in a fresh process per row). On CUDA:
    ``torch.cuda.max_memory_allocated`` above what was allocated before the first iteration.
    On a CPU: the peak resident set during the iterations above the resident set before them
    (Linux: the peak is reset through ``/proc/self/clear_refs`` first, so that building the
    experiment does not hide it; elsewhere the growth of the lifetime peak); what the
    allocator holds, a coarser measure than CUDA's."""
    import torch

    from mic.experiment import build_experiment, load_config

    exp = build_experiment(load_config([*overrides, f"iterations={iterations}"]))
    loop = exp.loop
    cuda = loop.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        reset = _reset_peak_rss()
        base = _rss("VmRSS") if reset else _lifetime_peak_rss()
    t0 = time.perf_counter()
    train_steps(loop, iterations)
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        measure = "cuda max_memory_allocated"
    else:
        peak = (_rss("VmHWM") if reset else _lifetime_peak_rss()) - base
        measure = "peak RSS above the start" if reset else "growth of peak RSS"
    return {
        "peak_bytes": peak,
        "seconds_per_iteration": (time.perf_counter() - t0) / iterations,
        "device": device_name(loop),
        "measure": measure,
    }


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, in bytes."""
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def _lifetime_peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_overrides(experiment: str, seed: int, device: str) -> list[str]:
    """The overrides every benchmark run starts with: the experiment, the seed and the device,
    without progress bar and TensorBoard files."""
    return [
        f"experiment={experiment}",
        f"seed={seed}",
        f"device={device}",
        "log.progress=false",
        "log.tensorboard=false",
    ]


#: the colour operations of mic before 0.2 (torchvision's formulas), pinned by the ablation scripts
#: whose results files were made with them, so that their commands still make those runs
TORCHVISION_JITTER = ["augmentation_jitter=torchvision"]


#: config keys that do not change what a run computes: where it runs, what it prints and saves,
#: the checks before it, the label-free validation scores (drawn from streams of their own),
#: and its seed (which the benchmarks' cache keys hold); and augmentation_jitter, which reaches a
#: run only through the strong augmentations' own jitter settings, compared themselves
NOT_RESULT = (
    "device",
    "log.",
    "checkpoint.",
    "resume",
    "resume_allow_changes",
    "preflight",
    "seed",
    "loader.num_workers",
    "eval.validators",
    "eval.validation.",
    "augmentation_jitter",
)


def config_record(overrides: list[str]) -> dict[str, Any]:
    """The resolved config that mic-train ``overrides`` train with, flat (``{"a.b": value}``,
    as ``mic.resume.flatten``) and without the ``NOT_RESULT`` keys: what a benchmark's cache
    compares to tell whether a cached run is still the run its settings name (a default
    changed since it ran makes it stale). Composes the config only: no model is built, and
    code changes are not seen (``python -m benchmarks.checksums`` is for those)."""
    from omegaconf import OmegaConf

    from mic.experiment import load_config
    from mic.resume import flatten

    tree = OmegaConf.to_container(load_config(overrides), resolve=True)
    if tree.get("init_from") is None:  # type: ignore[union-attr]
        tree.pop("init_model", None)  # type: ignore[union-attr]  # read with init_from only
    return {k: v for k, v in flatten(tree).items() if not _named(k, NOT_RESULT)}


def _named(key: str, names: tuple[str, ...]) -> bool:
    """Whether ``key`` is one of ``names`` or under one (a name ending in a dot)."""
    return any(key == n or key.startswith(n) for n in names)


def config_changes(
    old: dict[str, Any], new: dict[str, Any], ignore: tuple[str, ...] = ()
) -> dict[str, tuple[Any, Any]]:
    """Key -> (old, new) of the keys whose values differ between two ``config_record``s,
    leaving out the ``NOT_RESULT`` keys and those starting with one of ``ignore`` (so a record
    made before a key was left out compares as made after), a key one of them lacks counting
    as null (so an option added with a null default is no change), and values that mean the
    same as resume judges them (``mic.resume.same_meaning``: an option added since at the
    default that keeps what the code did before it, a null that stands for the class's own)."""
    from mic.resume import same_meaning

    keys = sorted(k for k in old | new if not _named(k, (*NOT_RESULT, *ignore)))
    changed = [k for k in keys if old.get(k) != new.get(k)]
    return {k: (old.get(k), new.get(k)) for k in changed if not same_meaning(k, old, new)}


def start_from(overrides: list[str], weights: str | None = None, strict: bool = True) -> Any:
    """The experiment of ``overrides`` (built as ``mic-train`` builds it) with its student's
    weights replaced by those saved in ``weights`` (a state dict), before the first iteration,
    so that the teacher and the feature distance's frozen copy start from them too.
    ``strict=False`` lets a wrapper start from its wrapped model's weights (HRDA from a
    single-scale model's: its scale-attention head keeps its initial weights)."""
    import torch

    from mic.experiment import build_experiment, load_config

    exp = build_experiment(load_config(overrides))
    if weights is not None:
        state = torch.load(weights, map_location=exp.loop.device, weights_only=True)
        result = exp.student.load_state_dict(state, strict=strict)
        if result.unexpected_keys:
            raise KeyError(f"weights {weights} hold keys the model lacks: {result.unexpected_keys}")
    return exp


def add_device_options(
    parser: argparse.ArgumentParser,
    jobs: int | None = 1,
    jobs_help: str = "runs in parallel processes (default: 1)",
    device_help: str = "where each run trains: cpu (default), cuda, cuda:N",
) -> None:
    """``--device`` (described by ``device_help``), ``--jobs`` (runs in parallel processes,
    default ``jobs``) and ``--threads`` (torch threads per run, 0: ``threads_per_run``'s
    choice)."""
    parser.add_argument("--device", default="cpu", help=device_help)
    parser.add_argument("--jobs", type=int, default=jobs, help=jobs_help)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads per run (0: 1 on a CPU, where a busy machine makes more threads "
        "spin instead of work; cores / jobs on a GPU machine)",
    )


def check_overrides(parser: argparse.ArgumentParser, runs: list[list[str]]) -> None:
    """Refuse, before any run, a run's mic-train overrides that mic-train would refuse (a
    typo, a value of the wrong type): composed and checked as mic-train does, one message
    instead of a worker's traceback after the runs before it."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from mic.core import MicError
    from mic.experiment import load_config
    from mic.schema import check_config
    from mic.train import experiment_over_choice, unknown_option, unknown_setting

    for overrides in runs:
        problem = (  # (mic-train's words)
            unknown_option(overrides)
            or unknown_setting(overrides)
            or experiment_over_choice(overrides)
        )
        if problem:
            parser.error(f"the overrides: {problem}")
        try:
            check_config(load_config(overrides))
        except (MicError, HydraException, OmegaConfBaseException) as e:
            parser.error(f"the overrides: {str(e).strip()}")


def end_workers_on_sigterm() -> None:
    """On SIGTERM (``timeout``, a scheduler's stop, ``kill``), which reaches this process
    alone: terminate its worker processes, then exit with 143. The default ended this process
    at once and left the runs of its pool training on, orphaned; runs finished before are in
    the script's cache (a Ctrl-C reaches the workers itself)."""
    import multiprocessing
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # (signal's own refusal)
        return

    def stop(signum: int, frame: Any) -> None:
        for child in multiprocessing.active_children():
            child.terminate()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def refuse_empty_table(parser: argparse.ArgumentParser, cache: Path, which: str = "runs") -> None:
    """``--table-only`` on a cache that holds none of the table's runs (``which`` names
    them): refused before anything is written (a header-only table was, with status 0)."""
    parser.error(f"--table-only: {cache} holds no {which}: make some first (without it)")


#: mic-train settings that a script sets for every run itself: an override of them (after the
#: script's own) made every seed's run the same and recorded it under the seed asked for
SCRIPT_SETS = {"seed": "--seeds", "device": "--device"}


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, before any run, what a script would otherwise meet after its runs (or in a
    worker's traceback): ``--jobs`` below 1, ``--device cuda`` without a GPU, an
    ``--experiment`` that mic-train does not have, ``--seeds`` given twice or below 0,
    ``--iterations`` below 1 or ``--warmup`` below 0 (a warm-up of thousands of iterations ran
    first), an ``--out`` whose folder cannot be made (the folder is made here, so that
    finished runs are written), and overrides of what the script sets itself (``seed``,
    ``device``: ``SCRIPT_SETS``) or of Hydra's own settings (the runs are made in this
    process, without Hydra: they would change nothing). Then installs
    ``end_workers_on_sigterm``."""
    import torch

    end_workers_on_sigterm()
    given = [*(getattr(args, "overrides", None) or []), *(getattr(args, "override", None) or [])]
    for override in given:
        key = str(override).split("=", 1)[0].lstrip("+~")
        if key in SCRIPT_SETS:
            parser.error(
                f"the override {override}: the script sets {key} for each run itself; use "
                f"{SCRIPT_SETS[key]}"
            )
        if key.startswith("hydra.") or key == "hydra":
            parser.error(
                f"the override {override}: the script makes its runs without Hydra, so Hydra's "
                "settings change nothing; leave it out"
            )

    if getattr(args, "jobs", 1) is not None and getattr(args, "jobs", 1) < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    for key, least in (("iterations", 1), ("warmup", 0)):
        value = getattr(args, key, None)
        if isinstance(value, int) and value < least:
            parser.error(f"--{key} must be at least {least}, got {value}")
    seeds = getattr(args, "seeds", None) or []
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):  # (a seed twice: run twice)
        parser.error(f"--seeds must be distinct and at least 0, got {' '.join(map(str, seeds))}")
    device = str(getattr(args, "device", "cpu"))
    tables = getattr(args, "table_only", False)  # (a table of GPU runs, written anywhere)
    if device.startswith("cuda") and not torch.cuda.is_available() and not tables:
        parser.error(f"--device {device}: there is no CUDA device here; use --device cpu")
    experiment = getattr(args, "experiment", None)
    if experiment is not None:
        from mic.schema import group_options

        names = group_options("experiment")
        if experiment not in names:
            parser.error(f"--experiment {experiment}: no such experiment; one of {names}")
    out = getattr(args, "out", None)
    if out is not None:
        folder = Path(out).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            parser.error(f"--out {out}: its folder cannot be made ({e.strerror})")
        if not os.access(folder, os.W_OK):
            parser.error(f"--out {out}: its folder {folder} cannot be written")


def threads_per_run(device: str, jobs: int, threads: int = 0) -> int:
    """``threads`` if set, else 1 on a CPU and the cores shared out over ``jobs`` otherwise."""
    if threads:
        return threads
    return 1 if device == "cpu" else max(1, (os.cpu_count() or 1) // max(1, jobs))


def device_name(loop: Any) -> str:
    import torch

    return torch.cuda.get_device_name() if loop.device.type == "cuda" else "cpu"


def mean_std(values: list[float | None], digits: int = 1, scale: float = 100.0) -> str:
    """``mean ± std`` of the scaled values, missing and NaN ones left out; the value alone if
    one (a spread of one value is not zero but unknown); ``-`` if none."""
    kept = [scale * v for v in values if v is not None and not math.isnan(v)]
    if not kept:
        return "-"
    if len(kept) == 1:
        return f"{kept[0]:.{digits}f}"
    return f"{statistics.mean(kept):.{digits}f} ± {statistics.stdev(kept):.{digits}f}"


def interval95_bounds(
    values: list[float | None], scale: float = 100.0
) -> tuple[float, float] | None:
    """``(lo, hi)``: the 95 % interval of the mean of the scaled values (Student's t with
    n - 1 degrees of freedom), missing and NaN ones left out; None for fewer than two."""
    from scipy import stats

    kept = [scale * v for v in values if v is not None and not math.isnan(v)]
    if len(kept) < 2:
        return None
    half = stats.t.ppf(0.975, len(kept) - 1) * statistics.stdev(kept) / math.sqrt(len(kept))
    mean = statistics.mean(kept)
    return mean - half, mean + half


def interval95(values: list[float | None], digits: int = 1, scale: float = 100.0) -> str:
    """``[lo, hi]`` of ``interval95_bounds``, ``-`` for fewer than two values."""
    bounds = interval95_bounds(values, scale)
    if bounds is None:
        return "-"
    return f"[{bounds[0]:.{digits}f}, {bounds[1]:.{digits}f}]"


def paired(by: dict[str, dict[int, dict]], a: str, b: str, get: Any) -> list[float]:
    """``get(run of a) - get(run of b)`` per seed, over the seeds both ran (rows of ``by`` are
    ``method -> seed -> run``) and where ``get`` scores both (not None)."""
    seeds = sorted(set(by.get(a, {})) & set(by.get(b, {})))
    scores = [(get(by[a][s]), get(by[b][s])) for s in seeds]
    return [x - y for x, y in scores if x is not None and y is not None]


def paired_differences(
    by: dict[str, dict[int, dict]],
    pairs: list[tuple[str, str]],
    models: tuple[str, ...] = ("student", "teacher"),
    digits: int = 1,
    interval: bool = False,
) -> list[str]:
    """Table rows ``| a - b | model | seeds | mean ± std | wins |`` of the per-seed
    difference of each score in ``models`` between methods ``a`` and ``b`` (rows of ``by``
    are ``method -> seed -> run``), over the seeds both ran and both scored; with
    ``interval``, the 95 % interval of the mean difference (``interval95``) before the
    wins."""
    lines = []
    for a, b in pairs:
        for who in models:
            d = paired(by, a, b, lambda run, who=who: run.get(who))
            if d:
                wins = sum(x > 0 for x in d)
                ci = f" {interval95(d, digits)} |" if interval else ""
                lines.append(
                    f"| {a} - {b} | {who} | {len(d)} | {mean_std(d, digits)} |{ci} "
                    f"{wins} / {len(d)} |"
                )
    return lines


def note_text(note: str) -> str:
    """A ``--note`` value as text: ``@path`` is the file's text (stripped), anything else
    itself."""
    return Path(note[1:]).read_text().strip() if note.startswith("@") else note
