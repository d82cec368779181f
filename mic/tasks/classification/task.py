"""The classification Task."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mic.core import ConfigError, DatasetError, PseudoLabels, Task, check_num_classes
from mic.core.streams import Random
from mic.core.task import Metric
from mic.datasets.preflight import check_class_order
from mic.functional import weighted_cross_entropy
from mic.tasks.common import (
    check_class_probabilities,
    check_image_dtype,
    check_whole,
    lazy_metrics,
    named_classes,
    predicting,
)
from mic.training.batches import (
    plain_samples,
    require_images,
    require_targets,
    with_int64_labels,
)


def probabilities(logits: Tensor) -> Tensor:
    """Softmax over the class dimension (B x C) in float32 (stable under mixed precision)."""
    return torch.softmax(logits.float(), dim=1)


class ClassificationTask(Task):
    """Image classification: weighted cross-entropy, softmax predictions, argmax
    pseudo-labels with the max probability as confidence.

    Args:
        num_classes: the number of classes.
        primary_metric: ``"accuracy"`` (Office-Home, Office-31) or ``"mean_class_accuracy"``
            (VisDA-2017); both are always logged. None: the class attribute (``"accuracy"``;
            a subclass with a ``metric`` of its own may name one of its scores there).
        class_names: the classes' names in class-index order (what index i of a prediction
            is). None: taken from the first dataset that names its classes (a class-folder
            reader's folders) by ``check_datasets``; ``mic-train`` writes them to the run's
            ``config.yaml`` (``task.class_names``), so that ``load_run``'s task names them
            without the data. Given, a dataset naming the same classes in another order is
            refused.

    Raises:
        ConfigError: a ``num_classes`` that is no whole number >= 2, an unknown
            ``primary_metric`` (of this class's ``metric``), or ``class_names`` of another
            count.
    """

    #: one target per image: a test batch of another count is refused (``check_pairs``)
    targets_per_image = True

    def __init__(
        self,
        num_classes: int,
        primary_metric: str | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        check_whole("num_classes", num_classes, 2, "classification needs at least 2 classes")
        if class_names is not None and len(class_names) != int(num_classes):
            raise ConfigError(
                f"task.class_names names {len(class_names)} classes but num_classes is "
                f"{num_classes}: give one name per class, in class-index order"
            )
        self.class_names = [str(n) for n in class_names] if class_names is not None else None
        own_metric = type(self).metric is not ClassificationTask.metric
        primary_metric = primary_metric if primary_metric is not None else self.primary_metric
        if not own_metric and primary_metric not in ("accuracy", "mean_class_accuracy"):
            raise ConfigError(
                "task.primary_metric (in mic-train read from dataset.primary_metric where the "
                "data set sets one, as VisDA-2017 does) must be 'accuracy' or "
                f"'mean_class_accuracy', got {primary_metric!r}"
            )
        self.num_classes = int(num_classes)
        self.primary_metric = primary_metric

    def check_logits(self, logits: Any) -> None:
        """Raise ``ConfigError`` unless ``logits`` are B x ``num_classes`` scores (a shape
        check: no device synchronisation).

        Args:
            logits: what the model returned.

        Raises:
            ConfigError: not a B x C tensor, or C differs from ``num_classes``.
        """
        if not isinstance(logits, Tensor) or logits.ndim != 2:
            got = (
                f"a tensor of shape {tuple(logits.shape)}"
                if isinstance(logits, Tensor)
                else type(logits).__name__
            )
            both = (
                ": return the logits alone when called as model(images), and (logits, "
                "features) only when called with return_features=True (docs/classification.md)"
                if isinstance(logits, (tuple, list, dict))
                else ""
            )
            raise ConfigError(
                f"a classification model must return B x C class scores (logits), got {got}{both}"
            )
        if logits.shape[1] != self.num_classes:
            raise ConfigError(
                f"the model predicts {logits.shape[1]} classes but the task has "
                f"{self.num_classes}; set model.num_classes to ${{dataset.num_classes}} (in "
                f"Python: build the model with num_classes={self.num_classes})"
            )

    def check_not_probabilities(self, logits: Tensor, model: nn.Module | None = None) -> None:
        """At a model's first training batch (its one synchronisation; again for each other
        ``model`` the task trains, as one task reused across runs), refuse class probabilities
        returned in place of logits: each row strictly inside (0, 1), summing to 1, and not
        all alike (uniform rows are logits too). The task's softmax, taken a second time,
        caps every confidence at e / (e + C - 1), below every pseudo-label threshold. Scores
        that all lie inside (0, 1) without summing to 1 (a sigmoid's) are capped alike: warned
        of (logits may lie there by chance).

        Raises:
            ConfigError: such probabilities.

        Warns:
            UserWarning: scores all inside (0, 1) in a batch of 2 images or more.
        """
        seen = getattr(self, "_logits_seen", None)
        if seen == id(model) or not len(logits) or self.num_classes < 2:
            return
        self._logits_seen = id(model)
        with torch.no_grad():
            rows = logits.detach().float()
            half = logits.dtype in (torch.float16, torch.bfloat16)  # (their sums drift)
            inside = bool(((rows > 0) & (rows < 1)).all())
            total = torch.allclose(rows.sum(1), torch.ones_like(rows[:, 0]), atol=1e-2 * half)
            alike = bool((rows.amax(1) - rows.amin(1) < 1e-6).all())
            cap = f"{math.e / (math.e + self.num_classes - 1):.3f} for {self.num_classes} classes"
            if inside and not total and not alike and len(rows) >= 2:
                warnings.warn(
                    "the model's class scores all lie inside (0, 1) on its first batch "
                    f"({len(rows)} x {self.num_classes}), as a sigmoid's do; the task takes "
                    "logits and applies the softmax itself, which then caps the confidence at "
                    f"{cap}, so no pseudo-label reaches a threshold: leave the model's last "
                    "sigmoid out",
                    stacklevel=3,
                )
            if inside and total and not alike:
                raise ConfigError(
                    "the model returns class probabilities (each row in (0, 1), summing to "
                    "1), where the task takes logits: it applies the softmax itself, and a "
                    f"second one caps the confidence at {cap}, so no pseudo-label reaches a "
                    "threshold; leave the model's last softmax out"
                )

    def loss(
        self,
        model: nn.Module,
        images: Tensor,
        targets: Tensor,
        weights: Tensor | None = None,
        rng: Random = None,
    ) -> Tensor:
        """Weighted cross-entropy of ``model(images)`` against ``targets``: (B,) class indices
        of any integer dtype, or (B, K) float class probabilities (soft labels: mixup, label
        smoothing), with optional (B,) ``weights``.

        Raises:
            DatasetError: targets of another kind (one-hot integers, (B,) floats, (B, 1), a
                list), no targets (an unlabelled source) or another count than the images; on
                the CPU, a class index outside [0, num_classes) (on a GPU, ``collate`` checks
                them); images of a dtype the model cannot take (``check_image_dtype``).
            ConfigError: a model that does not return B x K scores.
        """
        require_images(images)
        check_image_dtype(model, images, "classification")
        require_targets(targets, images)
        tensor = isinstance(targets, Tensor)
        integer = tensor and not targets.is_floating_point() and targets.dtype != torch.bool
        soft = tensor and targets.is_floating_point() and targets.shape[1:] == (self.num_classes,)
        if not soft and (not (integer and targets.ndim == 1) or targets.device.type == "cpu"):
            self.check_targets(targets)  # raises: one-hot integers, (B,) floats, (B, 1), a list,
            # a class out of range (torch's IndexError; checked where that costs no device sync)
        logits = model(images)
        self.check_logits(logits)
        self.check_not_probabilities(logits, model)
        return weighted_cross_entropy(logits, targets if soft else targets.long(), weights)

    def predict(self, model: nn.Module, images: Tensor) -> Tensor:
        """Class probabilities, B x K float32, of a batch of the model's inputs (images, or
        the features or token ids of a model of one's own: not checked for a layout). A model
        in training mode predicts in eval mode, its modes restored after (``predicting``).

        Raises:
            DatasetError: a batch that is a dict, tuple or list (``require_images``), images
                of a dtype the model cannot take (``check_image_dtype``).
            Exception: what the model raises, noting for a (C, H, W) image that one image is
                given as a batch of one (``image[None]``).
        """
        require_images(images)
        check_image_dtype(model, images, "classification")
        try:
            with predicting(model):
                logits = model(images)
        except (RuntimeError, ValueError) as e:  # e.g. one image, which the layers took apart
            if isinstance(images, Tensor) and images.dim() == 3 and hasattr(e, "add_note"):
                e.add_note(  # (Python 3.11 on)
                    f"(predict takes a batch: if this is one image, of shape "
                    f"{tuple(images.shape)}, give image[None])"
                )
            raise
        self.check_logits(logits)
        return probabilities(logits)

    def pseudo_label(self, prediction: Tensor) -> PseudoLabels:
        """The teacher's prediction as pseudo-labels: each image's most probable class, its
        probability as the confidence.

        Args:
            prediction: (B, C) float class probabilities (the teacher's ``predict``),
                C = ``num_classes``.

        Returns:
            ``PseudoLabels``: labels (B,) int64, confidence (B,) in the prediction's dtype.

        Raises:
            ConfigError: a prediction that is no (B, C) tensor of ``num_classes`` classes.
        """
        check_class_probabilities(
            prediction, self.num_classes, "B x C", "ClassificationTask.pseudo_label"
        )
        confidence, labels = prediction.max(dim=1)
        return PseudoLabels(labels=labels, confidence=confidence)

    def class_probabilities(
        self, prediction: Tensor, samples_per_image: int | None = None, rng: Random = None
    ) -> Tensor:
        """What the label-free validators read (``mic.training.validators``): one row of
        class probabilities per image, B x C float32 (``samples_per_image`` and ``rng`` are
        for tasks with many elements per image)."""
        return prediction.float()

    def metric(self) -> Metric:
        """A fresh ``ClassificationMetrics`` (mic.tasks.classification.metrics)."""
        from mic.tasks.classification.metrics import ClassificationMetrics

        return ClassificationMetrics(self.num_classes)

    def collate(self, samples: list[Any]) -> Any:
        """Batch samples: images, ``(image,)`` 1-tuples (``TensorDataset(x)``: images alone)
        or ``(image, label)`` pairs; integer labels of any width become int64, as the loss
        takes them.

        Args:
            samples: what a DataLoader hands its ``collate_fn``.

        Returns:
            B x C x H x W images, or ``(images, labels)`` with (B,) int64 labels.

        Raises:
            DatasetError: a sample that is a dict or has more than 2 items, images that are
                not float32 (uint8, float64) or of different sizes, or bad labels.
        """
        return with_int64_labels(super().collate(plain_samples(samples)))

    def check_datasets(self, datasets: Mapping[str, Any]) -> None:
        """``check_num_classes``, and the class order of the datasets that name their classes
        against ``class_names`` (or, None, against each other; the names are then taken from
        them).

        Raises:
            DatasetError: another class count, or the same classes in another order.
        """
        check_num_classes(self.num_classes, datasets)
        check_class_order(datasets, self.class_names)
        if self.class_names is None:
            self.class_names = named_classes(datasets, self.num_classes)

    def check_targets(self, targets: Any) -> None:
        if (
            not isinstance(targets, Tensor)
            or targets.is_floating_point()
            or targets.dtype == torch.bool
            or targets.ndim != 1
        ):
            tensor = isinstance(targets, Tensor)
            rows = tensor and targets.ndim == 2 and targets.shape[1] == self.num_classes
            fix = (
                ": a dataset of one's own returns the label as a whole number (int(label)), "
                "the index of its class"
                + (" (of one-hot labels: their argmax)" if rows or not tensor else "")
            )
            raise DatasetError(
                "classification targets must be integer class indices of shape (B,), "
                f"got {type(targets).__name__}"
                + (f" of dtype {targets.dtype} and shape {tuple(targets.shape)}" if tensor else "")
                + fix
            )
        bad = targets[(targets < 0) | (targets >= self.num_classes)]
        if bad.numel() and int(bad[0]) < 0:
            raise DatasetError(
                f"label {int(bad[0])} is negative, outside the class range [0, "
                f"{self.num_classes - 1}]: classification has no ignore label, so such a sample "
                "has no class to learn; leave it out of the dataset, or give it its class"
            )
        if bad.numel():
            raise DatasetError(
                f"label {int(bad[0])} is outside the class range [0, {self.num_classes - 1}]: "
                f"the dataset has more classes than task.num_classes={self.num_classes}, or a "
                "label is corrupt; fix the labels or set dataset.num_classes"
            )


# ClassificationMetrics on first use (mic.tasks.common.lazy_metrics)
__getattr__, __dir__ = lazy_metrics(
    __name__, "ClassificationMetrics", "mic.tasks.classification.metrics"
)
