"""Checkpoint files: written atomically, read with ``weights_only=True``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from mic.core.errors import CheckpointError
from mic.core.teacher import unwrap

#: marks a file as one of ours, with the format version
FORMAT = "mic-checkpoint-v1"


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``path``: a temporary file in the same folder, flushed and fsynced,
    then renamed over ``path``, so a crash never leaves a half-written checkpoint."""
    path = Path(path)
    _atomic_write({"format": FORMAT, **state}, path)
    return path


def save_weights(model: torch.nn.Module, path: str | os.PathLike[str]) -> Path:
    """A weights-only file for inference: ``model.load_state_dict(torch.load(path))``."""
    path = Path(path)
    _atomic_write(unwrap(model).state_dict(), path)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(obj: Any, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise CheckpointError(
            f"cannot write to the checkpoint folder '{path.parent}' ({e.strerror or e}); make "
            "it writable or point the run folder elsewhere (hydra.run.dir=...)"
        ) from e
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # as a plain open() would (mkstemp makes it 0600)
        os.replace(tmp, path)
    except Exception as e:  # torch's writer raises RuntimeError for a full disk
        Path(tmp).unlink(missing_ok=True)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        raise CheckpointError(
            f"could not write checkpoint '{path}' ({reason}); the previous checkpoint is "
            "intact. Free disk space (or lower checkpoint.keep) and resume with resume=auto"
        ) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The newest readable ``iter_*.pt`` in ``directory`` (unreadable ones are skipped). Files
    are opened memory-mapped: their structure is checked without reading every tensor."""
    for path in sorted(Path(directory).glob("iter_*.pt"), reverse=True):
        try:
            load_checkpoint(path, mmap=True)
        except CheckpointError:
            continue
        return path
    return None


def load_checkpoint(
    path: str | os.PathLike[str], map_location: Any = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (tensors and plain types only);
    ``mmap=True`` maps tensor data from the file instead of reading it (``torch.load``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # torch raises several types for foreign or corrupt files
        raise CheckpointError(
            f"cannot read checkpoint '{path}': it is corrupt or not a mic checkpoint "
            f"({e.__class__.__name__})"
        ) from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"'{path}' is not a mic checkpoint (no '{FORMAT}' marker); "
            "to load plain model weights use model.load_state_dict(torch.load(path))"
        )
    return state
