"""Is a run stopped with SIGINT and resumed bitwise the run that was never stopped, on this
machine's device? And is a repeated run?

    python -m benchmarks.resume_check                      # device=auto (a GPU where there is one)
    python -m benchmarks.resume_check --deterministic false
    python -m benchmarks.resume_check --device cpu

Trains digits for 200 iterations three times through ``mic-train``: uninterrupted, again, and
stopped with SIGINT once its ``iter_00000100.pt`` exists, then resumed with ``resume=auto``;
compares every tensor of the final checkpoints (student, teacher, optimiser, random states)
and prints how many differ. A run that fails is reported with the end of its stderr and the
command that reruns it. ``tests/test_resume.py`` checks the same on the CPU.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

TRAIN = [
    "log.progress=false",
    "iterations=200",
    "adaptation_start=50",
    "checkpoint.interval=50",
    "eval.interval=0",
]


@dataclass
class Run:
    """A ``mic-train`` process: its command and the file its stderr goes to."""

    process: subprocess.Popen
    command: list[str]
    log: Path

    def failed(self, what: str, lines: int = 20) -> NoReturn:
        """Ends the check with ``what``, the last ``lines`` of the run's stderr and the
        command that reruns it."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        tail = "\n".join("  " + line for line in text.splitlines()[-lines:])
        sys.exit(
            f"{what}; the end of its stderr:\n{tail or '  (nothing)'}\n"
            f"rerun it by hand: {shlex.join(self.command)}"
        )


def mic_train(folder: Path, overrides: list[str], log: Path) -> Run:
    """Starts ``mic-train`` in ``folder`` with ``overrides``, its stderr written to ``log``."""
    command = [sys.executable, "-m", "mic.train", *TRAIN, *overrides, f"hydra.run.dir={folder}"]
    with open(log, "w") as err:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
    return Run(process, command, log)


def check_device(parser: argparse.ArgumentParser, device: str) -> None:
    """An argparse error unless ``device`` is one mic-train can use here (mic's own check,
    ``resolve_device``)."""
    import torch

    from mic.core.errors import ConfigError
    from mic.experiment import resolve_device

    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {device}: there is no CUDA device here; use --device cpu or auto")
    try:
        resolve_device(device)
    except ConfigError as e:
        parser.error(f"--device {device}: {e}")
    except RuntimeError:
        parser.error(f"--device {device}: choose auto, cpu, cuda, cuda:N or mps")


def tensors(state: Any, prefix: str = "") -> dict[str, Any]:
    import torch

    if isinstance(state, torch.Tensor):
        return {prefix: state}
    if isinstance(state, dict):
        return {k: v for key, s in state.items() for k, v in tensors(s, f"{prefix}/{key}").items()}
    return {}


def final_name(folder: Path) -> str:
    """The name of a run's newest ``iter_*.pt``."""
    return sorted(p.name for p in (folder / "checkpoints").glob("iter_*.pt"))[-1]


def final(folder: Path) -> dict[str, Any]:
    import torch

    newest = folder / "checkpoints" / final_name(folder)
    return tensors(torch.load(newest, map_location="cpu", weights_only=False))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.resume_check", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--deterministic", choices=["true", "false"], default="true")
    parser.add_argument(
        "--device",
        default="auto",
        help="where the runs train: auto (default: cuda where there is one, else cpu), cpu, "
        "cuda, cuda:N, mps",
    )
    args = parser.parse_args(argv)
    check_device(parser, args.device)
    overrides = [f"deterministic={args.deterministic}", f"device={args.device}"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("once", "again"):
            run = mic_train(root / name, overrides, root / f"{name}.stderr")
            if run.process.wait() != 0:
                run.failed(f"the {name} run failed")
        stopped = mic_train(root / "stopped", overrides, root / "stopped.stderr")
        while not (root / "stopped/checkpoints/iter_00000100.pt").exists():
            if stopped.process.poll() is not None:
                stopped.failed("the run to stop ended before its checkpoint at iteration 100")
            time.sleep(0.1)
        stopped.process.send_signal(signal.SIGINT)
        code = stopped.process.wait()
        left = sorted(p.name for p in (root / "stopped/checkpoints").glob("iter_*.pt"))
        if code != 128 + signal.SIGINT or left[-1] == final_name(root / "once"):
            stopped.failed(  # (a run that finished before the signal proves nothing)
                f"the run to stop was not stopped by the signal (status {code}, newest "
                f"checkpoint {left[-1]})"
            )
        resumed = mic_train(root / "stopped", [*overrides, "resume=auto"], root / "resumed.stderr")
        if resumed.process.wait() != 0:
            resumed.failed("the resumed run failed")
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
