"""The bundled classification benchmark: real handwritten digits -> digits on photo textures.

Source: scikit-learn's 1797 handwritten digits (8 x 8, upsampled to 32 x 32, 3 channels).
Target: other digits of the same kind blended with crops of the colour photos that
scikit-image ships, after the MNIST-M recipe ``|digit - beta * crop|`` per channel, with
``beta = 0.3`` (``beta = 1``, the exact recipe, leaves too little signal in 8 x 8 digits).
The 1797 digits are split, stratified by class, into two disjoint halves (source, target);
each half is split again, stratified, into train and test. Everything is generated in
memory from a fixed seed, no download.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mic.core.errors import ConfigError

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
CLASSES = [str(i) for i in range(10)]
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


@lru_cache(maxsize=1)
def _photos(side: int = 160) -> tuple[np.ndarray, ...]:
    """The photos, shorter side resized to ``side`` so that a crop holds texture."""
    import skimage.data
    from skimage.transform import rescale

    out = []
    for name in PHOTOS:
        img = getattr(skimage.data, name)().astype(np.float32) / 255.0
        out.append(rescale(img, side / min(img.shape[:2]), channel_axis=2, anti_aliasing=True))
    return tuple(out)


@lru_cache(maxsize=1)
def _digits() -> Any:
    """scikit-learn's 1797 digits, loaded once per process."""
    from sklearn.datasets import load_digits

    return load_digits()


@lru_cache(maxsize=1)
def _split(seed: int) -> dict[tuple[str, str], np.ndarray]:
    from sklearn.model_selection import train_test_split

    y = _digits().target
    idx = np.arange(len(y))
    src, tgt = train_test_split(idx, test_size=0.5, stratify=y, random_state=seed)
    out = {}
    for domain, half in (("source", src), ("target", tgt)):
        train, test = train_test_split(half, test_size=0.5, stratify=y[half], random_state=seed)
        out[(domain, "train")], out[(domain, "test")] = np.sort(train), np.sort(test)
    return out


def make_digits(
    domain: str, split: str, beta: float = 0.3, size: int = 32, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Images in [0, 1] (N x 3 x size x size) and labels of one domain's split."""
    digits = _digits()
    index = _split(seed)[(domain, split)]
    x = torch.from_numpy(digits.images[index].astype(np.float32) / 16.0)[:, None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    x = x.repeat(1, 3, 1, 1)
    if domain == "target":
        rng = np.random.default_rng([seed, 1 if split == "train" else 2])
        photos = _photos()
        crops = np.empty((len(index), size, size, 3), np.float32)
        for i in range(len(index)):
            photo = photos[rng.integers(len(photos))]
            r = rng.integers(photo.shape[0] - size)
            c = rng.integers(photo.shape[1] - size)
            crops[i] = photo[r : r + size, c : c + size]
        x = (x - beta * torch.from_numpy(crops).permute(0, 3, 1, 2)).abs()
    return x.contiguous(), torch.from_numpy(digits.target[index]).long()


class DigitsDomain:
    """One split of one domain of the bundled digits benchmark, as a map-style dataset.

    Args:
        domain: ``"source"`` (clean digits) or ``"target"`` (digits on photo textures).
        split: ``"train"`` or ``"test"``.
        labelled: samples are ``(image, label)``; False: the image alone (target training).
        beta: the photo's blending strength in the target.
        size: image side in pixels.
        normalize: map [0, 1] to [-1, 1] (mean 0.5, std 0.5 per channel).
        seed: the split and the photo crops (fixed for a benchmark, not the training seed).
    """

    classes = CLASSES
    num_classes = 10
    #: a sample draws nothing at random: ``SeededDataset`` seeds no generator for it
    random_sources = ()
    #: the normalisation applied when ``normalize`` (conf/dataset/digits.yaml repeats it)
    mean, std = MEAN, STD

    def __init__(
        self,
        domain: Literal["source", "target"] = "source",
        split: Literal["train", "test"] = "train",
        labelled: bool = True,
        beta: float = 0.3,
        size: int = 32,
        normalize: bool = True,
        seed: int = 0,
    ) -> None:
        if domain not in ("source", "target"):
            raise ConfigError(f"digits domain must be 'source' or 'target', got {domain!r}")
        if split not in ("train", "test"):
            raise ConfigError(f"digits split must be 'train' or 'test', got {split!r}")
        if not 0.0 <= beta <= 1.0:
            raise ConfigError(f"digits beta must lie in [0, 1], got {beta}")
        self.domain, self.split, self.labelled = domain, split, labelled
        images, self.targets = make_digits(domain, split, beta, size, seed)
        if normalize:
            images = (images - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
        self.images = images

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Tensor | tuple[Tensor, Tensor]:
        if self.labelled:
            return self.images[index], self.targets[index]
        return self.images[index]
