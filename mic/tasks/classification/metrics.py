"""The classification scores (torchmetrics, imported when a task first builds its metric:
``mic-train``'s checks before a run do not wait for it)."""

from __future__ import annotations

from torch import Tensor
from torchmetrics.classification import MulticlassStatScores


class ClassificationMetrics(MulticlassStatScores):
    """Overall accuracy, mean class accuracy (the VisDA-2017 convention: the mean over the
    classes present in the targets of their per-class accuracy) and per-class accuracy (NaN
    for a class absent from the targets), from one per-class count of hits and misses."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes, average=None)

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        hits, _, _, _, support = super().compute().unbind(-1)
        per_class = hits / support  # 0 / 0 = NaN where the class is absent
        return {
            "accuracy": hits.sum() / support.sum(),
            "mean_class_accuracy": per_class.nanmean(),
            "per_class_accuracy": per_class,
        }
