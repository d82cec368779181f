"""MIC on the context street scenes with a longer adaptation: does DACS + MIC pull ahead of
DACS given MIC's wall time when both adapt longer?

    python benchmarks/context_longer.py                   # 10 seeds x 3 arms at 600 iterations
    python benchmarks/context_longer.py --table-only      # the table from the cached runs
    python benchmarks/context_longer.py --jitter published  # results/context_longer_published

The suite's context task (benchmarks/suite.py, ``--full``) adapts for 300 iterations from each
seed's source model (2000 iterations); with torchvision's colour operations DACS + MIC was ahead
of DACS there but not of DACS given MIC's wall time (435 iterations). This script runs the same
three arms with ``--iterations`` per arm (default 600, twice the suite's) and the equal-time arm
stretched by the same factor as the suite's (435 / 300 = 1.45: MIC's cost per iteration), each
from the suite's source model of its seed (the same file in ``--work``, trained there first
where it is missing: the source stage does not depend on the arms' iterations), with the suite's
overrides. Results are cached in OUT.json (one record per run, as the suite's); OUT.md puts the
paired differences beside those of the suite's 300-iteration runs
(benchmarks/results/suite.json).

``--jitter`` names the colour operations of the strong augmentations (mic's
``augmentation_jitter``), pinned for every arm, and the reference row takes the suite's runs
made with the same ones. Its default is torchvision's formulas, mic's default before 0.2, with
which results/context_longer.md was made (there DACS + MIC was ahead of DACS in the suite); the
suite's runs made with them are in its cache of before 0.2: ``git show
4081a39:benchmarks/results/suite.json > /tmp/tv.json``, then ``--reference /tmp/tv.json`` (a
cache without such runs gives no reference row). ``--jitter published`` (mic's default since
0.2) made results/context_longer_published.md, with today's suite.json as its reference.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import suite
from common import (
    end_workers_on_sigterm,
    interval95,
    mean_std,
    note_text,
    paired,
    refuse_empty_table,
)

from mic.training.checkpoint import write_text_atomically

TASK = "context"
ARMS = ("dacs", "dacs_mic", "dacs_equal_time")
#: the colour operations (``augmentation_jitter``) this script can pin, its default first
JITTERS = ("torchvision", "published")
#: the cache's key of the table's reading (``--note``; no run's key: those name arm and seed)
NOTE = "note"


def settings(iterations: int, jitter: str = JITTERS[0]) -> dict[str, Any]:
    """The suite's full context settings with ``iterations`` per arm, the equal-time arm
    stretched by the suite's own factor, and the colour operations ``jitter`` pinned."""
    base = suite.schedules("full")[TASK]
    (equal,) = _iterations_given(base["equal_time"])
    factor = equal / base["iterations"]
    return {
        **base,
        "overrides": [*base["overrides"], f"augmentation_jitter={jitter}"],
        "iterations": iterations,
        "equal_time": [f"iterations={round(iterations * factor)}"],
    }


def source_model(work: Path, seed: int) -> Path:
    """Where the suite keeps the source model of ``seed``."""
    return suite.warmup_path(work, TASK, seed, suite.schedules("full")[TASK])


