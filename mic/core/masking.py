"""Maskers: a target image batch made a masked (and strongly augmented) one, on its device."""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mic.core import checks
from mic.core.errors import ConfigError
from mic.core.streams import Random, RandomStream, per_sample, uniform

#: an image transform drawing from a random stream, e.g. ``mic.StrongAugmentation``
Augmentation = Callable[[Tensor, Random], Tensor]


class Masker(nn.Module, ABC):
    """Withholds part of each image; the student must infer it from the context."""

    @abstractmethod
    def forward(self, images: Tensor, rng: Random = None) -> Tensor:
        """The masked batch, of the shape, dtype and device of ``images``.

        Args:
            images: (B, C, H, W) float, or a list of (C, H, W) images of different sizes.
            rng: what to draw from (the term's ``RandomStream`` in the loop).
        """


class BlockMasker(Masker):
    """MIC's block mask after the strong augmentation: noise of shape
    (B, 1, round(H / b), round(W / b)) (at least 1 x 1, warned of) keeps a block where
    noise > ``ratio``, upsampled (nearest) to H x W; withheld pixels become ``fill``. A side
    that b does not divide gets blocks of about H / round(H / b) px (5 px on 32: 6 of 5.3).
    From a ``RandomStream``, the augmentation and the blocks draw from streams of their own
    (``substream``): the blocks do not move when the augmentation changes (paired ablations).

    Args:
        block_size: b, a block's side in pixels (published: 32 at 512 crops and for
            detection, 64 at 1024 crops and for 224 px ViT classification).
        ratio: probability that a block is withheld (published 0.7; 0.5 for detection).
        augmentation: applied first (published ``mic.StrongAugmentation``); None: none.
        fill: value of withheld pixels, one per channel or one for all (a number, a sequence,
            a tensor or a NumPy array); None: 0, the mean of normalised images (give the mean
            colour for [0, 1] images, e.g. torchvision detection models').

    Raises:
        ConfigError: a block size that is no whole number >= 1, a ratio outside [0, 1) (at 1
            the student would see no image), an augmentation that is a class or not callable,
            a fill that is no number(s); (when called) images that are no (B, C, H, W) float
            tensor or list of (C, H, W) ones, or a fill of another length than their channels
            (and 1).
    """

    def __init__(
        self,
        block_size: int = 64,
        ratio: float = 0.7,
        augmentation: Augmentation | None = None,
        fill: list[float] | float | Tensor | None = None,
    ) -> None:
        super().__init__()
        checks.check_block_masker(block_size, ratio, augmentation, fill)
        self.block_size, self.ratio = int(block_size), float(ratio)
        self.augmentation = augmentation
        fill_t = torch.as_tensor(fill if fill is not None else [0.0], dtype=torch.float32)
        self.register_buffer("fill", fill_t.view(1, -1, 1, 1), persistent=False)

    def extra_repr(self) -> str:
        return f"block_size={self.block_size}, ratio={self.ratio}"

    def mask(self, images: Tensor, rng: Random = None) -> Tensor:
        """The keep-mask (1 = kept), (B, 1, H, W) in the images' dtype."""
        if not (isinstance(images, Tensor) and images.dim() == 4):  # a list: use forward
            got = getattr(images, "shape", type(images).__name__)
            raise ConfigError(f"BlockMasker.mask takes a (B, C, H, W) tensor, got {got}")
        b, _, h, w = images.shape
        grid = (max(1, round(h / self.block_size)), max(1, round(w / self.block_size)))
        if grid == (1, 1):
            warnings.warn(
                f"a BlockMasker's {self.block_size} px block (MIC's, or a label-free validator's) "
                f"covers the whole {h} x {w} image: each image is kept or withheld whole; use "
                "smaller blocks",
                stacklevel=2,
            )
        keep = (uniform(rng, b, 1, *grid, device=images.device) > self.ratio).to(images.dtype)
        return F.interpolate(keep, size=(h, w), mode="nearest")

    def forward(self, images: Tensor, rng: Random = None) -> Tensor:
        checks.check_images(images, "BlockMasker")
        if isinstance(images, (list, tuple)):  # images of different sizes: one at a time
            streams = per_sample(rng, len(images))
            return [self.forward(x.unsqueeze(0), r)[0] for x, r in zip(images, streams)]
        checks.check_fill(self.fill, images)
        nhwc = images.is_contiguous(memory_format=torch.channels_last)
        last = nhwc and not images.is_contiguous()  # (one channel or one pixel: both)
        if isinstance(rng, RandomStream):  # (the blocks stay where they are without jitter)
            augmentation_rng, block_rng = rng.substream("augmentation"), rng.substream("blocks")
        else:
            augmentation_rng = block_rng = rng
        if self.augmentation is not None:
            images = self.augmentation(images, augmentation_rng)
        keep = self.mask(images, block_rng)
        out = images * keep + self.fill.to(images) * (1 - keep)
        return out.contiguous(memory_format=torch.channels_last) if last else out  # (as given)
