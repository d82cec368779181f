"""The core's refusals: what the loop, the Task contract, the teacher, the masker and the loss
terms check of what they are given, so that a wrong input ends in a message that names its fix
rather than in torch's traceback or in silently wrong training.

Reading the loop needs none of this module: the core calls each check where its input arrives
(a check of a line or two stays there), and each says what it refuses. ``check_*`` raise,
``warn_*`` warn, ``*_error`` return the error that their caller raises. It imports nothing of
the core but its errors (a check that tells a core class by ``isinstance`` is handed the class).
"""

from __future__ import annotations

import difflib
import inspect
import math
import operator
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from numbers import Integral, Real
from types import GeneratorType
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset, IterableDataset, default_collate
from torch.utils.data.dataloader import _BaseDataLoaderIter

from mic.core.errors import CheckpointError, ConfigError, DatasetError, is_whole

# --- the loop ---------------------------------------------------------------------------------

PRECISIONS = ("fp32", "bf16", "fp16")


def check_kinds(**given: tuple[Any, type | tuple[type, ...], str]) -> None:
    """Raise ``ConfigError`` for a ``name=(value, kind, said)`` whose value is a class or no
    instance of ``kind`` (said: how the message names the kind, e.g. "a UDAMethod")."""
    for name, (value, kind, said) in given.items():
        if isinstance(value, type) or not isinstance(value, kind):
            got = f"the class {value.__name__}" if isinstance(value, type) else type(value)
            wrap = " (mic.UDAMethod(terms) makes one of a dict)" if name == "method" else ""
            raise ConfigError(f"{name} must be {said} instance, got {got}{wrap}")


