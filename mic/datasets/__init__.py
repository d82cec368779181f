"""Dataset readers in their published layouts, and the bundled benchmark domains."""

from mic.datasets.digits import DigitsDomain
from mic.datasets.folders import ImageFolder, UnlabeledImageFolder, load_image
from mic.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, classification_transform

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DigitsDomain",
    "ImageFolder",
    "UnlabeledImageFolder",
    "classification_transform",
    "load_image",
]
