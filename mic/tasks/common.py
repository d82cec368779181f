"""What more than one task needs: checks of its models and settings, statistics of
pseudo-labels for logs."""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from numbers import Real
from typing import Any

import torch
from torch import Tensor, nn

from mic.core import ConfigError, DatasetError, check_num_classes
from mic.core.errors import is_whole
from mic.core.teacher import unwrap
from mic.datasets.preflight import check_class_order
from mic.training.evaluation import restored
from mic.training.sampling import DatasetWrapper


def check_class_datasets(
    datasets: Mapping[str, Any],
    num_classes: int,
    names: Sequence[str],
    default_names: Sequence[str],
    fix: str,
) -> list[str]:
    """A task's ``check_datasets`` for datasets that name their classes: ``check_num_classes``
    with the task's ``fix``, and ``check_class_order`` against the task's ``names`` unless they
    are its ``default_names`` (which are for reports only and set no order).

    Returns:
        The names the task goes on with: ``names`` where given, else those of the test set
        (its per-class table), else of another dataset (a run without a test set), else
        ``default_names``.

    Raises:
        DatasetError: another class count, or the task's class names in another order.
    """
    check_num_classes(num_classes, datasets, fix=fix)
    given = list(names) != list(default_names)
    check_class_order(datasets, names if given else None)
    if given:
        return list(names)
    first = {"test": datasets.get("test"), **datasets}
    return named_classes(first, num_classes) or list(default_names)


def named_classes(datasets: Mapping[str, Any], num_classes: int) -> list[str] | None:
    """The class names of the first of ``datasets`` (None skipped; a sampling wrapper's
    reader) that lists ``num_classes`` of them (``classes``: folder names, a COCO json's
    categories), as text; None where none does."""
    for dataset in datasets.values():
        while isinstance(dataset, DatasetWrapper):
            dataset = dataset.dataset
        named = getattr(dataset, "classes", None)
        listed = isinstance(named, Sequence) and not isinstance(named, str)
        if listed and len(named) == num_classes:  # type: ignore[arg-type]
            return [str(n) for n in named]  # type: ignore[union-attr]
    return None


def check_image_dtype(model: Any, images: Any, task: str) -> None:
    """Refuse images whose dtype the model's layers cannot take: integer pixels (uint8) or
    another float dtype than the model's first parameter, outside autocast (torch's
    "expected scalar type Double but found Float", twenty frames deep).

    Args:
        model: the model (no ``nn.Module``, or one without parameters: not checked).
        images: the batch (no tensor, e.g. a list of images: not checked; integer token ids
            of a model of one's own, int64: taken).
        task: the task's name, for the message.

    Raises:
        DatasetError: uint8 images, or float images of another dtype than the model's.
    """
    weight = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
    if weight is None or not weight.is_floating_point() or not isinstance(images, Tensor):
        return
    if images.dtype == torch.uint8:
        raise DatasetError(
            f"{task} takes float images, got {images.dtype}: transform them as the training "
            "images were (e.g. torchvision's ToTensor, then Normalize with the same mean and "
            "std)"
        )
    other = images.is_floating_point() and weight.dtype != images.dtype
    cast = torch.is_autocast_enabled(images.device.type) and images.dtype != torch.float64
    if other and not cast:  # (or "Input type (c10::Half) and bias type (float) ...")
        raise DatasetError(
            f"{task} takes images of the model's dtype ({weight.dtype}), got {images.dtype}: "
            f"give images.to({weight.dtype})"
            + " (or run under torch.autocast)"
            * (images.dtype != torch.float64)
        )


@contextmanager
def predicting(model: nn.Module) -> Iterator[nn.Module]:
    """A model in training mode in eval mode inside the block, each module's mode restored
    after: a prediction in training mode normalised with the batch's statistics, overwrote
    the running ones and dropped units, without a word. A model in eval mode is left as it
    is (``EMATeacher``'s ``norm="batch"`` sets its BatchNorm layers alone to train mode)."""
    if not (isinstance(model, nn.Module) and model.training):  # (or a function)
        yield model
        return
    with restored(model):  # (evaluation's: each module's mode, BatchNorm's buffers)
        yield model.eval()


def check_flag(key: str, value: Any) -> bool:
    """``value`` as a bool; a ``ConfigError`` naming ``key`` for anything but True, False,
    0 and 1 (the text ``'no'`` is true to Python: it switched an option on).

    Raises:
        ConfigError: ``value`` is no bool (nor 0 or 1).
    """
    with contextlib.suppress(Exception):  # (NumPy's bools, 0-d tensors; not text)
        if not isinstance(value, (str, bytes, float)) and value in (0, 1):
            return bool(value)
    raise ConfigError(f"{key} must be True or False, got {value!r}")


