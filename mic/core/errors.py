"""Errors a user can act on: ``mic-train`` prints them as one paragraph, without a traceback."""

from __future__ import annotations


class MicError(Exception):
    """Base class of the errors a user can act on."""


class ConfigError(MicError, ValueError):
    """A configuration value is wrong or missing (names the key and what to do)."""


class DatasetError(MicError, ValueError):
    """A dataset is missing, empty, laid out wrongly or holds a bad file or label."""


class CheckpointError(MicError, RuntimeError):
    """A checkpoint cannot be read or is not one of ours."""
