"""Semantic segmentation: the Task, DAFormer / DeepLabV2 / smp / small U-Net (with or without
a global-context branch) models, HRDA's multi-resolution wrapper and task, DAFormer's
self-training terms (DACS ClassMix, ImageNet feature distance) and MIC's masked images."""

from mic.tasks.common import lazy_metrics
from mic.tasks.segmentation.hooks import ClassIoUTable, PredictionImages, format_iou_table
from mic.tasks.segmentation.models import (
    HRDA,
    ContextUNet,
    ContextUNetHead,
    DAFormer,
    DAFormerHead,
    DeepLabV2,
    DeepLabV2Head,
    GlobalContext,
    HRDAOutput,
    PyramidEncoder,
    Segmenter,
    SeparableConv,
    SmallUNet,
    SmallUNetEncoder,
    SmallUNetHead,
    SmpDecodeHead,
    SmpModel,
    create_encoder,
    crop_per_image,
    detail_crop_boxes,
    encoder_weights,
)
from mic.tasks.segmentation.task import HRDASegmentationTask, SegmentationTask
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
    "HRDA",
    "ClassIoUTable",
    "ClassMix",
    "ContextUNet",
    "ContextUNetHead",
    "DAFormer",
    "DAFormerHead",
    "DeepLabV2",
    "DeepLabV2Head",
    "FeatureDistance",
    "GlobalContext",
    "HRDAOutput",
    "HRDASegmentationTask",
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
    "crop_per_image",
    "detail_crop_boxes",
    "encoder_weights",
    "format_iou_table",
    "majority_labels",
    "source_forward",
]

# SegmentationMetrics on first use (mic.tasks.common.lazy_metrics)
__getattr__, __dir__ = lazy_metrics(
    __name__, "SegmentationMetrics", "mic.tasks.segmentation.metrics"
)
