"""Image classification: the Task, the classifier, and its base methods."""

from mic.tasks.classification.alignment import (
    ConditionalDomainAdversarial,
    DomainAdversarial,
    DomainDiscriminator,
    JointOutputs,
    JointSourceSupervision,
    MinimumClassConfusion,
    MultilinearMap,
    RandomizedMultilinearMap,
    WarmStartCoefficient,
    entropy_weights,
    joint_forward,
    minimum_class_confusion,
    reverse_gradient,
)
from mic.tasks.classification.model import Classifier
from mic.tasks.classification.task import ClassificationMetrics, ClassificationTask

__all__ = [
    "ClassificationMetrics",
    "ClassificationTask",
    "Classifier",
    "ConditionalDomainAdversarial",
    "DomainAdversarial",
    "DomainDiscriminator",
    "JointOutputs",
    "JointSourceSupervision",
    "MinimumClassConfusion",
    "MultilinearMap",
    "RandomizedMultilinearMap",
    "WarmStartCoefficient",
    "entropy_weights",
    "joint_forward",
    "minimum_class_confusion",
    "reverse_gradient",
]
