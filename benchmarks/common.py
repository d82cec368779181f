"""What the benchmark scripts share: timing training alone, mean ± std cells, 95 % intervals,
paired differences over seeds, and the name of the device a row ran on."""

from __future__ import annotations

import math
import statistics
import time
from typing import Any


def time_training(loop: Any) -> list[float]:
    """Wrap ``loop.train_step`` so that the seconds spent training (evaluation excluded,
    CUDA work waited for) are summed into the returned one-element list."""
    import torch

    spent = [0.0]
    step = loop.train_step
    cuda = loop.device.type == "cuda"

    def timed() -> Any:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = step()
        if cuda:
            torch.cuda.synchronize()
        spent[0] += time.perf_counter() - t0
        return out

    loop.train_step = timed
    return spent


def train_steps(loop: Any, n: int) -> None:
    """``n`` iterations of ``loop`` without its hooks (no evaluation, logs or checkpoints)."""
    for _ in range(n):
        loop.train_step()
        loop.step += 1


def device_name(loop: Any) -> str:
    import torch

    return torch.cuda.get_device_name() if loop.device.type == "cuda" else "cpu"


def mean_std(values: list[float | None], digits: int = 1, scale: float = 100.0) -> str:
    """``mean ± std`` of the scaled values, missing and NaN ones left out; ``-`` if none."""
    kept = [scale * v for v in values if v is not None and not math.isnan(v)]
    if not kept:
        return "-"
    std = statistics.stdev(kept) if len(kept) > 1 else 0.0
    return f"{statistics.mean(kept):.{digits}f} ± {std:.{digits}f}"


def interval95(values: list[float | None], digits: int = 1, scale: float = 100.0) -> str:
    """``[lo, hi]``: the 95 % interval of the mean of the scaled values (Student's t with
    n - 1 degrees of freedom), missing and NaN ones left out; ``-`` for fewer than two."""
    from scipy import stats

    kept = [scale * v for v in values if v is not None and not math.isnan(v)]
    if len(kept) < 2:
        return "-"
    half = stats.t.ppf(0.975, len(kept) - 1) * statistics.stdev(kept) / math.sqrt(len(kept))
    mean = statistics.mean(kept)
    return f"[{mean - half:.{digits}f}, {mean + half:.{digits}f}]"


def paired_differences(
    by: dict[str, dict[int, dict]],
    pairs: list[tuple[str, str]],
    models: tuple[str, ...] = ("student", "teacher"),
    digits: int = 1,
    interval: bool = False,
) -> list[str]:
    """Table rows ``| a - b | model | seeds | mean ± std | wins |`` of the per-seed
    difference of each score in ``models`` between methods ``a`` and ``b`` (rows of ``by``
    are ``method -> seed -> run``), over the seeds both ran and both scored; with
    ``interval``, the 95 % interval of the mean difference (``interval95``) before the
    wins."""
    lines = []
    for a, b in pairs:
        seeds = sorted(set(by.get(a, {})) & set(by.get(b, {})))
        for who in models:
            d = [
                by[a][s][who] - by[b][s][who]
                for s in seeds
                if by[a][s].get(who) is not None and by[b][s].get(who) is not None
            ]
            if d:
                wins = sum(x > 0 for x in d)
                ci = f" {interval95(d, digits)} |" if interval else ""
                lines.append(
                    f"| {a} - {b} | {who} | {len(d)} | {mean_std(d, digits)} |{ci} "
                    f"{wins} / {len(d)} |"
                )
    return lines
