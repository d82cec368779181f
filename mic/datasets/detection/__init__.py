"""Detection datasets: the bundled shapes benchmarks (no download) and readers for COCO json,
Pascal VOC and Cityscapes / Foggy Cityscapes."""

from mic.datasets.detection.context_shapes import ContextShapes
from mic.datasets.detection.readers import (
    CITYSCAPES_CLASSES,
    VOC_CLASSES,
    CityscapesDetection,
    CocoDetection,
    DetectionDataset,
    VOCDetection,
    to_tensor,
)
from mic.datasets.detection.shapes import ShapesDetection

__all__ = [
    "CITYSCAPES_CLASSES",
    "VOC_CLASSES",
    "CityscapesDetection",
    "CocoDetection",
    "ContextShapes",
    "DetectionDataset",
    "ShapesDetection",
    "VOCDetection",
    "to_tensor",
]
