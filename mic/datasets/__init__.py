"""Dataset readers in their published layouts, and the bundled benchmark domains."""

from mic.datasets.digits import DigitsDomain
from mic.datasets.folders import ImageFolder, UnlabeledImageFolder, load_image
from mic.datasets.imagelist import ImageList
from mic.datasets.office import Office31, OfficeHome, domain_pair
from mic.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, classification_transform
from mic.datasets.visda import VisDA2017

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DigitsDomain",
    "ImageFolder",
    "ImageList",
    "Office31",
    "OfficeHome",
    "UnlabeledImageFolder",
    "VisDA2017",
    "classification_transform",
    "domain_pair",
    "load_image",
]
