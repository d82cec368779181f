"""Errors that mean "the user must change something", with a message that says what.

The command line prints these as one paragraph without a traceback; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` Did you mean: a, b?`` with the known names closest to ``name`` (empty if none)."""
    close = difflib.get_close_matches(name, list(known), n=5, cutoff=0.6)
    return f" Did you mean: {', '.join(close)}?" if close else ""


class MicError(Exception):
    """Base class of the errors a user can act on."""


class ConfigError(MicError, ValueError):
    """A configuration value is wrong or missing (names the key and what to do)."""


class DatasetError(MicError, ValueError):
    """A dataset is missing, empty, laid out wrongly or holds a bad file or label."""


class CheckpointError(MicError, RuntimeError):
    """A checkpoint cannot be read or is not one of ours."""
