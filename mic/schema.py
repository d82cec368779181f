"""The schema of ``mic-train``'s root config: every key's type and range, checked in one layer
before anything is built (pydantic), so that a bad value is one message naming its key.

The config groups' own objects (task, dataset, model, method terms) check their arguments when
they are built, with the same kind of message; the keys here are the ones the experiment reads
itself, plus one check of those objects that their constructors cannot make: an argument
annotated ``bool`` must be given true or false (``bool("false")`` is true, so a quoted
``"false"`` would silently do the opposite).
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import inspect
import logging
import math
import os
import re
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from mic.core import ConfigError
from mic.core.errors import is_whole

#: the largest seed, a 32-bit one: far larger ones overflow the 64-bit seeds derived from it
#: (the sampler's seed x 1,000,003 + epoch; torch.manual_seed)
MAX_SEED = 2**32 - 1

#: the kinds of the schema's fields that take a value of their own kind only: not text
#: (pydantic would read ``"3"`` as 3 and ``"false"`` as false, but the code reads the value as
#: it is: a string), nor a boolean for a number or a number for a boolean
#: (``iterations=true`` ran 1 iteration and recorded ``true``; ``channels_last=1`` recorded 1)
_STRICT_KINDS = {int: "a valid integer", float: "a valid number", bool: "true or false"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow")

    @field_validator("*", mode="before")
    @classmethod
    def _of_its_kind(cls, value: Any, info: ValidationInfo) -> Any:
        hint = cls.model_fields[str(info.field_name)].annotation
        kinds = [k for k in _STRICT_KINDS if hint in (k, k | None)]
        if not kinds:
            return value
        should = "must be" if kinds[0] is bool else "Input should be"
        if isinstance(value, str):
            raise ValueError(f"{should} {_STRICT_KINDS[kinds[0]]}, not text")
        if (kinds[0] is bool) != isinstance(value, bool) and value is not None:
            got = "a number" if kinds[0] is bool else "true or false"
            raise ValueError(f"{should} {_STRICT_KINDS[kinds[0]]}, not {got}")
        return value


class TeacherSchema(_Section):
    alpha: float = Field(ge=0.0, le=1.0)
    buffers: Literal["own", "ema", "copy"] = "own"
    norm: Literal["batch", "running"] = "batch"


class LoaderSchema(_Section):
    source_batch_size: int = Field(ge=1, le=2**31 - 1)
    target_batch_size: int = Field(ge=1, le=2**31 - 1)
    test_batch_size: int = Field(ge=1, le=2**31 - 1)
    num_workers: int = Field(ge=0)


class ValidationSchema(_Section):
    """``eval.validation``: what the label-free validators score (build_validation reads its
    keys by name; a key left out takes LabelFreeValidation's default). ``batches`` may be 0
    where no validator runs (``eval.validators=[]``); LabelFreeValidation refuses 0 batches."""

    batches: int = Field(default=4, ge=0)
    samples_per_image: int | None = Field(default=256, ge=1)  # null: every pixel or box
    seed: int = Field(default=0, ge=0, le=MAX_SEED)  # as the root seed


class EvalSchema(_Section):
    interval: int = Field(ge=0)
    models: list[Literal["student", "teacher"]] = Field(min_length=1)
    adabn_batches: int = Field(ge=0)
    validators: Any = None  # checked by make_validators
    validation: ValidationSchema | None = None  # null: every key its default

    @field_validator("validators", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:  # (which names: make_validators judges them)
        named = isinstance(value, list) and all(isinstance(v, str) for v in value)
        if value is None or isinstance(value, str) or named:
            return value
        raise ValueError(
            "lists label-free validators by name (e.g. [im, snd]); one name alone, or null or "
            "[] for none"
        )

    @field_validator("models")
    @classmethod
    def _once_each(cls, models: list[str]) -> list[str]:
        if len(set(models)) < len(models):  # each would be scored twice, as one
            raise ValueError("names a model twice; list each once, e.g. [student, teacher]")
        return models


class LogSchema(_Section):
    interval: int = Field(ge=1)
    tensorboard: bool
    progress: bool


class CheckpointSchema(_Section):
    interval: int = Field(ge=0)
    keep: int = Field(ge=1)
    best_by: Any = None  # checked by best_metric_key

    @field_validator("best_by")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():  # best_by=$METRIC with METRIC unset
            raise ValueError(  # (it chose best.pt by the target labels, silently)
                "is empty (an unset shell variable?); give a label-free validator (e.g. im), "
                "or null for the labelled target metric"
            )
        return value


class OptimizerSchema(_Section):
    #: a learning rate above 10 is no setting of these optimisers but a typo (1e3 for 1e-3)
    lr: float = Field(gt=0.0, le=10.0)
    weight_decay: float | None = Field(default=None, ge=0.0)
    momentum: float | None = Field(default=None, ge=0.0, lt=1.0)

    @field_validator("lr", "weight_decay", "momentum")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class RootSchema(_Section):
    seed: int = Field(ge=0, le=MAX_SEED)
    device: str
    iterations: int = Field(ge=1)
    adaptation_start: int = Field(ge=0)
    pseudo_label_threshold: float = Field(ge=0.0, le=1.0)
    max_grad_norm: float | None = Field(default=None, gt=0.0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    accumulate: int = Field(default=1, ge=1)
    nan_policy: Literal["skip", "stop", "ignore"] = "skip"
    max_skipped: float = Field(default=0.1, ge=0.0, le=1.0)
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = False
    resume: str | None = None
    resume_allow_changes: list[str] = []
    init_from: str | None = None
    init_model: Literal["student", "teacher"] = "student"
    preflight: bool = True
    #: the colour operations of every strong augmentation that does not set its own (read by
    #: conf/augmentation/strong.yaml; a config without it, written before it existed, ran
    #: torchvision's: ``mic.resume.ABSENT_MEANS`` of the augmentations' own settings)
    augmentation_jitter: Literal["torchvision", "published"] = "published"
    lr_mult: dict[str, Any] | None = None
    no_weight_decay: list[str] = []
    bias_lr_factor: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)
    teacher: TeacherSchema
    loader: LoaderSchema
    eval: EvalSchema
    log: LogSchema
    checkpoint: CheckpointSchema
    optimizer: OptimizerSchema

    @field_validator("resume", "init_from")
    @classmethod
    def _not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():  # init_from=$SRC with SRC unset
            raise ValueError(
                "is empty (an unset shell variable?); give a path (resume: also auto), or null"
            )
        return value

    @field_validator("init_model")
    @classmethod
    def _with_init_from(cls, value: str, info: ValidationInfo) -> str:
        if value != "student" and "init_from" in info.data and info.data["init_from"] is None:
            raise ValueError(  # it would be ignored: the run starts from its own weights
                "chooses the model of init_from to start from, but init_from is not set: give "
                "init_from=<a run folder or checkpoint>, or leave init_model out"
            )
        return value

    @field_validator("device")
    @classmethod
    def _a_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|(cpu|mps)(:0)?|cuda(:(0|[1-9]\d*))?", value):
            raise ValueError("must be auto, cpu, cuda, cuda:<index> or mps")
        return value

    @field_validator("resume", "init_from", mode="before")
    @classmethod
    def _a_path_or_null(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or isinstance(value, str):
            return value
        values = {
            "resume": "auto, a checkpoint file or a run folder",
            "init_from": "a mic checkpoint, a weights file (student.pt) or a run folder",
        }
        raise ValueError(
            f"null (or leaving it out) turns it off; the other values are "
            f"{values[str(info.field_name)]}"
        )

    @field_validator("adaptation_start")
    @classmethod
    def _within_the_run(cls, value: int, info: ValidationInfo) -> int:
        iterations = info.data.get("iterations")
        if iterations is not None and value > iterations:
            raise ValueError(
                f"must lie in [0, iterations={iterations}]: give both when shortening a run "
                f"(e.g. iterations={iterations} adaptation_start={iterations // 5})"
            )
        return value


#: a value that is exactly one ``${oc.env:VAR}`` (or ``${oc.env:VAR,default}``) interpolation
_ENV = re.compile(r"\s*\$\{\s*oc\.env\s*:\s*([^{}$,\s]+)\s*(,[^{}$]*)?\}\s*")


#: the keys whose environment values stay text, numbers or not: folders, files and names
_TEXT_KEYS = re.compile(r"root|dir|path|file|name|images|labels|annotations|tag")


def _decoded(text: str) -> Any:
    """``text`` (an environment variable's value) as ``${oc.decode:...}`` reads it, where that
    gives a number (``3`` -> 3, ``1e-3`` -> 0.001); else ``text`` itself (a path, a word,
    ``true`` or ``null``: a folder may bear such a name)."""
    if "${" in text:  # interpolations of the variable's own: kept as text
        return text
    try:
        value = OmegaConf.create({"text": text, "value": "${oc.decode:${text}}"}).value
    except Exception:  # not of OmegaConf's grammar ("a,b", "it's"): text
        return text
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else text


def decode_env(cfg: DictConfig) -> None:
    """Replace, in place, each value that is exactly one ``${oc.env:VAR}`` interpolation (an
    environment variable always gives a string: ``seed=${oc.env:SLURM_ARRAY_TASK_ID}``) by the
    variable's value decoded as ``${oc.decode:${oc.env:VAR}}`` would where that gives a number
    (``_decoded``), so that a number is used, and checked, as a number; values under
    ``user`` and of keys that name folders, files or names (``_TEXT_KEYS``) stay text.

    Raises:
        ConfigError: naming the key and the variable, when the variable is not set and the
            interpolation gives no default.
    """
    raw = _raw(cfg)

    def walk(node: Any, raw_node: Any, path: str) -> None:
        if isinstance(raw_node, dict):
            keys: Iterable[Any] = [k for k in raw_node if not (path == "" and k == "hydra")]
        elif isinstance(raw_node, list):
            keys = range(len(raw_node))
        else:
            return
        for key in keys:
            where = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}".lstrip(".")
            value = raw_node[key]
            found = _ENV.fullmatch(value) if isinstance(value, str) else None
            if found is None:
                if isinstance(value, (dict, list)):  # a container, not an interpolation
                    walk(node[key], value, where)
                continue
            if found.group(2) is None and found.group(1) not in os.environ:
                raise ConfigError(
                    f"{where}={value.strip()} reads the environment variable "
                    f"{found.group(1)}, which is not set; set it (export {found.group(1)}=...), "
                    f"or give a default: ${{oc.env:{found.group(1)},<default>}}"
                )
            resolved = node[key]  # a string, or the default as written (null: None)
            text = where.startswith(f"{USER_KEY}.") or _TEXT_KEYS.search(str(key).lower())
            with open_dict(node), read_write(node):
                node[key] = (
                    _decoded(resolved) if isinstance(resolved, str) and not text else resolved
                )

    walk(cfg, raw, "")


@functools.lru_cache(maxsize=256)
def _typed_arguments(target: str) -> dict[str, tuple[type, bool]]:
    """The arguments of ``target`` (a class or function path) annotated ``bool``, ``int`` or
    ``float``, alone or with None: name -> (that kind, whether it takes None: annotated
    ``int | None``, or None as its default). Read once per target (the check and the
    whole-number rewrite both ask); not to be changed by callers."""
    try:
        obj = _get_object(target)
        fn = obj.__init__ if inspect.isclass(obj) else obj
        hints = typing.get_type_hints(fn)
        defaults = {n: p.default for n, p in inspect.signature(fn).parameters.items()}
    except Exception:  # an unresolvable target or annotation: instantiate reports the former
        return {}
    typed = {}
    for name, hint in hints.items():
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        kinds = set(typing.get_args(hint)) if union else {hint}
        plain = kinds - {type(None)}
        if len(plain) == 1 and (kind := next(iter(plain))) in (bool, int, float):
            typed[name] = (kind, type(None) in kinds or defaults.get(name, 0) is None)
    return typed


def _argument_names(target: str) -> set[str] | None:
    """The names ``target`` (a class or function path) takes by keyword; None where it takes
    any (``**kwargs``) or cannot be read (instantiate names an unimportable target)."""
    try:
        parameters = inspect.signature(_get_object(target)).parameters.values()
    except Exception:
        return None
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in parameters if p.kind in kinds}


def _range_problem(target: str, key: str, value: Any) -> str | None:
    """What is wrong with a masker's ``ratio`` (a probability) or ``block_size`` (a whole
    number of pixels >= 1); None for other arguments (their constructors judge them)."""
    from mic.core import BlockMasker

    if key not in ("ratio", "block_size") or value is None:
        return None
    try:
        masker = issubclass(_get_object(target), BlockMasker)
    except Exception:  # not a class, or not importable (named where it is built)
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not masker or not number:  # text: _argument_problem's (or the build's)
        return None
    if key == "ratio" and not 0 <= value < 1:
        return (
            "the share of withheld blocks must lie in [0, 1): at 1 every block is withheld and "
            "the student sees no image (published 0.7)"
        )
    if key == "block_size" and not is_whole(value):
        return "a block's side must be a whole number of pixels >= 1"
    return None


def _get_object(path: str) -> Any:
    """Hydra's ``get_object``, without the ERROR record it logs for a path it cannot import
    (mic-train's own message names what is missing).

    Raises:
        Exception: what ``get_object`` raises.
    """
    log = logging.getLogger("hydra.utils")
    was, log.disabled = log.disabled, True
    try:
        return get_object(path)
    finally:
        log.disabled = was


def _argument_problem(value: Any, hint: type, optional: bool = True) -> str | None:
    """What is wrong with ``value`` for an argument annotated ``hint`` (None: nothing);
    ``optional``: whether it takes None (``int | None``, or a default of None)."""
    if value is None:  # (a bool's null was read as false: HRDA's classwise_attention off)
        kind = {bool: "true or false", int: "an integer", float: "a number"}[hint]
        return None if optional else f"must be {kind}, not null (this argument has no null)"
    null = " or null" * optional  # (the argument's way to say "none")
    if hint is bool:
        return None if isinstance(value, bool) else f"must be true or false{null}"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number:
        kind = "an integer" if hint is int else "a number"
        return f"Input should be {kind}{null}"
    if hint is int and not math.isfinite(value):
        return "Input should be a valid integer, not a number that is not finite"
    if hint is int and not float(value).is_integer():
        return "Input should be a valid integer, got a number with a fractional part"
    return None


def step_problems(cfg: DictConfig) -> list[str]:
    """``precision: ...`` when the method's step strategy (``method.step``, e.g. SDAT's
    sharpness-aware minimisation) lists the run's precision in its ``refused_precisions``
    (precision -> why): refused before the data are read, not when the loop is built."""
    target = OmegaConf.select(cfg, "method.step._target_", default=None)
    precision = cfg.get("precision")
    try:
        refused = getattr(get_object(str(target)), "refused_precisions", {}) if target else {}
    except Exception:  # an unimportable target is named where it is built
        return []
    if precision not in refused:
        return []
    name = str(target).rsplit(".", 1)[-1]
    why = refused[precision]
    return [f"precision: {name} (method.step) cannot run in {precision} ({why}); use bf16"]


def flag_problems(node: Any, path: str = "") -> list[str]:
    """``key: must be true or false (got ...)`` for every argument of a ``_target_`` node
    (at any depth) that its class or function annotates ``bool`` and the config gives another
    value; ``key: Input should be a number (got ...)`` for one annotated ``int`` or ``float``
    that the config gives as text or true / false, and ``... a valid integer, got a number
    with a fractional part`` for an ``int`` given 2.5 (which the constructor would truncate);
    ``key: ... takes no argument`` for a key that the class or function does not take (a
    typo in a config file, which ended in the build's TypeError, one at a time; the
    optimizer, the scheduler and the loss terms name theirs when built, with their own
    advice); a masker's ``ratio`` outside [0, 1) or ``block_size`` below 1, named before
    anything is built."""
    problems: list[str] = []
    if OmegaConf.is_dict(node):
        target = node.get("_target_")
        typed = _typed_arguments(str(target)) if isinstance(target, str) else {}
        tailored = path in ("optimizer", "scheduler") or re.fullmatch(r"method\.terms\.\w+", path)
        named = isinstance(target, str) and not tailored  # (those name theirs when built)
        taken = _argument_names(str(target)) if named else None
        for key in node:
            where = f"{path}.{key}" if path else str(key)
            if taken is not None and not str(key).startswith("_") and key not in taken:
                name = str(target).rsplit(".", 1)[-1]
                hint = did_you_mean(str(key), sorted(taken)) or f" It takes {sorted(taken)}."
                problems.append(f"{where}: {name} takes no argument {key!r}.{hint}")
                continue
            if OmegaConf.is_missing(node, key):
                continue
            source = read_from(node, key)  # (size: ${dataset.size}: dataset.size is named)
            try:
                value = node[key]
            except Exception:  # an interpolation that does not resolve: named on its own
                continue
            problem = _argument_problem(value, *typed[key]) if key in typed else None
            problem = problem or _range_problem(str(target), str(key), value)
            if problem:  # (named where it is set: one problem however many read it)
                problems.append(f"{source or where}: {problem} (got {value!r})")
            if not OmegaConf.is_interpolation(node, key):
                problems += flag_problems(value, where)
    elif OmegaConf.is_list(node):
        for i, item in enumerate(node):
            problems += flag_problems(item, f"{path}[{i}]")
    return problems


def kept_option_hint(cfg: DictConfig, problems: list[str]) -> list[str]:
    """``problems`` with a hint added to the first ``<group>.<key>: ... takes no argument`` of
    each config group whose chosen option (one of mic's, e.g. ``model: small_cnn``) has
    another ``_target_`` than the config (an experiment of one's own that sets ``model:
    {_target_: ...}`` without ``override /model: null``): the option's keys are passed to the
    new class too. Unchanged outside ``mic-train`` (no choices to read)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        choices = dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}
    except Exception:  # no Hydra config to read
        return problems
    hinted: set[str] = set()
    out = []
    for problem in problems:
        found = re.match(r"(\w+)\.(\w+): \w+ takes no argument", problem)
        group, option = (found.group(1), choices.get(found.group(1))) if found else ("", None)
        path = importlib.resources.files("mic.conf") / group / f"{option}.yaml"
        if found and group not in hinted and isinstance(option, str) and path.is_file():
            own = OmegaConf.create(path.read_text())
            target = OmegaConf.select(cfg, f"{group}._target_", default=None)
            if found.group(2) in own and own.get("_target_") not in (None, target):
                hinted.add(group)
                instead = (  # (the root defaults read a named group's option: no ~task +task)
                    f"a {group} option of one's own ({group}/<name>.yaml in a --config-dir "
                    f"folder, chosen with {group}=<name>)"
                    if group in NAMED_GROUPS
                    else f"~{group} +{group}={{_target_: ...}} on the command line"
                )
                problem += (
                    f" ({group}.{found.group(2)} comes from the {group} option {option!r}, "
                    f"which the config keeps under another _target_: a {group} of one's own "
                    f"replaces the group, with `override /{group}: null` in an experiment's "
                    f"defaults, or {instead}, docs/new_task.md)"
                )
        out.append(problem)
    return out


def read_from(node: DictConfig, key: Any) -> str | None:
    """The key that ``node[key]`` reads when it is an interpolation of one
    (``${dataset.size}`` -> ``dataset.size``; ``${oc.select:dataset.mic_block_size,64}`` ->
    ``dataset.mic_block_size``), else None."""
    if not OmegaConf.is_interpolation(node, key):
        return None
    text = str(node._get_node(key)._value())
    found = re.fullmatch(r"\$\{(?:oc\.select:)?([A-Za-z_][\w.]*)(?:,[^{}]*)?\}", text)
    root = node._get_root()  # (an oc.select of a key that is not set: its default, the reader's)
    try:
        unset = not found or OmegaConf.select(root, found.group(1), default=_UNSET) is _UNSET
    except Exception:  # (it does not resolve: named on its own)
        return None
    return None if unset else found.group(1)


_UNSET = object()


def whole_numbers_as_ints(cfg: DictConfig) -> None:
    """Write each whole number that ``cfg`` gives as a float (``seed=1.0``, ``1e3``) where an
    integer is read, as an int: the schema's integer settings and the integer arguments of the
    ``_target_`` objects (torch's seeding, sizes and slicing refuse a float). An interpolation
    of one key (``${dataset.size}``) has that key written; other interpolations are left."""

    def as_int(node: DictConfig, key: Any) -> None:
        source = read_from(node, key)
        if source is not None:  # write where it is set
            parent, _, last = source.rpartition(".")
            node, key = (OmegaConf.select(cfg, parent) if parent else cfg), last
            if not OmegaConf.is_dict(node) or key not in node:
                return
        if OmegaConf.is_missing(node, key) or OmegaConf.is_interpolation(node, key):
            return
        value = node[key]
        if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
            with read_write(node), open_dict(node):  # (1e30 stays: said as 1e+30)
                node[key] = int(value)

    def schema(model: type[BaseModel], node: Any) -> None:
        for name, field in model.model_fields.items():
            if not OmegaConf.is_dict(node) or name not in node:
                continue
            if field.annotation in (int, int | None):
                as_int(node, name)
            elif isinstance(field.annotation, type) and issubclass(field.annotation, _Section):
                schema(field.annotation, node[name])

    def targets(node: Any) -> None:
        if OmegaConf.is_list(node):
            for item in node:
                targets(item)
        if not OmegaConf.is_dict(node):
            return
        target = node.get("_target_")
        typed = _typed_arguments(str(target)) if isinstance(target, str) else {}
        for key in list(node):
            if typed.get(key, (None,))[0] is int:
                as_int(node, key)
            elif not OmegaConf.is_interpolation(node, key) and not OmegaConf.is_missing(node, key):
                targets(node[key])

    schema(RootSchema, cfg)
    targets(cfg)


def closest_names(name: str, known: Iterable[str], n: int = 5) -> list[str]:
    """The (at most ``n``) names of ``known`` closest to ``name``, closest first."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=n, cutoff=0.6)
    alike = spelled_alike(name, known)  # Seed for seed: a ratio of 0.75 against 'speed'
    if alike is not None:
        close = [alike, *(c for c in close if c != alike)][:n]
    return close


def did_you_mean(name: str, known: Iterable[str], n: int = 5) -> str:
    """`` Did you mean: a, b?`` with the (at most ``n``) known names closest to ``name``
    (empty if none)."""
    close = closest_names(name, known, n)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def spelled_alike(name: str, known: Iterable[str]) -> str | None:
    """The one of ``known`` that ``name`` matches but for case, spaces, dashes and underscores
    (``'SDAT'`` and ``'sdat'``, ``'cdan-e'`` and ``'cdan_e'``, ``'Red '`` and ``'red'``), else None;
    None also when ``name`` is itself known. Catches the slips that ``did_you_mean``'s similarity
    ratio misses on short names."""

    def plain(text: str) -> str:
        return "_".join(str(text).replace("-", " ").replace("_", " ").split()).casefold()

    known = list(known)
    if name in known:
        return None
    return next((k for k in known if plain(k) == plain(name)), None)


#: the root keys that mic-train reads: the schema's and the config groups' (task, dataset, ...)
ROOT_KEYS = frozenset(RootSchema.model_fields) | {"task", "dataset", "model", "method", "scheduler"}
#: the root key that holds values of one's own (``+user.tag=baseline``), never checked
USER_KEY = "user"
#: the config groups whose chosen option's name the root config's defaults read
#: (``${method}_${task}``, ``${mic}_${task}``): replaced by an option, never by ``~task +task``
NAMED_GROUPS = ("task", "method", "mic")


def unread_keys(cfg: DictConfig) -> list[str]:
    """A problem for each root key that nothing reads (added with ``+key=...``, e.g. a typo
    such as ``+iteration=4`` or ``+mic.ratio=0.5``): not one of ``ROOT_KEYS`` nor
    ``USER_KEY``, and named by no interpolation of the config (``${key}`` or ``${key.x}``);
    a mapping ``experiment`` is an experiment file without ``# @package _global_``."""
    referenced = {key.split(".")[0] for key in _interpolated(cfg)}
    problems = []
    for key in cfg:
        if key in ROOT_KEYS or key == USER_KEY or key in referenced:
            continue
        if key == "experiment" and OmegaConf.is_dict(cfg[key]):
            keys = ", ".join(str(k) for k in cfg[key]) or "none"
            problems.append(
                f"experiment: the experiment file's settings ({keys}) were placed under "
                "experiment.<key>, where nothing reads them, because the file does not start "
                "with the line '# @package _global_'; add that line as its first line (as in "
                "mic's conf/experiment/*.yaml) so that its keys set the root config"
            )
            continue
        if key == "mic":
            hint = f" {mic_settings('.masker.ratio')}"
        else:
            hint = did_you_mean(str(key), sorted(ROOT_KEYS), n=3)
            hint += f" (A value of your own goes under {USER_KEY}: +{USER_KEY}.{key}=...)"
        problems.append(f"{key}: mic-train reads no such setting; it would change nothing.{hint}")
    return problems


#: the keys of ``eval.validation`` (build_validation reads them by name)
VALIDATION_KEYS = frozenset(ValidationSchema.model_fields)
#: the sections whose keys mic-train reads by name (not passed on to a constructor), and those keys
SECTION_KEYS: dict[str, frozenset[str]] = {
    "loader": frozenset(LoaderSchema.model_fields),
    "eval": frozenset(EvalSchema.model_fields),
    "eval.validation": VALIDATION_KEYS,
    "log": frozenset(LogSchema.model_fields),
    "checkpoint": frozenset(CheckpointSchema.model_fields),
}
#: the keys of ``dataset`` that mic-train reads by name; the others are read through
#: interpolations (``dataset.source.root=${dataset.root}``) or only document the data set
DATASET_KEYS = frozenset({"name", "source", "target", "test", "mic_block_size"})
#: the keys of ``method`` that mic-train reads by name; the others through interpolations
#: (``rare_class_sampling`` by the segmentation data sets)
METHOD_KEYS = frozenset({"name", "terms", "step"})
#: the sections whose keys added on the command line (``+method.x=1``) are judged: what
#: messages call each, and the keys mic-train reads by name
ADDED_KEYS = {"dataset": ("data set", DATASET_KEYS), "method": ("method", METHOD_KEYS)}


def interpolated_paths(cfg: DictConfig) -> tuple[set[str], set[str]]:
    """The paths that the config's interpolations read.

    Args:
        cfg: a config, resolved or not; where mic-train runs, Hydra's own config is read too.

    Returns:
        ``(absolute, relative)``: the dotted paths that interpolations name
        (``${dataset.root}``, ``${oc.select:dataset.mic_block_size,64}`` -> ``dataset.root``,
        ``dataset.mic_block_size``), and the last names of the relative ones (``${..root}`` ->
        ``root``).
    """
    text = str(_raw(cfg))
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            text += str(OmegaConf.to_container(HydraConfig.get(), resolve=False))
    except Exception:  # no Hydra config to read: the run's own config alone
        pass
    absolute = set(re.findall(r"\$\{(?:[\w.]+:)?([A-Za-z_][\w.]*)", text))
    relative = set(re.findall(r"\$\{(?:[\w.]+:)?\.+([A-Za-z_]\w*)", text))
    return absolute, relative


def command_line_additions() -> list[str]:
    """The keys that the command line adds (``+dataset.x=1``, ``++dataset.x=1`` ->
    ``dataset.x``) where mic-train runs (Hydra's overrides); empty outside it."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return []
        overrides = list(HydraConfig.get().overrides.task)
    except Exception:  # no overrides to read
        return []
    return [m.group(1) for o in overrides if (m := re.match(r"\+\+?([\w.]+)=", str(o)))]


def _config_file(group: str, name: str) -> Any:
    """Config ``<group>/<name>.yaml`` as Hydra's search path finds it where mic-train runs
    (the bundled configs, ``--config-dir``, ``hydra.searchpath``); None: not found."""
    from hydra.core.hydra_config import HydraConfig

    for source in HydraConfig.get().runtime.config_sources:
        try:
            if source.schema == "file":
                path = os.path.join(source.path, group, f"{name}.yaml")
                if os.path.isfile(path):
                    return OmegaConf.load(path)
            elif source.schema == "pkg":
                found = importlib.resources.files(source.path).joinpath(group, f"{name}.yaml")
                if found.is_file():
                    return OmegaConf.create(found.read_text())
        except Exception:  # (a source that cannot be read: Hydra names it if it matters)
            continue
    return None


def _with_bases(group: str, name: str) -> list[tuple[str, Any]]:
    """``<group>/<name>.yaml`` and the configs of the same group its defaults build on."""
    found, todo = [], [name]
    while todo:
        name = todo.pop()
        node = _config_file(group, name) if name not in {n for n, _ in found} else None
        if not OmegaConf.is_dict(node):
            continue
        found.append((name, node))
        for entry in node.get("defaults") or []:  # ("_self_", "override /x: y": not its own)
            if isinstance(entry, str) and entry.startswith(f"/{group}/"):  # (/dataset/x@_here_)
                entry = entry[len(group) + 2 :]
            if isinstance(entry, str) and entry != "_self_" and "/" not in entry:
                todo.append(entry.split("@")[0])
    return found


def experiment_dataset_keys() -> dict[str, str]:
    """The keys of ``dataset`` that the chosen experiment file (or one it builds on) sets and
    the chosen dataset's own config file (with its bases) does not define, each with the
    file that sets it, where mic-train runs; a misspelt key there (``crop_sise``) changed
    nothing, where the same key on the command line is refused."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return {}
        choices = HydraConfig.get().runtime.choices
        experiment, dataset = choices.get("experiment"), choices.get("dataset")
        if experiment in (None, "none") or dataset is None:
            return {}
        own = {str(k) for _, node in _with_bases("dataset", dataset) for k in node}
        found: dict[str, str] = {}
        for name, node in _with_bases("experiment", experiment):
            data = node.get("dataset")
            for key in data if OmegaConf.is_dict(data) else ():
                if str(key) not in own:
                    found.setdefault(f"dataset.{key}", f"experiment/{name}.yaml")
        return found
    except Exception:  # nothing to judge by: the command line's keys alone
        return {}


def unread_section_keys(cfg: DictConfig, added: Iterable[str] | None = None) -> list[str]:
    """A problem for each key of a section that mic-train reads by name (``SECTION_KEYS``:
    ``+eval.intervall=1``, ``+eval.validation.batch=2``) that it does not read, and for each key
    that the command line adds to ``dataset`` or ``method`` (``+dataset.mic_block=8``,
    ``+method.rare_clas_sampling=false``) that neither mic-train (``ADDED_KEYS``) nor an
    interpolation reads; with the closest names.

    Keys of ``dataset`` that its config file defines are not judged: some only document the
    data set (``protocol``), others are read by an interpolation of one option only
    (``thing_classes`` by ``method=daformer``); those that an experiment file adds are
    (``experiment_dataset_keys``), as the command line's.

    Args:
        cfg: the composed config.
        added: the keys that the command line adds (``dataset.x`` for ``+dataset.x=1``);
            None: Hydra's overrides where mic-train runs (``command_line_additions``).
    """
    absolute, relative = interpolated_paths(cfg)

    def read(path: str) -> bool:
        name = path.rsplit(".", 1)[-1]
        return name in relative or any(a == path or a.startswith(path + ".") for a in absolute)

    problems = []
    for section, known in SECTION_KEYS.items():
        node = OmegaConf.select(cfg, section, default=None)
        if not OmegaConf.is_dict(node):
            continue
        for key in node:
            where = f"{section}.{key}"
            if key in known or read(where):
                continue
            hint = did_you_mean(str(key), sorted(known), n=3) or (
                f" The settings of {section} are: {', '.join(sorted(known))}."
            )
            problems.append(
                f"{where}: mic-train reads no such setting; it would change nothing.{hint}"
            )
    origins = experiment_dataset_keys() if added is None else {}
    added = command_line_additions() if added is None else list(added)
    for path in [*added, *(k for k in origins if k not in added)]:
        section, _, key = path.partition(".")
        called, known = ADDED_KEYS.get(section, ("", frozenset()))
        node = cfg.get(section) if called else None
        if not OmegaConf.is_dict(node) or "." in key or key in known or read(path):
            continue
        hint = did_you_mean(key, sorted(str(k) for k in node if k != key), n=3)
        where = f" (set in {origins[path]})" if path in origins and path not in added else ""
        problems.append(
            f"{path}{where}: mic-train reads no such setting of the {called}, and no "
            f"interpolation (${{{path}}}) reads it; it would change nothing.{hint}"
        )
    return problems


def mic_settings(rest: str) -> str:
    """Where MIC's setting ``mic<rest>`` lives: ``mic`` is the group that chooses MIC's config,
    which is placed at ``method.terms.mic``."""
    return (
        f"MIC's settings live under method.terms.mic (method.terms.mic{rest}=...; mic=... "
        "chooses MIC's config)"
    )


def _missing(node: Any, path: str = "") -> list[str]:
    """The keys given as ``???`` (where a user sets them; interpolations not followed)."""
    found: list[str] = []
    if OmegaConf.is_dict(node):
        keys: list[Any] = list(node.keys())
    elif OmegaConf.is_list(node):
        keys = list(range(len(node)))
    else:
        return found
    for key in keys:
        where = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}".lstrip(".")
        if OmegaConf.is_missing(node, key):
            found.append(where)
        elif not OmegaConf.is_interpolation(node, key):
            found += _missing(node[key], where)
    return found


