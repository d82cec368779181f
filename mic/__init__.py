"""mic: Masked Image Consistency for unsupervised domain adaptation.

The public API is mic.core's (re-exported here); tasks live in ``mic.tasks.<task>``,
backbones in ``mic.backbones``, datasets in ``mic.datasets``.
"""

from mic.core import *  # noqa: F403
from mic.core import __all__ as _core_all

__version__ = "0.1.0"
__all__ = [*_core_all, "__version__"]