def check_loop_arguments(
    task: Any, student: nn.Module, method: Any, optimizer: torch.optim.Optimizer, teacher: Any,
    scheduler: Any, world_size: int, device: Any, precision: str, max_grad_norm: float | None,
    iterations: int, adaptation_start: int, seed: int, accumulate: int,
) -> None:  # fmt: skip
    """Raise ``ConfigError`` for what ``AdaptationLoop`` refuses (its docstring lists it);
    warn of the student's trainable parameters that the optimizer leaves out."""
    check_task(task)  # a duck-typed one needs every method
    counts = (iterations, adaptation_start, seed, accumulate)
    for name, value in zip(("iterations", "adaptation_start", "seed", "accumulate"), counts):
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise ConfigError(f"{name} must be an int (a whole number), got {value!r}")
    accepts = inspect.signature(task.loss).parameters.values()  # (m, x, y, weights=, rng=)
    named = {p.name for p in accepts if p.kind != inspect.Parameter.POSITIONAL_ONLY}
    twins = {n: difflib.get_close_matches(n, named - {n}, 1, 0.85) for n in ("weights", "rng")}
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in accepts):  # (a typo's twin:
        named |= {n for n, twin in twins.items() if not twin}  # they'd land in **kwargs)
    missing = " and ".join(f"{n}=" for n in ("weights", "rng") if n not in named)
    if missing:
        typo = " and ".join(f"{twin[0]}=" for twin in twins.values() if twin)
        raise ConfigError(
            f"{type(task).__name__}.loss does not take {missing}"
            f"{f' (it takes {typo}: a typo?)' * bool(typo)}: a Task's loss is "
            "loss(model, images, targets, weights=None, rng=None) (mic.Task), and the "
            "loop passes both by name"
        )
    alone = dist.is_initialized() and dist.get_world_size() > world_size
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    idle = [n for n, p in method.named_parameters() if p.requires_grad and id(p) not in held]
    mine = {id(p) for p in student.parameters()}
    shared = [p for p in (teacher.parameters() if teacher is not None else ()) if id(p) in mine]
    rules = [
        (iterations >= 1, f"iterations must be at least 1, got {iterations}"),
        (
            0 <= adaptation_start <= iterations,
            f"adaptation_start must be in [0, iterations={iterations}], got {adaptation_start}",
        ),
        (
            teacher is not None
            or not any(t.uses_pseudo_labels and t.weight for _, t in method),  # (0: off)
            "the method uses pseudo-labels but no teacher was given: pass "
            "teacher=EMATeacher(student, alpha) (or set teacher in the config)",
        ),
        (precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {precision!r}"),
        (not (unusable := device_problem(device)), f"device={str(device)!r}, but {unusable}"),
        (accumulate >= 1, f"accumulate must be at least 1, got {accumulate}"),
        (
            max_grad_norm is None or max_grad_norm > 0,
            f"max_grad_norm must be > 0 (None: no clipping), got {max_grad_norm}",
        ),
        (
            any(id(p) in held for p in student.parameters()),
            "the optimizer holds none of the student's parameters: the student would not train",
        ),
        (
            not idle,
            f"the optimizer does not hold {len(idle)} of the method's parameters "
            f"({', '.join(idle[:3])}{', ...' if len(idle) > 3 else ''}): they would never "
            "train; build it over [*student.parameters(), *method.parameters()]",
        ),
        (
            adaptation_start == 0 or any(not t.uses_target and t.weight for _, t in method),
            f"no term of the method runs before adaptation_start={adaptation_start} (each "
            "has uses_target = True or weight 0), so those iterations would train nothing: add "
            "the source loss (mic.SourceSupervision; beside DomainAdversarial, "
            "SharedSourceSupervision), set uses_target = False on terms that need no target "
            "data, or adaptation_start=0",
        ),
        (
            any(t.weight for _, t in method),
            "every loss term of the method has weight 0 (switched off): nothing would train",
        ),
        (
            not shared,
            f"the teacher shares {len(shared)} parameters with the student (e.g. its model is "
            "the student): predicting would switch the student to eval mode mid-iteration; a "
            "teacher is a copy (EMATeacher(student, alpha=0) follows the student exactly)",
        ),
        (
            not alone,
            "a torchrun process group is set up but the loop would train each process "
            "alone; pass collective=mic.training.ProcessGroup()",
        ),
    ]
    for ok, message in rules:
        if not ok:
            raise ConfigError(message)
    if scheduler is not None:
        check_scheduler(scheduler, optimizer)
    left = [n for n, p in student.named_parameters() if p.requires_grad and id(p) not in held]
    if left:  # (a head trained alone is set so: requires_grad_(False) on the rest)
        warnings.warn(
            f"the optimizer does not hold {len(left)} trainable parameters of the student "
            f"({', '.join(left[:3])}{', ...' if len(left) > 3 else ''}): they get gradients "
            "but never change; freeze them (requires_grad_(False)) if that is meant",
            stacklevel=3,
        )


def check_scheduler(scheduler: Any, optimizer: torch.optim.Optimizer) -> None:
    """Raise ``ConfigError`` for a scheduler built on another optimizer than the loop's (the
    learning rate would never change) or one whose ``step`` needs arguments (e.g.
    ``ReduceLROnPlateau``'s metric: it failed after the first optimiser step)."""
    kind = type(scheduler).__name__
    if getattr(scheduler, "optimizer", optimizer) is not optimizer:
        raise ConfigError(
            f"the scheduler ({kind}) was built on another optimizer than the loop's, so the "
            "loop's learning rate would never change: build it over the loop's optimizer"
        )
    step = getattr(scheduler, "step", None)
    try:
        inspect.signature(step).bind()  # type: ignore[arg-type]
    except TypeError:  # (no step, or one that takes arguments)
        said = f"{kind}.step{inspect.signature(step)}" if callable(step) else f"{kind}, no step()"
        raise ConfigError(
            f"the loop steps its scheduler once per iteration without arguments, but {said}: "
            "step such a scheduler in a Hook of your own (e.g. after each evaluation, with its "
            "metric) and give the loop scheduler=None"
        ) from None
    except ValueError:  # a builtin's signature cannot be read: taken
        pass


def warn_no_scheduler_state(step: int) -> None:
    """Warn that a loaded loop state holds no scheduler state (its loop had none)."""
    warnings.warn(
        f"the loop state holds no scheduler state (the loop that wrote it had no scheduler): "
        f"this loop's scheduler starts from its beginning at iteration {step}",
        stacklevel=3,
    )


def device_problem(device: Any) -> str:
    """Why this process cannot train on ``device`` (a ``torch.device``, its name or a CUDA
    index; None: not checked, the loop takes the student's) and what to use instead, or ""
    where it can."""
    try:
        chosen = torch.device(device if device is not None else "cpu")
    except (RuntimeError, TypeError):  # (torch's words list every device type it knows)
        return "it is no torch device: use 'cpu', 'cuda' or 'cuda:<index>'"
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if chosen.type == "cuda" and 0 < count <= (chosen.index or 0):
        return f"this machine has {count} CUDA devices: use 'cuda' or 'cuda:<0 ... {count - 1}>'"
    lacks = {
        "cuda": not count and "CUDA is not available here",
        "mps": not torch.backends.mps.is_available() and "MPS is not available here",
        "meta": "the meta device holds no data, nothing trains there",  # (torch: "unsupported
    }.get(chosen.type)  # scalarType")
    return f"{lacks}: use 'cpu'" if lacks else ""


def check_hooks(hooks: Any, hook: type) -> list[Any]:
    """``hooks`` as a list, each an instance of ``hook`` (``mic.Hook``; else a ConfigError
    naming what it is), none listed twice."""
    if isinstance(hooks, hook) or not isinstance(hooks, Iterable):
        kind = type(hooks).__name__
        raise ConfigError(f"hooks must be a list of mic.Hook instances, got a {kind}")
    for h in (hooks := list(hooks)):
        if not isinstance(h, hook):
            got = f"the class {h.__name__}" if isinstance(h, type) else f"a {type(h).__name__}"
            raise ConfigError(f"hooks must be mic.Hook instances (subclasses of it), got {got}")
        if sum(g is h for g in hooks) > 1:  # (each record written twice, a file left open)
            raise ConfigError(f"the loop's hooks list the hook {type(h).__name__} twice")
    return hooks


def warn_default_collate(task: Any, loaders: Mapping[str, Any]) -> None:
    """Warn of a loader batched by torch's default_collate where ``task`` collates (and may
    make its targets) of its own (the caller knows that: ``task`` is then given)."""
    for name, loader in loaders.items():
        if getattr(loader, "collate_fn", None) is default_collate:
            warnings.warn(
                f"the {name} loader batches with torch's default_collate, not with "
                f"{type(task).__name__}.collate, which checks (or makes) the targets; "
                "give the DataLoader collate_fn=task.collate",
                stacklevel=3,
            )


def warn_nothing_to_train(step: int, iterations: int) -> None:
    """Warn that a run at ``step`` of its ``iterations`` trains nothing."""
    warnings.warn(
        f"AdaptationLoop.run: the loop is at iteration {step} of its "
        f"{iterations}: it trains nothing; raise loop.iterations to train on",
        stacklevel=3,
    )


def batch_changed_error(name: str) -> ConfigError:
    """The error of loss term ``name`` that changed the batch's images or labels."""
    return ConfigError(
        f"loss term {name!r} changed the batch's images or the source's labels "
        "in place or replaced them (e.g. x.add_(noise), ctx.source_images = x): "
        "the teacher's pseudo-labels, MIC and the terms after it would read the "
        "changed ones; change a copy of its own (x = x + noise)"
    )


def check_new_losses(named: Mapping[str, Tensor], losses: Mapping[str, Tensor]) -> None:
    """Raise ``ConfigError`` when a term's losses ``named`` reuse a name of ``losses``."""
    if set(named) & set(losses):
        clash = sorted(set(named) & set(losses))
        raise ConfigError(f"two loss terms report a loss named {clash}; rename one")


def warn_gradless(warned: set[str], term: str, key: str, loss: Tensor) -> None:
    """Warn (once per loss: ``warned`` holds those warned of) of a non-zero loss without a
    gradient: it trains nothing."""
    if torch.is_grad_enabled() and key not in warned and loss.item() != 0:
        warned.add(key)
        which = "its loss" if key == term else f"its loss {key!r}"
        warnings.warn(
            f"loss term {term!r} (or the Task.loss it calls) returned {which} without a "
            f"gradient ({loss.item():.4g} times the term's weight; computed under no_grad, "
            "detached, or a number): it trains nothing; return the loss tensor itself (0 or "
            "a plain 0.0: no loss this time)",
            stacklevel=2,
        )


def check_something_trains(step: int, losses: Mapping[str, Tensor], graded: set[str]) -> None:
    """Raise ``ConfigError`` when no loss of iteration ``step`` that is not 0 is among the
    ``graded`` ones (those with a gradient): nothing would train."""
    moving = [k for k, v in losses.items() if v.item() != 0]
    if moving and not graded & set(moving):
        raise ConfigError(
            f"no loss of iteration {step + 1} that is not 0 has a gradient ({moving}): "
            "nothing trains; a term (and a Task.loss it calls) returns its loss tensor itself "
            "(not computed under no_grad, detached, or taken with .item())"
        )


def check_loop_state(state: Any, kind: str) -> None:
    """Raise ``CheckpointError`` for what is no loop state (a path, a model's weights: a
    KeyError or AttributeError before) or one written with another optimiser class."""
    needed, got = ("step", "student", "method", "optimizer"), type(state).__name__
    missing = [k for k in needed if not isinstance(state, Mapping) or k not in state]
    if missing:
        raise CheckpointError(
            f"load_state_dict takes what AdaptationLoop.state_dict returned, got {got}"
            + (f" without {missing}" * isinstance(state, Mapping))
            + ": load a file first (torch.load); a model's weights go in load_initial_weights"
        )
    written = state.get("optimizer_class")
    if written is not None and written != kind:  # torch loads it, and fails steps later
        raise CheckpointError(
            f"the state was written by a loop whose optimiser is {written}, this loop's is "
            f"{kind}: its state (moments, step counts) does not carry over. Build the loop "
            f"with {written}, or start anew from its weights (load_initial_weights)"
        )


# --- batches ----------------------------------------------------------------------------------


def check_loader(
    loader: Any, who: str, use: str | None, error: type[Exception] = DatasetError
) -> None:
    """Raise ``error`` when ``loader``, given where a loader of batches goes, is a map-style
    ``Dataset`` (iterated, it yields samples one at a time) or, with ``use`` (how it is passed
    over again), an iterator that cannot start over (a generator, a DataLoader's iterator; a
    loader of one's own whose ``__iter__`` restarts passes)."""
    kind = type(loader).__name__
    builtin = isinstance(loader, Iterator) and type(loader).__module__ in ("builtins", "itertools")
    if use is not None and (builtin or isinstance(loader, (GeneratorType, _BaseDataLoaderIter))):
        raise error(
            f"{who} is an iterator ({kind}), used up after one pass, but {use}: give a "
            "DataLoader or a list of batches"
        )
    if isinstance(loader, Dataset) and not isinstance(loader, IterableDataset):
        raise error(  # its samples were taken for batches
            f"{who} is a dataset ({kind}), which yields one sample at a time where batches go: "
            "give DataLoader(dataset, batch_size=..., collate_fn=task.collate)"
        )


def not_iterable(loader: Any, who: str) -> ConfigError:
    """What to say of a training loader that is no iterable (None; a dataset of a class of
    its own, as the bundled ones are, which is no torch ``Dataset``)."""
    kind = type(loader).__name__
    if hasattr(loader, "__getitem__") and hasattr(loader, "__len__"):
        return ConfigError(  # (a sequence of batches by index the loop never took: no iterator)
            f"{who} ({kind}) is not iterable: a dataset? give DataLoader(dataset, "
            "batch_size=..., collate_fn=task.collate); else a DataLoader or a list of batches"
        )
    return ConfigError(f"{who} must be a DataLoader or a list of batches, got {kind}")


def batching_error(items: list[Any], what: str, error: Exception) -> DatasetError | None:
    """The ``DatasetError`` that says why ``items`` (``"images"`` or ``"targets"``) did not
    batch (``error``: the batching function's TypeError or RuntimeError), or None where the
    items do not show it (the error is then re-raised as it came)."""
    if isinstance(error, TypeError):  # (default_collate's, of a PIL image past the one read)
        odd = sorted({f"{type(x).__module__}.{type(x).__name__}" for x in items
                      if not isinstance(x, torch.Tensor)})  # fmt: skip
        if what != "images" or not odd:
            return None
        return DatasetError(
            f"one batch holds images that are {', '.join(odd)} objects, not tensors: end the "
            "dataset's transform with torchvision's ToTensor() on every path of it"
        )
    shapes = sorted({tuple(getattr(x, "shape", ())) for x in items})
    if len(shapes) < 2:
        return None
    if what == "images" and len({s[1:] for s in shapes}) == 1 and len(shapes[0]) == 3:
        return DatasetError(  # grey beside colour images: the sizes agree
            f"one batch holds images of {sorted({s[0] for s in shapes})} channels "
            f"{shapes}; convert every image to the same channels in the dataset (grey "
            "ones to RGB: Image.convert('RGB') before ToTensor)"
        )
    return DatasetError(
        f"one batch holds {what} of different sizes {shapes}; give the dataset a transform "
        "that resizes or crops every image (and label) to one size"
    )


def note_loader(error: DatasetError, loader: str, named_by: str | None = None) -> None:
    """Note on ``error`` the ``loader`` whose batch raised it (a collate's checks read the same
    for every loader), unless its message names it (``named_by``, default ``loader``)."""
    if (named_by or loader) not in str(error):
        error.add_note(f"(in a batch of {loader})")


# --- the Task contract and its pseudo-labels ---------------------------------------------------

#: what the loop, its hooks and mic-train call on a task
TASK_METHODS = ("loss", "predict", "pseudo_label", "metric", "check_targets", "check_datasets")
TASK_METHODS += ("collate", "count", "report_hooks")


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


def check_num_classes_set(task: Any) -> None:
    """Raise ``ConfigError`` when ``task.num_classes`` is not set to a whole number >= 1."""
    if not is_whole(n := getattr(task, "num_classes", None)):  # (NumPy's ints too)
        n = repr(n) if hasattr(task, "num_classes") else "not set"
        raise ConfigError(f"{type(task).__name__}.num_classes is {n}: set it (1 for a task "
                          "without classes) or override check_datasets")  # fmt: skip


def check_samples(samples: list[Any], label_keys: frozenset[str]) -> None:
    """Raise ``DatasetError`` for samples that are no image or ``(image, target)`` pair: dicts
    holding a key of ``label_keys``, or 3 or more items."""
    labelled = [sorted(s) for s in samples if isinstance(s, Mapping) and label_keys & set(s)]
    if labelled or any(isinstance(s, (tuple, list)) and len(s) > 2 for s in samples):
        got = f"dicts with keys {labelled[0]}" if labelled else "samples of 3 or more items"
        raise DatasetError(
            f"the dataset yields {got}; a sample is an image or an (image, target) pair: "
            "return (image, label) from __getitem__ (or collate them yourself)"
        )


def check_float_images(images: Any) -> None:
    """Raise ``DatasetError`` for a batch of images that is a tensor but not a float one."""
    if isinstance(images, Tensor) and not images.is_floating_point():
        raise DatasetError(
            f"the dataset yields {images.dtype} images, but models take float images; "
            "convert them in its transform (e.g. torchvision's ToTensor, or "
            "v2.ToDtype(torch.float32, scale=True) then Normalize)"
        )


def check_pseudo_label_layout(pseudo: Any, count_images: Any) -> None:
    """Raise ``ConfigError`` when ``pseudo``'s (``PseudoLabels``) ``confidence`` or ``valid``
    is no tensor or list of tensors, or not in the labels' layout (tensor labels' shape, one
    per list label), or ``keep`` holds not one flag per image (``count_images(labels)``)."""
    size = lambda x: tuple(x.shape) if isinstance(x, Tensor) else len(x)  # noqa: E731
    first = lambda x: x.shape[:1] if isinstance(x, Tensor) else (len(x),)  # noqa: E731
    for name in ("confidence", "valid"):
        x, labels = getattr(pseudo, name), pseudo.labels
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
                f"{size(pseudo.labels)}: a Task's pseudo_label gives one per label"
            )
    if pseudo.keep is not None and len(pseudo.keep) != (images := count_images(pseudo.labels)):
        raise ConfigError(
            f"pseudo-labels' keep has {len(pseudo.keep)} flags for {images} images: a "
            "Task's pseudo_label gives one per image"
        )


