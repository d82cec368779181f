"""MIC against DACS on the context street scenes, one change of DACS + MIC at a time, paired
by seed with DACS, from cached source-only models, with pseudo-label diagnostics: why MIC
trails DACS with the BatchNorm U-Net (``model.norm=batch``, the experiment's model before
LayerNorm became its default) and how it fares with LayerNorm (``ln_*``, the default).

    OMP_NUM_THREADS=1 python benchmarks/context_ablation.py --variants dacs dacs_mic
    OMP_NUM_THREADS=1 python benchmarks/context_ablation.py --variants no_aug lambda05
    OMP_NUM_THREADS=1 python benchmarks/context_ablation.py --variants dacs_1000 dacs_mic_1000 \
        --seeds 0 1 2
    OMP_NUM_THREADS=1 python benchmarks/context_ablation.py --variants ln_dacs ln_dacs_mic \
        --seeds 0 1 2
    python benchmarks/context_ablation.py --table-only       # the tables again, no training

Every run is ``segmentation.run_one`` of ``experiment=streets_context`` (300 iterations unless
the variant says otherwise) with the variant's ``model.norm`` (``model_of``), from the seed's
source-only model of the suite's recipe (``python -m benchmarks --full --tasks context``: 2000
iterations with rare class sampling, ``suite.CONTEXT_SOURCE_STAGE``), kept in ``--work`` as
``context_warmup_seed<N>_<hash>.pt`` (the ``ln_*`` variants share the suite's own) and trained
here when missing. Score: target test mIoU of the EMA teacher after AdaBN. Every variant runs
torchvision's colour operations (``augmentation_jitter=torchvision``, mic's default before 0.2,
with which context_ablation.md was made) unless it sets the published ones itself (``*_pub``).

While it trains, a probe (``PseudoLabelProbe``) records

- the losses and the terms' statistics (``mix/q``, ``mic/q``: the quality weight, the share of
  target pixels whose teacher confidence is >= tau; ``*/confidence``) every 10 iterations;
- at iterations 1 (the source model), the middle and the end: the teacher's pseudo-labels of
  the first ``--probe-images`` target *training* scenes (predicted as in training: batches of
  8, batch statistics) against their true labels (``ContextStreets(labelled=True)``, which
  the adaptation never sees): the confusion matrix, over all pixels and over the confident
  ones; and the student's prediction on block-masked copies of the same scenes (the masker of
  MIC's settings, no augmentation, a fixed generator; batch statistics as MIC's forward has
  them), on the kept and on the withheld pixels.

Results are cached per (variant, seed) in context_ablation.json; the markdown beside it is
rewritten from the cache after every run.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

from common import (
    TORCHVISION_JITTER,
    check_options,
    interval95,
    mean_std,
    note_text,
    paired,
    record_training,
)
from segmentation import run_one

RESULTS = Path(__file__).parent / "results"
MIC = "method.terms.mic"
MIX = "method.terms.mix"
#: variant -> (method of segmentation.METHODS, extra overrides, flags, what it tests)
VARIANTS: dict[str, tuple[str, list[str], list[str], str]] = {
    "dacs": ("dacs", [], [], "the base"),
    "dacs_mic": ("dacs_mic", [], [], "MIC at the experiment's settings"),
    "no_aug": (
        "dacs_mic",
        [f"{MIC}.masker.augmentation=null"],
        [],
        "no colour jitter / blur on the masked images",
    ),
    "ratio05": ("dacs_mic", [f"{MIC}.masker.ratio=0.5"], [], "mask ratio 0.5 (published 0.7)"),
    "block8": ("dacs_mic", [f"{MIC}.masker.block_size=8"], [], "8 px blocks (1/8 of the side)"),
    "lambda05": ("dacs_mic", [f"{MIC}.weight=0.5"], [], "lambda 0.5 (published 1)"),
    "running_norm": (
        "dacs_mic",
        [],
        ["running_norm"],
        "the masked forward normalised with the student's running BatchNorm statistics "
        "(eval mode) instead of the masked batch's own",
    ),
    "source_target": (
        "dacs_mic",
        [f"{MIC}.images=source+target", f"{MIC}.masker.augmentation=null"],
        [],
        "the published Cityscapes -> ACDC mode: one masked source image with its labels and "
        "one target image, no augmentation",
    ),
    "dacs_1000": ("dacs", ["iterations=1000"], [], "the base, 1000 iterations"),
    "dacs_mic_1000": ("dacs_mic", ["iterations=1000"], [], "MIC, 1000 iterations"),
    "ln_dacs": (
        "dacs",
        [],
        [],
        "the base with LayerNorm in the U-Net (its own source stage, same recipe)",
    ),
    "ln_dacs_mic": ("dacs_mic", [], [], "MIC with LayerNorm in the U-Net"),
    "ln_dacs_pub": (
        "dacs",
        [f"{MIX}.augmentation.jitter=published"],
        [],
        "the LayerNorm base, ClassMix's colour jitter with the published operations",
    ),
    "ln_dacs_mic_pub": (
        "dacs_mic",
        [f"{MIX}.augmentation.jitter=published", f"{MIC}.masker.augmentation.jitter=published"],
        [],
        "MIC with LayerNorm, ClassMix's and MIC's colour jitter with the published operations",
    ),
}
CLASSES = ["road", "sidewalk", "building", "vegetation", "sky", "car", "person", "pole"]


def base_of(variant: str) -> str:
    """The DACS run of ``variant``'s schedule and model."""
    if variant.startswith("ln_"):
        return "ln_dacs_pub" if variant.endswith("_pub") else "ln_dacs"
    return "dacs_1000" if variant.endswith("_1000") else "dacs"