def _raw(cfg: DictConfig) -> Any:
    """The config as plain containers, interpolations kept as written."""
    return OmegaConf.to_container(cfg, resolve=False)


def _interpolated(cfg: DictConfig) -> set[str]:
    """The keys the config's interpolations name, as written: ``dataset.root`` for
    ``${dataset.root}`` and ``${oc.select:dataset.root,x}``, ``mic.block_for`` for a resolver
    called without a key."""
    return set(re.findall(r"\$\{(?:[\w.]+:)?([A-Za-z_][\w.]*)", str(_raw(cfg))))


def _task_of(target: Any) -> str | None:
    """``segmentation`` for ``mic.tasks.segmentation.X``; None outside ``mic.tasks``."""
    found = re.match(r"mic\.tasks\.(\w+)\.", str(target or ""))
    return found.group(1) if found else None


def _data_task(target: Any) -> str | None:
    """The task of a labelled data set's reader: ``detection`` / ``segmentation`` for those
    subpackages of ``mic.datasets``, ``classification`` for the other readers of
    ``mic.datasets``; None outside it and for the unlabelled ``UnlabeledImageFolder``."""
    name = str(target or "")
    found = re.match(r"mic\.datasets\.(detection|segmentation)\.", name)
    if found:
        return found.group(1)
    generic = name.endswith(".UnlabeledImageFolder")
    return "classification" if name.startswith("mic.datasets.") and not generic else None


