"""Build and run an experiment from a config (what ``mic-train`` does), usable without Hydra's
command line: ``run_experiment(load_config(["method=source_only"]), "runs/x")``."""

from __future__ import annotations

import contextlib
import inspect
import os
import random
import re
import shutil
import socket
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from mic.core import (
    AdaptationLoop,
    BlockMasker,
    CheckpointError,
    ConfigError,
    DatasetError,
    Masker,
    MicError,
    Task,
    UDAMethod,
)
from mic.core.batch import split_sample
from mic.core.checks import device_problem
from mic.core.teacher import unwrap
from mic.datasets.preflight import (
    check_class_order,
    check_datasets,
    collecting_problems,
    option_override,
)
from mic.resume import (
    data_record,
    find_resume_checkpoint,
    folder_option,
    refuse_empty_run_folder,
    resume,
    resumed_line,
)
from mic.schema import (
    check_config,
    check_eval_models,
    exception_chain,
    group_options,
    read_from,
)
from mic.training import (
    VALIDATORS,
    Checkpointer,
    Evaluation,
    LabelFreeValidation,
    MetricsLogger,
    ModelSelection,
    OwedEvaluation,
    ProcessGroup,
    ProcessInfo,
    ProgressBar,
    ResumableSampler,
    SeededDataset,
    TrainingGuard,
    TrainingInterrupted,
    init_distributed,
    load_initial_weights,
    lr_scheduler,
    make_validators,
    param_groups,
    per_process_batch_size,
    process_info,
)
from mic.training.checkpoint import (
    few,
    final_weights,
    initial_weights_file,
    is_readable_checkpoint,
    periodic_name,
    write_text_atomically,
)
from mic.training.checkpoint import option as typed_option
from mic.training.evaluation import in_percent, shown_metric, tracked_batchnorms
from mic.training.hooks import RandomStateAtBuild, check_term_name, say, strict_json
from mic.training.rng import rng_state, set_rng_state

__all__ = [
    "Experiment",
    "best_metric_key",
    "build_datasets",
    "build_experiment",
    "build_method",
    "build_optimizer",
    "build_validation",
    "compose_config",
    "format_selection",
    "format_summary",
    "load_config",
    "load_run",
    "make_loader",
    "resolve_device",
    "run_experiment",
    "seed_everything",
    "summarize",
    "validator_names",
]


def load_config(
    overrides: Sequence[str] = (),
    config_name: str = "config",
    config_dir: str | os.PathLike[str] | None = None,
) -> DictConfig:
    """Compose mic's config with command-line style overrides, without running anything.

    Args:
        overrides: as on ``mic-train``'s command line (``["experiment=streets", "seed=1"]``).
        config_name: the root config.
        config_dir: a folder of config groups of one's own (``experiment/mine.yaml``...),
            searched beside mic's, as ``mic-train --config-dir`` does.

    Raises:
        ConfigError: ``overrides`` given as one text, not a list, or holding what is no text;
            a ``config_dir`` that is no folder, or one holding a config file named as one of
            mic's (Hydra would read mic's); overrides that do not compose (a misspelt setting
            or option: ``mic-train``'s message for them, else Hydra's).
    """
    if isinstance(overrides, str):  # read letter by letter: "Error parsing override 'm'"
        raise ConfigError(
            f"load_config takes a list of overrides, got the text {overrides!r}: write "
            f"[{overrides!r}]"
        )
    if not isinstance(overrides, Sequence) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(
            f"load_config takes a list of overrides as texts (['seed=1']), got {overrides!r}"
        )
    own = [o for o in overrides if str(o).lstrip("+~").startswith("hydra.")]
    own = [o for o in own if not str(o).lstrip("+~").startswith("hydra.searchpath")]
    if own:  # composed, then dropped with the rest of Hydra's section (searchpath aside)
        warnings.warn(
            f"load_config: {', '.join(map(str, own))} set(s) what mic-train's Hydra does and "
            "changes nothing here; from Python the run folder is run_experiment(cfg, run_dir)'s "
            "(or build_experiment's) argument",
            stacklevel=2,
        )
    from mic import train

    folder = [] if config_dir is None else [f"--config-dir={Path(config_dir).expanduser()}"]
    own = train._config_dirs([*folder, *overrides])
    shadowed = own and train._shadowed_configs(own)  # (composed, mic's file would win: silent)
    if shadowed:
        raise ConfigError(shadowed)
    try:
        return compose_config(overrides, config_name, config_dir)
    except MicError:
        raise
    except Exception as e:  # Hydra's words, or mic-train's for the same command line
        checks = (train.usage_problem, train.unknown_option, train.unknown_setting)
        said = next(filter(None, (check([*folder, *overrides]) for check in checks)), None)
        said = said and re.sub(r"--config-dir[= ]?", "config_dir=", said)  # (Python's name)
        raise ConfigError(said or f"the overrides do not compose: {e}") from e


def compose_config(
    overrides: Sequence[str], config_name: str = "config", config_dir: Any = None
) -> DictConfig:
    """``load_config`` with Hydra's exceptions as they are (``mic-train``'s checks read
    them), the overrides unchecked.

    Raises:
        ConfigError: a ``config_dir`` that is no folder.
    """
    from hydra.core.global_hydra import GlobalHydra
    from hydra.version import VersionBase

    # inside an app of one's own (@hydra.main, hydra.initialize in a notebook): that Hydra and
    # its version_base are set aside while mic composes, and are put back afterwards
    outer = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    base = VersionBase.instance().version_base  # perhaps unset: a sentinel setbase refuses
    GlobalHydra.instance().clear()
    try:
        return _compose(overrides, config_name, config_dir)
    finally:
        VersionBase.instance().version_base = base
        if outer is not None:
            GlobalHydra.instance().clear()
            GlobalHydra.instance().initialize(outer)


def _compose(
    overrides: Sequence[str], config_name: str, config_dir: str | os.PathLike[str] | None
) -> DictConfig:
    from hydra import compose, initialize_config_module

    extra = []
    if config_dir is not None:
        folder = Path(config_dir).expanduser().resolve()
        if not folder.is_dir():
            raise ConfigError(f"config_dir '{config_dir}' is no folder")
        extra = [f"hydra.searchpath=[file://{folder}]"]
    with initialize_config_module("mic.conf", version_base="1.3"):
        return compose(config_name, overrides=[*extra, *overrides])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str, group: ProcessInfo | None = None) -> torch.device:
    """The device of mic-train's ``device=<name>`` (this process's GPU under torchrun).

    Raises:
        ConfigError: a device that this machine does not have.
        RuntimeError: a ``name`` that is no device (torch's words).
    """
    device = _named_device(name)
    if why := device_problem(device):
        said = why.replace("'", "")  # (in the words of a command line)
        raise ConfigError(f"device={name}, but {said} (or auto: CUDA where there is one)")
    if device.type == "cuda" and group is not None and group.enabled:
        device = torch.device("cuda", group.local_rank)
    return device


def _named_device(name: str) -> torch.device:
    """``torch.device(name)``, with ``"auto"`` CUDA where there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def make_loader(
    dataset: Any,
    batch_size: int,
    task: Task,
    train: bool,
    workers: int,
    seed: int,
    name: str,
    group: ProcessInfo | None = None,
) -> DataLoader:
    """A loader that batches through the task.

    Training loaders draw from a ``ResumableSampler`` (a new permutation every epoch, this
    process's share under ``torchrun``, resumable mid-epoch) and drop the last incomplete
    batch (BatchNorm needs full batches); every sample's random transforms are seeded by its
    position (``SeededDataset``, left out for a dataset that declares it draws nothing), so a
    resumed run loads exactly the same batches.
    """
    group = group or ProcessInfo()
    short = _short_of_a_batch(name, dataset, batch_size, group) if train else None
    if short:
        fix = (
            "add data or lower the batch size (loader.*_batch_size)"
            if len(dataset)
            else "give it samples"
        )
        raise DatasetError(f"{short}; {fix}")
    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler = None
    if train:
        seeded = SeededDataset(dataset)
        with_seeds = bool(seeded.generators)
        sampler = ResumableSampler(
            len(dataset), True, seed, group.rank, group.world_size, with_seeds=with_seeds
        )
        dataset = seeded if with_seeds else dataset
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=train,
        num_workers=workers,
        collate_fn=_TestCollate(task.collate) if name == "test" else task.collate,
        generator=generator,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


def _short_of_a_batch(name: str, dataset: Any, batch_size: int, group: ProcessInfo) -> str | None:
    """What is wrong when a training ``dataset`` holds less than one batch (per process), else
    None."""
    if len(dataset) // group.world_size >= batch_size:
        return None
    if len(dataset) == 0:  # (no batch size helps)
        return f"the {name} dataset is empty ({type(dataset).__name__} holds no samples)"
    return (
        f"the {name} dataset holds {len(dataset)} samples, fewer than one batch of "
        f"{batch_size}{' per process' if group.enabled else ''}"
    )


@dataclass
class Experiment:
    """Everything a config builds; ``loop.run()`` trains."""

    cfg: DictConfig
    task: Task
    student: nn.Module
    method: UDAMethod
    loop: AdaptationLoop
    evaluation: Evaluation
    run_dir: Path | None
    resumed_from: Path | None = None
    checkpointer: Checkpointer | None = None


def _sizes(samples: list[Any]) -> list[tuple[tuple[int, ...], ...]]:
    """The distinct shapes of the samples' images (and targets, where they have a shape)."""
    shape = lambda x: tuple(getattr(x, "shape", ()))  # noqa: E731
    return sorted({tuple(shape(x) for x in split_sample(s) if x is not None) for s in samples})


class _TestCollate:
    """The test loader's batching: a batch that cannot be made because its images (or label
    maps) have different sizes is named as such, with the batch size that evaluates them one
    at a time."""

    def __init__(self, collate: Callable[[list[Any]], Any]) -> None:
        self.collate = collate

    def __call__(self, samples: list[Any]) -> Any:
        try:
            return self.collate(samples)
        except DatasetError:
            shapes = _sizes(samples)
            if len(shapes) < 2:
                raise
            raise DatasetError(
                f"the test set holds images (or labels) of different sizes ({shapes} in one "
                "batch); evaluate them one at a time with loader.test_batch_size=1, or give the "
                "test set a transform that resizes every image to one size"
            ) from None


def _check_test_batches(test: Any, batch_size: int) -> None:
    """Raise ``DatasetError`` before training when the test set's images (or label maps) have
    sizes that batches of ``batch_size`` cannot stack, as the data check read them
    (``batched_sizes`` of a segmentation reader); otherwise the first evaluation would stop."""
    sizes = getattr(test, "batched_sizes", lambda: None)() if batch_size > 1 else None
    if not sizes or len(sizes) < 2:
        return
    images = sorted({image for image, _ in sizes}, key=lambda hw: hw[::-1])  # as W x H
    labels = len(images) == 1  # one image size: the label maps (kept at full size) differ
    shown = sorted({label for _, label in sizes}, key=lambda hw: hw[::-1]) if labels else images
    listed = ", ".join(f"{w} x {h}" for h, w in shown[:4]) + ", ..." * (len(shown) > 4)
    kept = f", kept at full size while the images become {images[0][1]} x {images[0][0]}"
    raise DatasetError(
        f"the test set's {'label maps' if labels else 'images'} come in {len(shown)} sizes "
        f"({listed}{kept if labels else ''}), which batches of "
        f"loader.test_batch_size={batch_size} cannot stack: evaluate them one at a time with "
        "loader.test_batch_size=1 (the published segmentation protocol), or give the test set "
        "one size"
    )


def read_run_config(path: Path) -> DictConfig:
    """A run's config file (``config.yaml``, ``config_resumed.yaml``) as mic-train wrote it.

    Args:
        path: the file.

    Returns:
        The config, as written (resolved where mic-train resolved it).

    Raises:
        ConfigError: a file that cannot be opened, that is no YAML mapping (damaged, cut
            off) or that holds no ``task`` and ``model`` (no mic-train config).
    """
    try:
        cfg = OmegaConf.load(path)
    except OSError as e:  # (removed meanwhile, no permission)
        raise ConfigError(f"'{path}' cannot be opened: {e.strerror or e}") from None
    except Exception as e:  # (YAML's parser errors, a file of bytes)
        said = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"'{path}' cannot be read as the run's config ({said}): it is damaged or no "
            "config mic-train wrote; restore it (the run's .hydra/config.yaml holds the "
            "config it composed)"
        ) from None
    missing = [k for k in ("task", "model") if not isinstance(cfg, DictConfig) or k not in cfg]
    if missing:
        raise ConfigError(
            f"'{path}' holds no {' and no '.join(missing)}: it is no config mic-train wrote, "
            "or it was changed; restore it (the run's .hydra/config.yaml holds the config it "
            "composed)"
        )
    return cfg  # type: ignore[return-value]


