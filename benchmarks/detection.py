"""mAP@0.5 and speed of detection UDA methods on the bundled shapes benchmark, over seeds.

    python benchmarks/detection.py --jobs 2                          # 6 rows x 3 seeds
    python benchmarks/detection.py --table-only --speed 20           # speed, one after another
    python benchmarks/detection.py --device cuda --jobs 6            # parallel runs on a GPU
    python benchmarks/detection.py --warmup 3000 --iterations 2000   # a longer schedule
    python benchmarks/detection.py --backends torchvision detectron2 --methods sada_mic \
        --warmup 400 --iterations 100 --threads 1 --speed 20         # the two backends
    python benchmarks/detection.py --experiment det_context --methods sada sada_mic \
        --out benchmarks/results/detection_context.md                # where context decides

The detector (``model=faster_rcnn_small``: Faster R-CNN, RegNetX-200MF FPN, trainable
BatchNorm, from scratch) first trains on the source alone for ``--warmup`` iterations, once
per seed; this stands in for the ImageNet and source pre-training that the published recipe
starts from. Every method then starts from that same source model (same seed: same weights,
same data order) and runs ``--iterations`` iterations of ``mic-train experiment=det_shapes``
(``--experiment det_context``: the benchmark where context decides) with its overrides:
the source-only row continues on the source alone, so every row has had the same number
of iterations. Scores: mAP@0.5 (and COCO AP) on the labelled target test
split (200 foggy, textured, noisy scenes), after AdaBN re-estimation of BatchNorm statistics
on 10 target training batches, for the student and (where the method has one) the EMA
teacher. Seconds per iteration count training alone (evaluation excluded). Results are cached
per (backend, method, seed) in a JSON file beside the table, so runs can be added over several
calls.

``--backends torchvision detectron2`` runs every (method, seed) on both detection backends
(``model=faster_rcnn_small`` and ``model=d2_faster_rcnn_small``: the same RegNetX-200MF FPN
sizes on torchvision's and on detectron2's Faster R-CNN), alternating them so that both see
the same load, and writes the two side by side (``results/detection_backends.md``) with the
per-seed differences; ``--speed`` then times both in one process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from common import (
    check_options,
    config_record,
    device_name,
    interval95,
    mean_std,
    note_text,
    paired_differences,
    refuse_empty_table,
    run_overrides,
    run_timed,
    start_from,
    time_training,
    train_steps,
)

from mic.training.checkpoint import write_text_atomically

#: method name -> mic-train overrides (on top of experiment=det_shapes)
METHODS: dict[str, list[str]] = {
    "source_only": ["method=source_only", "mic=none"],
    # source only, plus an EMA of the student (alpha 0.9) scored like the methods' teachers:
    # what weight averaging alone adds to the teacher columns
    "source_only_ema": ["method=source_only", "mic=none"],
    "mean_teacher": ["method=mean_teacher", "mic=none"],
    "sada": ["method=sada", "mic=none"],
    # SADA, plus the same EMA of the student: the teacher SADA + MIC's teacher is compared to
    "sada_ema": ["method=sada", "mic=none"],
    "sada_mic": ["method=sada", "mic=block"],
    "mean_teacher_mic": ["method=mean_teacher", "mic=block"],
}
PAIRS = [
    ("sada_mic", "sada"),
    ("mean_teacher_mic", "mean_teacher"),
    ("sada", "source_only"),
    ("mean_teacher_mic", "source_only"),
    ("sada_mic", "source_only_ema"),
    ("sada_mic", "sada_ema"),
    ("mean_teacher_mic", "source_only_ema"),
]
DEFAULT_METHODS = [
    "source_only",
    "source_only_ema",
    "mean_teacher",
    "sada",
    "sada_mic",
    "mean_teacher_mic",
]
CLASSES = ["disc", "square", "triangle", "cross"]
#: the bundled benchmarks: experiment -> the title of its table and its class names
EXPERIMENTS = {
    "det_shapes": ("clear shapes scenes -> fog, texture and noise", CLASSES),
    "det_context": (
        "context shapes, clear road scenes -> fog and blur growing with distance",
        ["car", "kiosk", "rider", "ball", "bike"],
    ),
}
#: detection backend -> the mic-train overrides that choose its model (same sizes on both)
BACKENDS: dict[str, list[str]] = {
    "torchvision": [],
    "detectron2": ["model=d2_faster_rcnn_small"],
}


def _overrides(
    seed: int, device: str, extra: list[str], experiment: str = "det_shapes"
) -> list[str]:
    return [*run_overrides(experiment, seed, device), *extra]


#: override keys a source-only warm-up has no use for: the adaptation method's terms and MIC
#: (the warm-up sets ``method=source_only mic=none``), its teacher and pseudo-label threshold
ADAPTATION_ONLY = ("method=", "method.terms.", "mic=", "mic.", "teacher.", "task.score_threshold=")


def source_stage_overrides(overrides: list[str]) -> list[str]:
    """The part of a run's mic-train ``overrides`` that its source-only warm-up takes: all but
    those of ``ADAPTATION_ONLY`` (with any ``+`` / ``~`` / ``++`` prefix), so runs that differ
    only in the adaptation's settings share one warm-up model (and file), and a setting of a
    term the source-only method lacks does not stop the warm-up."""
    return [o for o in overrides if not o.lstrip("+~").startswith(ADAPTATION_ONLY)]


def warmup_path(
    work: Path, experiment: str, backend: str, seed: int, steps: int, overrides: list[str]
) -> Path:
    """The file in ``work`` that keeps the seed's source-only warm-up model of ``steps``
    iterations, named by the part of ``overrides`` the warm-up takes
    (``source_stage_overrides``)."""
    stage = source_stage_overrides(overrides)
    tag = f"w{steps}_" + "_".join(stage).replace("/", "-").replace("=", "-")
    prefix = "" if experiment == "det_shapes" else f"{experiment}_"
    return work / f"warmup_{prefix}{backend}_seed{seed}_{tag}.pt"


def adaptation_overrides(
    method: str,
    seed: int,
    steps: int,
    device: str,
    extra: list[str],
    backend: str = "torchvision",
    experiment: str = "det_shapes",
) -> list[str]:
    """The mic-train overrides of ``steps`` iterations of ``method`` from a warm-up model
    (adaptation from the first iteration, evaluation at the end only)."""
    return [
        *_overrides(seed, device, [*BACKENDS[backend], *extra], experiment),
        *METHODS[method],
        f"iterations={steps}",
        "adaptation_start=0",
        "eval.interval=0",
    ]


def warmup(
    seed: int,
    steps: int,
    device: str,
    threads: int,
    extra: list[str],
    path: str,
    backend: str,
    experiment: str = "det_shapes",
    config_only: bool = False,
) -> dict:
    """Source-only training for ``steps`` iterations of ``experiment``; saves the student,
    scores it. ``config_only``: the resolved config it would train with
    (``common.config_record``), without training."""
    import torch
    from hydra.utils import instantiate

    from mic import evaluate, recalibrated_batchnorm
    from mic.experiment import build_experiment, load_config, make_loader

    overrides = [
        *_overrides(seed, device, [*BACKENDS[backend], *extra], experiment),
        "method=source_only",
        "mic=none",
        f"iterations={steps}",
        "adaptation_start=0",
        "eval.interval=0",
        "eval.models=[student]",
    ]
    if config_only:
        return config_record(overrides)
    torch.set_num_threads(threads)
    cfg = load_config(overrides)
    exp = build_experiment(cfg)
    spent = time_training(exp.loop)
    exp.loop.run()
    torch.save(exp.student.state_dict(), path)
    final = exp.evaluation.history[-1]
    # the same model on the source test split (AdaBN on source batches): the domain gap
    source_test = instantiate(cfg.dataset.test, domain="source")
    loader = make_loader(source_test, 16, exp.task, False, 0, 0, "source test")
    with recalibrated_batchnorm(exp.student, exp.loop.source.loader, 10, exp.loop.device):
        source_scores = evaluate(exp.task, exp.student, loader, exp.loop.device)
    return {
        "seed": seed,
        "backend": backend,
        "map_50": final["eval/student/map_50"],
        "map": final["eval/student/map"],
        "source_map_50": source_scores["map_50"],
        "seconds_per_iteration": spent[0] / steps,
    }


def from_warmup(method: str, overrides: list[str], start: str) -> Any:
    """The experiment of ``overrides`` with the warm-up model's weights (and, for
    ``source_only_ema`` and ``sada_ema``, an EMA teacher of the student, which those methods
    lack)."""
    from hydra.utils import instantiate

    exp = start_from(overrides, start)
    if method.endswith("_ema"):
        exp.loop.teacher = instantiate(exp.cfg.teacher, model=exp.student).to(exp.loop.device)
    return exp


def run_one(
    method: str,
    seed: int,
    steps: int,
    device: str,
    threads: int,
    extra: list[str],
    start: str,
    backend: str = "torchvision",
    experiment: str = "det_shapes",
    config_only: bool = False,
) -> dict:
    """``steps`` iterations of ``method`` from the warm-up model saved at ``start``: the
    row of scores; ``config_only``: the resolved config the run would train with
    (``common.config_record``), without training."""
    import torch

    overrides = adaptation_overrides(method, seed, steps, device, extra, backend, experiment)
    if config_only:
        return config_record(overrides)
    torch.set_num_threads(threads)
    exp = from_warmup(method, overrides, start)
    final, seconds = run_timed(exp)
    row = {
        "method": method,
        "seed": seed,
        "backend": backend,
        "seconds_per_iteration": seconds,
        "device": device_name(exp.loop),
        "overrides": [*METHODS[method], *extra],
    }
    for who in ("student", "teacher"):
        row[who] = final.get(f"eval/{who}/map_50")
        row[f"{who}_coco"] = final.get(f"eval/{who}/map")
        row[f"{who}_per_class"] = final.get(f"eval/{who}/ap50_per_class")
    return row


def speed(
    methods: list[str],
    steps: int,
    device: str,
    threads: int,
    extra: list[str],
    starts: dict[str, str],
    experiment: str = "det_shapes",
) -> dict:
    """Seconds per training iteration of each method on each backend (``starts``: backend ->
    its warm-up model), one after another in one process (so under the same load), from the
    warm-up model (so that the teacher finds pseudo-boxes and the masked branch runs), after 3
    untimed iterations. Returns backend -> method -> seconds."""
    import torch

    torch.set_num_threads(threads)
    out: dict[str, dict[str, float]] = {b: {} for b in starts}
    for method in methods:
        for backend, start in starts.items():
            overrides = [
                *_overrides(0, device, [*BACKENDS[backend], *extra], experiment),
                *METHODS[method],
                "eval.interval=0",
            ]
            exp = from_warmup(
                method, [*overrides, f"iterations={steps + 3}", "adaptation_start=0"], start
            )
            train_steps(exp.loop, 3)
            spent = time_training(exp.loop)
            train_steps(exp.loop, steps)
            out[backend][method] = spent[0] / steps
    return out


def _header(title: str, description: str, calls: list[str], note: str) -> list[str]:
    """A results file's title, what it measures, the commands that made it and a note."""
    commands = [f"- {c}" for c in calls]
    return [f"# {title}", "", description, "", "Commands (wall time):", "", *commands, "", note, ""]


