"""The communication share of a data-parallel iteration: is one coalesced all-reduce after the
last branch as fast as DistributedDataParallel's bucketed overlap would be?

The loop averages gradients once per iteration, after every loss branch has been
back-propagated on its own (``ProcessGroup.average_gradients``: one all-reduce per device and
dtype). DDP instead reduces buckets while the backward runs; with the loop's one backward per
branch it would reduce only during the last branch's backward (``no_sync`` for the others), so
the time it can save is at most the time the all-reduce takes. This script measures, on two
processes, the seconds per iteration and the seconds in the gradient all-reduce (plus the one
small all-reduce of the numerics check), for the bundled benchmarks' models:

    python -m benchmarks.distributed                  # 2 gloo processes on the CPU
    python -m benchmarks.distributed --device cuda    # 2 NCCL processes on 2 GPUs

and writes benchmarks/results/distributed.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

CASES = {
    "digits (small CNN, mean teacher + MIC)": ["loader.source_batch_size=64"],
    "streets (small U-Net, DACS + MIC)": ["experiment=streets", "dataset.train_count=256"],
    "det_shapes (Faster R-CNN RegNetX-200MF, SADA + MIC)": [
        "experiment=det_shapes",
        "adaptation_start=0",
        "dataset.source.length=64",
        "dataset.target.length=64",
        "dataset.test.length=4",
    ],
}
COMMON = ["log.progress=false", "log.tensorboard=false", "eval.interval=0", "eval.adabn_batches=0"]


def worker(name: str, device: str, iterations: int, warmup: int, out: str) -> None:
    """Runs in each process under torchrun: time iterations and the gradient all-reduce."""
    import torch

    from mic.experiment import build_experiment, load_config
    from mic.training import process_info

    torch.set_num_threads(1)
    overrides = [*COMMON, *CASES[name], f"device={device}", f"iterations={iterations}"]
    overrides += ["adaptation_start=0", "eval.models=[student]"]
    exp = build_experiment(load_config(overrides), None)
    loop = exp.loop
    sync = torch.cuda.synchronize if loop.device.type == "cuda" else (lambda: None)
    spent = {"reduce": 0.0}
    average = loop.collective.average_gradients

    def timed(params):
        sync()
        t0 = time.perf_counter()
        average(params)
        sync()
        spent["reduce"] += time.perf_counter() - t0

    loop.collective.average_gradients = timed
    times = []
    for step in range(iterations):
        if step == warmup:
            spent["reduce"] = 0.0
        sync()
        t0 = time.perf_counter()
        loop.train_step()
        sync()
        loop.step += 1
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    measured = len(times)
    params = sum(p.numel() for p in loop.parameters())
    record = {
        "case": name,
        "parameters": params,
        "iteration_s": sum(times) / measured,
        "reduce_s": spent["reduce"] / measured,
        "iterations": measured,
    }
    if process_info().is_main:
        Path(out).write_text(json.dumps(record))


def run(device: str, iterations: int, warmup: int) -> list[dict]:
    rows = []
    for name in CASES:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "record.json"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
            cmd += [f"--master_port={port}", "-m", "benchmarks.distributed", "--_worker", name]
            cmd += [f"--device={device}", f"--iterations={iterations}", f"--warmup={warmup}"]
            cmd += [f"--_out={out}"]
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
            rows.append(json.loads(out.read_text()))
            print(rows[-1], flush=True)
    return rows


def write(rows: list[dict], device: str, command: str) -> None:
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    lines = [
        "# Communication share of a data-parallel iteration",
        "",
        "Written by `benchmarks/distributed.py` (see its docstring for what is measured).",
        "",
        f"Command: `{command}`; 2 processes, {device} ({'gloo' if device == 'cpu' else 'nccl'}), "
        f"one thread each; {machine}. Seconds per iteration and in the gradient all-reduce are "
        "means over the measured iterations of process 0.",
        "",
        "| model | parameters | s / iteration | s in the all-reduce | share | "
        "the most DDP's overlap could save |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        share = r["reduce_s"] / r["iteration_s"]
        lines.append(
            f"| {r['case']} | {r['parameters']:,} | {r['iteration_s']:.3f} | "
            f"{r['reduce_s']:.4f} | {100 * share:.1f} % | {100 * share:.1f} % of an iteration |"
        )
    lines += [
        "",
        "**Reading.** The time in the all-reduce includes waiting for the slower process, which "
        "DDP waits for too, so the last column is an upper bound. With the loop's one backward "
        "per loss branch, DDP could overlap communication only with the last branch's backward "
        "(`no_sync` for the others), so its gain is below this bound. The loop keeps its one "
        "coalesced all-reduce per iteration (which also lets loss terms call any method of the "
        "model, not only `forward`); the stop request and the numerics check ride on one more, "
        "small all-reduce of a few flags.",
    ]
    (RESULTS / "distributed.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "distributed.json").write_text(json.dumps(rows, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        worker(args._worker, args.device, args.iterations, args.warmup, args._out)
        return
    rows = run(args.device, args.iterations, args.warmup)
    command = "python -m benchmarks.distributed" + (
        f" --device {args.device}" if args.device != "cpu" else ""
    )
    write(rows, args.device, command)


if __name__ == "__main__":
    main()