#: the detectors' warnings of backbone stages or BatchNorm statistics frozen at their random
#: initial values, which weights loaded into the model afterwards replace
LEFT_RANDOM = r"model\.(trainable_layers=\d+|norm=(frozen|FrozenBN)) freezes"


def load_run(
    run: str | Path,
    model: str = "student",
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Task, nn.Module]:
    """A run's task and trained model, rebuilt from its folder's ``config.yaml`` (the resolved
    config ``mic-train`` writes) without its data, for scoring or predicting in Python. The
    model is built without the pretrained weights its config names (the trained ones replace
    them; nothing is downloaded), with the BatchNorm those chose.

    The model's BatchNorm statistics are those it trained with; the run's scores re-estimated
    them on target batches first (AdaBN): score as it did inside
    ``mic.training.recalibrated_batchnorm(model, target_loader, eval.adabn_batches)``.

    Args:
        run: the run folder (``hydra.run.dir``).
        model: ``"student"`` or ``"teacher"``.
        checkpoint: a file to take the weights from: a mic checkpoint (``best.pt``,
            ``iter_*.pt``: its ``student`` or ``teacher`` weights, as ``model`` says) or a
            weights file (loaded as it is), a path or a name in the run folder's
            ``checkpoints`` (``"best.pt"``); None: as
            ``init_from=<run>`` chooses (``checkpoints/<model>.pt`` of a finished run, else
            its newest checkpoint, ``best.pt`` included, with a warning that names it).
        device: where the model is put (``"auto"``: CUDA where there is one).

    Returns:
        ``(task, model)``, the model in eval mode on ``device``.

    Raises:
        ConfigError: a folder without ``config.yaml`` or with one that cannot be read or
            is no mic-train config (``read_run_config``), a ``model`` of another name, a
            ``device`` that is no device or not here, a ``checkpoint`` that is no file, a
            checkpoint without a teacher for ``model="teacher"``, weights that do not fit
            the model (see ``mic.training.load_initial_weights``), or a ``_target_`` of the
            run's task or model that cannot be imported here.
    """
    for name, value in (("run", run), ("checkpoint", checkpoint)):
        if not isinstance(value, (str, os.PathLike)) and (name == "run" or value is not None):
            number = isinstance(value, int) and not isinstance(value, bool) and name != "run"
            hint = (
                f" (the checkpoint of iteration {value} is checkpoints/{periodic_name(value)})"
                if number
                else ""
            )
            raise ConfigError(f"load_run({name}=...) takes a path, got {value!r}{hint}")
    folder = Path(run)
    if not folder.exists():
        raise ConfigError(
            f"the run folder '{folder}' does not exist: give a mic-train run's folder"
        )
    if not (folder / "config.yaml").is_file() and (folder.parent / "config.yaml").is_file():
        raise ConfigError(  # (its checkpoints/ folder, or .hydra/)
            f"'{folder}' is a folder inside the run folder '{folder.parent}': give the run "
            f"folder, load_run('{folder.parent}') (a checkpoint of its own choosing: "
            "checkpoint='best.pt')"
        )
    if not (folder / "config.yaml").is_file():
        logs = sorted(p.name for p in folder.glob("*.log")) if folder.is_dir() else []
        began = (folder / ".hydra").is_dir() or logs  # a run that stopped before training
        began = began and not (folder / "checkpoints").is_dir()
        python = not began and not logs and not (folder / ".hydra").is_dir()
        python = python and (any(folder.glob("*.pt")) or any(folder.glob("checkpoints/*.pt")))
        raise ConfigError(
            f"'{folder}' holds no config.yaml: "
            + (
                f"the run stopped before it began training (its log: {', '.join(logs) or 'none'}"
                "), so it has no trained model"
                if began
                else "its checkpoints are of a run trained in Python, with nothing that says "
                "which task and model to build: build the model as that run did and load them "
                f"with mic.training.load_initial_weights(model, '{folder}', which='{model}')"
                if python
                else "give the folder of a run (its hydra.run.dir), which mic-train writes it to"
            )
        )
    if model not in ("student", "teacher"):
        raise ConfigError(f"model must be 'student' or 'teacher', got {model!r}")
    # before any building: a misspelt device, CUDA asked of a machine without it
    auto = isinstance(device, str) and device == "auto"
    if why := device_problem("cpu" if auto else device):
        raise ConfigError(
            f"load_run(device={device!r}): {why}, or 'auto' (CUDA where there is one)"
        )
    chosen = _named_device("auto") if auto else torch.device(device)
    cfg = read_run_config(folder / "config.yaml")
    try:
        task: Task = instantiate(cfg.task)
        with warnings.catch_warnings():  # (of stages and statistics left random: loaded below)
            warnings.filterwarnings("ignore", LEFT_RANDOM)
            net: nn.Module = instantiate(_without_pretrained_weights(cfg.model))
    except InstantiationException as e:  # a _target_ of one's own that is not importable here
        if "Error locating target" not in str(e):  # (an error of its own: its traceback)
            raise
        said = str(e).split(", set env var HYDRA_FULL_ERROR")[0].split("\n")[0]
        raise ConfigError(
            f"load_run('{folder}'): cannot build the run's task or model from its config.yaml "
            f"({said}): a _target_ of one's own must be importable here, as it was for "
            f"mic-train (from the current folder, {os.getcwd()}, or an installed package); run "
            "from the folder that holds its module, or add that folder to sys.path"
        ) from None
    bare = checkpoint is not None and os.sep not in str(checkpoint)  # best.pt: the run's
    inside = folder / "checkpoints" / str(checkpoint)
    if bare and inside.is_file() and Path(checkpoint).is_file():  # (which one was meant?)
        raise ConfigError(
            f"load_run: checkpoint '{checkpoint}' names a file here and one in '{folder}/"
            f"checkpoints': give a path ('./{checkpoint}' for this folder's, "
            f"'{inside}' for the run's)"
        )
    if bare and inside.is_file():
        checkpoint = inside
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise ConfigError(
            f"load_run: checkpoint '{checkpoint}' is no file (neither here nor in '{folder}/"
            "checkpoints')"
        )
    plain = checkpoint is not None and not is_readable_checkpoint(checkpoint)
    which = "student" if plain else model  # strictly: no part left as initialised
    file = load_initial_weights(net, checkpoint or folder, "load_run", which, lacking_ok=False)
    if checkpoint is None and file.name != f"{model}.pt":  # a run stopped before its end
        warnings.warn(
            f"load_run('{folder}'): the run has no checkpoints/{model}.pt (it did not finish): "
            f"the {model} of its newest checkpoint, {file.name}, is loaded; give checkpoint= "
            "to choose another",
            stacklevel=2,
        )
    return task, net.to(chosen).eval()


def _without_weights_key(opts: Any) -> Any:
    """detectron2 ``opts`` (a mapping with dotted or nested keys, or a flat ``[KEY, value,
    ...]`` list) without ``MODEL.WEIGHTS``."""
    plain = OmegaConf.to_container(opts, resolve=False)
    if isinstance(plain, list):
        pairs = zip(plain[0::2], plain[1::2], strict=False)
        return OmegaConf.create([x for k, v in pairs if k != "MODEL.WEIGHTS" for x in (k, v)])
    plain.pop("MODEL.WEIGHTS", None)
    if isinstance(plain.get("MODEL"), dict):
        plain["MODEL"].pop("WEIGHTS", None)
    return OmegaConf.create(plain)


def _without_pretrained_weights(node: Any) -> Any:
    """A model config that builds the same model without fetching the pretrained weights
    that trained ones replace (offline, the hub cannot be reached): ``pretrained`` off, with
    the BatchNorm that pretrained weights chose (``norm: auto`` -> ``frozen``), no weights
    file to read (``pretrained_cfg_overlay``, detectron2's ``weights`` and the
    ``MODEL.WEIGHTS`` of its ``opts``, which it refuses without ``pretrained``)."""
    if isinstance(node, DictConfig):
        node = node.copy()
        if node.get("pretrained") is True or node.get("weights"):
            if node.get("norm") == "auto":
                node.norm = "frozen"
            off = {"pretrained": False, "pretrained_cfg_overlay": None, "weights": None}
            for key, value in off.items():
                if key in node:  # only the model's own settings: a class may take none
                    node[key] = value
            if node.get("opts"):
                node.opts = _without_weights_key(node.opts)
        for key in list(node.keys()):
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                node[key] = _without_pretrained_weights(child)
    return node