def model_of(variant: str) -> list[str]:
    """The model override of ``variant``: the U-Net with LayerNorm (``ln_*``, the suite's
    ``CONTEXT_MODEL``) or with BatchNorm (the others)."""
    return ["model.norm=layer" if variant.startswith("ln_") else "model.norm=batch"]


def source_model(variant: str, seed: int, work: Path) -> Path:
    """The source-only model ``variant`` starts from: the suite's source stage of the context
    scenes (``suite.warmup_path``, the same file as the suite's for the ``ln_*`` variants)
    with the variant's model (``model_of``), trained here by the suite's ``warm_up`` (the same
    recipe) when missing."""
    import suite

    stage = suite.schedules("full")["context"]
    kept = [o for o in stage["overrides"] if not o.startswith("model.")]
    settings = {**stage, "overrides": [*kept, *model_of(variant)]}
    start = suite.warmup_path(work, "context", seed, settings)
    if not start.exists():
        row = suite.warm_up("context", seed, settings, "cpu", 1, str(start))
        print(f"source stage {model_of(variant)[0]} seed {seed}: mIoU {100 * row['miou']:.1f}")
    return start


def running_norm(term: Any, student: Any) -> None:
    """Make ``term``'s forward run the student's BatchNorm layers in eval mode (running
    statistics, not updated), the rest of the student as it is."""
    from torch.nn.modules.batchnorm import _BatchNorm

    forward = term.forward
    norms = [m for m in student.modules() if isinstance(m, _BatchNorm)]

    def wrapped(ctx: Any) -> Any:
        modes = [m.training for m in norms]
        for m in norms:
            m.eval()
        try:
            return forward(ctx)
        finally:
            for m, mode in zip(norms, modes):
                m.train(mode)

    term.forward = wrapped


