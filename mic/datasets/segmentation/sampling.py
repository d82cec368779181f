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
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mic.core.errors import ConfigError, DatasetError
from mic.training.sampling import DatasetWrapper

log = logging.getLogger(__name__)

STATS_FILE = "mic_class_stats.json"


def _fingerprint(dataset: Any) -> str:
    """Identifies the label files and their mapping, so a stale cache is recomputed."""
    h = hashlib.sha1()
    root = getattr(dataset, "root", None)
    for _, label in dataset.samples:
        name = str(Path(label).relative_to(root)) if root else str(label)
        h.update(name.encode())
    h.update(np.asarray(dataset.label_map.lut).tobytes())
    return h.hexdigest()


def class_statistics(dataset: Any, cache: str | Path | bool | None = True) -> np.ndarray:
    """N x C array: pixels of each class in each sample at full resolution.

    ``cache``: True caches in ``<dataset.root>/mic_class_stats.json`` (or, when that folder is
    read-only, under ``$XDG_CACHE_HOME/mic``); a path caches there; False/None never caches.
    """
    path: Path | None = None
    if cache is True and getattr(dataset, "root", None) is not None:
        path = Path(dataset.root) / STATS_FILE
        if not os.access(dataset.root, os.W_OK) and not path.exists():
            base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
            path = base / "mic" / f"{hashlib.sha1(str(dataset.root).encode()).hexdigest()}.json"
    elif isinstance(cache, (str, Path)):
        path = Path(cache)
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
    counts = np.stack([dataset.class_pixel_counts(i) for i in range(len(dataset))]).astype(np.int64)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
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
    """

    def __init__(
        self,
        dataset: Any,
        temperature: float = 0.01,
        min_pixels: int = 3000,
        min_crop_ratio: float = 0.5,
        cache: str | Path | bool | None = True,
    ) -> None:
        if temperature <= 0:
            raise ConfigError(f"rare class sampling temperature must be > 0, got {temperature}")
        if not getattr(dataset, "labelled", True):
            raise ConfigError("rare class sampling needs a labelled dataset")
        super().__init__(dataset)
        self.min_pixels = int(min_pixels)
        self.min_crop_ratio = float(min_crop_ratio)
        self.temperature = float(temperature)
        counts = class_statistics(dataset, cache)
        total = counts.sum(0)
        if total.sum() == 0:
            raise DatasetError("rare class sampling found no labelled pixel in the source labels")
        present = np.flatnonzero(total > 0)
        qualified = {int(c): np.flatnonzero(counts[:, c] > self.min_pixels) for c in present}
        kept = [c for c in present if len(qualified[int(c)])]
        dropped = sorted(set(present.tolist()) - set(kept))
        if not kept:
            raise DatasetError(
                f"no source image holds more than min_pixels={self.min_pixels} pixels of any "
                "class; lower rare class sampling's min_pixels for small images"
            )
        if dropped:
            log.warning(
                "rare class sampling leaves out classes %s (no image > %d px)",
                dropped,
                self.min_pixels,
            )
        freq = torch.tensor(total[present] / total.sum(), dtype=torch.float64)
        probs = torch.softmax((1 - freq) / self.temperature, dim=0)
        keep = torch.tensor([c in kept for c in present])
        probs = probs * keep
        #: the classes drawn from (``classes`` stays the wrapped dataset's names)
        self.sampled_classes = [int(c) for c in present[keep.numpy()]]
        self.probabilities = (probs[keep] / probs[keep].sum()).float()
        self.samples_with_class = {c: qualified[c] for c in self.sampled_classes}

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
    method config switch it on and off)."""
    return RareClassSampling(dataset, **kwargs) if enabled else dataset
