"""Scoring a run's saved checkpoints after it ended, as its evaluations scored them.

A run scores its models at ``eval.interval``; label-free model selection (docs/
model_selection.md) often wants more: a validator the run did not compute, the same
checkpoints on a labelled test set obtained later, or the scores of several runs side by side.
``score_run`` rebuilds the run's task, models, target loaders and validators from its folder
and scores each checkpoint through ``Evaluation.score_models``, the code the run's
evaluations ran: same AdaBN batches, same validation batches, masks and pixel draws.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from mic.core import CheckpointError, ConfigError, MicError
from mic.experiment import (
    build_datasets,
    build_method,
    build_validation,
    load_run,
    make_loader,
    read_run_config,
    validator_names,
)
from mic.resume import flatten
from mic.schema import check_config, closest_names, did_you_mean, exception_chain
from mic.training import Evaluation, load_checkpoint, make_validators, per_process_batch_size
from mic.training.checkpoint import FINAL_WEIGHTS, periodic_name, write_text_atomically
from mic.training.validators import preserved_rng

__all__ = ["main", "score_run"]

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
#: keys of ``dataset`` that the run's task, model or method were built from
TRAINED_KEYS = ("dataset.num_classes", "dataset.classes", "dataset.mic_block_size")
#: where mic-train keeps Hydra's record of the composed config, interpolations kept: the
#: newest resume's first
HYDRA_RECORDS = (".hydra_resumed", ".hydra")
#: the sections an override may not change, also through an interpolation
TRAINED_SECTIONS = ("model", "method", "task", "seed")


def _listed(value: Any, what: str) -> list[Any]:
    """``value`` (one or several texts or paths) as a list; a number or another type refused."""
    items = [value] if isinstance(value, (str, os.PathLike)) else value
    if not isinstance(items, Iterable) or isinstance(items, (bytes, dict)):
        items = [items]
    items = list(items)
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            hint = (
                f" (the checkpoint of iteration {item} is '{periodic_name(item)}')"
                if isinstance(item, int) and not isinstance(item, bool) and what == "checkpoints"
                else ""
            )
            kind = "paths or names" if what == "checkpoints" else "text or a list of texts"
            raise ConfigError(f"score_run({what}=...) takes {kind}, got {item!r}{hint}")
    return items


def _checkpoints(folder: Path, given: Any) -> list[Path]:
    """The mic checkpoints to score: ``given`` (names in the run's ``checkpoints``, paths in
    the run folder or from here), or every one of the run's, by step."""
    if given is None:
        files = sorted((folder / "checkpoints").glob("*.pt"))
        # (None: no mic checkpoint, removed since, or its bytes changed: each is read anyway)
        steps = {p: _step(p, verify=True) for p in files}
        found = [p for p in files if steps[p] is not None]
        unread = [p.name for p in files if p not in found and p.name not in FINAL_WEIGHTS]
        if unread and not found:
            raise ConfigError(
                f"score_run('{folder}'): none of the checkpoints in its checkpoints/ can be read "
                f"as a mic checkpoint ({', '.join(unread)}: cut short, bytes changed, or of "
                "another kind)"
            )
        if unread:
            one = len(unread) == 1
            warnings.warn(
                f"score_run('{folder}'): {', '.join(unread)} in its checkpoints/ cannot be read "
                "as mic checkpoints (cut short, bytes changed, removed meanwhile, or of "
                f"another kind) and {'is' if one else 'are'} not scored",
                stacklevel=3,
            )
        if not found:
            raise ConfigError(
                f"score_run('{folder}'): its checkpoints/ holds no mic checkpoint (iter_*.pt, "
                "best.pt) to score: the run saved none (it saves at the end, and every "
                "checkpoint.interval iterations, keeping the checkpoint.keep newest)"
            )
        return sorted(found, key=lambda p: (steps[p], p.name))
    names = _listed(given, "checkpoints")
    if not names:
        raise ConfigError("score_run(checkpoints=[]): name the checkpoints, or None: all of them")
    paths = []
    for name in names:
        path = Path(name)
        places = [] if path.is_absolute() else [folder / "checkpoints" / path, folder / path]
        path = next((p for p in places if p.is_file()), path)
        try:
            load_checkpoint(path, mmap=True)
        except CheckpointError as e:
            why = "is no file" if not path.is_file() else f"cannot be scored ({e})"
            if not path.exists() and str(name).isdigit():  # (mic-score's arguments are text)
                why += f" (the checkpoint of iteration {name} is '{periodic_name(int(name))}')"
            if "marker" in str(e):  # (a weights file: one model, no iteration, no teacher)
                why = (
                    "holds plain weights (no iteration, one model; in Python "
                    "mic.load_run(run, checkpoint=...) loads them)"
                )
            raise ConfigError(
                f"score_run: checkpoint '{name}' {why}; give a mic checkpoint of the run, "
                f"a name in '{folder}/checkpoints' (iter_*.pt, best.pt) or a path"
            ) from None
        if path.resolve() not in {p.resolve() for p in paths}:  # (a file named twice: once)
            paths.append(path)
    return paths


