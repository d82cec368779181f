"""Teachers: frozen copies of the student that predict pseudo-labels on target images."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mic.core import checks
from mic.core.errors import ConfigError
from mic.core.task import Task

BufferPolicy = Literal["own", "ema", "copy"]
NormMode = Literal["batch", "running"]


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside one DistributedDataParallel, DataParallel or a wrapper like them
    (whose one child is ``module``, with no parameter or buffer of its own: a model holding
    more is no wrapper) and inside torch.compile's (``_orig_mod``); else the module."""
    compiled = lambda m: isinstance(getattr(m, "_orig_mod", None), nn.Module)  # noqa: E731
    model = model._orig_mod if compiled(model) else model
    alone = isinstance(model, nn.Module) and not (model._parameters or model._buffers)
    if alone and [n for n, _ in model.named_children()] == ["module"]:
        model = model.module._orig_mod if compiled(model.module) else model.module
    return model


class Teacher(nn.Module, ABC):
    """A frozen model that predicts on target images; never trained, never wrapped in DDP."""

    model: nn.Module

    @abstractmethod
    def update(self, student: nn.Module, step: int) -> None:
        """Follow the student after the optimiser step that preceded iteration ``step``."""

    def prepare_for_prediction(self) -> None:
        """Put the model in the mode it predicts in (dropout and drop-path off)."""
        self.model.eval()

    @torch.no_grad()
    def predict(self, task: Task, images: Any) -> Any:
        """The task's prediction of the teacher on ``images``, without gradients.

        Raises:
            ConfigError: a BatchNorm layer that normalises with the batch's statistics
                (``EMATeacher``'s ``norm="batch"``) sees one value per channel (one image).
        """
        self.prepare_for_prediction()
        try:
            return task.predict(self.model, images)
        except ValueError as e:  # (torch's words for it name no setting)
            if (said := checks.one_value_per_channel(e, "the teacher")) is None:
                raise
            raise said from e

    @torch.no_grad()
    def forward(self, images: Any) -> Any:
        """The model's output on ``images`` in the mode it predicts in, without gradients."""
        self.prepare_for_prediction()
        return self.model(images)

    def train(self, mode: bool = True) -> Teacher:
        # The teacher's mode is set by prepare_for_prediction alone (called by predict and
        # forward); train() and eval() calls that reach it through a parent module must not
        # switch its dropout back on.
        return self


