"""Resuming a run: which checkpoint, whether the new config may continue it, and loading it.

A checkpoint records the resolved config it was trained with. Resuming with a config that
differs in a key whose change breaks exact resume or would be silently ignored (the optimiser,
the schedule, batch sizes, the model, the method, the seed, the data, the process count) stops
with a message naming each key, unless the key is listed in ``resume_allow_changes``; the
listed changes then take effect from the resumed iteration (the optimiser's and the schedule's
new values replace the checkpoint's), and ``config_resumed.yaml`` records what runs.

A data folder or file (a key whose last part contains ``root``, or a ``dataset.*`` key of a
split's ``images``, ``labels`` or ``annotations``) may change, for data moved to another
mount, but only to the same data: a checkpoint records how many samples each training split
holds (``DATA_SPLITS``) and, for readers of files, a digest of their names below their common
folder (``data_fingerprint``), and a resume whose splits hold other counts or other files
stops, naming the changed roots (``check_same_data``). The test set's keys may change freely:
it only scores.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import logging
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from mic.core import AdaptationLoop, CheckpointError, ConfigError
from mic.core.teacher import unwrap
from mic.training import (
    Checkpointer,
    latest_checkpoint,
    load_checkpoint,
    process_info,
    set_rng_state,
)
from mic.training.checkpoint import (
    checkpoint_step,
    few,
    final_weights,
    is_readable_checkpoint,
    option,
    refuse_nonfinite,
    warn_of_skipped,
    weight_misfits,
)

__all__ = [
    "FREE_TO_CHANGE",
    "check_resume_config",
    "check_same_data",
    "config_changes",
    "data_record",
    "find_resume_checkpoint",
    "resume",
    "resumed_line",
]

#: keys that may change on resume without asking: they do not touch the training itself
FREE_TO_CHANGE = (
    "resume",
    "init_model",  # read with init_from only, which a resumed run does not read
    "resume_allow_changes",
    "iterations",
    "device",
    "log.",
    "eval.",
    "checkpoint.",
    "loader.num_workers",
    "loader.test_batch_size",
    "compile",
    "deterministic",
    "channels_last",
    "nan_policy",
    "max_skipped",
    "preflight",
    "dataset.test.",
    "dataset.test_",
    "dataset.root_test",
    # read only through the strong augmentations' own jitter settings, compared themselves
    "augmentation_jitter",
)
#: the last parts of ``dataset.*`` keys that name data paths, besides ``*root*`` (also with a
#: split's prefix: ``source_images``)
DATA_PATH_KEYS = ("images", "labels", "annotations")
#: the name under which a change of the number of processes is allowed
PROCESSES = "processes"
#: the splits whose sample counts a checkpoint records (``data``) and a resume compares
DATA_SPLITS = ("source", "target")
#: arguments whose default changed after they were added to mic's configs: what a config written
#: before one existed ran, by (its node's class, the argument's name). An absent argument
#: otherwise means today's default (``same_meaning``)
ABSENT_MEANS: dict[tuple[str, str], Any] = {
    # augmentation_jitter's default, published since 0.2, reaches a run through these
    ("mic.augmentation.StrongAugmentation", "jitter"): "torchvision",
}


def data_fingerprint(dataset: Any) -> str | None:
    """A digest of the names of a split's image files below their common folder (through
    wrappers, from the reader's ``files`` or the first item of its ``samples``): the same
    after the folder moved, another when the files differ in name; None for data that are
    not files (generated, of one's own without such a list)."""
    files = getattr(dataset, "files", None)
    if files is None and getattr(dataset, "samples", None) is not None:
        files = [s[0] if isinstance(s, (tuple, list)) else s for s in dataset.samples]
    try:
        paths = [os.path.abspath(os.fspath(f)) for f in files or ()]
    except TypeError:  # not paths
        return None
    if not paths:
        return None
    base = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    names = sorted(os.path.relpath(p, base) for p in paths)
    return hashlib.sha1("\n".join(names).encode()).hexdigest()[:16]


def label_fingerprint(dataset: Any) -> str | None:
    """A digest of the targets a reader holds in memory (``targets``: one dict of tensors per
    sample, as the COCO and VOC detection readers read their annotation files): another
    when the annotations changed; None for readers that read their labels from files per
    sample (their names are ``data_fingerprint``'s) or keep none."""
    targets = getattr(dataset, "targets", None)
    if not isinstance(targets, list) or not targets or not isinstance(targets[0], dict):
        return None
    digest = hashlib.sha1()
    for target in targets:
        for key in sorted(target):
            value = target[key]
            if isinstance(value, torch.Tensor):
                digest.update(f"{key}:{value.dtype}:{tuple(value.shape)}".encode())
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def data_record(data: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint records of the training data, compared on resume: each split of
    ``DATA_SPLITS``'s sample count and, where it has them, ``<split>_files``, its
    ``data_fingerprint``, and ``<split>_labels``, its ``label_fingerprint``."""
    record: dict[str, Any] = {split: len(data[split]) for split in DATA_SPLITS}
    for split in DATA_SPLITS:
        for kind, fingerprint in (
            ("files", data_fingerprint(data[split])),
            ("labels", label_fingerprint(data[split])),
        ):
            if fingerprint is not None:
                record[f"{split}_{kind}"] = fingerprint
    return record


log = logging.getLogger(__name__)


def timestamped_run_folder() -> bool:
    """Whether mic-train's run folder is its default, a new one (time-stamped) at each
    command: neither ``hydra.run.dir`` nor, in a sweep, ``hydra.sweep.dir`` was chosen."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return False
    hydra = HydraConfig.get()
    node = hydra.sweep if hydra.mode == RunMode.MULTIRUN else hydra.run
    return "${now:" in str(OmegaConf.to_container(node, resolve=False).get("dir"))


def _sweep_runs_beside(run_dir: Path) -> list[str]:
    """In a sweep (``-m``), the other folders of the sweep that hold a run of this job's
    number whose settings differ from this job's by settings added or left out alone (their
    ``.hydra`` record says so): the job's folder, named by its settings, was renamed."""
    from hydra.core.hydra_config import HydraConfig

    if not in_sweep():
        return []
    hydra = HydraConfig.get()
    sweep, mine = Path(hydra.sweep.dir), _settings(hydra.overrides.task)
    found = {p.parents[1] for p in sweep.glob("**/checkpoints/*.pt")}
    ours = []
    for folder in sorted(f for f in found if f.resolve() != run_dir.resolve()):
        record = folder / ".hydra"
        with contextlib.suppress(Exception):  # (no record, or one of one's own making)
            if OmegaConf.load(record / "hydra.yaml").hydra.job.num != hydra.job.num:
                continue
            theirs = _settings(OmegaConf.load(record / "overrides.yaml"))
            shared = set(mine) & set(theirs)
            if set(mine) != set(theirs) and all(mine[k] == theirs[k] for k in shared):
                ours.append(str(folder.relative_to(sweep)))
    return ours


def _settings(overrides: Any) -> dict[str, str]:
    """A job's command-line settings by key (``+``/``++`` left off), but the resume ones."""
    settings = {}
    for override in overrides:
        key, _, value = str(override).partition("=")
        settings[key.lstrip("+~")] = value
    return {k: v for k, v in settings.items() if k not in ("resume", "resume_allow_changes")}


def in_sweep() -> bool:
    """Whether mic-train runs as a job of a sweep (``-m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def folder_option() -> str:
    """The option that chooses the run folder: ``hydra.sweep.dir`` in a multirun (``-m``),
    ``hydra.run.dir`` in another mic-train run, ``run_dir`` (``run_experiment``'s argument)
    in Python, where Hydra's options change nothing."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return "run_dir"
    return "hydra.sweep.dir" if in_sweep() else "hydra.run.dir"


def refuse_empty_run_folder() -> None:
    """Refuse mic-train's ``hydra.run.dir=`` (or, with ``-m``, ``hydra.sweep.dir=``) given
    empty, which would write the run into the current folder.

    Raises:
        ConfigError: naming the option and the folder.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    key = "sweep" if hydra.mode == RunMode.MULTIRUN else "run"
    if str(hydra[key].dir).strip() == "":
        raise ConfigError(empty_run_folder(f"hydra.{key}.dir"))


def empty_run_folder(option: str) -> str:
    """Why a run folder ``option`` (``hydra.run.dir``) given empty is refused."""
    return (
        f"{option} is empty, which would write the run (checkpoints/, config.yaml, logs) into "
        f"the current folder '{Path.cwd()}'; give the run folder, {option}=<folder>, or leave "
        "it out for a new time-stamped one"
    )


def find_resume_checkpoint(resume: Any, run_dir: Path | None) -> Path | None:
    """The checkpoint to resume from.

    Args:
        resume: None (start afresh), ``auto`` (the newest readable checkpoint of the run
            folder, if any: its newest ``iter_*.pt``, or its ``best.pt`` where that is of a
            later iteration or no ``iter_*.pt`` can be read), a checkpoint file, or a run
            folder (the same choice among its checkpoints).
        run_dir: this run's folder.

    Raises:
        ConfigError: ``auto`` without a run folder.
        CheckpointError: no such file, no readable checkpoint in a given folder, or only
            unreadable ones in the run folder.
    """
    if resume in (None, "", False):
        return None
    if str(resume) == "auto":
        if run_dir is None:
            key = folder_option()
            where = "run_experiment(cfg, run_dir)" if key == "run_dir" else f"{key}=..."
            raise ConfigError(f"resume=auto needs a run folder to look in ({where})")
        found = latest_checkpoint(run_dir / "checkpoints")
        every = sorted(p.name for p in run_dir.glob("checkpoints/iter_*.pt"))
        if found is None:  # (a best.pt before the first iter_*.pt, or beside unreadable ones)
            best = _best_alone(run_dir / "checkpoints", "resume=auto", f" in '{run_dir}'")
            if best is not None:
                return best
        if not every and not final_weights(run_dir / "checkpoints"):  # (those alone: refused)
            if timestamped_run_folder():
                warnings.warn(
                    f"resume=auto: no checkpoint in {run_dir}; starting a new run. The default "
                    "run folder is new (time-stamped) at each command: to resume a run, give "
                    "its folder with hydra.run.dir=<the run's folder> (hydra.sweep.dir for -m)",
                    stacklevel=2,
                )
            elif others := _sweep_runs_beside(run_dir):
                warnings.warn(
                    f"resume=auto: no checkpoint in {run_dir}; starting a new run, though the "
                    f"sweep's folder {others[0]} holds a run of this job's number whose "
                    "settings differ from its own by settings added or left out alone: each "
                    "job resumes the folder hydra.sweep.subdir names for it, so give the sweep's "
                    "first command's settings and subdir (a subdir named by the settings is "
                    "another folder when they change)",
                    stacklevel=2,
                )
            else:
                log.info(f"resume=auto: no checkpoint in {run_dir}; starting a new run")
        if found is None and every:
            raise CheckpointError(
                f"resume=auto: no checkpoint of the run folder '{run_dir}' can be read"
                f"{_unreadable(every)}. Delete them to start this "
                "run afresh in the folder, or resume from a good file with resume=<path>"
            )
        if found is not None:
            warn_of_skipped(found, "resume=auto", run_dir)
            found = _newer_best(found, "resume=auto")
        return found
    path = Path(str(resume))
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        found = latest_checkpoint(folder)
        if found is None:  # (as resume=auto: the best.pt of a run stopped before an iter_*.pt)
            found = _best_alone(folder, f"resume={path}", "")
        else:
            warn_of_skipped(found, f"resume={path}", path)
            found = _newer_best(found, f"resume={path}")
        if found is None:
            there = sorted(p.name for p in folder.glob("iter_*.pt")) + [
                p.name for p in folder.glob("best.pt")
            ]
            raise CheckpointError(
                f"resume={path}: no readable checkpoint (iter_*.pt or best.pt) in it"
                f"{_unreadable(there)}"
            )
        if run_dir is not None and timestamped_run_folder():
            warnings.warn(
                f"resume={path}: the run continues in the new folder {run_dir} (no "
                f"hydra.run.dir was given); to continue it in its own folder, give "
                f"{option('hydra.run.dir', path)} resume=auto",
                stacklevel=2,
            )
        return found
    if not path.exists():
        raise CheckpointError(f"resume={path}: no such checkpoint file or run folder")
    return path


def _unreadable(names: list[str]) -> str:
    """`` (<names>: corrupt, cut off, or changed)`` for checkpoint files that cannot be read;
    empty for none."""
    return f" ({', '.join(names)}: corrupt, cut off, or changed)" if names else ""


def _best_alone(folder: Path, given: str, where: str) -> Path | None:
    """The intact ``best.pt`` of a checkpoints ``folder`` that holds no readable ``iter_*.pt``
    (the caller found none), with a warning that the iterations after it are trained again
    (None: no intact ``best.pt``)."""
    best = folder / "best.pt"
    if not is_readable_checkpoint(best, verify=True):
        return None
    every = sorted(p.name for p in folder.glob("iter_*.pt"))
    warnings.warn(
        f"{given}: no readable periodic checkpoint (iter_*.pt){where}{_unreadable(every)}; "
        "resuming from best.pt, the checkpoint of its best evaluation (any iterations after "
        "it are trained again; checkpoint.interval=N writes one every N iterations)",
        stacklevel=3,
    )
    return best


def _newer_best(found: Path, given: str) -> Path:
    """``found`` (an ``iter_*.pt``), or the ``best.pt`` beside it where that is intact and of a
    later iteration (an evaluation after the last periodic checkpoint), said in the log."""
    best = found.with_name("best.pt")
    newer = checkpoint_step(best) if best.is_file() else None
    if newer is None or newer <= int(found.stem.split("_")[1]):
        return found
    if not is_readable_checkpoint(best, verify=True):
        return found
    log.info(f"{given}: best.pt (iteration {newer}) is newer than {found.name}; resuming from it")
    return best


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    if not isinstance(tree, dict) or not tree:
        return {prefix.rstrip("."): tree} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}{key}."))
    return out


def _free(key: str) -> bool:
    return _is_root(key) or any(key == f or key.startswith(f) for f in FREE_TO_CHANGE)


def config_changes(
    old: dict[str, Any], new: dict[str, Any], processes: tuple[int, int]
) -> dict[str, tuple[Any, Any]]:
    """The keys (and ``PROCESSES``) whose values differ between the checkpoint's resolved
    config and the new one, except those free to change: key -> (old, new)."""
    a, b = flatten(old), flatten(new)
    changes = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
    changes = {k: v for k, v in changes.items() if not _free(k)}
    changes = {k: v for k, v in changes.items() if not same_meaning(k, a, b)}
    if processes[0] != processes[1]:
        changes[PROCESSES] = processes
    return changes


def same_meaning(key: str, a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two flattened configs, ``a`` written before ``b`` (by an older mic, say), set ``key``
    alike, although their values differ: one lacks it and the other holds the default of the
    argument it sets on its node's ``_target_`` (by today's code: a setting added to mic's configs
    since, e.g. ``augmentation.jitter``, that keeps what the older run did) or, for a root setting,
    the default ``mic.schema.RootSchema`` gives it, or, for a setting whose default changed since
    it was added, the value ``ABSENT_MEANS`` records (``augmentation.jitter``: torchvision), or is
    a value of the data set config itself (``dataset.source_label_format``, which reaches the run
    only through the readers' nodes, compared themselves); or one holds null where that argument's
    default is null and the other holds what null stands for, the class's own attribute of that
    name (``task.primary_metric``: null, the task's own ``accuracy``)."""
    parent, _, name = key.rpartition(".")
    if key not in a or key not in b:
        flat = b if key in b else a
        if parent == "dataset":
            return True
        if not parent:  # a root setting added since, at its default (augmentation_jitter)
            from mic.schema import RootSchema

            field = RootSchema.model_fields.get(key)
            return field is not None and not field.is_required() and field.default == flat[key]
        cls, default = _argument(key, flat)
        default = _absent_means(cls, name, default)
        return default is not inspect.Parameter.empty and default == flat[key]
    if (a[key] is None) == (b[key] is None):
        return False
    cls, default = _argument(key, b if b[key] is None else a)
    given = a[key] if b[key] is None else b[key]
    return default is None and given is not None and getattr(cls, name, None) == given


def _absent_means(cls: Any, name: str, default: Any) -> Any:
    """What argument ``name`` of ``cls`` meant in a config written before it existed: the value
    ``ABSENT_MEANS`` records for it or for a class it derives from, or ``default``."""
    for c in inspect.getmro(cls) if inspect.isclass(cls) else ():
        where = f"{c.__module__}.{c.__qualname__}"
        if (where, name) in ABSENT_MEANS:
            return ABSENT_MEANS[(where, name)]
    return default


def _argument(key: str, flat: dict[str, Any]) -> tuple[Any, Any]:
    """The class (or function) of ``key``'s node's ``_target_`` in ``flat`` and the default of
    the argument ``key`` sets (``inspect.Parameter.empty``: none, or no such target)."""
    parent, _, name = key.rpartition(".")
    target = flat.get(f"{parent}._target_" if parent else "_target_")
    if not isinstance(target, str):
        return None, inspect.Parameter.empty
    try:
        from hydra.utils import get_object

        cls = get_object(target)
        parameter = inspect.signature(cls).parameters.get(name)
    except Exception:  # (a target that no longer imports: a change to report)
        return None, inspect.Parameter.empty
    return cls, getattr(parameter, "default", inspect.Parameter.empty)


def _allowed(key: str, allow: list[str]) -> bool:
    return any(key == a or key.startswith(f"{a}.") for a in allow)


def _prefixes(keys: Iterable[str]) -> set[str]:
    """Every key and every prefix of one (``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``)."""
    out = set()
    for key in keys:
        parts = key.split(".")
        out.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return out


def check_allowed_keys(allow: list[str], old: dict[str, Any], new: dict[str, Any]) -> None:
    """Refuse an entry of ``resume_allow_changes`` that names no key of the checkpoint's
    config nor of the new one (nor a prefix of one, nor ``PROCESSES``): a typo would
    otherwise allow nothing, silently.

    Raises:
        ConfigError: naming each such entry, with the closest keys.
    """
    from mic.schema import did_you_mean

    known = _prefixes([*flatten(old), *flatten(new)]) | {PROCESSES}
    unknown = [a for a in allow if a not in known]
    if unknown:
        hints = "; ".join(
            f"{a!r}:{did_you_mean(a, sorted(known), n=3) or ' no close key'}" for a in unknown
        )
        raise ConfigError(
            f"resume_allow_changes names {'a key' if len(unknown) == 1 else 'keys'} of no "
            f"setting of the config ({hints}). List config keys or their prefixes (e.g. "
            f"resume_allow_changes=[optimizer.lr,loader]), or {PROCESSES} for another number "
            "of processes"
        )


def _warn_of_scoring_changes(saved: dict[str, Any], new: dict[str, Any]) -> None:
    """Warn when a resume changes how the evaluations score (free to change, as every eval
    setting): the BatchNorm protocol (``eval.adabn_batches``) or the test set, whose scores
    the records and the picks then mix; or how many elements the validators score: snd and
    bnm change scale with it, and the picks compare the scores of the evaluations before and
    after."""
    old, fresh = flatten(saved), flatten(new)
    scoring = ("eval.adabn_batches", "dataset.test", "dataset.root_test")
    keys = [k for k in sorted(set(old) | set(fresh)) if k.startswith(scoring)]
    differ = [f"{k}: {old.get(k)} -> {fresh.get(k)}" for k in keys if old.get(k) != fresh.get(k)]
    if differ:
        warnings.warn(
            f"resume: {'; '.join(differ[:3])}{'; ...' if len(differ) > 3 else ''}: the "
            "evaluations up to the checkpoint were scored with its settings, those from here "
            "with these, and metrics.jsonl, best.pt and the checkpoint picks mix both; "
            "mic-score <run folder> scores every checkpoint with the new ones",
            stacklevel=3,
        )
    was, now = old.get, fresh.get
    keys = ["eval.validation.batches", "eval.validation.samples_per_image"]
    moved = [f"{k}: {was(k)} -> {now(k)}" for k in keys if was(k) != now(k)]
    if moved and {"snd", "bnm"} & set(now("eval.validators") or []):
        warnings.warn(
            f"resume: {'; '.join(moved)}: the validators may now score another number of "
            "elements, which changes the scale of snd and bnm (docs/model_selection.md), and "
            "the checkpoint picks compare the scores of the evaluations before and after; "
            "keep the checkpoint's values to compare them evenly",
            stacklevel=3,
        )


def check_resume_config(
    saved: dict[str, Any] | None, cfg: DictConfig, processes: tuple[int, int]
) -> dict[str, tuple[Any, Any]]:
    """The allowed changes between a checkpoint's config and ``cfg``.

    Raises:
        ConfigError: an entry of ``cfg.resume_allow_changes`` that names no key
            (``check_allowed_keys``); a change of ``init_from``, which a resumed run does not
            read; a change of ``model.num_classes``, which no allowance makes fit; or a
            change that ``cfg.resume_allow_changes`` does not list, naming each key with its
            old and new value and how to continue on purpose.
    """
    new = OmegaConf.to_container(cfg, resolve=True)
    allow = [str(a) for a in cfg.get("resume_allow_changes") or []]
    check_allowed_keys(allow, saved or {}, new)  # type: ignore[arg-type]
    if saved is None:  # a checkpoint from before configs were recorded
        return {}
    _warn_of_scoring_changes(saved, new)  # type: ignore[arg-type]
    changes = config_changes(saved, new, processes)  # type: ignore[arg-type]
    if "init_from" in changes:  # never read on resume: allowing it would change nothing
        was, now = changes.pop("init_from")
        if now is not None:  # dropped (None): the resumed run continues as it was
            raise ConfigError(
                f"init_from={now} but a resumed run loads its weights from its checkpoint and "
                "reads no init_from (the checkpoint's run had "
                f"init_from={'null' if was is None else was}). Drop init_from from the command "
                "to continue the run, or start a new run in another folder (without resume) to "
                f"start from {now}"
            )
    counts = changes.get("model.num_classes", (None, None))  # (one None: another model
    if None not in counts:  # class, which keeps its count elsewhere: named below)
        was, now = counts  # no resume_allow_changes can make the weights fit
        other = changes.get("model._target_")
        model = f" (its model a {other[0]}, this run's a {other[1]})" if other else ""
        raise ConfigError(
            f"the model predicts {now} classes, the checkpoint's {was}{model}: its weights "
            "have other shapes, so it cannot be resumed, whatever resume_allow_changes lists. "
            "Start a new run in another folder (or give the checkpoint's data set and class "
            "count)"
        )
    was, now = changes.get("model._target_", (None, None))
    if _another_class(was, now):  # (resume_allow_changes=[model._target_] would not fit)
        raise ConfigError(
            f"the model is a {now}, the checkpoint's a {was}: its weights belong to another "
            "model class, so it cannot be resumed, whatever resume_allow_changes lists. "
            "Resume with the checkpoint's model, or start a new run in another folder"
        )
    raw = flatten(OmegaConf.to_container(cfg, resolve=False))
    read = lambda k: re.findall(r"\$\{(?:oc\.select:)?([\w.]+)[},]", str(raw.get(k, "")))  # noqa: E731
    # a key allowed covers the settings read from it (dataset.train_count: the readers' count)
    refused = {
        k: v
        for k, v in changes.items()
        if not (_allowed(k, allow) or any(_allowed(r, allow) for r in read(k)))
    }
    if refused:
        short = lambda v: repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."  # noqa: E731
        # a setting read from another (max_iters: ${iterations}) says which one changed it
        source = lambda k: f" (= {raw[k]})" if "${" in str(raw.get(k, "")) else ""  # noqa: E731
        # a whole part added, removed or replaced (mic=none) is named once, by its prefix
        tops = [k for k in refused if not any(k.startswith(f"{p}.") for p in refused)]
        # three or more changes of one section (scheduler=step over poly) are named by it
        section = lambda k: k.split(".")[0]  # noqa: E731
        many = {s for s in map(section, tops) if sum(section(k) == s for k in tops) > 2}
        tops = list(dict.fromkeys(section(k) if section(k) in many else k for k in tops))
        flat_new = flatten(new)

        def was(key: str, value: Any) -> str:  # a setting added since whose default changed
            cls = _argument(key, flat_new)[0] if value is None and key != PROCESSES else None
            absent = _absent_means(cls, key.split(".")[-1], None)
            return f"unset, so {absent!r} then" if absent is not None else short(value)

        parts = []
        for top in tops:
            below = [k for k in refused if k.startswith(f"{top}.")]
            if not below:
                a, b = refused[top]
                what = " torchrun processes" if top == PROCESSES else ""  # (no config key)
                parts.append(f"{top}: {was(top, a)} -> {short(b)}{what}{source(top)}")
                continue
            a, b = refused[below[0]]
            parts.append(
                f"{top}.* ({len(below)} settings, e.g. {below[0]}: {was(below[0], a)} -> "
                f"{short(b)})"
            )
        listing = "; ".join(parts)
        named = list(dict.fromkeys((read(k) or [k])[0] for k in refused))  # what was set
        named = [k for k in named if not any(k.startswith(f"{o}.") for o in named)]
        keys = ",".join(named if len(named) <= 4 else tops)
        if in_sweep():  # each job resumes the folder of its number, not of its values
            listing += (
                "; in a sweep (-m) each job resumes the folder of its number: give the swept "
                "values in the order of the sweep's first command, or these changes would "
                "continue another job's run"
            )
        terms = any(k.startswith("method.") and k.endswith("._target_") for k in refused)
        grouping = ("lr_mult", "no_weight_decay", "bias_lr_factor")
        groups = any(part in grouping for k in refused for part in k.split("."))
        what = "the run" if list(refused) == [PROCESSES] else "the config"
        raise ConfigError(
            f"{what} differs from the checkpoint's in what the run trains with ({listing}). "
            "Exact resume needs the checkpoint's values; to continue with the new ones on "
            f"purpose, add resume_allow_changes=[{keys}] (they apply from the resumed "
            "iteration"
            + (
                "; a change of lr_mult, no_weight_decay or bias_lr_factor that groups the "
                "parameters otherwise cannot keep the optimiser's state"
                if groups
                else ""
            )
            + "), or start a new run in another folder"
            + (
                " (init_from=<checkpoint> starts it from these weights): a loss term added or "
                "replaced with modules of its own (a discriminator) cannot be resumed even so"
                if terms
                else ""
            )
        )
    return changes


def _another_class(was: Any, now: Any) -> bool:
    """Whether the ``_target_`` paths ``was`` and ``now`` name two classes (two paths of one
    class, ``mic.tasks.segmentation.SmallUNet`` and its module's, are one)."""
    if not (isinstance(was, str) and isinstance(now, str)) or was == now:
        return False
    try:
        return get_class(was) is not get_class(now)
    except Exception:  # (a class that cannot be imported here: the paths decide)
        return True


def _is_root(key: str) -> bool:
    """A data path: a key whose last part contains ``root``, or a ``dataset.*`` key that names
    a split's images, labels or annotations (``dataset.source_images``, ``dataset.source.images``
    of the own-data configs ``det_coco`` and ``seg_folders``)."""
    last = key.rsplit(".", 1)[-1]
    paths = last in DATA_PATH_KEYS or last.endswith(tuple(f"_{k}" for k in DATA_PATH_KEYS))
    return "root" in last or (key.startswith("dataset.") and paths)


def check_same_data(
    saved: dict[str, Any] | None,
    sizes: dict[str, int],
    saved_config: dict[str, Any] | None,
    cfg: DictConfig,
) -> None:
    """Refuse a resume whose training data are not the checkpoint's: a split of
    ``DATA_SPLITS`` holds another number of samples than the checkpoint records, or files of
    other names (``data_record``), unless
    ``resume_allow_changes`` lists each changed setting of the training data (a root, or
    another ``dataset.*`` key outside ``dataset.test``), or ``dataset`` when none changed.

    Args:
        saved: the checkpoint's record (``data_record``; None: a checkpoint from before the
            record, not checked; one without fingerprints: counts compared alone).
        sizes: this run's ``data_record``.
        saved_config: the checkpoint's resolved config, for the roots that changed.
        cfg: this run's config.

    Raises:
        ConfigError: naming each split's counts and the changed roots, and what to do.
    """
    saved = saved if isinstance(saved, dict) else {}
    recorded = [*DATA_SPLITS, *(f"{s}_{k}" for k in ("files", "labels") for s in DATA_SPLITS)]
    differ = [s for s in recorded if s in saved and s in sizes and saved[s] != sizes[s]]
    if not differ:
        return
    a = flatten(saved_config or {})
    b = flatten(OmegaConf.to_container(cfg, resolve=True))
    changed: dict[tuple[str, str], list[str]] = {}  # a change -> its keys (interpolated too)
    for k in sorted(set(a) | set(b), key=lambda k: (k.count("."), k)):
        training_data = k.startswith("dataset.") and not k.startswith(
            ("dataset.test", "dataset.root_test")
        )
        if training_data and a.get(k) != b.get(k):  # roots, and paths of other names
            changed.setdefault((repr(a.get(k)), repr(b.get(k))), []).append(k)
    allow = [str(x) for x in cfg.get("resume_allow_changes") or []]
    if all(any(_allowed(k, allow) for k in keys) for keys in changed.values() or [["dataset"]]):
        return
    roots = [keys[0] for keys in changed.values()]  # each change by its shortest key
    split_of = {s: s.split("_")[0] for s in differ}
    counts = ", ".join(
        f"{s}: {sizes[s]} samples, the checkpoint's run had {saved[s]}"
        if s in DATA_SPLITS
        else f"{split_of[s]}: other {'files (by name)' if s.endswith('_files') else 'labels'} "
        "than the checkpoint's run had"
        for s in differ
        if s in DATA_SPLITS or split_of[s] not in differ
    )
    if roots:
        moved = "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in roots)
        cause = (
            f"The changed data setting{'s' if len(roots) > 1 else ''} ({moved}) "
            f"{'give' if len(roots) > 1 else 'gives'} other data: a data folder may change on "
            "resume only to point at the same data (moved to another folder or mount)"
        )
        keys = ",".join(roots)
    else:
        cause = "The data folders are the same but their files changed since the checkpoint"
        keys = "dataset"
    raise ConfigError(
        f"the training data differ from the checkpoint's ({counts}). {cause}. Exact resume "
        "needs the checkpoint's data: point the roots at it, or start a new run in another "
        f"folder; to continue on these data on purpose, add resume_allow_changes=[{keys}]"
    )


def resume(
    loop: AdaptationLoop,
    path: str | os.PathLike[str],
    cfg: DictConfig | None = None,
    checkpointer: Checkpointer | None = None,
    data_sizes: dict[str, int] | None = None,
    announce: bool = True,
) -> None:
    """Load a checkpoint into the loop (and the checkpointer's best score and hooks), and
    with ``announce`` print ``resumed_line`` (else the caller prints it once it has accepted
    the resume).

    ``path`` is a checkpoint file (``iter_*.pt``, ``best.pt``) or a folder: a run folder or its
    ``checkpoints`` folder, whose newest readable ``iter_*.pt`` is taken (as ``mic-train
    resume=<folder>``).

    With ``cfg``, the checkpoint's recorded config is compared with it first
    (``check_resume_config``), and allowed changes of the optimiser's or the schedule's values
    replace the checkpoint's; with ``data_sizes`` (split -> samples) too, the checkpoint's
    record of its data (``check_same_data``).

    Raises:
        ConfigError: a change of config not allowed, or other training data.
        CheckpointError: no such file, a folder without a readable checkpoint, or the
            checkpoint does not fit the experiment, holds NaN or Inf weights,
            holds fewer processes' random states than this run has (without the change
            allowed), or lies past the last iteration.
    """
    path = find_resume_checkpoint(path, None) or Path(path)
    state = load_checkpoint(path, map_location=loop.device)
    earlier = sorted(p.name for p in path.parent.glob("iter_*.pt") if p.name < path.name)
    refuse_nonfinite(
        {part: state.get(part) for part in ("student", "method", "teacher")},
        f"the weights of checkpoint '{path}'",
        (
            f"Resume from an earlier checkpoint (resume=<path>; that folder also holds "
            f"{', '.join(earlier[-3:])}) or start anew"
            if earlier
            else "That folder holds no earlier checkpoint (checkpoint.keep sets how many are "
            "kept): start anew, in another folder"
        ),
    )
    rngs = state.get("rng") or []
    world = process_info().world_size
    changes = {}
    if cfg is not None:
        changes = check_resume_config(state.get("config"), cfg, (len(rngs) or world, world))
        if data_sizes is not None:
            check_same_data(state.get("data"), data_sizes, state.get("config"), cfg)
    written, kind = state.get("optimizer_class"), type(loop.optimizer).__name__
    allowed = any(k.startswith("optimizer") for k in changes)  # the new values replace its own
    if written is not None and written != kind and not allowed:  # (older ones record none)
        raise CheckpointError(
            f"checkpoint '{path}' was written by a loop whose optimiser is {written}, this "
            f"loop's is {kind}: its state (moments, step counts) does not carry over. Build "
            f"the loop with {written} to resume, or start a new run from the checkpoint's "
            "weights (mic.training.load_initial_weights; mic-train: init_from=<checkpoint>)"
        )
    fresh_groups = [
        {k: v for k, v in g.items() if k != "params"} for g in loop.optimizer.param_groups
    ]
    fresh_lambdas = [copy.deepcopy(vars(f)) for f in _lambdas(loop)]
    try:  # (an optimiser change that is allowed keeps the state it can use: its step counts)
        loop.load_state_dict({**state, "optimizer_class": kind} if allowed else state)
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(_misfit_message(loop, state, path, e)) from e
    if any(
        k.startswith(("optimizer.", "lr_mult", "no_weight_decay", "bias_lr_factor", "scheduler."))
        for k in changes
    ):
        _apply_new_schedule(loop, fresh_groups, fresh_lambdas)
    elif cfg is None and (differs := _schedule_changes(loop, fresh_groups, fresh_lambdas)):
        warnings.warn(  # (torch restored the old ones: lr 0 for the run's last iterations)
            f"resume: this loop's optimiser or schedule differs from the checkpoint's "
            f"({'; '.join(differs[:4])}): the loop's own are kept from iteration {loop.step} "
            "on; build the loop as the checkpoint's run did to continue it exactly",
            stacklevel=2,
        )
        _apply_new_schedule(loop, fresh_groups, fresh_lambdas)
    if rngs:
        rank = process_info().rank
        if rank >= len(rngs) and PROCESSES not in changes:
            raise CheckpointError(
                f"the checkpoint holds the random states of {len(rngs)} processes, this is "
                f"process {rank}: resume with the same number of processes"
            )
        set_rng_state(rngs[rank % len(rngs)])
    if loop.step > loop.iterations:
        raise CheckpointError(
            f"checkpoint '{path}' is at iteration {loop.step}, past iterations={loop.iterations}"
        )
    if checkpointer is not None:
        checkpointer.load_state_dict(state, path)
    if announce:
        print(resumed_line(loop, path))


def resumed_line(loop: AdaptationLoop, path: Path) -> str:
    """``resuming from <path> at iteration <step>``, and whether anything is left to train."""
    done = (
        f" (iterations={loop.iterations}: no iteration left to train, only the final "
        "evaluation and summary; raise iterations to train on)"
        if loop.step == loop.iterations
        else ""
    )
    return f"resuming from {path} at iteration {loop.step}{done}"


def _module_misfits(loop: AdaptationLoop, state: dict[str, Any]) -> dict[str, str]:
    """Part (student, method, teacher) -> what differs between its weights and the
    checkpoint's (``weight_misfits``): names missing from the checkpoint, names only the
    checkpoint has, and weights of another shape (a few of each, then a count)."""
    parts = {"student": unwrap(loop.student), "method": loop.method, "teacher": loop.teacher}
    out = {}
    for name, module in parts.items():
        saved = state.get(name)
        if module is None or not isinstance(saved, dict):
            continue
        missing, unexpected, shapes = weight_misfits(module.state_dict(), saved)
        resized = [f"{k} ({a} in the checkpoint, {b} here)" for k, a, b in shapes]
        found = []
        if missing:
            found.append(f"{len(missing)} not in the checkpoint: {few(missing)}")
        if unexpected:
            found.append(f"{len(unexpected)} only in the checkpoint: {few(unexpected)}")
        if resized:
            found.append(f"{len(resized)} of another shape: {few(resized, 2)}")
        if found:
            out[name] = "; ".join(found)
    return out


def _misfit_message(
    loop: AdaptationLoop, state: dict[str, Any], path: Path, error: Exception
) -> str:
    """Why the checkpoint at ``path`` does not load into ``loop`` (``error``, what loading
    raised), and what to do."""
    misfits = _module_misfits(loop, state)
    groups = len((state.get("optimizer") or {}).get("param_groups") or [])
    if not misfits and groups and groups != len(loop.optimizer.param_groups):
        return (  # (an allowed lr_mult, no_weight_decay or bias_lr_factor change regrouped)
            f"checkpoint '{path}' holds the optimiser's state of {groups} parameter groups, "
            f"this experiment's optimiser has {len(loop.optimizer.param_groups)}: a change of "
            "lr_mult, no_weight_decay or bias_lr_factor that groups the parameters otherwise "
            "cannot carry the optimiser's state over, even where resume_allow_changes lists "
            "it. Resume without it, or start a new run in another folder (without resume) "
            f"from its student's weights with init_from={path}"
        )
    if not misfits:  # not the modules
        detail = " ".join(str(error).split())
        detail = detail if len(detail) <= 300 else detail[:297] + "..."
        return (
            f"checkpoint '{path}' does not fit this experiment ({detail}); resume with the "
            "config the checkpoint was trained with"
        )
    listing = "; ".join(f"the {part}'s weights: {text}" for part, text in misfits.items())
    start = (
        f"; or start a new run in another folder (without resume) from its student's weights "
        f"with init_from={path}"
        if "student" not in misfits
        else ""
    )
    return (
        f"checkpoint '{path}' does not fit this experiment's modules ({listing}). A change "
        "that adds or removes modules or changes their shapes (another method, model or class "
        "count) cannot be resumed from this checkpoint, even where resume_allow_changes lists "
        f"it: resume without that change (with the config the checkpoint was trained "
        f"with){start}"
    )


def _lambdas(loop: AdaptationLoop) -> list[Any]:
    return [f for f in getattr(loop.scheduler, "lr_lambdas", []) if hasattr(f, "__dict__")]


def _schedule_changes(loop: AdaptationLoop, groups: list[dict], lambdas: list[dict]) -> list[str]:
    """``"<setting> <this loop's> (the checkpoint's <its>)"`` for each optimiser value (the
    ``lr`` where no scheduler sets it) and schedule attribute of ``loop`` as loaded that
    differs from the loop's own before loading (``groups``, ``lambdas``)."""
    found, scheduled = [], ("lr", "params") if loop.scheduler is not None else ("params",)
    pairs = [*zip(loop.optimizer.param_groups, groups), *zip(map(vars, _lambdas(loop)), lambdas)]
    for loaded, own in pairs:
        for key, value in own.items():
            try:
                differs = key not in scheduled and bool(loaded.get(key) != value)
            except Exception:  # (tensors of several values, objects that do not compare)
                differs = False
            if differs:
                found.append(f"{key} {value!r} (the checkpoint's {loaded.get(key)!r})")
    return list(dict.fromkeys(found))


def _apply_new_schedule(loop: AdaptationLoop, groups: list[dict], lambdas: list[dict]) -> None:
    """The new config's optimiser values and schedule, at the resumed iteration."""
    for group, fresh in zip(loop.optimizer.param_groups, groups, strict=True):
        group.update(fresh)
    for f, attributes in zip(_lambdas(loop), lambdas, strict=True):
        vars(f).update(attributes)
    scheduler = loop.scheduler
    if scheduler is None:
        return
    scheduler.base_lrs = [g["initial_lr"] for g in loop.optimizer.param_groups]
    factors = getattr(scheduler, "lr_lambdas", [])
    for group, base, f in zip(loop.optimizer.param_groups, scheduler.base_lrs, factors):
        group["lr"] = base * f(scheduler.last_epoch)
