"""Semantic segmentation: the Task, DAFormer / DeepLabV2 / smp / small U-Net models, DAFormer's
self-training terms (DACS ClassMix, ImageNet feature distance) and MIC's masked images."""

from mic.tasks.segmentation.hooks import ClassIoUTable, PredictionImages, format_iou_table
from mic.tasks.segmentation.models import (
    DAFormer,
    DAFormerHead,
    DeepLabV2,
    DeepLabV2Head,
    PyramidEncoder,
    Segmenter,
    SeparableConv,
    SmallUNet,
    SmallUNetEncoder,
    SmallUNetHead,
    SmpDecodeHead,
    SmpModel,
    create_encoder,
    encoder_weights,
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
    "PyramidEncoder",
    "SegmentationMIC",
    "SegmentationMetrics",
    "SegmentationTask",
    "Segmenter",
    "SeparableConv",
    "SharedSourceSupervision",
    "SmallUNet",
    "SmallUNetEncoder",
    "SmallUNetHead",
    "SmpDecodeHead",
    "SmpModel",
    "class_mix_masks",
    "create_encoder",
    "encoder_weights",
    "format_iou_table",
    "majority_labels",
    "source_forward",
]
