"""Object detection: Faster R-CNN with per-box loss weights on torchvision (``FasterRCNN``) or
detectron2 (``Detectron2RCNN``, an optional dependency imported only when such a model is
built), the detection Task, adversarial alignment (DA-Faster / SADA), MIC's masked branch with
its published weightings, and reports."""

from mic.datasets.detection.targets import check_target, make_target
from mic.tasks.common import lazy_metrics
from mic.tasks.detection.adversarial import (
    DomainAdversarial,
    ImageDomainClassifier,
    InstanceDomainClassifier,
    SharedSourceSupervision,
    reverse_gradient,
    scale_gradient,
    source_forward,
)
from mic.tasks.detection.detectron2_rcnn import Detectron2RCNN, detectron2_build
from mic.tasks.detection.model import BOX_REGRESSION_PARTS, LOSS_PARTS, FasterRCNN
from mic.tasks.detection.report import DetectionReport
from mic.tasks.detection.task import DetectionTask
from mic.tasks.detection.terms import DETECTION_WEIGHTINGS, DetectionMIC, pseudo_box_statistics
from mic.training.optim import WarmupMultiStep  # its schedule, kept importable here

__all__ = [
    "BOX_REGRESSION_PARTS",
    "DETECTION_WEIGHTINGS",
    "LOSS_PARTS",
    "DetectionMIC",
    "DetectionMetrics",
    "DetectionReport",
    "DetectionTask",
    "Detectron2RCNN",
    "DomainAdversarial",
    "FasterRCNN",
    "ImageDomainClassifier",
    "InstanceDomainClassifier",
    "SharedSourceSupervision",
    "WarmupMultiStep",
    "check_target",
    "detectron2_build",
    "make_target",
    "pseudo_box_statistics",
    "reverse_gradient",
    "scale_gradient",
    "source_forward",
]

# DetectionMetrics on first use (mic.tasks.common.lazy_metrics)
__getattr__, __dir__ = lazy_metrics(__name__, "DetectionMetrics", "mic.tasks.detection.metrics")
