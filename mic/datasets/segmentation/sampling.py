"""Rare class sampling (DAFormer): draw source crops of rare classes more often.

A class c is drawn with P(c) = softmax((1 - f_c) / T) over the classes, f_c its share of
all labelled source pixels; then a source image holding more than ``min_pixels`` pixels of c
(at full resolution); its random crop is re-drawn (up to 10 times) until the crop holds more
than ``min_pixels * min_crop_ratio`` pixels of c. The per-image class statistics are
computed once and cached beside the dataset.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mic.core.errors import ConfigError, DatasetError, is_whole
from mic.datasets.preflight import (
    ABSENT_CLASSES,
    FEW_CLASSES,
    Problem,
    class_presence,
    collecting_problems,
    keep_or_raise,
    progress,
)
from mic.training.sampling import GENERATORS, DatasetWrapper

log = logging.getLogger(__name__)

STATS_FILE = "mic_class_stats.json"
#: the kind of problem of a label file that the statistics cannot read
UNUSABLE = "label files that rare class sampling's statistics cannot use"


def _fingerprint(dataset: Any) -> str:
    """Identifies the content of the label files (each one's path relative to the dataset
    folder, size and modification time) and their mapping, so that a stale cache is
    recomputed: after a label file was added, removed, renamed or rewritten in place, or
    the mapping or class count changed. Works for every layout (labels inside the dataset
    folder or anywhere else)."""
    h = hashlib.sha1()
    root = getattr(dataset, "root", None)
    base = os.path.abspath(root) if root is not None else None
    for _, label in dataset.samples:
        path = os.path.abspath(label)
        name = os.path.relpath(path, base) if base is not None else path
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{name}\0{stamp}\n".encode())
    h.update(np.asarray(dataset.label_map.lut).tobytes())
    h.update(str(dataset.num_classes).encode())
    return h.hexdigest()


def _cache_path(dataset: Any, cache: str | Path | bool | None) -> Path | None:
    if cache is True and getattr(dataset, "root", None) is not None:
        path = Path(dataset.root) / STATS_FILE
        if not os.access(dataset.root, os.W_OK) and not path.exists():
            base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
            key = hashlib.sha1(str(Path(dataset.root).resolve()).encode()).hexdigest()
            path = base / "mic" / f"{key}.json"
        return path
    if isinstance(cache, (str, os.PathLike)):
        return Path(cache)
    return None


def class_statistics(
    dataset: Any,
    cache: str | Path | bool | None = True,
    problems: list[Problem] | None = None,
) -> np.ndarray:
    """N x C array: pixels of each class in each sample at full resolution.

    Args:
        dataset: a labelled ``SegmentationDataset`` (``samples``, ``label_map``,
            ``class_pixel_counts``).
        cache: True caches in ``<dataset.root>/mic_class_stats.json`` (or, when that folder
            is read-only, under ``$XDG_CACHE_HOME/mic``); a path caches there; False/None
            never caches. The cache is keyed on each label file's relative path, size and
            modification time, the id mapping and the class count.
        problems: given, a label file that cannot be read or holds ids outside the mapping is
            appended to it (its row stays 0, and nothing is cached) and the pass goes on; a
            missing label file is left to the reader's check of pairs.

    Raises:
        DatasetError: without ``problems``, at the first label file that cannot be used.
    """
    path = _cache_path(dataset, cache)
    key = _fingerprint(dataset) if path is not None else ""
    if path is not None and path.is_file():
        try:
            data = json.loads(path.read_text())
            if data.get("fingerprint") == key and data.get("num_classes") == dataset.num_classes:
                return np.asarray(data["counts"], np.int64).reshape(len(dataset), -1)
        except (ValueError, KeyError):
            pass
        log.info("class statistics in %s are stale; recomputing", path)
    log.info("computing per-image class statistics of %d label files (once)", len(dataset))
    counts = np.zeros((len(dataset), dataset.num_classes), np.int64)
    failed = 0
    what = f"{len(dataset)} label files (class statistics)"
    samples = getattr(dataset, "samples", None)
    for i in progress(range(len(dataset)), len(dataset), what):
        if problems is None:
            counts[i] = dataset.class_pixel_counts(i)
            continue
        label = samples[i][1] if samples is not None else f"sample {i}"
        if samples is not None and (label is None or not Path(label).is_file()):
            failed += 1
            continue
        try:
            counts[i] = dataset.class_pixel_counts(i)
        except DatasetError as e:
            failed += 1
            problems.append(
                Problem(
                    UNUSABLE,
                    str(label),
                    getattr(e, "reason", None) or str(e),
                    "Is it the right label format? Fix or replace them.",
                )
            )
    if path is not None and not failed:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            payload = {
                "fingerprint": key,
                "num_classes": dataset.num_classes,
                "counts": counts.tolist(),
            }
            tmp.write_text(json.dumps(payload))
            os.replace(tmp, path)
        except OSError as e:
            log.warning("could not cache class statistics in %s (%s)", path, e)
    return counts


class RareClassSampling(DatasetWrapper):
    """Wraps a labelled source dataset whose ``__getitem__`` draws a random crop; every
    ``__getitem__`` ignores its index and draws a rare-class sample instead.

    Args:
        dataset: a ``SegmentationDataset`` (needs ``class_pixel_counts``, ``samples``).
        temperature: T of the class distribution (published 0.01).
        min_pixels: an image qualifies for class c with more than this many pixels of c
            at full resolution (published 3000).
        min_crop_ratio: re-crop until the crop holds more than min_pixels x this ratio pixels
            of c (published 0.5 at 512 crops, 2.0 for HRDA's 1024 crops).
        cache: where the statistics are cached (see ``class_statistics``).

    Classes without any qualifying image are left out of the distribution (the published
    code stops with an assertion).

    Raises:
        ConfigError: an argument out of its range or of the wrong type (``cache=2``), or an
            unlabelled dataset.
    """

    def __init__(
        self,
        dataset: Any,
        temperature: float = 0.01,
        min_pixels: int = 3000,
        min_crop_ratio: float = 0.5,
        cache: str | Path | bool | None = True,
    ) -> None:
        number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
        if not (number(temperature) and math.isfinite(temperature) and temperature > 0):
            raise ConfigError(f"rare class sampling temperature must be > 0, got {temperature!r}")
        if not is_whole(min_pixels, least=0):
            raise ConfigError(
                f"rare class sampling min_pixels must be a whole number of pixels >= 0 (mic-train: "
                f"dataset.source.min_pixels), got {min_pixels!r}"
            )
        if not (number(min_crop_ratio) and math.isfinite(min_crop_ratio) and min_crop_ratio >= 0):
            raise ConfigError(
                f"rare class sampling min_crop_ratio must be a finite number >= 0, got "
                f"{min_crop_ratio!r}"
            )
        if not isinstance(cache, (str, os.PathLike, bool, type(None))) or cache == "":
            raise ConfigError(
                f"rare class sampling cache must be true (beside the dataset), false / null "
                f"(never) or a file path (mic-train: dataset.source.cache), got {cache!r}"
            )
        if not getattr(dataset, "labelled", True):
            raise ConfigError("rare class sampling needs a labelled dataset")
        super().__init__(dataset)
        self.min_pixels = int(min_pixels)
        self.min_crop_ratio = float(min_crop_ratio)
        self.temperature = float(temperature)
        crop = getattr(getattr(dataset, "transform", None), "crop_size", None)
        wanted = self.min_pixels * self.min_crop_ratio
        if crop and wanted >= crop[0] * crop[1]:  # (every sample re-cropped 10 times in vain)
            log.warning(
                "rare class sampling re-crops until a crop holds more than min_pixels x "
                "min_crop_ratio = %g px of the sampled class, as many as a %d x %d crop holds "
                "or more (%d px): every sample is cropped 11 times in vain; lower "
                "dataset.source.min_pixels (published 3000 at full size, GTA5's 1914 x 1052 or "
                "Cityscapes' 2048 x 1024) with the crop size",
                wanted, crop[0], crop[1], crop[0] * crop[1],
            )  # fmt: skip
        found: list[Problem] = []
        counts = class_statistics(dataset, cache, found)
        total = counts.sum(0)
        samples = getattr(dataset, "samples", None) or []
        missing = sum(label is None or not Path(label).is_file() for _, label in samples)
        folder = str(dataset.label_folder() if hasattr(dataset, "label_folder") else "")
        found += class_presence(
            total,
            list(getattr(dataset, "classes", None) or map(str, range(counts.shape[1]))),
            folder,
            len(dataset) - missing - len(found),  # the label files the statistics read
            len(dataset),
            getattr(dataset, "expected_absent", ()),
            getattr(dataset, "takes_label_mapping", False),
        )
        most = int(counts.max()) if counts.size else 0
        if most <= self.min_pixels or any(p.kind == FEW_CLASSES for p in found):
            reader = self._reader_errors()  # nothing to sample, or one class: say why
            if reader:  # the reader names the cause (labels missing, of another format ...)
                found = [p for p in found if p.kind != FEW_CLASSES] + reader
            elif 0 < most <= self.min_pixels:
                found.append(
                    Problem(
                        "source label sets in which no image holds more than min_pixels of a class",
                        folder,
                        f"no source image holds more than min_pixels={self.min_pixels} pixels "
                        f"of any class (the most of one class in one image: {most} px)",
                        "Lower rare class sampling's min_pixels for small images (mic-train: "
                        "dataset.source.min_pixels, published 3000 at full size, GTA5's 1914 "
                        "x 1052 or Cityscapes' 2048 x 1024).",
                    )
                )
            elif most == 0 and not any(not p.warning for p in found):
                found.append(Problem("source label sets without a labelled pixel", folder))
        #: what the statistics pass found in every label file, for ``preflight()``
        self.found_problems = keep_or_raise(found, type(dataset).__name__)
        present = np.flatnonzero(total > 0)
        qualified = {int(c): np.flatnonzero(counts[:, c] > self.min_pixels) for c in present}
        kept = [c for c in present if len(qualified[int(c)])]
        dropped = sorted(set(present.tolist()) - set(kept))
        if dropped and kept:
            log.warning(
                "rare class sampling leaves out classes %s (no image holds more than %d px of "
                "them: lower dataset.source.min_pixels, published 3000 at full size, GTA5's "
                "1914 x 1052 or Cityscapes' 2048 x 1024, to draw them)",
                dropped,
                self.min_pixels,
            )
        freq = torch.tensor(total[present] / max(total.sum(), 1), dtype=torch.float64)
        probs = torch.softmax((1 - freq) / self.temperature, dim=0)
        keep = torch.tensor([c in kept for c in present], dtype=torch.bool)
        probs = probs * keep
        #: the classes drawn from (``classes`` stays the wrapped dataset's names); empty only
        #: while the problems above are kept for the check before training
        self.sampled_classes = [int(c) for c in present[keep.numpy()]]
        self.probabilities = (probs[keep] / probs[keep].sum()).float()
        self.samples_with_class = {c: qualified[c] for c in self.sampled_classes}

    def preflight(self, training: bool = True) -> list[Problem]:
        """The wrapped reader's check (its sampled label values too: training ids under
        released names ...; its class presence gives way to the statistics', which read every
        label file) and what the statistics pass found: label files it could not use, classes
        that never occur (see ``mic.datasets.preflight``)."""
        check = getattr(self.dataset, "preflight", None)
        inner = check(training=training) if callable(check) else []
        # every label file was read for the statistics: their class presence stands
        inner = [p for p in inner if p.kind not in (FEW_CLASSES, ABSENT_CLASSES)]
        named = {p.file for p in inner}
        own = [p for p in self.found_problems if p.kind != UNUSABLE or p.file not in named]
        if any(not p.warning for p in inner):  # (labels misread: their classes' presence too)
            own = [p for p in own if p.kind not in (FEW_CLASSES, ABSENT_CLASSES)]
        return [*inner, *own]

    def _reader_errors(self) -> list[Problem]:
        """The errors of the wrapped reader's own check (which names the cause of labels that
        give no statistics: missing files, another label format ...), class presence aside."""
        check = getattr(self.dataset, "preflight", None)
        if not callable(check):
            return []
        with collecting_problems():
            problems = check(training=True)
        return [p for p in problems if not p.warning and p.kind != FEW_CLASSES]

    @property
    def random_sources(self) -> tuple[str, ...]:
        """What ``SeededDataset`` seeds: torch's generator (the class and image draws here)
        and whatever the wrapped dataset draws from."""
        inner = getattr(self.dataset, "random_sources", GENERATORS)
        return tuple(g for g in GENERATORS if g == "torch" or g in inner)

    def __getitem__(self, index: int) -> Any:
        c = self.sampled_classes[int(torch.multinomial(self.probabilities, 1).item())]
        files = self.samples_with_class[c]
        i = int(files[int(torch.randint(len(files), ()).item())])
        # re-crops transform the image read once (a dataset without ``load`` is re-read)
        load = getattr(self.dataset, "load", None)
        transform = getattr(self.dataset, "transform", None)
        if load is not None and transform is not None:
            redraw = functools.partial(transform, *load(i))
        else:
            redraw = functools.partial(self.dataset.__getitem__, i)
        sample = redraw()
        for _ in range(10):
            if self.min_crop_ratio <= 0:
                break
            if int((sample[1] == c).sum()) > self.min_pixels * self.min_crop_ratio:
                break
            sample = redraw()
        return sample


def rare_class_sampling(dataset: Any, enabled: bool = True, **kwargs: Any) -> Any:
    """``RareClassSampling(dataset, **kwargs)`` when enabled, else the dataset itself (lets a
    method config switch it on and off).

    Raises:
        ConfigError: ``enabled`` is not true or false (``rare_class_sampling=no`` is text,
            which would switch it on).
    """
    if not isinstance(enabled, (bool, np.bool_)):
        raise ConfigError(
            f"method.rare_class_sampling must be true or false, got {enabled!r} (a dataset "
            "config reads it as rare_class_sampling.enabled)"
        )
    return RareClassSampling(dataset, **kwargs) if bool(enabled) else dataset
