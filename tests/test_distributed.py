"""Data parallelism on the CPU (gloo): two processes give the weights of one process with the
same global batch."""

import os
import socket
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from mic.tasks.classification import Classifier
from tests.cli import run_mic_train


class NoNormCNN(nn.Module):
    """A classifier without BatchNorm: per-process batch statistics would make 2 x B/2 differ
    from 1 x B by design, not by a fault."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.num_classes = num_classes
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.num_features = 16

    def forward(self, x):
        return self.net(x)


def no_norm_classifier(num_classes: int) -> Classifier:
    return Classifier(NoNormCNN(), num_classes, bottleneck_dim=0)


def no_norm_segmenter(num_classes: int) -> nn.Module:
    """A two-layer segmenter without BatchNorm (full-resolution logits)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, num_classes, 3, padding=1)
    )
    net.num_classes = num_classes
    return net


COMMON = [
    "iterations=6",
    "adaptation_start=2",
    "eval.interval=0",
    "eval.models=[student]",
    "log.progress=false",
    "log.tensorboard=false",
    "device=cpu",
    # SGD: Adam's update, about lr x sign(g) where a gradient is near 0, turns float-level
    # differences of summation order into visible ones (4e-4 after 6 steps here)
    "optimizer=sgd",
    "optimizer.lr=0.01",
]
CLASSIFIER = [
    "loader.source_batch_size=16",
    "loader.target_batch_size=16",
    "model._target_=tests.test_distributed.no_norm_classifier",
    "~model.backbone",
    "~model.bottleneck_dim",
    "~model.pretrained",
]
#: name -> overrides: every draw of MIC and the augmentations, and the quality weight, must be
#: those of one process with the same global batch
RUNS = {
    "mean_teacher_mic": CLASSIFIER,  # mean teacher's terms too: MIC adds to them
    "dacs_mic": [
        "experiment=streets",
        "dataset.train_count=32",
        "dataset.test_count=4",
        "dataset.size=32",
        "loader.source_batch_size=4",
        "loader.target_batch_size=4",
        "model._target_=tests.test_distributed.no_norm_segmenter",
        "~model.widths",
        "~model.pretrained",
        "~model.norm",
        "eval.adabn_batches=0",
        "scheduler.warmup_iters=0",
    ],
}


def _run(prefix, run_dir, overrides):
    """``mic-train`` under ``prefix`` (torchrun's command); without one, one process forked
    from tests/cli.py's server."""
    args = [*COMMON, *overrides, f"hydra.run.dir={run_dir}"]
    if prefix:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [*prefix, "-m", "mic.train", *args]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    else:
        out = run_mic_train(args)
    assert out.returncode == 0, out.stderr[-3000:]
    folders = list(run_dir.parent.iterdir()) if "${now:" in str(run_dir) else [run_dir]
    assert len(folders) == 1, folders  # (each process read ${now:...} at its own time)
    return torch.load(folders[0] / "checkpoints" / "student.pt", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("run", list(RUNS))
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(run, tmp_path):
    one = _run([], tmp_path / "one", RUNS[run])
    with socket.socket() as probe:  # a free port: other test runs may be using one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    stamped = tmp_path / "two" / "${now:%H-%M-%S_%f}"  # one folder for both processes
    two = _run([*torchrun, f"--master_port={port}"], stamped, RUNS[run])
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-6)
    model = no_norm_classifier(10) if "classifier" in " ".join(RUNS[run]) else None
    initial = model.state_dict() if model is not None else no_norm_segmenter(8).state_dict()
    assert any(not torch.equal(initial[k], one[k]) for k in one)  # training moved the weights
    assert not list((tmp_path / "two").glob("*/*/.hydra")), "only one run folder"


def _reduce_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from mic.training.distributed import all_reduce_gradients

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    both, first_only, neither = (nn.Parameter(torch.zeros(3)) for _ in range(3))
    both.grad = torch.full((3,), float(rank + 1))  # 1 and 2: mean 1.5
    if rank == 0:
        first_only.grad = torch.full((3,), 4.0)  # 4 and nothing: mean 2
    all_reduce_gradients([both, first_only, neither])
    torch.save(
        {"both": both.grad, "first_only": first_only.grad, "neither": neither.grad},
        f"{out_dir}/rank{rank}.pt",
    )
    dist.destroy_process_group()


