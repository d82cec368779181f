"""Image pre-processing recipes (torchvision transforms)."""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import OmegaConf
from torchvision import transforms as T

from mic.core.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def mic_block_for(size: int | str) -> int:
    """MIC's block side for images of ``size`` px: the published 64 px at 224 px, scaled
    (2 px at 8 px, 9 at 32). The config resolver ``${mic.block_for:${dataset.size}}``."""
    return max(1, round(int(size) * 64 / 224))


OmegaConf.register_new_resolver("mic.block_for", mic_block_for, replace=True)


def classification_transform(
    train: bool,
    size: int = 224,
    resize: int | None = None,
    crop: str = "random_resized",
    flip: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    square: bool = False,
) -> T.Compose:
    """Resize, crop, (flip,) to tensor, normalise.

    Training: resize the shorter side to ``resize`` (None: ``size`` x 256 / 224, rounded: the
    published 256 for 224 px crops, so that a smaller ``size`` is cropped from an image of
    its own scale, not from the middle of a 256 px one), then ``crop`` = ``"random_resized"``
    (RandomResizedCrop to ``size``), ``"random"`` (RandomCrop) or ``"center"``; optional
    horizontal flip. Evaluation: resize, centre crop to ``size``.

    ``square``: resize to ``resize`` x ``resize`` first, aspect ratio not kept, in every mode
    (random resized crops are then taken from that square): the published classification
    code's pre-processing (SDAT, MIC: 256 x 256, then 224 px crops).

    Raises:
        ConfigError: a ``resize`` below ``size``: the crops would be padded (evaluation) or
            impossible (``"random"``); an unknown ``crop``; ``train``, ``flip`` or ``square``
            that is no bool.
    """
    for key, value in (("train", train), ("flip", flip), ("square", square)):
        if not isinstance(value, bool) and value not in (0, 1):  # ('no' is true to Python)
            raise ConfigError(
                f"classification_transform: {key} must be True or False, got {value!r}"
            )
    resize = round(size * 256 / 224) if resize is None else resize
    if resize < size:
        raise ConfigError(
            f"classification images are resized to {resize} px (dataset.resize) and then "
            f"cropped to {size} px (dataset.size): the resize must be at least the crop "
            f"(published 256 and 224), else evaluation crops are mostly padding; e.g. "
            f"dataset.resize={round(size * 256 / 224)} (size x 256 / 224)"
        )
    steps: list[object] = [T.Resize((resize, resize) if square else resize)]
    if train:
        if crop == "random_resized":
            # without ``square`` the crop is taken from the whole image, not resized first
            steps = [*steps, T.RandomResizedCrop(size)] if square else [T.RandomResizedCrop(size)]
        elif crop == "random":
            steps.append(T.RandomCrop(size))
        elif crop == "center":
            steps.append(T.CenterCrop(size))
        else:
            raise ConfigError(f"crop must be 'random_resized', 'random' or 'center', got {crop!r}")
        if flip:
            steps.append(T.RandomHorizontalFlip())
    else:
        steps.append(T.CenterCrop(size))
    steps += [T.ToTensor(), T.Normalize(list(mean), list(std))]
    return T.Compose(steps)
