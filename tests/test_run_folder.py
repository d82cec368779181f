"""What a command leaves in a run folder that already holds a run: a refused run or resume
leaves Hydra's record (``.hydra/``, a sweep's ``multirun.yaml``) and the log byte for byte;
an accepted resume writes its own record beside the original's; a run resumed into a new
folder reports files that exist. mic-train writes Hydra's record itself, byte for byte as
Hydra does."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli import run_mic_train
from tests.helpers import TINY_RUN

TINY = [*TINY_RUN, "log.tensorboard=false", "iterations=2", "checkpoint.interval=1"]


def _files(folder: Path, *patterns: str) -> dict[str, bytes]:
    """The files of ``folder`` that match ``patterns``, by their path in it."""
    files = {p for pattern in patterns for p in folder.glob(pattern) if p.is_file()}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(files)}


def _record(run: Path) -> dict[str, bytes]:
    """Hydra's record and the log files of a run folder, by name."""
    return _files(run, ".hydra/*", "*.log")


def test_a_refused_run_or_resume_leaves_hydra_record_and_log_and_a_resume_keeps_them(tmp_path):
    run = tmp_path / "run"
    first = run_mic_train([*TINY, f"hydra.run.dir={run}"])
    assert first.returncode == 0, first.stderr[-2000:]
    before = _record(run)
    assert {".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml"} <= set(before)
    assert any(name.endswith(".log") for name in before)

    new_run = run_mic_train([*TINY, "seed=3", f"hydra.run.dir={run}"])
    assert new_run.returncode == 2 and "already holds a run" in new_run.stderr
    assert _record(run) == before

    changed = run_mic_train([*TINY, "resume=auto", "optimizer.lr=0.5", f"hydra.run.dir={run}"])
    assert changed.returncode == 2 and "resume_allow_changes=[optimizer.lr]" in changed.stderr
    assert _record(run) == before
    assert not (run / ".hydra_resumed").exists()

    resumed = run_mic_train([*TINY, "resume=auto", "iterations=3", f"hydra.run.dir={run}"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = _record(run)
    assert {k: v for k, v in after.items() if k.startswith(".hydra/")} == {
        k: v for k, v in before.items() if k.startswith(".hydra/")
    }  # the record of how the run was made
    overrides = (run / ".hydra_resumed" / "overrides.yaml").read_text()
    assert "resume=auto" in overrides and "iterations=3" in overrides
    hydra_yaml = (run / ".hydra_resumed" / "hydra.yaml").read_text()
    assert "output_subdir: .hydra_resumed" in hydra_yaml
    assert "hydra.output_subdir=null" not in hydra_yaml
    for name, content in before.items():  # the log goes on after the original's lines
        if name.endswith(".log"):
            assert after[name].startswith(content) and len(after[name]) > len(content)


def test_a_finished_run_resumed_into_a_new_folder_names_the_best_pt_that_exists(tmp_path):
    run = tmp_path / "run"
    first = run_mic_train([*TINY, f"hydra.run.dir={run}"])
    assert first.returncode == 0, first.stderr[-2000:]
    original = run / "checkpoints" / "best.pt"
    assert original.is_file()
    for i, source in enumerate((run, original)):
        new = tmp_path / f"new{i}"  # a folder of its own: resuming another run's here is refused
        out = run_mic_train([*TINY, f"resume={source}", f"hydra.run.dir={new}"])
        assert out.returncode == 0, out.stderr[-2000:]
        assert (
            "at iteration 2 (iterations=2: no iteration left to train, only the final" in out.stdout
        )
        best = json.loads((new / "summary.json").read_text())["best_checkpoint"]
        assert best["step"] == 2 and best["path"] == str(original)
        assert f"(iteration 2): {original}" in out.stdout
        assert not (new / "checkpoints" / "best.pt").exists()
        assert (new / "config.yaml").is_file() and not (new / "config_resumed.yaml").exists()


@pytest.mark.parametrize("sweep", [False, True])
def test_the_record_mic_train_writes_is_the_one_hydra_writes(tmp_path, sweep):
    folder = tmp_path / "run"
    where = f"hydra.sweep.dir={folder}" if sweep else f"hydra.run.dir={folder}"
    named = "hydra.job.name=job_${seed}"  # recorded as typed (it failed to resolve without seed)
    args = [*(["-m"] if sweep else []), *TINY, "iterations=1", where, named]
    record = ["0/.hydra/*", "multirun.yaml"] if sweep else [".hydra/*"]
    hydra_alone = f"import sys; from mic.train import _main; sys.argv = {['x', *args]}; _main()"
    env = {"PATH": os.environ["PATH"], "OMP_NUM_THREADS": "1"}
    env.update({k: os.environ[k] for k in ["PYTHONPATH"] if k in os.environ})  # mic's place
    done = subprocess.run([sys.executable, "-c", hydra_alone], cwd=tmp_path, env=env)
    assert done.returncode == 0
    hydras = _files(folder, *record)
    assert len(hydras) == (4 if sweep else 3)
    shutil.rmtree(folder)
    assert run_mic_train(args, cwd=tmp_path).returncode == 0
    assert _files(folder, *record) == hydras
    assert b"job_${seed}" in hydras[f"{'0/' * sweep}.hydra/hydra.yaml"]


def test_shell_completion_is_hydras():
    # its install= and query= were refused as settings mic-train does not have
    done = run_mic_train(["-sc", "install=bash"])
    assert done.returncode == 0 and "hydra_bash_completion" in done.stdout


def test_a_refused_sweep_leaves_its_records_and_a_resumed_one_writes_its_own(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, "seed=0,1", f"hydra.sweep.dir={sweep}"]
    assert run_mic_train(args).returncode == 0
    before = _files(sweep, "**/*")
    refused = run_mic_train([*args, "optimizer.lr=0.5"])
    assert refused.returncode == 2 and "already holds a run" in refused.stderr
    assert _files(sweep, "**/*") == before
    as_mode = [a for a in args if a != "-m"] + ["hydra.mode=MULTIRUN", "optimizer.lr=0.5"]
    refused = run_mic_train(as_mode)  # a sweep too (its multirun.yaml was rewritten)
    assert refused.returncode == 2 and "already holds a run" in refused.stderr
    assert _files(sweep, "**/*") == before
    resumed = run_mic_train([*args, "resume=auto", "iterations=3"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    kept = {k: v for k, v in before.items() if k.startswith("0/.hydra/")}
    assert len(kept) == 3 and _files(sweep, "0/.hydra/*") == kept
    assert "iterations=3" in (sweep / "0" / ".hydra_resumed" / "overrides.yaml").read_text()
    assert "hydra.output_subdir=null" not in (sweep / "multirun.yaml").read_text()
    # the sweep's record stays as it was; the resuming command's lies beside it
    assert (sweep / "multirun.yaml").read_bytes() == before["multirun.yaml"]
    assert "resume=auto" in (sweep / "multirun_resumed.yaml").read_text()


def test_a_sweep_whose_folders_are_named_by_its_settings_resumes_into_them(tmp_path):
    # resume=auto was part of ${hydra.job.override_dirname}: every job of the resumed sweep
    # looked in a new, empty folder and trained again from scratch, with an INFO line alone
    sweep = tmp_path / "sweep"
    named = "hydra.sweep.subdir=${hydra.job.override_dirname}"
    args = ["-m", *TINY, "seed=0,1", f"hydra.sweep.dir={sweep}", named]
    first = run_mic_train([*args, "resume=auto"])  # a first sweep with resume=auto: no word
    assert first.returncode == 0 and "starting a new run" not in first.stderr, first.stderr
    folders = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    before = (sweep / "multirun.yaml").read_bytes()
    shutil.rmtree(sweep / folders[1])  # a job the stop left unstarted starts without a word
    resumed = run_mic_train([*args, "resume=auto"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "no iteration left to train" in resumed.stderr + resumed.stdout
    assert "starting a new run" not in resumed.stderr
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == folders
    # a setting that names the folders changed: said, where it was an INFO line
    said = run_mic_train([*args, "resume=auto", "checkpoint.keep=8"]).stderr
    assert f"the sweep's folder {folders[0]} holds a run of this job's number" in said
    # a new value of the sweep (seed=5 as job 0) is a new job: no word
    new = run_mic_train([*args[:-3], "seed=5", *args[-2:], "resume=auto"]).stderr
    assert "holds a run of this job" not in new
    assert (sweep / "multirun.yaml").read_bytes() == before  # the first command's record


def test_a_second_run_into_a_folder_in_use_is_refused_and_changes_nothing(tmp_path):
    from mic.experiment import lock_run_folder, unlock_run_folder

    run = tmp_path / "run"
    held = lock_run_folder(run)  # what a mic-train still training there holds
    try:
        for extra in ([], ["resume=auto"]):
            out = run_mic_train([*TINY, *extra, f"hydra.run.dir={run}"])
            assert out.returncode == 2, out.stderr[-2000:]
            assert f"another mic-train run (pid {os.getpid()} on " in out.stderr
            assert not (run / "checkpoints").exists() and not (run / ".hydra").exists()
            logs = [p.read_text() for p in run.glob("*.log")]  # the running run's, on which
            assert not any("another mic-train" in log for log in logs)  # it writes: untouched
    finally:
        unlock_run_folder(held)
    assert not (run / ".lock").exists()  # released: no trace left
    out = run_mic_train([*TINY, f"hydra.run.dir={run}"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert not (run / ".lock").exists() and (run / "checkpoints" / "student.pt").is_file()


def test_an_empty_run_folder_is_refused(tmp_path):
    out = run_mic_train([*TINY_RUN, "hydra.run.dir="], cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "mic: error: hydra.run.dir is empty, which would write the run" in out.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written: no .hydra, log or checkpoint


def test_the_best_pt_line_is_printed_without_validators():
    from mic.experiment import format_selection

    summary = {
        "metric": "accuracy",
        "selection": {"student": {"accuracy": {"step": 4, "accuracy": 0.5}, "last": {"step": 4}}},
        "best_checkpoint": {"by": "eval/student/accuracy", "step": 4, "path": "/r/best.pt"},
    }
    lines = format_selection(summary)
    assert lines == ["best.pt chosen by eval/student/accuracy (iteration 4): /r/best.pt"]


def test_a_resumed_run_keeps_the_tensorboard_records_of_the_step_it_resumed_from(tmp_path):
    """TensorBoard's purge_step drops the records at and after it: a run resumed after
    iteration 3 keeps those of 3 (and drops 4, which the resumed run writes again)."""
    from types import SimpleNamespace

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mic.training import MetricsLogger

    def run(start, steps):
        logger = MetricsLogger(tmp_path, interval=1)
        logger.before_run(SimpleNamespace(step=start))
        for step in steps:
            logger.write({"step": step, "eval/student/accuracy": step / 10})
        logger.teardown(SimpleNamespace(step=steps[-1]))

    run(0, [1, 2, 3, 4])  # stopped after 4, its last checkpoint at 3
    run(3, [4, 5])
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/student/accuracy")] == [1, 2, 3, 4, 5]


def test_a_run_folder_that_cannot_be_written_names_how_to_continue_its_run(tmp_path, monkeypatch):
    from pathlib import Path

    import pytest

    from mic import ConfigError
    from mic.experiment import check_writable

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "iter_00000060.pt").write_bytes(b"")

    def refuse(self, data):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(Path, "write_bytes", refuse)
    with pytest.raises(  # (from Python: run_experiment's run_dir; mic-train's hydra.run.dir)
        ConfigError,
        match=rf"run_dir=\.\.\. and continue this run's checkpoints there with resume={run}",
    ):
        check_writable(run)


def test_a_sweep_resumed_with_its_values_in_another_order_says_jobs_follow_their_numbers(
    tmp_path,
):
    folder = tmp_path / "sweep"
    first = run_mic_train(["-m", "seed=0,1", *TINY, "iterations=1", f"hydra.sweep.dir={folder}"])
    assert first.returncode == 0, first.stderr[-2000:]
    again = ["-m", "seed=1,0", *TINY, "iterations=2", f"hydra.sweep.dir={folder}", "resume=auto"]
    out = run_mic_train(again)
    assert "seed: 0 -> 1" in out.stderr
    assert "each job resumes the folder of its number" in out.stderr


def test_resume_of_a_folder_without_a_run_folder_says_where_the_run_continues(tmp_path):
    first = tmp_path / "first"
    assert run_mic_train([*TINY, f"hydra.run.dir={first}"]).returncode == 0
    out = run_mic_train([*TINY, "iterations=3", f"resume={first}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"mic: warning: resume={first}: the run continues in the new folder" in out.stderr
    assert f"give hydra.run.dir={first} resume=auto" in out.stderr


@pytest.mark.parametrize(
    "path",
    [
        "/runs/a_1",
        "/tmp/with space/ü run",
        "/tmp/it's",
        "/tmp/$HOME x",
        "/tmp/a`id`b",
        '/tmp/a"b',
        "/tmp/${oc.env:HOME}",
        "/tmp/x y\\",
        "/tmp/a\\b c",
    ],
)
def test_the_options_a_message_advises_paste_into_a_shell_and_hydra(path):
    """'Continue with the same command plus: hydra.run.dir=/tmp/with space/ü run resume=auto'
    failed in Hydra's parser when pasted; a $, a backtick or a quote in the path was then read
    by the shell."""
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from mic.training.checkpoint import option

    (typed,) = shlex.split(option("hydra.run.dir", path))  # what the shell hands mic-train
    (parsed,) = OverridesParser.create().parse_overrides([typed])
    assert parsed.key_or_group == "hydra.run.dir"
    assert OmegaConf.create({"dir": parsed.value()}).dir == path  # as the config reads it


def test_a_run_folder_made_read_only_at_the_end_is_one_clear_error(tmp_path, monkeypatch):
    """summary.json that could not be written, then the lock file that could not be removed,
    ended the run in two chained tracebacks."""
    import mic.experiment as experiment
    from mic.core import CheckpointError
    from mic.experiment import load_config, lock_run_folder, run_experiment, unlock_run_folder

    writes = experiment.write_text_atomically

    def refuses_summary(path, text):
        if Path(path).name == "summary.json":
            raise PermissionError(13, "Permission denied")
        writes(path, text)

    monkeypatch.setattr(experiment, "write_text_atomically", refuses_summary)
    with pytest.raises(CheckpointError, match=r"summary.json could not be written .*Permission"):
        run_experiment(load_config(TINY), tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "student.pt").is_file()
    lock = lock_run_folder(tmp_path / "locked")
    monkeypatch.setattr(
        Path,
        "unlink",
        lambda self, missing_ok=False: (_ for _ in ()).throw(
            PermissionError(13, "Permission denied")
        ),
    )
    unlock_run_folder(lock)  # the file stays, unlocked
    assert lock.closed


def test_the_run_folder_lock_ends_with_its_run_not_with_the_workers_it_forked(tmp_path):
    """A killed run's data-loading workers (forked, alive for seconds after it) held its
    flock: a resume=auto at once was refused as 'another mic-train run is training'."""
    import signal

    from mic.core import ConfigError
    from mic.experiment import lock_run_folder, unlock_run_folder

    script = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from mic.experiment import lock_run_folder\n"
        f"held = lock_run_folder(Path({str(tmp_path)!r}))\n"
        "worker = os.fork()\n"
        "if worker == 0:\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "print(worker, flush=True)\n"
        "time.sleep(60)\n"
    )
    run = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    worker = int(run.stdout.readline())
    try:
        with pytest.raises(ConfigError, match="another mic-train run"):
            lock_run_folder(tmp_path)  # the run holds it
        run.kill()
        run.wait()
        unlock_run_folder(lock_run_folder(tmp_path))  # its worker lives on, holding nothing
    finally:
        os.kill(worker, signal.SIGKILL)
        run.stdout.close()


@pytest.mark.parametrize("sweep", [False, True])
def test_the_folder_option_hydra_ignores_in_the_mode_is_warned_of(tmp_path, sweep):
    """hydra.run.dir with -m (or hydra.sweep.dir without) is ignored by Hydra: the runs went
    under ./runs/multirun/<time>/ of the current folder (or runs/<time>/) without a word."""
    given = "hydra.run.dir" if sweep else "hydra.sweep.dir"
    args = [*(["-m"] if sweep else []), *TINY, "iterations=1", f"{given}={tmp_path / 'asked'}"]
    done = run_mic_train(args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    said = "not read with -m: the jobs' folders are" if sweep else "read with -m alone: the run"
    assert f"mic: warning: {given} is {said}" in done.stderr
    assert not (tmp_path / "asked").exists() and (tmp_path / "runs").is_dir()
    chosen = "hydra.sweep.dir" if sweep else "hydra.run.dir"  # (the one read: no warning)
    fine = run_mic_train([*args[:-1], f"{chosen}={tmp_path / 'chosen'}"], cwd=tmp_path)
    assert fine.returncode == 0 and "mic: warning: hydra" not in fine.stderr