class PseudoLabelProbe:
    """Records the training statistics and the pseudo-label / masked-view diagnostics of one
    run (see the module docstring); ``attach`` is ``run_one``'s ``probe``."""

    def __init__(self, count: int, flags: list[str]) -> None:
        self.count = count
        self.flags = flags

    def attach(self, exp: Any) -> Any:
        import torch
        from hydra.utils import instantiate

        from mic.core.loop import Hook

        data = instantiate(exp.cfg.dataset.target, labelled=True, flip=False)
        pairs = [data[i] for i in range(self.count)]
        images = torch.stack([x for x, _ in pairs])
        labels = torch.stack([y for _, y in pairs])
        loop, task = exp.loop, exp.task
        terms = dict(loop.method)
        mic = terms.get("mic")
        if "running_norm" in self.flags:
            running_norm(mic, loop.student)
        masker = mic.masker if mic is not None else None
        if masker is None:  # DACS: the masker of the experiment's MIC settings, for the probe
            from mic import BlockMasker

            masker = BlockMasker(int(exp.cfg.dataset.mic_block_size), 0.7)
        tau = float(exp.cfg.pseudo_label_threshold)
        steps = {1, loop.iterations // 2, loop.iterations}
        probes: dict[str, dict] = {}

        class Prober(Hook):
            def after_step(self, loop: Any, losses: Any) -> None:
                if loop.step in steps:
                    probes[str(loop.step)] = measure(loop, task, images, labels, masker, tau)

        loop.hooks.insert(0, Prober())
        train = record_training(loop)  # first, as the probe's hook was before it
        return lambda: {"train": train, "probes": probes, "flags": self.flags}


def confusion(truth: Any, pred: Any, n: int) -> Any:
    import torch

    return torch.bincount(truth.reshape(-1) * n + pred.reshape(-1), minlength=n * n).reshape(n, n)


def measure(loop: Any, task: Any, images: Any, labels: Any, masker: Any, tau: float) -> dict:
    """The confusion matrices (rows: true class, columns: predicted) of the teacher's
    pseudo-labels (all pixels, confident pixels) and of the student on masked images (kept,
    withheld pixels), on copies of the models (the run's buffers stay as they are)."""
    import torch

    n = task.num_classes
    teacher = copy.deepcopy(loop.teacher)
    student = copy.deepcopy(loop.student).train()
    gen = torch.Generator().manual_seed(0)
    out = {k: torch.zeros(n, n, dtype=torch.long) for k in ("all", "confident", "kept", "withheld")}
    with torch.no_grad():
        for i in range(0, len(images), 8):
            x, y = images[i : i + 8].to(loop.device), labels[i : i + 8].to(loop.device)
            pseudo = task.pseudo_label(teacher.predict(task, x))
            out["all"] += confusion(y, pseudo.labels, n).cpu()
            sure = pseudo.confidence >= tau
            out["confident"] += confusion(y[sure], pseudo.labels[sure], n).cpu()
            keep = masker.mask(x, gen)
            masked = x * keep + masker.fill.to(x) * (1 - keep)
            pred = student(masked).argmax(1)
            kept = keep[:, 0] > 0
            out["kept"] += confusion(y[kept], pred[kept], n).cpu()
            out["withheld"] += confusion(y[~kept], pred[~kept], n).cpu()
    return {k: v.tolist() for k, v in out.items()}


# ---------------------------------------------------------------- tables


def recall(matrix: list[list[int]]) -> list[float]:
    return [row[i] / max(1, sum(row)) for i, row in enumerate(matrix)]


def pixel_accuracy(matrix: list[list[int]]) -> float:
    return sum(matrix[i][i] for i in range(len(matrix))) / max(1, sum(map(sum, matrix)))


def share(part: list[list[int]], whole: list[list[int]]) -> float:
    return sum(map(sum, part)) / max(1, sum(map(sum, whole)))


def _header(*first: str) -> list[str]:
    """A table header: the ``first`` columns, then one per class."""
    cols = [*first, *CLASSES]
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]


def _row(label: str, d: list[float]) -> str:
    if not d:
        return f"| {label} | 0 | - | - | - |"
    wins = sum(x > 0 for x in d)
    return f"| {label} | {len(d)} | {mean_std(d)} | {interval95(d)} | {wins} / {len(d)} |"


def _mean(values: list[float]) -> float:
    return statistics.mean(values) if values else math.nan


