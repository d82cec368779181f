"""The Task interface: everything that differs between tasks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor, nn

from mic.core import checks
from mic.core.batch import LABEL_KEYS, collate_pairs, count_images, select_images


@dataclass
class PseudoLabels:
    """A teacher's prediction turned into training targets.

    Attributes:
        labels: targets as the Task's ``loss`` takes them (e.g. (B,) class indices, (B, H, W)
            label maps, or a list of box dicts).
        confidence: float confidence per labelled element, a probability in [0, 1] (checked
            at the first adaptation iteration; not in a run resumed after it), in the layout
            of ``loss``'s weights.
        valid: optional mask, same layout, bool (or 0 and 1; after the first adaptation
            iteration any value but 0 is True): False where an element must weigh 0.
        keep: optional flag per image: False leaves it out of consistency losses (e.g. no
            pseudo-box). None: every image takes part.
    """

    labels: Any
    confidence: Tensor | list[Tensor]
    valid: Tensor | list[Tensor] | None = None
    keep: Tensor | Sequence[bool] | None = None

    def __post_init__(self) -> None:
        """Raise ``ConfigError`` when ``confidence`` or ``valid`` is no tensor or list of
        tensors, or not in the labels' layout (tensor labels' shape, one per list label), or
        ``keep`` holds not one flag per image."""
        checks.check_pseudo_label_layout(self, count_images)

    def check_confidence(self) -> None:
        """Raise ``ConfigError`` unless ``confidence`` holds float probabilities in [0, 1]
        (not logits), and ``valid`` only 0 and 1 (bool, or numbers): the weightings read them
        as such (a 0/255 mask weighed its pseudo-labels 255 times)."""
        checks.check_confidence(self)

    def kept(self, *per_image: Any) -> tuple[Any, ...]:
        """``(*per_image, pseudo_labels)`` without the images ``keep`` leaves out."""
        if self.keep is None:
            return (*per_image, self)
        keep = self.keep.tolist() if isinstance(self.keep, Tensor) else list(self.keep)
        if all(keep):
            return (*per_image, PseudoLabels(self.labels, self.confidence, self.valid))
        pick = lambda x: None if x is None else select_images(x, keep)  # noqa: E731
        rest = PseudoLabels(pick(self.labels), pick(self.confidence), pick(self.valid))
        return (*(pick(x) for x in per_image), rest)


class Metric(Protocol):
    """What ``Task.metric`` returns (a torchmetrics ``Metric`` is one). ``compute()`` returns
    named scores (one of them ``Task.primary_metric``) or one scalar, the primary metric."""

    def update(self, prediction: Any, targets: Any) -> None: ...

    def compute(self) -> Any: ...

    def reset(self) -> None: ...


class Task(ABC):
    """What a task must say for the loop to train and score it: the loop, the teacher and the
    loss terms reach a model only through a Task (docs/new_task.md).

    Attributes:
        num_classes: the number of classes the model predicts.
        primary_metric: the key of ``metric().compute()`` that ranks checkpoints.
        higher_is_better: whether a higher ``primary_metric`` is better (False for an error).
        in_percent: whether the console shows ``primary_metric`` in percent (a share in
            [0, 1]); None (default): as ``higher_is_better`` says (False for R2, PSNR).
    """

    num_classes: int
    primary_metric: str = "accuracy"
    higher_is_better: bool = True
    in_percent: bool | None = None

    @abstractmethod
    def loss(
        self, model: nn.Module, images: Any, targets: Any, weights: Any = None, rng: Any = None
    ) -> Any:
        """The supervised loss of ``model`` on ``images`` against (pseudo-)``targets``.

        Args:
            model: the model in training mode.
            images: a batch (e.g. (B, C, H, W) float, normalised).
            targets: labels or pseudo-labels (``PseudoLabels.labels``'s form).
            weights: None (all 1) or float weights in ``PseudoLabels.confidence``'s layout.
            rng: the calling term's ``RandomStream``; a loss that draws (e.g. a crop) draws
                from it alone, so that the draws stay paired.

        Returns:
            A scalar tensor, or a dict of named scalar parts (e.g. a detector's
            classification and box losses) that terms sum (``sum_parts``).
        """

    @abstractmethod
    def predict(self, model: nn.Module, images: Any) -> Any:
        """The prediction ``pseudo_label`` and the metric take (e.g. (B, C) float32 class
        probabilities); the teacher and the evaluation call it under ``torch.no_grad``."""

    @abstractmethod
    def pseudo_label(self, prediction: Any) -> PseudoLabels:
        """A teacher's prediction as pseudo-labels with per-element confidence."""

    @abstractmethod
    def metric(self) -> Metric:
        """A fresh accumulator of ``predict`` outputs against ground truth."""

    def check_targets(self, targets: Any) -> None:  # noqa: B027 (optional, no-op by default)
        """Raise ``DatasetError`` for targets this task cannot train on (called by ``collate``,
        and by evaluations for loaders that do not collate with it)."""

    def check_datasets(self, datasets: Mapping[str, Any]) -> None:
        """Raise ``DatasetError`` when the named datasets (``source``, ``target``, ``test``;
        None skipped) cannot serve this task; by default ``check_num_classes`` (ConfigError
        for a task that sets no ``num_classes``)."""
        checks.check_num_classes_set(self)
        checks.check_num_classes(self.num_classes, datasets)

    def collate(self, samples: list[Any]) -> Any:
        """Batch samples (images, ``(image,)`` or ``(image, target)`` pairs), targets checked.

        Raises:
            DatasetError: samples of more than two items, or dicts holding a label key;
                labelled and unlabelled samples mixed; images that are no tensors (a PIL
                image), not float, of different sizes or channels; or bad targets.
        """
        one = [s[0] if isinstance(s, (tuple, list)) and len(s) == 1 else s for s in samples]
        checks.check_samples(one, LABEL_KEYS)
        images, targets = collate_pairs(one)  # 1-tuples (``TensorDataset(x)``) are images
        checks.check_float_images(images)
        if targets is not None:
            self.check_targets(targets)
        return images if targets is None else (images, targets)

    def count(self, images: Any) -> int:
        """The number of images in a batch."""
        return len(images)

    def report_hooks(self, run_dir: Path | None, test: Iterable[Any] | None) -> list[Any]:
        """Task-specific ``Hook``s of a run (e.g. drawings of test predictions); ``run_dir`` is
        None when nothing is written."""
        return []
