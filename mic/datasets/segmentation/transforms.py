"""Joint image / label pre-processing for segmentation, after mmseg's published pipelines:
resize (keeping the aspect ratio), random crop (with a cap on the share of one class),
random horizontal flip, normalisation, and padding of crops larger than the image."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from mic.core.errors import ConfigError
from mic.datasets.segmentation.labels import IGNORE_INDEX
from mic.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD


def rescale_size(width: int, height: int, scale: Sequence[int]) -> tuple[int, int]:
    """mmcv's keep-ratio rule: the largest size whose long side is at most ``max(scale)``
    and short side at most ``min(scale)``; ``(1024, 512)`` takes Cityscapes' 2048 x 1024 to
    1024 x 512, ``(1280, 720)`` takes GTA5's 1914 x 1052 to 1280 x 704; a side is at least
    1 px (a strip of 2 x 400 px would round to 0)."""
    factor = min(max(scale) / max(width, height), min(scale) / min(width, height))
    return max(1, int(width * factor + 0.5)), max(1, int(height * factor + 0.5))


class SegmentationTransform:
    """Image (and label) -> normalised float tensor (and int64 training-id tensor).

    Args:
        scale: ``(long, short)`` bound of the resize keeping the aspect ratio (mmseg's
            ``img_scale``); None keeps the size.
        crop_size: ``(height, width)`` of a random crop; None: no crop. A crop larger than
            the image is padded: the image with 0 after normalisation (the mean colour), the
            label with 255 (ignored), as published.
        cat_max_ratio: re-draw the crop (up to 10 times) while one class covers at least this
            share of its labelled pixels (published 0.75 on source crops; 1 disables).
        flip: flip horizontally with probability 0.5.
        mean, std: normalisation in [0, 1] units (ImageNet's by default).
        keep_label_size: leave the label at its original resolution (evaluation compares
            with full-resolution labels, as published; the metric upsamples predictions).

    Called as ``transform(image)`` (unlabelled) or ``transform(image, label)``. Random draws
    use torch's global generator, which DataLoader seeds per worker.
    """

    def __init__(
        self,
        scale: Sequence[int] | None = None,
        crop_size: Sequence[int] | None = None,
        cat_max_ratio: float = 1.0,
        flip: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        keep_label_size: bool = False,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        if scale is not None and (len(scale) != 2 or min(scale) <= 0):
            raise ConfigError(f"transform scale must be two positive sides, got {scale}")
        if crop_size is not None and (len(crop_size) != 2 or min(crop_size) <= 0):
            raise ConfigError(f"crop_size must be (height, width) > 0, got {crop_size}")
        if keep_label_size and crop_size is not None:
            raise ConfigError(
                "keep_label_size (evaluation at full label resolution) cannot be combined with "
                "crop_size: a crop needs image and label of one size"
            )
        if not 0.0 < cat_max_ratio <= 1.0:
            raise ConfigError(f"cat_max_ratio must lie in (0, 1], got {cat_max_ratio}")
        self.scale = tuple(int(s) for s in scale) if scale is not None else None
        self.crop_size = tuple(int(s) for s in crop_size) if crop_size is not None else None
        self.cat_max_ratio = float(cat_max_ratio)
        self.flip = bool(flip)
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)
        self.keep_label_size = keep_label_size
        self.ignore_index = ignore_index

    def output_sizes(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """``((H, W) of the image tensor, (H, W) of the label map)`` that an image of
        ``height`` x ``width`` px (and its label of that size) become."""
        if self.crop_size is not None:
            return self.crop_size, self.crop_size  # type: ignore[return-value]
        w, h = rescale_size(width, height, self.scale) if self.scale else (width, height)
        return (h, w), ((height, width) if self.keep_label_size else (h, w))

    def crop_box(self, height: int, width: int, label: np.ndarray | None) -> tuple[int, int]:
        ch, cw = self.crop_size  # type: ignore[misc]
        for _ in range(10 if self.cat_max_ratio < 1.0 and label is not None else 1):
            top = int(torch.randint(max(height - ch, 0) + 1, ()).item())
            left = int(torch.randint(max(width - cw, 0) + 1, ()).item())
            if label is None or self.cat_max_ratio >= 1.0:
                break
            window = label[top : top + ch, left : left + cw]
            counts = np.bincount(window[window != self.ignore_index].ravel())
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                break
        return top, left

    def __call__(
        self, image: Image.Image, label: np.ndarray | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        if self.scale is not None:
            size = rescale_size(image.width, image.height, self.scale)
            if size != image.size:
                image = image.resize(size, Image.BILINEAR)
                if label is not None and not self.keep_label_size:
                    label = np.asarray(Image.fromarray(label).resize(size, Image.NEAREST))
        pixels = np.asarray(image)  # H x W x 3 uint8
        if self.crop_size is not None:  # crop first: only the crop is converted
            ch, cw = self.crop_size
            top, left = self.crop_box(pixels.shape[0], pixels.shape[1], label)
            pixels = pixels[top : top + ch, left : left + cw]
            label = label[top : top + ch, left : left + cw] if label is not None else None
        x = torch.from_numpy(np.array(pixels, np.float32)).permute(2, 0, 1) / 255.0
        x = (x - self.mean) / self.std
        y = torch.from_numpy(np.array(label, np.int64)) if label is not None else None
        if self.crop_size is not None:
            x = _pad(x, ch, cw, 0.0)
            if y is not None:
                y = _pad(y, ch, cw, self.ignore_index)
        if self.flip and bool(torch.rand(()) < 0.5):
            x = x.flip(-1)
            y = y.flip(-1) if y is not None else None
        x = x.contiguous()
        return x if y is None else (x, y.contiguous())


def _pad(t: Tensor, height: int, width: int, value: float) -> Tensor:
    dh, dw = height - t.shape[-2], width - t.shape[-1]
    if dh <= 0 and dw <= 0:
        return t
    return torch.nn.functional.pad(t, (0, max(dw, 0), 0, max(dh, 0)), value=value)