def write_table(cache: dict, path: Path, commands: list[str]) -> None:
    runs: dict[str, dict[int, dict]] = {}
    for r in cache["runs"].values():
        runs.setdefault(r["variant"], {})[r["seed"]] = r
    lines = [
        "# Why MIC trailed DACS on the context street scenes with the BatchNorm U-Net: ablation, "
        "pseudo-labels, and LayerNorm",
        "",
        "Written by `benchmarks/context_ablation.py` (its docstring gives the protocol). Each "
        "variant is DACS + MIC with one change, from the seed's cached source-only model "
        "(2000 iterations with rare class sampling), paired by seed with DACS of the same "
        "schedule. Points of target test mIoU / IoU of the EMA teacher (AdaBN); 95 % "
        "interval of the mean paired difference (Student's t); 'ahead' counts the seeds "
        "where the variant beats DACS.",
        "",
        *([cache["note"], ""] if cache.get("note") else []),
        "## Scores",
        "",
        "| variant | change | seeds | teacher mIoU | min / run (wall) |",
        "|---|---|---|---|---|",
    ]
    for v, (_, _, _, what) in VARIANTS.items():
        rs = list(runs.get(v, {}).values())
        if rs:
            wall = _mean([r["wall_seconds"] / 60 for r in rs])
            lines.append(
                f"| {v} | {what} | {len(rs)} | {mean_std([r['teacher_miou'] for r in rs])} | "
                f"{wall:.1f} |"
            )
    lines += [
        "",
        "## Paired differences, variant − DACS (teacher mIoU, points)",
        "",
        "| variant − base | seeds | mean ± std | 95 % interval | ahead |",
        "|---|---|---|---|---|",
    ]
    mics = [v for v in VARIANTS if v in runs and VARIANTS[v][0] == "dacs_mic"]
    for v in mics:
        d = paired(runs, v, base_of(v), lambda r: r["teacher_miou"])
        lines.append(_row(f"{v} − {base_of(v)}", d))
    lines += [
        "",
        "### Per class (teacher IoU, points), variant − DACS",
        "",
        *_header("variant"),
    ]
    for v in mics:
        cells = []
        for c in CLASSES:
            d = paired(runs, v, base_of(v), lambda r, c=c: r["teacher_iou"][c])
            cells.append(f"{mean_std(d)} ({sum(x > 0 for x in d)}/{len(d)})" if d else "-")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += ["", "95 % intervals of the per-class differences:", ""]
    lines += _header("variant")
    for v in mics:
        cells = [
            interval95(paired(runs, v, base_of(v), lambda r, c=c: r["teacher_iou"][c]))
            for c in CLASSES
        ]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += _diagnostics(runs)
    lines += ["", "## Commands", "", *[f"- `{c}`" for c in commands]]
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
    path.with_suffix(".json").write_text(json.dumps(cache, separators=(",", ":")) + "\n")


def _probe_at(r: dict, which: str) -> dict | None:
    probes = r.get("probes") or {}
    if not probes:
        return None
    key = {"start": min(probes, key=int), "end": max(probes, key=int)}[which]
    return probes[key]


def _by_stage(runs: dict[str, dict[int, dict]], cells: Any) -> list[str]:
    """Rows ``| variant | when | cells... |``: the ``cells`` of a probe (fractions), in points,
    averaged over seeds, at the start (the source model, once) and the end of every variant."""
    rows = []
    for v, by in runs.items():
        for when in ("start", "end"):
            ps = [p for r in by.values() if (p := _probe_at(r, when))]
            if not ps or (when == "start" and v != "dacs"):
                continue
            values = [cells(p) for p in ps]
            means = [_mean([100 * x[i] for x in values]) for i in range(len(values[0]))]
            label = "source model" if when == "start" else v
            rows.append(f"| {label} | {when} | " + " | ".join(f"{x:.1f}" for x in means) + " |")
    return rows