def check_whole(key: str, value: Any, least: int = 1, what: str = "") -> None:
    """Refuse a setting that is no whole number >= ``least`` (a width, a count, a size),
    which torch would fail on deep inside, or take silently (a fraction cut down).

    Args:
        key: the setting as a user sets it (``model.bottleneck_dim``).
        value: its value; a float of a whole value passes (YAML ``256.0``).
        least: the smallest value it takes.
        what: a few words on what the setting is, for the message.

    Raises:
        ConfigError: naming ``key``, what it takes and the value given.
    """
    if is_whole(value, least):
        return
    kind = "a positive whole number" if least == 1 else f"a whole number >= {least}"
    raise ConfigError(f"{key} must be {kind}{f' ({what})' if what else ''}, got {value!r}")


def check_dilations(key: str, dilations: Any) -> None:
    """Refuse ASPP dilations that are no non-empty list of positive whole numbers: an empty
    list builds a head of no branches, which fails only at the first forward.

    Raises:
        ConfigError: naming ``key`` and the value given.
    """
    if isinstance(dilations, str) or not isinstance(dilations, Sequence) or not dilations:
        raise ConfigError(
            f"{key} must be a non-empty list of dilations (one ASPP branch each, e.g. "
            f"[6,12,18,24]), got {dilations!r}"
        )
    for d in dilations:
        check_whole(key, d, what="each a dilation of one ASPP branch")


def check_dropout(key: str, p: Any) -> None:
    """Refuse a dropout probability outside [0, 1).

    Raises:
        ConfigError: naming ``key`` and the value given.
    """
    if isinstance(p, bool) or not isinstance(p, Real) or not 0 <= p < 1:
        raise ConfigError(f"{key} must be a probability in [0, 1) (0: none), got {p!r}")


@functools.cache
def _forward_takes_return_features(model_type: type) -> bool:
    return "return_features" in inspect.signature(model_type.forward).parameters


def require_features(model: nn.Module, needed_by: str) -> None:
    """Check, once per model class, that ``model(x, return_features=True)`` returns the logits
    and the features that ``needed_by`` reads.

    Raises:
        ConfigError: the model's forward takes no ``return_features``.
    """
    model = unwrap(model)
    if not _forward_takes_return_features(type(model)):
        raise ConfigError(
            f"{needed_by} needs the model's features, but the forward of "
            f"{type(model).__name__} takes no return_features; use one of mic's models "
            "(mic.tasks.classification.Classifier, the mic.tasks.segmentation models) or add "
            "forward(x, return_features=False) returning (logits, features) when it is True"
        )


def check_class_probabilities(prediction: Any, num_classes: int, layout: str, who: str) -> None:
    """Raise ``ConfigError`` unless ``prediction`` is a tensor of ``layout`` (``"B x C x H x
    W"``: its dimensions), ``num_classes`` on dim 1, naming ``who`` (a task's
    ``pseudo_label``) and, where they are last, the classes' place."""
    dims = len(layout.split(" x "))
    shape = tuple(prediction.shape) if isinstance(prediction, Tensor) else None
    if shape is not None and len(shape) == dims and shape[1] == num_classes:
        return
    last = shape is not None and dims == len(shape) == 4 and shape[-1] == num_classes
    hint = ": the classes are last; permute them to dim 1 (.permute(0, 3, 1, 2))" * last
    got = shape if shape is not None else type(prediction).__name__
    raise ConfigError(
        f"{who} takes {layout.replace('C', str(num_classes))} class probabilities (the "
        f"teacher's predict), the classes on dim 1, got {got}{hint}"
    )


def lazy_metrics(
    module: str, name: str, home: str
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module's ``__getattr__`` and ``__dir__`` (PEP 562) that give its attribute ``name``,
    a task's metric class, from the module ``home`` on first use: torchmetrics is imported
    then, not with the task (``mic-train``'s checks before a run build no metric).

    Args:
        module: the module they serve (its ``__name__``).
        name: the class's name (``SegmentationMetrics``).
        home: the module that defines it (``mic.tasks.segmentation.metrics``).
    """

    def __getattr__(attribute: str) -> Any:
        if attribute == name:
            return getattr(importlib.import_module(home), name)
        raise AttributeError(f"module {module!r} has no attribute {attribute!r}")

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[module]), name})

    return __getattr__, __dir__