def write_table(
    rows: list[dict],
    warm: list[dict],
    path: Path,
    calls: list[str],
    methods: list[str],
    note: str,
    speeds: dict | None = None,
    experiment: str = "det_shapes",
) -> None:
    title, classes = EXPERIMENTS[experiment]
    by: dict[str, dict[int, dict]] = {}
    for r in rows:
        by.setdefault(r["method"], {})[r["seed"]] = r
    lines = [
        *_header(
            f"Detection benchmark: {title}",
            "mAP@0.5 (COCO AP in the second column of each model) on the labelled target test "
            "split (200 images, 128 px), points, mean ± std over seeds; AdaBN evaluation (of "
            "BatchNorm models); "
            "seconds per training iteration (evaluation excluded).",
            calls,
            note,
        ),
        "Reading the table: the teacher columns (the EMA of the student) include what weight",
        "averaging alone adds; `source_only_ema` (source training with the same EMA, no pseudo-",
        "labels) measures it, so compare teachers with its teacher and students with students.",
        "Seconds per iteration were measured on a shared 2-core CPU while other jobs ran: they",
        "move with the load and rows that ran at different times are not comparable.",
        "",
        "| method | seeds | student mAP@0.5 | student AP | teacher mAP@0.5 | teacher AP "
        "| s / iteration | device |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if warm:
        lines.append(
            f"| source model at the start (after the warm-up) | {len(warm)} "
            f"| {mean_std([w['map_50'] for w in warm])} "
            f"| {mean_std([w['map'] for w in warm])} | - | - "
            f"| {statistics.mean(w['seconds_per_iteration'] for w in warm):.3f} | - |"
        )
    for m in methods:
        runs = list(by.get(m, {}).values())
        if not runs:
            continue
        spi = statistics.mean(r["seconds_per_iteration"] for r in runs)
        devices = ", ".join(sorted({r["device"] for r in runs}))
        cells = [
            mean_std([r[k] for r in runs])
            for k in ("student", "student_coco", "teacher", "teacher_coco")
        ]
        lines.append(f"| {m} | {len(runs)} | " + " | ".join(cells) + f" | {spi:.3f} | {devices} |")
    if warm:
        lines += [
            "",
            "The domain gap: the source model after the warm-up scores "
            f"{mean_std([w['source_map_50'] for w in warm])} mAP@0.5 on the source test split "
            f"(200 clear scenes) and {mean_std([w['map_50'] for w in warm])} on the target test "
            "split.",
        ]
    diffs = paired_differences(by, PAIRS)
    if diffs:
        lines += [
            "",
            "Paired differences of mAP@0.5 (same seed: same start and data order), points:",
            "",
            "| pair | model | seeds | difference | seeds where the first is ahead |",
            "|---|---|---|---|---|",
            *diffs,
        ]
    if speeds:
        lines += [
            "",
            f"Speed, measured apart: {speeds['steps']} iterations of each method one after "
            f"another in one process on {speeds['device']} ({speeds['threads']} thread(s)), "
            f"seconds per iteration (`{speeds.get('command', '')}`):",
            "",
            "| " + " | ".join(speeds["seconds"]) + " |",
            "|" + "---|" * len(speeds["seconds"]),
            "| " + " | ".join(f"{v:.3f}" for v in speeds["seconds"].values()) + " |",
        ]
    per_class = []
    for m in methods:
        runs = [r for r in by.get(m, {}).values() if r.get("student_per_class")]
        if runs:
            cells = [
                mean_std([r["student_per_class"][c] for r in runs]) for c in range(len(classes))
            ]
            per_class.append(f"| {m} | " + " | ".join(cells) + " |")
    if per_class:
        lines += [
            "",
            "Student AP@0.5 per class:",
            "",
            "| method | " + " | ".join(classes) + " |",
            "|---|" + "---|" * len(classes),
            *per_class,
        ]
    path.write_text("\n".join(lines) + "\n")


def write_backend_table(
    rows: list[dict],
    warm: list[dict],
    path: Path,
    calls: list[str],
    methods: list[str],
    backends: list[str],
    note: str,
    speeds: dict | None = None,
) -> None:
    """The backends side by side: per backend, the warm-up source model and each method; the
    per-seed differences between the first backend and each other; speed measured apart."""
    start = "source model after the warm-up"
    scores: dict[str, dict[str, dict[int, dict]]] = {b: {} for b in backends}
    for w in warm:
        row = {"student": w["map_50"], "student_coco": w["map"], "teacher": None}
        row["teacher_coco"], row["seconds_per_iteration"] = None, w["seconds_per_iteration"]
        scores.setdefault(w.get("backend", "torchvision"), {}).setdefault(start, {})[w["seed"]] = (
            row
        )
    for r in rows:
        backend = r.get("backend", "torchvision")
        scores.setdefault(backend, {}).setdefault(r["method"], {})[r["seed"]] = r
    lines = [
        *_header(
            "Detection benchmark: the torchvision and detectron2 backends side by side",
            "Faster R-CNN with the same sizes on both backends (timm's RegNetX-200MF with "
            "trainable BatchNorm, a 64-channel FPN, a 256-wide box head, few proposals, from "
            "scratch): `model=faster_rcnn_small` (torchvision's parts) and "
            "`model=d2_faster_rcnn_small` (detectron2's `GeneralizedRCNN`, RPN, ROI heads "
            "and FPN). mAP@0.5 and COCO AP on the labelled target test split (200 foggy, "
            "textured, noisy scenes at 128 px), points, mean ± std over seeds; AdaBN "
            "evaluation; seconds per training iteration (evaluation excluded). The same seed "
            "gives both backends the same data order, not the same initial weights.",
            calls,
            note,
        ),
        "| backend | method | seeds | student mAP@0.5 | student AP | teacher mAP@0.5 | teacher AP "
        "| s / iteration |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = [start, *methods]
    for backend in backends:
        for m in names:
            runs = list(scores.get(backend, {}).get(m, {}).values())
            if not runs:
                continue
            spi = statistics.mean(r["seconds_per_iteration"] for r in runs)
            cells = [
                mean_std([r[k] for r in runs])
                for k in ("student", "student_coco", "teacher", "teacher_coco")
            ]
            lines.append(
                f"| {backend} | {m} | {len(runs)} | " + " | ".join(cells) + f" | {spi:.3f} |"
            )
    base = backends[0]
    diffs = []
    for other in backends[1:]:
        for m in names:
            a, b = scores.get(other, {}).get(m, {}), scores.get(base, {}).get(m, {})
            for who in ("student", "teacher"):
                d = [
                    a[s][who] - b[s][who]
                    for s in sorted(set(a) & set(b))
                    if a[s].get(who) is not None and b[s].get(who) is not None
                ]
                if d:
                    ahead = sum(x > 0 for x in d)
                    diffs.append(
                        f"| {other} - {base} | {m} | {who} | {len(d)} | {mean_std(d)} "
                        f"| {interval95(d)} | {ahead} / {len(d)} |"
                    )
    if diffs:
        lines += [
            "",
            "Differences of mAP@0.5 per seed, points (mean ± std, 95 % interval of the mean):",
            "",
            "| backends | method | model | seeds | difference | 95 % interval | seeds ahead |",
            "|---|---|---|---|---|---|---|",
            *diffs,
        ]
    if speeds and isinstance(next(iter(speeds["seconds"].values()), None), dict):
        seconds = speeds["seconds"]
        lines += [
            "",
            f"Speed, measured apart: {speeds['steps']} iterations of each method on each backend, "
            f"one after another in one process on {speeds['device']} ({speeds['threads']} "
            f"thread(s)), from each backend's warm-up model of seed {speeds.get('seed', 0)}, "
            f"seconds per iteration (`{speeds.get('command', '')}`):",
            "",
            "| method | "
            + " | ".join(seconds)
            + f" | {' | '.join(f'{b} / {base}' for b in list(seconds)[1:])} |",
            "|---|" + "---|" * (2 * len(seconds) - 1),
        ]
        for m in next(iter(seconds.values())):
            cells = [f"{seconds[b][m]:.3f}" for b in seconds]
            ratios = [f"{seconds[b][m] / seconds[base][m]:.2f}" for b in list(seconds)[1:]]
            lines.append(f"| {m} | " + " | ".join(cells + ratios) + " |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(METHODS))
    parser.add_argument("--backends", nargs="+", default=["torchvision"], choices=list(BACKENDS))
    parser.add_argument("--experiment", default="det_shapes", choices=list(EXPERIMENTS))
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[0, 1, 2],
        help="each method runs each seed, again where the cache has the run (it is replaced); "
        "the cache's other runs are kept: name only the new seeds to add some",
    )
    parser.add_argument("--warmup", type=int, default=2000, help="source-only iterations")
    parser.add_argument("--iterations", type=int, default=750, help="iterations per method")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per run (default: cores / jobs)"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="the results file (default: results/detection.md, with several backends "
        "results/detection_backends.md)",
    )
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "mic_det_bench"))
    parser.add_argument(
        "--fresh", action="store_true", help="ignore cached runs (the table holds this call's)"
    )
    parser.add_argument(
        "--note",
        default=None,
        help="the reading for the results file (or @file); kept in its JSON for later tables",
    )
    parser.add_argument(
        "--table-only", action="store_true", help="rewrite the table from the cached runs"
    )
    parser.add_argument(
        "--speed",
        type=int,
        default=0,
        help="also time N iterations of each method one after another in one process",
    )
    parser.add_argument("overrides", nargs="*", help="extra mic-train overrides for every run")
    args = parser.parse_args()
    check_options(parser, args)

    several = args.backends != ["torchvision"]
    name = "detection_backends.md" if several else "detection.md"
    out = Path(args.out or Path(__file__).parent / "results" / name)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cache = out.with_suffix(".json")
    state = {"rows": [], "warmup": []}
    if cache.exists() and not args.fresh:
        state = json.loads(cache.read_text())
    if args.table_only and not state["rows"]:
        refuse_empty_table(parser, cache)

    def key(r: dict, *names: str) -> tuple:
        return (r.get("backend", "torchvision"), *(r[n] for n in names))

    # one seed after another, the backends alternating: each pair of runs sees the same load
    todo = (
        []
        if args.table_only
        else [(b, m, s) for s in args.seeds for m in args.methods for b in args.backends]
    )
    state["rows"] = [r for r in state["rows"] if key(r, "method", "seed") not in set(todo)]
    threads = args.threads or max(1, (os.cpu_count() or 2) // args.jobs)
    stage = source_stage_overrides(args.overrides)
    starts = {
        (b, s): str(warmup_path(work, args.experiment, b, s, args.warmup, args.overrides))
        for s in args.seeds
        for b in args.backends
    }
    t0 = time.time()
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        warm_jobs = {
            (b, s): pool.submit(
                warmup, s, args.warmup, args.device, threads, stage, p, b, args.experiment
            )
            for (b, s), p in starts.items()
            if not args.table_only and (not Path(p).exists() or args.fresh)
        }
        state["warmup"] = [w for w in state["warmup"] if key(w, "seed") not in warm_jobs]
        for (b, s), f in warm_jobs.items():
            w = f.result()
            state["warmup"].append(w)
            print(
                f"warm-up {b} seed {s}: mAP@0.5 {100 * w['map_50']:.1f} "
                f"{w['seconds_per_iteration']:.3f} s/it ({time.time() - t0:.0f} s)",
                flush=True,
            )
            write_text_atomically(cache, json.dumps(state, indent=1))
        futures = [
            pool.submit(
                run_one,
                m,
                s,
                args.iterations,
                args.device,
                threads,
                args.overrides,
                starts[b, s],
                b,
                args.experiment,
            )
            for b, m, s in todo
        ]
        for f in futures:
            r = f.result()
            state["rows"].append(r)
            teacher = "-" if r["teacher"] is None else f"{100 * r['teacher']:.1f}"
            print(
                f"{r['backend']:<11} {r['method']:<17} seed {r['seed']}: student "
                f"{100 * r['student']:.1f} teacher {teacher}  {r['seconds_per_iteration']:.3f} "
                f"s/it ({time.time() - t0:.0f} s)",
                flush=True,
            )
            write_text_atomically(cache, json.dumps(state, indent=1))
    if args.speed:  # threads as for the runs (cores / jobs): more would thrash a shared CPU
        seed = args.seeds[0]
        start = {b: starts[b, seed] for b in args.backends}
        missing = [p for p in start.values() if not Path(p).exists()]
        if missing:
            raise SystemExit(f"--speed needs the warm-up models {missing}: run the benchmark first")
        seconds = speed(
            args.methods, args.speed, args.device, threads, args.overrides, start, args.experiment
        )
        state["speed"] = {
            "command": "python benchmarks/detection.py " + " ".join(sys.argv[1:]),
            "steps": args.speed,
            "device": args.device,
            "threads": threads,
            "seed": seed,
            "seconds": seconds if several else seconds["torchvision"],
        }
        write_text_atomically(cache, json.dumps(state, indent=1))
    methods = [m for m in METHODS if any(r["method"] == m for r in state["rows"])]
    command = "python benchmarks/" + Path(sys.argv[0]).name + " " + " ".join(sys.argv[1:])
    calls = [c for c in state.get("calls", []) if not args.fresh]
    if not args.table_only:
        minutes = (time.time() - t0) / 60
        calls.append(f"`{command.strip()}` ({minutes:.0f} min, {args.jobs} job(s))")
    state["calls"] = calls
    write_text_atomically(cache, json.dumps(state, indent=1))
    if not args.table_only:
        state["schedule"] = {"warmup": args.warmup, "iterations": args.iterations}
        write_text_atomically(cache, json.dumps(state, indent=1))
    schedule = state.get("schedule", {"warmup": args.warmup, "iterations": args.iterations})
    if args.note is not None:
        state["note"] = note_text(args.note)
        write_text_atomically(cache, json.dumps(state, indent=1))
    if several:
        note = state.get("note") or (
            f"Schedule: {schedule['warmup']} source-only warm-up iterations per seed and "
            f"backend, then {schedule['iterations']} iterations of each method (batch 2 source "
            "+ 2 target, SGD 0.02), from scratch at 128 px, one run at a time with one thread "
            "on a shared 2-core CPU. A shortened schedule, sized to run in well under an hour: "
            "both backends train the same way, neither converges (the full bundled schedule is "
            "2000 + 750 iterations, results/detection.md)."
        )
        backends = [
            b for b in BACKENDS if any(key(r)[0] == b for r in state["rows"] + state["warmup"])
        ]
        write_backend_table(
            state["rows"], state["warmup"], out, calls, methods, backends, note, state.get("speed")
        )
        print(out.read_text())
        return
    note = state.get("note") or (
        f"Schedule: {schedule['warmup']} source-only warm-up iterations per seed, then "
        f"{schedule['iterations']} iterations per method (batch 2 source + 2 target, SGD "
        "0.02), from scratch at 128 px, sized to run in about 45 minutes on a 2-core CPU. The "
        "published recipe adapts an ImageNet-initialised ResNet-50 for 60k iterations at "
        "about 1000 px; this short schedule shows that every method trains and what it does "
        "early on, not converged numbers."
    )
    write_table(
        state["rows"],
        state["warmup"],
        out,
        calls,
        methods,
        note,
        state.get("speed"),
        args.experiment,
    )
    print(out.read_text())


if __name__ == "__main__":
    main()
