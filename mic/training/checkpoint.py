"""Checkpoint files: written atomically, read with ``weights_only=True``."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from mic.core.errors import CheckpointError, ConfigError
from mic.core.teacher import unwrap

log = logging.getLogger(__name__)

#: marks a file as one of ours, with the format version
FORMAT = "mic-checkpoint-v1"


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``path``: a temporary file in the same folder, flushed and fsynced,
    then renamed over ``path``, so a crash never leaves a half-written checkpoint.

    Raises:
        ConfigError: ``state`` holds something other than tensors and plain types (a model, an
            optimizer, a function), which ``load_checkpoint`` would refuse to read.
        CheckpointError: the file cannot be written.
    """
    path = Path(path)
    foreign = _foreign(state, "state")
    if foreign is not None:
        where, value = foreign
        raise ConfigError(
            f"save_checkpoint: {where} is a {type(value).__module__}.{type(value).__name__}; a "
            "checkpoint holds tensors and plain types (numbers, text, lists, dicts), which "
            "load_checkpoint reads with weights_only=True: save a module's or optimizer's "
            "state_dict(), not the object"
        )
    _atomic_write({"format": FORMAT, **state}, path)
    return path


#: what a checkpoint may hold besides containers: what torch.load(weights_only=True) reads
_PLAIN = (
    torch.Tensor,
    str,
    bytes,
    int,
    float,
    complex,
    bool,
    type(None),
    torch.dtype,
    torch.device,
)


def _foreign(value: Any, where: str) -> tuple[str, Any] | None:
    """The first place in ``value`` (and what it holds) that is no tensor, plain type or
    container of them; None when there is none."""
    if isinstance(value, _PLAIN):
        return None
    if isinstance(value, dict):
        items: Any = ((f"{where}[{k!r}]", v) for k, v in value.items())
    elif isinstance(value, (list, tuple, set)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return where, value
    return next((f for w, v in items if (f := _foreign(v, w)) is not None), None)


def save_weights(model: torch.nn.Module, path: str | os.PathLike[str]) -> Path:
    """A weights-only file for inference: ``model.load_state_dict(torch.load(path))``. The
    tensors are saved from the CPU, so that a GPU run's file loads on a machine without one."""
    path = Path(path)
    state = unwrap(model).state_dict()
    state = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in state.items()}
    _atomic_write(state, path)
    return path


def option(key: str, value: object, interpolations: bool = False) -> str:
    """``key=value`` as it is typed on a ``mic-train`` command line: as it is where ``value``
    is plain (ASCII letters, digits, ``_./:@+-``), else a Hydra-quoted value inside the shell's
    single quotes (``'hydra.run.dir="/runs/my run"'``: no ``$``, backtick or quote of the path
    is read by the shell or by Hydra), so that a message's advice can be pasted.
    ``interpolations``: keep a ``${...}`` of ``value`` an interpolation (a value as the user
    typed it), not a literal ``${`` (a path already resolved)."""
    text = str(value)
    if re.fullmatch(r"[A-Za-z0-9_./:@+-]*", text):
        return f"{key}={text}"
    # Hydra: an interpolation escaped, backslashes before a quote or the end doubled, quotes
    escaped = text if interpolations else text.replace("${", "\\${")
    hydra = re.sub(r'(\\+)(?="|$)', lambda m: m.group(1) * 2, escaped)
    typed = f'{key}="{hydra.replace(chr(34), chr(92) + chr(34))}"'
    return "'" + typed.replace("'", "'\\''") + "'"  # the shell: ' as '\''


