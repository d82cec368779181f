"""What a user sees of a segmentation run: the per-class IoU table in the log and colour-coded
predictions beside the input at every evaluation."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from mic.augmentation import Normalization
from mic.core.batch import split_sample
from mic.core.loop import AdaptationLoop, Hook
from mic.datasets.segmentation.labels import colorize

log = logging.getLogger("mic")


def format_iou_table(
    names: Sequence[str], ious: dict[str, Sequence[float]], eval_classes: Sequence[int] | None
) -> str:
    """A text table: one row per class, one column of IoU (%) per model; classes outside the
    protocol are marked with '-', classes in no label and no prediction (NaN: left out of the
    mIoU) with 'none'."""
    models = list(ious)
    width = max(len(n) for n in names) + 2
    lines = ["class".ljust(width) + "".join(f"{m:>10}" for m in models)]
    for c, name in enumerate(names):
        used = eval_classes is None or c in eval_classes
        cells = []
        for m in models:
            v = ious[m][c] if c < len(ious[m]) else float("nan")
            absent = v is None or math.isnan(v)
            cells.append(f"{'-' if not used else 'none' if absent else f'{100 * v:.2f}':>10}")
        lines.append(name.ljust(width) + "".join(cells))
    return "\n".join(lines)


class ClassIoUTable(Hook):
    """Writes the per-class IoU of every evaluated model as a table to the console and to the
    ``mic`` logger (Hydra puts that in the run's log file)."""

    def __init__(self, names: Sequence[str], eval_classes: Sequence[int] | None = None) -> None:
        self.names = list(names)
        self.eval_classes = eval_classes

    def on_record(self, loop: AdaptationLoop, record: dict[str, Any]) -> None:
        ious = {
            key.split("/")[1]: value
            for key, value in record.items()
            if key.startswith("eval/") and key.endswith("/per_class_iou")
        }
        if not ious:
            return
        table = format_iou_table(self.names, ious, self.eval_classes)
        subset = self.eval_classes is not None and len(self.eval_classes) < len(self.names)
        over = f" (mIoU over {len(self.eval_classes)} classes, '-': left out)" if subset else ""
        used = range(len(self.names)) if self.eval_classes is None else self.eval_classes
        scored = [v for iou in ious.values() for c, v in enumerate(iou) if c in used]
        if any(v is None or math.isnan(v) for v in scored):  # (left out of the mIoU)
            over += " ('none': in no label and no prediction, left out of the mIoU)"
        text = f"per-class IoU (%) at iteration {record.get('step')}{over}:\n{table}"
        if logging.getLogger().handlers:  # e.g. Hydra's console and run-log handlers
            log.info(text)
        else:
            tqdm.write(text)


def to_rgb(image: torch.Tensor, normalization: Normalization) -> np.ndarray:
    """A normalised C x H x W tensor back to H x W x 3 uint8."""
    x = normalization.to_unit(image.detach().float().cpu()[None, :3])[0].clamp(0, 1)
    return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


class PredictionImages(Hook):
    """At every evaluation of the loop's ``Evaluation`` hook, draws the first ``count`` test
    images as ``input | prediction | label`` (classes in the palette colours, ignored pixels
    black) into ``<directory>/iter_<step>/<index>_<model>.png``, for each scored model, as it
    was scored: under the evaluation's BatchNorm protocol (AdaBN's statistics, where it
    re-estimates them), not the training statistics that the model holds between
    evaluations.

    The normalisation is read from the test dataset (``mean``/``std``), else from its
    ``transform``, else ImageNet's.

    Raises:
        ConfigError: (at ``before_run``) a loop without an ``Evaluation`` hook: nothing is
            scored, nothing drawn.
    """

    def __init__(self, task: Any, dataset: Any, directory: str | Path, count: int = 4) -> None:
        from mic.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD

        self.task = task
        self.dataset = dataset
        self.directory = Path(directory)
        self.count = min(int(count), len(dataset))
        source = dataset if hasattr(dataset, "mean") else getattr(dataset, "transform", None)
        mean, std = getattr(source, "mean", IMAGENET_MEAN), getattr(source, "std", IMAGENET_STD)
        self.normalization = Normalization(
            torch.as_tensor(mean).flatten().tolist(), torch.as_tensor(std).flatten().tolist()
        )

    def before_run(self, loop: AdaptationLoop) -> None:
        from mic.training.hooks import view_evaluations

        view_evaluations(loop, self.draw)

    def teardown(self, loop: AdaptationLoop) -> None:
        from mic.training.hooks import unview_evaluations

        unview_evaluations(loop, self.draw)

    @torch.no_grad()
    def draw(self, step: int, name: str, model: torch.nn.Module, device: torch.device) -> None:
        """Draw ``model`` (called ``name``, in eval mode, as scored) at iteration ``step``."""
        folder = self.directory / f"iter_{int(step):08d}"
        folder.mkdir(parents=True, exist_ok=True)
        palette = self.task.palette
        for i in range(self.count):
            image, label = split_sample(self.dataset[i])
            rgb = to_rgb(image, self.normalization)
            probs = self.task.predict(model, image[None].to(device))
            pred = probs.argmax(1)[0].cpu().numpy()
            panels = [rgb, colorize(pred, palette)]
            if label is not None:
                lab = np.asarray(label)
                if lab.shape != pred.shape:
                    lab = np.asarray(
                        Image.fromarray(lab.astype(np.uint8)).resize(
                            pred.shape[::-1], Image.NEAREST
                        )
                    )
                panels.append(colorize(lab, palette))
            Image.fromarray(np.concatenate(panels, axis=1)).save(folder / f"{i:02d}_{name}.png")
