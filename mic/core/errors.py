"""Errors a user can act on: ``mic-train`` prints them as one paragraph, without a traceback."""

from __future__ import annotations

import math
from numbers import Real


class MicError(Exception):
    """Base class of the errors a user can act on."""


class ConfigError(MicError, ValueError):
    """A configuration value is wrong or missing (names the key and what to do)."""


class DatasetError(MicError, ValueError):
    """A dataset is missing, empty, laid out wrongly or holds a bad file or label."""


class CheckpointError(MicError, RuntimeError):
    """A checkpoint cannot be read or is not one of ours."""


def is_whole(value: object, least: int = 1) -> bool:
    """Whether ``value`` is a whole number >= ``least``: an int or a float of a whole value
    (YAML's ``256.0``); not a bool, NaN or infinity (a width, a count, a size in px)."""
    real = isinstance(value, Real) and not isinstance(value, bool)
    return real and math.isfinite(value) and float(value).is_integer() and value >= least
