"""Scoring a model through its Task, and AdaBN re-estimation of BatchNorm statistics."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mic.core.batch import move_to, split_sample
from mic.core.checks import check_loader, check_task, note_loader
from mic.core.errors import ConfigError, DatasetError, MicError, is_whole
from mic.core.task import Task
from mic.training.batches import labelled_batch


def to_python(value: Any) -> Any:
    """Tensors (and nests of them) to floats and lists, for JSON and printing."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, dict):
        return {k: to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_python(v) for v in value]
    return value


def in_percent(task: Task) -> bool:
    """Whether the console shows ``task``'s primary metric in percent: its ``in_percent``
    attribute where it sets one, else ``higher_is_better`` (a share such as accuracy, mIoU
    or mAP in percent; an error such as MSE as it is)."""
    given = getattr(task, "in_percent", None)
    return bool(task.higher_is_better if given is None else given)


def shown_metric(value: float, percent: bool = True, unit: str = "%") -> str:
    """A primary metric as the console shows it: in percent with ``unit`` after it (a share:
    ``in_percent``), else as it is, to 4 significant digits (an error, R2, PSNR)."""
    return f"{100 * value:.2f}{unit}" if percent else f"{value:.4g}"


def fresh_metric(task: Task, device: Any) -> Any:
    """``task.metric()`` on ``device``, computed in this process alone (a torchmetrics metric
    does not wait for the other processes of a ``torchrun`` group).

    A metric with ``reset()`` is reset, so that a ``metric()`` that returns one cached object
    scores each evaluation on its own batches.

    Raises:
        ConfigError: ``task.metric()`` returned a class rather than an instance of it, or
            something without callable ``update`` and ``compute`` (a plain function, None),
            or a metric that ranks its scores the other way than ``task.higher_is_better``
            (a torchmetrics ``Metric``'s ``higher_is_better``).
    """
    metric = task.metric()
    kind = type(task).__name__
    if isinstance(metric, type):
        cls = metric.__name__
        raise ConfigError(
            f"{kind}.metric() returned the class {cls}, not an instance of it: return a fresh "
            f"instance, {cls}(...) (e.g. `return MeanSquaredError()`, not `return "
            "MeanSquaredError`), so that each evaluation accumulates its own scores for "
            f"{kind}.primary_metric ({task.primary_metric!r})"
        )
    missing = [m for m in ("update", "compute") if not callable(getattr(metric, m, None))]
    if missing:
        if metric is None:
            what = "None (does it lack a return statement?)"
        elif callable(metric) and hasattr(metric, "__name__"):
            what = f"the function {metric.__name__!r}"
        else:
            what = f"a {type(metric).__name__} object"
        raise ConfigError(
            f"{kind}.metric() returned {what}, which has no {' and no '.join(missing)} method: "
            "metric() must return a fresh accumulator object with update(prediction, targets) "
            "and compute() (compute() returning a dict of named scores or one scalar, e.g. a "
            "torchmetrics Metric such as MeanSquaredError()), from which "
            f"{kind}.primary_metric ({task.primary_metric!r}) is read"
        )
    declared = getattr(metric, "higher_is_better", None)  # torchmetrics' own ranking
    if declared is None and callable(getattr(metric, "items", None)):  # a MetricCollection
        declared = getattr(dict(metric.items()).get(task.primary_metric), "higher_is_better", None)
    told = getattr(task, "higher_is_better", True)
    if not isinstance(told, bool):
        raise ConfigError(f"{kind}.higher_is_better must be True or False, got {told!r}")
    if isinstance(declared, bool) and declared != told:
        raise ConfigError(
            f"{kind}.metric() returns {type(metric).__name__}, by which "
            f"{'higher' if declared else 'lower'} is better, but {kind}.higher_is_better is "
            f"{told}: best.pt, checkpoint.best_by and the console would take the worst "
            f"{task.primary_metric!r} for the best; set higher_is_better = {declared} in {kind}"
        )
    if isinstance(metric, nn.Module):
        metric = metric.to(device)
        for m in metric.modules():
            if hasattr(m, "sync_on_compute"):
                m.sync_on_compute = False
                m._to_sync = False  # what compute() reads; set from sync_on_compute at init
    if callable(getattr(metric, "reset", None)):  # one object handed out at every call must
        metric.reset()  # not carry the batches of the last scoring into this one
    return metric