def check_confidence(pseudo: Any) -> None:
    """Raise ``ConfigError`` unless ``pseudo.confidence`` holds float probabilities in [0, 1]
    (not logits), and ``pseudo.valid`` only 0 and 1 (bool, or numbers)."""
    masks = pseudo.valid if isinstance(pseudo.valid, (list, tuple)) else [pseudo.valid]
    for v in masks:
        if isinstance(v, Tensor) and v.dtype != torch.bool and ((v != 0) & (v != 1)).any():
            raise ConfigError(
                f"pseudo-labels' valid must be a mask of 0 and 1 (or False and True), got "
                f"{v.dtype} values up to {v.max().item():g}: give mask > 0 (weights of "
                "one's own belong in confidence)"
            )
    confidence = pseudo.confidence
    parts = confidence if isinstance(confidence, (list, tuple)) else [confidence]
    for c in parts:
        if not isinstance(c, Tensor):
            raise ConfigError(f"pseudo-label confidence holds a {type(c).__name__}, not tensors")
        if not c.is_floating_point() or (c.numel() and not 0 <= c.min() <= c.max() <= 1):
            got = f"{c.dtype} in [{c.min():.3g}, {c.max():.3g}]" if c.numel() else c.dtype
            if c.is_floating_point():  # out of [0, 1]
                got = f"{got}; logits? apply softmax or sigmoid"
            if c.dtype == torch.bool:  # (a thresholded confidence)
                got = (
                    "a bool mask; a mask of the elements that may carry weight is "
                    "PseudoLabels(..., valid=mask), beside probabilities in confidence"
                )
            if c.is_floating_point() and c.isnan().any():
                got = f"{int(c.isnan().sum())} NaN of {c.numel()}"
                got += "; NaN or Inf in the target images or the teacher's weights?"
            raise ConfigError(
                f"pseudo-label confidence must be float probabilities in [0, 1] "
                f"(Task.pseudo_label), got {got}"
            )


