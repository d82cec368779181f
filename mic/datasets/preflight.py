"""The data check before training: one pass over what can be checked cheaply, with every
problem reported at once, so that a bad file stops a run before its first iteration rather
than hours into it.

Readers implement ``preflight(training=True) -> list[Problem]``: files present, pairs complete,
image (and label) sizes and modes from file headers, values of a sample of label files, the
checks of annotation files, classes declared but absent from the source labels. Dataset
wrappers forward it (``RareClassSampling`` adds what its statistics pass found in every label
file). ``check_datasets`` runs it on a run's datasets and raises one ``DatasetError`` that
lists the problems (the first ``LISTED`` with their files, and how many more) and, once per
kind, what to do; warnings (e.g. a class that never occurs) are logged.

Problems that a reader finds while it is being built (e.g. missing label files) stop its
construction, unless it is built inside ``collecting_problems()``: then they wait for its
``preflight()``, to be reported with all the others (what ``mic-train`` does).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from mic.core.errors import DatasetError, MicError, is_whole
from mic.datasets.files import (
    IMAGE_EXTENSIONS,
    PILLOW_LIMIT_FIX,
    RGB_CONVERTIBLE,
    ImageHeader,
    read_header,
)
from mic.training.distributed import env_world_size
from mic.training.sampling import DatasetWrapper

log = logging.getLogger(__name__)

#: problems listed with their file in the message (the rest are counted)
LISTED = 20
#: the largest colour value of a sample not warned of: images in [0, 1] normalised with a
#: channel std of 0.05 or more stay within 20, pixel values in [0, 255] do not
PIXEL_VALUE_LIMIT = 20.0
#: file counts from which the check shows a progress bar (on a terminal)
PROGRESS_FROM = 1000
#: label files whose values are read when no statistics pass reads them all (evenly spread)
LABEL_SAMPLE = 100

T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    """One problem with one file.

    Args:
        kind: what is wrong, as a plural noun shared by every problem of the kind
            (``"labels whose size differs from their image"``); problems are grouped by it.
        file: the file (or folder) at fault.
        detail: what is wrong with this file.
        fix: what to do, said once per kind; ``{reader}`` stands for the reader's config key
            (``dataset.source.dataset``), or its class name outside a config.
        warning: reported, but training goes on.
    """

    kind: str
    file: str
    detail: str = ""
    fix: str = ""
    warning: bool = False

    def describe(self) -> str:
        return f"'{self.file}'" + (f" ({self.detail})" if self.detail else "")


_COLLECTING: ContextVar[bool] = ContextVar("mic_collecting_dataset_problems", default=False)


@contextlib.contextmanager
def collecting_problems(enabled: bool = True) -> Iterator[None]:
    """Readers built inside keep the problems they find for their ``preflight()`` instead of
    raising them at once (``enabled=False``: they raise, as outside)."""
    token = _COLLECTING.set(enabled)
    try:
        yield
    finally:
        _COLLECTING.reset(token)


def keep_or_raise(problems: list[Problem], reader: str) -> list[Problem]:
    """Problems a reader found while being built, for it to keep for ``preflight()``:
    inside ``collecting_problems()`` all of them; else errors are raised and warnings logged
    now (and kept). ``reader`` names it in the message."""
    if not problems or _COLLECTING.get():
        return list(problems)
    errors = [p for p in problems if not p.warning]
    if errors:
        raise DatasetError(format_problems(errors, reader, LISTED)[0])
    log.warning("%s: %s", reader, format_problems(problems, reader, LISTED)[0])
    return list(problems)


def progress(items: Sequence[T] | Iterable[T], total: int, what: str) -> Iterable[T]:
    """``items`` under a tqdm progress bar on a terminal, from ``PROGRESS_FROM`` files."""
    return tqdm(
        items,
        total=total,
        desc=f"checking {what}",
        unit="file",
        disable=None if total >= PROGRESS_FROM else True,
        leave=False,
        file=sys.stderr,
    )


def format_problems(
    problems: Sequence[Problem], reader: str, budget: int = LISTED, config: Any = None
) -> tuple[str, int]:
    """One paragraph: per kind, the count, the first files (``budget`` over all kinds, at
    least one per kind) and the fix; and how many files it listed. ``config``: the dataset
    config, through which the fixes name an option that the reader's config reads from a key
    of its own (``${dataset.label_mapping}``) by that key (``option_override``)."""
    groups: dict[str, list[Problem]] = {}
    for p in problems:
        groups.setdefault(p.kind, []).append(p)
    parts, listed = [], 0
    for kind, group in groups.items():
        n = max(1, min(len(group), budget - listed))
        listed += n
        details = {p.detail for p in group}
        if len(group) > 1 and len(details) == 1 and group[0].detail:  # (said once, not per file)
            files = ", ".join(f"'{p.file}'" for p in group[:n])
            more = f" and {len(group) - n} more" if len(group) > n else ""
            more += f", each: {group[0].detail}"
        else:
            files = "; ".join(p.describe() for p in group[:n])
            more = f"; and {len(group) - n} more" if len(group) > n else ""
        fixes = dict.fromkeys(_name_reader(p.fix, reader, config) for p in group if p.fix)
        head = f"{kind[:1].upper()}{kind[1:]} ({len(group)})"
        parts.append(f"{head}: {files}{more}." + "".join(f" {f}" for f in fixes))
    return " ".join(parts), listed


def _name_reader(fix: str, reader: str, config: Any = None) -> str:
    """``{reader}.option=value`` as a command-line override (``reader`` a config key such as
    ``dataset.source``: ``option_override``), or as ``option=value (an argument of GTA5)``
    (``reader`` a class name)."""
    given = r"\{reader\}\.(\w+(?:\.\w+)*)(=(?:'[^']*'|\[[^\]]*\]|[^\s,;()]*[^\s,;().]))?"
    if reader.startswith("dataset"):
        return re.sub(given, lambda m: option_override(config, reader, m[1], m[2] or ""), fix)
    return re.sub(given, lambda m: f"{m[1]}{m[2] or ''} (an argument of {reader})", fix)


def option_override(config: Any, key: str, option: str, value: str = "") -> str:
    """The command-line override that sets ``option`` of the reader at ``key``
    (``dataset.source.dataset``) to ``value`` (``"=true"``, or ``""`` for the key alone):
    ``++<key>.<option><value>`` (``++`` sets a key whether or not the config names it); where
    the reader's config reads the option from a key of the dataset config
    (``label_mapping: ${dataset.label_mapping}``), that key, and, when other splits read it
    too, the form that sets this split's alone.

    Args:
        config: the dataset config (``cfg.dataset``; None: no config, the ``++`` form).
        key: the reader's config key.
        option: the reader's argument.
        value: ``=<value>`` as the override writes it, or ``""``.
    """
    from omegaconf import OmegaConf

    alone = f"++{key}.{option}{value}"
    node = reader_node(config, key) if config is not None else None
    raw: Any = OmegaConf.to_container(node, resolve=False) if OmegaConf.is_dict(node) else None
    for part in option.split("."):  # (transform.scale: a nested one)
        raw = raw.get(part) if isinstance(raw, dict) else None
    found = re.fullmatch(r"\$\{(dataset\.\w+)\}", raw) if isinstance(raw, str) else None
    if found is None:
        return alone
    shared = found.group(1)
    roles = [
        r for r in ("source", "target", "test")
        if OmegaConf.is_dict(config.get(r))
        and f"${{{shared}}}" in str(OmegaConf.to_container(config[r], resolve=False))
    ]  # fmt: skip
    if len(roles) < 2:
        return f"{shared}{value}"
    readers = f"{', '.join(roles[:-1])} and {roles[-1]}"
    return f"{shared}{value} (read by {readers}; this split's alone: {alone})"


def reader_node(config: Any, key: str) -> Any:
    """The config node of ``key`` (``dataset.source.dataset``) in ``config``, the ``dataset``
    config (None: not there)."""
    node = config
    for part in key.split(".")[1:]:
        node = node.get(part) if hasattr(node, "get") else None
    return node


#: what a detection reader counts as left out by its data set's protocol, and how the log
#: names it (the reader's keys that keep them)
LEFT_OUT_BY_PROTOCOL = {
    "crowd_skipped": "iscrowd annotations (crowd regions; ++{key}.skip_crowd=false keeps them)",
    "difficult_skipped": "objects marked difficult (++{key}.keep_difficult=true keeps them)",
}


def reader_key(role: str, dataset: Any, node: Any = None) -> tuple[str, str]:
    """The config key of the reader inside ``dataset`` (``dataset.source.dataset`` under a
    wrapper such as rare class sampling) and the reader's class name.

    Args:
        role: ``source``, ``target`` or ``test``.
        dataset: the dataset built for it.
        node: its config node, if any: the key follows the nested ``dataset`` nodes down to
            the one whose ``_target_`` names the reader's class (a wrapper's config may build
            the reader alone, as ``rare_class_sampling`` does when switched off).
    """
    key = f"dataset.{role}"
    while isinstance(dataset, DatasetWrapper):
        dataset, key = dataset.dataset, f"{key}.dataset"
    name = type(dataset).__name__
    if node is not None:
        key = f"dataset.{role}"
        while _target_name(node) not in (name, None) and _child(node) is not None:
            node, key = _child(node), f"{key}.dataset"
    return key, name


def _target_name(node: Any) -> str | None:
    target = node.get("_target_") if hasattr(node, "get") else None
    return str(target).rsplit(".", 1)[-1] if target else None


def _child(node: Any) -> Any:
    child = node.get("dataset") if hasattr(node, "get") else None
    return child if hasattr(child, "get") else None


def check_class_order(datasets: Mapping[str, Any], names: Sequence[str] | None = None) -> None:
    """Refuse a dataset that names the same classes as the others in another order: its
    class i would be scored, and trained, as another's class i.

    Args:
        datasets: role (``source``, ``target``, ``test``) -> dataset; those without a
            ``classes`` list of names are skipped (a wrapper's reader is looked at).
        names: the task's class names in its model's order (None: the first dataset's).

    Raises:
        DatasetError: naming the first classes whose indices differ and the fix.
    """
    lists: dict[str, list[str]] = {"the task": [str(n) for n in names]} if names else {}
    for role, dataset in datasets.items():
        while isinstance(dataset, DatasetWrapper):
            dataset = dataset.dataset
        classes = getattr(dataset, "classes", None)
        if isinstance(classes, Sequence) and not isinstance(classes, str):
            lists[str(role)] = [str(c) for c in classes]
    if not lists:
        return
    (first, reference), *others = lists.items()
    for role, classes in others:
        renamed = [(i, a, b) for i, (a, b) in enumerate(zip(reference, classes)) if a != b]
        if renamed and sorted(classes) != sorted(reference) and len(classes) == len(reference):
            shown = "; ".join(f"its class {i} {b!r}, {first}'s {a!r}" for i, a, b in renamed[:3])
            warnings.warn(  # the counts agree, so nothing else would say it
                f"the {role} set names {len(renamed)} of its classes otherwise than {first} "
                f"({shown}{'; ...' if len(renamed) > 3 else ''}): class i of each is taken as "
                "the same class; if they are other classes, or another order, give it the "
                "source's class list",
                stacklevel=2,
            )
        if classes == reference or sorted(classes) != sorted(reference):
            continue
        moved = [
            f"{c!r} is its class {i}, {first}'s class {reference.index(c)}"
            for i, c in enumerate(classes)
            if reference[i] != c
        ]
        raise DatasetError(
            f"the {role} set names the classes of {first} in another order ({'; '.join(moved[:3])}"
            f"{'; ...' if len(moved) > 3 else ''}), so its class indices mean other classes and "
            "it would be scored against the wrong ones: give it the source's class list in "
            "the source's order (a reader's classes or source_classes argument; in mic-train "
            "leave the split's classes unset, or list them as dataset.classes does)"
        )


def check_datasets(
    datasets: Mapping[str, Any],
    listing: str | os.PathLike[str] | None = None,
    config: Mapping[str, Any] | None = None,
) -> None:
    """Run ``preflight()`` of every dataset that has one (``training`` for all but
    ``test``), check one sample of every dataset, custom ones included (``sample_problems``;
    for the target also MIC's block against its image size, ``block_problems``), log the
    warnings and raise one ``DatasetError`` for all the problems.

    Args:
        datasets: role (``source``, ``target``, ``test``) -> dataset; None entries skipped.
        listing: where the whole list is written when it is longer than the message's.
        config: the ``dataset`` config they were built from, so that the fixes name the
            reader's keys (``dataset.source.dataset.label_size_mismatch=resize``); with one
            (a run of mic-train, whose collate takes tensors) a mic reader without a
            transform is refused, without one it is not sampled (code that converts its PIL
            images itself).

    Raises:
        DatasetError: every problem found, grouped by dataset and kind.
    """
    start = time.perf_counter()
    sections, problems_found, listed = [], [], 0
    channels: int | None = None  # the source's image channels, for the other splits
    for role, dataset in datasets.items():
        if dataset is None:
            continue
        check = getattr(dataset, "preflight", None)
        key, name = reader_key(role, dataset, config.get(role) if config is not None else None)
        problems = []
        if callable(check):
            problems = list(dict.fromkeys(check(training=role != "test")))  # duplicates once
        if not any(not p.warning for p in problems):  # a sample loads when the files are fine
            found, image = sample_problems(role, dataset, channels, config is None)
            problems += found
            sound = image is not None and all(p.warning for p in found)
            problems += _length_problems(dataset) if sound else []
            if role == "source" and sound:
                channels = int(image.shape[0])
            if role == "target" and sound:
                problems += block_problems(config, tuple(image.shape[-2:]))
        for attribute, what in LEFT_OUT_BY_PROTOCOL.items():  # (else only the image count)
            if left := getattr(dataset, attribute, 0):  # (a wrapper's: its reader's)
                said = what.format(key=key)
                log.info("%s: %d %s left out, as the published protocol does", key, left, said)
        warnings = [p for p in problems if p.warning]
        if warnings:  # one paragraph per dataset, grouped by kind as the errors are
            log.warning("%s: %s", key, format_problems(warnings, key, config=config)[0])
        errors = [p for p in problems if not p.warning]
        if errors:
            text, n = format_problems(errors, key, max(1, LISTED - listed), config)
            listed += n
            sections.append(f"{key} ({name}): {text}")
            problems_found += [(key, p) for p in errors]
    counts = ", ".join(f"{r} {len(d)}" for r, d in datasets.items() if hasattr(d, "__len__"))
    log.info(  # the counts show a folder read otherwise than meant (e.g. masks as images)
        "checked the data before training in %.1f s (samples: %s)",
        time.perf_counter() - start,
        counts,
    )
    if not sections:
        return
    count = len(problems_found)
    message = (
        f"the data check before training found {count} problem{'s' * (count != 1)}. "
        + " ".join(sections)
    )
    main = env_world_size() <= 1 or os.environ.get("RANK", "0") == "0"  # (one process: any RANK)
    if count > listed and listing is not None and main:
        path = Path(listing)
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = [f"{key}\t{p.kind}\t{p.file}\t{p.detail}" for key, p in problems_found]
            path.write_text("\n".join(lines) + "\n")
            message += f" The whole list: '{path}'."
    raise DatasetError(message)


# ------------------------------------------------------- one sample of every dataset
#: what the fixes of a sample's image say models take
IMAGE_FIX = (
    "Models take float32 C x H x W image tensors: end the dataset's transform with "
    "torchvision's ToTensor() (or v2.ToImage() then v2.ToDtype(torch.float32, scale=True)), "
    "then Normalize."
)


def _load_sample(dataset: Any, index: int = 0, kinds: Any = ()) -> tuple[bool, Any]:
    """``(True, dataset[index])`` (0: the first sample), with the global random generators
    restored afterwards (a seeded run draws exactly what it drew without the check);
    ``(False, None)`` when the dataset is empty or the sample cannot be loaded (training
    reports that itself), or ``(False, error)`` for an error of ``kinds``."""
    try:
        if len(dataset) == 0:
            return False, None
    except TypeError:  # no length (an iterable dataset): nothing to index
        return False, None
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()
    try:
        return True, dataset[index]
    except kinds as e:
        return False, e
    except Exception as e:  # reported where training loads it
        log.debug("the data check could not load sample %d of %s: %r", index, type(dataset), e)
        return False, None
    finally:
        torch.set_rng_state(states[0])
        random.setstate(states[1])
        np.random.set_state(states[2])


def _length_problems(dataset: Any) -> list[Problem]:
    """A dataset whose last index (``len - 1``) raises IndexError or KeyError: its
    ``__len__`` counts more samples than ``__getitem__`` reads, or that sample is faulty (the
    loader would meet it mid-run)."""
    n = len(dataset)
    loaded, error = _load_sample(dataset, n - 1, (IndexError, KeyError))
    if loaded or error is None:
        return []
    detail = f"__len__ gives {n}, but dataset[{n - 1}] raises {type(error).__name__}: {error}"
    fix = (
        "If __len__ counts more samples than __getitem__ reads, make it count those alone "
        f"(indices 0 to len - 1); else mend that sample (dataset[{n - 1}] shows the traceback)."
    )
    kind = "datasets whose last sample raises an IndexError or KeyError"
    return [Problem(kind, f"sample {n - 1}", detail, fix)]


def _kind_of(value: Any) -> str:
    if isinstance(value, Image.Image):
        return f"a PIL image ({value.mode}, {value.width} x {value.height})"
    if isinstance(value, np.ndarray):
        return f"a NumPy array {value.dtype} of shape {tuple(value.shape)}"
    if isinstance(value, Mapping):
        return f"a {type(value).__name__} with keys {sorted(map(str, value))}"
    return f"a {type(value).__module__}.{type(value).__name__}".replace(" builtins.", " ")


def sample_problems(
    role: str, dataset: Any, channels: int | None = None, untransformed_ok: bool = False
) -> tuple[list[Problem], Any]:
    """The problems of one sample (the first) of ``dataset``, a split of ``role``, and its
    image: not an (image, label) pair where labels are needed (source, test), an image that
    is not a float32 C x H x W tensor (a PIL image: the transform lacks ToTensor), of other
    than the source's ``channels``, or holds NaN or Inf; a warning for colour values far
    outside [0, 1] (pixel values in [0, 255]). One sample, so that the check stays
    cheap; the global random generators are left as they were. A mic reader built without a
    transform (``transform=None``) yields PIL images, which no task's collate takes: it is
    told to give the reader one, unless ``untransformed_ok`` (code that converts them itself),
    when it is not sampled."""
    untransformed = getattr(dataset, "transform", True) is None  # one of mic's readers, given none
    if untransformed and untransformed_ok:
        return [], None  # a reader asked for what it reads
    loaded, sample = _load_sample(dataset, 0, Exception)
    where = "sample 0"
    if not loaded:  # (empty; or a mic reader's bad file, which its own check names)
        if sample is None or isinstance(sample, MicError):
            return [], None
        fix = (  # (a dataset of one's own: its code's fault, told before training starts)
            "Mend the dataset's __getitem__ (dataset[0] in Python shows the traceback), or "
            "let training meet it (preflight=false)."
        )
        said = f"{type(sample).__name__}: {sample}"
        return [Problem("datasets whose first sample raises an error", where, said, fix)], None
    if isinstance(sample, Mapping) or (role != "target" and not _is_pair(sample)):
        kind = "samples that are not (image, label) pairs" + (
            " or images" if role == "target" else ""
        )
        fix = (
            "__getitem__ must return an (image, label) tuple (the source and test sets need "
            "labels; a target training set may return the image alone)."
        )
        return [Problem(kind, where, _kind_of(sample), fix)], None
    alone = isinstance(sample, (tuple, list)) and len(sample) == 1  # TensorDataset(x)'s
    image = sample[0] if _is_pair(sample) or alone else sample
    if not isinstance(image, torch.Tensor):
        fix = IMAGE_FIX
        if untransformed:
            fix = (
                f"{type(dataset).__name__} was given no transform, so it yields the images as "
                "it reads them: give it one, as the bundled data set configs do (their "
                "target's transform: mic.datasets.classification_transform for classification, "
                "mic.datasets.segmentation.SegmentationTransform for segmentation)."
            )
        return [Problem("images that are not tensors", where, _kind_of(image), fix)], None
    if image.dtype != torch.float32:
        detail = f"the dataset yields {image.dtype} images"
        fix = (
            "Models take float32 images: convert them in the dataset's transform "
            "(x.float() for float64; v2.ToDtype(torch.float32, scale=True) for uint8)."
        )
        return [Problem("images that are not float32", where, detail, fix)], None
    if image.ndim != 3:
        detail = f"shape {tuple(image.shape)}"
        fix = "Give images a channel axis first, C x H x W (x.unsqueeze(0) for H x W)."
        return [Problem("images that are not C x H x W", where, detail, fix)], None
    if image.shape[0] not in (1, 3, 4) and image.shape[-1] in (1, 3, 4):
        detail = f"shape {tuple(image.shape)}: channels last"
        fix = (
            "Give images their channels first, C x H x W: ToTensor() in the transform (it "
            "takes PIL images and H x W x C arrays), or x.permute(2, 0, 1) for a tensor."
        )
        return [Problem("images that are H x W x C, not C x H x W", where, detail, fix)], None
    if channels is not None and image.shape[0] != channels:
        n = int(image.shape[0])
        detail = f"{n} channel{'s' * (n != 1)}, the source's images have {channels}"
        fix = (
            "Every split must have the source's channels, which the model takes: for grey "
            "images convert('RGB') before ToTensor (or x.expand(3, -1, -1))"
            + (", the source's too." if channels == 1 else ".")  # (the odd one may be it)
        )
        return [Problem("images with other channels than the source's", where, detail, fix)], None
    bad = int((~torch.isfinite(image)).sum())
    if bad:
        detail = f"{bad} of its {image.numel()} values are NaN or Inf"
        fix = (
            "Every loss of a batch that holds one would be NaN: mend or leave out such images "
            "in the dataset (a division by 0 in a transform gives them too)."
        )
        return [Problem("images with NaN or Inf values", where, detail, fix)], None
    top = float(image[:3].abs().max()) if image.numel() else 0.0
    if top > PIXEL_VALUE_LIMIT:  # colour channels only: extra ones (depth) keep their units
        detail = f"its colour values reach {top:.4g}"
        fix = (
            "Models and MIC's colour jitter take images in [0, 1], or normalised from it (a few "
            "units at most): if these are pixel values in [0, 255], scale them in the "
            "transform (ToTensor(), or v2.ToDtype(torch.float32, scale=True) for uint8)."
        )
        return [Problem("images of values far outside [0, 1]", where, detail, fix, True)], image
    return [], image


def _is_pair(sample: Any) -> bool:
    return isinstance(sample, (tuple, list)) and len(sample) == 2


def block_problems(config: Any, size: tuple[int, int]) -> list[Problem]:
    """MIC's masking blocks (every ``block_size`` of the method's config) that make one block
    of the target images (or crops) of ``size`` (H, W): the masker's grid is
    ``round(H / b) x round(W / b)`` (at least 1 x 1), and a 1 x 1 grid masks an image whole
    or not at all. ``config``: the ``dataset`` node of a run's config (None: no check). A
    method without MIC's masker is judged by the block of the ``masked_agreement``
    validator, where ``eval.validators`` lists it (``dataset.mic_block_size``, else 64 px)."""
    root = config._get_root() if hasattr(config, "_get_root") else None
    method = root.get("method") if root is not None and hasattr(root, "get") else None
    if method is None:
        return []
    key = "dataset.mic_block_size"
    named = hasattr(config, "get") and config.get("mic_block_size") is not None
    setting = key if named else f"+{key}"
    found = []
    from omegaconf import OmegaConf

    blocks = list(_keyed(method, "method", "block_size"))
    validators = OmegaConf.select(root, "eval.validators", default=None)
    validators = [validators] if isinstance(validators, str) else list(validators or [])
    if not blocks and "masked_agreement" in validators:  # (its own masker: build_validation's)
        blocks = [(key, config.get("mic_block_size") if hasattr(config, "get") else None)]
        blocks = [(key, 64 if blocks[0][1] is None else blocks[0][1])]
    for path, value in blocks:
        if not is_whole(value):  # (a float of a whole value counts: 32.0, 1e30)
            continue  # the masker's own check names a block of 0 px
        if max(size) < 2:  # no block makes two
            found.append(
                Problem(
                    "target images too small for MIC's masking blocks",
                    path,
                    f"{size[1]} x {size[0]} px images (or crops): no block size masks part of one",
                    "MIC withholds blocks of each image: give images larger than 1 px (for the "
                    "bundled data sets dataset.size), or run without MIC (mic=none).",
                )
            )
        elif max(1, round(size[0] / value)) * max(1, round(size[1] / value)) == 1:
            whose = "the masked_agreement validator's" if path == key else "MIC"
            found.append(
                Problem(
                    f"{whose} masking blocks that make one block of the target images",
                    path,
                    f"{value} px blocks on {size[1]} x {size[0]} px images (or crops): a grid "
                    "of 1 x 1 block, so each image would be masked whole or not at all",
                    "Set a block of about 1/16 to 1/4 of the image side with "
                    f"dataset.mic_block_size (e.g. {setting}={max(1, min(size) // 8)})"
                    + (
                        f" or {path}."
                        if path != key
                        else ", or leave masked_agreement out of eval.validators."
                    ),
                )
            )
    return found


def _keyed(node: Any, path: str, key: str) -> Iterator[tuple[str, Any]]:
    """``(dotted path, value)`` of every ``key`` inside a config node (interpolations resolved;
    values that do not resolve are skipped)."""
    items: Iterable[tuple[Any, Any]] = ()
    if hasattr(node, "items") and hasattr(node, "get"):
        try:
            items = list(node.items())
        except Exception:  # an interpolation that does not resolve: no check
            return
    for k, v in items:
        sub = f"{path}.{k}"
        if k == key:
            yield sub, v
        else:
            yield from _keyed(v, sub, key)


# ------------------------------------------------------------------ checks readers share
def case_twin(path: Path) -> Path | None:
    """A file beside the missing ``path`` whose name differs from its name in case alone
    (``00001.PNG`` for ``00001.png``), else None. A folder's names are listed once while it
    is unchanged (a set of many missing files in a large folder is not listed each time)."""
    try:
        stamp = (str(path.parent), path.parent.stat().st_mtime_ns)
    except OSError:  # no such folder
        return None
    if _CASE_NAMES[0] != stamp:
        _CASE_NAMES[:] = [stamp, {p.name.lower(): p for p in path.parent.iterdir()}]
    return _CASE_NAMES[1].get(path.name.lower())


#: the (path, mtime) stamp of the last folder ``case_twin`` listed, and its lower-case names
_CASE_NAMES: list[Any] = [None, {}]


def header_problem(path: Path, error: DatasetError, what: str = "image") -> Problem:
    """The problem of a file whose header cannot be read (missing or not an image)."""
    if isinstance(error.__cause__, FileNotFoundError):
        path = Path(path)
        parts = path.parts
        doubled = [i for i in range(1, len(parts) - 1) if parts[i] == parts[i - 1]]
        found = [(parts[i], Path(*parts[:i], *parts[i + 1 :])) for i in doubled]
        found = [(name, f) for name, f in found if f.is_file()]
        cased = None if found or path.is_symlink() else case_twin(path)
        detail = (
            f"the folder name '{found[0][0]}' is doubled; the file is at '{found[0][1]}', so the "
            "names in the list or annotation file already start with that folder: give the "
            "folder above it as the image folder"
            if found
            else f"a symbolic link to '{os.readlink(path)}', which does not exist"
            if path.is_symlink()
            else f"'{cased.name}' is there: file names are read case-sensitively"
            if cased is not None
            else ""
        )
        return Problem(
            f"missing {what} files",
            str(path),
            detail,
            fix="Check the dataset paths (and the file list or annotation file that names them).",
        )
    cause = error.__cause__ or error
    reason = f"{type(cause).__name__}: {cause}"
    if isinstance(cause, Image.DecompressionBombError):
        return Problem(
            f"{what} files of more pixels than Pillow opens",
            str(path),
            reason,
            f"Store downscaled or tiled copies {PILLOW_LIMIT_FIX}.",
        )
    return Problem(f"unreadable {what} files", str(path), reason, "Remove or replace them.")


def mode_problem(path: Path, header: ImageHeader) -> Problem | None:
    """A problem when an image's mode cannot be read as RGB."""
    if header.mode in RGB_CONVERTIBLE:
        return None
    return Problem(
        "images of a mode that cannot be converted to RGB",
        str(path),
        header.mode,
        "Save them as 8-bit RGB or greyscale images.",
    )


def check_image(
    path: Path, problems: list[Problem], apply_exif_orientation: bool = True
) -> ImageHeader | None:
    """The header of an image to be loaded as RGB, or None with its problem appended."""
    try:
        header = read_header(path, apply_exif_orientation)
    except DatasetError as e:
        problems.append(header_problem(path, e))
        return None
    bad_mode = mode_problem(path, header)
    if bad_mode is not None:
        problems.append(bad_mode)
    return header


#: EXIF orientations that leave an image's size as it was (a mirror, a half turn)
SIZE_KEEPING_TURNS = {
    2: "mirrored left to right",
    3: "turned 180 degrees",
    4: "mirrored upside down",
}


def orientation_problem(
    path: Path, header: ImageHeader, applied: bool, labels: str, size_stated: bool = True
) -> Problem | None:
    """A warning for a labelled image whose EXIF orientation mic applies and whose labels
    keep their size either way (a mirror, a half turn, a quarter turn of a square image, or
    any quarter turn where the annotation states no image size): whether they were drawn on
    the turned or the stored pixels cannot be told from the files, and the wrong reading
    trains on labels that miss their objects.

    Args:
        path: the image file.
        header: its header (``read_header`` with ``applied``).
        applied: the reader's ``apply_exif_orientation``.
        labels: what its labels are called in the message (``"label maps"``, ``"boxes"``).
        size_stated: whether its annotation states the image's size (boxes without it fit a
            quarter turn either way).
    """
    o = header.orientation
    quarter = o in (5, 6, 7, 8)
    square = quarter and header.width == header.height
    unsized = quarter and not size_stated
    if not applied or not (o in SIZE_KEEPING_TURNS or square or unsized):
        return None
    turn = "a square image turned a quarter" if square else "a quarter turn"
    if unsized and not square:
        turn += ", and its annotation states no image size"
    return Problem(
        "labelled images whose EXIF orientation mic applies, their labels' size unchanged",
        str(path),
        f"EXIF orientation {o}: {SIZE_KEEPING_TURNS.get(o, turn)}",
        f"mic turns such images as image viewers do, and their {labels} must then match the "
        "turned image; if they were drawn on the stored pixels (as some annotation tools "
        "do), set {reader}.apply_exif_orientation=false.",
        warning=True,
    )


def check_images(files: Sequence[Path], what: str) -> list[Problem]:
    """Every file present, its header readable, its mode convertible to RGB."""
    problems: list[Problem] = []
    for path in progress(files, len(files), what):
        check_image(path, problems)
    return problems


def unread_problems(files: Sequence[Path]) -> list[Problem]:
    """A warning for each file of an image format that mic does not read (GIF...), which
    the listing of a folder left out."""
    readable = ", ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
    return [
        Problem(
            "files of image formats mic does not read, left out",
            str(path),
            fix=f"mic reads {readable}: convert them (e.g. to PNG) to use them.",
            warning=True,
        )
        for path in files
    ]


def crop_problems(transform: Any, sizes: Sequence[tuple[int, int]], where: str) -> list[Problem]:
    """A warning when random crops (a transform's ``crop_size``, after its ``scale``) are
    mostly padding: images (H, W) ``sizes`` that fill less than half of the crop."""
    crop = getattr(transform, "crop_size", None)
    if crop is None or not sizes:
        return []
    from mic.datasets.segmentation.transforms import rescale_size  # (imports this module)

    scale = getattr(transform, "scale", None)
    ch, cw = crop
    small = []
    for h, w in sizes:
        if scale is not None:
            w, h = rescale_size(w, h, scale)
        if min(h, ch) * min(w, cw) < 0.5 * ch * cw:
            small.append((h, w))
    if not small:
        return []
    h, w = small[0]
    return [
        Problem(
            "image sets whose random crops are mostly padding",
            where,
            f"{len(small)} of {len(sizes)} images fill less than half of the {cw} x {ch} crop "
            f"(e.g. {w} x {h}{' after the scale' if scale is not None else ''})",
            "A model trained on padding learns little: set a crop size no larger than the "
            "images (mic's segmentation datasets: dataset.crop_size=[height,width]), or a scale "
            "that resizes them up ({reader}.transform.scale=[long,short], the sides' bounds "
            "of the resize that keeps the aspect ratio).",
            warning=True,
        )
    ]


#: how much a transform's first resize may enlarge most images before it is warned of
ENLARGED = 2.0


def scale_problems(transform: Any, sizes: Sequence[tuple[int, int]], where: str) -> list[Problem]:
    """A warning when a transform's ``scale`` (its first resize) enlarges most of the images
    (H, W) ``sizes`` more than ``ENLARGED`` times: a published scale (GTA5's 1280 x 720) on
    small images, which trains and evaluates on images many times their size (75 s an
    iteration on 128 px images enlarged to 2560 px)."""
    scale = getattr(transform, "scale", None)
    if not (isinstance(scale, Sequence) and len(scale) == 2 and sizes):  # (a factor: not ours)
        return []
    from mic.datasets.segmentation.transforms import rescale_size  # (imports this module)

    grown = [((h, w), rescale_size(w, h, scale)) for h, w in sizes]
    grown = [(s, t) for s, t in grown if t[0] > ENLARGED * s[1]]
    if 2 * len(grown) <= len(sizes):
        return []
    (h, w), (tw, th) = grown[0]
    return [
        Problem(
            "image sets enlarged many times by their first resize",
            where,
            f"{len(grown)} of {len(sizes)} images are enlarged more than {ENLARGED:g} times by "
            f"the resize to scale {list(scale)} (e.g. {w} x {h} to {tw} x {th}, "
            f"{tw / w:.3g} times)",
            "Training and evaluation compute on the enlarged images: is the scale meant for "
            "these images (the published scales are for the published data sets' photos)? Set "
            "it near their size ({reader}.transform.scale=[long,short]), or null for none.",
            warning=True,
        )
    ]


def sample_indices(n: int, k: int = LABEL_SAMPLE) -> list[int]:
    """``k`` indices evenly spread over ``range(n)`` (all of them when ``n <= k``)."""
    if n <= k:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist()))