def warm_up(work: str, seed: int) -> None:
    """The suite's source stage of ``seed``, on one CPU thread, saved where it keeps it."""
    path = source_model(Path(work), seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    suite.warm_up(TASK, seed, suite.schedules("full")[TASK], "cpu", 1, str(path))


def one(method: str, seed: int, iterations: int, work: str, jitter: str) -> dict:
    """One arm of one seed, from that seed's source model, on one CPU thread."""
    start = source_model(Path(work), seed)
    return suite.run(TASK, method, seed, settings(iterations, jitter), "cpu", 1, str(start))


def _iterations_given(overrides: list[str]) -> list[int]:
    """The values of the ``iterations=`` overrides in ``overrides``, in order."""
    return [int(o.split("=", 1)[1]) for o in overrides if o.startswith("iterations=")]


def _recorded(row: dict, schedule: int, jitter: str = JITTERS[0]) -> dict:
    """A run as the cache keeps it: ``schedule``, the iterations per arm that chose it (the
    key of the equal-time arm's run too), ``iterations``, those it trained (its overrides'
    ``iterations=``: the equal-time arm's more), and the colour operations ``jitter``."""
    trained = _iterations_given(row["overrides"])
    iterations = trained[-1] if trained else schedule
    return {**row, "schedule": schedule, "iterations": iterations, "jitter": jitter}


def _key(method: str, seed: int, iterations: int, jitter: str) -> str:
    """A run's key in the cache (torchvision's keys, the first made, name no operations)."""
    return f"{method} {seed} {iterations}" + ("" if jitter == JITTERS[0] else f" {jitter}")


def table(
    runs: dict[str, dict], reference: dict, iterations: int, note: str, jitter: str = JITTERS[0]
) -> str:
    """OUT.md: each arm's teacher mIoU at ``iterations`` and the paired differences, beside the
    suite's ``reference`` runs (its full table's context rows)."""
    longer, by = settings(iterations, jitter), _by(runs)
    schedules = [
        ("this script", by, longer),
        ("the suite's", reference, suite.schedules("full")[TASK]),
    ]
    lines = [
        "# MIC on the context street scenes with a longer adaptation",
        "",
        f"Colour operations of the strong augmentations: {jitter} (`augmentation_jitter="
        f"{jitter}`, every arm and the reference runs).",
        "",
        "Written by `benchmarks/context_longer.py` (its docstring gives the protocol). Target "
        "test mIoU of the teacher (%), mean ± std over seeds; paired differences over the seeds "
        "both arms ran, with the 95 % interval of the mean difference (Student's t) and the "
        "seeds where the first arm is ahead.",
        "",
    ]
    if note:
        lines += [note, ""]
    lines += [
        "| runs | iterations per arm (equal-time arm) | seeds | DACS | DACS + MIC | DACS, MIC's "
        "wall time | MIC − DACS | 95 % interval | ahead | MIC − equal time | 95 % interval | "
        "ahead |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, arms, s in schedules:
        equal = s["equal_time"][0].split("=")[1]
        cells = [mean_std([r.get("teacher") for r in arms.get(m, {}).values()]) for m in ARMS]
        diffs = []
        for base in ("dacs", "dacs_equal_time"):
            d = paired(arms, "dacs_mic", base, lambda r: r.get("teacher"))
            diffs += [mean_std(d), interval95(d), f"{sum(x > 0 for x in d)} / {len(d)}"]
        seeds = len(arms.get("dacs_mic", {}))
        head = f"| {label} | {s['iterations']} ({equal}) | {seeds} | "
        lines.append(head + " | ".join(cells + diffs) + " |")
    lines += ["", "Per seed, teacher mIoU at the longer schedule:", ""]
    lines += ["| seed | " + " | ".join(ARMS) + " |", "|---" * (len(ARMS) + 1) + "|"]
    for seed in sorted({s for m in by.values() for s in m}):
        cells = [by.get(m, {}).get(seed, {}).get("teacher") for m in ARMS]
        lines.append(
            f"| {seed} | "
            + " | ".join("-" if c is None else f"{100 * c:.2f}" for c in cells)
            + " |"
        )
    return "\n".join(lines + _per_class(by)) + "\n"


def _per_class(by: dict[str, dict[int, dict]]) -> list[str]:
    """Rows of each class's paired teacher-IoU difference, MIC − DACS, at the longer schedule
    (none where the runs hold no per-class IoU)."""
    classes = next((list(r["iou"]) for r in by.get("dacs", {}).values() if r.get("iou")), [])
    if not classes:
        return []
    lines = [
        "",
        "Per class, DACS + MIC − DACS at the longer schedule (teacher IoU, points, paired):",
        "",
        "| class | mean ± std | 95 % interval | MIC ahead |",
        "|---|---|---|---|",
    ]
    for c in classes:
        d = paired(by, "dacs_mic", "dacs", lambda r, c=c: (r.get("iou") or {}).get(c))
        row = [c, mean_std(d), interval95(d), f"{sum(x > 0 for x in d)} / {len(d)}"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _by(runs: dict[str, dict]) -> dict[str, dict[int, dict]]:
    """Method -> seed -> ``{"teacher": mIoU, "iou": class -> IoU}`` of the cached runs."""
    by: dict[str, dict[int, dict]] = {}
    for r in runs.values():
        by.setdefault(r["method"], {})[r["seed"]] = {
            "teacher": suite.scores(TASK, r)["teacher"],
            "iou": r.get("teacher_iou"),
        }
    return by


def reference_runs(path: Path, jitter: str = JITTERS[0]) -> dict[str, dict[int, dict]]:
    """Method -> seed -> scores of the suite's full-mode context runs in its cache ``path``
    made with the colour operations ``jitter``, as this script's."""
    data = json.loads(path.read_text())
    configs, key = data.get("configs", {}), "method.terms.mix.augmentation.jitter"
    data["runs"] = {
        k: r for k, r in data["runs"].items() if configs.get(r.get("config"), {}).get(key) == jitter
    }
    return suite._by_method(data, TASK, suite.schedules("full")[TASK])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=600, help="per arm (default: 600)")
    p.add_argument("--seeds", nargs="+", type=int, default=list(range(10)))
    p.add_argument(
        "--jitter",
        choices=JITTERS,
        default=JITTERS[0],
        help="the colour operations, pinned (default: torchvision, as context_longer.md's)",
    )
    p.add_argument("--jobs", type=int, default=suite.default_jobs("cpu"))
    p.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "mic_suite",
        help="as the suite's",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="OUT.json and OUT.md (default: results/context_longer, _published for those)",
    )
    p.add_argument("--reference", type=Path, default=suite.RESULTS / "suite.json")
    p.add_argument("--table-only", action="store_true")
    p.add_argument(
        "--note",
        default="",
        help="the reading for the table (or @file), kept in OUT.json for later tables",
    )
    args = p.parse_args(argv)
    end_workers_on_sigterm()
    if args.iterations < 1 or args.jobs < 1:
        p.error("--iterations and --jobs must be at least 1")
    if args.out is None:
        name = "context_longer" + ("" if args.jitter == JITTERS[0] else f"_{args.jitter}")
        args.out = suite.RESULTS / name
    cache = args.out.with_suffix(".json")
    runs: dict[str, dict] = json.loads(cache.read_text()) if cache.exists() else {}
    # the reading is kept in the cache beside the runs, so that a table made again keeps it
    kept = runs.pop(NOTE, "")
    note = note_text(args.note) if args.note else kept

    def save() -> None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(cache, json.dumps({**runs, NOTE: note} if note else runs, indent=1))

    key = lambda m, s: _key(m, s, args.iterations, args.jitter)  # noqa: E731
    todo = [(m, s) for s in args.seeds for m in ARMS if key(m, s) not in runs]
    if not args.table_only and todo:
        print(f"{len(todo)} runs, {args.jobs} at a time", flush=True)
        os.environ["OMP_NUM_THREADS"] = "1"
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            missing = {s for _, s in todo if not source_model(args.work, s).exists()}
            for done in [pool.submit(warm_up, str(args.work), s) for s in sorted(missing)]:
                done.result()  # every source model before the arms that start from it
            work = str(args.work)
            jobs = {
                pool.submit(one, m, s, args.iterations, work, args.jitter): (m, s) for m, s in todo
            }
            for job in as_completed(jobs):
                m, s = jobs[job]
                runs[key(m, s)] = _recorded(job.result(), args.iterations, args.jitter)
                save()
                score = suite.scores(TASK, runs[key(m, s)])["teacher"]
                print(f"{m} seed {s}: teacher {100 * score:.2f}", flush=True)
    chosen = {
        k: r
        for k, r in runs.items()
        if r.get("schedule") == args.iterations and r.get("jitter", JITTERS[0]) == args.jitter
    }
    if args.table_only and not chosen:
        which = f"runs of {args.iterations} iterations with --jitter {args.jitter}"
        refuse_empty_table(p, cache, which)
    reference = reference_runs(args.reference, args.jitter)
    text = table(chosen, reference, args.iterations, note, args.jitter)
    if args.note:
        save()
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
