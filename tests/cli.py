"""``mic-train`` (and ``mic-score``) in a process of its own, for tests that meet the command
line as a user does.

Each call runs ``mic.train.main()`` (what the ``mic-train`` console script runs; ``mic-score``:
``mic.cli.score()``) in a new
process with its own argv, environment, working folder, stdout and stderr, and returns its
exit status and output. The processes are forked from a server that imported torch, timm,
Hydra and mic once (``multiprocessing``'s forkserver), so that a case costs its own work and
not seconds of imports; a few tests in tests/test_cli.py run the real console script.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).parent.parent
FAULTS = Path(__file__).parent / "faults" / "environment.py"  # environment faults

_PRELOAD = [
    "torch",
    "torchvision",
    "timm",
    "torchmetrics",
    "hydra",
    "mic.train",
    "mic.scoring",
    "mic.tasks.classification",
    "mic.tasks.segmentation",
    "mic.tasks.detection",
    "mic.datasets",
]
_context = None


def _forkserver():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(_PRELOAD)
    return _context


def _child(
    args: list[str], env: dict[str, str], cwd: str, out: str, err: str, status: str, command: str
) -> None:
    """Runs in the forked process: the environment, the faults, then ``command``'s main; its
    exit status is also written to ``status`` (the forkserver's report of it is lost now and
    then under load: multiprocessing then gives 255)."""
    # multiprocessing made this process's default start method the forkserver's: mic-train's
    # data loader workers would start as new interpreters (seconds each) instead of forks
    multiprocessing.set_start_method(None, force=True)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(handle, fd)
        os.close(handle)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    if cwd not in sys.path:  # as the console script: _target_ modules of the working folder
        sys.path.insert(0, cwd)
    if env.get("MIC_TEST_FAULT"):  # by its path: a module name could be one imported before
        spec = importlib.util.spec_from_file_location("mic_test_fault", FAULTS)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    import torch

    torch.set_num_threads(1)
    sys.argv = [command, *args]
    from mic.cli import score
    from mic.train import main

    main = score if command == "mic-score" else main

    code = 1  # an exception: multiprocessing prints its traceback and exits 1
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
        raise
    finally:
        Path(status).write_text(str(code))


def run_mic_train(
    args: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``mic-train *args`` in a process of its own; its status, stdout and stderr."""
    return _run("mic-train", args, env, cwd, timeout)


def run_mic_score(
    args: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``mic-score *args`` in a process of its own; its status, stdout and stderr."""
    return _run("mic-score", args, env, cwd, timeout)


def _run(
    command: str, args: list[str], env: dict[str, str] | None, cwd: Path, timeout: float
) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1", **(env or {})}
    with tempfile.TemporaryDirectory() as d:
        out, err, status = Path(d) / "out", Path(d) / "err", Path(d) / "status"
        process = _forkserver().Process(
            target=_child,
            args=(list(args), environment, str(cwd), str(out), str(err), str(status), command),
        )
        process.start()
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
        code = process.exitcode if process.exitcode is not None else -9
        if status.is_file() and status.read_text():  # what main() ended with
            code = int(status.read_text())
        return subprocess.CompletedProcess([command, *args], code, out.read_text(), err.read_text())


def run_many(calls: list[dict], workers: int = 2) -> list[subprocess.CompletedProcess]:
    """``run_mic_train(**call)`` for every call, ``workers`` at a time."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda call: run_mic_train(**call), calls))
