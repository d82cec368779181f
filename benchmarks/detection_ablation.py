"""Why MIC trails SADA on the context shapes (``experiment=det_context``): one change of
SADA + MIC at a time, paired by seed with SADA, from the cached source-only models of
``detection.py``, with the masked branch's statistics and the teacher's pseudo-box quality.

    OMP_NUM_THREADS=1 python benchmarks/detection_ablation.py --variants sada_mic prob tau09 \
        --seeds 2 3 4 --jobs 2
    python benchmarks/detection_ablation.py --table-only     # the tables again, no training

Every run is ``detection.py``'s run of ``experiment=det_context`` (``--iterations`` 500, as
results/detection_context.md) from the seed's source-only model (``--warmup`` 2000
iterations of ``method=source_only``, kept in ``--work`` under ``detection.py``'s name for
it, ``warmup_det_context_torchvision_seed<N>_w<warmup>_.pt``, and trained here when missing),
so SADA rows of a ``detection.py`` cache for the same seeds (and its SADA + MIC rows run with
``method.terms.mic.weighting=none``, the setting the changes here are made to), made in the
same environment from the same files, are the same runs: ``--base-from`` takes them instead of
training them again (a run is deterministic given its seed and environment).

While it trains, a probe records the losses and the masked branch's statistics every 10
iterations (``mic``: its loss; ``mic/boxes``: pseudo-boxes per target image; ``mic/images``:
the share of target images with at least one; ``mic/score``: their mean teacher score), and at
the end the teacher's pseudo-boxes (score >= ``task.score_threshold``, predicted as in
training: batch statistics of 2-image batches) on the first ``--probe-images`` scenes of the
labelled target *training* split, which the adaptation never sees labelled: precision (boxes
matched to a ground-truth box of their class at IoU >= 0.5), class-agnostic precision (found
an object, whatever its class) and recall (``detection_teacher_norm.pseudo_box_quality``).

Score: target test mAP@0.5 of the student after AdaBN (as results/detection_context.md).
Every variant runs torchvision's colour operations in MIC's augmentation
(``augmentation_jitter=torchvision``, mic's default before 0.2, with which
detection_ablation.md was made).
Results are cached per (variant, seed) in detection_ablation.json; the markdown beside it is
rewritten from the cache after every run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, nullcontext
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from common import TORCHVISION_JITTER, check_options, interval95, mean_std, note_text, paired

RESULTS = Path(__file__).parent / "results"
EXPERIMENT = "det_context"
CLASSES = ["car", "kiosk", "rider", "ball", "bike"]
MIC = "method.terms.mic"
#: the masked losses unweighted: the setting every change below is made to (the default of
#: detection MIC when this ablation ran; the default is now ``student``, the variant below)
UNWEIGHTED = f"{MIC}.weighting=none"
#: variant -> (method of detection.METHODS, extra overrides, flags, what it tests)
VARIANTS: dict[str, tuple[str, list[str], list[str], str]] = {
    "sada": ("sada", [], [], "the base"),
    "sada_mic": (
        "sada_mic",
        [UNWEIGHTED],
        [],
        "MIC at the experiment's settings, unweighted (weighting=none)",
    ),
    "prob": (
        "sada_mic",
        [f"{MIC}.weighting=prob"],
        [],
        "each pseudo-box weighted by its teacher score",
    ),
    "student": (
        "sada_mic",
        [f"{MIC}.weighting=student"],
        [],
        "each sample weighted by the student's own confidence (the published masked branch; "
        "now mic's default)",
    ),
    "tau09": (
        "sada_mic",
        [UNWEIGHTED, "task.score_threshold=0.9"],
        [],
        "pseudo-boxes at teacher score >= 0.9 (published 0.8)",
    ),
    "block16": (
        "sada_mic",
        [UNWEIGHTED, f"{MIC}.masker.block_size=16"],
        [],
        "16 px blocks (1/8 of the side)",
    ),
    "ratio03": (
        "sada_mic",
        [UNWEIGHTED, f"{MIC}.masker.ratio=0.3"],
        [],
        "mask ratio 0.3 (published 0.5)",
    ),
    "no_aug": (
        "sada_mic",
        [UNWEIGHTED, f"{MIC}.masker.augmentation=null"],
        [],
        "no colour jitter / blur on the masked images",
    ),
    "running_norm": (
        "sada_mic",
        [UNWEIGHTED],
        ["running_norm"],
        "the masked forward normalised with the student's running BatchNorm statistics "
        "(eval mode) instead of the masked batch's own",
    ),
    "unmasked": (
        "sada_mic",
        [UNWEIGHTED, f"{MIC}.masker.ratio=0.0"],
        [],
        "nothing withheld (ratio 0): the same term as self-training on the strongly augmented "
        "target, which separates the masking from training on the teacher's pseudo-boxes",
    ),
    "classifier_only": (
        "sada_mic",
        [UNWEIGHTED, f"+{MIC}.part_weights.rpn_objectness=0.0"],
        [],
        "the masked loss on the ROI classifier alone (no RPN objectness)",
    ),
    "student_ignore05": (
        "sada_mic",
        [f"{MIC}.weighting=student", "task.ignore_threshold=0.5"],
        [],
        "the student weighting, and the samples near the teacher's boxes scored in [0.5, 0.8) "
        "ignored instead of taught as background (task.ignore_threshold=0.5)",
    ),
    "student_combined": (
        "sada_mic",
        [
            f"{MIC}.weighting=student",
            f"{MIC}.masker.block_size=16",
            f"+{MIC}.part_weights.rpn_objectness=0.0",
        ],
        [],
        "the student weighting with the two changes that each narrowed the unweighted term's "
        "gap to SADA by about 2 points in 3 of 3 seeds: 16 px blocks, the ROI classifier alone",
    ),
    "combined_alpha099": (
        "sada_mic",
        [
            f"{MIC}.weighting=student",
            f"{MIC}.masker.block_size=16",
            f"+{MIC}.part_weights.rpn_objectness=0.0",
            "teacher.alpha=0.99",
        ],
        [],
        "`student_combined` with a slower teacher (EMA decay 0.99, published for detection "
        "0.9): pseudo-boxes averaged over about 100 iterations instead of 10",
    ),
    "sada_ema099": (
        "sada_ema",
        ["teacher.alpha=0.99"],
        [],
        "SADA (no MIC) with an EMA of its student at decay 0.99 scored beside it: the teacher "
        "column that `combined_alpha099`'s teacher is compared to (weight averaging alone)",
    ),
    "combined_foreground": (
        "sada_mic",
        [
            f"{MIC}.weighting=student",
            f"{MIC}.masker.block_size=16",
            f"+{MIC}.part_weights.rpn_objectness=0.0",
        ],
        ["foreground_only"],
        "`student_combined` with the masked loss on the proposals matched to a pseudo-box "
        "alone (background proposals weigh 0): the masked image teaches the classes of the "
        "teacher's objects, no object the teacher missed is taught as background",
    ),
}


@contextmanager
def foreground_only() -> Iterator[None]:
    """Within the block, the detection heads weigh the background samples of pseudo-labelled
    images 0 (images with given box weights: the target's; source images have none and keep
    weight 1 everywhere)."""
    import torch

    from mic.tasks.detection import model

    original = model.sample_weights

    def foreground_weights(target: dict, matched: Any, foreground: Any) -> Any:
        weights = original(target, matched, foreground)
        if target.get("weights") is None:
            return weights
        return torch.where(foreground, weights, weights.new_zeros(()))

    model.sample_weights = foreground_weights
    try:
        yield
    finally:
        model.sample_weights = original


def warmup_file(work: Path, seed: int, steps: int) -> Path:
    """``detection.py``'s file for the seed's source-only model of the context shapes."""
    from detection import warmup_path

    return warmup_path(work, EXPERIMENT, "torchvision", seed, steps, [])


def ensure_warmup(seed: int, steps: int, work: Path, threads: int) -> str:
    """The seed's source-only model, trained by ``detection.warmup`` when missing."""
    from detection import warmup

    path = warmup_file(work, seed, steps)
    if not path.exists():
        w = warmup(seed, steps, "cpu", threads, [], str(path), "torchvision", EXPERIMENT)
        print(f"warm-up seed {seed}: mAP@0.5 {100 * w['map_50']:.1f}", flush=True)
    return str(path)


