"""Image pre-processing recipes (torchvision transforms)."""

from __future__ import annotations

from collections.abc import Sequence

from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def classification_transform(
    train: bool,
    size: int = 224,
    resize: int = 256,
    crop: str = "random_resized",
    flip: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> T.Compose:
    """Resize, crop, (flip,) to tensor, normalise.

    Training: resize the shorter side to ``resize``, then ``crop`` = ``"random_resized"``
    (RandomResizedCrop to ``size``), ``"random"`` (RandomCrop) or ``"center"``; optional
    horizontal flip. Evaluation: resize, centre crop to ``size``.
    """
    steps: list[object] = [T.Resize(resize)]
    if train:
        if crop == "random_resized":
            steps = [T.RandomResizedCrop(size)]
        elif crop == "random":
            steps.append(T.RandomCrop(size))
        elif crop == "center":
            steps.append(T.CenterCrop(size))
        else:
            raise ValueError(f"crop must be 'random_resized', 'random' or 'center', got {crop!r}")
        if flip:
            steps.append(T.RandomHorizontalFlip())
    else:
        steps.append(T.CenterCrop(size))
    steps += [T.ToTensor(), T.Normalize(list(mean), list(std))]
    return T.Compose(steps)
