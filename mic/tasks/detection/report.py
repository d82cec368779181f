"""Detection reports at each evaluation: box overlays on a few target test images, and a
per-class AP table."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, make_grid, save_image

from mic.core.batch import move_to, split_sample
from mic.core.loop import AdaptationLoop, Hook
from mic.tasks.detection.task import DetectionTask
from mic.training.checkpoint import write_text_atomically
from mic.training.hooks import say

PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
]  # fmt: skip


def per_class_table(record: dict[str, Any], class_names: list[str]) -> str:
    """A markdown table of AP@0.5 and COCO AP per class for every model in an evaluation
    record (``eval/<model>/ap50_per_class`` ...), in points; a class without a box in the
    test set (NaN: ``-``) is named below it as left out of the mean."""
    models = [k.split("/")[1] for k in record if k.endswith("/ap50_per_class")]
    if not models:
        return ""
    head = "| class | " + " | ".join(f"{m} AP50 | {m} AP" for m in models) + " |"
    lines = [head, "|---|" + "---|---|" * len(models)]

    def fmt(v: Any) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"

    for i, name in enumerate(class_names):
        cells = []
        for m in models:
            ap50 = record[f"eval/{m}/ap50_per_class"]
            ap = record.get(f"eval/{m}/ap_per_class") or [None] * len(ap50)
            cells += [fmt(ap50[i] if i < len(ap50) else None), fmt(ap[i] if i < len(ap) else None)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    means = []
    for m in models:
        means += [fmt(record.get(f"eval/{m}/map_50")), fmt(record.get(f"eval/{m}/map"))]
    lines.append("| **mean** | " + " | ".join(means) + " |")

    def unscored(m: str, i: int) -> bool:
        values = record[f"eval/{m}/ap50_per_class"]
        return i >= len(values) or fmt(values[i]) == "-"

    # (a model scored NaN throughout, its weights non-finite, tells nothing of the test set)
    scored = [m for m in models if not all(unscored(m, i) for i in range(len(class_names)))]
    absent = [n for i, n in enumerate(class_names) if all(unscored(m, i) for m in scored)]
    if scored and absent:  # (a foggy split without trains: its mean is over the other classes)
        lines.append(
            f"\n`-`: no box of {', '.join(absent)} in the test set, left out of the mean (as "
            "COCO's mAP does)"
        )
    return "\n".join(lines)


def draw(
    image: Tensor,
    prediction: dict[str, Tensor] | None,
    target: dict[str, Tensor] | None,
    class_names: list[str],
    min_score: float,
) -> Tensor:
    """The image (3 x H x W in [0, 1]) with ground-truth boxes in white and predictions with
    ``score >= min_score`` in their class colour, labelled "class score"."""
    img = (image[:3].detach().float().clamp(0, 1).cpu() * 255).to(torch.uint8)
    if target is not None and len(target["boxes"]):
        img = draw_bounding_boxes(img, target["boxes"].cpu(), colors="white", width=1)
    if prediction is not None:
        keep = prediction["scores"] >= min_score
        boxes = prediction["boxes"][keep].detach().cpu()
        labels = prediction["labels"][keep].tolist()
        scores = prediction["scores"][keep].tolist()
        if len(boxes):
            names = [
                f"{class_names[c] if 0 <= c < len(class_names) else c} {s:.2f}"
                for c, s in zip(labels, scores, strict=True)
            ]
            colors = [PALETTE[c % len(PALETTE)] for c in labels]
            img = draw_bounding_boxes(img, boxes, labels=names, colors=colors, width=2)
    return img.float() / 255


class DetectionReport(Hook):
    """At each evaluation: draws the predictions of every evaluated model on the first
    ``images`` target test images (``visuals/iter_<step>_<model>.png`` in the run folder) and
    writes the per-class AP table (``ap_per_class.md``: the latest evaluation first, earlier
    ones below); after training, prints the last table.

    The drawings show each model as it was scored: drawn inside the evaluation, under its
    BatchNorm protocol (AdaBN's statistics, where it re-estimates them).

    Raises:
        ConfigError: (at ``before_run``) a loop without an ``Evaluation`` hook, with images
            to draw and a run folder to draw them in.
    """

    def __init__(
        self,
        task: DetectionTask,
        test: Iterable[Any] | None,
        run_dir: str | Path | None,
        images: int = 4,
        min_score: float = 0.5,
        print_table: bool = True,
    ) -> None:
        self.task = task
        self.test = test
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.images = int(images)
        self.min_score = float(min_score)
        self.print_table = print_table
        self.samples: list[tuple[Tensor, Any]] | None = None
        self.tables: list[str] = []

    def _samples(self) -> list[tuple[Tensor, Any]]:
        if self.samples is None:
            self.samples = []
            for batch in self.test or ():
                images, targets = split_sample(batch)
                for i in range(len(images)):
                    self.samples.append((images[i], None if targets is None else targets[i]))
                if len(self.samples) >= self.images:
                    break
            self.samples = self.samples[: self.images]
        return self.samples

    def before_run(self, loop: AdaptationLoop) -> None:
        """A resumed run keeps the tables of ``ap_per_class.md`` up to the iteration it
        resumes from (those after it are evaluated again), as ``metrics.jsonl`` does."""
        from mic.training.hooks import view_evaluations

        if self.images > 0 and self.run_dir is not None:
            view_evaluations(loop, self.draw)
        path = None if self.run_dir is None else self.run_dir / "ap_per_class.md"
        self.tables = []
        if path is None or loop.step == 0 or not path.is_file():
            return
        for part in path.read_text().split("\n## iteration ")[1:]:
            step = part.split("\n", 1)[0].strip()
            if step.isdigit() and int(step) <= loop.step:
                self.tables.append(f"## iteration {part.rstrip()}\n")

    def on_record(self, loop: AdaptationLoop, record: dict[str, Any]) -> None:
        table = per_class_table(record, self.task.class_names)
        if not table:
            return
        self.tables.insert(0, f"## iteration {record['step']}\n\n{table}\n")
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomically(  # a crash leaves the tables before it
            self.run_dir / "ap_per_class.md",
            "# Per-class AP on the target test set (points)\n\n" + "\n".join(self.tables),
        )

    @torch.no_grad()
    def draw(self, step: int, name: str, model: torch.nn.Module, device: torch.device) -> None:
        """Draw ``model`` (called ``name``, in eval mode, as scored) at iteration ``step``:
        an ``Evaluation`` viewer."""
        samples = self._samples()
        if not samples or self.run_dir is None:
            return
        folder = self.run_dir / "visuals"
        folder.mkdir(parents=True, exist_ok=True)
        drawn = []
        for image, target in samples:
            pred = self.task.predict(model, move_to(image[None], device))[0]
            drawn.append(draw(image, pred, target, self.task.class_names, self.min_score))
        side = max(max(x.shape[-2] for x in drawn), max(x.shape[-1] for x in drawn))
        padded = [
            torch.nn.functional.pad(x, (0, side - x.shape[-1], 0, side - x.shape[-2]))
            for x in drawn
        ]
        grid = make_grid(padded, nrow=min(4, len(padded)), padding=2, pad_value=1.0)
        save_image(grid, folder / f"iter_{step:08d}_{name}.png")

    def after_run(self, loop: AdaptationLoop) -> None:
        if self.print_table and self.tables:
            say("per-class AP on the target test set (points):\n" + self.tables[0])

    def teardown(self, loop: AdaptationLoop) -> None:
        from mic.training.hooks import unview_evaluations

        unview_evaluations(loop, self.draw)
