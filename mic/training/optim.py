"""Optimiser parameter groups and learning-rate schedules."""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import torch
from torch import nn

from mic.core.errors import ConfigError

log = logging.getLogger(__name__)


def param_groups(
    modules: Mapping[str, nn.Module],
    lr: float,
    lr_mult: Mapping[str, float] | None = None,
    weight_decay: float | None = None,
    no_weight_decay: Sequence[str] = (),
    bias_lr_factor: float = 1.0,
) -> list[dict[str, Any]]:
    """Parameter groups with per-prefix learning-rate multipliers and weight-decay exemptions.

    Args:
        modules: named modules to optimise, e.g. ``{"model": student, "method": method}``;
            parameters are named ``"<key>.<parameter name>"``.
        lr: the base learning rate.
        lr_mult: multipliers by name prefix, e.g. ``{"model.backbone": 0.1}`` (SDAT) or
            ``{"model.decode_head": 10}`` (DAFormer); the longest matching prefix wins.
            Nested mappings (``{"model": {"backbone": 0.1}}``) are read the same way.
        weight_decay: the base weight decay (None: the optimiser's default).
        no_weight_decay: parameters whose name contains one of these substrings get no
            weight decay (e.g. ``["norm", "pos_block"]``; one may be given as text). Unlike an
            ``lr_mult`` prefix, a substring that no trainable parameter's name contains is no
            error but a warning
            (a typo such as ``nrom`` changes nothing), as one list may serve several models;
            the names of ``SHARED_NO_WEIGHT_DECAY``, which mic's configs list for all their
            models, are not warned of (``pos_block`` names MiT's position blocks, which a
            U-Net does not have).
        bias_lr_factor: a further multiplier of the learning rate of every parameter named
            ``bias`` (the last part of its name), times its ``lr_mult``; 1 (default, as
            detectron2's ``SOLVER.BIAS_LR_FACTOR``): none. The published detection code
            (maskrcnn-benchmark) gives biases 2, with ``WEIGHT_DECAY_BIAS`` 0, which is
            ``no_weight_decay=["bias"]``.

    Raises:
        ConfigError: an empty (or non-text) ``no_weight_decay`` entry (it would exempt every
            parameter), an ``lr_mult`` prefix that no trainable parameter's name starts with,
            multipliers of 0 for every parameter of ``modules["model"]`` (nothing would train),
            an ``lr`` that is no finite number > 0, a negative ``weight_decay``, or a
            ``bias_lr_factor`` that is no finite number > 0.
    """
    if isinstance(no_weight_decay, str):  # (read letter by letter: every name exempted)
        no_weight_decay = [no_weight_decay]
    if any(not isinstance(s, str) or not s for s in no_weight_decay):
        raise ConfigError(
            f"no_weight_decay={list(no_weight_decay)!r}: each entry is text, a part of the "
            "names of the parameters to exempt (e.g. norm); an empty one is part of every "
            "name, so no parameter would decay ([]: every one decays)"
        )
    if isinstance(lr, bool) or not (isinstance(lr, Real) and 0 < lr < float("inf")):
        raise ConfigError(f"param_groups: lr must be a finite number > 0, got {lr!r}")
    if weight_decay is not None and (
        isinstance(weight_decay, bool)
        or not (isinstance(weight_decay, Real) and 0 <= weight_decay < float("inf"))
    ):
        raise ConfigError(
            f"param_groups: weight_decay must be a finite number >= 0 (or None), got "
            f"{weight_decay!r}"
        )
    if isinstance(bias_lr_factor, bool) or not (
        isinstance(bias_lr_factor, Real) and 0 < bias_lr_factor < float("inf")
    ):
        raise ConfigError(
            f"param_groups: bias_lr_factor must be a finite number > 0 (1: biases learn at "
            f"their lr_mult's rate), got {bias_lr_factor!r}"
        )
    lr_mult = _flatten(lr_mult or {})
    named = [
        (f"{key}.{name}", p)
        for key, module in modules.items()
        for name, p in module.named_parameters()
        if p.requires_grad
    ]
    known = {n for n, _ in named}
    _warn_unmatched(no_weight_decay, known)
    for prefix in lr_mult:
        if not any(n == prefix or n.startswith(prefix + ".") for n in known):
            raise ConfigError(
                f"optimizer lr_mult prefix '{prefix}' matches no trainable parameter; "
                f"parameter names start with: {sorted({'.'.join(n.split('.')[:2]) for n in known})}"
            )
    groups: dict[tuple[float, bool], dict[str, Any]] = {}
    model_mults = set()  # the multipliers of the model's parameters
    for name, p in named:
        matches = [k for k in lr_mult if name == k or name.startswith(k + ".")]
        mult = lr_mult[max(matches, key=len)] if matches else 1.0
        if name.rsplit(".", 1)[-1] == "bias":
            mult = mult * float(bias_lr_factor)
        if name.startswith("model."):
            model_mults.add(mult)
        decay = not any(s in name for s in no_weight_decay)
        group = groups.setdefault((mult, decay), {"params": [], "lr": lr * mult, "lr_mult": mult})
        if weight_decay is not None:
            group["weight_decay"] = weight_decay if decay else 0.0
        elif not decay:
            group["weight_decay"] = 0.0
        group["params"].append(p)
    if model_mults == {0}:
        raise ConfigError(
            "lr_mult gives every parameter of the model the multiplier 0: the student would "
            "not train (optimizer.lr=0 is refused for the same reason); give its parts a "
            "multiplier > 0 (0 freezes a part, e.g. lr_mult={model.backbone: 0})"
        )
    return list(groups.values())