def build_method(cfg: DictConfig) -> UDAMethod:
    """The method's terms, in config order. A term whose node has settings but no
    ``_target_`` was switched off (``mic=none`` under an experiment that tunes MIC): it is
    left out, with a warning."""
    terms = {}
    for name, term in (cfg.method.get("terms") or {}).items():
        if term and OmegaConf.is_dict(term) and "_target_" not in term:
            warnings.warn(
                f"method.terms.{name} has settings ({', '.join(term)}) but no _target_, so no "
                "term is built from them (a term switched off: by mic=none, or a method chosen "
                "without it)",
                stacklevel=2,
            )
            term = None
        try:
            terms[name] = instantiate(term) if term else None
        except Exception as e:  # a term's own refusal: which term, by its key (Hydra's wrap)
            said = next((c for c in exception_chain(e) if isinstance(c, ConfigError)), None)
            if said is None or str(said).startswith(("method.", "loss term")):
                raise
            raise ConfigError(f"method.terms.{name}: {said}") from e
    method = UDAMethod(terms)
    for name, term in method:  # a weight its __init__ took but did not pass on: ignored
        given = cfg.method.terms[name].get("weight")
        if isinstance(given, (int, float)) and float(given) != term.weight:
            raise ConfigError(
                f"method.terms.{name}.weight is {given}, but the term built holds weight "
                f"{term.weight}: {type(term).__name__}.__init__ takes weight and does not pass "
                "it on; call super().__init__(weight) (mic.LossTerm)"
            )
    return method


def _interpolated_keys(node: DictConfig, message: str) -> str:
    """`` (its beta reads dataset.beta: set it there)`` for each key of ``node`` that
    ``message`` names and whose value is an interpolation of another key (a data set's shared
    setting, ``beta: ${dataset.beta}``; ``mic.schema.read_from``), else ""."""
    said = [
        f"its {key} reads {source}"
        for key in node
        if re.search(rf"\b{re.escape(str(key))}\b", message) and (source := read_from(node, key))
    ]
    return f" ({', '.join(said)}: set it there)" if said else ""


def _quoted_settings(cfg: DictConfig, names: list[str], message: str) -> str:
    """``dataset.target`` for the datasets ``names`` (``dataset.<split>``), each with the
    setting its value in quotes in ``message`` reads where it is an interpolation (a path:
    ``dataset.target (root: dataset.target_images)``)."""
    shown = []
    for name in names:
        node = OmegaConf.select(cfg, name)
        keys = [k for k in node if isinstance(node.get(k), str) and f"'{node.get(k)}'" in message]
        said = [f"{k}: {source}" for k in keys if (source := read_from(node, k))]
        shown.append(f"{name} ({', '.join(said)})" if said else name)
    return ", ".join(shown)


def build_datasets(cfg: DictConfig, preflight: bool = True) -> dict[str, Any]:
    """``dataset.source``, ``target`` and ``test``, built inside ``collecting_problems`` (the
    problems of their files are reported together by ``check_datasets``).

    Raises:
        DatasetError: one or more could not be built at all (e.g. a missing folder): every
            such problem in one message, each named by its dataset once.
    """
    data: dict[str, Any] = {}
    failed: dict[str, list[str]] = {}  # message -> the datasets that gave it
    with collecting_problems(preflight):
        for name in ("source", "target", "test"):
            if name == "test" and cfg.dataset.get("test") is None:  # no labelled target
                data[name] = None
                continue
            try:
                data[name] = instantiate(cfg.dataset[name], **_source_classes(cfg, name, data))
            except Exception as e:  # Hydra wraps what a constructor raises
                cause = next((c for c in exception_chain(e) if isinstance(c, DatasetError)), None)
                setting = next((c for c in exception_chain(e) if isinstance(c, ConfigError)), 0)
                if cause is None and setting and not str(setting).startswith("dataset."):
                    read = _interpolated_keys(cfg.dataset[name], str(setting))
                    setting.args = (f"dataset.{name}: {setting}{read}",)  # (which of the three)
                if cause is None:
                    raise
                failed.setdefault(_as_override(cause, cfg, name), []).append(f"dataset.{name}")
                continue
            kind = type(data[name])
            if not all(callable(getattr(kind, m, None)) for m in ("__len__", "__getitem__")):
                raise DatasetError(
                    f"dataset.{name} ({kind.__name__}) has no __len__ or no __getitem__: "
                    "mic-train reads datasets by index (map-style, as torch's Dataset with "
                    "__len__), so that its samplers can shuffle, resume and split them among "
                    "processes"
                )
            if name == "target" and not failed:  # before the test split names a symptom
                _check_split_folders(data)
    if not failed:
        _check_test_folder(data)
    if len(failed) == 1:  # named by its datasets where it does not name one itself
        message, names = next(iter(failed.items()))
        named = any(f"dataset.{n}" in message for n in ("source", "target", "test"))
        raise DatasetError(
            message if named else f"{_quoted_settings(cfg, names, message)}: {message}"
        )
    if failed:
        raise DatasetError(
            f"{len(failed)} datasets could not be built: "
            + "; ".join(
                f"{_quoted_settings(cfg, names, message)}: {message}"
                for message, names in failed.items()
            )
        )
    return data


def _image_folder(dataset: Any) -> Path | None:
    """The folder a reader of every image below it reads, or the list file of an image-list
    reader (through wrappers), else None."""
    from mic.datasets import ImageFolder, ImageList, UnlabeledImageFolder
    from mic.datasets.segmentation import SegmentationFolder

    kinds = (ImageFolder, UnlabeledImageFolder, SegmentationFolder, ImageList)
    while not isinstance(dataset, kinds):
        dataset = getattr(dataset, "dataset", None)
        if dataset is None:
            return None
    attribute = "root"
    for kind, name in ((SegmentationFolder, "image_root"), (ImageList, "list_file")):
        attribute = name if isinstance(dataset, kind) else attribute
    return Path(os.path.realpath(getattr(dataset, attribute)))


def _check_split_folders(data: dict[str, Any]) -> None:
    """Refuse a source folder that holds the target's, or a target folder that holds the
    source's (either would read the other's images as its own: a root one level too high);
    warn when both read one folder (or image list).

    Raises:
        DatasetError: naming both folders.
    """
    source, target = _image_folder(data.get("source")), _image_folder(data.get("target"))
    if source is None or target is None:
        return
    if source == target:
        warnings.warn(
            f"the source and the target read the same {_what(source)}, '{source}': the run "
            "adapts a domain to itself (check the folders given for the source and the "
            "target)",
            stacklevel=2,
        )
    for holder, held, name, other in (
        (source, target, "source", "target"),
        (target, source, "target", "source"),
    ):
        if holder in held.parents:
            raise DatasetError(
                f"the {name}'s folder '{holder}' holds the {other}'s, '{held}', so the {name} "
                f"would read the {other}'s images as its own: the {name}'s root is one level "
                f"too high; give the folder of the {name}'s images alone"
            )


def _check_test_folder(data: dict[str, Any]) -> None:
    """Warn when the test set reads the source's folder (or image list): its score, reported
    as the target's, would be the source's."""
    source, test = _image_folder(data.get("source")), _image_folder(data.get("test"))
    if source is not None and source == test:
        warnings.warn(
            f"the source and the test set read the same {_what(source)}, '{source}': the "
            "score reported as the target's is the source's (check the folder given for the "
            "test set)",
            stacklevel=2,
        )


def _what(path: Path) -> str:
    return "image list" if path.is_file() else "folder"


def _as_override(error: DatasetError, cfg: DictConfig, name: str) -> str:
    """``error``'s message with its advice to pass an argument to the reader (``pass
    allow_empty_classes=true``) as the override that does it (``set
    ++dataset.test.allow_empty_classes=true``; below a wrapper, ``dataset.test.dataset...``)."""
    option = getattr(error, "option", None)  # a ReaderOptionError's
    if not option:
        return str(error)
    key, node = f"dataset.{name}", cfg.dataset[name]
    while OmegaConf.is_dict(node.get("dataset")):
        key, node = f"{key}.dataset", node.dataset
    setting, equals, value = option.partition("=")
    override = option_override(cfg.dataset, key, setting, f"{equals}{value}")
    return str(error).replace(f"pass {option}", f"set {override}")


def _source_classes(cfg: DictConfig, name: str, data: dict[str, Any]) -> dict[str, Any]:
    """The source's class names for a ``name`` split whose class indices must follow them,
    else nothing.

    A class-per-folder split (``mic.datasets.ImageFolder``) that names no classes of its own
    and takes them (not a dataset with a fixed class list, e.g. ``OfficeHome``),
    when the source is one too, gets ``{"classes": ...}``: folder ``c`` is class ``c`` in
    every split, also where a split lacks a class or has one the source lacks (an error), not
    its own sorted folder names. A COCO json or VOC split (``CocoDetection``,
    ``VOCDetection``), when the source is one of them too, gets ``{"source_classes": ...}``:
    with ``classes`` null its categories map to the source's classes by name, not by its own
    category ids (a category the source lacks is an error); either way a source class it has
    no category of is fine."""
    from hydra.utils import get_class

    from mic.datasets import ImageFolder
    from mic.datasets.detection import CocoDetection, VOCDetection

    node = cfg.dataset[name]
    source = data.get("source")
    detection = (CocoDetection, VOCDetection)
    if name == "source" or not isinstance(source, (ImageFolder, *detection)):
        return {}
    try:
        reader = get_class(str(node.get("_target_")))
    except Exception:  # no class there: instantiate reports it
        return {}
    if not isinstance(reader, type):
        return {}
    if isinstance(source, ImageFolder) and issubclass(reader, ImageFolder):
        # a reader with its own fixed class list (Office-Home, Office-31) takes no classes
        fixed = getattr(reader, "classes", None)  # a class attribute, not a parameter
        takes = "classes" in inspect.signature(reader).parameters
        fixed = [] if takes or not isinstance(fixed, (list, tuple)) else fixed
        if fixed and list(fixed) != list(source.classes):
            raise DatasetError(
                f"the reader {reader.__name__} has its own fixed class list, which is not "
                f"the source's ({len(source.classes)} classes: {few([*map(str, source.classes)])}; "
                f"the reader's {len(fixed)}: {few([*map(str, fixed)])}): class i would be "
                "another class in each; give source and target the same reader, or a "
                "class-per-folder reader (mic.datasets.ImageFolder) with the same classes"
            )
        return {"classes": list(source.classes)} if takes and "classes" not in node else {}
    if isinstance(source, detection) and issubclass(reader, detection):
        given = inspect.signature(reader).parameters.values()  # a subclass may take none
        takes = any(p.name == "source_classes" or p.kind is p.VAR_KEYWORD for p in given)
        return {"source_classes": list(source.classes)} if takes else {}
    return {}