def check_first_pseudo_labels(task: Any, pseudo: Any, prediction: Any, source_targets: Any) -> None:
    """The one look at the teacher's first pseudo-labels: ``check_confidence``, a warning when
    tensor labels and the source's targets differ in their number of dimensions ((B, 1)
    against (B,): a loss may broadcast them to B x B pairs), and a ``ConfigError`` for labels
    that the task's own ``check_targets`` refuses (else blamed on a dataset's labels)."""
    check_confidence(pseudo)
    labels = pseudo.labels
    tensors = isinstance(labels, Tensor) and isinstance(source_targets, Tensor)
    if tensors and labels.dim() != source_targets.dim():
        shape = tuple(prediction.shape) if isinstance(prediction, Tensor) else None
        made = f" (the teacher's prediction: {shape})" if shape else ""
        warnings.warn(
            f"Task.pseudo_label gives labels of shape {tuple(labels.shape)}{made} where the "
            f"source's targets are {tuple(source_targets.shape)}: a loss that broadcasts "
            "them, or a model's output of that layout against the targets, trains on pairs "
            "of different samples; give the model's output and the pseudo-labels the "
            "targets' layout",
            stacklevel=3,
        )
    try:
        task.check_targets(labels)
    except DatasetError as e:
        said = f"{type(task).__name__}.pseudo_label gives labels that its loss"
        raise ConfigError(f"{said} does not take as targets: {e}") from None