def task_mismatches(cfg: DictConfig) -> list[str]:
    """A problem for the data set, the model and each loss term of another task than the
    config's (``method=dacs`` on digits: ClassMix is a segmentation term), with the data sets,
    methods and models that fit; nothing for a task, reader, model or term of one's own
    (outside ``mic.tasks`` and ``mic.datasets``)."""
    raw = _raw(cfg)
    task = _task_of((raw.get("task") or {}).get("_target_"))
    if task is None:
        return []
    problems = []
    dataset = raw.get("dataset") or {}
    source = dataset.get("source") if isinstance(dataset, dict) else None
    reader = source.get("_target_") if isinstance(source, dict) else None  # not ${...}
    if _data_task(reader) not in (None, task):
        name = dataset.get("name", "the data set")
        problems.append(_other_task("dataset", name, _data_task(reader), task, " or experiment,"))
    model = (raw.get("model") or {}).get("_target_")
    if _task_of(model) not in (None, task):
        problems.append(_other_task("model", model, _task_of(model), task))
    terms = ((raw.get("method") or {}).get("terms")) or {}
    targets = {n: t.get("_target_") for n, t in terms.items() if isinstance(t, dict)}
    mic = targets.pop("mic", None)  # placed there by the mic option, not by the method
    other = _task_of(mic) not in (None, task)
    generic = mic == "mic.MaskedImageConsistency" and _task_forms("mic", task)  # (block_vit:
    if other or generic:  # the generic term, without the task's fill, weighting and parts)
        fitting = ", ".join(f"mic={o}" for o in [*_options("mic", task), "none"])
        said = (
            f"this mic option's term ({mic}) is a {_task_of(mic)} term but the task is {task}"
            if other
            else f"this mic option is a classification recipe's (the generic {mic}), which has "
            f"no {task} form"
        )
        problems.append(f"mic: {said}; choose a {task} MIC option ({fitting})")
    foreign = [
        f"{n} ({t}, {_task_of(t)})" for n, t in targets.items() if _task_of(t) not in (None, task)
    ]
    if foreign:
        fitting = _options("method", task)
        problems.append(
            f"method: loss terms of another task than {task}: {', '.join(foreign)}; choose a "
            f"{task} method ({', '.join(f'method={m}' for m in fitting)})"
        )
    return problems