def primary_value(task: Task, computed: Any) -> Any:
    """The primary metric of what a task metric's ``compute()`` returned (a dict of named
    scores, or one scalar), as it was returned.

    Raises:
        ConfigError: the dict has no score named ``task.primary_metric``, or that score is
            not one number.
    """
    name, kind = task.primary_metric, type(task).__name__
    value = computed
    if isinstance(computed, Mapping):
        if name not in computed:
            keys = ", ".join(repr(k) for k in computed) or "no named score at all"
            raise ConfigError(
                f"{kind}.primary_metric is {name!r}, but {kind}.metric() computes no score of "
                f"that name (its compute() returns {keys}). Set primary_metric to the key of "
                "the score that ranks checkpoints (the one printed at each evaluation and "
                f"scored by the masked_agreement validator), or name that score {name!r} in "
                "metric()"
            )
        value = computed[name]
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        raise ConfigError(
            f"{kind}.metric() computes its primary metric {name!r} as a tensor of shape "
            f"{tuple(value.shape)}, not one number: let compute() return the primary score as "
            "a scalar (per-class scores may sit beside it under other names), or set "
            "primary_metric to the key of such a score"
        )
    return value


def primary_score(task: Task, computed: Any) -> float:
    """The primary metric of what a task metric's ``compute()`` returned (a dict of named
    scores, or one scalar), as a float.

    Raises:
        ConfigError: see ``primary_value``; or the primary score is not a number (None, a
            string, a list: ``float()`` cannot take it). NaN is a number (a segmentation
            whose labels are all ignored scores NaN).
    """
    value = to_python(primary_value(task, computed))
    try:
        if isinstance(value, (str, bytes)):  # float("0.5") would take it
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        kind, name = type(task).__name__, task.primary_metric
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise ConfigError(
            f"{kind}.metric() computes its primary metric {name!r} as a "
            f"{type(value).__name__} ({shown}), not a number: let compute() return the primary "
            "score as a float or a one-element tensor (NaN where nothing could be scored), or "
            "set primary_metric to the key of such a score"
        ) from None


@torch.no_grad()
def evaluate(
    task: Task, model: nn.Module, loader: Iterable[Any], device: Any = None
) -> dict[str, Any]:
    """The task's metrics of ``model`` (in eval mode) on a labelled loader, computed in this
    process alone (under ``torchrun`` the main process scores).

    Returns:
        The metric's named scores as floats and lists, the primary one always a float; a
        metric whose ``compute`` gives one scalar is recorded under ``task.primary_metric``.

    Raises:
        DatasetError: the loader yields no batch, unlabelled batches, batches that are
            not ``(images, targets)`` pairs (dicts, triples: the message names them), or
            targets ``task.check_targets`` refuses (labels outside the classes); its dataset
            declares another class count or order than the task (``task.check_datasets``).
        ConfigError: ``model`` is no ``nn.Module``, ``task`` lacks a Task's methods
            (``check_task``: a Hydra config, or the model in its place); ``task.metric()``
            is not an accumulator instance (see
            ``fresh_metric``), or its named scores lack ``task.primary_metric`` or give it as
            something other than one number (see ``primary_value``, ``primary_score``).
    """
    if isinstance(model, type) or not isinstance(model, nn.Module):  # (task and model swapped)
        got = f"the class {model.__name__}" if isinstance(model, type) else type(model).__name__
        raise ConfigError(f"evaluate(task, model, loader): model must be an nn.Module, got {got}")
    check_task(task)  # a Hydra config, or the model in its place
    check_test_set(task, loader, "evaluate's loader")
    return scores_of(task, model, loader, device)


@torch.no_grad()
def scores_of(
    task: Task, model: nn.Module, loader: Iterable[Any], device: Any = None
) -> dict[str, Any]:
    """``evaluate`` without its check of the loader's dataset, for a caller that made it once
    (``Evaluation``, when it is built) rather than at every evaluation."""
    device = device if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with modes_kept(task, model):
            metric, batches = _updated_metric(task, model, loader, device)
        if not batches:
            raise DatasetError(EMPTY_TEST)
        computed = metric.compute()
        primary = primary_score(task, computed)  # a metric without it: a ConfigError now
        scores = to_python(computed)
        if not isinstance(scores, dict):
            return {task.primary_metric: primary}
        return {**scores, task.primary_metric: primary}
    finally:
        model.train(was_training)