# --- what the terms of an iteration share (IterationContext) -----------------------------------


def check_stream(seed: int, rank: int, world_size: int, micro: int, micro_batches: int) -> None:
    """Raise ``ConfigError`` for a ``RandomStream`` seed that torch's generators do not take,
    or a rank or micro-batch outside [0, world_size) or [0, micro_batches)."""
    if not -(2**63) <= seed < 2**64:  # (it failed at the first draw)
        raise ConfigError(f"RandomStream: seed {seed} must lie in [-2**63, 2**64)")
    if not (0 <= rank < world_size and 0 <= micro < micro_batches):  # rows of others
        raise ConfigError(
            f"RandomStream: rank {rank} and micro {micro} must lie in [0, world_size="
            f"{world_size}) and [0, micro_batches={micro_batches})"
        )


def early_target_error(term: str, adaptation_start: int) -> ConfigError:
    """The error of a term that reads the target images before ``adaptation_start``."""
    return ConfigError(
        f"loss term '{term}' reads the target images (or the pseudo-labels, the "
        f"teacher's prediction on them) before adaptation_start="
        f"{adaptation_start}, where only terms with uses_target = False run: set "
        "uses_target = True on it (it then starts at adaptation_start), or read them "
        "only when ctx.adapting"
    )


def replaced_target_error(term: str) -> ConfigError:
    """The error of a term that replaced ``ctx.target_images``."""
    return ConfigError(
        f"loss term '{term}' replaced ctx.target_images: the teacher's "
        "pseudo-labels, MIC and the terms after it would read its images, not the "
        "batch; transform a copy of its own (x = augment(ctx.target_images))"
    )


def changed_pseudo_labels_error(readers: list[str], term: str) -> ConfigError:
    """The error of pseudo-labels changed in place after the terms ``readers`` read them."""
    return ConfigError(
        f"the pseudo-labels (or weights made from their confidence) were changed in place "
        f"after loss term(s) {', '.join(map(repr, readers))} read them, and loss "
        f"term '{term}' would train on the changed ones: a Task's loss or a term "
        "must not modify its targets or weights in place (targets * 9, not targets.mul_(9))"
    )


def no_teacher_error(term: str) -> ConfigError:
    """The error of a term that reads pseudo-labels in a loop without a teacher."""
    return ConfigError(
        f"loss term '{term}' reads ctx.pseudo_labels but the loop has no teacher: "
        "set uses_pseudo_labels = True on its class (the loop then needs a teacher)"
    )


