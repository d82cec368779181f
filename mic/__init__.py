"""mic: Masked Image Consistency for unsupervised domain adaptation.

``mic`` gathers the public API: the contract and the loop (``mic.core``), the machinery that
runs it (``mic.training``), the strong augmentation (``mic.augmentation``), the losses
(``mic.functional``) and the base methods (``mic.methods``) several tasks share. Tasks live in
``mic.tasks.<task>``, backbones in ``mic.backbones``, datasets in ``mic.datasets``.

The names are imported on first use (``mic.BlockMasker`` imports ``mic.core`` then), so that
``import mic`` and the ``mic-train`` command start without importing torch first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0.dev0"

if TYPE_CHECKING:  # what the names below resolve to, for type checkers and editors
    from mic.augmentation import Normalization, StrongAugmentation  # noqa: F401
    from mic.core import *  # noqa: F403
    from mic.core import EndlessLoader as Forever  # noqa: F401
    from mic.experiment import load_run  # noqa: F401
    from mic.functional import reverse_gradient, scale_gradient, weighted_cross_entropy  # noqa: F401
    from mic.methods import SelfTraining, SourceSupervision, mean_teacher, source_only  # noqa: F401
    from mic.scoring import score_run  # noqa: F401
    from mic.tasks.classification.sam import SAM  # noqa: F401
    from mic.training import *  # noqa: F403

#: module -> the names ``mic`` takes from it; the modules with ``__all__`` give all of theirs
_SOURCES: dict[str, tuple[str, ...] | None] = {
    "mic.core": None,
    "mic.training": None,
    "mic.augmentation": ("Normalization", "StrongAugmentation"),
    "mic.functional": ("reverse_gradient", "scale_gradient", "weighted_cross_entropy"),
    "mic.methods": ("SelfTraining", "SourceSupervision", "mean_teacher", "source_only"),
    "mic.experiment": ("load_run",),
    "mic.scoring": ("score_run",),
}
#: names from elsewhere: ``Forever`` is the earlier name of ``EndlessLoader``; sharpness-aware
#: minimisation lives with SDAT, the classification method that uses it
_ALIASES = {
    "Forever": ("mic.core", "EndlessLoader"),
    "SAM": ("mic.tasks.classification.sam", "SAM"),
}


def _names() -> dict[str, tuple[str, str]]:
    """Every public name -> (module, its name there)."""
    names = {}
    for module, own in _SOURCES.items():
        for name in own if own is not None else importlib.import_module(module).__all__:
            names[name] = (module, name)
    return {**names, **_ALIASES}


def __getattr__(name: str) -> Any:
    if name == "__all__":
        value: Any = sorted([*_names(), "__version__"])
    elif name.startswith("__"):
        raise AttributeError(f"module 'mic' has no attribute {name!r}")
    else:
        found = _names().get(name)
        if found is not None:
            value = getattr(importlib.import_module(found[0]), found[1])
        else:  # a subpackage, as ``mic.core`` after ``import mic``
            try:
                value = importlib.import_module(f"mic.{name}")
            except ModuleNotFoundError as e:
                if e.name != f"mic.{name}":
                    raise
                raise AttributeError(f"module 'mic' has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names and the subpackages (tab completion), not this module's own imports
    (``importlib``, ``Any``, ``annotations``)."""
    import pkgutil
    from pathlib import Path

    folder = [str(Path(__file__).parent)]
    packages = {m.name for m in pkgutil.iter_modules(folder) if not m.name.startswith("_")}
    return sorted({*_names(), "__version__", *packages})