def _step(path: Path, verify: bool = False) -> int | None:
    """The iteration of mic checkpoint ``path`` (-1: it records none); None: no readable mic
    checkpoint (cut short, plain weights, removed since it was listed; with ``verify``, its
    bytes changed)."""
    try:
        return int(load_checkpoint(path, mmap=True, verify=verify).get("step", -1))
    except CheckpointError:
        return None


def _recorded_config(folder: Path) -> tuple[DictConfig, bool]:
    """The run's config to change: Hydra's record of it where mic-train wrote one and it
    resolves here (its interpolations kept: ``dataset.root_target`` still feeds the keys
    built from it), else the newest of ``config_resumed.yaml`` and ``config.yaml`` (resolved
    when written); and whether it is Hydra's."""
    for record in HYDRA_RECORDS:
        path = folder / record / "config.yaml"
        if path.is_file():
            with contextlib.suppress(Exception):  # (a resolver of Hydra's: the resolved one)
                cfg = OmegaConf.load(path)
                OmegaConf.to_container(cfg, resolve=True)
                return cfg, True  # type: ignore[return-value]
    resumed = folder / "config_resumed.yaml"
    path = resumed if resumed.is_file() else folder / "config.yaml"
    return read_run_config(path), False


def _resolved(cfg: DictConfig) -> DictConfig:
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[return-value]


def _closest_key(cfg: DictConfig, key: str) -> str:
    """`` Did you mean: ...?`` for the first part of the dotted ``key`` that ``cfg`` lacks,
    among the keys beside it (empty where none is close)."""
    node: Any = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, DictConfig):
            return ""
        if part not in node:
            close = closest_names(part, node.keys())
            hint = did_you_mean(part, close)
            sections = [c for c in close if isinstance(node._get_node(c), DictConfig)]
            if sections:  # (dataset.root_target on a run whose data has no root: target)
                name = ".".join([*parts[:i], sections[0]])
                keys = [str(k) for k in node._get_node(sections[0]) if not str(k).startswith("_")]
                listed = ", ".join(f"{name}.{k}" for k in keys[:4])
                hint += f" ({name} is a section: {listed})"
            return hint
        node = node._get_node(part)  # (not resolved: a node's keys are all that is read)
    return ""


