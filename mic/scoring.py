"""Scoring a run's saved checkpoints after it ended, as its evaluations scored them.

A run scores its models at ``eval.interval``; label-free model selection (docs/
model_selection.md) often wants more: a validator the run did not compute, the same
checkpoints on a labelled test set obtained later, or the scores of several runs side by side.
``score_run`` rebuilds the run's task, models, target loaders and validators from its
``config.yaml`` and scores each checkpoint through ``Evaluation.score_models``, the code the
run's evaluations ran: same AdaBN batches, same validation batches, masks and pixel draws.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from mic.core import CheckpointError, ConfigError
from mic.experiment import (
    build_datasets,
    build_method,
    build_validation,
    load_run,
    make_loader,
    validator_names,
)
from mic.schema import check_config
from mic.training import Evaluation, load_checkpoint, make_validators, per_process_batch_size
from mic.training.checkpoint import is_readable_checkpoint
from mic.training.validators import preserved_rng

__all__ = ["score_run"]

#: the settings ``score_run``'s overrides may change: where the data is and how it is scored,
#: not what was trained
SCORING_KEYS = (
    "dataset.",
    "eval.models",
    "eval.adabn_batches",
    "eval.validators",
    "eval.validation.",
    "loader.test_batch_size",
    "loader.num_workers",
)
#: keys of the data that the run's task and model were built for
TRAINED_KEYS = ("dataset.num_classes", "dataset.classes")


def _checkpoints(folder: Path, given: Sequence[str | Path] | None) -> list[Path]:
    """The mic checkpoints to score: ``given`` (names in the run's ``checkpoints`` or paths),
    or every one of the run's, by step."""
    if given is None:
        files = sorted((folder / "checkpoints").glob("*.pt"))
        found = [p for p in files if is_readable_checkpoint(p)]
        unread = [p.name for p in files if p not in found and p.name not in FINAL_WEIGHTS]
        if unread:
            warnings.warn(
                f"score_run('{folder}'): {', '.join(unread)} in its checkpoints/ cannot be read "
                "as mic checkpoints (cut short, or of another kind) and are not scored",
                stacklevel=3,
            )
        if not found:
            raise ConfigError(
                f"score_run('{folder}'): its checkpoints/ holds no mic checkpoint (iter_*.pt, "
                "best.pt) to score: the run saved none (it saves at the end, and every "
                "checkpoint.interval iterations, keeping the checkpoint.keep newest)"
            )
        return sorted(found, key=lambda p: (load_checkpoint(p, mmap=True).get("step", -1), p.name))
    if isinstance(given, (str, Path)):
        given = [given]
    if not given:
        raise ConfigError("score_run(checkpoints=[]): name the checkpoints, or None: all of them")
    paths = []
    for name in given:
        path = Path(name)
        inside = folder / "checkpoints" / path
        path = inside if not path.is_absolute() and inside.is_file() else path
        try:
            load_checkpoint(path, mmap=True)
        except CheckpointError as e:
            why = "is no file" if not path.is_file() else f"cannot be scored ({e})"
            if "marker" in str(e):  # (a weights file: one model, no iteration, no teacher)
                why = "holds plain weights (no iteration, one model): load_run loads them"
            raise ConfigError(
                f"score_run: checkpoint '{name}' {why}; give a mic checkpoint of the run, "
                f"a name in '{folder}/checkpoints' (iter_*.pt, best.pt) or a path"
            ) from None
        paths.append(path)
    return paths


#: the weights files a finished run leaves beside its checkpoints (one model each)
FINAL_WEIGHTS = ("student.pt", "teacher.pt")
#: where mic-train keeps Hydra's record of the composed config, interpolations kept: the
#: newest resume's first
HYDRA_RECORDS = (".hydra_resumed", ".hydra")
#: last parts of the keys that name data files or folders
PATH_KEY = re.compile(r"root|images|labels|annotations|dir|path|file")


def _recorded_config(folder: Path) -> tuple[DictConfig, bool]:
    """The run's config to change: Hydra's record of it where mic-train wrote one and it
    resolves here (its interpolations kept: ``dataset.root_target`` still feeds the keys
    built from it), else ``config.yaml`` (resolved when written); and which of them."""
    for record in HYDRA_RECORDS:
        path = folder / record / "config.yaml"
        if path.is_file():
            with contextlib.suppress(Exception):  # (a resolver of Hydra's: the resolved one)
                cfg = OmegaConf.load(path)
                OmegaConf.to_container(cfg, resolve=True)
                return cfg, True  # type: ignore[return-value]
    return OmegaConf.load(folder / "config.yaml"), False  # type: ignore[return-value]


def _run_config(folder: Path, overrides: Sequence[str], validators: Any) -> DictConfig:
    """The run's config with ``overrides`` and ``validators`` applied, resolved."""
    from mic.resume import flatten

    cfg, interpolated = _recorded_config(folder)
    flat = flatten(OmegaConf.to_container(cfg))
    overrides = [overrides] if isinstance(overrides, str) else list(overrides)
    keys = [str(o).partition("=")[0] for o in overrides]
    for override, key in zip(overrides, keys):
        if "=" in str(override) and OmegaConf.select(cfg, key, default=KeyError) is KeyError:
            raise ConfigError(f"score_run(overrides=[{override!r}]): the run's config has no {key}")
        if "=" not in str(override) or not key.startswith(SCORING_KEYS) or key in TRAINED_KEYS:
            raise ConfigError(
                f"score_run(overrides=[{override!r}]): give key=value of a setting of the data "
                f"or the evaluation ({', '.join(k.rstrip('.') for k in SCORING_KEYS)}; not "
                f"{', '.join(TRAINED_KEYS)}); the model, the task and the method are the run's"
            )
        old = flat.get(key)
        # a resolved config.yaml: a path that others were built from stays in them
        prefix = str(old).rstrip("/") + "/"
        took = sorted(
            k
            for k, v in flat.items()
            if k not in keys and (str(v) == old or str(v).startswith(prefix))
        )
        named = PATH_KEY.search(key.rsplit(".", 1)[-1])
        if not interpolated and isinstance(old, str) and named and took:
            raise ConfigError(
                f"score_run(overrides=[{override!r}]): the run's config.yaml was resolved when "
                f"it was written, and {key}'s value '{old}' stands in {', '.join(took)} too, "
                f"which would keep it: override {' and '.join(took)} as well"
            )
    try:
        cfg.merge_with(OmegaConf.from_dotlist(overrides))
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[assignment]
        if overrides:  # (the run's own config passed when it ran)
            check_config(cfg)
    except Exception as e:  # (OmegaConf's errors: a value of another type than the key's)
        raise ConfigError(f"score_run(overrides={overrides}): {e}".split("\n")[0]) from None
    if validators is not None:
        cfg.eval.validators = [validators] if isinstance(validators, str) else list(validators)
    return cfg


def score_run(
    run: str | Path,
    checkpoints: Sequence[str | Path] | str | Path | None = None,
    validators: Sequence[str] | str | None = None,
    overrides: Sequence[str] = (),
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Score a run's saved checkpoints as its evaluations did, from its folder.

    Each checkpoint's student and teacher (those of ``eval.models``) are scored on the run's
    labelled test set and by its label-free validators, under its BatchNorm protocol (AdaBN
    on ``eval.adabn_batches`` target batches) and with the same batches, masks and pixel
    draws: a checkpoint of an iteration the run evaluated gets that evaluation's record
    again (on the device it ran on). The data is read from where the config says; a run of
    ``N`` processes (torchrun) is scored in one, with its per-process target batch.

    Args:
        run: the run folder (``hydra.run.dir``), which holds ``config.yaml``.
        checkpoints: mic checkpoints to score (``"best.pt"``, ``"iter_00000500.pt"``: names
            in the run's ``checkpoints``, or paths); None: every one there, by iteration.
        validators: the label-free validators to compute (names of
            ``mic.training.VALIDATORS``); None: the run's ``eval.validators``.
        overrides: ``key=value`` settings of the data or the evaluation that change the
            run's config here (``dataset.test.root=/new/mount``, ``dataset.test=null``,
            ``eval.adabn_batches=0``, ``eval.validation.batches=8``).
        device: where the models are scored (``"auto"``: CUDA where there is one).

    Returns:
        One record per checkpoint, as the run's ``metrics.jsonl`` evaluation records
        (``step``, ``eval/<model>/<metric>``, ``validator/<model>/<name>``, ``summary``),
        with the checkpoint's path under ``checkpoint``. ``ModelSelection`` takes them
        (``update``) to say which each score would pick.

    Raises:
        ConfigError: what ``load_run`` raises for the folder, a checkpoint that is no mic
            checkpoint, an override of the model, task or method or of a key the config
            lacks, an unknown validator, or neither a test set nor a validator to score with.
        DatasetError: the target or test data cannot be read.
    """
    if not str(run).strip():  # (the current folder, unasked)
        raise ConfigError("score_run(''): give the run folder (mic-train's hydra.run.dir)")
    folder = Path(run)
    if not (folder / "config.yaml").is_file() and (folder.parent / "config.yaml").is_file():
        raise ConfigError(  # (its checkpoints/ folder, or .hydra/)
            f"'{folder}' is a folder inside the run folder '{folder.parent}': give the run "
            f"folder, score_run('{folder.parent}') (checkpoints=[...] chooses among its "
            "checkpoints)"
        )
    if not (folder / "config.yaml").is_file():
        load_run(folder)  # raises what the folder is, and what to give
    paths = _checkpoints(folder, checkpoints)
    cfg = _run_config(folder, overrides, validators)
    make_validators(validator_names(cfg))  # an unknown name before any data is read
    if cfg.dataset.get("test") is None and not validator_names(cfg):
        raise ConfigError(
            "score_run: with dataset.test=null and no validator there is nothing to score; "
            "give validators=[...] (docs/model_selection.md), or a labelled test set"
        )
    with preserved_rng():
        task, _ = load_run(folder, checkpoint=paths[0], device=device)
        data = build_datasets(cfg, preflight=False)
        processes = len(load_checkpoint(paths[0], mmap=True).get("rng") or [None])
        batch = per_process_batch_size(int(cfg.loader.target_batch_size), processes, "target")
        workers, tests = int(cfg.loader.num_workers), int(cfg.loader.test_batch_size)
        adabn = make_loader(data["target"], batch, task, True, workers, 12345, "target")
        test = data["test"]
        test = None if test is None else make_loader(test, tests, task, False, workers, 0, "test")
        evaluation = Evaluation(
            task,
            test,
            models=list(cfg.eval.models),
            adabn_loader=adabn,
            adabn_batches=int(cfg.eval.adabn_batches),
            validation=build_validation(cfg, build_method(cfg), adabn),
        )
        records = []
        for path in paths:
            state = load_checkpoint(path, mmap=True)
            _, student = load_run(folder, "student", path, device)
            teacher = None
            if state.get("teacher") is not None and "teacher" in evaluation.models:
                teacher = load_run(folder, "teacher", path, device)[1]
            device_used = next(student.parameters()).device
            record = evaluation.score_models(int(state["step"]), student, teacher, device_used)
            records.append({"checkpoint": str(path), **record})
    return records
