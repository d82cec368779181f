"""Image classification: the Task, the classifier, and its base methods."""

from mic.tasks.classification.model import Classifier
from mic.tasks.classification.task import ClassificationMetrics, ClassificationTask

__all__ = ["ClassificationMetrics", "ClassificationTask", "Classifier"]
