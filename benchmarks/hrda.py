"""HRDA + MIC on the bundled street scenes, and what HRDA costs, measured side by side.

    python benchmarks/hrda.py                          # accuracy rows (3 seeds) and cost rows
    python benchmarks/hrda.py --cost-only              # only peak memory and speed
    python benchmarks/hrda.py --cost-only --device cuda --published   # the published sizes

Accuracy. Per seed, a small U-Net (``model=small_unet``, widths 8-16-24-32) first trains on
the source scenes alone for ``--warmup`` iterations (64 px scenes, batch 4, the streets
schedule); this stands in for the ImageNet weights the published recipes start from, so that
the teacher is confident enough for its pseudo-labels to carry weight. Every method then
starts from that model (same seed: same weights, same data order, same random streams) and
adapts for ``--iterations`` iterations of ``mic-train`` with its overrides:

- ``daformer_mic``: ``experiment=streets method=daformer mic=segmentation``, the single-scale
  model on the whole 64 px crops (DACS + rare class sampling + feature distance + MIC);
- ``hrda``: ``experiment=streets_hrda mic=none``, HRDA around the same U-Net (its encoder and
  decoder from the warm-up, the scale attention new): context = the 64 px crop at 0.5,
  detail = a 32 px crop at full resolution, DAFormer's self-training (its feature distance
  left out: on the 2 x 2 context feature cells no thing class reaches min_ratio, so it is 0);
- ``hrda_mic``: ``experiment=streets_hrda``, the same with MIC (8 px blocks, ratio 0.7).

Scores: mIoU over the 8 classes and the look-alike classes' IoU on the 500 target test
scenes, after AdaBN (10 target batches), of the student and the EMA teacher; paired
differences over seeds with a 95 % interval (Student's t).

Cost, each row in a fresh process, the three methods one after another, ``--repeats`` times,
at one crop: DAFormer (MiT-B0, random weights) at ``--crop`` px, batch 2 + 2, DAFormer's
self-training, and HRDA around it (detail crop half the side): peak memory of 3 iterations of
HRDA and of HRDA + MIC (CUDA: max allocated; CPU: the peak resident set above the start), and
seconds per iteration of HRDA + MIC and of DAFormer + MIC (the mean of iterations 2-4); the
table gives medians over the repeats. ``--published``: MiT-B5, 1024 px crops, 512 px detail
crops, bf16 (a GPU), with the projected hours of 40k iterations.

Runs are cached in hrda.json beside the results table (rewritten from the cache).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import (
    check_options,
    interval95,
    mean_std,
    note_text,
    peak_memory,
    run_timed,
    start_from,
    train_steps,
)

from mic.datasets.segmentation.streets import CLASSES, CONFUSABLE

#: the bundled scenes at 64 px, batch 4 + 4, a narrower U-Net: CPU-sized
COMMON = [
    "dataset.size=64",
    "dataset.source.min_pixels=40",
    "loader.source_batch_size=4",
    "loader.target_batch_size=4",
    "scheduler.warmup_iters=50",
    "log.progress=false",
    "log.tensorboard=false",
    "eval.interval=0",
]
WIDTHS = "[8,16,24,32]"
METHODS: dict[str, list[str]] = {
    "daformer_mic": ["experiment=streets", "method=daformer", "mic=segmentation"],
    "hrda": ["experiment=streets_hrda", "mic=none"],
    "hrda_mic": ["experiment=streets_hrda", "mic=segmentation"],
}
WIDTH_KEY = {"daformer_mic": "model.widths", "hrda": "model.segmenter.widths"}
LABELS = {"daformer_mic": "DAFormer + MIC", "hrda": "HRDA", "hrda_mic": "HRDA + MIC"}
PAIRS = [("hrda_mic", "hrda"), ("hrda_mic", "daformer_mic"), ("hrda", "daformer_mic")]


def _width(method: str) -> str:
    return f"{WIDTH_KEY.get(method, 'model.segmenter.widths')}={WIDTHS}"


def warmup(seed: int, steps: int, device: str, path: str) -> dict:
    """Source-only training of the single-scale U-Net (segmentation.py's ``warmup`` on
    ``experiment=streets``); saves its weights and scores them."""
    import segmentation

    threads = 1 if device == "cpu" else 8
    extra = [*COMMON, f"model.widths={WIDTHS}"]
    return segmentation.warmup(seed, steps, device, threads, extra, path, "streets")


def run_one(method: str, seed: int, steps: int, device: str, start: str, warmup_steps: int) -> dict:
    overrides = [
        *METHODS[method],
        *COMMON,
        _width(method),
        f"iterations={steps}",
        f"seed={seed}",
        f"device={device}",
    ]
    final, seconds = run_timed(start_from(overrides, start, strict=False))
    row = {
        "method": method,
        "seed": seed,
        "iterations": steps,
        "warmup": warmup_steps,
        "seconds_per_iteration": seconds,
        "overrides": overrides[:-2],
    }
    for who in ("student", "teacher"):
        row[f"{who}_miou"] = final.get(f"eval/{who}/miou")
        row[f"{who}_iou"] = dict(zip(CLASSES, final.get(f"eval/{who}/per_class_iou")))
    return row


def cost_overrides(method: str, crop: int, device: str, published: bool) -> list[str]:
    """DAFormer (or HRDA around it) on the street scenes generated at ``crop`` px."""
    encoder = "mit_b5" if published else "mit_b0"
    common = [
        f"device={device}",
        f"dataset.size={crop}",
        "dataset.train_count=8",
        "dataset.test_count=2",
        f"dataset.mic_block_size={crop // 16}",  # 64 px at 1024 crops
        "loader.source_batch_size=2",
        "loader.target_batch_size=2",
        "eval.adabn_batches=0",
        "log.progress=false",
        "log.tensorboard=false",
        *(["precision=bf16"] if published else []),
    ]
    if method == "daformer_mic":
        model = ["model=daformer_mitb5", f"model.encoder={encoder}", "model.pretrained=false"]
    else:
        model = [
            "model=hrda_daformer_mitb5",
            f"model.segmenter.encoder={encoder}",
            "model.segmenter.pretrained=false",
            f"model.detail_crop=[{crop // 2},{crop // 2}]",
        ]
    return [*METHODS[method], *model, *common]


def cost_one(method: str, crop: int, device: str, published: bool) -> dict:
    """Peak memory and seconds per iteration of one method in this (fresh) process."""
    import torch

    torch.set_num_threads(1 if device == "cpu" else 8)
    overrides = cost_overrides(method, crop, device, published)
    memory = peak_memory(overrides, iterations=3)
    exp = start_from([*overrides, "iterations=5"])
    train_steps(exp.loop, 1)
    if exp.loop.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    train_steps(exp.loop, 3)
    if exp.loop.device.type == "cuda":
        torch.cuda.synchronize()
    return {
        "method": method,
        "crop": crop,
        "published": published,
        **memory,
        "seconds_per_iteration": (time.perf_counter() - t0) / 3,
    }


def _rows(runs: list[dict], method: str) -> list[dict]:
    return sorted((r for r in runs if r["method"] == method), key=lambda r: r["seed"])


def _accuracy(runs: list[dict], warm: list[dict], warmup_steps: int, steps: int) -> list[str]:
    """The accuracy section of one schedule: the rows and the paired differences."""
    lines = [
        f"## Accuracy: {warmup_steps} source-only warm-up iterations per seed, then {steps} "
        "iterations of each method",
        "",
        f"Overrides of every run: `{' '.join(COMMON)}` and the U-Net widths {WIDTHS}.",
        "",
        "Target test mIoU (%) and the look-alike classes' IoU (of the EMA teacher), "
        "mean ± std over seeds.",
        "",
        "| method | seeds | student mIoU | teacher mIoU | "
        + " | ".join(CONFUSABLE)
        + " | s / iteration |",
        "|---|---|---|---|" + "---|" * len(CONFUSABLE) + "---|",
    ]
    if warm:
        cells = [mean_std([w["iou"].get(c) for w in warm]) for c in CONFUSABLE]
        lines.append(
            f"| source-only start (warm-up) | {len(warm)} | "
            f"{mean_std([w['miou'] for w in warm])} | - | {' | '.join(cells)} | "
            f"{statistics.mean(w['seconds_per_iteration'] for w in warm):.3f} |"
        )
    for method in METHODS:
        rs = _rows(runs, method)
        if not rs:
            continue
        cells = [mean_std([r["teacher_iou"].get(c) for r in rs]) for c in CONFUSABLE]
        speed = statistics.mean(r["seconds_per_iteration"] for r in rs)
        lines.append(
            f"| {LABELS[method]} | {len(rs)} | {mean_std([r['student_miou'] for r in rs])} "
            f"| {mean_std([r['teacher_miou'] for r in rs])} | {' | '.join(cells)} "
            f"| {speed:.3f} |"
        )
    lines += [
        "",
        "Paired differences of teacher mIoU (same seed), points:",
        "",
        "| comparison | seeds | per seed | mean ± std | 95 % interval | first ahead in |",
        "|---|---|---|---|---|---|",
    ]
    for a, b in PAIRS:
        base = {r["seed"]: r for r in _rows(runs, b)}
        d = [
            r["teacher_miou"] - base[r["seed"]]["teacher_miou"]
            for r in _rows(runs, a)
            if r["seed"] in base
        ]
        if not d:
            continue
        per = ", ".join(f"{100 * x:+.1f}" for x in d)
        lines.append(
            f"| {LABELS[a]} − {LABELS[b]} | {len(d)} | {per} | {mean_std(d)} | "
            f"{interval95(d)} | {sum(x > 0 for x in d)} of {len(d)} |"
        )
    return [*lines, ""]


def write_table(cache: dict, path: Path, note: str) -> None:
    lines = ["# HRDA + MIC on the bundled street scenes, and what HRDA costs", ""]
    lines += ["Written by `benchmarks/hrda.py` (see its docstring for the protocol).", ""]
    if note:
        lines += [note, ""]
    runs = list(cache["runs"].values())
    for warmup_steps, steps in sorted({(r["warmup"], r["iterations"]) for r in runs}):
        rows = [r for r in runs if (r["warmup"], r["iterations"]) == (warmup_steps, steps)]
        warm = [w for w in cache["warmup"].values() if w["steps"] == warmup_steps]
        lines += _accuracy(rows, warm, warmup_steps, steps)
    for published in (False, True):
        cost = [c for c in cache["cost"].values() if c["published"] == published]
        if not cost:
            continue
        crop = cost[0]["crop"]
        by = {m: [c for c in cost if c["method"] == m] for m in METHODS}
        peak = {m: statistics.median(c["peak_bytes"] for c in cs) for m, cs in by.items() if cs}
        spi = {
            m: statistics.median(c["seconds_per_iteration"] for c in cs)
            for m, cs in by.items()
            if cs
        }
        title = "the published sizes" if published else f"{crop} px crops"
        lines += [
            f"## Cost at {title} (DAFormer {'MiT-B5' if published else 'MiT-B0'}, batch "
            f"2 + 2, HRDA detail crop {crop // 2} px)",
            "",
            "Each row: the median over repeats (fresh processes, the methods interleaved), the "
            "range in brackets.",
            "",
            "| method | repeats | peak memory (MiB) | s / iteration | device | measure |",
            "|---|---|---|---|---|---|",
        ]
        for m, cs in by.items():
            if not cs:
                continue
            mib = [c["peak_bytes"] / 2**20 for c in cs]
            sec = [c["seconds_per_iteration"] for c in cs]
            lines.append(
                f"| {LABELS[m]} | {len(cs)} | {peak[m] / 2**20:.0f} [{min(mib):.0f}, "
                f"{max(mib):.0f}] | {spi[m]:.2f} [{min(sec):.2f}, {max(sec):.2f}] | "
                f"{cs[0]['device']} | {cs[0]['measure']} |"
            )
        lines.append("")
        if peak.get("hrda", 0) > 0 and "hrda_mic" in peak:
            ratio = peak["hrda_mic"] / peak["hrda"]
            lines.append(f"HRDA + MIC / HRDA peak memory: **{ratio:.2f}x** (goal <= 1.15x).")
        if "daformer_mic" in spi and "hrda_mic" in spi:
            ratio = spi["hrda_mic"] / spi["daformer_mic"]
            lines.append(f"HRDA + MIC / DAFormer + MIC seconds per iteration: **{ratio:.2f}x**.")
        if published and "hrda_mic" in spi:
            lines.append(
                f"HRDA + MIC: {1 / spi['hrda_mic']:.2f} iterations per second, "
                f"{40000 * spi['hrda_mic'] / 3600:.1f} hours for the published 40k iterations."
            )
        lines.append("")
    path.write_text("\n".join(lines).rstrip("\n") + "\n")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--warmup", type=int, default=1500, help="source-only iterations per seed")
    p.add_argument("--iterations", type=int, default=400, help="adaptation iterations")
    p.add_argument("--device", default="cpu")
    p.add_argument("--crop", type=int, default=128, help="crop side of the cost rows")
    p.add_argument("--published", action="store_true", help="cost rows at the published sizes")
    p.add_argument("--repeats", type=int, default=3, help="repeats of the cost rows")
    p.add_argument("--cost-only", action="store_true")
    p.add_argument("--no-cost", action="store_true")
    p.add_argument("--work", type=Path, default=Path("/tmp/mic_hrda_benchmark"))
    p.add_argument("--note", default="", help="a paragraph (or @file) for the results file")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "hrda.md")
    args = p.parse_args()
    check_options(p, args)
    args.note = note_text(args.note)
    cache_file = args.out.with_suffix(".json")
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    for key in ("runs", "warmup", "cost"):
        cache.setdefault(key, {})

    def save() -> None:
        cache_file.write_text(json.dumps(cache, indent=1))

    import torch

    torch.set_num_threads(1 if args.device == "cpu" else 8)
    if not args.cost_only:
        args.work.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            start = args.work / f"warmup_seed{seed}_{args.warmup}.pt"
            warm_key = f"{seed}:{args.warmup}"
            if not start.exists() or warm_key not in cache["warmup"]:
                t0 = time.time()
                cache["warmup"][warm_key] = warmup(seed, args.warmup, args.device, str(start))
                print(f"warm-up seed {seed}: {time.time() - t0:.0f} s", flush=True)
                save()
            for method in args.methods:
                key = json.dumps([method, seed, args.warmup, args.iterations])
                if key in cache["runs"]:
                    continue
                t0 = time.time()
                row = run_one(method, seed, args.iterations, args.device, str(start), args.warmup)
                cache["runs"][key] = row
                save()
                print(
                    f"{method} seed {seed}: teacher mIoU {100 * row['teacher_miou']:.1f} "
                    f"({time.time() - t0:.0f} s)",
                    flush=True,
                )
    if not args.no_cost:
        crop = 1024 if args.published else args.crop
        for repeat in range(args.repeats):
            for method in ("hrda", "hrda_mic", "daformer_mic"):
                key = f"{method}:{crop}:{args.device}:{args.published}:{repeat}"
                if key in cache["cost"]:
                    continue
                command = [sys.executable, __file__, "--_cost", method, args.device, str(crop)]
                out = subprocess.run(
                    [*command, *(["published"] if args.published else [])],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                cache["cost"][key] = json.loads(out.stdout.strip().splitlines()[-1])
                save()
                print(f"cost {key}: {cache['cost'][key]}", flush=True)
    write_table(cache, args.out, args.note)
    print(args.out.read_text())


if __name__ == "__main__":
    if len(sys.argv) > 4 and sys.argv[1] == "--_cost":
        method, device, crop = sys.argv[2], sys.argv[3], int(sys.argv[4])
        print(json.dumps(cost_one(method, crop, device, "published" in sys.argv[5:])))
    else:
        main()