#: the ``no_weight_decay`` substrings of mic's configs (conf/experiment), one list for the
#: model families an experiment may train (MiT's ``norm`` and ``pos_block``, the context
#: U-Net's ``pos_embed``): one that a model's parameter names lack is not warned of
SHARED_NO_WEIGHT_DECAY = frozenset({"norm", "pos_block", "pos_embed"})


def _warn_unmatched(no_weight_decay: Sequence[str], known: set[str]) -> None:
    """Log a warning naming each ``no_weight_decay`` substring that no trainable parameter's
    name (in ``known``) contains, but those of ``SHARED_NO_WEIGHT_DECAY``, with the parts of
    the names closest to it: it exempts nothing from weight decay (``nrom`` for ``norm``)."""
    unmatched = [
        s
        for s in no_weight_decay
        if s not in SHARED_NO_WEIGHT_DECAY and not any(s in n for n in known)
    ]
    if not unmatched:
        return
    parts = sorted({p for n in known for p in n.split(".") if not p.isdigit()})
    for entry in unmatched:
        close = difflib.get_close_matches(str(entry), parts, n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        log.warning(
            "no_weight_decay entry '%s' matches no trainable parameter: no parameter's name "
            "contains it, so it exempts nothing from weight decay; the parts of the parameter "
            "names are: %s.%s Correct it or remove it from no_weight_decay (a list for "
            "several models may name parameters this model lacks: then ignore this).",
            entry,
            ", ".join(parts[:30]) + (", ..." if len(parts) > 30 else ""),
            hint,
        )


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"model": {"backbone": 0.1}}`` (what ``lr_mult.model.backbone=0.1`` on the command
    line gives) -> ``{"model.backbone": 0.1}``.

    Raises:
        ConfigError: naming every multiplier that is not a finite number >= 0
            (``lr_mult_problems``).
    """
    problems = lr_mult_problems(tree)
    if problems:
        raise ConfigError("; ".join(problems))
    return {name: float(value) for name, value in _leaves(tree, prefix).items()}


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The values of a nested mapping by dotted name, as they are."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_leaves(value, name + "."))
        else:
            flat[name] = value
    return flat


def lr_mult_problems(tree: Mapping[str, Any]) -> list[str]:
    """A problem for each learning-rate multiplier of ``tree`` (``lr_mult``, nested or dotted)
    that is not a finite number >= 0: text, true / false, a negative number (the parameters
    would climb their loss: gradient ascent), NaN or infinity (NaN weights at the first
    step)."""
    problems = []
    for name, value in _leaves(tree).items():
        number = isinstance(value, Real) and not isinstance(value, bool)
        if number and math.isfinite(value) and value >= 0:
            continue
        if not number:
            why = "it is no number"
        elif value < 0:
            why = "a negative one makes those parameters climb their loss (gradient ascent)"
        else:
            why = "it would make those weights NaN or Inf at the first step"
        problems.append(
            f"lr_mult.{name}: a learning-rate multiplier must be a finite number >= 0 (got "
            f"{value!r}): {why}; set lr_mult.{name} to a number >= 0 (1 keeps optimizer.lr, "
            "0 freezes those parameters)"
        )
    return problems


def _setting(
    name: str,
    value: Any,
    *,
    integer: bool = False,
    low: float | None = None,
    above: bool = False,
    high: float | None = None,
) -> Any:
    """``value`` of the schedule's setting ``scheduler.<name>``, checked: a number (a whole one
    with ``integer``), finite, >= ``low`` (> with ``above``) and <= ``high``.

    Raises:
        ConfigError: naming ``scheduler.<name>``, the value and the range.
    """
    kind = "a whole number" if integer else "a number"
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if above else '>='} {low:g}")
    if high is not None:
        bounds.append(f"<= {high:g}")
    number = isinstance(value, Real) and not isinstance(value, bool)
    ok = number and math.isfinite(value) and (not integer or float(value).is_integer())
    if ok and low is not None:
        ok = value > low if above else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        raise ConfigError(
            f"scheduler.{name}: must be {kind}{' ' + ' and '.join(bounds) if bounds else ''} "
            f"(got {value!r}); set scheduler.{name}=... on the command line"
        )
    return int(value) if integer else float(value)


class WarmupPoly:
    """Linear warm-up then polynomial decay (mmseg's schedule, used by DAFormer and HRDA).

    factor(t) = (1 - t / max_iters) ^ power * (1 - min_ratio) + min_ratio, and during the
    first ``warmup_iters`` iterations it is multiplied by
    1 - (1 - t / warmup_iters) * (1 - warmup_ratio).
    """

    def __init__(
        self,
        max_iters: int,
        warmup_iters: int = 0,
        power: float = 1.0,
        warmup_ratio: float = 1e-6,
        min_ratio: float = 0.0,
    ) -> None:
        self.max_iters = _setting("max_iters", max_iters, integer=True, low=1)
        self.warmup_iters = _setting("warmup_iters", warmup_iters, integer=True, low=0)
        self.power = _setting("power", power, low=0)
        self.warmup_ratio = _setting("warmup_ratio", warmup_ratio, low=0, high=1)
        self.min_ratio = _setting("min_ratio", min_ratio, low=0, high=1)
        if self.warmup_iters >= self.max_iters:
            log.warning(
                "scheduler.warmup_iters=%d is not below scheduler.max_iters=%d (in mic-train: "
                "iterations), so the learning rate is still warming up when the schedule ends "
                "and never reaches optimizer.lr; set scheduler.warmup_iters below it (e.g. "
                "scheduler.warmup_iters=%d, 5%% of the run) or 0 for no warm-up",
                self.warmup_iters,
                self.max_iters,
                max(1, self.max_iters // 20),
            )

    def __call__(self, t: int) -> float:
        progress = min(t, self.max_iters) / self.max_iters
        factor = (1 - progress) ** self.power * (1 - self.min_ratio) + self.min_ratio
        if t < self.warmup_iters:
            factor *= 1 - (1 - t / self.warmup_iters) * (1 - self.warmup_ratio)
        return factor


class WarmupMultiStep:
    """maskrcnn-benchmark's schedule, published for detection: factor(t) = gamma ^ (number of
    ``steps`` <= t), times a linear warm-up from ``warmup_factor`` to 1 over the first
    ``warmup_iters`` iterations (published: steps 30000 and 40000 of 60000, gamma 0.1, warm-up
    500 iterations from 1/3).

    Raises:
        ConfigError: ``steps`` that are no list of iterations >= 0, a ``gamma`` <= 0, or a
            warm-up setting out of range (each named by its ``scheduler.`` key).
    """

    def __init__(
        self,
        steps: Sequence[int] = (30000, 40000),
        gamma: float = 0.1,
        warmup_iters: int = 500,
        warmup_factor: float = 1.0 / 3,
    ) -> None:
        if hasattr(steps, "tolist"):  # a NumPy array or a tensor of iterations
            steps = steps.tolist()
        if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence):
            raise ConfigError(
                f"scheduler.steps: must be a list of iterations (got {steps!r}); e.g. "
                "scheduler.steps=[30000,40000]"
            )
        self.steps = sorted(_setting("steps", s, integer=True, low=0) for s in steps)
        self.gamma = _setting("gamma", gamma, low=0, above=True)
        self.warmup_iters = _setting("warmup_iters", warmup_iters, integer=True, low=0)
        self.warmup_factor = _setting("warmup_factor", warmup_factor, low=0)

    def __call__(self, t: int) -> float:
        factor = self.gamma ** sum(t >= s for s in self.steps)
        if t < self.warmup_iters:
            alpha = t / self.warmup_iters
            factor *= self.warmup_factor * (1 - alpha) + alpha
        return factor


class InverseDecay:
    """SDAT's (and DANN's) schedule: factor(t) = (1 + gamma * t) ^ (-power)."""

    def __init__(self, gamma: float = 0.001, power: float = 0.75) -> None:
        # gamma < 0 would take the base through 0 (a division by zero, then complex numbers)
        self.gamma = _setting("gamma", gamma, low=0)
        self.power = _setting("power", power, low=0)

    def __call__(self, t: int) -> float:
        return (1 + self.gamma * t) ** (-self.power)


class Constant:
    """factor(t) = 1."""

    def __call__(self, t: int) -> float:
        return 1.0


def lr_scheduler(
    optimizer: torch.optim.Optimizer, schedule: Any
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration scheduler that scales every group's initial lr by ``schedule(t)``.

    Raises:
        ConfigError: ``schedule`` is a class (``WarmupPoly`` for ``WarmupPoly(40000)``) or
            not callable.
    """
    if isinstance(schedule, type) or not callable(schedule):
        got = f"the class {schedule.__name__}" if isinstance(schedule, type) else repr(schedule)
        raise ConfigError(
            f"lr_scheduler takes a schedule, a function of the iteration (e.g. "
            f"WarmupPoly(40000)), got {got}"
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
