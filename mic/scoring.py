"""Scoring a run's saved checkpoints after it ended, as its evaluations scored them.

A run scores its models at ``eval.interval``; label-free model selection (docs/
model_selection.md) often wants more: a validator the run did not compute, the same
checkpoints on a labelled test set obtained later, or the scores of several runs side by side.
``score_run`` rebuilds the run's task, models, target loaders and validators from its
``config.yaml`` and scores each checkpoint through ``Evaluation.score_models``, the code the
run's evaluations ran: same AdaBN batches, same validation batches, masks and pixel draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from mic.core import ConfigError
from mic.experiment import (
    build_datasets,
    build_method,
    build_validation,
    load_run,
    make_loader,
    validator_names,
)
from mic.training import Evaluation, load_checkpoint, make_validators, per_process_batch_size
from mic.training.checkpoint import is_readable_checkpoint
from mic.training.validators import preserved_rng

__all__ = ["score_run"]

#: the settings ``score_run``'s overrides may change: where the data is and how it is scored,
#: not what was trained
SCORING_KEYS = ("dataset.", "eval.", "loader.test_batch_size", "loader.num_workers")


def _checkpoints(folder: Path, given: Sequence[str | Path] | None) -> list[Path]:
    """The mic checkpoints to score: ``given`` (names in the run's ``checkpoints`` or paths),
    or every one of the run's, by step."""
    if given is None:
        found = [p for p in (folder / "checkpoints").glob("*.pt") if is_readable_checkpoint(p)]
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
        if not is_readable_checkpoint(path):
            what = "no file" if not path.is_file() else "no mic checkpoint (plain weights)"
            raise ConfigError(
                f"score_run: checkpoint '{name}' is {what}; give a mic checkpoint of the run, "
                f"a name in '{folder}/checkpoints' (iter_*.pt, best.pt) or a path"
            )
        paths.append(path)
    return paths


def _run_config(folder: Path, overrides: Sequence[str], validators: Any) -> DictConfig:
    """The run's ``config.yaml`` (resolved when the run wrote it) with ``overrides`` and
    ``validators`` applied."""
    from mic.resume import flatten

    cfg = OmegaConf.load(folder / "config.yaml")
    assert isinstance(cfg, DictConfig)
    flat = flatten(OmegaConf.to_container(cfg))
    for override in [overrides] if isinstance(overrides, str) else overrides:
        key, sep, _ = str(override).partition("=")
        if not sep or not key.startswith(SCORING_KEYS):
            raise ConfigError(
                f"score_run(overrides=[{override!r}]): give key=value of a setting of the data "
                f"or the evaluation ({', '.join(k.rstrip('.') for k in SCORING_KEYS)}); the "
                "model, the task and the method are the run's"
            )
        if OmegaConf.select(cfg, key, default=KeyError) is KeyError:
            raise ConfigError(f"score_run(overrides=[{override!r}]): the run's config has no {key}")
        old = flat.get(key)
        # the config was resolved when written: a path that others took from it stays there
        prefix = str(old).rstrip("/") + "/"
        took = sorted(
            k for k, v in flat.items() if k != key and (str(v) == old or str(v).startswith(prefix))
        )
        if isinstance(old, str) and "/" in old and took:  # (a path's: not "train", "test")
            raise ConfigError(
                f"score_run(overrides=[{override!r}]): the run's config.yaml was resolved when "
                f"it was written, and {key}'s value '{old}' stands in {', '.join(took)} too, "
                f"which would keep it: override {' and '.join(took)} instead"
            )
        cfg.merge_with(OmegaConf.from_dotlist([str(override)]))
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
    folder = Path(run)
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
