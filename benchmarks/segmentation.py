"""Segmentation UDA methods on the bundled street-scene benchmark, over seeds; speed and memory.

    python benchmarks/segmentation.py                              # full length (GPU-sized)
    python benchmarks/segmentation.py --device cuda --jobs 6       # parallel runs on one GPU
    python benchmarks/segmentation.py --cpu-budget --jobs 2        # the reduced CPU run
    python benchmarks/segmentation.py --memory-only                # only the memory rows
    python benchmarks/segmentation.py --experiment streets_context --out \
        benchmarks/results/streets_context.md ...                  # the context scenes

Every run is ``mic-train experiment=streets`` (a small full-resolution U-Net from scratch,
AdamW 6e-4, warm-up + poly, EMA 0.99, batch 8 + 8 at 64 px, 3000 iterations) with the
method's overrides and the seed. Scores: target test mIoU over the 8 classes and the IoU of
the look-alike classes (road / sidewalk, person / pole), of the student and the EMA teacher,
after AdaBN re-estimation of BatchNorm statistics on 10 target training batches. Paired
differences compare runs of one seed (same data order, same initial weights).

Memory: the peak memory of one training iteration of DAFormer (MiT-B0 encoder + fusion
decoder, batch 2 + 2, 512 px crops; 128 px on a CPU) with and without MIC, each in a fresh
process. On CUDA it
is ``torch.cuda.max_memory_allocated``; on a CPU it is the growth of the process's peak
resident set over three iterations (what the allocator holds; a coarser measure).

Results are cached per (method, seed, settings) in segmentation.json beside the markdown
table, so runs can be added in several invocations; the table is rewritten from the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from common import (
    add_device_options,
    check_options,
    config_record,
    device_name,
    mean_std,
    note_text,
    peak_memory,
    run_overrides,
    run_timed,
    start_from,
    threads_per_run,
    time_training,
)

from mic.datasets.segmentation.streets import CONFUSABLE

METHODS: dict[str, list[str]] = {
    "source_only": ["method=source_only", "mic=none"],
    "dacs": ["method=dacs", "mic=none"],
    "dacs_mic": ["method=dacs", "mic=segmentation"],
    "daformer": ["method=daformer", "mic=none"],
    "daformer_mic": ["method=daformer", "mic=segmentation"],
}
LABELS = {
    "source_only": "source only",
    "dacs": "DACS",
    "dacs_mic": "DACS + MIC",
    "daformer": "DAFormer (DACS + RCS + FD)",
    "daformer_mic": "DAFormer + MIC",
}
PAIRS = [("dacs_mic", "dacs"), ("daformer_mic", "daformer"), ("daformer", "dacs")]
#: the reduced schedule that fits a shared 2-core CPU in under an hour: 32 px scenes, batch
#: 4 + 4, a narrower U-Net, 900 iterations (the full run is 64 px, 8 + 8, 3000 iterations)
CPU_BUDGET = [
    "iterations=900",
    "scheduler.warmup_iters=50",
    "dataset.size=32",
    "dataset.mic_block_size=4",
    "dataset.source.min_pixels=10",
    "loader.source_batch_size=4",
    "loader.target_batch_size=4",
    "model.widths=[8,16,24,32]",
]
MEMORY = [
    "experiment=streets",
    "model=daformer_mitb5",
    "model.encoder=mit_b0",
    "model.pretrained=false",
    "dataset.train_count=8",
    "dataset.test_count=2",
    "dataset.mic_block_size=32",
    "loader.source_batch_size=2",
    "loader.target_batch_size=2",
    "loader.test_batch_size=1",
    "eval.adabn_batches=0",
    "log.progress=false",
    "log.tensorboard=false",
]


def _overrides(experiment: str, seed: int, device: str) -> list[str]:
    return [*run_overrides(experiment, seed, device), "eval.interval=0"]


def warmup(
    seed: int,
    steps: int,
    device: str,
    threads: int,
    extra: list[str],
    path: str,
    experiment: str,
    config_only: bool = False,
) -> dict:
    """Source-only training of ``experiment``'s model for ``steps`` iterations (the source stage
    of a warm start); saves the student's weights at ``path`` and scores them on the target
    test split (after AdaBN). ``config_only``: the resolved config it would train with
    (``common.config_record``), without training."""
    import logging

    import torch

    overrides = [
        *_overrides(experiment, seed, device),
        *METHODS["source_only"],
        *extra,
        f"iterations={steps}",
        "eval.models=[student]",
    ]
    if config_only:
        return config_record(overrides)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(threads)
    exp = start_from(overrides)
    final, seconds = run_timed(exp)
    torch.save(exp.student.state_dict(), path)
    return {
        "seed": seed,
        "steps": steps,
        "miou": final["eval/student/miou"],
        "iou": dict(zip(exp.task.classes, final["eval/student/per_class_iou"])),
        "seconds_per_iteration": seconds,
    }


def run_one(
    method: str,
    seed: int,
    device: str,
    threads: int,
    extra: list[str],
    experiment: str = "streets",
    start: str | None = None,
    probe: Callable[[Any], Callable[[], dict]] | None = None,
    config_only: bool = False,
) -> dict:
    """One run of ``method``: ``mic-train experiment=<experiment>`` with the method's and the
    ``extra`` overrides, from the weights saved at ``start`` (a ``warmup``) if given.
    ``probe(experiment)``, called before training (it may add hooks to the loop), returns
    a function whose dict is added to the result after the run. ``config_only``: the
    resolved config the run would train with (``common.config_record``), without training."""
    import logging

    import torch

    overrides = [*_overrides(experiment, seed, device), *METHODS[method], *extra]
    if config_only:
        return config_record(overrides)
    logging.basicConfig(level=logging.WARNING)  # the per-class tables stay out of the way
    torch.set_num_threads(threads)
    exp = start_from(overrides, start)
    report = probe(exp) if probe is not None else None
    loop = exp.loop
    spent = time_training(loop)
    loop.run()
    final = exp.evaluation.history[-1]
    classes = list(exp.task.classes)
    out = {
        "method": method,
        "seed": seed,
        "experiment": experiment,
        "seconds_per_iteration": spent[0] / loop.iterations,
        "device": device_name(loop),
        "iterations": loop.iterations,
        "overrides": [*METHODS[method], *extra],
    }
    for model in ("student", "teacher"):
        out[f"{model}_miou"] = final.get(f"eval/{model}/miou")
        ious = final.get(f"eval/{model}/per_class_iou") or []
        out[f"{model}_iou"] = dict(zip(classes, ious))
    if report is not None:
        out.update(report())
    return out


def memory_one(method: str, device: str, size: int = 512, iterations: int = 3) -> dict:
    """Peak memory of ``iterations`` training iterations in this (fresh) process."""
    import torch

    torch.set_num_threads(1 if device == "cpu" else max(1, os.cpu_count() or 1))
    overrides = [*MEMORY, *METHODS[method], f"device={device}", f"dataset.size={size}"]
    return {"method": method, **peak_memory(overrides, iterations), "crop": size}


def _key(method: str, seed: int, extra: list[str], experiment: str = "streets") -> str:
    key = [method, seed, sorted(extra)]
    return json.dumps(key if experiment == "streets" else [*key, experiment])


def _effective(extra: list[str]) -> list[str]:
    """Overrides with later values of a key replacing earlier ones (as Hydra applies them)."""
    out: dict[str, str] = {}
    for o in extra:
        out[o.split("=", 1)[0]] = o
    return list(out.values())


def _section(runs: list[dict]) -> list[str]:
    iterations = runs[0].get("iterations", "?")
    first = runs[0]
    extra = first["overrides"][len(METHODS[first["method"]]) :]  # in the order applied
    lines = [
        f"## Schedule: {iterations} iterations",
        "",
        f"Overrides on top of `experiment={first.get('experiment', 'streets')}`: "
        f"`{' '.join(_effective(extra)) or '(none)'}`.",
        "",
        "### Target test mIoU (%) and the look-alike classes' IoU, mean ± std over seeds",
        "",
        "Per-class IoU of the EMA teacher (of the student for source only, which has none).",
        "",
        "| method | seeds | student mIoU | teacher mIoU | "
        + " | ".join(CONFUSABLE)
        + " | s / iteration |",
        "|---|---|---|---|" + "---|" * len(CONFUSABLE) + "---|",
    ]
    for method in METHODS:
        rs = [r for r in runs if r["method"] == method]
        if not rs:
            continue
        cells = [
            mean_std([(r["teacher_iou"] or r["student_iou"]).get(c) for r in rs])
            for c in CONFUSABLE
        ]
        speed = statistics.mean(r["seconds_per_iteration"] for r in rs)
        lines.append(
            f"| {LABELS[method]} | {len(rs)} | {mean_std([r['student_miou'] for r in rs])} | "
            f"{mean_std([r['teacher_miou'] for r in rs])} | {' | '.join(cells)} | {speed:.3f} "
            f"({rs[0]['device']}) |"
        )
    lines += [
        "",
        "### Paired differences (points of teacher mIoU, same seed)",
        "",
        "| comparison | seeds | per seed | mean ± std | better in |",
        "|---|---|---|---|---|",
    ]
    for a, b in PAIRS:
        by_seed = {r["seed"]: r for r in runs if r["method"] == b}
        diffs = [
            (r["seed"], 100 * (r["teacher_miou"] - by_seed[r["seed"]]["teacher_miou"]))
            for r in sorted(runs, key=lambda r: r["seed"])
            if r["method"] == a and r["seed"] in by_seed
        ]
        if not diffs:
            continue
        d = [x for _, x in diffs]
        std = statistics.stdev(d) if len(d) > 1 else 0.0
        per = ", ".join(f"{x:+.1f}" for _, x in diffs)
        wins = sum(x > 0 for x in d)
        lines.append(
            f"| {LABELS[a]} − {LABELS[b]} | {len(d)} | {per} | {statistics.mean(d):+.1f} ± "
            f"{std:.1f} | {wins} of {len(d)} |"
        )
    return [*lines, ""]


#: the results file's title per experiment
TITLES = {
    "streets": "the bundled street-scene benchmark",
    "streets_context": "the context street-scene benchmark",
}


def write_table(
    cache: dict, device: str, path: Path, note: str, experiment: str = "streets"
) -> None:
    """The results file: one section per schedule found in the cache, then the memory rows."""
    lines = [
        f"# Segmentation: {TITLES.get(experiment, f'experiment={experiment}')}",
        "",
        "Written by `benchmarks/segmentation.py` (see its docstring for the protocol).",
        "",
    ]
    if note:
        lines += [note, ""]
    groups: dict[str, list[dict]] = {}
    for key, run in cache["runs"].items():
        groups.setdefault(json.dumps(json.loads(key)[2]), []).append(run)
    for _, runs in sorted(groups.items(), key=lambda g: g[1][0].get("iterations", 0)):
        lines += _section(runs)
    memory = [m for k, m in cache["memory"].items() if k.endswith(f":{device}")]
    if memory:
        by = {m["method"]: m for m in memory}
        lines += [
            "## Peak memory of one iteration (DAFormer MiT-B0, batch 2 + 2)",
            "",
            "| method | crop | peak | s / iteration | device | measure |",
            "|---|---|---|---|---|---|",
        ]
        for m in memory:
            lines.append(
                f"| {LABELS[m['method']]} | {m.get('crop', 512)} px | "
                f"{m['peak_bytes'] / 2**20:.0f} MiB | {m['seconds_per_iteration']:.2f} | "
                f"{m['device']} | {m['measure']} |"
            )
        if "daformer" in by and "daformer_mic" in by and by["daformer"]["peak_bytes"] > 0:
            ratio = by["daformer_mic"]["peak_bytes"] / by["daformer"]["peak_bytes"]
            lines += ["", f"MIC / DAFormer peak memory: **{ratio:.2f}x** (goal <= 1.15x)."]
    path.write_text("\n".join(lines).rstrip("\n") + "\n")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument(
        "--seeds-extra",
        nargs="+",
        type=int,
        default=None,
        help="seeds for source_only and the DAFormer rows (default: --seeds)",
    )
    add_device_options(p)
    p.add_argument(
        "--experiment",
        default="streets",
        help="the mic-train experiment every run starts from (streets, streets_context)",
    )
    p.add_argument("--cpu-budget", action="store_true", help="the reduced CPU schedule")
    p.add_argument("--override", nargs="*", default=[], help="extra mic-train overrides")
    p.add_argument("--memory-only", action="store_true")
    p.add_argument(
        "--memory-size",
        type=int,
        default=0,
        help="crop side of the memory rows (0: 512, 128 on a CPU)",
    )
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--note", default="", help="a paragraph (or @file) for the results file")
    p.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "segmentation.md"
    )
    args = p.parse_args()
    check_options(p, args)
    args.note = note_text(args.note)
    extra = [*(CPU_BUDGET if args.cpu_budget else []), *args.override]
    cache_file = args.out.with_suffix(".json")
    cache = (
        json.loads(cache_file.read_text()) if cache_file.exists() else {"runs": {}, "memory": {}}
    )
    threads = threads_per_run(args.device, args.jobs, args.threads)

    if not args.memory_only:
        todo = []
        for method in args.methods:
            seeds = args.seeds
            if args.seeds_extra is not None and method in (
                "source_only",
                "daformer",
                "daformer_mic",
            ):
                seeds = args.seeds_extra
            todo += [
                (method, s)
                for s in seeds
                if _key(method, s, extra, args.experiment) not in cache["runs"]
            ]
        print(f"{len(todo)} runs to do, {args.jobs} at a time, {threads} threads each", flush=True)
        ctx = get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
            futures = {
                pool.submit(run_one, m, s, args.device, threads, extra, args.experiment): (m, s)
                for m, s in todo
            }
            for future in as_completed(futures):
                m, s = futures[future]
                r = future.result()
                cache["runs"][_key(m, s, extra, args.experiment)] = r
                cache_file.write_text(json.dumps(cache, indent=1))
                score = r["teacher_miou"] if r["teacher_miou"] is not None else r["student_miou"]
                print(
                    f"{m} seed {s}: mIoU {100 * score:.1f}, {r['seconds_per_iteration']:.3f} s/it",
                    flush=True,
                )
    if not args.no_memory:
        for method in ("daformer", "daformer_mic"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--_memory",
                    method,
                    "--device",
                    args.device,
                    "--size",
                    str(args.memory_size or (128 if args.device == "cpu" else 512)),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            cache["memory"][f"{method}:{args.device}"] = json.loads(
                out.stdout.strip().splitlines()[-1]
            )
            cache_file.write_text(json.dumps(cache, indent=1))
    write_table(cache, args.device, args.out, args.note, args.experiment)
    print(args.out.read_text())


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--_memory":
        device = sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv else "cpu"
        size = int(sys.argv[sys.argv.index("--size") + 1]) if "--size" in sys.argv else 512
        print(json.dumps(memory_one(sys.argv[2], device, size)))
    else:
        main()