@contextmanager
def modes_kept(task: Task, model: nn.Module) -> Iterator[None]:
    """Raise ``ConfigError`` when, after the block (``task.predict`` in eval mode), a module of
    ``model`` is in another mode than before it (by name; a module made inside is not
    judged): a prediction in training mode scores with the batch's statistics and writes them
    into the model. An error inside the block is raised as it is."""
    modes = {name: m.training for name, m in model.named_modules()}
    yield
    switched = [
        n or "the model" for n, m in model.named_modules() if n in modes and m.training != modes[n]
    ]
    if switched:
        raise ConfigError(
            f"{type(task).__name__}.predict left {len(switched)} module(s) of the model in "
            f"another mode than it found them ({', '.join(switched[:3])}): the caller sets "
            "the mode (an evaluation: eval; the teacher: its BatchNorm policy); predict must "
            "leave it as it is, or restore it (mic.tasks.common.predicting)"
        )


def check_test_set(task: Task, loader: Any, who: str) -> None:
    """``task.check_datasets`` of the dataset behind a test loader (if it has one): a reader
    that numbered its own classes would be scored against the wrong ones.

    Raises:
        DatasetError: another class count or class order, with how to read a test set that
            lacks some of the source's classes; a dataset given for the loader.
    """
    check_loader(loader, who, None)  # a dataset: its samples were scored as batches
    test_set = getattr(loader, "dataset", None)
    if test_set is None:
        return
    try:
        task.check_datasets({"test": test_set})
    except DatasetError as e:
        try:  # (detection's readers take the source's classes as source_classes)
            takes = inspect.signature(type(test_set)).parameters
        except (TypeError, ValueError):
            takes = {}
        reader = type(test_set).__name__
        example = (
            f"{reader}(..., source_classes=source.classes)"
            if "source_classes" in takes
            else f"{reader}(..., classes=source.classes)"
            if "classes" in takes
            else "ImageFolder(root, classes=source.classes)"
        )
        raise DatasetError(
            f"{e} {who}: a test set that lacks some of the source's classes is read with the "
            f"source's class list (e.g. {example}), so that each class keeps its index."
        ) from e


def check_pairs(task: Task, images: Any, targets: Any) -> None:
    """Raise ``DatasetError`` for a batch of a task that says its targets are one per image
    (``targets_per_image``: mic's tasks) with another number of targets than images (a
    tensor of targets, or a detector's list of one dict per image), which torchmetrics would
    meet as a size mismatch or score in part. A task of one's own chooses its own forms of
    images and targets (a dict of modalities, one target a batch)."""
    if not getattr(task, "targets_per_image", False):
        return
    per_image = isinstance(targets, torch.Tensor) and targets.ndim > 0
    per_image |= isinstance(targets, list) and all(isinstance(t, Mapping) for t in targets)
    if per_image and len(targets) != (n := task.count(images)):
        raise DatasetError(
            f"a test batch holds {n} images but {len(targets)} targets: each image needs its "
            "target, as (image, target) pairs batched together (e.g. TensorDataset(x, y) with "
            "collate_fn=task.collate)"
        )


#: how a data error of a test batch names its loader (``note_loader``)
TEST_LOADER = "the test loader: the labelled target data scored"


def _updated_metric(
    task: Task, model: nn.Module, loader: Iterable[Any], device: Any
) -> tuple[Any, int]:
    """A fresh ``task.metric()`` updated with ``model``'s predictions on every batch of
    ``loader`` (the model's mode is the caller's), and the number of batches."""
    metric, batches = fresh_metric(task, device), 0
    collated = getattr(loader, "collate_fn", None) == task.collate  # it checked the targets
    try:
        for batch in loader:
            images, targets = labelled_batch(batch)
            if not collated:  # labels out of range met in torchmetrics otherwise
                task.check_targets(targets)
                check_pairs(task, images, targets)
            prediction = task.predict(model, move_to(images, device))
            metric.update(prediction, move_to(targets, device))
            batches += 1
    except DatasetError as e:
        note_loader(e, TEST_LOADER, "the test set")
        raise
    return metric, batches