def two_branches_error(first: str, term: str, forward: Any) -> ConfigError:
    """The error of terms ``first`` and ``term`` of two branches reading one shared pass."""
    name = getattr(forward, "__name__", "<the pass>")
    return ConfigError(
        f"loss terms '{first}' and '{term}' read the shared forward pass "
        f"'{name}' in two branches (a term that does not name a pass as its "
        f"shared_forward runs alone): set shared_forward = {name} on each term that "
        "reads it, so that the loop runs them together and back-propagates it once"
    )


# --- the teacher -------------------------------------------------------------------------------


def check_ema_settings(alpha: Any, buffers: Any, norm: Any, model: Any) -> None:
    """Raise ``ConfigError`` for an EMA decay outside [0, 1], an unknown buffer policy or
    normalisation, or a ``model`` (unwrapped) that is no ``nn.Module``."""
    if isinstance(alpha, bool) or not (isinstance(alpha, Real) and 0.0 <= alpha <= 1.0):
        raise ConfigError(f"teacher.alpha must lie in [0, 1], got {alpha!r}")
    if buffers not in ("own", "ema", "copy"):
        raise ConfigError(f"teacher.buffers must be 'own', 'ema' or 'copy', got {buffers!r}")
    if norm not in ("batch", "running"):
        raise ConfigError(f"teacher.norm must be 'batch' or 'running', got {norm!r}")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"the teacher follows a student model, got {type(model).__name__}")


def update_step(step: Any) -> int:
    """``step`` as an int (an int, NumPy's or a 0-d tensor's); ``ConfigError`` for what is
    no whole number >= 0 (a step of 1.5 gave a fractional decay)."""
    try:
        whole = operator.index(step) if not isinstance(step, bool) else -1
    except TypeError:
        whole = -1
    if whole < 0:
        raise ConfigError(
            f"the teacher's update step must be an int >= 0 (the iteration), got {step!r}"
        )
    return whole


def check_same_parameters(teacher: nn.Module, student: nn.Module) -> None:
    """Raise ``ConfigError`` unless the teacher's parameters are the student's by name and
    order (the EMA pairs them in order)."""
    mine, its = ([n for n, _ in m.named_parameters()] for m in (teacher, student))
    if mine != its and sorted(mine) == sorted(its):  # would average other layers
        raise ConfigError(
            "the student's parameters are registered in another order than the "
            "teacher's (a module replaced or added after the teacher was made), and "
            "the EMA pairs them in order: make the teacher after the student's last change"
        )
    if mine != its:  # another model of the same shapes: averaged silently
        a, b = next((a, b) for a, b in zip([*mine, None], [*its, None]) if a != b)
        raise ConfigError(
            f"the teacher is not the student's architecture: its parameters are named "
            f"otherwise (first: the teacher's {a!r}, the student's {b!r}); make it from "
            "the student"
        )


def check_tensor_pairs(teacher: list[Tensor], student: list[Tensor]) -> None:
    """Raise ``ConfigError`` unless the teacher's tensors match the student's in number and
    shape and their first float pair lies on one device (a student of another dtype is
    averaged in the teacher's: an fp32 EMA of bf16)."""
    if len(teacher) != len(student) or any(t.shape != s.shape for t, s in zip(teacher, student)):
        raise ConfigError("the teacher is not the student's architecture (tensors differ)")
    pair = next(((t, s) for t, s in zip(teacher, student) if t.is_floating_point()), None)
    if pair is not None and pair[0].device != pair[1].device:  # moved after the teacher was made
        raise ConfigError(
            f"the teacher is on {pair[0].device} and the student on {pair[1].device}: "
            "move the teacher with it (teacher.to(device))"
        )


# --- maskers and augmentations ------------------------------------------------------------------


def check_augmentation_instance(aug: Any, who: str) -> None:
    """Raise ``ConfigError`` for ``who``'s augmentation given as a class or not callable."""
    if isinstance(aug, type) or not (aug is None or callable(aug)):
        got = f"the class {aug.__name__}" if isinstance(aug, type) else repr(aug)
        raise ConfigError(
            f"{who}'s augmentation must be an instance (e.g. mic.StrongAugmentation()) or "
            f"None, got {got}"
        )


def check_images(images: Any, who: str) -> None:
    """Raise ``ConfigError`` unless ``images`` is a (B, C, H, W) float tensor or a list of
    (C, H, W) ones, what ``who`` (a masker, an augmentation) takes."""
    listed = isinstance(images, (list, tuple)) and all(
        isinstance(x, Tensor) and x.dim() == 3 for x in images
    )
    if (isinstance(images, Tensor) and images.dim() == 4) or listed:
        dtypes = {x.dtype for x in (images if listed else [images])}
        if all(d.is_floating_point for d in dtypes):
            return
        raise ConfigError(
            f"{who} takes float images (normalised, or in [0, 1]), got {sorted(map(str, dtypes))}:"
            " convert them, e.g. x.float() / 255 for 8-bit images"
        )
    got = f"shape {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
    raise ConfigError(
        f"{who} takes images as a (B, C, H, W) tensor or a list of (C, H, W) ones, got {got}: "
        "for images of a task's own kind (a dict of modalities) write a mic.Masker that takes "
        "them (BlockMasker.mask(x) gives the block keep-mask of a (B, C, H, W) tensor)"
    )


