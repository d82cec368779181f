"""Data parallelism across processes started by ``torchrun`` (``ProcessGroup``, the loop's
``Collective`` for them).

Every rank holds a full student, teacher and method; each draws its own share of the source
and target batches (``ResumableSampler`` with its rank); after all loss branches of an
iteration have been back-propagated, the gradients of every trainable parameter are averaged
across ranks in one coalesced all-reduce, then every rank takes the same optimiser step. This
is the gradient averaging of ``DistributedDataParallel``, done once per iteration after the
last branch rather than inside each backward: the loop calls backward once per loss branch,
and loss terms may call any method of the student (not only ``forward``), which a DDP wrapper
would not see. The teacher is never synchronised: it follows the (identical) student on every
rank. BatchNorm layers normalise with their rank's share of the batch, and each rank keeps
its own running statistics: evaluation and checkpoints (rank 0 only) use rank 0's, and a
resumed run starts every rank from them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from mic.core.errors import ConfigError
from mic.core.loop import Collective


@dataclass(frozen=True)
class ProcessInfo:
    """This process's place in a data-parallel run (rank 0 of 1 without ``torchrun``)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    """The processes the environment's WORLD_SIZE names (unset, empty or not a whole number:
    1; ``init_distributed`` refuses the last)."""
    text = (os.environ.get("WORLD_SIZE") or "").strip()
    return int(text) if text.isdigit() else 1


def init_distributed(device: str = "auto", backend: str | None = None) -> ProcessInfo:
    """Join the process group that ``torchrun`` describes in the environment (RANK,
    WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); a single process otherwise.

    Raises:
        ConfigError: a WORLD_SIZE that is no whole number, or, where it is above 1, a RANK,
            MASTER_ADDR or MASTER_PORT missing or a RANK or LOCAL_RANK that is no whole number
            (set by hand rather than by torchrun). For one process (WORLD_SIZE unset, empty,
            0 or 1) RANK and LOCAL_RANK are not read (some launchers set LOCAL_RANK=-1 there).
    """
    read = {k: (os.environ.get(k) or "").strip() for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    read["WORLD_SIZE"] = read["WORLD_SIZE"] or "1"
    bad = [f"WORLD_SIZE={read['WORLD_SIZE']!r}"] * (not read["WORLD_SIZE"].isdigit())
    if not bad and int(read["WORLD_SIZE"]) > 1:
        bad = [
            f"{k}={read[k]!r}" if read[k] else f"{k} unset"
            for k in ("RANK", "LOCAL_RANK")
            if not read[k].isdigit() and (read[k] or k == "RANK")  # (LOCAL_RANK unset: 0)
        ]
        bad += [f"{k} unset" for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if bad:
        raise ConfigError(
            f"the environment describes a torchrun process group mic cannot read "
            f"({', '.join(bad)}): torchrun sets WORLD_SIZE, RANK and LOCAL_RANK as whole "
            "numbers, with MASTER_ADDR and MASTER_PORT; start the run with torchrun, or unset "
            "them for one process"
        )
    world = int(read["WORLD_SIZE"])
    if world <= 1:
        return ProcessInfo()
    rank = int(read["RANK"])
    local = int(read["LOCAL_RANK"] or "0")
    if device != "cpu" and torch.cuda.is_available():
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        # with CUDA present, both: NCCL reduces CUDA tensors, gloo CPU ones (a CPU run)
        default = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend or default)
    return ProcessInfo(rank, local, world)


def process_info() -> ProcessInfo:
    """The current process's place in the group (a single process when none is set up)."""
    if not (dist.is_available() and dist.is_initialized()):
        return ProcessInfo()
    return ProcessInfo(
        dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size()
    )


def broadcast_state(module: nn.Module, src: int = 0) -> None:
    """Make every rank's parameters and buffers equal to rank ``src``'s."""
    if not process_info().enabled:
        return
    for t in [*module.parameters(), *module.buffers()]:
        dist.broadcast(t.data, src)


def all_reduce_gradients(params: Iterable[nn.Parameter]) -> None:
    """Average gradients across ranks, one all-reduce per device and dtype.

    A trainable parameter without a gradient on this rank takes part with zeros, so that ranks
    whose branches touched different parameters (an image without pseudo-labels, say) still
    agree on the buffer they reduce. One flag per parameter travels in the same all-reduce:
    where no rank had a gradient, the gradient goes back to ``None``, so that the optimiser
    skips the parameter (no weight decay, no momentum) as it does in a single process. Only a
    rank that lacked some gradient reads the flags (one host synchronisation then).
    """
    group = process_info()
    if not group.enabled:
        return
    buckets: dict[tuple[torch.device, torch.dtype], list[tuple[nn.Parameter, bool]]] = {}
    for p in params:
        if p.requires_grad:
            had = p.grad is not None
            if not had:
                p.grad = torch.zeros_like(p)
            buckets.setdefault((p.grad.device, p.grad.dtype), []).append((p, had))
    for (device, dtype), entries in buckets.items():
        flags = torch.tensor([float(had) for _, had in entries], device=device, dtype=dtype)
        flat = torch.cat([*(p.grad.reshape(-1) for p, _ in entries), flags])
        dist.all_reduce(flat)
        offset = 0
        for p, _ in entries:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad)).div_(group.world_size)
            offset += n
        if not all(had for _, had in entries):
            anywhere = flat[offset:].tolist()
            for (p, had), count in zip(entries, anywhere):
                if not had and count == 0:
                    p.grad = None


def all_reduce_mean(values: Tensor) -> Tensor:
    """The mean of ``values`` over ranks (``values`` itself in a single process)."""
    group = process_info()
    if not group.enabled:
        return values
    out = values.detach().clone()
    dist.all_reduce(out)
    return out / group.world_size


def gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in one process)."""
    group = process_info()
    if not group.enabled:
        return [obj]
    out: list[Any] = [None] * group.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself in one process)."""
    if not process_info().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


def per_process_batch_size(global_batch: int, world_size: int, name: str) -> int:
    """The batch size of each of ``world_size`` processes for a global batch size.

    Raises:
        ConfigError: the global batch does not divide among the processes.
    """
    if global_batch % world_size:
        raise ConfigError(
            f"loader.{name}_batch_size={global_batch} does not divide among {world_size} "
            "processes; give a global batch size that is a multiple of the process count"
        )
    return global_batch // world_size


class ProcessGroup(Collective):
    """The ``Collective`` of the process group ``torchrun`` set up (``init_distributed``).

    CPU tensors are reduced through gloo; with NCCL (CUDA runs) small host-side values such as
    stop flags travel on ``device``.

    Args:
        device: the device of this process's model (NCCL reduces tensors on it).
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        group = process_info()
        self.rank, self.world_size = group.rank, group.world_size
        self.device = torch.device(device)

    def broadcast_module(self, module: nn.Module) -> None:
        broadcast_state(module)

    def average_gradients(self, params: Iterable[nn.Parameter]) -> None:
        all_reduce_gradients(params)

    def mean(self, values: Tensor) -> Tensor:
        if self.world_size == 1:
            return values
        comm = self.device if self.device.type == "cuda" else torch.device("cpu")
        return all_reduce_mean(values.to(comm)).to(values.device)