def teacher_quality(exp: Any, probe: int) -> dict | None:
    """``detection_teacher_norm.pseudo_box_quality`` of the experiment's teacher on the first
    ``probe`` scenes of the labelled target training split, in batches of 2; None for a
    method without a teacher (SADA alone)."""
    if exp.loop.teacher is None:
        return None
    import torch
    from detection_teacher_norm import pseudo_box_quality
    from hydra.utils import instantiate
    from torch.utils.data import DataLoader, Subset

    labelled = instantiate(exp.cfg.dataset.target, labelled=True)
    batches = DataLoader(Subset(labelled, range(probe)), 2, collate_fn=exp.task.collate)
    with torch.no_grad():
        return pseudo_box_quality(exp.task, exp.loop.teacher, batches, exp.loop.device)


def probe_source(seed: int, warmup_steps: int, work: str, threads: int, probe: int) -> dict:
    """The pseudo-boxes of the teacher at the start of adaptation (the seed's source model),
    on the same scenes as the runs' probe: the row every variant's end is read against."""
    import torch
    from detection import METHODS, _overrides, from_warmup

    torch.set_num_threads(threads)
    start = ensure_warmup(seed, warmup_steps, Path(work), threads)
    overrides = [*_overrides(seed, "cpu", [], EXPERIMENT), *METHODS["sada_mic"]]
    exp = from_warmup("sada_mic", overrides, start)
    exp.loop.teacher.update(exp.student, 0)  # the copy of the student the loop starts with
    return {"variant": "source", "seed": seed, "pseudo_boxes": teacher_quality(exp, probe)}


