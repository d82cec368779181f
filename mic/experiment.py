"""Build and run an experiment from a config (what ``mic-train`` does), usable without Hydra's
command line: ``run_experiment(load_config(["method=source_only"]), "runs/x")``."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from mic.core import (
    AdaptationLoop,
    Checkpointer,
    ConfigError,
    DatasetError,
    Evaluation,
    MetricsLogger,
    ProgressBar,
    Task,
    UDAMethod,
    check_num_classes,
    lr_scheduler,
    param_groups,
)


def load_config(overrides: Sequence[str] = (), config_name: str = "config") -> DictConfig:
    """Compose mic's config with command-line style overrides, without running anything."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("mic.conf", version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but CUDA is not available here; use device=cpu or auto")
    return device


def make_loader(
    dataset: Any, batch_size: int, task: Task, train: bool, workers: int, seed: int, name: str
) -> DataLoader:
    """A loader that batches through the task; training loaders shuffle and drop the last
    incomplete batch (BatchNorm needs full batches)."""
    if train and len(dataset) < batch_size:
        raise DatasetError(
            f"the {name} dataset holds {len(dataset)} samples, fewer than one batch of "
            f"{batch_size}; add data or lower the batch size (loader.*_batch_size)"
        )
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=train,
        num_workers=workers,
        collate_fn=task.collate,
        generator=generator,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
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


def build_method(cfg: DictConfig) -> UDAMethod:
    terms = cfg.method.get("terms") or {}
    return UDAMethod({name: instantiate(term) if term else None for name, term in terms.items()})


def build_experiment(cfg: DictConfig, run_dir: str | Path | None = None) -> Experiment:
    """Instantiate task, data, model, method, teacher, optimiser, schedule, hooks and loop."""
    seed_everything(int(cfg.seed))
    device = resolve_device(str(cfg.device))
    task: Task = instantiate(cfg.task)

    data = {k: instantiate(cfg.dataset[k]) for k in ("source", "target", "test")}
    check_num_classes(task.num_classes, data)
    ld = cfg.loader
    workers = int(ld.num_workers)
    source = make_loader(
        data["source"], ld.source_batch_size, task, True, workers, cfg.seed, "source"
    )
    target = make_loader(
        data["target"], ld.target_batch_size, task, True, workers, cfg.seed + 1, "target"
    )
    test = make_loader(data["test"], ld.test_batch_size, task, False, workers, 0, "test")
    adabn = make_loader(data["target"], ld.target_batch_size, task, True, workers, 12345, "target")

    student: nn.Module = instantiate(cfg.model)
    model_classes = getattr(student, "num_classes", task.num_classes)
    if model_classes != task.num_classes:
        raise ConfigError(
            f"the model predicts {model_classes} classes but the task has {task.num_classes}; "
            "set model.num_classes to ${dataset.num_classes}"
        )
    method = build_method(cfg)
    teacher = instantiate(cfg.teacher, model=student) if method.uses_pseudo_labels else None

    opt_cfg = cfg.optimizer
    groups = param_groups(
        {"model": student, "method": method},
        lr=float(opt_cfg.lr),
        lr_mult=OmegaConf.to_container(cfg.lr_mult),  # type: ignore[arg-type]
        weight_decay=opt_cfg.get("weight_decay"),
        no_weight_decay=list(cfg.no_weight_decay),
    )
    optimizer = instantiate(opt_cfg)(groups)
    if cfg.method.get("sam"):  # a method trained with sharpness-aware minimisation (SDAT)
        optimizer = instantiate(cfg.method.sam)(optimizer)
    scheduler = lr_scheduler(optimizer, instantiate(cfg.scheduler))

    hooks: list[Any] = [ProgressBar(int(cfg.log.interval), bool(cfg.log.progress))]
    start = int(cfg.adaptation_start)
    evaluation = Evaluation(
        task,
        test,
        interval=int(cfg.eval.interval),
        models=list(cfg.eval.models),
        adabn_loader=adabn,
        adabn_batches=int(cfg.eval.adabn_batches),
        at=[start] if start > 0 else [],
    )
    hooks.append(evaluation)
    if run_dir is not None:
        run_dir = Path(run_dir)
        hooks.append(MetricsLogger(run_dir, int(cfg.log.interval), bool(cfg.log.tensorboard)))
        first = next(iter(cfg.eval.models), "student")
        hooks.append(
            Checkpointer(
                run_dir / "checkpoints",
                interval=int(cfg.checkpoint.interval),
                keep=int(cfg.checkpoint.keep),
                best_metric=f"eval/{first}/{task.primary_metric}",
            )
        )
    hooks.extend(task.report_hooks(run_dir, test))
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
    )
    return Experiment(cfg, task, student, method, loop, evaluation, run_dir)


def summarize(exp: Experiment) -> dict[str, Any]:
    """Target scores before adaptation (at ``adaptation_start``, if > 0) and at the end."""
    metric = exp.task.primary_metric
    history = exp.evaluation.history
    summary: dict[str, Any] = {"metric": metric, "iterations": exp.loop.iterations}
    start = exp.loop.adaptation_start
    before = [r for r in history if r["step"] == start and start > 0]
    for label, records in (("before_adaptation", before), ("after_adaptation", history[-1:])):
        if records:
            r = records[0]
            summary[label] = {
                "step": r["step"],
                **{k.split("/")[1]: v for k, v in r.items() if k.endswith(f"/{metric}")},
                "protocol": {k.split("/")[1]: v for k, v in r.items() if k.endswith("/protocol")},
            }
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    lines = []
    for label in ("before_adaptation", "after_adaptation"):
        if label not in summary:
            continue
        s = summary[label]
        scores = ", ".join(
            f"{name} {100 * v:.2f}% ({s['protocol'].get(name, '')})"
            for name, v in s.items()
            if name not in ("step", "protocol")
        )
        when = f"{label.replace('_', ' ')} (iteration {s['step']})"
        lines.append(f"target {summary['metric']} {when}: {scores}")
    return "\n".join(lines)


def run_experiment(cfg: DictConfig, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Build, train, and return (and, with a run folder, save) the summary."""
    exp = build_experiment(cfg, run_dir)
    if exp.run_dir is not None:
        exp.run_dir.mkdir(parents=True, exist_ok=True)
        (exp.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    exp.loop.run()
    summary = summarize(exp)
    if exp.run_dir is not None:
        (exp.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
