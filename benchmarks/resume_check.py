"""Is a run stopped with SIGINT and resumed bitwise the run that was never stopped, on this
machine's device? And is a repeated run?

    python -m benchmarks.resume_check                      # device=auto (a GPU where there is one)
    python -m benchmarks.resume_check --deterministic false

Trains digits for 200 iterations three times through ``mic-train``: uninterrupted, again, and
stopped with SIGINT once its ``iter_00000100.pt`` exists, then resumed with ``resume=auto``;
compares every tensor of the final checkpoints (student, teacher, optimiser, random states)
and prints how many differ. ``tests/test_resume.py`` checks the same on the CPU.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TRAIN = [
    "log.progress=false",
    "iterations=200",
    "adaptation_start=50",
    "checkpoint.interval=50",
    "eval.interval=0",
]


def mic_train(folder: Path, overrides: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "mic.train", *TRAIN, *overrides, f"hydra.run.dir={folder}"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def tensors(state: Any, prefix: str = "") -> dict[str, Any]:
    import torch

    if isinstance(state, torch.Tensor):
        return {prefix: state}
    if isinstance(state, dict):
        return {k: v for key, s in state.items() for k, v in tensors(s, f"{prefix}/{key}").items()}
    return {}


def final(folder: Path) -> dict[str, Any]:
    import torch

    newest = sorted((folder / "checkpoints").glob("iter_*.pt"))[-1]
    return tensors(torch.load(newest, map_location="cpu", weights_only=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deterministic", choices=["true", "false"], default="true")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    overrides = [f"deterministic={args.deterministic}", f"device={args.device}"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("once", "again"):
            if mic_train(root / name, overrides).wait() != 0:
                sys.exit(f"the {name} run failed: rerun it by hand to see why")
        stopped = mic_train(root / "stopped", overrides)
        while not (root / "stopped/checkpoints/iter_00000100.pt").exists():
            if stopped.poll() is not None:
                sys.exit("the run to stop ended before its checkpoint at iteration 100")
            time.sleep(0.1)
        stopped.send_signal(signal.SIGINT)
        stopped.wait()
        if mic_train(root / "stopped", [*overrides, "resume=auto"]).wait() != 0:
            sys.exit("the resumed run failed")
        once = final(root / "once")
        for name, label in (("again", "run again"), ("stopped", "stopped and resumed")):
            other = final(root / name)
            differ = [k for k in once if k not in other or not once[k].equal(other[k])]
            print(
                f"deterministic={args.deterministic}, {label}: {len(differ)} of {len(once)} "
                f"checkpoint tensors differ from the uninterrupted run's {differ[:3]}"
            )


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