def test_gradient_all_reduce_averages_and_leaves_untouched_parameters_without_gradient(tmp_path):
    """A parameter no rank computed a gradient for keeps ``grad = None`` (so the optimiser
    skips it, weight decay included, as in one process); one that some rank touched gets the
    mean over ranks, zeros standing in where it was not touched."""
    torch.multiprocessing.spawn(
        _reduce_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True
    )
    for rank in (0, 1):
        grads = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(grads["both"], torch.full((3,), 1.5))
        torch.testing.assert_close(grads["first_only"], torch.full((3,), 2.0))
        assert grads["neither"] is None


def _stop_worker(rank: int, init_file: str, out_dir: str) -> None:
    """SIGTERM on rank 1 alone, under each checking policy: what each rank stops with."""
    import signal
    from types import SimpleNamespace

    import torch.distributed as dist

    from mic.training import ProcessGroup, TrainingGuard, TrainingInterrupted

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    found = {}
    for policy in ("skip", "ignore"):
        weight = nn.Parameter(torch.ones(2))
        weight.grad = torch.zeros(2)
        loop = SimpleNamespace(
            collective=ProcessGroup("cpu"),
            stop_reason=None,
            interrupted_by=None,
            step=5,
            skipped_steps=0,
            device=torch.device("cpu"),
            parameters=lambda w=weight: [w],
            scaler=torch.amp.GradScaler("cpu", enabled=False),
        )
        loop.request_stop = lambda reason, loop=loop: setattr(loop, "stop_reason", reason)
        guard = TrainingGuard(policy)
        try:
            with guard.running(loop):
                if rank == 1:
                    signal.raise_signal(signal.SIGTERM)
                # not stopped alone: the signal waits for the check all processes share
                before = loop.stop_reason
                guard.allow_step(loop, {"loss": torch.tensor(1.0)})
                loop.interrupted_by = loop.stop_reason  # what the loop does when it stops
        except TrainingInterrupted as e:
            found[policy] = {"before": before, "reason": e.reason, "exit": e.exit_code}
    torch.save(found, f"{out_dir}/stop{rank}.pt")
    dist.destroy_process_group()


def test_a_signal_on_one_process_stops_every_process_with_its_exit_status(tmp_path):
    """SIGTERM on one rank: every rank stops at the same check, the others naming the signal
    that reached another process, and every rank exits 128 + 15 (a pre-emption for torchrun
    and the scheduler, not a failure of the ranks that were not signalled)."""
    import signal

    torch.multiprocessing.spawn(
        _stop_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True
    )
    for policy in ("skip", "ignore"):
        first, second = (torch.load(tmp_path / f"stop{r}.pt")[policy] for r in (0, 1))
        assert first["reason"] == "SIGTERM on another process"
        assert second["reason"] == "SIGTERM"
        assert first["exit"] == second["exit"] == 128 + signal.SIGTERM
        assert first["before"] is None and second["before"] is None


def test_the_exit_status_of_a_stop_is_128_plus_its_signal_wherever_it_arrived():
    import pickle
    import signal

    from mic.training import TrainingInterrupted

    codes = {
        "SIGTERM": 128 + signal.SIGTERM,
        "SIGINT on another process": 128 + signal.SIGINT,
        "SIGTERM on another process": 128 + signal.SIGTERM,
        "a stop request on another process": 1,
        "a stop request": 1,
        "": 1,
    }
    for reason, code in codes.items():
        assert TrainingInterrupted(reason, 3).exit_code == code, reason
        assert pickle.loads(pickle.dumps(TrainingInterrupted(reason, 3))).exit_code == code


def _run_and_save_how_it_stopped(loop, path: str) -> None:
    """Run ``loop``; save the step it stopped at and the message of its DatasetError (None)."""
    from mic import DatasetError

    try:
        loop.run()
        found = {"step": loop.step, "error": None}
    except DatasetError as e:
        found = {"step": loop.step, "error": str(e)}
    torch.save(found, path)


def _bad_file_worker(rank: int, init_file: str, out_dir: str) -> None:
    """Rank 1's target loader meets a bad file at its third batch: what each rank raises, at
    which step, and whether the checkpoint all ranks take part in is written."""
    import torch.distributed as dist

    from mic import AdaptationLoop, Checkpointer, DatasetError, source_only
    from mic.training import ProcessGroup
    from tests.helpers import tiny_loaders, tiny_model

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    task, source, target, _ = tiny_loaders()

    class BadFileOnRankOne:
        def __init__(self, loader):
            self.loader, self.batch_size = loader, loader.batch_size

        def __iter__(self):
            for i, batch in enumerate(self.loader):
                if rank == 1 and i == 2:
                    raise DatasetError("cannot read image 'tgt/2.png' (image file is truncated)")
                yield batch

    student = tiny_model()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)
    checkpoints = Checkpointer(f"{out_dir}/checkpoints", interval=0)
    loop = AdaptationLoop(
        task, student, source_only(), optimizer, source, BadFileOnRankOne(target), 6,
        hooks=[checkpoints], collective=ProcessGroup("cpu"),
    )  # fmt: skip
    _run_and_save_how_it_stopped(loop, f"{out_dir}/bad{rank}.pt")
    dist.destroy_process_group()


