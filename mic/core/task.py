"""The Task interface: everything that differs between classification, segmentation, detection."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor, nn

from mic.core.batch import collate_pairs, select_images
from mic.core.errors import DatasetError


@dataclass
class PseudoLabels:
    """A teacher's prediction turned into training targets.

    Attributes:
        labels: targets in the form the Task's ``loss`` accepts (B class indices for
            classification, B x H x W for segmentation, a list of box dicts for detection).
        confidence: the teacher's confidence per labelled element, float, in the layout of the
            weights ``loss`` accepts (a tensor, or one tensor per image).
        valid: optional bool mask, same layout: elements allowed to carry weight (image
            margins the published recipe never trusts are False).
        keep: optional, one flag per image: whether the image takes part in consistency losses
            (detection drops images without a pseudo-box). None: every image does.
    """

    labels: Any
    confidence: Tensor | list[Tensor]
    valid: Tensor | list[Tensor] | None = None
    keep: Tensor | Sequence[bool] | None = None

    def kept(self, *per_image: Any) -> tuple[Any, ...]:
        """``per_image`` batches (images, weights ...) and these pseudo-labels, without the
        images that ``keep`` leaves out: ``(*per_image, pseudo_labels)``."""
        if self.keep is None:
            return (*per_image, self)
        keep = self.keep.tolist() if isinstance(self.keep, Tensor) else list(self.keep)
        if all(keep):
            return (*per_image, PseudoLabels(self.labels, self.confidence, self.valid))
        pick = lambda x: None if x is None else select_images(x, keep)  # noqa: E731
        rest = PseudoLabels(pick(self.labels), pick(self.confidence), pick(self.valid))
        return (*(pick(x) for x in per_image), rest)


def check_num_classes(num_classes: int, datasets: Mapping[str, Any]) -> None:
    """Raise ``DatasetError`` when a dataset declares (``num_classes``, or a sequence
    ``classes``) a class count other than ``num_classes``, naming every dataset's count."""
    declared = {}
    for name, dataset in datasets.items():
        n = getattr(dataset, "num_classes", None)
        classes = getattr(dataset, "classes", None)
        if n is None and isinstance(classes, Sequence) and not isinstance(classes, str):
            n = len(classes)
        if n is not None:
            declared[name] = n
    if any(n != num_classes for n in declared.values()):
        listing = ", ".join(f"{name} has {n}" for name, n in declared.items())
        raise DatasetError(
            f"class counts disagree: the task/model predicts {num_classes} classes but {listing}. "
            "Source and target must share one label space: fix the datasets or set "
            "dataset.num_classes to match."
        )


class Metric(Protocol):
    """What ``Task.metric`` returns (a torchmetrics ``Metric`` satisfies it).

    ``compute()`` returns a dict of named scores (one of them ``Task.primary_metric``), or a
    single scalar (a float or a 0-d tensor), which is then recorded as the primary metric.
    """

    def update(self, prediction: Any, targets: Any) -> None: ...

    def compute(self) -> Any: ...

    def reset(self) -> None: ...


class Task(ABC):
    """What a task must say for the generic adaptation loop to train and score it.

    The loop, the teacher and every loss term talk to a model only through a Task, so a new
    task is one subclass of this (see docs/new_task.md).

    Attributes:
        num_classes: the number of classes the model predicts.
        primary_metric: the key of ``metric().compute()`` that ranks checkpoints and ends up
            in summaries.
    """

    num_classes: int
    primary_metric: str = "accuracy"

    @abstractmethod
    def loss(
        self, model: nn.Module, images: Any, targets: Any, weights: Any = None, rng: Any = None
    ) -> Any:
        """The supervised loss of ``model`` on ``images`` against (pseudo-)``targets``.

        Args:
            model: the model in training mode.
            images: a batch (e.g. B x C x H x W float, normalised).
            targets: labels or pseudo-labels (``PseudoLabels.labels``'s form).
            weights: None (every element weighs 1) or per-element float weights in the
                layout of ``PseudoLabels.confidence``.
            rng: the calling term's ``RandomStream``, for a loss that draws (e.g. a crop):
                draw from it, never from a global generator, so that the draws stay paired
                and keyed to each sample's place in the global batch.

        Returns:
            A scalar tensor that can be back-propagated, or a dict of named scalar parts
            (e.g. a detector's classification and box-regression losses), which loss terms
            sum, each part scaled by the term's ``part_weights``.
        """

    @abstractmethod
    def predict(self, model: nn.Module, images: Any) -> Any:
        """The model's prediction for ``images`` in the form ``pseudo_label`` and the metric
        take (e.g. B x C class probabilities, float32). Called under ``torch.no_grad``."""

    @abstractmethod
    def pseudo_label(self, prediction: Any) -> PseudoLabels:
        """A teacher prediction turned into pseudo-labels with per-element confidence."""

    @abstractmethod
    def metric(self) -> Metric:
        """A fresh accumulator of ``predict`` outputs against ground truth."""

    def check_targets(self, targets: Any) -> None:  # noqa: B027 (optional, no-op by default)
        """Raise ``DatasetError`` for targets this task cannot train on (``collate`` calls it
        on CPU batches, before they reach the model)."""

    def check_datasets(self, datasets: Mapping[str, Any]) -> None:
        """Raise ``DatasetError`` when the named datasets (``source``, ``target``, ``test``;
        None entries skipped) cannot serve this task. By default their declared class counts
        must equal ``num_classes`` (``check_num_classes``); a task whose targets derive from
        another label space overrides this."""
        check_num_classes(self.num_classes, datasets)

    def collate(self, samples: list[Any]) -> Any:
        """Batch dataset samples (each an image or ``(image, target)``): stacked float images,
        and stacked targets checked by ``check_targets``.

        Raises:
            DatasetError: images that are not float, of different sizes, or bad targets.
        """
        images, targets = collate_pairs(samples)
        if isinstance(images, Tensor) and not images.is_floating_point():
            raise DatasetError(
                f"the dataset yields {images.dtype} images, but models take float images; "
                "convert them in its transform (e.g. torchvision's ToTensor, or "
                "v2.ToDtype(torch.float32, scale=True) then Normalize)"
            )
        if targets is not None:
            self.check_targets(targets)
        return images if targets is None else (images, targets)

    def count(self, images: Any) -> int:
        """The number of images in a batch."""
        return len(images)

    def report_hooks(self, run_dir: Path | None, test: Iterable[Any] | None) -> list[Any]:
        """Task-specific ``Hook``s of a run (e.g. drawings of predictions on a few test images
        at each evaluation); ``run_dir`` is None when nothing is written to disk."""
        return []
