"""Object detection: Faster R-CNN (torchvision) with per-box loss weights, the detection Task,
adversarial alignment (DA-Faster / SADA), and reports."""

from mic.datasets.detection.targets import check_target, make_target
from mic.tasks.detection.adversarial import (
    DomainAdversarial,
    ImageDomainClassifier,
    InstanceDomainClassifier,
    SharedSourceSupervision,
    reverse_gradient,
    scale_gradient,
    source_forward,
)
from mic.tasks.detection.model import BOX_REGRESSION_PARTS, LOSS_PARTS, FasterRCNN
from mic.tasks.detection.report import DetectionReport
from mic.tasks.detection.task import DetectionMetrics, DetectionTask
from mic.training.optim import WarmupMultiStep  # its schedule, kept importable here

__all__ = [
    "BOX_REGRESSION_PARTS",
    "LOSS_PARTS",
    "DetectionMetrics",
    "DetectionReport",
    "DetectionTask",
    "DomainAdversarial",
    "FasterRCNN",
    "ImageDomainClassifier",
    "InstanceDomainClassifier",
    "SharedSourceSupervision",
    "WarmupMultiStep",
    "check_target",
    "make_target",
    "reverse_gradient",
    "scale_gradient",
    "source_forward",
]
