"""A module of one's own whose import fails: it imports a package that is not installed."""

import nonexistent_dependency_of_mic_tests  # noqa: F401