def input_channels_problem(error: BaseException, images: Any) -> str | None:
    """The fix for torch's convolution error on the batch's ``images`` themselves
    (``expected input[<their shape>] to have N channels, but got M``): a model built for
    other colour channels than the data's (grey data, an RGB model). None for anything else,
    a mismatch between two layers inside a model included (its traceback locates it)."""
    said = str(error).split("\n")[0]
    found = re.search(r"expected input\[([\d, ]+)\] to have (\d+) channels, but got (\d+)", said)
    shape = [int(n) for n in found[1].split(",")] if found else None
    if not (found and isinstance(images, torch.Tensor) and shape == list(images.shape)):
        return None
    want, got = found[2], found[3]
    grey = " (grey images: convert('RGB') before ToTensor)" if (want, got) == ("3", "1") else ""
    return (
        f"the model's first layer takes {want}-channel images, but the data's have {got} "
        f"(torch: {said}): make the images {want}-channel in the dataset's transform{grey}, or "
        f"build the model for {got} channels (a timm model or mic's: model.in_chans={got}, "
        f"+model.in_chans where its config has none; dataset.mean and dataset.std then give "
        f"{got} values)"
    )


def _shapes(task: Task, model: nn.Module, batch: Any, device: Any) -> str:
    """``; the prediction (8, 1), the targets (8,)``: what the metric was given ("" where
    ``predict`` itself fails)."""

    def shape(x: Any) -> str:
        return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else f"a {type(x).__name__}"

    try:
        images, targets = labelled_batch(batch)
        prediction = task.predict(model, move_to(images, device))
    except Exception:
        return ""
    return f"; the prediction {shape(prediction)}, the targets {shape(targets)}"


@torch.no_grad()
def check_scoring(task: Task, model: nn.Module, batch: Any, device: Any) -> dict[str, Any] | None:
    """Score one labelled batch as ``evaluate`` does, to find a broken ``Task.metric()`` or
    ``predict`` before training: errors are raised, except a ``compute()`` that cannot score
    one batch alone (R2 of one sample: judged at the first evaluation). Model modes are
    restored; no gradients.

    Returns:
        The batch's scores, named as ``evaluate`` records them (None: the metric could not
        score one batch alone).

    Raises:
        ConfigError: see ``evaluate``; a ``predict`` that leaves a module of the model in
            training mode (``modes_kept``); and whatever ``predict`` or ``update`` raise
            (with a note saying where).
    """
    was_training = model.training
    model.eval()
    try:
        with modes_kept(task, model):
            try:
                metric, _ = _updated_metric(task, model, [batch], device)
            except Exception as e:
                images = labelled_batch(batch)[0] if isinstance(e, RuntimeError) else None
                if said := input_channels_problem(e, images):  # (a pair: it was read)
                    raise ConfigError(said) from e
                if hasattr(e, "add_note") and not isinstance(e, MicError):
                    e.add_note(
                        "(raised scoring the first test batch before training: "
                        "Task.metric().update(Task.predict(model, images), targets)"
                        f"{_shapes(task, model, batch, device)})"
                    )
                raise
        try:
            computed = metric.compute()
        except MicError:
            raise
        except Exception:  # a metric that cannot score one batch alone
            return None
        primary = primary_score(task, computed)
        scores = to_python(computed)
        return {**(scores if isinstance(scores, dict) else {}), task.primary_metric: primary}
    finally:
        model.train(was_training)


#: the message for a test loader without a batch
EMPTY_TEST = (
    "the test loader of the evaluation yields no batch, so there is nothing to score (the "
    "metric would be NaN or 0): the test set is empty (mic-train: its size is the data set's "
    "setting, e.g. dataset.test_count, dataset.test.length, or the images of its folder), or, "
    "from Python, smaller than one batch of a DataLoader with drop_last=True; give it labelled "
    "target images (or drop_last=False)"
)