def _two_processes_within(worker, tmp_path, seconds: int = 120) -> None:
    """``worker(rank, init_file, out_dir)`` on two spawned processes; a test failure (not a
    hang) when they have not finished within ``seconds``."""
    context = torch.multiprocessing.start_processes(
        worker,
        args=(str(tmp_path / "init"), str(tmp_path)),
        nprocs=2,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + seconds
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail("the processes hang after a bad file on one of them")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()


def test_a_bad_file_on_one_process_stops_every_process_at_the_same_iteration(tmp_path):
    """Not a hang: the other process stops with it, the loaders rewound, and the state after
    the last whole iteration is saved by all of them together (a collective)."""
    _two_processes_within(_bad_file_worker, tmp_path)
    first, second = (torch.load(tmp_path / f"bad{r}.pt") for r in (0, 1))
    assert first["step"] == second["step"] == 2
    assert "tgt/2.png" in second["error"]
    assert first["error"].startswith("another process met a bad file")
    assert (tmp_path / "checkpoints" / "iter_00000002.pt").is_file()


def _bad_test_file_worker(rank: int, init_file: str, out_dir: str) -> None:
    """The test loader (read by the main process, rank 0) meets a bad file in the second
    evaluation: what each rank raises, at which step, and whether the checkpoint all ranks
    take part in is written."""
    import torch.distributed as dist

    from mic import AdaptationLoop, Checkpointer, DatasetError, Evaluation, source_only
    from mic.training import ProcessGroup
    from tests.helpers import tiny_loaders, tiny_model

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    task, source, target, test = tiny_loaders()

    class BadOnTheThirdPass:  # the first pass is the Evaluation's look before training
        def __init__(self, loader):
            self.loader, self.passes = loader, 0

        def __iter__(self):
            self.passes += 1
            for i, batch in enumerate(self.loader):
                if self.passes == 3 and i == 1:
                    raise DatasetError("cannot read image 'test/9.png' (image file is truncated)")
                yield batch

    student = tiny_model()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)
    hooks = [
        Evaluation(task, BadOnTheThirdPass(test), interval=2, models="student"),
        Checkpointer(f"{out_dir}/checkpoints", interval=0),
    ]
    loop = AdaptationLoop(
        task, student, source_only(), optimizer, source, target, 6, hooks=hooks,
        collective=ProcessGroup("cpu"),
    )  # fmt: skip
    _run_and_save_how_it_stopped(loop, f"{out_dir}/bad{rank}.pt")
    dist.destroy_process_group()


def test_a_bad_test_file_met_by_the_main_process_stops_every_process(tmp_path):
    """The evaluation's data error is shared with the processes waiting for its record: all
    stop after the same iteration and save together (before, the others waited in the
    broadcast until torchrun killed them)."""
    _two_processes_within(_bad_test_file_worker, tmp_path)
    first, second = (torch.load(tmp_path / f"bad{r}.pt") for r in (0, 1))
    assert first["step"] == second["step"] == 4
    assert first["error"] == "cannot read image 'test/9.png' (image file is truncated)"
    assert second["error"] == f"the main process's evaluation stopped: {first['error']}"
    assert (tmp_path / "checkpoints" / "iter_00000004.pt").is_file()


def test_a_collective_that_lost_a_peer_is_told_apart_from_other_errors(monkeypatch):
    from mic.train import _lost_peer

    lost = RuntimeError("[../gloo/transport/tcp/pair.cc:561] Connection closed by peer [::1]")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _lost_peer(lost) and not _lost_peer(RuntimeError("CUDA out of memory"))
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: no peer to lose
    assert not _lost_peer(lost)


