"""The Task interface: everything that differs between classification, segmentation, detection."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn

from mic.core.data import collate_pairs, select_images

if TYPE_CHECKING:
    from mic.core.loop import Hook


@dataclass
class PseudoLabels:
    """A teacher's prediction turned into training targets.

    Attributes:
        labels: the targets in the form the Task's ``loss`` accepts (a class-index tensor for
            classification and segmentation, a list of box dicts for detection).
        confidence: the teacher's confidence per labelled element, the same layout as the
            weights the Task's ``loss`` accepts (a tensor, or a list of tensors, one per image).
        valid: optional mask of the elements allowed to carry weight (e.g. image margins that
            the published recipe never trusts); same layout as ``confidence``.
        keep: optional, one flag per image: whether the image takes part in consistency
            losses at all (e.g. images in which the teacher found no object are dropped).
            None: every image does. Images left out are removed, with their labels, before
            the student's view of them is made.
    """

    labels: Any
    confidence: Tensor | list[Tensor]
    valid: Tensor | list[Tensor] | None = None
    keep: Tensor | Sequence[bool] | None = None

    def kept(self, images: Any) -> tuple[Any, PseudoLabels]:
        """``images`` and these pseudo-labels without the images that ``keep`` leaves out."""
        if self.keep is None:
            return images, self
        keep = self.keep.tolist() if isinstance(self.keep, Tensor) else list(self.keep)
        if all(keep):
            return images, PseudoLabels(self.labels, self.confidence, self.valid)
        pick = lambda x: None if x is None else select_images(x, keep)  # noqa: E731
        return pick(images), PseudoLabels(
            pick(self.labels), pick(self.confidence), pick(self.valid)
        )


class Metric(Protocol):
    """What ``Task.metric`` returns; a torchmetrics ``Metric`` satisfies it."""

    def update(self, prediction: Any, targets: Any) -> None: ...

    def compute(self) -> Any: ...

    def reset(self) -> None: ...


class Task(ABC):
    """What a task must say for the generic adaptation loop to train and score it.

    The loop, the teacher and every loss term only ever talk to a model through a Task, so a
    new task is one subclass of this.
    """

    #: number of classes the model predicts
    num_classes: int
    #: the key of ``metric().compute()`` that ranks checkpoints and ends up in summaries
    primary_metric: str = "accuracy"

    @abstractmethod
    def loss(self, model: nn.Module, images: Any, targets: Any, weights: Any = None) -> Tensor:
        """Supervised loss of ``model`` on ``images`` against (pseudo-)``targets``.

        ``weights`` is None (all elements weigh 1) or per-element weights in the layout of
        ``PseudoLabels.confidence``. Returns a scalar tensor that can be back-propagated, or,
        for a loss made of several parts (e.g. the classification and box-regression losses
        of a two-stage model), a dict of named scalar parts: loss terms sum them, each scaled
        by the term's ``part_weights`` (see ``mic.core.terms.sum_parts``).
        """

    @abstractmethod
    def predict(self, model: nn.Module, images: Any) -> Any:
        """The model's prediction for ``images`` in the form ``pseudo_label`` and the metric
        take (e.g. class probabilities). Called under ``torch.no_grad``."""

    @abstractmethod
    def pseudo_label(self, prediction: Any) -> PseudoLabels:
        """Turn a teacher prediction into pseudo-labels with per-element confidence."""

    @abstractmethod
    def metric(self) -> Metric:
        """A fresh metric accumulator for ``predict`` outputs against ground truth."""

    def check_targets(self, targets: Any) -> None:  # noqa: B027 (optional, no-op by default)
        """Raise ``DatasetError`` for targets this task cannot train on (called on CPU
        batches by ``collate``, before they reach the model)."""

    def collate(self, samples: list[Any]) -> Any:
        """Batch a list of dataset samples; a sample is an image or ``(image, target)``."""
        images, targets = collate_pairs(samples)
        if targets is not None:
            self.check_targets(targets)
        return images if targets is None else (images, targets)

    def count(self, images: Any) -> int:
        """Number of images in a batch (for logging and throughput)."""
        return len(images)

    def report_hooks(self, run_dir: Path | None, test: Iterable[Any] | None) -> list[Hook]:
        """Task-specific reporting hooks for a run (e.g. drawings of predictions on a few test
        images at each evaluation); ``run_dir`` is None when nothing is written to disk."""
        return []


def probabilities(logits: Tensor) -> Tensor:
    """Softmax over the class dimension in float32 (stable under mixed precision)."""
    return torch.softmax(logits.float(), dim=1)