def tracked_batchnorms(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers that evaluate with running statistics (the ones AdaBN
    re-estimates; a layer without ``track_running_stats`` always uses the batch's)."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@contextmanager
@torch.no_grad()
def restored(model: nn.Module) -> Iterator[list[_BatchNorm]]:
    """Inside the block, the modes of ``model``'s modules and the buffers and momentum of its
    tracked BatchNorm layers (yielded) may change; afterwards they are as before."""
    norms = tracked_batchnorms(model)
    modes = {m: m.training for m in model.modules()}
    saved = [(m, m.momentum, [b.clone() for b in m.buffers()]) for m in norms]
    try:
        yield norms
    finally:
        for m, momentum, buffers in saved:
            for b, old in zip(m.buffers(), buffers, strict=True):
                b.copy_(old)
            m.momentum = momentum
        for m, training in modes.items():
            m.training = training


def cycled(loader: Iterable[Any], batches: int) -> Iterator[Any]:
    """``batches`` batches of ``loader``, passing over it again as often as that takes.

    A loader whose sampler has ``epoch`` and ``set_epoch`` (``ResumableSampler``, torch's
    ``DistributedSampler``) is shuffled anew for each further pass (epoch + 1, + 2, ...), so a
    loader of 7 batches asked for 10 gives its 7 and 3 of another order, not the first 3
    again; the sampler's epoch is put back afterwards.

    Raises:
        DatasetError: the loader yields no batch at all.
    """
    sampler = getattr(loader, "sampler", None)
    epoch = getattr(sampler, "epoch", None)
    reshuffle = isinstance(epoch, int) and callable(getattr(sampler, "set_epoch", None))
    n = passes = 0
    try:
        while n < batches:
            if reshuffle:
                sampler.set_epoch(epoch + passes)  # type: ignore[union-attr]
            before = n
            for batch in loader:
                yield batch
                n += 1
                if n == batches:
                    return
            if n == before:
                raise DatasetError(
                    "the target loader of the AdaBN re-estimation yields no batch; give it "
                    "at least one full batch of target images, or set eval.adabn_batches=0"
                )
            passes += 1
    finally:
        if reshuffle:
            sampler.set_epoch(epoch)  # type: ignore[union-attr]


@contextmanager
def batch_of_one_named(message: str) -> Iterator[None]:
    """Raise ``DatasetError(message)`` in place of torch's ValueError for a batch of one image
    in the block, on which a BatchNorm that normalises with the batch's statistics sees one
    value per channel (a BatchNorm1d bottleneck, a BatchNorm2d after global pooling), or for
    a model's own error of it (a ``DatasetError`` flagged ``batch_of_one``: the classifier's)."""
    try:
        yield
    except (ValueError, DatasetError) as e:
        if "more than 1 value per channel" not in str(e) and not getattr(e, "batch_of_one", 0):
            raise
        raise DatasetError(message) from e


@contextmanager
@torch.no_grad()
def recalibrated_batchnorm(
    model: nn.Module, loader: Iterable[Any], batches: int, device: Any = None
) -> Iterator[nn.Module]:
    """AdaBN: inside the block, BatchNorm layers use statistics re-estimated on ``batches``
    batches of ``loader`` (the target); afterwards every buffer is restored.

    Only BatchNorm layers run in train mode during the re-estimation (dropout stays off), and
    the statistics are a cumulative average over the batches (momentum None). A loader
    shorter than ``batches`` is passed over again, in a new order where its sampler allows
    (``cycled``), so the average always covers ``batches`` batches.

    Raises:
        ConfigError: ``batches`` that is no whole number >= 0 (2.5 passed over the whole
            loader), or a loader that is None.
        DatasetError: the loader yields no batch, or a batch of 1 image meets a BatchNorm1d
            layer (give the loader ``drop_last=True``).
    """
    if not is_whole(batches, 0):
        raise ConfigError(f"AdaBN's batches must be a whole number >= 0, got {batches!r}")
    if loader is None and batches > 0:
        raise ConfigError("AdaBN needs a loader of target batches, got None")
    if not tracked_batchnorms(model) or batches <= 0:
        yield model
        return
    device = device if device is not None else next(model.parameters()).device
    with restored(model) as norms:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        for batch in cycled(loader, batches):
            images, _ = split_sample(batch)
            with batch_of_one_named(  # (BatchNorm1d, a bottleneck, on one sample)
                "AdaBN met a batch of 1 image, from which a BatchNorm1d layer cannot estimate "
                "statistics: give the AdaBN loader drop_last=True (as mic-train does) or a "
                "dataset that holds a multiple of its batch size"
            ):
                model(move_to(images, device))
        model.eval()
        yield model
