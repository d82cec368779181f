"""The detection scores (torchmetrics' COCO AP, imported when a task first builds its
metric: ``mic-train``'s checks before a run do not wait for it)."""

from __future__ import annotations

from typing import Any

from torchmetrics.detection import MeanAveragePrecision


class DetectionMetrics(MeanAveragePrecision):
    """COCO-style box AP through torchmetrics (pycocotools underneath), reported as:

    ``map_50`` (mAP at IoU 0.5, the Cityscapes -> Foggy Cityscapes number), ``map`` (COCO AP,
    IoU 0.5:0.95; both NaN, never a best score, for a set without a box that counts),
    ``ap50_per_class`` and ``ap_per_class`` (one entry per class id; NaN for a class without
    ground truth in the evaluated set).
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__(
            box_format="xyxy",
            iou_type="bbox",
            class_metrics=True,
            extended_summary=True,
            backend="pycocotools",
        )
        self.num_classes = int(num_classes)

    def compute(self) -> dict[str, Any]:  # type: ignore[override]
        out = super().compute()
        ap50 = [float("nan")] * self.num_classes
        ap = [float("nan")] * self.num_classes
        # precision: IoU thresholds x recall thresholds x classes x areas x max detections
        precision = out["precision"]
        classes = out["classes"].reshape(-1).tolist()
        per_class_ap = out["map_per_class"].reshape(-1).tolist()
        for k, c in enumerate(classes):
            if not 0 <= int(c) < self.num_classes:
                continue
            p = precision[0, :, k, 0, -1]
            p = p[p > -1]
            ap50[int(c)] = float(p.mean()) if p.numel() else float("nan")
            ap[int(c)] = per_class_ap[k] if per_class_ap[k] >= 0 else float("nan")
        return {  # torchmetrics' -1: undefined (no box to count), NaN here: never a best
            "map_50": _defined(float(out["map_50"])),
            "map": _defined(float(out["map"])),
            "ap50_per_class": ap50,
            "ap_per_class": ap,
        }


def _defined(value: float) -> float:
    """A score, or NaN for torchmetrics' -1 (a set without a box that counts)."""
    return value if value >= 0 else float("nan")