def validator_names(cfg: DictConfig) -> list[str]:
    """``eval.validators`` as a list (one name alone is a list of one; null: none)."""
    names = cfg.eval.get("validators") or []
    return [str(names)] if isinstance(names, str) else [str(n) for n in names]


def check_task(task: Any) -> None:
    """Raise ``ConfigError`` when ``cfg.task`` built no ``mic.Task`` with the attributes the
    run reads: ``num_classes`` (a whole number >= 1) and ``primary_metric`` (text)."""
    kind = type(task).__name__
    if not isinstance(task, Task):
        raise ConfigError(f"task._target_ built a {kind}, not a mic.Task (a subclass of it)")
    n = getattr(task, "num_classes", None)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        got = f"{kind} does not set num_classes" if n is None else f"{kind}.num_classes is {n!r}"
        raise ConfigError(
            f"{got}: a Task says how many classes its model predicts (a "
            "whole number >= 1; 1 for a task without classes, e.g. regression), as a class "
            "attribute or set in __init__ (e.g. from task.num_classes=${dataset.num_classes})"
        )
    if not isinstance(getattr(task, "primary_metric", None), str):
        raise ConfigError(f"{kind}.primary_metric must be the name of a score (text)")


def best_metric_key(cfg: DictConfig, task: Task) -> str:
    """The evaluation record key that ``best.pt`` follows: ``checkpoint.best_by`` (a
    validator of ``eval.validators``, or null / the primary metric for the labelled target
    metric; also as the record's key, ``validator/student/snd``) of the first model of
    ``eval.models``.

    Raises:
        ConfigError: ``best_by`` names no validator, or one that ``eval.validators`` leaves out.
    """
    model = next(iter(cfg.eval.models), "student")
    by = written = cfg.checkpoint.get("best_by")
    parts = str(by).split("/")
    if len(parts) == 3 and parts[0] in ("validator", "eval"):  # a record's key, as reports show
        if parts[1] != model:
            raise ConfigError(
                f"checkpoint.best_by={by!r}: best.pt follows the first model of eval.models "
                f"({model}); give the score's name alone (checkpoint.best_by={parts[2]}) with "
                f"eval.models=[{parts[1]},...] to follow the {parts[1]}'s"
            )
        kind = "validator" if parts[2] in VALIDATORS else "eval"  # (what the name alone gives)
        labelled = cfg.dataset.get("test") is not None  # (else the labelled metric is no advice)
        known = kind == "validator" or (parts[2] == task.primary_metric and labelled)
        if parts[0] != kind and known:  # (validator/student/accuracy followed the accuracy)
            said = "a label-free validator" if kind == "validator" else "no validator"
            raise ConfigError(
                f"checkpoint.best_by={by!r}: {parts[2]} is {said}, so its record key is "
                f"{kind}/{parts[1]}/{parts[2]}; give the score's name alone "
                f"(checkpoint.best_by={parts[2]})"
            )
        by = parts[2]
    labelled = cfg.dataset.get("test") is not None  # dataset.test=null: validators alone
    if by in (None, "", task.primary_metric):
        if not labelled and not validator_names(cfg):  # (best_by=im would then be refused)
            raise ConfigError(
                "dataset.test=null with eval.validators=[]: the evaluations have nothing to "
                "score (no labelled target, no label-free validator); keep a validator and "
                "choose best.pt by it (eval.validators=[im] checkpoint.best_by=im), or give a "
                "labelled test set (docs/model_selection.md)"
            )
        if not labelled:  # validators, none chosen
            raise ConfigError(
                f"dataset.test=null: without a labelled target there is no "
                f"{task.primary_metric} to choose best.pt by; choose it by a label-free "
                "validator, e.g. checkpoint.best_by=im (docs/model_selection.md)"
            )
        return f"eval/{model}/{task.primary_metric}"
    if by not in VALIDATORS:
        from mic.schema import did_you_mean, spelled_alike

        names = [*VALIDATORS, *[task.primary_metric] * labelled]
        alike = spelled_alike(str(by), names)  # IM for im
        other = f" Did you mean: {alike}?" if alike else did_you_mean(str(by), names)
        if not other and "primary_metric" in cfg.task:
            try:  # the advice only where the task takes it (classification: not miou)
                instantiate(OmegaConf.merge(cfg.task, {"primary_metric": by}))
                other = (
                    f" If {by} is a score of the task's metric, make it the task's to follow "
                    f"it: task.primary_metric={by} with checkpoint.best_by=null"
                )
            except Exception as e:  # its message names the scores the task's metric gives
                # (Hydra's InstantiationException around it)
                cause = next((c for c in exception_chain(e) if isinstance(c, MicError)), None)
                said = f" ({cause})" if cause is not None else ""
                other = f" Nor is it a score of {type(task).__name__}'s metric{said}."
        labels = (
            f", or null (or {task.primary_metric!r}) for the labelled target metric"
            if labelled
            else " (dataset.test=null: there is no labelled target metric)"
        )
        raise ConfigError(
            f"checkpoint.best_by={written!r} names no validator; choose one of "
            f"{', '.join(VALIDATORS)}{labels}.{other}"
        )
    computed = validator_names(cfg)
    if by not in computed:
        raise ConfigError(
            f"checkpoint.best_by={by} but eval.validators=[{', '.join(computed)}] does not "
            "compute it; "
            f"add it there (eval.validators=[{', '.join([*computed, by])}])"
        )
    return f"validator/{model}/{by}"


#: a target set of fewer images than this, passed over again by AdaBN, is warned of
FEW_ADABN_IMAGES = 128


def build_validation(cfg: DictConfig, method: UDAMethod, loader: Any) -> LabelFreeValidation | None:
    """The label-free validators of ``eval.validators`` on ``loader``'s first batches;
    ``masked_agreement`` masks with the method's MIC masker, or, for a method without one, a
    ``BlockMasker`` of ``dataset.mic_block_size`` px and ratio 0.7 (published), filled with
    ``model.image_mean`` where the model normalises inside. None when the list is empty."""
    names = validator_names(cfg)
    if not names:
        return None
    masker = next(
        (t.masker for _, t in method if isinstance(getattr(t, "masker", None), Masker)), None
    )
    if masker is None:
        fill = OmegaConf.select(cfg, "model.image_mean", default=None)
        masker = BlockMasker(
            int(OmegaConf.select(cfg, "dataset.mic_block_size", default=64)),
            0.7,
            fill=None if fill is None else [float(v) for v in fill],
        )
    v = cfg.eval.get("validation") or {}
    samples = v.get("samples_per_image", 256)
    return LabelFreeValidation(
        names,
        loader,
        batches=int(v.get("batches", 4)),
        samples_per_image=None if samples is None else int(samples),
        masker=masker,
        seed=int(v.get("seed", 0)),
    )


@contextlib.contextmanager
def _determinism_restored(always: bool) -> Iterator[None]:
    """Put torch's deterministic mode (``deterministic=true``: deterministic algorithms, no
    cuDNN benchmark, cuBLAS's workspace setting) back as it was after the block, ``always`` or
    only when the block raises."""
    env = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    done = False
    try:
        yield
        done = True
    finally:
        if always or not done:
            torch.use_deterministic_algorithms(before[0], warn_only=before[1])
            torch.backends.cudnn.benchmark = before[2]
            if env is None:
                os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
            else:
                os.environ["CUBLAS_WORKSPACE_CONFIG"] = env


def build_experiment(cfg: DictConfig, run_dir: str | Path | None = None) -> Experiment:
    """Instantiate task, data, model, method, teacher, optimiser, schedule, hooks and loop.

    With ``deterministic=true`` it switches torch's deterministic algorithms on for the run
    (``torch.use_deterministic_algorithms``, cuDNN's benchmark off); ``run_experiment`` puts
    them back as they were after the run, a build that raises at once. It seeds Python's,
    NumPy's and torch's global generators with ``cfg.seed`` (``run_experiment`` puts them
    back after the run; after a build alone they stay seeded).

    Raises:
        MicError: a bad setting (``ConfigError``) or data (``DatasetError``), also one met
            while Hydra instantiated an object (the error itself, not Hydra's
            ``InstantiationException`` around it).
    """
    with _determinism_restored(always=False):
        try:
            return _build_experiment(cfg, run_dir)
        except InstantiationException as e:
            inner = next((x for x in exception_chain(e) if isinstance(x, MicError)), None)
            if inner is None:
                raise
            wrapper = e
        raise _keys_where_set(inner, wrapper)  # outside the handler: not chained to the wrapper


def _keys_where_set(error: MicError, wrapper: BaseException) -> MicError:
    """``error`` with the ``model.<key>`` settings it names put where they are set when the
    class that raised it was built inside the model (HRDA's ``model.segmenter``: its
    ``model.dilations`` is ``model.segmenter.dilations``), as Hydra's ``full_key`` says."""
    found = [re.search(r"full_key: (\S+)", str(x)) for x in exception_chain(wrapper)]
    where = next((m.group(1) for m in reversed(found) if m), "")  # the innermost object's
    if where.startswith("model.") and f"{where}." not in str(error):  # (else it says so)
        error.args = (re.sub(r"(?<![\w.])model\.(?=\w)", f"{where}.", str(error)),)
    return error