def test_under_torchrun_process_0_alone_says_what_the_run_does_and_each_says_its_error(
    monkeypatch, capsys
):
    """Two processes printed every line twice (the resume line, mic's warnings on the
    settings, a stop's hint; process 1 could hint that no checkpoint was written before
    process 0 had saved it). A warning of training (a file of the process's own share) is
    each process's."""
    import logging

    import mic.train
    import mic.training.hooks
    from mic.training.distributed import ProcessInfo

    def said(rank: int, built: bool = False) -> tuple[str, str]:
        info = ProcessInfo(rank=rank, world_size=2)
        monkeypatch.setattr(mic.train, "_BUILT", [built])
        for module in (mic.train, mic.training.hooks):
            monkeypatch.setattr(module, "process_info", lambda: info)
        monkeypatch.setattr(  # (Python's own, as mic-train finds it; pytest records warnings)
            mic.train,
            "_python_show",
            lambda m, c, f, n, file, line: sys.stderr.write(mic.train._format_warning(m, c, f, n)),
        )
        mic.training.hooks.say("resuming from x.pt at iteration 3")
        mic.training.hooks.say("mic: stopped by SIGTERM", sys.stderr, logging.WARNING)
        mic.training.hooks.say("mic: error: a bad file", sys.stderr, logging.ERROR)
        show = mic.train._show_warning
        show(UserWarning("fp16 on the CPU"), UserWarning, mic.train.__file__, 1)
        show(UserWarning("a library's"), UserWarning, "/x/lib.py", 1)
        out = capsys.readouterr()
        return out.out, out.err

    out, err = said(0)
    assert out == "resuming from x.pt at iteration 3\n"
    assert err.startswith("mic: stopped by SIGTERM\nmic: error: a bad file\n")
    assert "mic: warning: fp16 on the CPU\n" in err and "a library's" in err
    out, err = said(1)
    assert out == "" and "stopped" not in err and "fp16" not in err
    assert err.startswith("mic: error: a bad file\n") and "a library's" in err
    out, err = said(1, built=True)
    assert "mic: warning: fp16 on the CPU\n" in err and "stopped" not in err


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc'"),
        ({"WORLD_SIZE": "2"}, "RANK unset"),
        ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_PORT": "1"}, "MASTER_ADDR unset"),
        ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "x"}, "LOCAL_RANK='x'"),
    ],
)
def test_a_torchrun_environment_mic_cannot_read_is_named(env, said, tmp_path):
    """Variables set by hand (not torchrun's) ended in int()'s ValueError or a KeyError."""
    from tests.cli import run_mic_train

    out = run_mic_train(["iterations=2", f"hydra.run.dir={tmp_path / 'run'}"], env=env)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert "mic cannot read" in out.stderr and said in out.stderr


@pytest.mark.parametrize(
    "env",
    [{"LOCAL_RANK": "-1"}, {"RANK": "-1"}, {"WORLD_SIZE": "1", "RANK": ""}, {"WORLD_SIZE": ""}],
)
def test_one_process_does_not_read_rank_variables(env, monkeypatch):
    """LOCAL_RANK=-1 ("not distributed", as some launchers say) beside one process trains."""
    from mic.training.distributed import init_distributed

    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert init_distributed("cpu").world_size == 1


def test_an_empty_world_size_trains_one_process_to_its_end(tmp_path):
    """WORLD_SIZE= (empty) is one process: the run's last steps read it too (a ValueError
    after a whole run)."""
    from tests.cli import run_mic_train

    env = {"WORLD_SIZE": "", "RANK": "-1", "LOCAL_RANK": "-1"}
    args = ["iterations=2", "adaptation_start=0", "eval.adabn_batches=1"]
    out = run_mic_train([*args, f"hydra.run.dir={tmp_path / 'run'}"], env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "run" / "summary.json").is_file()


def test_now_on_the_command_line_is_written_out_only_where_hydra_reads_it_alike():
    """Under torchrun each process resolved ${now:...} at its own time (two run folders); its
    first rewrite also met forms Hydra reads otherwise (quoted, escaped, nested, spaced)."""
    from datetime import datetime

    from mic.train import pin_now

    when = datetime(2026, 12, 7, 8, 9, 32, 123456)
    plain = ["hydra.run.dir=/r/${now:%H-%M-%S_%f}", "x=${now:%H:%M}/${now:%Y}", "x='r/${now:%H}'"]
    assert pin_now(plain, when) == ["hydra.run.dir=/r/08-09-32_123456", "x=08:09/2026", "x='r/08'"]
    left = ["x=${now:'%H:%M'}", "x=${now: %H}", "x=\\${now:%H}", "x=${now:}", "x=${now:${a:F}}"]
    assert pin_now(left, when) == left  # (Hydra's to resolve, or to refuse)
