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
import inspect
import math
import re
import typing
from collections.abc import Iterable
from typing import Any, Literal

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from mic.core import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow")


class TeacherSchema(_Section):
    alpha: float = Field(ge=0.0, le=1.0)
    buffers: Literal["own", "ema", "copy"] = "own"
    norm: Literal["batch", "running"] = "batch"


class LoaderSchema(_Section):
    source_batch_size: int = Field(ge=1)
    target_batch_size: int = Field(ge=1)
    test_batch_size: int = Field(ge=1)
    num_workers: int = Field(ge=0)


class EvalSchema(_Section):
    interval: int = Field(ge=0)
    models: list[Literal["student", "teacher"]] = Field(min_length=1)
    adabn_batches: int = Field(ge=0)


class LogSchema(_Section):
    interval: int = Field(ge=1)
    tensorboard: bool
    progress: bool


class CheckpointSchema(_Section):
    interval: int = Field(ge=0)
    keep: int = Field(ge=1)


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
    seed: int = Field(ge=0)
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
    preflight: bool = True
    lr_mult: dict[str, Any] | None = None
    no_weight_decay: list[str] = []
    teacher: TeacherSchema
    loader: LoaderSchema
    eval: EvalSchema
    log: LogSchema
    checkpoint: CheckpointSchema
    optimizer: OptimizerSchema

    @field_validator("device")
    @classmethod
    def _a_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError("must be auto, cpu, cuda, cuda:<index> or mps")
        return value

    @field_validator("adaptation_start")
    @classmethod
    def _within_the_run(cls, value: int, info: ValidationInfo) -> int:
        iterations = info.data.get("iterations")
        if iterations is not None and value > iterations:
            raise ValueError(f"must lie in [0, iterations={iterations}]")
        return value


def _flags(target: str) -> set[str]:
    """The arguments of ``target`` (a class or function path) annotated ``bool``."""
    try:
        obj = get_object(target)
        fn = obj.__init__ if inspect.isclass(obj) else obj
        hints = typing.get_type_hints(fn)
    except Exception:  # an unresolvable target or annotation: instantiate reports the former
        return set()
    return {name for name, hint in hints.items() if hint is bool}


def flag_problems(node: Any, path: str = "") -> list[str]:
    """``key: must be true or false (got ...)`` for every argument of a ``_target_`` node
    (at any depth) that its class or function annotates ``bool`` and the config gives another
    value."""
    problems: list[str] = []
    if OmegaConf.is_dict(node):
        target = node.get("_target_")
        flags = _flags(str(target)) if isinstance(target, str) else set()
        for key in node:
            if OmegaConf.is_missing(node, key) or OmegaConf.is_interpolation(node, key):
                continue
            value = node[key]
            where = f"{path}.{key}" if path else str(key)
            if key in flags and value is not None and not isinstance(value, bool):
                problems.append(f"{where}: must be true or false (got {value!r})")
            problems += flag_problems(value, where)
    elif OmegaConf.is_list(node):
        for i, item in enumerate(node):
            problems += flag_problems(item, f"{path}[{i}]")
    return problems


def did_you_mean(name: str, known: Iterable[str], n: int = 5) -> str:
    """`` Did you mean: a, b?`` with the (at most ``n``) known names closest to ``name``
    (empty if none)."""
    close = difflib.get_close_matches(name, list(known), n=n, cutoff=0.6)
    return f" Did you mean: {', '.join(close)}?" if close else ""


#: the root keys that mic-train reads: the schema's and the config groups' (task, dataset, ...)
ROOT_KEYS = frozenset(RootSchema.model_fields) | {"task", "dataset", "model", "method", "scheduler"}
#: the root key that holds values of one's own (``+user.tag=baseline``), never checked
USER_KEY = "user"


