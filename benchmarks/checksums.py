"""Final-weight checksums of short seeded CPU runs: the proof that a refactor changed nothing.

Each case is a ``mic-train`` config cut to a few dozen deterministic CPU iterations. The
checksum is a SHA-256 over the student's, the teacher's and the method's state (every tensor's
name, dtype, shape and bytes, in name order). Record them before a change that must not alter
behaviour and check them after:

    python -m benchmarks.checksums --record    # writes benchmarks/results/checksums.json
    python -m benchmarks.checksums             # compares, exit status 1 on any difference
    python -m benchmarks.checksums --only digits_mean_teacher_mic
    python -m benchmarks.checksums --record --file /tmp/base.json   # another file, for both

A change that is meant to alter the random draws (or anything else a run computes) records new
checksums in the same commit and says so in its message. The runs use one CPU thread: float
reductions, and so the last bits of the weights, depend on the thread count. They also depend
on the CPU's vector instructions and on the library versions, so the file records the
environment beside the checksums, and a comparison in another environment says so instead of
reporting a change: there, record the base commit first (e.g. from a ``git worktree``) into
a file of its own (``--record --file /tmp/base.json``) and compare against that (``--file
/tmp/base.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "checksums.json"

COMMON = ["device=cpu", "deterministic=true", "log.progress=false", "eval.interval=0", "seed=3"]
DIGITS = ["iterations=30", "adaptation_start=10", "loader.source_batch_size=16"]
DIGITS += ["loader.target_batch_size=16", "eval.adabn_batches=0"]
STREETS = ["experiment=streets", "iterations=16", "dataset.train_count=64"]
STREETS += ["dataset.test_count=8", "loader.source_batch_size=4", "loader.target_batch_size=4"]
STREETS += ["eval.adabn_batches=0", "scheduler.warmup_iters=4"]
SHAPES = ["experiment=det_shapes", "iterations=16", "adaptation_start=6"]
SHAPES += ["dataset.source.length=32", "dataset.target.length=32", "dataset.test.length=4"]
# an untrained teacher's boxes score low: at 0.05 the masked branch (and self-training) act from
# the first adaptation iteration on; at the published 0.8 they would not within 16 iterations
SHAPES += ["eval.adabn_batches=0", "task.score_threshold=0.05"]

#: name -> overrides on top of COMMON
CASES: dict[str, list[str]] = {
    "digits_mean_teacher_mic": DIGITS,
    "digits_sdat_mic": [*DIGITS, "method=sdat"],
    "digits_dann_mic": [*DIGITS, "method=dann"],
    "digits_mean_teacher_mic_accumulate2": [*DIGITS, "accumulate=2"],
    "streets_dacs_mic": STREETS,
    "streets_daformer_mic": [*STREETS, "method=daformer"],
    "streets_dacs_mic_source_target": [*STREETS, "mic=segmentation_source_target"],
    "det_shapes_sada_mic": SHAPES,
    "det_shapes_mean_teacher_mic": [*SHAPES, "method=mean_teacher"],
    # pseudo-boxes at >= 0.08, ignore boxes in [0.05, 0.08) (the detector keeps boxes >= 0.05)
    "det_shapes_sada_mic_ignore": [
        *SHAPES,
        "task.score_threshold=0.08",
        "task.ignore_threshold=0.05",
    ],
}


def state_checksum(states: dict[str, dict]) -> str:
    """SHA-256 over named state dicts: each tensor's key, dtype, shape and bytes."""
    import torch

    digest = hashlib.sha256()
    for owner in sorted(states):
        for key in sorted(states[owner]):
            value = states[owner][key]
            if not isinstance(value, torch.Tensor):
                continue
            t = value.detach().cpu().contiguous()
            digest.update(f"{owner}.{key}:{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def run_case(name: str) -> str:
    """Run one case (in this process) and return its checksum."""
    from mic.experiment import build_experiment, load_config

    cfg = load_config([*COMMON, *CASES[name]])
    with contextlib.redirect_stdout(io.StringIO()):  # evaluation summaries and tables
        exp = build_experiment(cfg, None)
        exp.loop.run()
    states = {"student": exp.student.state_dict(), "method": exp.method.state_dict()}
    if exp.loop.teacher is not None:
        states["teacher"] = exp.loop.teacher.model.state_dict()
    return state_checksum(states)


def environment() -> dict[str, str]:
    """What besides the code decides the last bits of the weights: library versions, the CPU's
    vector instruction set (torch's kernels) and its model name."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    env = {"python": platform.python_version(), "machine": platform.machine()}
    for package in ("torch", "torchvision", "timm", "numpy"):
        try:
            env[package] = version(package)
        except PackageNotFoundError:
            env[package] = "absent"
    env["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    env["cpu"] = names[0] if names else "unknown"
    return env


def _recorded(parser: argparse.ArgumentParser, path: Path, record: bool) -> dict:
    """The checksums file ``path`` as a dict: empty when recording a new one; an argparse
    error when comparing against a missing one, or when it is not a checksums file."""
    if not path.exists():
        if record:
            return {}
        parser.error(f"--file {path}: no such file; record it first with --record --file {path}")
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        recorded = e
    if not isinstance(recorded, dict):
        why = recorded if isinstance(recorded, Exception) else "not a JSON object"
        parser.error(f"--file {path}: not a checksums file ({why})")
    return recorded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.checksums", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--record", action="store_true", help="run the cases and write their checksums to --file"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        choices=list(CASES),
        metavar="CASE",
        help=f"cases to run (default: all): {', '.join(CASES)}",
    )
    parser.add_argument(
        "--file",
        type=Path,
        default=RESULTS,
        help="the checksums file --record writes (its other cases kept) and a comparison "
        "reads (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    recorded = _recorded(parser, args.file, args.record)
    import torch

    torch.set_num_threads(1)  # float reductions depend on the thread count
    names = args.only or list(CASES)
    recorded_env = recorded.pop("environment", None)
    here = environment()
    found: dict[str, str] = {}
    failed = []
    for name in names:
        t0 = time.perf_counter()
        found[name] = run_case(name)
        want = recorded.get(name)
        status = "recorded" if args.record else ("same" if want == found[name] else "DIFFERS")
        if not args.record and want != found[name]:
            failed.append(name)
        print(f"{name:36s} {found[name][:16]}  {status}  ({time.perf_counter() - t0:.1f} s)")
    if args.record:
        args.file.parent.mkdir(parents=True, exist_ok=True)
        content = {**recorded, **found, "environment": here}
        args.file.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
        print(f"written: {args.file}")
        return 0
    if failed:
        print(f"{len(failed)} of {len(names)} cases differ: {', '.join(failed)}")
        if recorded_env != here:
            changed = sorted(k for k in here if (recorded_env or {}).get(k) != here[k])
            pairs = ", ".join(f"{k}: {recorded_env.get(k)!r} -> {here[k]!r}" for k in changed)
            where = f"differs ({pairs})" if recorded_env else f"is not in the file (here: {here})"
            base = Path(tempfile.gettempdir()) / "checksums_base.json"
            print(
                f"The recorded environment of {args.file} {where}: checksums from "
                "another environment are not comparable. Record the base commit here first, "
                "in a file of its own (e.g. from a git worktree of it: python -m "
                f"benchmarks.checksums --record --file {base}), and compare against that "
                f"(python -m benchmarks.checksums --file {base})."
            )
        return 1
    print(f"all {len(names)} cases match {args.file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