def run_variant(
    variant: str, seed: int, steps: int, warmup_steps: int, work: str, threads: int, probe: int
) -> dict:
    """One (variant, seed) run with its probe; a row for the cache."""
    import torch
    from common import record_training, run_timed
    from detection import METHODS, adaptation_overrides, from_warmup

    torch.set_num_threads(threads)
    start = ensure_warmup(seed, warmup_steps, Path(work), threads)
    method, extra, flags, _ = VARIANTS[variant]
    overrides = adaptation_overrides(
        method, seed, steps, "cpu", [*TORCHVISION_JITTER, *extra], experiment=EXPERIMENT
    )
    exp = from_warmup(method, overrides, start)
    loop = exp.loop
    if "running_norm" in flags:
        from context_ablation import running_norm

        running_norm(dict(loop.method)["mic"], loop.student)
    train = record_training(loop)
    t0 = time.perf_counter()
    with foreground_only() if "foreground_only" in flags else nullcontext():
        final, seconds = run_timed(exp)
    wall = time.perf_counter() - t0
    quality = teacher_quality(exp, probe)
    return {
        "variant": variant,
        "method": method,
        "seed": seed,
        "overrides": [*METHODS[method], *extra],
        "flags": flags,
        "student": final.get("eval/student/map_50"),
        "student_per_class": final.get("eval/student/ap50_per_class"),
        "teacher": final.get("eval/teacher/map_50"),
        "seconds_per_iteration": seconds,
        "wall_seconds": wall,
        "iterations": steps,
        "warmup": warmup_steps,
        "train": train,
        "pseudo_boxes": quality,
    }


def base_rows(path: Path, seeds: list[int]) -> dict[str, dict]:
    """SADA rows and unweighted SADA + MIC rows (run with ``UNWEIGHTED``) of ``detection.py``'s
    cache ``path`` for ``seeds``, as this file's rows (without the probe, which that run did
    not have)."""
    rows = json.loads(path.read_text())["rows"]
    out = {}
    for r in rows:
        same = r["method"] == "sada" or (r["method"] == "sada_mic" and UNWEIGHTED in r["overrides"])
        if same and r["seed"] in seeds:
            row = {k: r[k] for k in ("method", "seed", "overrides", "student", "teacher")}
            row.update(
                variant=r["method"],
                student_per_class=r["student_per_class"],
                seconds_per_iteration=r["seconds_per_iteration"],
                flags=[],
                source=path.name,
            )
            out[json.dumps([r["method"], r["seed"]])] = row
    return out


# ---------------------------------------------------------------- tables


def _class_ap(r: dict, i: int) -> float | None:
    """The student's AP@0.5 of class ``i`` in run ``r`` (None when not scored)."""
    values = r.get("student_per_class") or []
    return values[i] if i < len(values) else None