def _diagnostics(runs: dict[str, dict[int, dict]]) -> list[str]:
    lines = [
        "",
        "## Pseudo-labels of the target training scenes (teacher, as in training)",
        "",
        "Per-class recall (share of the class's pixels that get the right pseudo-label), "
        "pixel accuracy, the share of confident pixels (confidence >= tau, what q is) and "
        "the accuracy of the confident ones; mean over seeds, points. 'start': iteration 1 "
        "(the source model, the same for every variant), 'end': the last iteration.",
        "",
        *_header("variant", "when", "pixel acc.", "confident share", "confident acc."),
    ]
    lines += _by_stage(
        runs,
        lambda p: [
            pixel_accuracy(p["all"]),
            share(p["confident"], p["all"]),
            pixel_accuracy(p["confident"]),
            *recall(p["all"]),
        ],
    )
    lines += [
        "",
        "Paired (same seed) end-of-run pseudo-label recall, variant − DACS, points:",
        "",
        *_header("variant", "pixel acc.", "confident share"),
    ]
    for v in runs:
        if VARIANTS[v][0] != "dacs_mic":
            continue
        b = base_of(v)

        def end(r: dict, f: Any) -> float:
            p = _probe_at(r, "end")
            return f(p) if p else math.nan

        cells = [
            mean_std(paired(runs, v, b, lambda r: end(r, lambda p: pixel_accuracy(p["all"])))),
            mean_std(
                paired(runs, v, b, lambda r: end(r, lambda p: share(p["confident"], p["all"])))
            ),
        ]
        for i in range(len(CLASSES)):
            d = paired(runs, v, b, lambda r, i=i: end(r, lambda p: recall(p["all"])[i]))
            cells.append(mean_std(d))
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "What the lost classes' pixels are pseudo-labelled as at the end (share of the "
        "class's pixels, points, mean over seeds):",
        "",
        *_header("variant", "true class"),
    ]
    for v in ("dacs", "dacs_mic"):
        ps = [p for r in runs.get(v, {}).values() if (p := _probe_at(r, "end"))]
        for c in ("building", "vegetation", "sky", "person"):
            i = CLASSES.index(c)
            row = [
                _mean([100 * p["all"][i][j] / max(1, sum(p["all"][i])) for p in ps])
                for j in range(len(CLASSES))
            ]
            if ps:
                lines.append(f"| {v} | {c} | " + " | ".join(f"{x:.1f}" for x in row) + " |")
    lines += [
        "",
        "## The student on block-masked target scenes (MIC's view)",
        "",
        "Recall per class on the withheld pixels (what MIC trains: predicting a pixel from "
        "its surroundings) and pixel accuracy on the kept and withheld pixels; masks of the "
        "experiment's MIC settings (4 px blocks, ratio 0.7), no augmentation; points.",
        "",
        *_header("variant", "when", "kept acc.", "withheld acc."),
    ]
    lines += _by_stage(
        runs,
        lambda p: [
            pixel_accuracy(p["kept"]),
            pixel_accuracy(p["withheld"]),
            *recall(p["withheld"]),
        ],
    )
    lines += [
        "",
        "## Training statistics (mean over seeds of the mean over the run's logged iterations)",
        "",
        "| variant | loss/source | loss/mix | loss/mic | mix/q | mic/q | mic/q last 50 it. |",
        "|---|---|---|---|---|---|---|",
    ]
    for v, by in runs.items():

        def stat(key: str, last: int = 0, by: dict = by) -> str:
            vals = []
            for r in by.values():
                rows = [t[key] for t in r.get("train", []) if key in t]
                if last:
                    rows = [
                        t[key]
                        for t in r.get("train", [])
                        if key in t and t["step"] > r["iterations"] - last
                    ]
                if rows:
                    vals.append(statistics.mean(rows))
            return f"{statistics.mean(vals):.3f}" if vals else "-"

        lines.append(
            f"| {v} | {stat('source')} | {stat('mix')} | {stat('mic')} | {stat('mix/q')} | "
            f"{stat('mic/q')} | {stat('mic/q', 50)} |"
        )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--variants", nargs="+", default=["dacs", "dacs_mic"], choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--work", type=Path, default=Path("/tmp/mic_suite"))
    p.add_argument("--probe-images", type=int, default=256)
    p.add_argument("--table-only", action="store_true")
    p.add_argument("--note", default=None, help="the reading (or @file); replaces the last one")
    p.add_argument("--out", type=Path, default=RESULTS / "context_ablation.md")
    args = p.parse_args()
    check_options(p, args)
    cache_file = args.out.with_suffix(".json")
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {"runs": {}}
    cache.setdefault("commands", [])
    if args.note is not None:
        cache["note"] = note_text(args.note)
    t_start, done = time.perf_counter(), 0
    if not args.table_only:
        for variant in args.variants:
            method, extra, flags, _ = VARIANTS[variant]
            for seed in args.seeds:
                key = json.dumps([variant, seed])
                if key in cache["runs"]:
                    continue
                start = source_model(variant, seed, args.work)
                probe = PseudoLabelProbe(args.probe_images, flags)
                t0 = time.perf_counter()
                overrides = [*model_of(variant), *TORCHVISION_JITTER, *extra]
                r = run_one(
                    method, seed, "cpu", 1, overrides, "streets_context", str(start), probe.attach
                )
                r.update(variant=variant, wall_seconds=time.perf_counter() - t0)
                cache["runs"][key] = r
                done += 1
                write_table(cache, args.out, cache["commands"])
                print(
                    f"{variant} seed {seed}: teacher mIoU {100 * r['teacher_miou']:.1f} "
                    f"({r['wall_seconds']:.0f} s)",
                    flush=True,
                )
    if done:
        cache["commands"].append(
            f"OMP_NUM_THREADS=1 python benchmarks/context_ablation.py --variants "
            f"{' '.join(args.variants)} --seeds {' '.join(map(str, args.seeds))}: {done} runs, "
            f"{(time.perf_counter() - t_start) / 60:.1f} min wall, one at a time, 1 thread "
            f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})"
        )
    write_table(cache, args.out, cache["commands"])
    print(args.out.read_text())


if __name__ == "__main__":
    main()