class EMATeacher(Teacher):
    """Exponential moving average of the student's weights (the mean teacher).

    Step 0 copies the student. At step t > 0, with ``a = min(1 - 1 / (t + 1), alpha)``
    (published), every float parameter becomes ``a * teacher + (1 - a) * student`` (one fused
    lerp); where the student is NaN or Inf the teacher keeps its own value.

    Args:
        model: the student; the teacher holds a deep copy without gradients.
        alpha: the EMA decay (published: 0.999 segmentation, 0.9 classification and detection);
            1 leaves ``a = 1 - 1 / (t + 1)``: the mean of every student so far, not a fixed copy.
        buffers: buffers (BatchNorm statistics) after step 0: ``"own"`` kept (published for
            classification and segmentation: parameters only), ``"ema"`` float ones averaged
            like parameters and integer ones copied, ``"copy"`` copied from the student.
        norm: BatchNorm when predicting: ``"batch"`` normalises with the predicted batch's
            statistics (train mode, as published; with ``"own"`` buffers its running
            statistics then follow the target), ``"running"`` with the running ones (eval).

    Raises:
        ConfigError: an alpha outside [0, 1], an unknown ``buffers`` or ``norm``, or no model;
            (from ``update``) a step that is no int >= 0, a student of another
            architecture, with its parameters registered in another order, or moved to another
            device than the teacher (one of another float dtype is averaged in the teacher's).
    """

    def __init__(
        self,
        model: nn.Module,
        alpha: float = 0.999,
        buffers: BufferPolicy = "own",
        norm: NormMode = "batch",
    ) -> None:
        super().__init__()
        checks.check_ema_settings(alpha, buffers, norm, unwrap(model))
        self.alpha, self.buffer_policy, self.norm = float(alpha), buffers, norm
        self.model = copy.deepcopy(unwrap(model)).eval()  # as it predicts (train(): no-op)
        self.model.requires_grad_(False)
        self._norm_layers = [m for m in self.model.modules() if isinstance(m, _BatchNorm)]
        self._paired = False  # the parameters' order checked against the student's

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, buffers={self.buffer_policy!r}, norm={self.norm!r}"

    def decay(self, step: int) -> float:
        """The EMA coefficient ``a`` used at ``step`` (0 at step 0: a copy of the student);
        a negative step raises ConfigError."""
        if step < 0:  # (-1 divided by zero)
            raise ConfigError(f"the teacher's decay is defined for steps >= 0, got {step!r}")
        return min(1.0 - 1.0 / (step + 1), self.alpha)

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> None:
        student, step = unwrap(student), checks.update_step(step)
        if step == 0:
            try:
                self.model.load_state_dict(student.state_dict())
            except RuntimeError as e:  # e.g. a teacher built from another model
                raise ConfigError(f"the teacher is not the student's architecture: {e}") from e
        if not self._paired:  # once per process (after a resume too): the EMA pairs in order
            checks.check_same_parameters(self.model, student)
            self._paired = True
        if step == 0:
            return
        weight = 1.0 - self.decay(step)
        t_params, s_params = _floating_pairs(self.model.parameters(), student.parameters())
        torch._foreach_lerp_(t_params, _finite(s_params, t_params), weight)
        if self.buffer_policy == "own":
            return
        t_bufs, s_bufs = list(self.model.buffers()), list(student.buffers())
        if self.buffer_policy == "copy":
            torch._foreach_copy_(t_bufs, s_bufs)
            return
        t_float, s_float = _floating_pairs(t_bufs, s_bufs)
        if t_float:
            torch._foreach_lerp_(t_float, _finite(s_float, t_float), weight)
        t_int = [t for t in t_bufs if not t.is_floating_point()]
        s_int = [s for s in s_bufs if not s.is_floating_point()]
        if t_int:
            torch._foreach_copy_(t_int, s_int)

    def prepare_for_prediction(self) -> None:
        self.model.eval()
        if self.norm == "batch":
            for m in self._norm_layers:
                m.train()


def _finite(new: list[torch.Tensor], old: list[torch.Tensor]) -> list[torch.Tensor]:
    """``new`` with each NaN or Inf replaced by ``old``'s value there."""
    if new and new[0].device.type == "cpu":  # one fused norm per tensor finds the few to mend
        ok = torch.stack(torch._foreach_norm(new)).isfinite().tolist()
        return [n if o else torch.where(torch.isfinite(n), n, t) for n, t, o in zip(new, old, ok)]
    return _mend_all(new, old)  # on a GPU a read-back would stall it at every update


def _mend_all(
    new: list[torch.Tensor], old: list[torch.Tensor], size: int = 1 << 24
) -> list[torch.Tensor]:
    # every value, over runs of tensors of one dtype flattened into one (at most ``size`` values,
    # or one tensor): a few kernels per run instead of two per tensor, nothing read back (a
    # ResNet-50 on an H200: 8.1 -> 3.7 ms per update, benchmarks/results/sync_check.md)
    runs: list[list[int]] = []
    count = 0
    for i, n in enumerate(new):
        if runs and n.dtype == new[runs[-1][0]].dtype and count + n.numel() <= size:
            runs[-1].append(i)
            count += n.numel()
        else:
            runs.append([i])
            count = n.numel()
    out = []
    for run in runs:
        flat = torch.cat([new[i].reshape(-1) for i in run])
        flat = torch.where(flat.isfinite(), flat, torch.cat([old[i].reshape(-1) for i in run]))
        out += [
            f.view(new[i].shape) for f, i in zip(flat.split([new[i].numel() for i in run]), run)
        ]
    return out


def _floating_pairs(teacher: Any, student: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    teacher, student = list(teacher), list(student)
    checks.check_tensor_pairs(teacher, student)
    pairs = [(t, s.detach()) for t, s in zip(teacher, student) if t.is_floating_point()]
    return [t for t, _ in pairs], [s if s.dtype == t.dtype else s.to(t.dtype) for t, s in pairs]
