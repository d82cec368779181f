"""Runs that survive: SIGKILL then resume gives bitwise the weights of an uninterrupted run;
SIGTERM saves and exits cleanly."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.cli import run_mic_train

COMMON = [
    "checkpoint.interval=1",
    "checkpoint.keep=2",
    "eval.interval=0",
    "log.progress=false",
    "log.tensorboard=false",
    "deterministic=true",
    "device=cpu",
]
TASKS = {
    "classification": [
        "iterations=14",
        "adaptation_start=4",
        "loader.source_batch_size=16",
        "loader.target_batch_size=16",
    ],
    "segmentation": [
        "experiment=streets",
        "iterations=10",
        "dataset.train_count=16",
        "dataset.test_count=4",
        "loader.source_batch_size=4",
        "loader.target_batch_size=4",
        "eval.adabn_batches=1",
    ],
}


def _cmd(args, run_dir):
    return [sys.executable, "-m", "mic.train", *COMMON, *args, f"hydra.run.dir={run_dir}"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _wait_for(path_glob: str, folder: Path, proc, count: int, timeout: float = 240):
    start = time.time()
    while time.time() - start < timeout:
        if len(list(folder.glob(path_glob))) >= count or proc.poll() is not None:
            return
        time.sleep(0.05)
    raise TimeoutError(f"no {path_glob} in {folder}")


def _weights(run_dir: Path, name: str):
    return torch.load(run_dir / "checkpoints" / name, weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_sigkill_then_resume_equals_an_uninterrupted_run(task, tmp_path):
    args = TASKS[task]
    ref = tmp_path / "reference"  # (the runs not killed: forked from tests/cli.py's server)
    done = run_mic_train([*COMMON, *args, f"hydra.run.dir={ref}"], env={"MKL_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]

    run = tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(args, run), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env()
    )
    _wait_for("checkpoints/iter_*.pt", run, proc, count=2)  # somewhere in iterations 2..n
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "checkpoints" / "student.pt").exists()  # it did not finish

    resumed = run_mic_train(
        [*COMMON, *args, "resume=auto", f"hydra.run.dir={run}"], env={"MKL_NUM_THREADS": "1"}
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout
    for name in ("student.pt", "teacher.pt"):
        a, b = _weights(ref, name), _weights(run, name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k} differs"


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly(tmp_path):
    args = [*TASKS["classification"], "iterations=100000"]
    proc = subprocess.Popen(
        _cmd(args, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )
    _wait_for("checkpoints/iter_*.pt", tmp_path, proc, count=1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped by SIGTERM after iteration" in err and "resume=auto" in err
    assert "Traceback" not in err
    step = int(err.split("after iteration ")[1].split(";")[0])
    state = torch.load(tmp_path / "checkpoints" / f"iter_{step:08d}.pt", weights_only=True)
    assert state["step"] == step


def test_a_stop_crosses_process_boundaries_as_itself():
    # a run in a process pool (the benchmarks) stopped by Ctrl-C must reach the parent as a
    # TrainingInterrupted, not as a broken pool from an exception that cannot be rebuilt
    import pickle

    from mic.training.guard import TrainingInterrupted

    error = pickle.loads(pickle.dumps(TrainingInterrupted("SIGINT", 7)))
    assert isinstance(error, TrainingInterrupted)
    assert (error.reason, error.step, str(error)) == (
        "SIGINT",
        7,
        "stopped by SIGINT after iteration 7",
    )


def _eval_records(run_dir: Path) -> list[dict]:
    import json

    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if any(k.startswith("eval/") for k in r)]


@pytest.mark.parametrize("interval", [4, 0])  # stopped in an evaluation mid-run / the last
def test_sigterm_in_an_evaluation_stops_it_and_the_resumed_run_evaluates_there_first(
    interval, tmp_path
):
    """A cluster's SIGTERM in the middle of a long evaluation: the run stops at once, between
    two test batches, with the checkpoint of that iteration; resumed, it runs that evaluation
    before training on, so records, best.pt and weights are those of a run never stopped."""
    from tests.cli import run_mic_train

    args = [
        *(a for a in COMMON if not a.startswith(("checkpoint.interval", "eval.interval"))),
        "iterations=8",
        "adaptation_start=0",
        f"eval.interval={interval}",
        "checkpoint.interval=4",
        "loader.test_batch_size=64",  # 8 test batches: the signal comes at the second
        "eval.adabn_batches=1",
        "checkpoint.best_by=accuracy",
    ]
    ref, run = tmp_path / "reference", tmp_path / "stopped"
    done = run_mic_train([*args, f"hydra.run.dir={ref}"])
    assert done.returncode == 0, done.stderr[-2000:]
    stopped = run_mic_train(
        [*args, f"hydra.run.dir={run}"], env={"MIC_TEST_FAULT": "sigterm-in-evaluation"}
    )
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-2000:]
    at = interval or 8
    assert f"the evaluation at iteration {at} was stopped" in stopped.stderr
    assert f"stopped by SIGTERM after iteration {at}" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert _eval_records(run) == []  # nothing of the cut evaluation was recorded
    assert (run / "checkpoints" / f"iter_{at:08d}.pt").is_file()
    assert not (run / "checkpoints" / "best.pt").exists()
    assert not (run / "checkpoints" / "student.pt").exists()  # not finished
    # the run's log stays, the stop in it (a new run's log was deleted as a refused run's)
    (log,) = run.glob("*.log")
    assert f"stopped by SIGTERM after iteration {at}" in log.read_text()

    resumed = run_mic_train([*args, f"hydra.run.dir={run}", "resume=auto"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    text = log.read_text()  # the resume's lines appended to the stopped run's
    assert text.index("stopped by SIGTERM") < text.index("resuming from")
    assert [r["step"] for r in _eval_records(run)] == ([4, 8] if interval else [8])
    assert _eval_records(run) == _eval_records(ref)
    for name in ("student.pt", "teacher.pt"):
        a, b = _weights(ref, name), _weights(run, name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    a, b = (torch.load(r / "checkpoints" / "best.pt", weights_only=False) for r in (ref, run))
    assert a["step"] == b["step"]
    assert all(torch.equal(x, y) for x, y in zip(a["student"].values(), b["student"].values()))


class MetricFailsOnce:
    """A classification task whose metric fails at the ``MIC_TEST_METRIC_FAILS_AT``-th
    ``compute`` of the process (the first is the check of the first test batch)."""

    calls = 0

    def __new__(cls, **config):
        from mic.core.errors import ConfigError
        from mic.tasks.classification import ClassificationTask

        class Failing(ClassificationTask):
            def metric(self):
                metric = super().metric()
                compute = metric.compute

                def failing():
                    MetricFailsOnce.calls += 1
                    if str(MetricFailsOnce.calls) == os.environ.get("MIC_TEST_METRIC_FAILS_AT"):
                        raise ConfigError("the metric could not score")
                    return compute()

                metric.compute = failing
                return metric

        return Failing(**config)


def test_an_evaluation_s_error_says_where_the_run_saved_and_the_resume_makes_it_up(tmp_path):
    from tests.cli import run_mic_train

    args = [
        *(a for a in COMMON if not a.startswith(("checkpoint.interval", "eval.interval"))),
        "iterations=8",
        "adaptation_start=0",
        "eval.interval=4",
        "checkpoint.interval=0",
        "eval.adabn_batches=1",
        "task._target_=tests.test_resume.MetricFailsOnce",
    ]
    ref, run = tmp_path / "reference", tmp_path / "failed"
    done = run_mic_train([*args, f"hydra.run.dir={ref}"])
    assert done.returncode == 0, done.stderr[-2000:]
    failed = run_mic_train([*args, f"hydra.run.dir={run}"], env={"MIC_TEST_METRIC_FAILS_AT": "2"})
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert "the metric could not score. The run saved its state after iteration 4 in " in (
        failed.stderr
    )
    assert "resume=auto" in failed.stderr and "Traceback" not in failed.stderr
    resumed = run_mic_train([*args, f"hydra.run.dir={run}", "resume=auto"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [r["step"] for r in _eval_records(run)] == [4, 8]
    assert _eval_records(run) == _eval_records(ref)
    a, b = _weights(ref, "student.pt"), _weights(run, "student.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
