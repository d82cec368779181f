"""What more than one task needs of its models."""

from __future__ import annotations

import functools
import inspect

from torch import nn

from mic.core import ConfigError
from mic.core.teacher import unwrap


@functools.cache
def _forward_takes_return_features(model_type: type) -> bool:
    return "return_features" in inspect.signature(model_type.forward).parameters


def require_features(model: nn.Module, needed_by: str) -> None:
    """Check, once per model class, that ``model(x, return_features=True)`` returns the logits
    and the features that ``needed_by`` reads.

    Raises:
        ConfigError: the model's forward takes no ``return_features``.
    """
    model = unwrap(model)
    if not _forward_takes_return_features(type(model)):
        raise ConfigError(
            f"{needed_by} needs the model's features, but the forward of "
            f"{type(model).__name__} takes no return_features; use one of mic's models "
            "(mic.tasks.classification.Classifier, the mic.tasks.segmentation models) or add "
            "forward(x, return_features=False) returning (logits, features) when it is True"
        )
