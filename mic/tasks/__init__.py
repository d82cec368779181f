"""One subpackage per task, each implementing mic.core.Task plus its own models and methods."""
