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


def __getattr__(name: str) -> object:
    """``ClassificationMetrics`` on first use, and torchmetrics with it (not with the package:
    ``mic-train``'s checks before a run build no metric)."""
    if name == "ClassificationMetrics":
        from mic.tasks.classification.metrics import ClassificationMetrics

        return ClassificationMetrics
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
