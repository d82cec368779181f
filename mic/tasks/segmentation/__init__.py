"""Semantic segmentation: the Task, DAFormer / DeepLabV2 / smp models, DAFormer's
self-training terms (DACS ClassMix, ImageNet feature distance) and MIC's masked images."""

from mic.tasks.segmentation.hooks import ClassIoUTable, PredictionImages, format_iou_table
from mic.tasks.segmentation.models import (
    DAFormer,
    DAFormerHead,
    DeepLabV2,
    DeepLabV2Head,
    Segmenter,
    SmallUNet,
    SmpModel,
    create_encoder,
)
from mic.tasks.segmentation.task import SegmentationMetrics, SegmentationTask
from mic.tasks.segmentation.terms import (
    ClassMix,
    FeatureDistance,
    SegmentationMIC,
    SharedSourceSupervision,
    class_mix_masks,
    majority_labels,
    source_forward,
)

__all__ = [
    "ClassIoUTable",
    "ClassMix",
    "DAFormer",
    "DAFormerHead",
    "DeepLabV2",
    "DeepLabV2Head",
    "FeatureDistance",
    "PredictionImages",
    "SegmentationMIC",
    "SegmentationMetrics",
    "SegmentationTask",
    "Segmenter",
    "SharedSourceSupervision",
    "SmallUNet",
    "SmpModel",
    "class_mix_masks",
    "create_encoder",
    "format_iou_table",
    "majority_labels",
    "source_forward",
]