def _points(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _mean_of(r: dict, key: str, last: int | None = None) -> float | None:
    logged = [t for t in r.get("train", []) if key in t]
    if last is not None and logged:
        end = max(t["step"] for t in logged)
        logged = [t for t in logged if t["step"] > end - last]
    return statistics.mean(t[key] for t in logged) if logged else None


def write_table(cache: dict, path: Path) -> None:
    runs: dict[str, dict[int, dict]] = {}
    for r in cache["runs"].values():
        runs.setdefault(r["variant"], {})[r["seed"]] = r
    trained = [r for r in cache["runs"].values() if "iterations" in r]
    steps = sorted({r["iterations"] for r in trained}) or [500]
    warm = sorted({r["warmup"] for r in trained}) or [2000]
    lines = [
        "# Why MIC trails SADA on the context shapes: ablation and pseudo-boxes",
        "",
        "Written by `benchmarks/detection_ablation.py` (its docstring gives the protocol). Each "
        "variant is SADA + MIC with one change (`student_combined`: three), "
        f"{' / '.join(map(str, steps))} iterations from the seed's cached source-only model "
        f"({' / '.join(map(str, warm))} iterations), paired by seed with SADA. Points of target "
        "test mAP@0.5 of the student (AdaBN); 95 % interval of the mean paired difference "
        "(Student's t); 'ahead' counts the seeds where the variant beats SADA.",
        "",
        *([cache["note"], ""] if cache.get("note") else []),
        "## Scores",
        "",
        "| variant | change | seeds | student mAP@0.5 | teacher mAP@0.5 | s / iteration |",
        "|---|---|---|---|---|---|",
    ]
    for v, (_, _, _, what) in VARIANTS.items():
        rs = list(runs.get(v, {}).values())
        if rs:
            speed = statistics.mean(r["seconds_per_iteration"] for r in rs)
            lines.append(
                f"| {v} | {what} | {len(rs)} | {mean_std([r['student'] for r in rs])} | "
                f"{mean_std([r['teacher'] for r in rs])} | {speed:.3f} |"
            )
    mics = [v for v in VARIANTS if v in runs and v != "sada"]
    lines += [
        "",
        "## Paired differences, variant − SADA (student mAP@0.5, points)",
        "",
        "| variant − sada | seeds | mean ± std | 95 % interval | ahead | per seed |",
        "|---|---|---|---|---|---|",
    ]
    for v in mics:
        d = paired(runs, v, "sada", lambda r: r["student"])
        if d:
            each = ", ".join(f"{100 * x:+.1f}" for x in d)
            lines.append(
                f"| {v} − sada | {len(d)} | {mean_std(d)} | {interval95(d)} | "
                f"{sum(x > 0 for x in d)} / {len(d)} | {each} |"
            )
    lines += [
        "",
        "Variant − SADA + MIC (the same seeds), student mAP@0.5:",
        "",
        "| variant − sada_mic | seeds | mean ± std | 95 % interval | ahead |",
        "|---|---|---|---|---|",
    ]
    for v in mics:
        if v == "sada_mic":
            continue
        d = paired(runs, v, "sada_mic", lambda r: r["student"])
        if d:
            lines.append(
                f"| {v} − sada_mic | {len(d)} | {mean_std(d)} | {interval95(d)} | "
                f"{sum(x > 0 for x in d)} / {len(d)} |"
            )
    lines += [
        "",
        "### Per class (student AP@0.5, points), variant − SADA",
        "",
        "| variant | " + " | ".join(CLASSES) + " |",
        "|---|" + "---|" * len(CLASSES),
    ]
    for v in mics:
        cells = []
        for i, _ in enumerate(CLASSES):
            d = paired(runs, v, "sada", lambda r, i=i: _class_ap(r, i))
            cells.append(f"{mean_std(d)} ({sum(x > 0 for x in d)}/{len(d)})" if d else "-")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    probed = [v for v in VARIANTS if any(r.get("pseudo_boxes") for r in runs.get(v, {}).values())]
    if probed:
        lines += [
            "",
            "## The masked branch and the teacher's pseudo-boxes",
            "",
            "Training statistics: means over the run's logged iterations (every 10th), MIC's "
            "loss also over its last 100 iterations. Pseudo-boxes: the teacher's at the end, "
            "on the first scenes of the labelled target training split (points; boxes per "
            "image); `source`: the teacher at the start (the source model), on the same scenes.",
            "",
            "| variant | seeds | MIC loss | MIC loss, last 100 | pseudo-boxes / image (train) "
            "| images with one | mean score | precision | precision, any class | recall "
            "| boxes / image (probe) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for v in ["source", *probed] if "source" in runs else probed:
            rs = [r for r in runs[v].values() if r.get("pseudo_boxes")]

            def avg(values: list[float | None], scale: float = 1.0, digits: int = 3) -> str:
                vals = [x for x in values if x is not None]
                return f"{scale * statistics.mean(vals):.{digits}f}" if vals else "-"

            q = [r["pseudo_boxes"] for r in rs]
            lines.append(
                f"| {v} | {len(rs)} | {avg([_mean_of(r, 'mic') for r in rs])} | "
                f"{avg([_mean_of(r, 'mic', 100) for r in rs])} | "
                f"{avg([_mean_of(r, 'mic/boxes') for r in rs], digits=2)} | "
                f"{avg([_mean_of(r, 'mic/images') for r in rs], 100, 1)} | "
                f"{avg([_mean_of(r, 'mic/score') for r in rs])} | "
                f"{mean_std([x['precision'] for x in q])} | "
                f"{mean_std([x['precision_any_class'] for x in q])} | "
                f"{mean_std([x['recall'] for x in q])} | "
                f"{avg([x['boxes_per_image'] for x in q], digits=2)} |"
            )
    lines += ["", "## Commands", "", *[f"- {c}" for c in cache.get("commands", [])]]
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
    path.with_suffix(".json").write_text(json.dumps(cache, separators=(",", ":")) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--variants", nargs="+", default=["sada", "sada_mic"], choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[2, 3, 4])
    p.add_argument("--warmup", type=int, default=2000, help="source-only iterations")
    p.add_argument("--iterations", type=int, default=500)
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    p.add_argument("--threads", type=int, default=1, help="threads per run")
    p.add_argument("--work", type=Path, default=Path("/tmp/mic_det_bench"))
    p.add_argument("--probe-images", type=int, default=200)
    p.add_argument(
        "--base-from",
        type=Path,
        default=None,
        help="detection.py's cache whose SADA / SADA + MIC rows of these seeds stand in",
    )
    p.add_argument("--table-only", action="store_true")
    p.add_argument("--note", default=None, help="the reading (or @file); replaces the last one")
    p.add_argument("--out", type=Path, default=RESULTS / "detection_ablation.md")
    args = p.parse_args()
    check_options(p, args)
    cache_file = args.out.with_suffix(".json")
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {"runs": {}}
    cache.setdefault("commands", [])
    if args.note is not None:
        cache["note"] = note_text(args.note)
    if args.base_from is not None:
        for key, row in base_rows(args.base_from, args.seeds).items():
            cache["runs"].setdefault(key, row)
    todo = [
        (v, s)
        for v in args.variants
        for s in args.seeds
        if json.dumps([v, s]) not in cache["runs"] and not args.table_only
    ]
    t_start = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max(1, args.jobs), mp_context=get_context("spawn")) as pool:
        # the missing source models first, one process each: runs and probes of a seed load it
        needed = {s for _, s in todo} | {
            s for s in args.seeds if json.dumps(["source", s]) not in cache["runs"]
        }
        missing = [
            s
            for s in sorted(needed)
            if not args.table_only and not warmup_file(args.work, s, args.warmup).exists()
        ]
        for f in [
            pool.submit(ensure_warmup, s, args.warmup, args.work, args.threads) for s in missing
        ]:
            f.result()
        sources = [
            pool.submit(
                probe_source, s, args.warmup, str(args.work), args.threads, args.probe_images
            )
            for s in args.seeds
            if json.dumps(["source", s]) not in cache["runs"] and not args.table_only
        ]
        futures = [
            pool.submit(
                run_variant,
                v,
                s,
                args.iterations,
                args.warmup,
                str(args.work),
                args.threads,
                args.probe_images,
            )
            for v, s in todo
        ]
        failed = []
        for f in sources:
            r = f.result()
            cache["runs"][json.dumps(["source", r["seed"]])] = r
        for (variant, seed), f in zip(todo, futures, strict=True):
            try:
                r = f.result()
            except Exception as e:  # the other runs' results are kept
                failed.append(f"{variant} seed {seed}: {type(e).__name__}: {e}")
                print(f"FAILED {failed[-1]}", flush=True)
                continue
            cache["runs"][json.dumps([r["variant"], r["seed"]])] = r
            write_table(cache, args.out)
            quality = r["pseudo_boxes"] or {}
            print(
                f"{r['variant']} seed {r['seed']}: student mAP@0.5 {_points(r['student'])}, "
                f"pseudo-box precision {_points(quality.get('precision'))} "
                f"({r['wall_seconds']:.0f} s)",
                flush=True,
            )
    if todo or sources:
        command = (
            f"OMP_NUM_THREADS=1 python benchmarks/detection_ablation.py {shlex.join(sys.argv[1:])}"
        )
        cache["commands"].append(
            f"`{command}`: {len(todo)} runs, {len(sources)} source probes, "
            f"{(time.perf_counter() - t_start) / 60:.1f} min wall "
            f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})"
        )
    write_table(cache, args.out)
    print(args.out.read_text())
    if not args.table_only and failed:
        sys.exit("runs that failed (not cached):\n" + "\n".join(failed))


if __name__ == "__main__":
    main()