def _build_experiment(cfg: DictConfig, run_dir: str | Path | None) -> Experiment:
    check_config(cfg)
    refuse_empty_run_folder()  # hydra.run.dir= : into the current folder
    run_dir = Path(run_dir) if run_dir is not None else None
    if not cfg.get("resume"):  # before any data is read
        refuse_held_folder(run_dir)
    group = init_distributed(str(cfg.device))
    # each process draws its own model-internal randomness (dropout, detection's sampling);
    # the loss terms' draws come from streams keyed to each sample's place in the global batch
    seed_everything(int(cfg.seed) + 1_000_003 * group.rank)
    device = resolve_device(str(cfg.device), group)
    if cfg.get("deterministic"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    task: Task = instantiate(cfg.task)
    check_task(task)
    validators = make_validators(validator_names(cfg))  # config errors before any data is read
    # the same for the method's settings (a mask ratio of 1.5): built once to check them, with
    # the random state restored, and built for good after the model, where its draws belong
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checked = build_method(cfg)
        check_eval_models(cfg, checked.uses_pseudo_labels)
    for name, term in checked.terms.items():  # batch sizes a term cannot pair (ClassMix), now
        check_forward_signature(name, term)
        check_term_name(name)
        if hasattr(term, "check_task"):  # (the feature distance's classes)
            term.check_task(task)
        if hasattr(term, "check_batch_sizes"):
            term.check_batch_sizes(
                int(cfg.loader.source_batch_size), int(cfg.loader.target_batch_size)
            )
    ld, n = cfg.loader, group.world_size  # batches that the processes cannot share, now
    batches = {
        "source": per_process_batch_size(int(ld.source_batch_size), n, "source"),
        "target": per_process_batch_size(int(ld.target_batch_size), n, "target"),
    }
    best_metric = best_metric_key(cfg, task)
    # the files to start from, a bad path named before any data is read
    resume_from = find_resume_checkpoint(cfg.get("resume"), run_dir)
    init_file, init_model = None, str(cfg.get("init_model", "student"))
    if cfg.get("init_from") and resume_from is None:  # a resumed run loads its own weights
        init_file = initial_weights_file(str(cfg.init_from), model=init_model)

    # the model before the data, so that missing pretrained weights are named at once, not
    # after a data check of minutes; the data is built from the random state the model was
    # (a dataset that draws at construction, a random subset, draws what it drew before, and
    # the same whatever the model), and what follows continues from the model's
    before_model = rng_state()
    with warnings.catch_warnings():
        if init_file is not None or resume_from is not None:  # (what is left random: loaded)
            warnings.filterwarnings("ignore", LEFT_RANDOM)
        student: nn.Module = instantiate(cfg.model)
    if not isinstance(student, nn.Module):  # (its first use: optim's named_parameters)
        raise ConfigError(
            f"model ({cfg.model.get('_target_', '?')}) built a {type(student).__name__}, not a "
            "torch.nn.Module: the student is a module whose parameters train"
        )
    model_classes = getattr(student, "num_classes", task.num_classes)
    if model_classes != task.num_classes:
        given = OmegaConf.to_container(cfg.task).get("num_classes")  # type: ignore[union-attr]
        read = given == "${dataset.num_classes}" and cfg.task.num_classes == task.num_classes
        same = "${dataset.num_classes}" if read else task.num_classes  # the task's own count
        data_classes = OmegaConf.select(cfg, "dataset.num_classes", default=None)
        if given == task.num_classes and data_classes == model_classes:  # (set on its own)
            raise ConfigError(
                f"task.num_classes={task.num_classes}, but dataset.num_classes={data_classes} "
                "and the model predicts as many: leave task.num_classes out (by default it "
                f"follows dataset.num_classes; if the data has {task.num_classes} classes, set "
                f"dataset.num_classes={task.num_classes})"
            )
        raise ConfigError(
            f"the model predicts {model_classes} classes but the task has {task.num_classes}; "
            f"set model.num_classes to {same}"
        )
    # lr_mult's prefixes and the optimiser's numbers, named before a data check of minutes
    # (a recipe's model.decode_head under another model): with the method built to check it
    param_groups(
        {"model": student, "method": checked},
        lr=float(cfg.optimizer.lr),
        lr_mult=cfg.lr_mult,
        weight_decay=cfg.optimizer.get("weight_decay"),
        bias_lr_factor=float(cfg.get("bias_lr_factor", 1.0)),
    )
    after_model = rng_state()
    set_rng_state(before_model)
    preflight = bool(cfg.get("preflight", True))
    data = build_datasets(cfg, preflight)
    sizes = data_record(data)  # recorded, compared on resume
    task.check_datasets(data)
    pseudo_labels = checked.uses_pseudo_labels or any(v.needs_masked for v in validators)
    if pseudo_labels and callable(getattr(task, "check_margins", None)):  # (segmentation's)
        task.check_margins(data["target"])
    check_class_order(data)
    if preflight:
        check_datasets(data, Path(run_dir) / "data_problems.txt" if run_dir else None, cfg.dataset)
    _check_test_batches(data["test"], int(ld.test_batch_size))
    workers = int(ld.num_workers)
    short = [_short_of_a_batch(k, data[k], b, group) for k, b in batches.items()]
    if any(short):  # both named at once, not the target on the next run
        few = [k for k, why in zip(batches, short) if why]
        lower = [f"loader.{k}_batch_size" for k in few if len(data[k])]  # (empty: no batch helps)
        raise DatasetError(
            "; ".join(filter(None, short))
            + (f"; add data or lower the batch size ({', '.join(lower)})" if lower else "")
            + ("; give the empty dataset its samples" if len(lower) < len(few) else "")
        )
    source = make_loader(
        data["source"],
        batches["source"],
        task,
        True,
        workers,
        cfg.seed,
        "source",
        group,
    )
    target_batch = batches["target"]
    target = make_loader(
        data["target"], target_batch, task, True, workers, cfg.seed + 1, "target", group
    )
    test = (  # None: no labelled target, the run is scored by the label-free validators alone
        make_loader(data["test"], ld.test_batch_size, task, False, workers, 0, "test")
        if data["test"] is not None
        else None
    )
    # the same target batches at every evaluation, for AdaBN
    adabn = make_loader(data["target"], target_batch, task, True, workers, 12345, "target")
    set_rng_state(after_model)

    if init_file is not None:
        load_initial_weights(student, str(cfg.init_from), which=init_model)
        if process_info().is_main:
            checkpoint = is_readable_checkpoint(init_file)
            kind = f"the {init_model} of the checkpoint" if checkpoint else "the weights in"
            say(f"init_from: the model starts from {kind} {init_file}")
    method = build_method(cfg)
    check_batch_norm(student, method, min(source.batch_size, target_batch), ld)
    for name, term in method.terms.items():  # a term that needs more of the model says so now
        try:
            getattr(term, "check_student", lambda _: None)(student)
        except ConfigError as e:  # (the term knows not its name in the config)
            said = str(e).replace("method.terms.<term>.", f"method.terms.{name}.")
            raise ConfigError(said) from None
    # the teacher starts as a copy of the (initialised) student
    teacher = instantiate(cfg.teacher, model=student) if method.uses_pseudo_labels else None
    if cfg.get("compile"):
        student.compile()  # in place: parameter names and the teacher's copy are unchanged
        if process_info().is_main:  # (minutes on a CPU for a large model: no silent wait)
            say("compile=true: torch.compile compiles the student in its first iterations")

    opt_cfg = cfg.optimizer
    groups = param_groups(
        {"model": student, "method": method},
        lr=float(opt_cfg.lr),
        lr_mult=cfg.lr_mult,
        weight_decay=opt_cfg.get("weight_decay"),
        no_weight_decay=list(cfg.no_weight_decay),
        bias_lr_factor=float(cfg.get("bias_lr_factor", 1.0)),
    )
    optimizer = build_optimizer(opt_cfg, groups)
    # a method with its own step, e.g. SDAT's sharpness-aware minimisation
    step_strategy = instantiate(cfg.method.step) if cfg.method.get("step") else None
    schedule = _build_schedule(cfg)
    scheduler = lr_scheduler(optimizer, schedule)
    _warn_of_schedule(schedule, int(cfg.iterations))

    random_state = RandomStateAtBuild()  # first: before any hook draws
    hooks: list[Any] = [random_state, ProgressBar(int(cfg.log.interval), bool(cfg.log.progress))]
    start = int(cfg.adaptation_start)
    held, asked = len(adabn) if adabn is not None else 0, int(cfg.eval.adabn_batches)
    if held and asked > 10 * held:  # a typo's extra zeros: an evaluation no signal ends
        raise ConfigError(
            f"eval.adabn_batches={asked} would pass over the target loader ({held} "
            f"batch{'es' * (held != 1)}) {asked // held} times at every evaluation, where "
            "BatchNorm statistics settle "
            f"within one pass; give at most {10 * held} (0: no AdaBN)"
        )
    images = len(adabn.dataset) if adabn is not None else 0  # type: ignore[arg-type]
    normed = bool(tracked_batchnorms(student))  # (AdaBN re-estimates nothing without them)
    if held and held < asked and images < FEW_ADABN_IMAGES and test is not None and normed:
        warnings.warn(  # (32 images cost a detector 40 points of mAP@0.5)
            f"eval.adabn_batches={asked} passes over the target loader's {held} "
            f"batch{'es' * (held != 1)} ({images} images) again and again: AdaBN estimates the "
            "test-time BatchNorm statistics from so few target images that the scores may "
            "differ much from those of the running statistics; compare with "
            "eval.adabn_batches=0",
            stacklevel=2,
        )
    evaluation = Evaluation(
        task,
        test,
        interval=int(cfg.eval.interval),
        models=list(cfg.eval.models),
        adabn_loader=adabn,
        adabn_batches=int(cfg.eval.adabn_batches),
        at=[start] if start > 0 or cfg.init_from is not None else [],  # the start model's
        validation=build_validation(cfg, method, adabn),
        progress=bool(cfg.log.progress),
    )
    hooks.append(evaluation)
    checkpointer = None
    guard = TrainingGuard(
        str(cfg.get("nan_policy", "skip")),
        float(cfg.get("max_skipped", 0.1)),
        warn_skipped=False,  # (the summary says it)
    )
    if run_dir is not None:
        check_writable(run_dir)
        hooks.append(MetricsLogger(run_dir, int(cfg.log.interval), bool(cfg.log.tensorboard)))
        checkpointer = Checkpointer(
            run_dir / "checkpoints",
            interval=int(cfg.checkpoint.interval),
            keep=int(cfg.checkpoint.keep),
            best_metric=best_metric,
            extra={"config": OmegaConf.to_container(cfg, resolve=True), "data": sizes},
            stateful={"evaluation": evaluation, "guard": guard},
        )
        hooks.append(checkpointer)
    if process_info().is_main:  # images and tables are written once, by the process that evaluates
        hooks.extend(task.report_hooks(run_dir, test))
    hooks.append(OwedEvaluation(evaluation))  # last: every other hook has started
    if device.type == "cpu" and str(cfg.get("precision", "fp32")) == "fp16":
        warnings.warn(
            "precision=fp16 on the CPU: float16 has few CPU kernels, so training runs tens of "
            "times slower than in fp32 (docs/training.md); use precision=fp32 there (bf16 is "
            "fast only on a CPU with bfloat16 instructions, AVX512-BF16 or AMX)",
            stacklevel=2,
        )
    adapting = [name for name, term in method if term.uses_target]
    if str(cfg.method.get("name")) == "source_only" and adapting:
        off = " ".join("mic=none" if n == "mic" else f"method.terms.{n}=null" for n in adapting)
        warnings.warn(
            f"method=source_only with {', '.join(adapting)}, which train"
            f"{'s' if len(adapting) == 1 else ''} on target images: this is not the "
            f"source-only baseline ({off} for that)",
            stacklevel=2,
        )
    if adapting and start >= int(cfg.iterations):
        warnings.warn(
            f"adaptation_start={start} is not below iterations={cfg.iterations}, so "
            f"the terms that use target data ({', '.join(adapting)}) never run and the run "
            "trains on the source alone; set adaptation_start below iterations to adapt",
            stacklevel=2,
        )
    loop = AdaptationLoop(
        task,
        student,
        method,
        optimizer,
        source,
        target,
        iterations=int(cfg.iterations),
        teacher=teacher,
        scheduler=scheduler,
        hooks=hooks,
        device=device,
        adaptation_start=start,
        seed=int(cfg.seed),
        max_grad_norm=cfg.max_grad_norm,
        precision=str(cfg.get("precision", "fp32")),
        accumulate=int(cfg.get("accumulate", 1)),
        channels_last=bool(cfg.get("channels_last", False)),
        step_strategy=step_strategy,
        collective=ProcessGroup(device) if group.enabled else None,
        guard=guard,
    )
    # a folder that holds a run judged before the resume writes its best.pt into it; a bad
    # checkpoint file is named first (by the resume, which then raises)
    held = run_dir is not None and holds_run(run_dir)
    if held and (resume_from is None or is_readable_checkpoint(resume_from, verify=True)):
        refuse_held_folder(run_dir, resume_from)
    if resume_from is not None:
        resume(loop, resume_from, cfg, checkpointer, sizes, announce=False)
        aside = resume_from.with_name(f"best_superseded_{loop.step:08d}.pt")
        if not resume_from.exists() and aside.is_file():  # (another best_by set it aside)
            resume_from = aside
        say(resumed_line(loop, resume_from))
        if run_dir and checkpointer is not None and loop.step < loop.iterations:
            # an earlier end's summary and final weights no longer describe the run once it
            # saves a newer checkpoint (a run stopped again kept them); its end writes them
            checkpointer.superseded = [
                Path(run_dir) / "summary.json",
                *(checkpointer.directory / f"{m}.pt" for m in ("student", "teacher")),
            ]
    random_state.capture(loop)
    return Experiment(
        cfg, task, student, method, loop, evaluation, run_dir, resume_from, checkpointer
    )


def _build_schedule(cfg: DictConfig) -> Any:
    """The schedule ``cfg.scheduler`` builds.

    Raises:
        ConfigError: it gives settings the chosen schedule does not take (an experiment's
            ``warmup_iters`` kept beside ``scheduler=constant``), naming them and their removal.
    """
    from hydra.utils import get_class

    try:
        kind = get_class(str(cfg.scheduler.get("_target_")))
        taken = inspect.signature(kind).parameters
    except (ImportError, ValueError, TypeError):
        taken = None  # Hydra names what it cannot import
    given = [str(k) for k in cfg.scheduler if not str(k).startswith("_")]
    if taken is not None and not any(p.kind == p.VAR_KEYWORD for p in taken.values()):
        extra = [k for k in given if k not in taken]
        if extra:
            name = cfg.scheduler._target_.rsplit(".", 1)[-1]
            drop = " ".join(f"~scheduler.{k}" for k in extra)
            raise ConfigError(
                f"the scheduler {name} does not take {', '.join(extra)}, which the config "
                f"gives it (e.g. an experiment's settings kept when scheduler= chose another "
                f"one); remove them: {drop}"
                + (f" (it takes: {', '.join(taken)})" if taken else " (it takes no settings)")
            )
    return instantiate(cfg.scheduler)


def _warn_of_schedule(schedule: Any, iterations: int) -> None:
    """Warn of a schedule that ends before the run (a poly ``max_iters`` below
    ``iterations``: the rest trains at ``min_ratio`` x lr, 0 by default) or that raises the
    rate at its steps (``gamma`` > 1)."""
    ends = getattr(schedule, "max_iters", None)
    if ends is not None and ends < iterations:
        warnings.warn(
            f"scheduler.max_iters={ends} is below iterations={iterations}: the last "
            f"{iterations - ends} iterations train at {schedule.min_ratio:g} x optimizer.lr "
            "(scheduler.min_ratio); leave scheduler.max_iters unset (it then follows "
            "iterations), or set it to at least iterations",
            stacklevel=2,
        )
    if getattr(schedule, "steps", None) and getattr(schedule, "gamma", 0) > 1:
        warnings.warn(
            f"scheduler.gamma={schedule.gamma:g} is above 1: the learning rate grows at each "
            "of scheduler.steps (published 0.1: it decays)",
            stacklevel=2,
        )


def build_optimizer(opt_cfg: DictConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """The optimiser of ``optimizer`` (a ``_partial_`` class with its arguments) over the
    parameter groups ``groups``.

    Raises:
        ConfigError: the class does not take an argument of the config, or refuses a value
            (``optimizer=sgd optimizer.momentum=0`` with its ``nesterov: true``, ``betas`` that
            are not two numbers in [0, 1)): one paragraph naming the class, the argument and
            what to do.
    """
    target = str(opt_cfg.get("_target_", "?"))
    factory = instantiate(opt_cfg)
    try:
        return factory(groups)
    except (TypeError, ValueError, IndexError, KeyError) as e:  # the constructor's refusal
        cls = getattr(factory, "func", None)
        raise ConfigError(_optimizer_problem(opt_cfg, target, cls, e)) from e


def _optimizer_problem(opt_cfg: DictConfig, target: str, cls: Any, error: Exception) -> str:
    """The message for an optimiser ``cls`` (``target``) that refused ``opt_cfg``'s arguments
    with ``error``: the arguments given, and a hint where one is known."""
    from mic.schema import did_you_mean

    given = {
        str(k): v
        for k, v in OmegaConf.to_container(opt_cfg, resolve=True).items()  # type: ignore[union-attr]
        if not str(k).startswith("_")
    }
    listing = ", ".join(f"optimizer.{k}={_plain(v)}" for k, v in given.items())
    first = (str(error).splitlines() or [""])[0].split("full_key:")[0].strip()
    kind = "IndexError" if isinstance(error, IndexError) else type(error).__name__
    reason = f"{kind}: {first}" if first else kind
    hints = []
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        signature = None
    params = {}
    if signature is not None:
        params = {
            n: p
            for n, p in signature.parameters.items()
            if n != "params" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }
    unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(error))
    if unexpected and params:
        name = unexpected.group(1)
        hint = did_you_mean(name, sorted(params), n=3)
        options = ", ".join(group_options("optimizer"))
        hints.append(
            f"The class takes no argument {name}.{hint} Its arguments: {', '.join(params)}. "
            f"Drop optimizer.{name} (~optimizer.{name}), or choose an optimizer that takes it "
            f"(optimizer=...: {options})"
        )
    for name, value in given.items():  # a tuple argument (betas) given as another shape
        default = params[name].default if name in params else None
        if isinstance(default, tuple) and (
            not isinstance(value, list) or len(value) != len(default)
        ):
            example = ",".join(str(v) for v in default)
            hints.append(
                f"Give optimizer.{name} as {len(default)} numbers, e.g. "
                f"optimizer.{name}=[{example}] (its default)"
            )
    if "nesterov" in str(error).lower() and given.get("nesterov"):
        hints.append(
            "Nesterov momentum needs a momentum above 0 (and dampening 0): with "
            "optimizer.momentum=0 set optimizer.nesterov=false too"
        )
    if re.search(r"beta parameter", str(error)):
        hints.append("Each of optimizer.betas must lie in [0, 1), e.g. optimizer.betas=[0.9,0.999]")
    advice = "; ".join(hints) if hints else "Fix the value in the optimizer's config"
    return f"cannot build the optimizer {target} from the config ({listing}): {reason}. {advice}"


def _plain(value: Any) -> str:
    """A config value as it is written in an override (``[0.9,0.999]``, ``true``)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_plain(v) for v in value) + "]"
    return "null" if value is None else str(value)


def holds_run(folder: Path) -> bool:
    """Whether the run folder ``folder`` holds a run (``checkpoints/iter_*.pt``, the
    ``best.pt`` of a run that stopped before its first periodic checkpoint, or the final
    ``student.pt`` / ``teacher.pt`` of a finished run whose checkpoints were deleted)."""
    return _holds_checkpoints(folder) or bool(final_weights(folder / "checkpoints"))


def _holds_checkpoints(folder: Path) -> bool:
    """Whether ``folder`` holds checkpoints a run resumes from (``iter_*.pt``, ``best.pt``)."""
    return any(folder.glob("checkpoints/iter_*.pt")) or (folder / "checkpoints/best.pt").is_file()


def refuse_held_folder(run_dir: Path | None, resume_from: Path | None = None) -> None:
    """Refuse a new run (no ``resume``), or a resume of another run's checkpoint, into a run
    folder that already holds a run (the two runs' checkpoints and logs would mix).

    Raises:
        ConfigError: ``run_dir`` holds ``checkpoints/iter_*.pt`` (or ``best.pt`` alone) and
            ``resume_from`` is None or lies outside them, or it holds a finished run's
            ``student.pt`` / ``teacher.pt`` alone and ``resume_from`` is None.
    """
    if run_dir is None or not holds_run(run_dir):
        return
    if resume_from is None and not _holds_checkpoints(run_dir):
        final = final_weights(run_dir / "checkpoints")
        raise ConfigError(
            f"the run folder '{run_dir}' holds the final weights of a finished run "
            f"(checkpoints/{' and '.join(final)}; its iter_*.pt are gone, so it cannot be "
            "resumed), which a new run would overwrite: start the new run in another folder "
            f"({folder_option()}=...; with init_from={run_dir} it starts from them), or move "
            "them away first"
        )
    if resume_from is None and not any(run_dir.glob("checkpoints/iter_*.pt")):
        raise ConfigError(
            f"the run folder '{run_dir}' holds checkpoints/best.pt, the best model of a run that "
            "stopped before its first periodic checkpoint (iter_*.pt), which a new run would "
            "overwrite: continue that run from it with resume=auto, or start the new run in "
            f"another folder ({folder_option()}=...)"
        )
    if resume_from is None:
        raise ConfigError(
            f"the run folder '{run_dir}' already holds a run (checkpoints/iter_*.pt); continue "
            f"it with resume=auto, or start a new run in another folder ({folder_option()}=...)"
        )
    if resume_from.resolve().parent != (run_dir / "checkpoints").resolve():
        held = _holds_checkpoints(run_dir)
        raise ConfigError(
            f"the run folder '{run_dir}' already holds a run (checkpoints/"
            f"{'iter_*.pt' if held else 'student.pt, teacher.pt: its final weights'}), and "
            f"resume={resume_from} continues another run: their checkpoints would mix. Resume "
            f"it in its own folder or in a new one ({folder_option()}=...)"
            + (", or continue this folder's run with resume=auto" if held else "")
        )


def check_forward_signature(name: str, term: nn.Module) -> None:
    """Raise ``ConfigError`` for a loss term whose ``forward`` cannot be called with the
    iteration's context alone (``forward(self, ctx)``): it met the loop's TypeError at the
    first adapting iteration, as a traceback, after the iterations before it."""
    try:
        signature = inspect.signature(term.forward)
    except (TypeError, ValueError):  # (a builtin's: the call judges)
        return
    try:
        signature.bind(object())
    except TypeError:
        raise ConfigError(
            f"loss term {name!r} ({type(term).__name__}): forward{signature} cannot be called "
            "with the iteration's context alone; a loss term's is forward(self, ctx), ctx "
            "holding the task, the models and the batches (docs/new_task.md, 'A new method')"
        ) from None


def check_batch_norm(student: nn.Module, method: UDAMethod, batch: int, loader: Any) -> None:
    """Raise a ConfigError when a BatchNorm1d layer would train on batches of one sample."""
    layers = [
        f"{owner}.{name}"
        for owner, module in (("model", student), ("method", method))
        for name, m in module.named_modules()
        if isinstance(m, nn.BatchNorm1d)
    ]
    if layers and batch < 2:
        raise ConfigError(
            f"the batches hold 1 sample per process (loader.source_batch_size="
            f"{loader.source_batch_size}, loader.target_batch_size={loader.target_batch_size}), "
            f"but the BatchNorm1d layers ({', '.join(layers[:3])}) cannot train on one sample; "
            "use batches of at least 2 per process, or a model without them "
            "(model.bottleneck_dim=0)"
        )


#: the least free space a run folder's disk must have when a run starts
MIN_FREE_BYTES = 64 * 2**20


def lock_run_folder(run_dir: Path) -> Any:
    """Take the lock of ``run_dir`` (``lockf`` on its ``.lock`` file) for this process's run,
    so that a second process cannot write into the folder while it trains (two commands given
    one folder, a scheduler's requeue of a run still running). A POSIX lock, which the
    data-loading workers a run forks do not inherit: an ``flock``, which they did, outlived a
    killed run by seconds and refused its immediate ``resume=auto``. The lock ends when the
    returned handle is given to ``unlock_run_folder``, which removes the file, or the process
    ends, killed too (its file then stays, unlocked); None where ``fcntl`` is missing
    (Windows).

    Raises:
        ConfigError: another process holds the lock (the message names it).
    """
    try:
        import fcntl
    except ImportError:
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / ".lock", "a+", encoding="utf-8")  # noqa: SIM115
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # (the whole file)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "a process"
        handle.close()
        raise ConfigError(
            f"another mic-train run ({holder}) is training in the run folder '{run_dir}': two "
            "runs in one folder would mix their checkpoints and logs; let it finish (resume=auto "
            f"then continues it if it stopped early), or give this run a folder of its own "
            f"({folder_option()}=...)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
    handle.flush()
    return handle


def unlock_run_folder(handle: Any) -> None:
    """End the lock ``lock_run_folder`` took and remove its file (still holding it), so that
    the folder holds no trace of it, also after a refused run."""
    if handle is not None and not handle.closed:
        with contextlib.suppress(OSError):  # a folder made read-only: the file stays, unlocked
            Path(handle.name).unlink(missing_ok=True)
        handle.close()


def continue_with(run_dir: Path | str) -> str:
    """The options that continue the run in ``run_dir`` (added to the same command): its
    folder and ``resume=auto``; in a sweep (``-m``), the sweep's folder, so that every job
    of the sweep resumes from its own."""
    from hydra.core.hydra_config import HydraConfig

    if folder_option() == "run_dir":  # Python: no command to add to
        return f"resume=auto (load_config([..., 'resume=auto']), run_experiment(cfg, '{run_dir}'))"
    if folder_option() == "hydra.sweep.dir":
        return (
            f"{typed_option('hydra.sweep.dir', HydraConfig.get().sweep.dir)} resume=auto (with -m)"
        )
    return f"{typed_option('hydra.run.dir', run_dir)} resume=auto"


def check_writable(run_dir: Path, create: bool = True, option: str | None = None) -> None:
    """Fail before training when the run folder cannot be written: it lies below a file, its
    nearest existing folder refuses a write, or its disk has less than ``MIN_FREE_BYTES``
    free (or than twice its largest checkpoint and 1 MiB, where that is less: a run resumed
    in place). With ``create``, the folder is made; ``option`` is the one the message advises
    (default: ``folder_option()``).

    Raises:
        ConfigError: one of the above, naming the folder.
    """
    existing = Path(run_dir).absolute()
    advice = f"choose another with {option or folder_option()}=..."
    long = [p for p in existing.parts if len(p.encode()) > 255]  # (Hydra's OSError, ENAMETOOLONG)
    if long or len(str(existing).encode()) >= 4096:
        shown = f"{str(run_dir)[:60]}...{str(run_dir)[-30:]}"
        size = (
            f"{len(long[0].encode())} bytes in one name"
            if long
            else f"{len(str(existing).encode())} bytes"
        )
        raise ConfigError(
            f"the run folder '{shown}' is too long a path ({size}): a folder's name holds at "
            f"most 255 bytes, a path 4095; {advice}"
        )
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if _holds_checkpoints(Path(run_dir)):  # a new folder alone would start the run over
        advice += (
            f" and continue this run's checkpoints there with {typed_option('resume', run_dir)}"
        )
    if not existing.is_dir():
        below = f"lies below '{existing}', which is"
        where = "is" if existing == Path(run_dir).absolute() else below
        raise ConfigError(f"the run folder '{run_dir}' {where} a file, not a folder; {advice}")
    try:
        if create:
            run_dir.mkdir(parents=True, exist_ok=True)
            existing = run_dir
        probe = existing / f".write_test_{os.getpid()}"  # one per process: ranks share it
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"the run folder '{run_dir}' cannot be written ({e.strerror or e}); {advice}"
        ) from e
    free = shutil.disk_usage(existing).free
    # a run resumed in place: room for two of its checkpoints (a write and its rename) will do
    held = [p.stat().st_size for p in Path(run_dir).glob("checkpoints/*.pt") if p.is_file()]
    least = min(MIN_FREE_BYTES, 2 * max(held) + 2**20) if held else MIN_FREE_BYTES
    if free < least:
        raise ConfigError(
            f"the disk of the run folder '{run_dir}' has {free / 2**20:.1f} MiB free, less than "
            f"the {least / 2**20:.0f} MiB a run asks for its logs and checkpoints"
            f"{' (room for two of its checkpoints)' * (least < MIN_FREE_BYTES)}; free some "
            f"space or {advice}"
        )


def versions() -> dict[str, str]:
    """The versions of what trained a run (mic, Python, PyTorch, torchvision, timm), as
    ``summary.json`` and the run log record them: one config trains other draws under
    another mic (CHANGELOG.md)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import mic

    found = {"mic": mic.__version__, "python": platform.python_version()}
    for package in ("torch", "torchvision", "timm"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def summarize(exp: Experiment) -> dict[str, Any]:
    """Target scores before adaptation (at ``adaptation_start``, if > 0 or the run started
    from ``init_from``) and at the end, and
    which evaluation each label-free validator (and the labelled metric, the best possible)
    would pick, per evaluated model, with the labelled metric there (``selection``); the
    ``versions`` that trained it."""
    metric = exp.task.primary_metric
    history = exp.evaluation.history
    loop = exp.loop
    summary: dict[str, Any] = {
        "metric": metric,
        "in_percent": in_percent(exp.task),  # how the console shows the metric
        "iterations": loop.iterations,
        "skipped_steps": loop.skipped_steps,  # NaN / Inf iterations without an optimiser step
        "non_finite": dict(getattr(loop.guard, "non_finite", {})),  # what was, in those
        "device": str(loop.device),  # what device=auto chose
        "versions": versions(),
    }
    start = exp.loop.adaptation_start
    before = [r for r in history if r["step"] == start]  # (0: of a run from init_from)
    for label, records in (("before_adaptation", before), ("after_adaptation", history[-1:])):
        if records and any(k.endswith(f"/{metric}") for k in records[0]):  # (dataset.test=null)
            r = records[0]
            summary[label] = {
                "step": r["step"],
                **{k.split("/")[1]: v for k, v in r.items() if k.endswith(f"/{metric}")},
                "protocol": {k.split("/")[1]: v for k, v in r.items() if k.endswith("/protocol")},
            }
    if exp.checkpointer is not None:  # its record survives a resume
        selection = exp.checkpointer.selection
    else:
        selection = ModelSelection.for_task(exp.task)
        for record in history:
            selection.update(record)
    models = [m for m in exp.cfg.eval.models if m in selection.last]
    summary["selection"] = {m: selection.picks(m, metric) for m in models}
    if exp.checkpointer is not None and exp.checkpointer.best_metric:
        key = exp.checkpointer.best_metric
        entry = selection.best.get(key)
        best_file = exp.checkpointer.best_file  # after a resume from elsewhere: that run's
        summary["best_checkpoint"] = {
            "by": key,
            "step": entry["step"] if entry else None,
            "path": str(best_file) if entry and best_file else None,
        }
    return summary


def describe_run(exp: Experiment) -> str:
    """What the run trains, in one line, for a reader to check the recipe before its first
    iteration (``mic-train`` prints it): the model and its parameter count, the loss terms
    (MIC's block size and ratio), the global batch, the iterations, the device and precision.
    """
    loop, cfg = exp.loop, exp.cfg
    model = unwrap(exp.student)  # (inside DistributedDataParallel)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    terms = ", ".join(
        f"{name} ({type(term).__name__}{f', weight {term.weight:g}' * (term.weight != 1)})"
        for name, term in exp.method
    )
    masker = next((getattr(t, "masker", None) for _, t in exp.method if hasattr(t, "masker")), None)
    if isinstance(masker, BlockMasker):
        terms += f"; MIC's blocks {masker.block_size} px, {masker.ratio:g} of them withheld"
    parts = f" in {loop.accumulate} micro-batches" if loop.accumulate > 1 else ""
    start = f", adapting from iteration {loop.adaptation_start}" if loop.adaptation_start else ""
    return (
        f"training {type(model).__name__} ({millions:.1f} M parameters) with {terms}; batches "
        f"of {cfg.loader.source_batch_size} source + {cfg.loader.target_batch_size} target "
        f"images{parts}, {loop.iterations} iterations{start}, on {loop.device} "
        f"({loop.precision})"
    )


def format_selection(summary: dict[str, Any], always: bool = False) -> list[str]:
    """Console lines: for the first evaluated model, the iteration each validator picks and
    the labelled target metric there, beside the best possible and the last evaluation
    (without validators none, unless ``always``; a pick that names its checkpoint, as
    ``score_run``'s do, with that name)."""
    metric, percent = summary["metric"], summary.get("in_percent", True)
    picks = next(iter(summary.get("selection", {}).items()), None)
    lines = []
    validators = picks is not None and any(k not in (metric, "last") for k in picks[1])
    if picks is not None and (validators or always):  # else nothing to compare
        model, rows = picks
        labelled = any(pick.get(metric) is not None for pick in rows.values())
        lines.append(
            f"checkpoint picks for the {model} (target {metric} at the picked iteration):"
            if labelled
            else f"checkpoint picks for the {model} (no labelled target: the iteration alone):"
        )
        for name, pick in rows.items():
            label = {metric: f"{metric} (target labels: the best possible)"}.get(name, name)
            value = pick.get(metric)
            if pick["step"] is None:
                lines.append(
                    f"  {label:<46} none: the score was undefined (NaN) at every evaluation"
                )
                continue
            shown = "-" if value is None else shown_metric(value, percent)
            since = pick.get("since")
            later = f" (among the evaluations from iteration {since} on, when it was added)"
            named = pick.get("checkpoint")  # (score_run's picks name it)
            lines.append(
                f"  {label:<46} iteration {pick['step']:>6}"
                + (f" ({named})" if named is not None else "")
                + f": {shown}" * labelled
                + later * (since is not None)
            )
    best = summary.get("best_checkpoint")
    if best and best["step"] is not None:
        where = best["path"] or "no longer on disk (neither in this run folder nor the resumed one)"
        lines.append(f"best.pt chosen by {best['by']} (iteration {best['step']}): {where}")
    return lines


def protocol_words(protocol: str) -> str:
    """A score's BatchNorm protocol (``Evaluation.protocol``: ``adabn:<batches>``,
    ``train-statistics``, ``initial-statistics``, ``plain``) in words for the summary; "" for
    a model without BatchNorm."""
    if protocol.startswith("adabn:"):
        return f"AdaBN: BatchNorm statistics of {protocol[6:]} target training batches"
    words = {
        "train-statistics": "BatchNorm's statistics from training",
        "initial-statistics": "BatchNorm statistics left as built in some layers or all",
        "plain": "",
    }
    return words.get(protocol, protocol)


def format_summary(summary: dict[str, Any]) -> str:
    lines, percent = [], summary.get("in_percent", True)
    for label in ("before_adaptation", "after_adaptation"):
        if label not in summary:
            continue
        s = summary[label]
        models = [name for name in s if name not in ("step", "protocol")]
        words = {name: protocol_words(s["protocol"].get(name, "")) for name in models}
        one = len(set(words.values())) == 1  # (then said once, after the scores)
        if not one:  # (a model without BatchNorm beside one with: said too)
            words = {name: w or "no BatchNorm" for name, w in words.items()}
        scores = ", ".join(
            f"{name} {shown_metric(s[name], percent)}"
            + (f" ({words[name]})" if words[name] and not one else "")
            for name in models
        ) + (f" ({words[models[0]]})" if models and one and words[models[0]] else "")
        when = f"{label.replace('_', ' ')} (iteration {s['step']})"
        lines.append(f"target {summary['metric']} {when}: {scores}")
    skipped = summary.get("skipped_steps", 0)
    if skipped:
        share = skipped / max(1, summary["iterations"])
        which = ", ".join(
            f"{'the gradients' if n == 'gradients' else f'loss/{n}'} in {c}"
            for n, c in summary.get("non_finite", {}).items()
        )
        lines.append(
            f"{'warning: ' if share > 0.02 else ''}{skipped} of {summary['iterations']} "
            f"iterations ({100 * share:.1f}%) had NaN or Inf losses or gradients and took no "
            f"optimiser step (nan_policy=skip){f'; NaN or Inf: {which}' if which else ''}"
        )
    return "\n".join(lines + format_selection(summary))


def run_experiment(
    cfg: DictConfig,
    run_dir: str | Path | None = None,
    on_start: Callable[[Experiment], None] | None = None,
) -> dict[str, Any]:
    """Build, train, and return (and, with a run folder, save) the summary.

    Args:
        cfg: the composed config.
        run_dir: the run folder (None: nothing is written).
        on_start: called with the built experiment once it is accepted (built, resumed if
            asked), before anything is written into the run folder (``mic-train`` writes
            Hydra's record of a resumed command there).

    The run seeds Python's, NumPy's and torch's global generators with ``cfg.seed`` and may
    switch torch's deterministic mode on (``deterministic=true``): both are put back as they
    were when it returns or raises, so that the calling script's own draws go on as before.

    Raises:
        ConfigError: ``cfg`` is no composed config (``load_config``'s; the run folder in its
            place, arguments swapped), or ``run_dir`` is empty text (the current folder); and
            what building and training raise.
    """
    if not isinstance(cfg, DictConfig):
        raise ConfigError(
            f"run_experiment(cfg, run_dir): cfg must be a composed config (load_config(...)), "
            f"got {type(cfg).__name__} {cfg!r:.80}"
        )
    if run_dir is not None and not str(run_dir).strip():  # ("": the current folder, unasked)
        raise ConfigError(
            f"run_experiment(cfg, run_dir=''): the run would be written (checkpoints/, "
            f"config.yaml, summary.json) into the current folder '{Path.cwd()}'; give the run "
            "folder, or run_dir=None to write nothing"
        )
    state = rng_state()
    try:
        with _determinism_restored(always=True):
            return _run_experiment(cfg, run_dir, on_start)
    finally:
        set_rng_state(state)


def _with_data_names(cfg: DictConfig, task: Task) -> DictConfig:
    """``cfg`` resolved, with each task setting left null that the task filled with names
    from the data (``task.class_names``: a COCO json's categories; ``task.classes``: the test
    set's), so that the run's ``config.yaml`` gives ``load_run`` a task that names its classes
    as the run did, without the data."""
    resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    node = resolved.get("task") or {}
    taken = inspect.signature(type(task).__init__).parameters  # (a key the config lacks)
    for key in [*node, *(k for k in ("class_names", "classes") if k in taken and k not in node)]:
        names = getattr(task, str(key), None)
        named = isinstance(names, list) and all(isinstance(n, str) for n in names)
        if node.get(key) is None and named and "_target_" in node:
            resolved.task[key] = list(names)
    return resolved


def _last_checkpoint(exp: Experiment, start: int) -> tuple[int, Path] | None:
    """The iteration and file of the newest checkpoint of the run after an error inside a
    step (nothing saved then): its last periodic one, its ``best.pt``, or the one it resumed
    from at ``start``; None where there is none."""
    found: list[tuple[int, Path]] = []
    saver = exp.checkpointer
    if saver is not None and saver.saved_step > 0:
        found.append((saver.saved_step, saver.directory / periodic_name(saver.saved_step)))
    entry = saver.selection.best.get(saver.best_metric) if saver and saver.best_metric else None
    if entry is not None and saver.best_file is not None and saver.best_file.is_file():
        found.append((int(entry["step"]), saver.best_file))
    if exp.resumed_from is not None and exp.resumed_from.is_file():
        found.append((start, exp.resumed_from))
    return max(found, key=lambda f: f[0]) if found else None


def _run_experiment(
    cfg: DictConfig, run_dir: str | Path | None, on_start: Callable[[Experiment], None] | None
) -> dict[str, Any]:
    exp = build_experiment(cfg, run_dir)
    if on_start is not None:
        on_start(exp)
    main = process_info().is_main
    if exp.run_dir is not None and main:
        config = exp.run_dir / "config.yaml"  # a resume into its own folder keeps the first
        if exp.resumed_from and config.exists():
            config = config.with_name("config_resumed.yaml")
        write_text_atomically(config, OmegaConf.to_yaml(_with_data_names(cfg, exp.task)))
    start = exp.loop.step  # (a resumed run's first)
    try:
        exp.loop.run()
    except DatasetError as e:
        # a bad batch saves the run's state; a loss term's refusal leaves its step half done
        # (nothing saved then: the last checkpoint is named, if there is one)
        if exp.run_dir is None or exp.loop.step == 0:
            raise
        notes = "".join(f" {n}" for n in getattr(e, "__notes__", []))  # (which loader)
        said = f"{str(e).rstrip().rstrip('.')}{notes}"
        found = _last_checkpoint(exp, start)
        if found is None:
            raise DatasetError(
                f"{said}. No checkpoint of the run was written before it (iterations 1 to "
                f"{exp.loop.step} are lost; checkpoint.interval=N saves one every N "
                "iterations): once this is fixed, run it again"
            ) from e
        at, file = found
        saved = (
            f"The run saved its state after iteration {at}"
            if at == exp.loop.step and at > start
            else f"The run's last checkpoint is of iteration {at} (iteration {exp.loop.step + 1} "
            "was not finished)"
        )
        own = file.parent.resolve() == (exp.run_dir / "checkpoints").resolve()
        auto = own and file.name.startswith(("iter_", "best.pt"))  # (what resume=auto takes)
        again = continue_with(exp.run_dir) if auto else f"resume={file}"
        raise DatasetError(
            f"{said}. {saved} in {file}: once this is fixed, continue with the same command "
            f"plus: {again} (and, if files were removed or added, "
            "resume_allow_changes=[dataset])"
        ) from e
    except Exception as e:  # a hook's error after a whole iteration: the loop saved it
        if isinstance(e, ValueError) and "more than 1 value per channel when training" in str(e):
            raise ConfigError(  # (torch's error through Hydra's traceback)
                f"a BatchNorm layer of the model, in training mode, got one value per channel "
                f"({e}): a batch of one image whose features shrink to one pixel (or one "
                "region); give batches of 2 or more images (loader.source_batch_size, "
                "loader.target_batch_size), larger images, or, with pretrained weights, frozen "
                "BatchNorm (model.norm=frozen, where the model takes it)"
            ) from e
        saved = exp.checkpointer is not None and exp.checkpointer.saved_step == exp.loop.step
        stopped = isinstance(e, TrainingInterrupted)  # (mic-train says its own words then)
        if saved and hasattr(e, "add_note") and (stopped or exp.loop.interrupted_by == "an error"):
            e.add_note(  # (3.11; not if the save failed: a full disk)
                f"The run saved its state after iteration {exp.loop.step} in {exp.run_dir}/"
                f"checkpoints: {'' if stopped else 'once this is fixed, '}continue with the "
                f"same command plus: {continue_with(exp.run_dir)}"
            )
        raise
    summary = summarize(exp)
    if exp.run_dir is not None and main:
        try:
            write_text_atomically(exp.run_dir / "summary.json", strict_json(summary, indent=2))
        except OSError as e:
            raise CheckpointError(
                f"the run finished, but summary.json could not be written in {exp.run_dir} "
                f"({e.strerror or e}); its checkpoints are saved: once the folder is writable, "
                f"the same command plus {continue_with(exp.run_dir)} writes it"
            ) from e
    return summary
