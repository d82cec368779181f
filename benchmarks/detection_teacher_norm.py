"""How the detection teacher should normalise: the precision and recall of its pseudo-boxes
under each BatchNorm choice, on the labelled target training split, over seeds.

    python benchmarks/detection_teacher_norm.py                     # det_shapes and det_context
    python benchmarks/detection_teacher_norm.py --experiments det_context --seeds 0 1

From each seed's source-only warm-up model (``detection.py``'s ``warmup``: ``--warmup``
iterations of ``mic-train experiment=<benchmark> method=source_only``, cached in ``--work``),
the EMA teacher at the start of adaptation (a copy of that model, as ``EMATeacher.update``
makes at step 0) labels every image of the benchmark's target training split (1000 foggy
scenes, their labels read for scoring alone) in batches of 2 (the training batch), in a
seeded random order, under each normalisation choice:

- ``batch``: BatchNorm on the statistics of the 2-image target batch being labelled
  (``teacher.norm=batch``, mic's default: the published teachers predict in train mode);
- ``running``: the model's running statistics, here those of source training
  (``teacher.norm=running``);
- ``adabn``: running statistics re-estimated on ``--adabn-batches`` target training batches
  of 2 (AdaBN, ``mic.recalibrated_batchnorm``, as mic's evaluation does), then eval mode.

Pseudo-boxes are the boxes with score >= 0.8 (``task.score_threshold``, published). Each is
matched greedily, highest score first, to the unmatched ground-truth box of its class with the
highest IoU >= 0.5 (COCO's rule). Precision: matched pseudo-boxes / pseudo-boxes; recall:
matched ground-truth boxes / ground-truth boxes, both pooled over the split; the class-agnostic
precision (matched regardless of class) separates finding an object from naming it. Figures:
mean ± std over seeds (points), per benchmark; results cached per (benchmark, seed) in the
JSON file beside the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import check_options, interval95, mean_std, start_from

from mic.training.checkpoint import write_text_atomically

MODES = ("batch", "running", "adabn")


def match(
    boxes: list, labels: list, scores: list, gt_boxes: list, gt_labels: list, class_aware: bool
) -> int:
    """Pseudo-boxes matched to ground truth at IoU >= 0.5 (greedy, highest score first, each
    ground-truth box once; with ``class_aware`` only within a class). Tensors of one image:
    boxes N x 4 and M x 4 (x1 y1 x2 y2), labels and scores N, ground-truth labels M."""
    import torch
    from torchvision.ops import box_iou

    if len(boxes) == 0 or len(gt_boxes) == 0:
        return 0
    iou = box_iou(boxes, gt_boxes)
    if class_aware:
        iou = torch.where(labels[:, None] == gt_labels[None, :], iou, torch.zeros_like(iou))
    taken = torch.zeros(len(gt_boxes), dtype=torch.bool)
    matched = 0
    for i in scores.argsort(descending=True).tolist():
        candidates = torch.where(taken, torch.zeros_like(iou[i]), iou[i])
        best = int(candidates.argmax())
        if candidates[best] >= 0.5:
            taken[best] = True
            matched += 1
    return matched


def pseudo_box_quality(task, teacher, batches, device) -> dict:
    """Pooled counts and rates of the teacher's pseudo-boxes over ``batches`` of (images,
    targets)."""
    from mic.training.evaluation import move_to

    counts = dict.fromkeys(("pseudo", "gt", "matched", "matched_any", "images"), 0)
    for images, targets in batches:
        pseudo = task.pseudo_label(teacher.predict(task, move_to(images, device)))
        for p, scores, t in zip(pseudo.labels, pseudo.confidence, targets, strict=True):
            boxes, labels, scores = p["boxes"].cpu(), p["labels"].cpu(), scores.cpu()
            counts["pseudo"] += len(boxes)
            counts["gt"] += len(t["boxes"])
            counts["images"] += 1
            for key, aware in (("matched", True), ("matched_any", False)):
                counts[key] += match(boxes, labels, scores, t["boxes"], t["labels"], aware)
    pseudo = max(counts["pseudo"], 1)
    return {
        **counts,
        "precision": counts["matched"] / pseudo,
        "recall": counts["matched"] / max(counts["gt"], 1),
        "precision_any_class": counts["matched_any"] / pseudo,
        "boxes_per_image": counts["pseudo"] / max(counts["images"], 1),
    }


def measure(
    experiment: str, seed: int, start: str, adabn_batches: int, threads: int, extra: list[str]
) -> dict:
    """Every normalisation choice's pseudo-box quality for one benchmark and seed (``extra``:
    mic-train overrides)."""
    import torch
    from hydra.utils import instantiate
    from torch.utils.data import DataLoader

    from mic import EMATeacher, recalibrated_batchnorm

    torch.set_num_threads(threads)
    overrides = [
        f"experiment={experiment}",
        f"seed={seed}",
        "device=cpu",
        "log.progress=false",
        "log.tensorboard=false",
        "method=source_only",
        "mic=none",
        *extra,
    ]
    exp = start_from(overrides, start)
    cfg, task, device = exp.cfg, exp.task, exp.loop.device
    labelled = instantiate(cfg.dataset.target, labelled=True)
    unlabelled = instantiate(cfg.dataset.target)

    def loader(data, offset: int) -> DataLoader:
        order = torch.Generator().manual_seed(1000 * seed + offset)
        return DataLoader(
            data, 2, shuffle=True, drop_last=True, collate_fn=task.collate, generator=order
        )

    out = {"experiment": experiment, "seed": seed, "adabn_batches": adabn_batches}
    for mode in MODES:
        t0 = time.time()
        teacher = EMATeacher(
            exp.student,
            alpha=float(cfg.teacher.alpha),
            norm="batch" if mode == "batch" else "running",
        ).to(device)
        if mode == "adabn":
            with recalibrated_batchnorm(teacher.model, loader(unlabelled, 1), adabn_batches):
                teacher.model.eval()
                out[mode] = pseudo_box_quality(task, teacher, loader(labelled, 0), device)
        else:
            out[mode] = pseudo_box_quality(task, teacher, loader(labelled, 0), device)
        out[mode]["seconds"] = time.time() - t0
        q = out[mode]
        print(
            f"{experiment} seed {seed} {mode:<8} precision {100 * q['precision']:.1f} recall "
            f"{100 * q['recall']:.1f} ({q['boxes_per_image']:.2f} boxes / image, "
            f"{q['seconds']:.0f} s)",
            flush=True,
        )
    return out


def write_table(state: dict, path: Path) -> None:
    lines = [
        "# Detection: the teacher's normalisation, judged by its pseudo-boxes",
        "",
        "Written by `benchmarks/detection_teacher_norm.py` (its docstring gives the protocol).",
        "Pseudo-boxes (score >= 0.8) of the EMA teacher at the start of adaptation (a copy of "
        "the source-only warm-up model) on the labelled target training split (1000 images, "
        "batches of 2), matched at IoU >= 0.5 to ground truth of their class; points, mean ± "
        "std over seeds.",
        "",
        "Commands (wall time):",
        "",
        *[f"- {c}" for c in state.get("calls", [])],
        "",
    ]
    warm = state.get("warmup", {})
    if warm:
        lines += [
            "The warm-up models (source only), mAP@0.5 on each benchmark's target and source "
            "test splits (AdaBN, 10 batches):",
            "",
            "| benchmark | seeds | warm-up iterations | target test mAP@0.5 "
            "| source test mAP@0.5 |",
            "|---|---|---|---|---|",
        ]
        for experiment in sorted({w["experiment"] for w in warm.values()}):
            ws = [w for w in warm.values() if w["experiment"] == experiment]
            lines.append(
                f"| {experiment} | {len(ws)} | {ws[0]['steps']} "
                f"| {mean_std([w['map_50'] for w in ws])} "
                f"| {mean_std([w['source_map_50'] for w in ws])} |"
            )
        lines.append("")
    lines += [
        "| benchmark | normalisation | seeds | precision | recall | precision, any class "
        "| pseudo-boxes / image |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = list(state["rows"].values())
    for experiment in sorted({r["experiment"] for r in rows}):
        runs = [r for r in rows if r["experiment"] == experiment]
        for mode in MODES:
            q = [r[mode] for r in runs]
            name = f"adabn ({runs[0]['adabn_batches']} batches)" if mode == "adabn" else mode
            lines.append(
                f"| {experiment} | {name} | {len(q)} | {mean_std([x['precision'] for x in q])} "
                f"| {mean_std([x['recall'] for x in q])} "
                f"| {mean_std([x['precision_any_class'] for x in q])} "
                f"| {mean_std([x['boxes_per_image'] for x in q], 2, 1.0)} |"
            )
    lines += [
        "",
        "Paired differences against `batch` (same seed, same model and images), points, mean ± "
        "std and the 95 % interval of the mean:",
        "",
        "| benchmark | normalisation | precision | 95 % | recall | 95 % |",
        "|---|---|---|---|---|---|",
    ]
    for experiment in sorted({r["experiment"] for r in rows}):
        runs = [r for r in rows if r["experiment"] == experiment]
        for mode in MODES[1:]:
            dp = [r[mode]["precision"] - r["batch"]["precision"] for r in runs]
            dr = [r[mode]["recall"] - r["batch"]["recall"] for r in runs]
            lines.append(
                f"| {experiment} | {mode} - batch | {mean_std(dp)} | {interval95(dp)} "
                f"| {mean_std(dr)} | {interval95(dr)} |"
            )
    if state.get("note"):
        lines += ["", state["note"]]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiments", nargs="+", default=["det_shapes", "det_context"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--warmup", type=int, default=2000, help="source-only iterations")
    parser.add_argument("--adabn-batches", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "mic_det_bench"))
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "detection_teacher_norm.md")
    )
    parser.add_argument("--warmup-only", action="store_true", help="train the warm-ups alone")
    parser.add_argument("--note", default="", help="a paragraph for the results file")
    parser.add_argument("overrides", nargs="*", help="extra mic-train overrides for every run")
    args = parser.parse_args()
    check_options(parser, args)

    from detection import warmup

    out, work = Path(args.out), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cache = out.with_suffix(".json")
    state = json.loads(cache.read_text()) if cache.exists() else {}
    state.setdefault("rows", {})
    state.setdefault("warmup", {})
    state.setdefault("calls", [])
    t0 = time.time()
    tag = "_".join(args.overrides).replace("/", "-").replace("=", "-")
    for experiment in args.experiments:
        for seed in args.seeds:
            start = work / f"warmup_{experiment}_w{args.warmup}_seed{seed}{tag}.pt"
            key = f"{experiment}/{seed}"
            if not start.exists():
                w = warmup(
                    seed,
                    args.warmup,
                    "cpu",
                    args.threads,
                    args.overrides,
                    str(start),
                    "torchvision",
                    experiment,
                )
                state["warmup"][key] = {**w, "experiment": experiment, "steps": args.warmup}
                print(
                    f"warm-up {experiment} seed {seed}: target mAP@0.5 {100 * w['map_50']:.1f} "
                    f"source {100 * w['source_map_50']:.1f} ({time.time() - t0:.0f} s)",
                    flush=True,
                )
                write_text_atomically(cache, json.dumps(state, indent=1))
            if args.warmup_only:
                continue
            state["rows"][key] = measure(
                experiment, seed, str(start), args.adabn_batches, args.threads, args.overrides
            )
            write_text_atomically(cache, json.dumps(state, indent=1))
    command = "python benchmarks/detection_teacher_norm.py " + " ".join(sys.argv[1:])
    state["calls"].append(f"`{command.strip()}` ({(time.time() - t0) / 60:.0f} min)")
    if args.note:
        state["note"] = args.note
    write_text_atomically(cache, json.dumps(state, indent=1))
    if state["rows"]:
        write_table(state, out)
        print(out.read_text())


if __name__ == "__main__":
    main()
