"""The learning-rate schedule of the published detection recipe (maskrcnn-benchmark's)."""

from __future__ import annotations

from collections.abc import Sequence

from mic.core.errors import ConfigError


class WarmupMultiStep:
    """factor(t) = gamma ^ (number of ``steps`` <= t), times a linear warm-up from
    ``warmup_factor`` to 1 over the first ``warmup_iters`` iterations (published: steps 30000
    and 40000 of 60000, gamma 0.1, warm-up 500 iterations from 1/3)."""

    def __init__(
        self,
        steps: Sequence[int] = (30000, 40000),
        gamma: float = 0.1,
        warmup_iters: int = 500,
        warmup_factor: float = 1.0 / 3,
    ) -> None:
        if warmup_iters < 0 or gamma <= 0:
            raise ConfigError("scheduler warmup_iters must be >= 0 and gamma > 0")
        self.steps = sorted(int(s) for s in steps)
        self.gamma, self.warmup_iters, self.warmup_factor = gamma, int(warmup_iters), warmup_factor

    def __call__(self, t: int) -> float:
        factor = self.gamma ** sum(t >= s for s in self.steps)
        if t < self.warmup_iters:
            alpha = t / self.warmup_iters
            factor *= self.warmup_factor * (1 - alpha) + alpha
        return factor
