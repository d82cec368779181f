"""Errors a user can act on: ``mic-train`` prints them as one paragraph, without a traceback."""

from __future__ import annotations


class MicError(Exception):
    """Base class of the errors a user can act on."""


class ConfigError(MicError, ValueError):
    """A configuration value is wrong or missing (names the key and what to do)."""


class DatasetError(MicError, ValueError):
    """A dataset is missing, empty, laid out wrongly or holds a bad file or label.

    Args:
        message: what is wrong, and what to do.
        option: the reader's argument that would take the data as it is (e.g.
            ``allow_empty_classes=true``), where the message advises one ("pass <option>"):
            ``mic-train`` names it as the override of the reader's config key instead.
    """

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class CheckpointError(MicError, RuntimeError):
    """A checkpoint cannot be read or is not one of ours."""