def _names(ids: Iterable[int], classes: Sequence[str]) -> str:
    named = [f"{i} ({classes[i]})" if classes[i] != str(i) else str(i) for i in ids]
    return ", ".join(named)


#: the kinds of ``class_presence``'s problems
FEW_CLASSES = "label sets in which fewer than two classes occur"
ABSENT_CLASSES = "label sets in which declared classes never occur"


def class_presence(
    pixels: np.ndarray,
    classes: Sequence[str],
    where: str,
    files_read: int,
    files: int,
    expected_absent: Iterable[int] = (),
    label_mapping: bool = False,
    warn_absent: bool = True,
) -> list[Problem]:
    """Classes declared but absent from the labels.

    Fewer than two classes occurring is an error (nothing to learn or score: typically binary
    masks saved as 0/255, whose 255 is the ignore value); other absent classes are a warning
    (``warn_absent``, for training sets), when every label file was read.

    Args:
        pixels: (C,) pixels of each class over the label files read.
        classes: the C class names.
        where: the labels' folder, for the message.
        files_read, files: label files read, of how many.
        expected_absent: classes the dataset is known to lack (SYNTHIA: terrain, truck, train).
        label_mapping: the reader takes ``label_mapping`` (stored value -> class).
        warn_absent: warn of absent classes (a training set; a test set may lack some).
    """
    present = [int(c) for c in np.flatnonzero(pixels)]
    absent = [c for c in range(len(classes)) if c not in present]
    read = f"{files_read} label files read" + (
        f", evenly spread over {files}" if files_read < files else ""
    )
    if len(classes) >= 2 and len(present) < 2:
        occurs = _names(present, classes)
        fix = "Check num_classes and the labels (training ids 0..C-1, 255 ignored)."
        if label_mapping:
            fix = (
                "Binary masks saved as 0/255 put the foreground on 255, the ignore value: read "
                "it as class 1 with {reader}.label_mapping='{255: 1}', or save the masks as "
                "0/1; otherwise check num_classes and the labels (training ids "
                "0..C-1, 255 ignored)."
            )
        return [
            Problem(
                FEW_CLASSES,
                where,
                f"{'only class ' + occurs if present else 'no class'} occurs in the {read}; "
                f"class {_names(absent, classes)} of num_classes={len(classes)} never does",
                fix,
            )
        ]
    unexpected = [c for c in absent if c not in set(expected_absent)]
    if unexpected and files_read == files and warn_absent:
        return [
            Problem(
                ABSENT_CLASSES,
                where,
                f"class {_names(unexpected, classes)} in none of the {read}",
                "A model cannot learn them from the source and scores 0 on them; if that is not "
                "meant, check the labels and num_classes.",
                warning=True,
            )
        ]
    return []