def check_block_masker(block_size: Any, ratio: Any, augmentation: Any, fill: Any = None) -> None:
    """Raise ``ConfigError`` for ``BlockMasker``'s settings out of range (its Raises)."""
    channel_values(fill, "masker fill (the withheld pixels' value)")
    if not is_whole(block_size):
        raise ConfigError(
            f"masker block_size must be a whole number of pixels >= 1, got {block_size!r}"
        )
    check_augmentation_instance(augmentation, "BlockMasker")
    if isinstance(ratio, bool) or not (isinstance(ratio, Real) and 0 <= ratio < 1):
        raise ConfigError(f"masker ratio must be a probability in [0, 1), got {ratio!r}")


def channel_values(values: Any, what: str) -> list[float] | None:
    """``values`` (a number, a sequence, a tensor or a NumPy array of numbers, or None) as a
    list of floats, one per image channel or one for all (a normalisation's mean and std, a
    masker's fill).

    Raises:
        ConfigError: anything else (text, booleans, nested lists, a mapping, an empty list, a
            value that is not finite), naming ``what``.
    """
    if values is None:
        return None
    listed = values.tolist() if hasattr(values, "tolist") and hasattr(values, "shape") else values
    listed = [listed] if isinstance(listed, Real) else listed  # (a number, a 0-d tensor)
    ok = isinstance(listed, Sequence) and not isinstance(listed, (str, bytes)) and len(listed)
    numbers = ok and all(isinstance(v, Real) and not isinstance(v, bool) for v in listed)
    if not (numbers and all(math.isfinite(v) for v in listed)):
        raise ConfigError(
            f"{what} must be finite numbers, one per image channel or one for all, got {values!r}"
        )
    return [float(v) for v in listed]


def one_value_per_channel(error: ValueError, who: str) -> ConfigError | None:
    """``ConfigError`` in place of torch's ValueError of a BatchNorm layer in training mode that
    sees one value per channel (a batch of one image into a BatchNorm1d head, or features of
    one pixel), where ``who`` (the teacher, with ``norm="batch"``) predicts; None for another
    ValueError."""
    if "more than 1 value per channel when training" not in str(error):
        return None
    return ConfigError(
        f"{who} normalises BatchNorm with the predicted batch's statistics (EMATeacher's "
        "norm='batch', as published), but a BatchNorm layer saw one value per channel (one "
        "image into a BatchNorm1d head, or features of one pixel): predict on 2 or more "
        "images (loader.target_batch_size), or take its running statistics "
        "(EMATeacher(..., norm='running'); teacher.norm=running)"
    )


def check_fill(fill: Tensor, images: Tensor) -> None:
    """Raise ``ConfigError`` for a masker's ``fill`` ((1, F, 1, 1)) of another length than the
    channels of ``images`` ((B, C, H, W)) and 1."""
    if fill.shape[1] not in (1, images.shape[1]):
        raise ConfigError(
            f"the masker's fill has {fill.shape[1]} values but the images have "
            f"{images.shape[1]} channels: give one value per channel, or one for all"
        )


def check_masker(masker: Any, masker_class: type) -> None:
    """Raise ``ConfigError`` for MIC's masker that is no ``masker_class`` (``mic.Masker``)
    instance or callable (None, a number, a class, a module that masks nothing, such as an
    augmentation), or that does not take ``(images, rng)``."""
    module = isinstance(masker, nn.Module) and not isinstance(masker, masker_class)
    if not callable(masker) or isinstance(masker, type) or module:
        got = f"the class {masker.__name__}" if isinstance(masker, type) else type(masker)
        nothing = ", which masks nothing (an augmentation goes into BlockMasker's)" * module
        raise ConfigError(
            f"MIC's masker must be a Masker (e.g. BlockMasker(32)), got {got}{nothing}"
        )
    plain = isinstance(masker, masker_class) and type(masker).__call__ is nn.Module.__call__
    call = masker.forward if plain else masker  # (a __call__ of its own: what is called)
    try:
        inspect.signature(call).bind(None, None)
    except TypeError:  # (was a TypeError at the first adapting iteration)
        name = getattr(masker, "__name__", type(masker).__name__)
        raise ConfigError(
            f"MIC's masker {name}{inspect.signature(call)} must take (images, rng): the "
            "loop passes the term's random stream to draw from"
        ) from None
    except ValueError:  # a builtin's signature cannot be read: taken
        pass


def check_masked(masker: Any, masked: Any, images: Any) -> None:
    """Raise ``ConfigError`` when a masker returned images of another shape, dtype or device
    than it was given (another kind of output: ``check_views`` names it)."""
    got, given = _layouts(masked), _layouts(images)
    if isinstance(masked, Tensor) == isinstance(images, Tensor) and got != given:
        i = next((i for i, (a, b) in enumerate(zip(got, given)) if a != b), None)
        said = f"{got[i]} for {given[i]}" if i is not None else f"{len(got)} for {len(given)}"
        raise ConfigError(
            f"MIC's masker ({type(masker).__name__}) returned images of another shape, "
            f"dtype or device than it was given ({said}): a Masker withholds regions of the "
            "images, and returns them as they came"
        )


def _layouts(images: Any) -> list[tuple[Any, ...] | None]:
    """(shape, dtype, device) of a tensor, or of each tensor of a list (None for what is no
    tensor, so that images of a task's own kind compare equal)."""
    listed = list(images) if isinstance(images, (list, tuple)) else [images]
    return [(tuple(x.shape), x.dtype, x.device) if isinstance(x, Tensor) else None for x in listed]


# --- loss terms and methods ----------------------------------------------------------------------