def _run_config(folder: Path, overrides: list[str], validators: Any) -> DictConfig:
    """The run's config with ``overrides`` (Hydra's syntax) and ``validators`` applied,
    resolved; an override that changes what was trained, or that a resolved config would
    leave without effect, refused."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    cfg, interpolated = _recorded_config(folder)
    before = _resolved(cfg)
    try:
        parsed = OverridesParser.create().parse_overrides([str(o) for o in overrides])
    except HydraException as e:
        raise ConfigError(f"score_run(overrides={overrides}): {e}".split("\n")[0]) from None
    for override, text in zip(parsed, overrides):
        key = override.key_or_group
        plain = override.type.name == "CHANGE"  # (not +key, ++key, ~key)
        if plain and OmegaConf.select(cfg, key, default=KeyError) is KeyError:
            raise ConfigError(
                f"score_run(overrides=[{text!r}]): the run's config has no {key}"
                + (f".{hint}" if (hint := _closest_key(cfg, key)) else "")
            )
        if not plain or not key.startswith(SCORING_KEYS) or key in TRAINED_KEYS:
            allowed = ", ".join(k.rstrip(".") for k in SCORING_KEYS)
            raise ConfigError(
                f"score_run(overrides=[{text!r}]): give key=value of a setting the run's config "
                f"holds, of the data or the evaluation ({allowed}; not "
                f"{', '.join(TRAINED_KEYS)}); the model, the task and the method are the run's"
            )
        top = key.startswith("dataset.") and key.count(".") == 1
        top = top and key.split(".")[1] not in ("source", "target", "test")
        if not interpolated and top:  # (copied into the settings built from it: no effect)
            old = OmegaConf.select(cfg, key)
            took = sorted(
                k
                for k, v in flatten(OmegaConf.to_container(cfg.dataset), "dataset.").items()
                if k != key and old is not None and (v == old or str(v).startswith(f"{old}/"))
            )
            raise ConfigError(
                f"score_run(overrides=[{text!r}]): the run's config ({folder.name}/config.yaml, "
                f"of a run without Hydra's record) was resolved when it was written, so {key} "
                "was copied into the settings built from it"
                + (f" ({', '.join(took)}): override those" if took else ", which keep it")
            )
        OmegaConf.update(cfg, key, override.value(), merge=False)
    if validators is not None:
        if any(str(o).startswith("eval.validators") for o in overrides):
            raise ConfigError(
                "score_run: give validators= or eval.validators in overrides, not both"
            )
        cfg.eval.validators = list(validators)
    cfg = _resolved(cfg)
    old, new = (flatten(OmegaConf.to_container(c)) for c in (before, cfg))
    changed = sorted(
        k
        for k in set(old) | set(new)
        if k.split(".")[0] in TRAINED_SECTIONS and old.get(k) != new.get(k)
    )
    if changed:  # (through an interpolation: dataset.size feeds the model's input size)
        raise ConfigError(
            f"score_run(overrides={overrides}): they change {', '.join(changed[:3])} (through "
            "an interpolation): the model, the task and the method are the run's"
        )
    judged = bool(overrides)
    if judged:
        try:  # (a config that today's checks refuse alone, an older mic's: not judged)
            check_config(before)
        except ConfigError:
            judged = False
    if judged:
        try:
            check_config(cfg)
        except ConfigError as e:
            raise ConfigError(f"score_run(overrides={overrides}): {e}") from None
    return cfg


def _raise_as_score_run(e: MicError) -> None:
    """Raise ``e``, its message led by the function the user called (load_run's: score_run)."""
    if str(e).startswith("load_run"):
        raise type(e)(f"score_run{str(e).removeprefix('load_run')}") from e
    raise e


def _gone(path: Path) -> None:
    warnings.warn(f"score_run: '{path}' was removed while scoring; it is skipped", stacklevel=3)


def _first(folder: Path, paths: list[Path], device: Any) -> tuple[Any, Any, dict[str, Any]]:
    """The run's task, and the student and state of the first checkpoint of ``paths`` still
    there (those removed before it, by a run still training that rotates them, left out of
    ``paths``)."""
    for path in list(paths):
        try:
            state = load_checkpoint(path, mmap=True)
            return *load_run(folder, checkpoint=path, device=device), state
        except (CheckpointError, ConfigError) as e:
            if path.exists():
                _raise_as_score_run(e)
            paths.remove(path)
            _gone(path)
    raise ConfigError(f"score_run('{folder}'): every checkpoint was removed while scoring")


def _trained(config: Any) -> dict[str, Any]:
    """The flattened model, method and seed of a config (a checkpoint's, or a file's)."""
    flat = flatten(config if isinstance(config, dict) else OmegaConf.to_container(config))
    return {k: v for k, v in flat.items() if k.split(".")[0] in ("model", "method", "seed")}


def _run_configs(folder: Path) -> list[dict[str, Any]]:
    """``_trained`` of the run's ``config.yaml`` and, after a resume that changed them (as
    ``resume_allow_changes`` lets it), of ``config_resumed.yaml``."""
    files = [folder / "config.yaml", folder / "config_resumed.yaml"]
    return [_trained(read_run_config(f)) for f in files if f.is_file()]


def _foreign(ours: list[dict[str, Any]], state: dict[str, Any], path: Path, folder: Path) -> None:
    """Warn when ``state`` was written by a run of another model, method or seed than any of
    the run's configs (``ours``: ``_run_configs``)."""
    saved = state.get("config")
    if not isinstance(saved, dict):
        return
    theirs = _trained(saved)
    if theirs in ours:
        return
    nearest = ours[-1]
    differ = sorted(k for k in set(nearest) | set(theirs) if nearest.get(k) != theirs.get(k))
    warnings.warn(
        f"score_run: '{path}' was written by a run of another config than '{folder}' "
        f"({', '.join(differ[:3])} differ): it is scored under this run's",
        stacklevel=3,
    )


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
    draws, ``masked_agreement`` against the checkpoint's teacher where it has one: a
    checkpoint of an iteration the run evaluated gets that evaluation's record again (on the
    device it ran on; a resume that changed the evaluation settings scores every checkpoint
    with the newest). The data is read from where the config says; a run of ``N`` processes
    (torchrun) is scored in one, with its per-process target batch. Nothing is written.

    Args:
        run: the run folder (``hydra.run.dir``), which holds ``config.yaml``.
        checkpoints: mic checkpoints to score (``"best.pt"``, ``"iter_00000500.pt"``: names
            in the run's ``checkpoints``, or paths); None: every one there, by iteration
            (one removed meanwhile, by a run still training, is skipped with a warning).
        validators: the label-free validators to compute (names of
            ``mic.training.VALIDATORS``); None: the run's ``eval.validators``.
        overrides: settings of the data or the evaluation in Hydra's syntax, ``key=value``
            (``dataset.root_target=/new/mount``, ``dataset.test=null``,
            ``eval.adabn_batches=0``, ``eval.validation.batches=8``), applied to Hydra's
            record of the run's config where mic-train wrote one (interpolations kept).
        device: where the models are scored (``"auto"``: CUDA where there is one).

    Returns:
        One record per checkpoint, as the run's ``metrics.jsonl`` evaluation records
        (``step``, ``eval/<model>/<metric>``, ``validator/<model>/<name>``, ``summary``;
        NaN where ``metrics.jsonl`` writes null), with the checkpoint's path under
        ``checkpoint``. A ``ModelSelection`` per run takes them (``update``) to say which
        each score would pick.

    Raises:
        ConfigError: what ``load_run`` raises for the folder, arguments of another type, a
            checkpoint that is no mic checkpoint, an override of the model, task or method
            (also through an interpolation) or of a key the config lacks, a value mic-train
            would refuse, an unknown validator, a teacher asked of a run without one, or
            neither a test set nor a validator to score with.
        DatasetError: the target or test data cannot be read.
    """
    return _scored_run(run, checkpoints, validators, overrides, device)[0]


def _scored_run(
    run: str | Path,
    checkpoints: Sequence[str | Path] | str | Path | None,
    validators: Sequence[str] | str | None,
    overrides: Sequence[str],
    device: str | torch.device,
    progress: bool = False,
    each: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[list[dict[str, Any]], Any]:
    """``score_run``'s records and the run's task (``progress``: bars of the test batches;
    ``each``: called with each record as it is made)."""
    if not isinstance(run, (str, os.PathLike)) or not str(run).strip():
        raise ConfigError(
            f"score_run(run=...) takes the run folder (its hydra.run.dir), got {run!r}"
        )
    folder = Path(run)
    if folder.is_file():
        raise ConfigError(f"score_run: '{folder}' is a file; give the run folder that holds it")
    inside = folder.name.startswith(".hydra") or not (folder / "config.yaml").is_file()
    if inside and folder.is_dir() and (folder.parent / "config.yaml").is_file():
        raise ConfigError(  # (its checkpoints/ folder, or .hydra/)
            f"'{folder}' is a folder inside the run folder '{folder.parent}': give the run "
            f"folder, score_run('{folder.parent}') (checkpoints=[...] chooses among its "
            "checkpoints)"
        )
    if not (folder / "config.yaml").is_file():
        load_run(folder)  # raises what the folder is, and what to give
    if not isinstance(device, (str, torch.device)):
        raise ConfigError(f"score_run(device=...) takes 'cpu', 'cuda', 'auto', got {device!r}")
    overrides = [] if overrides is None else [str(o) for o in _listed(overrides, "overrides")]
    if validators is not None:
        validators = [str(v) for v in _listed(validators, "validators")]
    paths = _checkpoints(folder, checkpoints)
    cfg = _run_config(folder, overrides, validators)
    make_validators(validator_names(cfg))  # an unknown name before any data is read
    if cfg.dataset.get("test") is None and not validator_names(cfg):
        raise ConfigError(
            "score_run: with dataset.test=null and no validator there is nothing to score; "
            "give validators=[...] (docs/model_selection.md), or a labelled test set"
        )
    with preserved_rng():  # (building the model draws)
        task, student, first = _first(folder, paths, device)
    if list(cfg.eval.models) == ["teacher"] and first.get("teacher") is None:
        raise ConfigError(
            f"score_run: eval.models=[teacher], but checkpoint "
            f"{_shown_path(str(paths[0]), folder)} holds no teacher (a run whose method trains "
            f"none, as this run's {cfg.method.get('name', '?')} may, or another run's "
            "checkpoint): score the student"
        )
    with preserved_rng():
        try:
            data = build_datasets(cfg, preflight=False)
        except Exception as e:  # (Hydra's wrap of a reader's refusal)
            said = next((c for c in exception_chain(e) if isinstance(c, MicError)), None)
            if said is None or said is e:
                raise
            raise said from e
        processes = len(first.get("rng") or [None])
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
            progress=progress,
        )
        records, ours = [], _run_configs(folder)
        for path in paths:
            try:
                if path is not paths[0]:  # (the first's student: built by _first)
                    state = load_checkpoint(path, mmap=True)
                    _, student = load_run(folder, "student", path, device)
                else:
                    state = first
                teacher = None  # (masked_agreement's reference also where it is not scored)
                if state.get("teacher") is not None:
                    teacher = load_run(folder, "teacher", path, device)[1]
                elif "teacher" in cfg.eval.models and first.get("teacher") is not None:
                    warnings.warn(  # (the first had one: its record would lack it unsaid)
                        f"score_run: checkpoint {_shown_path(str(path), folder)} holds no "
                        "teacher (another run's checkpoint, or one of a method that trains "
                        "none): its teacher is not scored",
                        stacklevel=2,
                    )
            except (CheckpointError, ConfigError) as e:
                if path.exists():
                    _raise_as_score_run(e)
                _gone(path)  # (a run still training rotates its checkpoints)
                continue
            _foreign(ours, state, path, folder)
            device_used = next(student.parameters()).device
            evaluation.progress_label = path.name
            record = evaluation.score_models(int(state["step"]), student, teacher, device_used)
            records.append({"checkpoint": str(path), **record})
            if each is not None:
                each(records[-1])
    return records, task


#: score_run's words in its messages, and mic-score's for them (regular expressions)
_COMMAND_WORDS = (
    (
        r"score_run\('([^']*)'\) \(checkpoints=\[\.\.\.\] chooses",
        r"mic-score \1 (CHECKPOINT ... chooses",
    ),
    (r"score_run\('([^']*)'\)", r"mic-score \1"),
    (
        r"score_run\(overrides=\[(.*?)\]\)",
        lambda m: ("the settings " if "', '" in m[1] else "the setting ") + m[1],
    ),
    (r"score_run\(device=('[^']*'|\S+?)\)", r"--device \1"),
    (r"score_run\(validators=", "mic-score (--validators "),
    (r"give validators=\[\.\.\.\]", "give --validators NAME,..."),
    (
        r"give validators= or eval\.validators in overrides",
        "give --validators or eval.validators=...",
    ),
    (r"(?<![\w/.-])score_run(?=[:(\s])", "mic-score"),  # (not a folder of that name in a path)
)


def _command_words(text: str) -> str:
    """A message of ``score_run`` in the words of ``mic-score``'s command line."""
    for pattern, words in _COMMAND_WORDS:
        text = re.sub(pattern, words, text)  # type: ignore[call-overload]
    return text


def main(argv: Sequence[str] | None = None) -> None:
    """``mic-score``: ``score_run`` on the command line. Prints one line per checkpoint as it
    is scored, then which checkpoint each validator and the labelled metric pick for the
    first scored model; ``--json`` writes the records and the picks. Bad input ends in one
    ``mic: error:`` line with status 2, before any scoring where it can be told then."""
    from mic.cli import score_parser
    from mic.train import DETECTRON2_MESHGRID, _format_warning, _show_warning

    parser = score_parser()
    args = parser.parse_intermixed_args(argv)  # (an option before the checkpoints too)
    folder = Path(args.run)
    if not args.run.strip():
        parser.error("give the run folder (its hydra.run.dir), not ''")
    if args.json is not None and not args.json.strip():  # --json $OUT with OUT unset
        parser.error("--json '': give the file to write the scores into")
    if args.json:
        _check_json_target(Path(args.json), folder)

    def said(message: Warning | str, *rest: Any) -> str:  # mic's warnings in its words too
        return _command_words(_format_warning(message, *rest))

    shown = warnings.formatwarning
    try:  # (main called from Python: its warnings as they were, filters too)
        with warnings.catch_warnings():
            warnings.formatwarning, warnings.showwarning = said, _show_warning
            warnings.filterwarnings("ignore", DETECTRON2_MESHGRID, UserWarning)
            _command(args, folder)
    finally:
        warnings.formatwarning = shown


def _command(args: Any, folder: Path) -> None:
    """``main`` once its arguments are read and checked."""
    from mic.experiment import format_selection
    from mic.training import ModelSelection
    from mic.training.evaluation import in_percent
    from mic.training.hooks import strict_json

    # an argument with '=' is a setting, unless it names a file (a checkpoint's path)
    settings = [i for i in args.items if "=" in i and not Path(i).is_file()]
    named = [i for i in args.items if i not in settings] or None
    validators = None
    if args.validators is not None:
        validators = [v.strip() for v in args.validators.split(",") if v.strip()]
    out = _Lines()
    try:
        records, task = _scored_run(
            args.run,
            named,
            validators,
            settings,
            args.device,
            progress=True,
            each=lambda record: out.say(_checkpoint_line(record, folder)),
        )
    except MicError as e:
        text = _command_words(str(e))
        if validators is not None:
            text = text.replace("in eval.validators", "in --validators")
        print(f"mic: error: {text}", file=sys.stderr)
        sys.exit(2)
    records.sort(key=lambda r: r["step"])  # (the picks' "last": the latest, not the last named)
    selection = ModelSelection.for_task(task)
    for record in records:
        selection.update(record)
    metric = task.primary_metric
    models = sorted(selection.last, key=lambda m: (m != "student", m))
    summary = {
        "metric": metric,
        "in_percent": in_percent(task),
        "selection": {m: selection.picks(m, metric) for m in models},
    }
    if args.json:  # (before the picks are printed: a closed pipe loses no scores)
        text = strict_json({"run": str(folder), "records": records, **summary}, indent=1)
        try:
            write_text_atomically(Path(args.json), text + "\n")  # (an earlier one kept whole)
        except OSError as e:
            print(f"mic: error: --json {args.json}: {e.strerror or e}", file=sys.stderr)
            sys.exit(2)
    shown = {
        m: {k: {**p, "checkpoint": _shown_path(p["checkpoint"], folder)} if p.get("checkpoint")
            else p for k, p in picks.items()}
        for m, picks in summary["selection"].items()
    }  # fmt: skip
    for line in format_selection({**summary, "selection": shown}, always=True):
        out.say(line)
    if args.json:
        out.say(f"records and picks written to {args.json}")


class _Lines:
    """Standard output that a reader may close (``| head``): the lines after it are dropped,
    and the command goes on (its ``--json`` file is still written)."""

    def __init__(self) -> None:
        self.closed = False

    def say(self, line: str) -> None:
        if self.closed:
            return
        try:
            print(line, flush=True)
        except BrokenPipeError:
            self.closed = True
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (no error at exit)


def _checkpoint_line(record: dict[str, Any], folder: Path) -> str:
    """A scored checkpoint in one line: its name, its scores, its first model's validators."""
    line = f"{_shown_path(record['checkpoint'], folder)}  {record['summary']}"
    model = next((k.split("/")[1] for k in record if k.startswith("validator/")), None)
    mine = f"validator/{model}/"
    found = {k[len(mine) :]: v for k, v in record.items() if k.startswith(mine)}
    if found and "(no labels)" not in record["summary"]:
        listed = ", ".join(f"{k} {v:.4g}" for k, v in found.items() if v is not None)
        line += f"; validators of the {model} (higher is better): {listed}"
    return line


def _check_json_target(path: Path, folder: Path) -> None:
    """Exit with a ``mic: error:`` line, before any scoring, where ``--json`` names a folder, a
    file in a folder that does not exist, a file of the run's ``checkpoints/``, or a file that
    is there and is no earlier ``mic-score`` output (the run's ``config.yaml``,
    ``summary.json``: overwritten in silence)."""
    why, parent = None, path.resolve().parent
    if path.is_dir():
        why = "it is a folder; give a file"
    elif not parent.is_dir():
        why = "its folder does not exist"
    elif parent == (folder / "checkpoints").resolve():
        why = "it is in the run's checkpoints/; give a file elsewhere"
    elif not os.access(parent, os.W_OK):
        why = "its folder cannot be written to"
    elif path.exists() and not path.is_file():  # (a device, a pipe: not replaced by a file)
        why = "it is no regular file; give a file"
    elif path.exists():
        try:
            earlier = json.loads(path.read_text()) if path.stat().st_size < 2**28 else None
        except (OSError, ValueError):
            earlier = None
        if not (isinstance(earlier, dict) and {"run", "records", "selection"} <= set(earlier)):
            why = "the file is there and is no earlier mic-score output; give a new file"
    if why is not None:
        print(f"mic: error: --json {path}: {why}", file=sys.stderr)
        sys.exit(2)


def _shown_path(path: str, folder: Path) -> str:
    """A checkpoint's path as the user gave the run: its name inside the run's checkpoints."""
    p = Path(path)
    return p.name if p.parent.resolve() == (folder / "checkpoints").resolve() else str(p)
