"""Image classification: the Task, the classifier, and its base methods (DANN, CDAN, MCC, and
SDAT's sharpness-aware minimisation)."""

from mic.tasks.classification.alignment import (
    FORWARD_PASSES,
    ConditionalDomainAdversarial,
    DomainAdversarial,
    DomainDiscriminator,
    GradientReversalRamp,
    JointOutputs,
    JointSourceSupervision,
    MinimumClassConfusion,
    MultilinearMap,
    RandomizedMultilinearMap,
    entropy_weights,
    joint_forward,
    minimum_class_confusion,
    reverse_gradient,
    separate_forward,
)
from mic.tasks.classification.model import Classifier
from mic.tasks.classification.sam import SAM, SharpnessAwareMinimization
from mic.tasks.classification.task import ClassificationTask
from mic.tasks.common import lazy_metrics

__all__ = [
    "FORWARD_PASSES",
    "SAM",
    "ClassificationMetrics",
    "ClassificationTask",
    "Classifier",
    "ConditionalDomainAdversarial",
    "DomainAdversarial",
    "DomainDiscriminator",
    "GradientReversalRamp",
    "JointOutputs",
    "JointSourceSupervision",
    "MinimumClassConfusion",
    "MultilinearMap",
    "RandomizedMultilinearMap",
    "SharpnessAwareMinimization",
    "entropy_weights",
    "joint_forward",
    "minimum_class_confusion",
    "reverse_gradient",
    "separate_forward",
]

# ClassificationMetrics on first use (mic.tasks.common.lazy_metrics)
__getattr__, __dir__ = lazy_metrics(
    __name__, "ClassificationMetrics", "mic.tasks.classification.metrics"
)