def _other_task(group: str, name: str, its: Any, task: str, also: str = "") -> str:
    """The problem of ``group``'s ``name``, of task ``its``, in a run of ``task``, with the
    options of mic's configs that fit (``also``: what else may replace it)."""
    kind = "data set" if group == "dataset" else group
    fitting = ", ".join(f"{group}={o}" for o in _options(group, task))
    return (
        f"{group}: {name} is a {its} {kind} but the task is {task}; choose a {task} {kind} "
        f"({fitting}){also} or set task={its}"
    )


def group_options(group: str) -> list[str]:
    """The options of one of mic's config groups (``optimizer`` -> adam, adamw, sgd), sorted;
    files starting with ``_`` (shared bases) are none."""
    import importlib.resources

    folder = importlib.resources.files("mic.conf") / group
    names = [p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")]
    return sorted(n for n in names if not n.startswith("_"))


def _options(group: str, task: str) -> list[str]:
    """The options of mic's config ``group`` that fit ``task``: a model or method whose
    objects all do (every ``_target_`` in it generic or of that task), a data set whose
    labelled source's reader is of that task."""
    import importlib.resources

    fitting = []
    folder = importlib.resources.files("mic.conf") / group
    forms = _task_forms("mic", task) if group == "mic" else set()  # (mic=block on detection:
    # mic_task/block_detection; a method's forms, as mean teacher's, add to the generic ones)
    for name in group_options(group):
        path = folder / f"{name}.yaml"
        if forms:
            fits = name in forms
        elif group == "dataset":
            fits = _data_task(_source_reader(folder, name)) == task
        else:  # with the options its defaults list names in the group (cdan_e: cdan)
            text = path.read_text()
            bases = [folder / f"{b}.yaml" for b in re.findall(r"^\s*-\s*(\w+)\s*$", text, re.M)]
            text += "".join(b.read_text() for b in bases if b.is_file())
            targets = re.findall(r"_target_:\s*([\w.]+)", text)
            fits = bool(targets) and all(_task_of(t) in (None, task) for t in targets)
        if fits:
            fitting.append(name)
    return fitting


def _task_forms(group: str, task: str) -> set[str]:
    """The options of ``group`` with a form of their own for ``task``
    (``<group>_task/<option>_<task>.yaml``); where a task has some MIC forms, only those (and
    none) fit it."""
    import importlib.resources

    folder = importlib.resources.files("mic.conf") / f"{group}_task"
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    ending = f"_{task}.yaml"
    return {n.removesuffix(ending) for n in names if n.endswith(ending)}


def _source_reader(folder: Any, name: str) -> str | None:
    """The ``_target_`` of the labelled source of the data set config ``name`` in ``folder``,
    its own or that of the configs it extends (its ``defaults``)."""
    cfg = OmegaConf.create((folder / f"{name}.yaml").read_text())
    source = cfg.get("source")
    if OmegaConf.is_dict(source) and "_target_" in source:
        return str(source["_target_"])
    extended = [d for d in cfg.get("defaults", []) if isinstance(d, str) and d != "_self_"]
    return next(filter(None, (_source_reader(folder, d) for d in extended)), None)


#: the loss-weight keys of a loss term (``method.terms.<name>.<key>``): ``weight`` and
#: ``<part>_weight``; ``part_weights`` holds one per part of the task's loss
_WEIGHT = re.compile(r"(.+_)?weight")


def term_weight_problems(cfg: DictConfig) -> list[str]:
    """A problem for each loss weight of a term of ``method.terms`` (``weight``,
    ``image_weight``, ..., each value of ``part_weights``) that is a negative or non-finite
    number: a negative weight makes training maximise its loss (gradient ascent)."""
    terms = OmegaConf.select(cfg, "method.terms", default=None)
    if not OmegaConf.is_dict(terms):
        return []
    problems = []
    for name, term in terms.items_ex(resolve=False):
        if not OmegaConf.is_dict(term):
            continue
        found = [(f"{k}", term[k]) for k in term if _WEIGHT.fullmatch(str(k))]
        parts = term.get("part_weights")
        if OmegaConf.is_dict(parts):
            found += [(f"part_weights.{k}", parts[k]) for k in parts]
        for key, value in found:  # text and the like: flag_problems or the term judges it
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if key == "weight" and value is None:  # a term's own weight has no "unset"
                problems.append(
                    f"method.terms.{name}.weight: a loss weight must be a finite number >= 0, "
                    "got null (0 switches the loss off)"
                )
            elif key.startswith("part_weights.") and not number:  # (met at the first
                problems.append(  # pseudo-boxes: after iteration 2000 of det_shapes)
                    f"method.terms.{name}.{key}: a loss part's weight must be a finite number "
                    f">= 0 (got {value!r}; 0 switches the part off)"
                )
            elif number and not (math.isfinite(value) and value >= 0):
                problems.append(
                    f"method.terms.{name}.{key}: a loss weight must be a finite number >= 0 "
                    f"(got {value!r}): "
                    + (
                        "a negative one makes training maximise its loss"
                        if value < 0
                        else "NaN or infinity makes every weight NaN at the first step"
                    )
                    + "; set it >= 0 (0 switches the loss off)"
                )
    return problems


def lr_mult_problems(cfg: DictConfig) -> list[str]:
    """A problem for each learning-rate multiplier (``lr_mult``) that is not a finite number
    >= 0 (``mic.training.optim.lr_mult_problems``), found before anything is built."""
    from mic.training.optim import lr_mult_problems as problems_of

    node = cfg.get("lr_mult")
    return (
        problems_of(OmegaConf.to_container(node, resolve=True)) if OmegaConf.is_dict(node) else []
    )


def block_size_problems(cfg: DictConfig) -> list[str]:
    """A problem for ``dataset.mic_block_size`` (the side of MIC's masking blocks, read by the
    mic options' ``${oc.select:dataset.mic_block_size,...}`` and by the label-free
    validators' masker) that is no whole number >= 1; its value as resolved
    (``${mic.block_for:${dataset.size}}`` gives the number for the images' size). Left out:
    the mic option's own default; null is refused (``oc.select`` would pass it on as the
    block size)."""
    dataset = cfg.get("dataset")
    if not OmegaConf.is_dict(dataset) or "mic_block_size" not in dataset:
        return []
    key = "dataset.mic_block_size"
    fix = "MIC's block side is a whole number of pixels >= 1, e.g. dataset.mic_block_size=8"
    try:
        value = dataset.mic_block_size
    except Exception as e:  # an interpolation that cannot be resolved (dataset.size=abc)
        written = _raw(dataset).get("mic_block_size")
        return [f"{key}: {written} gives no block size ({e}); {fix}"]
    if not isinstance(value, (int, float)) or isinstance(value, bool):  # null too: no default
        why = "Input should be a valid integer"
    elif not float(value).is_integer():
        why = "Input should be a valid integer, got a number with a fractional part"
    elif value < 1:
        why = "Input should be greater than or equal to 1"
    else:
        return []
    return [f"{key}: {why} (got {value!r}); {fix}"]


def image_size_problems(cfg: DictConfig) -> list[str]:
    """A problem for ``dataset.size`` (the side, in px, of the images the transforms give,
    read by the bundled dataset configs' transforms and MIC block) that is no whole number
    >= 1: 0 or less gives empty images, whose first convolution fails mid-run, and a
    fraction would be passed on to the transforms as given."""
    value = _dataset_value(cfg, "size")
    if value is _UNSET or is_whole(value):
        return []
    return [
        f"dataset.size: the images' side must be a whole number of pixels >= 1 (got "
        f"{value!r}); e.g. dataset.size=224 (the published classification recipes' crop)"
    ]


def detail_crop_problems(cfg: DictConfig) -> list[str]:
    """A problem for HRDA's ``model.detail_crop`` larger than the training images
    (``dataset.crop_size``, else the bundled configs' square ``dataset.size``), which the
    model refuses at its first forward, after a data check that may take minutes."""
    try:
        detail = OmegaConf.select(cfg, "model.detail_crop", default=None)
        detail = OmegaConf.to_container(detail) if OmegaConf.is_config(detail) else detail
    except Exception:  # an interpolation of one's own: judged where it is read
        return []
    crop = _dataset_value(cfg, "crop_size")
    size = _dataset_value(cfg, "size")
    crop = [size, size] if crop in (None, _UNSET) and is_whole(size) else crop
    pairs = [v for v in (detail, crop) if isinstance(v, list) and len(v) == 2]
    if len(pairs) < 2 or not all(is_whole(s) for s in (*detail, *crop)):
        return []  # (the values themselves are judged where they are read)
    if all(d <= c for d, c in zip(detail, crop, strict=True)):
        return []
    return [
        f"model.detail_crop: the HRDA detail crop {detail} is larger than the training images "
        f"{crop}; set model.detail_crop to at most the training images' size (published: half "
        "of the 1024 px crop, 512)"
    ]


def context_scale_problems(cfg: DictConfig) -> list[str]:
    """A problem for HRDA's ``model.context_scale`` that gives the training crops
    (``dataset.crop_size``, else the bundled configs' square ``dataset.size``) a context image
    of no whole number of pixels, which the model refuses at its first forward, after the
    data check and the start of training (``HRDA._check_context`` says the same)."""
    from fractions import Fraction

    target = OmegaConf.select(cfg, "model._target_", default="", throw_on_resolution_failure=False)
    if not str(target).endswith(".HRDA"):  # (a model of one's own may mean another scale)
        return []
    scale = OmegaConf.select(
        cfg, "model.context_scale", default=None, throw_on_resolution_failure=False
    )
    crop, size = _dataset_value(cfg, "crop_size"), _dataset_value(cfg, "size")
    crop = [size, size] if crop in (None, _UNSET) and is_whole(size) else crop
    real = isinstance(scale, (int, float)) and not isinstance(scale, bool) and 0 < scale <= 1
    if not real or not isinstance(crop, list) or len(crop) != 2 or not all(map(is_whole, crop)):
        return []  # (the values themselves are judged where they are read)
    sides = [side * scale for side in crop]
    if all(float(side).is_integer() for side in sides):
        return []
    step = Fraction(scale).limit_denominator(1000).denominator
    fit = [step * math.ceil(side / step) for side in crop]
    return [
        f"model.context_scale: {scale:g} of the {crop[0]} x {crop[1]} training images gives a "
        f"{sides[0]:g} x {sides[1]:g} px context image, not a whole number of pixels: give "
        f"training crops whose sides are multiples of {step} (e.g. {fit}: dataset.crop_size, "
        "or dataset.size for the bundled street scenes), or another scale"
    ]


def dataset_value_problems(cfg: DictConfig) -> list[str]:
    """A problem for each of the bundled data set configs' shared values that its readers
    would fail on with a bare Python error, or blame another key for: ``dataset.num_classes``
    no whole number >= 1, ``dataset.crop_size`` neither null nor two whole numbers >= 1
    (height, width), ``dataset.label_mapping`` neither null nor a mapping."""
    problems = []
    classes = _dataset_value(cfg, "num_classes")
    if classes is not _UNSET and not is_whole(classes):
        problems.append(
            f"dataset.num_classes: the number of classes must be a whole number >= 1 (got "
            f"{classes!r}); e.g. dataset.num_classes=19"
        )
    crop = _dataset_value(cfg, "crop_size")
    pair = isinstance(crop, (list, tuple)) and len(crop) == 2 and all(is_whole(c) for c in crop)
    if crop is not _UNSET and crop is not None and not pair:
        problems.append(
            f"dataset.crop_size: a crop is [height, width], two whole numbers of pixels >= 1 "
            f"(got {crop!r}); e.g. dataset.crop_size=[512,512], or null for no crop"
        )
    mapping = _dataset_value(cfg, "label_mapping")
    if mapping is not _UNSET and mapping is not None and not isinstance(mapping, dict):
        text = isinstance(mapping, str) and mapping.strip().startswith("{")
        problems.append(
            f"dataset.label_mapping: must map stored label values to training ids (got "
            f"{mapping!r}); e.g. dataset.label_mapping='{{255: 1}}' (quoted, for the shell), "
            "or null"
            if not text
            else f"dataset.label_mapping: must map stored label values to training ids, got "
            f"the text {mapping!r}, a quoted value: on the command line the quotes inside the "
            "override reached Hydra, which reads a quoted value as text (quote the whole "
            f"override for the shell instead: 'dataset.label_mapping={mapping.strip()}'); in a "
            "config file, write the mapping without quotes"
        )
    return problems


def _class_folders_hint(cfg: DictConfig, missing: list[str]) -> str:
    """``; the source folder '<root>' holds N class folders (dataset.num_classes=N)`` when
    ``dataset.num_classes`` is missing and ``dataset.root_source`` is a folder of class
    folders (``dataset=folders``); empty otherwise."""
    root = _dataset_value(cfg, "root_source") if "dataset.num_classes" in missing else _UNSET
    if not isinstance(root, str) or not os.path.isdir(os.path.expanduser(root)):
        return ""
    from mic.datasets.files import is_hidden_name  # (the class-per-folder reader's rule)

    entries = os.scandir(os.path.expanduser(root))
    folders = [e for e in entries if e.is_dir() and not is_hidden_name(e.name)]
    if not folders:
        return ""
    return (
        f"; the source folder '{root}' holds {len(folders)} class folders "
        f"(dataset.num_classes={len(folders)})"
    )


#: a data set config value that is absent, or an interpolation of one's own (judged where read)
_UNSET = object()


def _dataset_value(cfg: DictConfig, key: str) -> Any:
    """``dataset.<key>`` resolved, as plain types; ``_UNSET`` when absent or unresolvable."""
    dataset = cfg.get("dataset")
    if not OmegaConf.is_dict(dataset) or key not in dataset or OmegaConf.is_missing(dataset, key):
        return _UNSET
    try:
        value = dataset[key]
    except Exception:  # an interpolation of one's own: judged where it is read
        return _UNSET
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def normalization_problems(cfg: DictConfig) -> list[str]:
    """A problem for ``dataset.mean`` / ``dataset.std`` (the images' normalisation, used by the
    transforms and by the method's augmentation and masking) that would fail or mislead in the
    middle of a run: not a list of finite numbers, one of them null and not the other, a
    standard deviation <= 0 (a division by it: NaN), or a length that fits no image channels:
    mean and std give one value per channel (or one for all), and mic's readers give RGB
    images (3 channels); for readers of one's own, mean and std of two lengths."""
    dataset = cfg.get("dataset")
    if not OmegaConf.is_dict(dataset) or "mean" not in dataset or "std" not in dataset:
        return []
    values = {k: dataset[k] for k in ("mean", "std")}
    values = {
        k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in values.items()
    }
    if values["mean"] is None and values["std"] is None:
        return []
    if (values["mean"] is None) != (values["std"] is None):
        null = "mean" if values["mean"] is None else "std"
        return [
            f"dataset.{null}: null, but dataset.{'std' if null == 'mean' else 'mean'} is not; "
            "give both (the images are normalised by them) or set both to null (images in [0, 1])"
        ]
    problems = []
    for key, value in values.items():
        numbers = isinstance(value, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
        if not numbers or not value:
            problems.append(
                f"dataset.{key}: must be a list of finite numbers, one per image channel (got "
                f"{value!r}); e.g. dataset.{key}=[0.5,0.5,0.5]"
            )
        elif key == "std" and min(value) <= 0:
            problems.append(
                f"dataset.std: every value must be above 0 (got {value!r}): the images are "
                "divided by it, so the run would get NaN or Inf losses; set the spread of each "
                "channel, e.g. dataset.std=[0.229,0.224,0.225]"
            )
    if problems:
        return problems
    readers = [
        (dataset.get(split) or {}).get("_target_")
        if OmegaConf.is_dict(dataset.get(split))
        else None
        for split in ("source", "target", "test")
    ]
    lengths = {k: len(v) for k, v in values.items()}
    if all(str(r).startswith("mic.datasets.") for r in readers):
        for key, n in lengths.items():
            if n not in (1, 3):
                problems.append(
                    f"dataset.{key}: gives {n} values (got {values[key]!r}), but it needs one "
                    f"per image channel and mic's readers give RGB images, of 3 channels; give 3 "
                    f"values (or 1 for all channels), e.g. dataset.{key}=[0.5,0.5,0.5]"
                )
    elif len({n for n in lengths.values() if n != 1}) > 1:
        problems.append(
            f"dataset.mean: gives {lengths['mean']} values but dataset.std {lengths['std']}; "
            "give each one value per image channel (or one for all channels)"
        )
    return problems


def scheduler_problems(cfg: DictConfig) -> list[str]:
    """The problem of the ``scheduler`` settings (``scheduler.power=abc``), found by building
    the schedule when it is one of mic's (``mic.training.optim``: pure, cheap), so that it is
    named with the other bad values before any data is read; nothing for a schedule of
    one's own (built, and judged, when the run is)."""

    from hydra.utils import instantiate

    node = cfg.get("scheduler")
    target = node.get("_target_") if OmegaConf.is_dict(node) else None
    try:
        obj = _get_object(str(target))
    except Exception:  # no such class: instantiate reports it
        return []
    if getattr(obj, "__module__", "") != "mic.training.optim":
        return []
    quiet = logging.getLogger(obj.__module__)  # its warnings are logged when the run builds it
    was, quiet.disabled = quiet.disabled, True
    try:
        instantiate(node)
    except Exception as e:
        cause = next((c for c in exception_chain(e) if isinstance(c, ConfigError)), None)
        return [str(cause)] if cause is not None else []
    finally:
        quiet.disabled = was
    return []


def exception_chain(exc: BaseException) -> Iterable[BaseException]:
    """``exc``, then what it was raised from or during, and so on (through the wrappers of
    Hydra and of DataLoader workers)."""
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def check_eval_models(cfg: DictConfig, uses_pseudo_labels: bool) -> None:
    """Refuse ``eval.models`` led by ``teacher`` when the method has no teacher (no loss term
    uses pseudo-labels: ``method=source_only mic=none``): nothing of it would be evaluated, and
    best.pt, which follows the first model, would never be chosen. ``[student, teacher]`` (the
    default) evaluates the student alone.

    Args:
        cfg: the composed config.
        uses_pseudo_labels: whether the built method uses pseudo-labels
            (``UDAMethod.uses_pseudo_labels``), i.e. has a teacher.

    Raises:
        ConfigError: naming eval.models, the method and its terms, and what to set.
    """
    models = [str(m) for m in cfg.eval.models]
    if uses_pseudo_labels or not models or models[0] != "teacher":
        return
    terms = [str(n) for n, t in (cfg.method.get("terms") or {}).items() if t]
    others = [m for m in models if m != "teacher"] or ["student"]
    raise ConfigError(
        f"eval.models=[{', '.join(models)}] starts with teacher, but method="
        f"{cfg.method.get('name', '?')} (terms: {', '.join(terms) or 'none'}) has no teacher: "
        "none of its loss terms uses pseudo-labels, so no teacher is built or evaluated and "
        "best.pt, which follows the first of eval.models, would never be chosen; set "
        f"eval.models=[{', '.join(others)}], or add a term with a teacher (e.g. mic=block)"
    )


#: the config sections every run instantiates
BUILT = ("task", "model", "dataset.source", "dataset.target")


def missing_values(cfg: DictConfig) -> str | None:
    """The message naming every mandatory value (``???``) of ``cfg`` that is not given, each
    where the user sets it (not where it is read); None if none. A data set's own value that
    nothing reads is not needed (``dataset=folders``' ``root_test`` without a test set)."""
    missing = _missing(cfg)
    if any(k.startswith("dataset.") for k in missing):
        read = _interpolated(cfg)
        missing = [
            k
            for k in missing
            if not k.startswith("dataset.") or any(r == k or r.startswith(f"{k}.") for r in read)
        ]
    if not missing:
        return None
    return (
        f"{len(missing)} mandatory value{'s are' if len(missing) > 1 else ' is'} not "
        f"given: {', '.join(missing)}; set {'them' if len(missing) > 1 else 'it'} on the "
        f"command line (e.g. {missing[0]}=...){_class_folders_hint(cfg, missing)}"
    )


def check_config(cfg: DictConfig) -> None:
    """Decode, in place, the values read from environment variables (``decode_env``), then
    check the root keys of a composed config (``unread_keys``, then their types and
    ranges), the keys of the sections mic-train reads by name (``unread_section_keys``), the
    task of its model and loss terms (``task_mismatches``), the loss weights
    (``term_weight_problems``), the learning-rate multipliers (``lr_mult_problems``), the
    images' normalisation (``normalization_problems``), the images' size
    (``image_size_problems``), MIC's block size (``block_size_problems``, when the size is
    good), the data set configs' class count, crop and label mapping
    (``dataset_value_problems``), HRDA's detail crop (``detail_crop_problems``) and context
    scale (``context_scale_problems``), the
    schedule's settings (``scheduler_problems``), and the
    true / false and number arguments of every object it builds (``flag_problems``).

    Raises:
        ConfigError: one paragraph naming every key whose value has the wrong type or lies
            out of range, with what was given; every key that nothing reads; a model or
            loss term of another task.
    """
    decode_env(cfg)
    absent = [k for k in BUILT if OmegaConf.select(cfg, k, default=None) is None]
    if absent:  # null, or deleted (~dataset.target) without a replacement
        deleted = OmegaConf.select(cfg, absent[0], default=_UNSET) is _UNSET
        raise ConfigError(
            f"{', '.join(absent)} {'are' if len(absent) > 1 else 'is'} not set, but every run "
            f"builds {'them' if len(absent) > 1 else 'it'}: give "
            f"{'each' if len(absent) > 1 else 'one'} on the command line, e.g. "
            f"{'+' * deleted}{absent[0]}={{_target_: mypkg.MyClass, ...}} (docs/"
            f"{'own_dataset' if absent[0].startswith('dataset') else 'new_task'}.md)"
        )
    unset = missing_values(cfg)
    if unset:
        raise ConfigError(unset)
    problems = [*unread_keys(cfg), *unread_section_keys(cfg), *task_mismatches(cfg)]
    data = {}
    for key in RootSchema.model_fields:
        if key in cfg:
            value = cfg[key]  # interpolations resolved
            data[key] = (
                OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
            )
    try:
        RootSchema.model_validate(data)
    except ValidationError as e:
        for error in e.errors():
            key = ".".join(str(p) for p in error["loc"]) or "config"
            message = error["msg"].replace("Value error, ", "")
            # a section given one value (loader=8): no word of the schema's class names
            message = re.sub(
                r"a valid dictionary or instance of \w+Schema",
                f"a group of settings ({key}.<name>=value; mic-train --cfg job lists them)",
                message,
            )
            problems.append(f"{key}: {message} (got {error.get('input')!r})")
    problems += [*term_weight_problems(cfg), *lr_mult_problems(cfg), *normalization_problems(cfg)]
    problems += image_size_problems(cfg) or block_size_problems(cfg)  # a block from the size
    problems += [*dataset_value_problems(cfg), *detail_crop_problems(cfg)]
    problems += context_scale_problems(cfg)
    problems += [*scheduler_problems(cfg), *flag_problems(cfg), *step_problems(cfg)]
    first: dict[str, str] = {}  # one problem per key: flag_problems judges a schedule's too
    for problem in problems:
        first.setdefault(problem.split(":")[0], problem)
    problems = kept_option_hint(cfg, list(first.values()))
    if problems:
        raise ConfigError(
            f"{len(problems)} config value{'s are' if len(problems) > 1 else ' is'} not "
            f"valid: {'; '.join(problems)}"
        ) from None
    whole_numbers_as_ints(cfg)