def write_text_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` as checkpoints are written (a temporary file in the
    same folder, fsynced, renamed over ``path``): a crash leaves the old file or the new one,
    never an emptied one (a run's ``metrics.jsonl``, ``summary.json``, ``config.yaml``).

    Raises:
        OSError: the folder cannot be written (the temporary file is removed).
    """
    path = Path(path)
    _replace(path, _temporary(path), lambda f: f.write(text.encode("utf-8")))


def copy_atomically(source: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Copy the file ``source`` to ``path`` as ``write_text_atomically`` writes (a temporary
    file beside ``path``, fsynced, renamed over it).

    Raises:
        OSError: ``source`` cannot be read or the folder written (the temporary file is
            removed).
    """
    path = Path(path)
    with open(source, "rb") as f:
        _replace(path, _temporary(path), lambda out: shutil.copyfileobj(f, out))


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (setting it to read
    it gives files that other threads create meanwhile, TensorBoard's, no mask)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temporary(path: Path) -> tuple[int, str]:
    """A new temporary file beside ``path``: its descriptor and name."""
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")


def _replace(path: Path, temporary: tuple[int, str], write: Callable[[BinaryIO], Any]) -> None:
    """``write`` into the ``temporary`` file, flushed and fsynced, then rename it over
    ``path`` with the umask's permissions (mkstemp makes it 0600); on any failure the
    temporary file is removed and the error raised."""
    fd, tmp = temporary
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # as a plain open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write(obj: Any, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = _temporary(path)
    except OSError as e:
        raise CheckpointError(
            f"cannot write to the checkpoint folder '{path.parent}' ({e.strerror or e}); make "
            "it writable, or continue the run in another folder from the checkpoints it holds "
            f"({option('resume', path.parent.parent)} hydra.run.dir=<another folder>)"
        ) from e
    try:
        _replace(path, temporary, lambda f: torch.save(obj, f))
    except Exception as e:  # torch's writer raises RuntimeError for a full disk
        stop = e.__context__  # (and for a second Ctrl-C raised inside its write)
        while stop is not None and not isinstance(stop, KeyboardInterrupt):
            stop = stop.__context__
        if stop is not None:
            raise stop from None
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        if not isinstance(e, OSError):  # torch's words ("unexpected pos"): the disk's, too
            with contextlib.suppress(OSError):
                free = shutil.disk_usage(path.parent).free / 2**20
                reason = f"{reason}; its disk has {free:.1f} MiB free"
        held = [p.name for p in sorted(path.parent.glob("iter_*.pt")) if p.name != path.name]
        if (path.parent / "best.pt").is_file():  # (the one a failed best.pt would replace)
            held.append("best.pt" if path.name != "best.pt" else "the previous best.pt")
        kept = (  # (with checkpoint.interval=0 there may be none, or best.pt alone)
            f"the checkpoints already there ({', '.join(held)}) are intact. Free disk space "
            "(or lower checkpoint.keep) and resume with resume=auto"
            if held
            else "no earlier checkpoint was written, so the run cannot be resumed. Free disk "
            "space and start it again"
        )
        raise CheckpointError(f"could not write checkpoint '{path}' ({reason}); {kept}") from e


def periodic_name(step: int) -> str:
    """The file name of the periodic checkpoint of iteration ``step``, ``iter_<step>.pt``
    with 8 digits: the names sort as their iterations."""
    return f"iter_{int(step):08d}.pt"


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The newest readable and intact ``iter_*.pt`` in ``directory`` (unreadable ones, and
    ones whose bytes no longer match their checksums, are skipped)."""
    paths = sorted(Path(directory).glob("iter_*.pt"), reverse=True)
    return next((path for path in paths if is_readable_checkpoint(path, verify=True)), None)


_SKIPPED_SAID: set[tuple[str, str, tuple[str, ...]]] = set()

#: the weights files a finished run leaves beside its checkpoints (one model each)
FINAL_WEIGHTS = ("student.pt", "teacher.pt")


def final_weights(directory: str | os.PathLike[str]) -> list[str]:
    """The names of ``FINAL_WEIGHTS`` that the checkpoints folder ``directory`` holds."""
    return [name for name in FINAL_WEIGHTS if (Path(directory) / name).is_file()]


def warn_of_skipped(found: Path, given: str, folder: str | os.PathLike[str]) -> None:
    """Warn of the ``iter_*.pt`` beside ``found`` newer than it, which ``latest_checkpoint``
    skipped as unreadable (``given``: the setting that chose ``folder``, e.g. ``resume=auto``)."""
    newer = sorted(p.name for p in found.parent.glob("iter_*.pt") if p.name > found.name)
    said = (str(found), given, tuple(newer))  # (a setting whose folder is read twice: once)
    if newer and said not in _SKIPPED_SAID:
        _SKIPPED_SAID.add(said)
        where = "" if given.endswith(f"={folder}") else f" of '{folder}'"  # named once
        warnings.warn(
            f"{given}: the newer checkpoint{'s' if len(newer) > 1 else ''} {', '.join(newer)}"
            f"{where} cannot be read (corrupt, cut off, or its bytes changed); taking "
            f"{found.name}, the newest intact one",
            stacklevel=3,
        )


def is_readable_checkpoint(path: str | os.PathLike[str], verify: bool = False) -> bool:
    """Whether ``path`` is a mic checkpoint that can be read, its file opened memory-mapped
    (its structure checked without reading every tensor); ``verify``: its bytes checked
    against their checksums too (``damaged_part``: the whole file read)."""
    try:
        load_checkpoint(path, mmap=True, verify=verify)
    except CheckpointError:
        return False
    return True


#: (path, size, modification time) of the files ``damaged_part`` found intact: a checkpoint
#: that resume's search verified is not read a second time when it is loaded
_INTACT: set[tuple[str, int, int]] = set()


def damaged_part(path: str | os.PathLike[str]) -> str | None:
    """What of ``path`` is damaged, in words: the first part whose bytes do not match the
    CRC-32 stored beside them (``its part '<name>' no longer matches ...``), or a part's header
    that can no longer be read (``torch.save`` writes a zip archive that records a CRC-32
    per part: bytes changed on disk or in a copy are found there, where ``torch.load`` would
    read them as they are); None where every part matches, or where ``path`` is no zip archive
    (its directory unreadable, or a file of torch's legacy format, which records no checksums:
    ``torch.load`` judges it). Reads the whole file, once per version of it in a process (its
    path, size and modification time)."""
    path = Path(path)
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key in _INTACT:
            return None
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return None
    with archive:
        try:
            bad = archive.testzip()
        except Exception:  # (its name's bytes changed: no text)
            return "a part's header can no longer be read"
    if bad is None:
        _INTACT.add(key)
        return None
    return f"its part '{bad}' no longer matches the checksum stored with it"


def plain_names(weights: dict[str, Any]) -> dict[str, Any]:
    """``weights`` (a state dict) under the names of the model inside torch.compile's wrapper,
    as ``unwrap`` saves them: without ``_orig_mod.``, which files saved before it unwrapped a
    compiled model hold."""
    return {k.replace("_orig_mod.", ""): v for k, v in weights.items()}


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: Any = "cpu",
    mmap: bool = False,
    verify: bool = True,
) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (tensors and plain types only);
    ``mmap=True`` maps tensor data from the file instead of reading it (``torch.load``). The
    student's and teacher's weights come under ``plain_names``.

    Args:
        path: the checkpoint file.
        map_location: where its tensors are placed (``torch.load``'s).
        mmap: map the tensor data instead of reading it.
        verify: check its bytes against the checksums stored in it first (``damaged_part``,
            which reads the whole file); False where only its structure or iteration is read.

    Raises:
        CheckpointError: no such file, a corrupt one (also one whose bytes do not match their
            checksums), or one that is no mic checkpoint (plain weights: the message names
            ``init_from``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    bad = damaged_part(path) if verify else None
    if bad is not None:
        raise CheckpointError(
            f"checkpoint '{path}' is corrupt: {bad} (bytes changed on disk or in a copy), so "
            "its values cannot be trusted; take an older checkpoint of the run (resume=<its "
            "path> continues from it)"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # torch raises several types for foreign or corrupt files
        raise CheckpointError(
            f"cannot read checkpoint '{path}': it is corrupt or not a mic checkpoint "
            f"({e.__class__.__name__})"
        ) from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"'{path}' is not a mic checkpoint (no '{FORMAT}' marker): resume continues a run "
            "from one of its checkpoints (iter_*.pt). To start a new run from plain model "
            f"weights (student.pt, a state_dict) give init_from={path} to mic-train (without "
            "resume), or in Python use model.load_state_dict(torch.load(path))"
        )
    for part in ("student", "teacher"):  # a model given compiled: names without _orig_mod.
        if isinstance(state.get(part), dict):
            state[part] = plain_names(state[part])
    return state


def initial_weights(
    path: str | os.PathLike[str], key: str = "init_from", model: str = "student"
) -> dict[str, Any]:
    """The model weights that a run starts from (``init_from``): the student (or, with
    ``model="teacher"``, the teacher) of a mic checkpoint (``iter_*.pt``, ``best.pt``), a
    weights-only file (``student.pt``, ``teacher.pt``, any ``state_dict`` saved with
    ``torch.save``), or a run folder (its ``checkpoints/student.pt`` or ``teacher.pt``, else
    its newest checkpoint, ``best.pt`` included).

    Args:
        path: the file or run folder.
        key: the config key that named it (for messages).
        model: ``"student"`` or ``"teacher"``: which model of a checkpoint or run folder
            (``init_model``).

    Returns:
        A ``state_dict`` (parameter and buffer name -> tensor), on the CPU.

    Raises:
        ConfigError: no such file or folder, a folder without weights, a file that holds no
            weights, a checkpoint without a teacher for ``model="teacher"``, or
            ``model="teacher"`` with a weights-only file (which holds one model).
        CheckpointError: weights that hold NaN or Inf values.
    """
    file = initial_weights_file(path, key, model)
    return _read_weights(file, key, _within(path, file, model))


def load_initial_weights(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    key: str = "init_from",
    which: str = "student",
    lacking_ok: bool = True,
) -> Path:
    """Load ``initial_weights(path, key, which)`` into ``model``, strictly: every parameter
    and buffer, each of the same shape (names saved from a ``DistributedDataParallel``
    wrapper, each with the prefix ``module.``, or from a torch.compile'd model, with
    ``_orig_mod.``, without it; BatchNorm's batch counts,
    ``num_batches_tracked``, which some files leave out and which only a BatchNorm without
    ``momentum`` reads, may be missing). With ``lacking_ok``, a part that the model's
    ``weights_may_lack`` names (a prefix, e.g. HRDA's ``"scale_attention."``) may be missing
    as a whole: it keeps its initialisation, and the log says so (a run's start; not a
    trained model's rebuilding, ``mic.load_run``).

    Returns:
        The file read (``path`` itself, or the file chosen in a run folder).

    Raises:
        ConfigError: see ``initial_weights``; or weights that do not fit the model (names
            missing or left over, shapes that differ), listed in the message.
        CheckpointError: weights that hold NaN or Inf values.
    """
    file = initial_weights_file(path, key, which)
    state = _read_weights(file, key, _within(path, file, which))
    own = unwrap(model).state_dict()
    state = plain_names(state)  # saved compiled
    ddp = "module."  # saved from a DistributedDataParallel-wrapped model: the plain names
    if all(k.startswith(ddp) for k in state) and not any(k.startswith(ddp) for k in own):
        state = {k[len(ddp) :]: v for k, v in state.items()}
    missing, unexpected, resized = weight_misfits(own, state)
    counts = [k for k in missing if k.endswith("num_batches_tracked")]  # BatchNorm's, unused
    missing = [k for k in missing if k not in counts]  # when momentum is set: left as they are
    parts = tuple(getattr(unwrap(model), "weights_may_lack", ()) if lacking_ok else ())
    lacked = [p for p in parts if not any(k.startswith(p) for k in state)]  # the whole part
    kept = [k for k in missing if k.startswith(tuple(lacked))]
    missing = [k for k in missing if k not in kept]
    shapes = [f"{k} {saved} vs {mine}" for k, saved, mine in resized]
    if missing or unexpected or shapes:
        problems = [
            f"{len(names)} {label}: {few(names)}"
            for label, names in (
                ("missing from the file", missing),
                ("in the file but not the model", unexpected),
                ("of another shape (file vs model)", shapes),
            )
            if names
        ]
        raise ConfigError(
            f"{key}: the weights in '{file}' do not fit the model ({'; '.join(problems)}). "
            "They must come from the same model config (model=..., model.* and "
            f"dataset.num_classes) as this run{_other_class_hint(file, model)}"
            f"{_part_hint(own, state)}"
        )
    unwrap(model).load_state_dict(state, strict=not (counts or kept))
    if kept:
        names = ", ".join(f"{p}*" for p in lacked if any(k.startswith(p) for k in kept))
        log.info(
            f"{key}: '{file}' holds no {names} ({len(kept)} tensors, e.g. the weights of the "
            "single-scale model that HRDA wraps): they keep their initialisation"
        )
    return file


def _other_class_hint(file: Path, model: torch.nn.Module) -> str:
    """``; the run that saved them built <class>, this one <class>`` where the ``config.yaml``
    of the file's run folder (beside ``checkpoints/``) names another model class (a
    detectron2 detector's weights given to torchvision's: none of the names fit)."""
    config = next(
        (
            d / "config.yaml"
            for d in (file.parent, file.parent.parent)
            if (d / "config.yaml").is_file()
        ),
        None,
    )
    if config is None:
        return ""
    try:
        from omegaconf import OmegaConf

        saved = str(OmegaConf.load(config).model._target_)
    except Exception:  # (no model node, an unreadable file: no hint)
        return ""
    mine = f"{type(unwrap(model)).__module__}.{type(unwrap(model)).__qualname__}"
    if saved.rsplit(".", 1)[-1] == mine.rsplit(".", 1)[-1]:
        return ""
    return (
        f"; the run that saved them built {saved} ({config}), this one builds {mine}: weights "
        "do not carry from one model class to another"
    )


def _part_hint(own: dict[str, Any], state: dict[str, Any]) -> str:
    """Advice where ``state`` holds the weights of one part of the model under their own
    names (a timm backbone's ``state_dict``: ``conv1.weight`` for ``backbone.conv1.weight``):
    at least half of them fit under one prefix of the model's names."""
    prefixes = {k.split(".", 1)[0] + "." for k in own if "." in k}
    for prefix in sorted(prefixes):
        fit = sum(prefix + k in own for k in state)
        if state and fit >= len(state) / 2:
            return (
                f". The file's names are those of the model's part '{prefix[:-1]}' without "
                f"'{prefix}' ({fit} of {len(state)}): to start that part from them, give the "
                "file as its pretrained weights (a classification model's backbone: "
                "+model.pretrained_cfg_overlay={file:...} with model.pretrained=true, "
                "docs/classification.md), not as the whole model's"
            )
    return ""


def nonfinite_weights(state: Any, prefix: str = "") -> list[str]:
    """The names of the floating-point tensors in ``state`` (a ``state_dict``, or a
    checkpoint's nested dicts of them, named by dotted paths) that hold NaN or Inf: weights
    of a run that diverged, or of a damaged file, from which nothing can be trained."""
    if isinstance(state, torch.Tensor):
        bad = state.is_floating_point() and not bool(torch.isfinite(state).all())
        return [prefix] if bad else []
    if not isinstance(state, dict):
        return []
    return [n for k, v in state.items() for n in nonfinite_weights(v, f"{prefix}.{k}".lstrip("."))]


def few(names: list[str], shown: int = 3) -> str:
    """The first ``shown`` of ``names``, then how many more (for messages)."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def weight_misfits(
    own: dict[str, Any], saved: dict[str, Any]
) -> tuple[list[str], list[str], list[tuple[str, tuple[int, ...], tuple[int, ...]]]]:
    """What keeps ``saved`` (a ``state_dict``) from loading into a module whose own
    ``state_dict`` is ``own``: the names it lacks, the names only it has, and the tensors of
    another shape as ``(name, shape saved, shape here)``."""
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    resized = [
        (k, tuple(saved[k].shape), tuple(v.shape))
        for k, v in own.items()
        if k in saved
        and isinstance(saved[k], torch.Tensor)
        and isinstance(v, torch.Tensor)
        and saved[k].shape != v.shape
    ]
    return missing, unexpected, resized


def refuse_nonfinite(state: Any, what: str, advice: str) -> None:
    """Raise ``CheckpointError`` when ``state`` holds NaN or Inf weights (``nonfinite_weights``).

    Args:
        state: a ``state_dict`` or a checkpoint's parts.
        what: the weights, as the message names them.
        advice: the message's last sentence: what to do instead.
    """
    bad = nonfinite_weights(state)
    if bad:
        raise CheckpointError(
            f"{what} hold NaN or Inf values ({len(bad)} tensor{'s' if len(bad) > 1 else ''}: "
            f"{few(bad)}), as after a run that diverged or in a damaged file; training from "
            f"them gives nothing. {advice}"
        )


def initial_weights_file(
    path: str | os.PathLike[str], key: str = "init_from", model: str = "student"
) -> Path:
    """The file that ``initial_weights`` reads for ``path``: the file itself, or in a run
    folder its ``checkpoints/<model>.pt`` (the end of the run), else its newest readable
    checkpoint (``iter_*.pt`` or ``best.pt``, by iteration; a stopped run may have only
    ``best.pt``).

    Raises:
        ConfigError: no such file or folder, a folder without weights, or a ``model`` other
            than ``"student"`` and ``"teacher"``; ``key`` names the setting in the message.
    """
    if model not in ("student", "teacher"):  # ("Teacher": "holds no model weights")
        raise ConfigError(f"{key}: the model to read is 'student' or 'teacher', got {model!r}")
    path = Path(path)
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        if (folder / f"{model}.pt").is_file():
            return folder / f"{model}.pt"
        latest = latest_checkpoint(folder)
        if latest is not None:
            warn_of_skipped(latest, f"{key}={path}", path)
        found = [latest, folder / "best.pt"]
        steps = {f: step for f in found if f and (step := checkpoint_step(f)) is not None}
        if not steps:
            raise ConfigError(
                f"{key}: the folder '{folder}' holds no {model}.pt and no readable iter_*.pt "
                "or best.pt; give a weights file or a checkpoint"
            )
        return max(steps, key=lambda f: steps[f])  # iter_*.pt when best.pt is as old
    if not path.is_file():
        raise ConfigError(
            f"{key}: '{path}' does not exist; give a mic checkpoint (iter_*.pt, best.pt), a "
            "weights file (student.pt, or a state_dict saved with torch.save) or a run folder"
        )
    return path


def _within(path: str | os.PathLike[str], file: Path, model: str) -> str:
    """Which model to take from ``file``: none but its own where a run folder's
    ``teacher.pt`` (or ``student.pt``) was chosen for ``model``."""
    return "student" if Path(path).is_dir() and file.name == f"{model}.pt" else model


def checkpoint_step(path: str | os.PathLike[str]) -> int | None:
    """The iteration the checkpoint ``path`` holds (read memory-mapped), None where it is no
    readable one (or no file) or records none."""
    try:
        step = load_checkpoint(path, mmap=True, verify=False).get("step")
    except CheckpointError:
        return None
    return None if step is None else int(step)


def _choice(key: str, model: str) -> str:
    """How the caller chose ``model``: ``init_model=`` beside ``init_from``, else ``key``'s
    (e.g. ``load_run``'s) ``model=``."""
    return f"init_model={model}" if key == "init_from" else f"{key}(model={model!r})"


def _read_weights(file: Path, key: str, model: str = "student") -> dict[str, Any]:
    bad = damaged_part(file)
    if bad is not None:
        raise ConfigError(
            f"{key}: '{file}' is corrupt: {bad} (bytes changed on disk or in a copy), so its "
            "weights cannot be trusted"
        )
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for foreign or corrupt files
        raise ConfigError(
            f"{key}: cannot read '{file}' ({e.__class__.__name__}): it is corrupt or not a "
            "file of model weights"
        ) from e
    if isinstance(state, dict) and state.get("format") == FORMAT:
        state = state.get(model)
        if state is None and model == "teacher":
            raise ConfigError(
                f"{_choice(key, 'teacher')}, but the checkpoint '{file}' holds no teacher (its "
                "run trained without one, e.g. method=source_only): take its student "
                f"({_choice(key, 'student')})"
            )
        prefix = "model."  # an EMATeacher's state: the model it averages, as ``model``
        if model == "teacher" and state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    elif model != "student":
        raise ConfigError(
            f"{_choice(key, model)} chooses a model of a mic checkpoint or run folder, but "
            f"'{file}' is a weights file, which holds one model: it is loaded as it is "
            f"({_choice(key, 'student')}; its run's teacher.pt holds the final teacher)"
        )
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        raise ConfigError(
            f"{key}: '{file}' holds no model weights (a state_dict of tensors, or a mic "
            "checkpoint with a student)"
        )
    refuse_nonfinite(
        state,
        f"{key}: the weights in '{file}'",
        "Start from an earlier checkpoint of that run (an iter_*.pt before it diverged)",
    )
    return state
