"""The Task interface: everything that differs between tasks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from mic.core.batch import LABEL_KEYS, collate_pairs, count_images, select_images
from mic.core.errors import ConfigError, DatasetError, is_whole


@dataclass
class PseudoLabels:
    """A teacher's prediction turned into training targets.

    Attributes:
        labels: targets as the Task's ``loss`` takes them (e.g. (B,) class indices, (B, H, W)
            label maps, or a list of box dicts).
        confidence: float confidence per labelled element, a probability in [0, 1] (checked
            at the first adaptation iteration), in the layout of ``loss``'s weights.
        valid: optional mask, same layout, bool (or 0 and 1): False where an element must
            weigh 0 (e.g. image margins the published recipe never trusts).
        keep: optional flag per image: False leaves it out of consistency losses (e.g. no
            pseudo-box). None: every image takes part.
    """

    labels: Any
    confidence: Tensor | list[Tensor]
    valid: Tensor | list[Tensor] | None = None
    keep: Tensor | Sequence[bool] | None = None

    def __post_init__(self) -> None:
        """Raise ``ConfigError`` when ``confidence`` or ``valid`` is no tensor or list of
        tensors, or not in the labels' layout (tensor labels' shape, one per list label)."""
        size = lambda x: tuple(x.shape) if isinstance(x, Tensor) else len(x)  # noqa: E731
        first = lambda x: x.shape[:1] if isinstance(x, Tensor) else (len(x),)  # noqa: E731
        for name in ("confidence", "valid"):
            x, labels = getattr(self, name), self.labels
            if x is None:
                continue
            if not isinstance(x, (Tensor, list, tuple)):
                kind = type(x).__name__
                raise ConfigError(f"pseudo-labels' {name} is a {kind}, not a tensor or a list")
            if not isinstance(labels, (Tensor, list)):
                continue  # labels of the task's own kind (a dict, a tuple of heads)
            same = type(x) is type(labels)  # the same layout; a tensor and a list: one per image
            differs = size(x) != size(labels) if same else first(x) != first(labels)
            if differs:
                raise ConfigError(
                    f"pseudo-labels' {name} has the layout {size(x)} and their labels "
                    f"{size(self.labels)}: a Task's pseudo_label gives one per label"
                )
        if self.keep is not None and len(self.keep) != (images := count_images(self.labels)):
            raise ConfigError(
                f"pseudo-labels' keep has {len(self.keep)} flags for {images} images: a "
                "Task's pseudo_label gives one per image"
            )

    def check_confidence(self) -> None:
        """Raise ``ConfigError`` unless ``confidence`` holds float probabilities in [0, 1]
        (not logits), and ``valid`` only 0 and 1 (bool, or numbers): the weightings read them
        as such (a 0/255 mask weighed its pseudo-labels 255 times)."""
        masks = self.valid if isinstance(self.valid, (list, tuple)) else [self.valid]
        for v in masks:
            if isinstance(v, Tensor) and v.dtype != torch.bool and ((v != 0) & (v != 1)).any():
                raise ConfigError(
                    f"pseudo-labels' valid must be a mask of 0 and 1 (or False and True), got "
                    f"{v.dtype} values up to {v.max().item():g}: give mask > 0 (weights of "
                    "one's own belong in confidence)"
                )
        parts = self.confidence if isinstance(self.confidence, (list, tuple)) else [self.confidence]
        for c in parts:
            if not isinstance(c, Tensor):
                raise ConfigError(
                    f"pseudo-label confidence holds a {type(c).__name__}, not tensors"
                )
            if not c.is_floating_point() or (c.numel() and not 0 <= c.min() <= c.max() <= 1):
                got = f"{c.dtype} in [{c.min():.3g}, {c.max():.3g}]" if c.numel() else c.dtype
                if c.is_floating_point():  # out of [0, 1]
                    got = f"{got}; logits? apply softmax or sigmoid"
                if c.is_floating_point() and c.isnan().any():
                    got = f"{int(c.isnan().sum())} NaN of {c.numel()}"
                    got += "; NaN or Inf in the target images or the teacher's weights?"
                raise ConfigError(
                    f"pseudo-label confidence must be float probabilities in [0, 1] "
                    f"(Task.pseudo_label), got {got}"
                )

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


#: what the loop, its hooks and mic-train call on a task
TASK_METHODS = ("loss", "predict", "pseudo_label", "metric", "check_targets", "check_datasets")
TASK_METHODS += ("collate", "count", "report_hooks")


def check_num_classes(num_classes: int, datasets: Mapping[str, Any], fix: str = "") -> None:
    """Raise ``DatasetError`` when a dataset declares (``num_classes`` or ``classes``) another
    class count than ``num_classes``; ``fix``: the task's advice (default: image folders')."""
    declared, named = {}, {}
    for name, dataset in datasets.items():
        n = getattr(dataset, "num_classes", None)
        classes = getattr(dataset, "classes", None)
        if isinstance(classes, Sequence) and not isinstance(classes, str):
            n = len(classes) if n is None else n
            named[name] = f" ({', '.join(map(str, classes[:8]))}{', ...' * (len(classes) > 8)})"
        if n is not None:
            declared[name] = n
    odd = [name for name, n in declared.items() if n != num_classes]
    if odd:
        listing = ", ".join(f"{name} has {n}{named.get(name, '')}" for name, n in declared.items())
        test = odd == ["test"]  # source and target agree: the test set's classes are the fault
        raise DatasetError(
            f"class counts disagree: the task/model predicts {num_classes} classes but {listing}. "
            + (
                "The test set must be scored in the source's classes: give it the source's "
                "class list (a reader's classes or source_classes argument), or a test set of "
                "those classes."
                if test
                else "Source and target must share one label space: "
                f"{fix or 'fix the datasets (e.g. move out a folder that is no class)'}, set "
                "dataset.num_classes to match, or keep only some classes where the readers "
                "take a class list (detection's dataset.classes=[...]; image folders: move "
                "the other classes' folders out)."
            )
            + " A Task whose targets are no classes (a regression) overrides check_datasets."
        )


def check_task(task: Any) -> None:
    """Raise ``ConfigError`` when ``task`` lacks a method of ``Task`` (a duck-typed one needs
    the optional ones too) or is a class."""
    lacking = [n for n in TASK_METHODS if not callable(getattr(task, n, None))]
    if lacking or isinstance(task, type):
        what = f"lacks {', '.join(lacking)} of mic.Task" if lacking else "is a class"
        raise ConfigError(
            f"the task {getattr(task, '__name__', type(task).__name__)} {what}: give an "
            "instance of a mic.Task subclass (the optional methods have defaults there)"
        )


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
        if not is_whole(n := getattr(self, "num_classes", None)):  # (NumPy's ints too)
            n = repr(n) if hasattr(self, "num_classes") else "not set"
            raise ConfigError(f"{type(self).__name__}.num_classes is {n}: set it (1 for a task "
                              "without classes) or override check_datasets")  # fmt: skip
        check_num_classes(self.num_classes, datasets)

    def collate(self, samples: list[Any]) -> Any:
        """Batch samples (images, ``(image,)`` or ``(image, target)`` pairs), targets checked.

        Raises:
            DatasetError: samples of more than two items, images that are not float, of
                different sizes, or bad targets.
        """
        one = [s[0] if isinstance(s, (tuple, list)) and len(s) == 1 else s for s in samples]
        labelled = [sorted(s) for s in one if isinstance(s, Mapping) and LABEL_KEYS & set(s)]
        if labelled or any(isinstance(s, (tuple, list)) and len(s) > 2 for s in one):
            got = f"dicts with keys {labelled[0]}" if labelled else "samples of 3 or more items"
            raise DatasetError(
                f"the dataset yields {got}; a sample is an image or an (image, target) pair: "
                "return (image, label) from __getitem__ (or collate them yourself)"
            )
        images, targets = collate_pairs(one)  # 1-tuples (``TensorDataset(x)``) are images
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
        """Task-specific ``Hook``s of a run (e.g. drawings of test predictions); ``run_dir`` is
        None when nothing is written."""
        return []
