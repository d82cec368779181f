"""mic: Masked Image Consistency for unsupervised domain adaptation.

``mic`` gathers the public API: the contract and the loop (``mic.core``), the machinery that
runs it (``mic.training``), the strong augmentation (``mic.augmentation``), the losses
(``mic.functional``) and the base methods (``mic.methods``) several tasks share. Tasks live in
``mic.tasks.<task>``, backbones in ``mic.backbones``, datasets in ``mic.datasets``.
"""

from typing import Any

from mic.augmentation import Normalization, StrongAugmentation
from mic.core import *  # noqa: F403
from mic.core import EndlessLoader
from mic.core import __all__ as _core_all
from mic.functional import reverse_gradient, scale_gradient, weighted_cross_entropy
from mic.methods import SelfTraining, SourceSupervision, mean_teacher, source_only
from mic.training import *  # noqa: F403
from mic.training import __all__ as _training_all

__version__ = "0.1.0"

#: the earlier name of ``EndlessLoader``
Forever = EndlessLoader

__all__ = [
    *_core_all,
    *_training_all,
    "SAM",  # noqa: F405 (provided by __getattr__ below)
    "Forever",
    "Normalization",
    "SelfTraining",
    "SourceSupervision",
    "StrongAugmentation",
    "__version__",
    "mean_teacher",
    "reverse_gradient",
    "scale_gradient",
    "source_only",
    "weighted_cross_entropy",
]


def __getattr__(name: str) -> Any:
    # sharpness-aware minimisation lives with SDAT, the classification method that uses it;
    # imported on first use so that ``import mic`` does not import the classification task
    if name == "SAM":
        from mic.tasks.classification.sam import SAM

        return SAM
    raise AttributeError(f"module 'mic' has no attribute {name!r}")