def unread_keys(cfg: DictConfig) -> list[str]:
    """A problem for each root key that nothing reads (added with ``+key=...``, e.g. a typo
    such as ``+iteration=4`` or ``+mic.ratio=0.5``): not one of ``ROOT_KEYS`` nor
    ``USER_KEY``, and named by no interpolation of the config (``${key}`` or ``${key.x}``)."""
    referenced = set(re.findall(r"\$\{(?:[\w.]+:)?([A-Za-z_]\w*)", str(_raw(cfg))))
    problems = []
    for key in cfg:
        if key in ROOT_KEYS or key == USER_KEY or key in referenced:
            continue
        if key == "mic":
            hint = f" {mic_settings('.masker.ratio')}"
        else:
            hint = did_you_mean(str(key), sorted(ROOT_KEYS), n=3)
            hint += f" (A value of your own goes under {USER_KEY}: +{USER_KEY}.{key}=...)"
        problems.append(f"{key}: mic-train reads no such setting; it would change nothing.{hint}")
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
    reader = (dataset.get("source") or {}).get("_target_")
    if _data_task(reader) not in (None, task):
        name = dataset.get("name", "the data set")
        problems.append(_other_task("dataset", name, _data_task(reader), task, " or experiment,"))
    model = (raw.get("model") or {}).get("_target_")
    if _task_of(model) not in (None, task):
        problems.append(_other_task("model", model, _task_of(model), task))
    terms = ((raw.get("method") or {}).get("terms")) or {}
    targets = {n: t.get("_target_") for n, t in terms.items() if isinstance(t, dict)}
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


def _options(group: str, task: str) -> list[str]:
    """The options of mic's config ``group`` that fit ``task``: a model or method whose
    objects all do (every ``_target_`` in it generic or of that task), a data set whose
    labelled source's reader is of that task."""
    import importlib.resources

    fitting = []
    folder = importlib.resources.files("mic.conf") / group
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if not path.name.endswith(".yaml") or path.name.startswith("_"):
            continue
        name = path.name.removesuffix(".yaml")
        if group == "dataset":
            fits = _data_task(_source_reader(folder, name)) == task
        else:
            targets = re.findall(r"_target_:\s*([\w.]+)", path.read_text())
            fits = bool(targets) and all(_task_of(t) in (None, task) for t in targets)
        if fits:
            fitting.append(name)
    return fitting


def _source_reader(folder: Any, name: str) -> str | None:
    """The ``_target_`` of the labelled source of the data set config ``name`` in ``folder``,
    its own or that of the configs it extends (its ``defaults``)."""
    cfg = OmegaConf.create((folder / f"{name}.yaml").read_text())
    source = cfg.get("source")
    if OmegaConf.is_dict(source) and "_target_" in source:
        return str(source["_target_"])
    extended = [d for d in cfg.get("defaults", []) if isinstance(d, str) and d != "_self_"]
    return next(filter(None, (_source_reader(folder, d) for d in extended)), None)


def check_config(cfg: DictConfig) -> None:
    """Check the root keys of a composed config (``unread_keys``, then their types and
    ranges), the task of its model and loss terms (``task_mismatches``), and the true /
    false arguments of every object it builds (``flag_problems``).

    Raises:
        ConfigError: one paragraph naming every key whose value has the wrong type or lies
            out of range, with what was given; every key that nothing reads; a model or
            loss term of another task.
    """
    missing = _missing(cfg)
    if missing:  # every one at once, named where the user sets it (not where it is read)
        raise ConfigError(
            f"{len(missing)} mandatory value{'s are' if len(missing) > 1 else ' is'} not "
            f"given: {', '.join(missing)}; set {'them' if len(missing) > 1 else 'it'} on the "
            f"command line (e.g. {missing[0]}=...)"
        )
    problems = [*unread_keys(cfg), *task_mismatches(cfg)]
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
            problems.append(f"{key}: {message} (got {error.get('input')!r})")
    problems += flag_problems(cfg)
    if problems:
        raise ConfigError(
            f"{len(problems)} config value{'s are' if len(problems) > 1 else ' is'} not "
            f"valid: {'; '.join(problems)}"
        ) from None
