"""MIC's strong augmentation: colour jitter then Gaussian blur, coins drawn per image per call.

The colour operations are kornia's (by default those of its ColorJiggle, the ColorJitter of
kornia 0.5 that the published code ran; those of its ColorJitter, torchvision's formulas, with
``jitter="torchvision"``); the random
draws are ours, made with one ``torch.rand`` on the image's device from the term's random
stream, so that nothing synchronises with the host and every draw is reproducible. The
blur is a separable convolution with one sigma per image: kornia's ``gaussian_blur2d`` checks
its sigmas on the host, which would synchronise every call (``tests/test_masking.py`` checks
that both give the same image).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import torch
from kornia.enhance import (
    adjust_brightness,
    adjust_brightness_accumulative,
    adjust_contrast,
    adjust_contrast_with_mean_subtraction,
    adjust_hue,
    adjust_saturation,
    adjust_saturation_with_gray_subtraction,
)
from torch import Tensor, nn
from torch.nn import functional as F

from mic.core.checks import channel_values, check_images
from mic.core.errors import ConfigError
from mic.core.streams import Random, per_sample, uniform

#: how far outside [0, 1] the input of a StrongAugmentation without mean/std may reach before
#: it warns (normalised images reach about -2 .. 2)
UNIT_TOLERANCE = 0.5


def _number(value: object) -> bool:
    """A real number (NumPy's and a one-element tensor's too), not a bool or text."""
    if isinstance(value, (bool, str)) or value is None:
        return False
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


#: the brightness, contrast and saturation operations of each ``jitter`` setting (factors ~1)
JITTERS = {
    "torchvision": (
        adjust_brightness_accumulative,
        adjust_contrast_with_mean_subtraction,
        adjust_saturation_with_gray_subtraction,
    ),
    "published": (lambda x, f: adjust_brightness(x, f - 1), adjust_contrast, adjust_saturation),
}


def blur_kernel_size(side: int, ratio: float = 0.1) -> int:
    """Odd kernel of about ``ratio`` of the image side (the published rule), at least 3."""
    k = math.ceil(ratio * side)
    k = k if k % 2 == 1 else k - 1
    return max(k, 3)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Blur each image of a B x C x H x W batch with its own ``sigma`` (B,), a separable
    ``kernel_size`` x ``kernel_size`` Gaussian and reflected borders, without leaving the
    device."""
    b, c, h, w = x.shape
    half = kernel_size // 2
    offsets = torch.arange(kernel_size, device=x.device, dtype=x.dtype) - half
    kernel = torch.exp(-(offsets[None] ** 2) / (2 * sigma.to(x.dtype)[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C) x k
    mode = "reflect" if half < min(h, w) else "replicate"
    y = F.pad(x.reshape(1, b * c, h, w), (half, half, half, half), mode=mode)
    y = F.conv2d(y, kernel.view(b * c, 1, 1, kernel_size), groups=b * c)
    y = F.conv2d(y, kernel.view(b * c, 1, kernel_size, 1), groups=b * c)
    return y.view(b, c, h, w)


class Normalization(nn.Module):
    """Maps between normalised tensors and images in [0, 1] (identity when mean is None).

    Args:
        mean: the normalisation's mean, one value per image channel or one for all (a number,
            a sequence, a tensor or a NumPy array of numbers); None: the images are in [0, 1]
            already.
        std: its standard deviation, alike.

    Raises:
        ConfigError: mean without std (or the reverse), of different lengths (but one value
            for all), values that are no finite numbers, or a std <= 0.
    """

    def __init__(
        self,
        mean: Sequence[float] | float | Tensor | None = None,
        std: Sequence[float] | float | Tensor | None = None,
    ):
        super().__init__()
        mean = channel_values(mean, "the input normalisation's mean")
        std = channel_values(std, "the input normalisation's std")
        if (mean is None) != (std is None):
            raise ConfigError("give both mean and std of the input normalisation, or neither")
        if mean is not None and std is not None and 1 in (len(mean), len(std)):
            mean, std = (v * max(len(mean), len(std)) if len(v) == 1 else v for v in (mean, std))
        if mean is not None and std is not None and len(mean) != len(std):
            raise ConfigError(
                f"the input normalisation has {len(mean)} mean values but {len(std)} std "
                "values: give one of each per image channel"
            )
        if std is not None and not all(float(v) > 0 for v in std):
            raise ConfigError(
                f"the input normalisation's std must be above 0 in every channel, got "
                f"{list(std)}: the images are divided by it"
            )
        self.enabled = mean is not None
        shape = (1, -1, 1, 1)
        self.register_buffer("mean", torch.tensor(mean or [0.0]).view(shape), persistent=False)
        self.register_buffer("std", torch.tensor(std or [1.0]).view(shape), persistent=False)

    def check_channels(self, x: Tensor) -> None:
        """Raise ``ConfigError`` when the normalisation has another number of values than
        ``x`` (B x C x H x W) has channels (a shape check: no host synchronisation).

        Args:
            x: a batch of images.

        Raises:
            ConfigError: mean/std of length other than C (and 1).
        """
        n = self.mean.shape[1]
        if self.enabled and n not in (1, x.shape[1]):
            raise ConfigError(
                f"the augmentation's mean/std have {n} values but the images have "
                f"{x.shape[1]} channel{'s' * (x.shape[1] != 1)}: give one mean and std value "
                f"per channel ({x.shape[1]}), e.g. mean=[0.5] * {x.shape[1]}, "
                f"std=[0.5] * {x.shape[1]}, the normalisation of the dataset's transform"
            )

    def to_unit(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return x
        return x * self.std.to(x) + self.mean.to(x)

    def from_unit(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return x
        return (x - self.mean.to(x)) / self.std.to(x)


class StrongAugmentation(nn.Module):
    """Colour jitter (brightness, contrast, saturation, hue) with probability ``jitter_p``,
    then Gaussian blur with probability ``blur_p``; each image gets its own coins and factors.
    Images of 1 or 2 channels get brightness and contrast alone (saturation and hue are
    colour operations); of 4 or more (RGB + depth), the first three get all four and the
    others are returned as given.

    Args:
        jitter_p: probability that an image is colour-jittered (published 0.8).
        strength: jitter strength s: brightness, contrast and saturation factors are drawn
            from U(1 - s, 1 + s), the hue shift from U(-s, s) turns (published 0.2).
        blur_p: probability that an image is blurred (published 0.5).
        blur_sigma: the range of the blur's sigma (published U(0.15, 1.15)).
        blur_kernel_ratio: kernel side as a share of the image height, made odd.
        mean, std: the normalisation of the input, one value per image channel (or one for
            all: a number; a sequence or a tensor); jitter acts on [0, 1] images, so
            normalised input is mapped to [0, 1] and back. None: the input is in [0, 1]. The
            first call warns (once) when its images, so mapped, lie far outside [0, 1]
            (normalised images given without mean/std, or images in [0, 255], are clamped).
        jitter: the colour operations. ``"published"`` (the default since mic 0.2): what the
            published code ran (kornia 0.5's ColorJitter, today's ColorJiggle): brightness
            adds factor - 1 (a shift of up to +-s), contrast scales the image, saturation
            scales HSV saturation. ``"torchvision"`` (the default before): brightness scales
            the image, contrast and saturation blend it with its grey mean and its grey image
            (kornia's ColorJitter, torchvision's formulas). docs/method.md gives what each
            measured on the bundled benchmarks.

    Raises:
        ConfigError: (at construction) probabilities outside [0, 1], a strength outside
            [0, 1), a blur_sigma that is no range of positive sigmas, a blur_kernel_ratio
            outside (0, 1], mean without std or of another length, mean or std values that are
            no numbers, an unknown jitter; (when
            called) images that are not floating point, mean/std of another length than the
            images' channels.

    The four adjustments run in a fixed order (brightness, contrast, saturation, hue); kornia
    and torchvision shuffle the order per call, which would need a host-side draw.
    """

    def __init__(
        self,
        jitter_p: float = 0.8,
        strength: float = 0.2,
        blur_p: float = 0.5,
        blur_sigma: Sequence[float] = (0.15, 1.15),
        blur_kernel_ratio: float = 0.1,
        mean: Sequence[float] | float | Tensor | None = None,
        std: Sequence[float] | float | Tensor | None = None,
        jitter: Literal["torchvision", "published"] = "published",
    ) -> None:
        super().__init__()
        for name, p in (("jitter_p", jitter_p), ("blur_p", blur_p)):
            if not (_number(p) and 0.0 <= p <= 1.0):
                raise ConfigError(f"augmentation {name} must be a probability in [0, 1], got {p!r}")
        if not (_number(strength) and 0.0 <= strength < 1.0):
            raise ConfigError(f"augmentation strength must lie in [0, 1), got {strength!r}")
        if jitter not in JITTERS:
            raise ConfigError(
                f"augmentation jitter must be one of {sorted(JITTERS)}, got {jitter!r}"
            )
        self.jitter = jitter
        sigma = list(blur_sigma) if isinstance(blur_sigma, Sequence) else []
        if not (len(sigma) == 2 and all(_number(v) for v in sigma) and 0 < sigma[0] <= sigma[1]):
            raise ConfigError(
                f"augmentation blur_sigma must be a range [low, high] of sigmas with 0 < low <= "
                f"high (published [0.15, 1.15]), got {blur_sigma!r}"
            )
        if not (_number(blur_kernel_ratio) and 0 < blur_kernel_ratio <= 1):
            raise ConfigError(
                "augmentation blur_kernel_ratio (the kernel's side as a share of the image "
                f"height) must lie in (0, 1], got {blur_kernel_ratio!r}"
            )
        self.jitter_p = float(jitter_p)
        self.strength = float(strength)
        self.blur_p = float(blur_p)
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))
        self.blur_kernel_ratio = float(blur_kernel_ratio)
        self.normalization = Normalization(mean, std)
        self._range_checked = False

    def forward(self, images: Tensor, rng: Random = None) -> Tensor:
        """Augment a B x C x H x W float batch (or a list of C x H x W images of different
        sizes), drawing from ``rng`` (a term's ``RandomStream`` in the loop).

        Raises:
            ConfigError: images that are no (B, C, H, W) tensor or list of (C, H, W) ones, or
                mean/std of another length than the images' channels.
        """
        check_images(images, "StrongAugmentation")
        if isinstance(images, Tensor) and images.shape[0] == 0:
            return images
        if isinstance(images, (list, tuple)):
            streams = per_sample(rng, len(images))
            return [self.forward(x.unsqueeze(0), r)[0] for x, r in zip(images, streams)]
        self.normalization.check_channels(images)
        x = self.normalization.to_unit(images)
        if not self._range_checked:
            self._range_checked = True
            self._warn_outside_unit(x)
        rgb, touched = self._augment_unit(x[:, :3], rng)
        # an image neither jittered nor blurred, and extra channels (depth, say), are returned
        # as given: the round trip through [0, 1] would change them (by 2/255 in bfloat16)
        out = self.normalization.from_unit(torch.cat([rgb, x[:, 3:]], dim=1))
        out = torch.where(touched, out, images)
        out = torch.cat([out[:, :3], images[:, 3:]], dim=1) if images.shape[1] > 3 else out
        last = images.is_contiguous(memory_format=torch.channels_last) > images.is_contiguous()
        return out.contiguous(memory_format=torch.channels_last) if last else out  # (as given)

    def _warn_outside_unit(self, x: Tensor) -> None:
        """Warn when the images mapped to [0, 1] (``x``: as given without mean/std, else
        un-normalised with them) lie far outside it (one host synchronisation, on the first
        call only)."""
        if x.numel() == 0:
            return
        lo, hi = (float(v) for v in torch.aminmax(x.detach().float()))
        if lo >= -UNIT_TOLERANCE and hi <= 1 + UNIT_TOLERANCE:
            return
        if self.normalization.enabled:
            said = (
                f"StrongAugmentation maps its input back to [0, 1] with its mean/std, which "
                f"gives values in [{lo:.2f}, {hi:.2f}]: jitter clamps them to [0, 1]. The "
                "images are not normalised with this mean/std: give the dataset's "
                "normalisation (images in [0, 255]: scale them to [0, 1], then normalise)"
            )
        else:
            said = (
                f"StrongAugmentation has no mean/std, so it takes its input to be images in "
                f"[0, 1], but got values in [{lo:.2f}, {hi:.2f}]: jitter clamps them to [0, 1]. "
                "For normalised images pass the dataset's normalisation "
                "(StrongAugmentation(mean=..., std=...)); for images in [0, 255] scale them "
                "to [0, 1]"
            )
        warnings.warn(said, stacklevel=2)

    def augment_unit(self, x: Tensor, rng: Random = None) -> Tensor:
        """Augment B x 3 x H x W RGB images in [0, 1]."""
        return self._augment_unit(x, rng)[0]

    def _augment_unit(self, x: Tensor, rng: Random) -> tuple[Tensor, Tensor]:
        """``augment_unit``'s images, and which were jittered or blurred ((B, 1, 1, 1) bool)."""
        u = uniform(rng, x.shape[0], 7, device=x.device)
        s = self.strength
        jitter = (u[:, 0] < self.jitter_p).view(-1, 1, 1, 1)
        brightness, contrast, saturation = (1 - s + 2 * s * u[:, i] for i in (1, 2, 3))
        hue_turns = s * (2 * u[:, 4] - 1)
        j = x.clamp(0.0, 1.0)
        shift_brightness, scale_contrast, scale_saturation = JITTERS[self.jitter]
        j = shift_brightness(j, brightness)
        j = scale_contrast(j, contrast)
        if x.shape[1] == 3:
            j = scale_saturation(j, saturation)
            j = adjust_hue(j, hue_turns * 2 * math.pi)
        x = torch.where(jitter, j.clamp(0.0, 1.0).to(x.dtype), x)

        lo, hi = self.blur_sigma
        sigma = (lo + (hi - lo) * u[:, 5]).to(x.dtype)
        k = blur_kernel_size(x.shape[-2], self.blur_kernel_ratio)
        blurred = gaussian_blur(x, sigma, k)
        blur = (u[:, 6] < self.blur_p).view(-1, 1, 1, 1)
        return torch.where(blur, blurred, x), jitter | blur