def check_part_weights(weights: Mapping[str, Any], loss: Any, setting: str) -> None:
    """Raise ``ConfigError`` for part weights (made by the option ``setting``) that are no
    finite numbers >= 0 or name a part that the Task ``loss`` (a scalar or named parts) lacks,
    and for a ``loss`` of no parts (an empty mapping)."""
    if isinstance(loss, Mapping) and not loss:
        raise ConfigError(
            "Task.loss returned an empty mapping: return the loss as a 0-d tensor, or a "
            "mapping of one or more named parts (each a 0-d tensor)"
        )
    if not all(isinstance(w, Real) and 0 <= w < float("inf") for w in weights.values()):
        raise ConfigError(
            f"{setting} must be finite numbers >= 0 (0 leaves a part out): a negative one "
            f"makes training maximise its part, got {dict(weights)}"
        )
    names = sorted(loss) if isinstance(loss, Mapping) else None
    unknown = sorted(set(weights) - set(names or ()))
    if unknown:
        has = f"its parts are {names}" if names else "it has no named parts; remove them"
        raise ConfigError(f"{setting} name {unknown}, which the task's loss does not have; {has}")


def loss_weight(term: Any, weight: Any) -> float:
    """``weight`` as a float; ``ConfigError`` for what is no finite number >= 0 (a negative
    weight makes training maximise the loss; text or a bool, as ``mic-train`` refuses them)."""
    try:  # (None, "abc"; "2" and True are no numbers either)
        value = float("nan") if isinstance(weight, (str, bool)) else float(weight)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0 <= value < float("inf"):  # NaN too
        raise ConfigError(
            f"{type(term).__name__}(weight={weight!r}): a loss weight must be a finite number "
            ">= 0 (0 switches it off): a negative one makes training maximise its loss"
        )
    return value


def check_consistency_inputs(term: Any, task: Any, images: Any, pseudo: Any, kind: type) -> None:
    """Raise ``ConfigError`` when a consistency loss is given ``pseudo`` that is no ``kind``
    (``PseudoLabels``) or labels another number of images than ``images``."""
    if not isinstance(pseudo, kind):
        raise ConfigError(
            f"{type(term).__name__}.loss takes the teacher's PseudoLabels (ctx.pseudo_labels, "
            f"Task.pseudo_label(...)), got a {type(pseudo).__name__}"
        )
    labelled = len(pseudo.labels) if isinstance(pseudo.labels, (Tensor, list)) else None
    if labelled is not None and labelled != task.count(images):  # (torch's words before)
        raise ConfigError(
            f"{type(term).__name__}.loss got {task.count(images)} images and pseudo-labels "
            f"of {labelled}: give the teacher's pseudo-labels of these very images"
        )


def check_views(term: Any, views: Any, images: Any) -> None:
    """Raise ``ConfigError`` when a consistency loss's ``transform`` returned another kind than
    the images (a tensor, a list or tuple, a mapping), e.g. an ``(images, mask)`` pair."""
    kind = next((k for k in (Tensor, (list, tuple), Mapping) if isinstance(images, k)), object)
    if not isinstance(views, kind):
        raise ConfigError(
            f"{type(term).__name__}.transform returned a {type(views).__name__} for images "
            f"that are a {type(images).__name__}: a Masker (or a transform) returns the "
            "transformed images alone, of the images' kind (no (images, mask) pair)"
        )


def check_terms(terms: Any, term_class: type) -> dict[str, Any]:
    """The terms of a ``UDAMethod`` without those that are None; ``ConfigError`` for ``terms``
    that is no mapping, a name that is no text or holds a ``.``, a term that is no
    ``term_class`` (``LossTerm``) instance or did not call ``LossTerm.__init__``, or no term."""
    if not isinstance(terms, Mapping):  # (a list of terms: "no attribute 'items'")
        kind = type(terms).__name__
        raise ConfigError(f"UDAMethod takes name -> LossTerm ({{'mic': term}}), got a {kind}")
    kept = {name: term for name, term in terms.items() if term is not None}
    for name, term in kept.items():
        kind = type(term).__name__
        if not isinstance(name, str) or "." in name:
            problem = f"method term name {name!r} must be text without '.' (a module name)"
        elif isinstance(term, type):
            problem = (
                f"method term '{name}' is the class {term.__name__}, not an instance of it: "
                f"give {term.__name__}(...)"
            )
        elif not isinstance(term, term_class):
            problem = f"method term '{name}' is a {kind}, not a LossTerm; check its _target_"
        elif "_modules" not in vars(term) or "weight" not in vars(term):
            problem = f"{kind}.__init__ must call super().__init__(weight)"
        else:
            continue
        raise ConfigError(problem)
    if not kept:
        raise ConfigError("a method needs at least one loss term (method.terms is empty)")
    return kept


def check_weighting(mode: Any, tau: Any, modes: Sequence[str]) -> None:
    """Raise ``ConfigError`` for a pseudo-label weighting ``mode`` not among ``modes`` or a
    threshold ``tau`` outside [0, 1]."""
    if mode not in modes:
        raise ConfigError(f"pseudo-label weighting must be one of {tuple(modes)}, got {mode!r}")
    if isinstance(tau, bool) or not (isinstance(tau, Real) and 0.0 <= tau <= 1.0):
        raise ConfigError(f"pseudo-label threshold tau must lie in [0, 1], got {tau!r}")
