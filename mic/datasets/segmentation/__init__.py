"""Segmentation datasets: readers of GTA5, SYNTHIA, Cityscapes, ACDC and Dark Zurich in their
published layouts, any folder of images, rare class sampling, and the bundled street scenes."""

from mic.datasets.segmentation.context_streets import ContextStreets
from mic.datasets.segmentation.labels import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    CITYSCAPES_THING_CLASSES,
    IGNORE_INDEX,
    PROTOCOLS,
    LabelMap,
    colorize,
)
from mic.datasets.segmentation.readers import (
    ACDC,
    GTA5,
    Cityscapes,
    DarkZurich,
    SegmentationDataset,
    SegmentationFolder,
    SynthiaRandCityscapes,
)
from mic.datasets.segmentation.sampling import (
    RareClassSampling,
    class_statistics,
    rare_class_sampling,
)
from mic.datasets.segmentation.streets import StreetScenes
from mic.datasets.segmentation.transforms import SegmentationTransform, rescale_size

__all__ = [
    "ACDC",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE",
    "CITYSCAPES_THING_CLASSES",
    "GTA5",
    "IGNORE_INDEX",
    "PROTOCOLS",
    "Cityscapes",
    "ContextStreets",
    "DarkZurich",
    "LabelMap",
    "RareClassSampling",
    "SegmentationDataset",
    "SegmentationFolder",
    "SegmentationTransform",
    "StreetScenes",
    "SynthiaRandCityscapes",
    "class_statistics",
    "colorize",
    "rare_class_sampling",
    "rescale_size",
]
