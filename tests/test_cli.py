"""The command line end to end, and the clear errors it gives for bad input."""

import contextlib
import importlib.metadata
import importlib.resources
import json
import signal
import subprocess
import sys
import time

import pytest

from mic.cli import INTERRUPTED
from tests.helpers import TINY_RUN
from tests.helpers import run_cli as _cli

TINY = [*TINY_RUN, "log.interval=2"]


def test_cli_runs_end_to_end_and_fills_the_run_folder(tmp_path):
    run = tmp_path / "run"
    out = _cli(*TINY, "adaptation_start=2", f"hydra.run.dir={run}")
    assert out.returncode == 0, out.stderr
    assert "target accuracy before adaptation (iteration 2)" in out.stdout
    assert "target accuracy after adaptation (iteration 4)" in out.stdout
    assert (run / "config.yaml").read_text().count("MaskedImageConsistency") == 1
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"loss/source", "loss/self_training", "loss/mic"} <= set(records[-2]) | set(records[-1])
    assert any("eval/teacher/accuracy" in r for r in records)
    assert any((run / "tensorboard").iterdir())
    assert (run / "checkpoints" / "iter_00000004.pt").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["after_adaptation"]["step"] == 4 and summary["device"] == "cpu"
    import mic  # which code trained it: the same config trains other draws under another mic

    assert summary["versions"]["mic"] == mic.__version__
    assert summary["versions"]["torch"] == importlib.metadata.version("torch")
    # the run log tells what the console told (it held the data check's line alone)
    log = (run / "digits_mean_teacher_mic.log").read_text()
    for line in ("target accuracy after adaptation (iteration 4)", f"run folder: {run}"):
        assert line in out.stdout and line in log
    # what the run trains, before its first iteration (the recipe was in config.yaml alone)
    said = "training Classifier (0.1 M parameters) with source (SourceSupervision), "
    assert said in out.stdout and said in log
    assert "MIC's blocks 4 px, 0.7 of them withheld; batches of " in out.stdout
    assert ", 4 iterations, adapting from iteration 2, on cpu (fp32)" in out.stdout
    # the log alone names the command line's settings, the seed and the versions
    assert "command line: iterations=4 adaptation_start=0 " in log and "; seed 0; mic " in log


def test_cli_unknown_config_key_is_one_clear_message(tmp_path):
    out = _cli(*TINY, "learning_rate=0.1", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2
    assert "mic: error: mic-train has no setting 'learning_rate'" in out.stderr
    assert "Traceback" not in out.stderr
    out = _cli(*TINY, "iteration=3", f"hydra.run.dir={tmp_path}")
    assert "no setting 'iteration'. Did you mean: iterations?" in out.stderr
    # below a config group: named against the composed config (Hydra would advise +)
    out = _cli(*TINY, "model.colour=red", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2 and "no setting model.colour: model has no 'colour'" in out.stderr
    assert "Could not override" not in out.stderr and "Traceback" not in out.stderr


def test_cli_user_error_exits_cleanly_without_traceback(tmp_path):
    out = _cli(*TINY, "model.backbone=resnet5", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2
    assert "mic: error: unknown backbone 'resnet5'" in out.stderr
    assert "Traceback" not in out.stderr
    log = (tmp_path / "digits_mean_teacher_mic.log").read_text()  # it was left empty
    assert "mic: error: unknown backbone 'resnet5'" in log


def test_hydra_options_may_stand_between_the_overrides(tmp_path):
    # Hydra's argparse reads the overrides as one list: an option between two of them ended
    # in "unrecognized arguments: seed=5"
    out = _cli("iterations=3", "--cfg", "job", "seed=5", "-p", "seed")
    assert out.returncode == 0 and out.stdout.strip() == "5", out.stderr
    out = _cli("iterations=3", "--info", "seed=2", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0 and "Config search path" in out.stdout, out.stderr


# the bad inputs themselves: tests/test_bad_input.py, each through mic-train


def test_a_sweep_is_told_of_its_own_folder_option(tmp_path):
    (tmp_path / "a_file").write_text("")
    out = _cli("-m", "seed=0,1", f"hydra.sweep.dir={tmp_path / 'a_file'}")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"the run folder '{tmp_path / 'a_file'}' is a file, not a folder" in out.stderr
    assert "choose another with hydra.sweep.dir=..." in out.stderr


def test_an_optimizer_that_refuses_its_arguments_is_one_clear_message(tmp_path):
    from tests.cli import run_mic_train

    cases = {
        ("+optimizer.momentum=0.9",): [
            "cannot build the optimizer torch.optim.Adam from the config",
            "unexpected keyword argument 'momentum'",
            "Drop optimizer.momentum",
        ],
        ("optimizer=adamw", "optimizer.betas=0.9"): [
            "optimizer.betas=0.9",
            "Give optimizer.betas as 2 numbers, e.g. optimizer.betas=[0.9,0.999]",
        ],
        ("optimizer=sgd", "optimizer.momentum=0"): [
            "cannot build the optimizer torch.optim.SGD",
            "set optimizer.nesterov=false too",
        ],
        ("optimizer=adamw", "optimizer.betas=[0.9,1.5]"): [
            "Invalid beta parameter at index 1: 1.5",
            "Each of optimizer.betas must lie in [0, 1)",
        ],
        ("optimizer=adamw", "optimizer.betas=[0.9]"): [
            "optimizer.betas=[0.9]",
            "Give optimizer.betas as 2 numbers",
        ],
    }
    for overrides, fragments in cases.items():
        out = run_mic_train([*TINY, *overrides, f"hydra.run.dir={tmp_path / 'run'}"])
        assert out.returncode == 2, (overrides, out.stderr[-2000:])
        assert "Traceback" not in out.stderr and "full_key" not in out.stderr
        errors = [line for line in out.stderr.splitlines() if line.startswith("mic: error: ")]
        assert len(errors) == 1, (overrides, out.stderr[-2000:])
        for fragment in fragments:
            assert fragment in errors[0], (overrides, errors[0])


def test_an_experiment_of_one_s_own_config_folder_is_judged_as_mic_s_are(tmp_path):
    from mic.train import unknown_option

    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\n")
    for own in (["--config-dir", str(tmp_path)], [f"--config-dir={tmp_path}"]):
        assert unknown_option([*own, "experiment=mine"]) is None
        assert unknown_option([*own, "experiment=det_shapes"]) is None
        typo = unknown_option([*own, "experiment=mien"])
        assert typo.startswith("unknown experiment 'mien'. Did you mean: mine?")
        assert "det_shapes" in typo and "mine" in typo.split("options: ")[1]
    missing = unknown_option(["-cd", str(tmp_path / "nope"), "experiment=mine"])
    assert missing.startswith(f"config folder {tmp_path / 'nope'} (--config-dir / hydra")
    # a search path is a config folder of one's own too
    for path in (f"[file://{tmp_path}]", f"['{tmp_path}']", f"[pkg://x,file://{tmp_path}]"):
        expected = (
            None if "pkg" in path else unknown_option(["-cd", str(tmp_path), "experiment=mien"])
        )
        assert unknown_option([f"hydra.searchpath={path}", "experiment=mien"]) == expected


def test_help_lists_the_options_a_user_chooses_and_their_own(tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\n")
    result = _cli("--config-dir", str(tmp_path), "experiment=streets", "--help")
    assert result.returncode == 0, result.stderr
    groups = result.stdout.split("== Config groups (group=option) ==")[1].split("== Config,")[0]
    lines = dict(line.split(": ", 1) for line in groups.strip().splitlines())
    experiments = lines["experiment"].split(", ")
    assert {"streets", "det_shapes", "mine"} <= set(experiments)
    assert not [e for e in experiments if e.startswith("_")]  # the bases experiments build on
    assert "method_task" not in lines and "mic_task" not in lines  # filled in by mic
    assert "augmentation" not in lines  # parts of other configs: augmentation=strong failed
    assert "sada" in lines["method"].split(", ")
    # the config shown is the one the overrides compose
    assert "mic.tasks.segmentation.SegmentationTask" in result.stdout


def test_version_is_mic_s(tmp_path):
    import hydra

    import mic

    result = _cli("--version", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"mic {mic.__version__} (Hydra {hydra.__version__}")
    assert not (tmp_path / "run").exists()  # nothing is written


def test_import_mic_imports_no_torch_and_every_public_name_resolves():
    code = (
        "import sys, mic; assert 'torch' not in sys.modules, 'import mic imported torch'; "
        "import mic.cli; assert 'torch' not in sys.modules, 'mic.cli imported torch'; "
        "names = mic.__all__; [getattr(mic, n) for n in names]; "
        "import mic.core, mic.training; "
        "assert set(mic.core.__all__) | set(mic.training.__all__) <= set(names); "
        "assert mic.Forever is mic.EndlessLoader; "
        "assert mic.core is sys.modules['mic.core']; "
        "shown = dir(mic); assert set(names) <= set(shown) and 'core' in shown; "
        "assert not {'importlib', 'Any', 'annotations'} & set(shown), shown; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.parametrize(
    "sig, said",
    [
        (signal.SIGINT, "mic: interrupted while starting up"),
        # a scheduler's stop before the first iteration killed the run without a word
        (signal.SIGTERM, "mic: stopped by SIGTERM while starting up or finishing"),
    ],
)
def test_a_signal_while_mic_train_imports_torch_is_one_line_not_a_traceback(tmp_path, sig, said):
    # mic-train's entry point (mic.cli:main); the signal lands while torch is being imported
    process = subprocess.Popen(
        [sys.executable, "-c", "from mic.cli import main; main()", f"hydra.run.dir={tmp_path}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(0.3)
    process.send_signal(sig)
    out = process.communicate(timeout=120)[0]
    assert process.returncode == 128 + sig, out
    assert "Traceback" not in out and said in out, out


def test_a_stop_while_the_run_is_built_is_written_to_its_log(tmp_path):
    # the console said so, but the run's log stayed empty
    from tests.cli import run_mic_train

    done = run_mic_train(
        [*TINY_RUN, f"hydra.run.dir={tmp_path}"], env={"MIC_TEST_FAULT": "sigterm-while-building"}
    )
    assert done.returncode == 128 + signal.SIGTERM, done.stderr[-2000:]
    said = "mic: stopped by SIGTERM while starting up or finishing"
    assert said in done.stderr
    (log,) = tmp_path.glob("*.log")
    assert said in log.read_text()


def test_warnings_of_objects_the_config_builds_are_shown_as_mic_s():
    """The HRDA loss-weight warning, raised in a constructor that Hydra calls, was shown as
    Hydra's file and line; torch's own warnings keep Python's form."""
    import os

    from mic.train import _format_warning

    hydra = os.path.join("venv", "hydra", "_internal", "instantiate", "_instantiate2.py")
    assert _format_warning("sum to 1", UserWarning, hydra, 129) == "mic: warning: sum to 1\n"
    other = _format_warning("meshgrid", UserWarning, os.path.join("torch", "functional.py"), 5)
    assert other.startswith(os.path.join("torch", "functional.py") + ":5: UserWarning")


def test_a_second_ctrl_c_after_the_stop_was_reported_ends_mic_train_without_tracebacks(tmp_path):
    """The terminal's Ctrl-C reaches the whole process group. A second one, pressed while the
    loader's workers were being joined after the stop message, printed their __del__'s
    KeyboardInterrupt tracebacks ("Exception ignored in ...")."""
    import os

    process = subprocess.Popen(
        [sys.executable, "-c", "from mic.cli import main; main()", *TINY, "iterations=5000",
         "loader.num_workers=2", "device=cpu", f"hydra.run.dir={tmp_path}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    lines = []
    for line in process.stdout:  # type: ignore[union-attr]
        lines.append(line)
        if "checked the data before training" in line:
            time.sleep(3)  # training, its workers running
            os.killpg(process.pid, signal.SIGINT)
        if "mic: stopped by SIGINT" in line:
            time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):  # (it may have ended already)
                os.killpg(process.pid, signal.SIGINT)
    out = "".join(lines) + process.communicate(timeout=120)[0]
    assert process.returncode in (128 + signal.SIGINT, -signal.SIGINT), out
    assert "mic: stopped by SIGINT" in out and "resume=auto" in out
    assert "Traceback" not in out and "Exception ignored" not in out, out
    assert (tmp_path / "checkpoints").is_dir()


#: mic-train's entry point, with a Ctrl-C while the start model is scored (iteration 0)
CTRL_C_AT_THE_START_MODEL_S_SCORE = """
import os, signal
from mic.training import hooks
score = hooks.Evaluation.score
def interrupted(self, loop):
    os.kill(os.getpid(), signal.SIGINT)
    return score(self, loop)
hooks.Evaluation.score = interrupted
from mic.cli import main
main()
"""


def test_a_stop_before_any_checkpoint_names_no_checkpoint_to_continue_from(tmp_path):
    """A Ctrl-C while an init_from run scored its start model said "its checkpoint is in
    .../checkpoints", a folder never written, and to resume."""
    source = tmp_path / "source"
    assert _cli(*TINY, "method=source_only", "mic=none", f"hydra.run.dir={source}").returncode == 0
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-c", CTRL_C_AT_THE_START_MODEL_S_SCORE, *TINY, f"init_from={source}",
         f"hydra.run.dir={run}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 128 + signal.SIGINT, done.stderr[-2000:]
    said = "mic: stopped by SIGINT after iteration 0, before any checkpoint was written: run the"
    assert said in done.stderr and "resume=auto" not in done.stderr, done.stderr[-2000:]
    assert not list(run.glob("checkpoints/*.pt"))


#: mic-train's entry point, with Ctrl-C pressed twice during the second iteration
CTRL_C_TWICE = """
import os, signal
from mic.core import loop
step = loop.AdaptationLoop.train_step
def pressed_twice(self):
    if self.step == 1:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
    return step(self)
loop.AdaptationLoop.train_step = pressed_twice
from mic.cli import main
main()
"""


def test_a_second_ctrl_c_stops_mic_train_at_once_naming_the_last_checkpoint(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", CTRL_C_TWICE, *TINY, "checkpoint.interval=1",
         f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 128 + signal.SIGINT, done.stderr[-2000:]
    said = "mic: stopped at once by a second SIGINT after iteration 1, unsaved; the checkpoints"
    assert said in done.stderr and "resume=auto" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and INTERRUPTED not in done.stderr
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("iter_*.pt")) == [
        "iter_00000001.pt"
    ]


#: run mic-train's entry point with a Ctrl-C that arrives while ``sys.argv[1]`` is imported,
#: and that the import swallows (as some libraries' imports do, in C or with a bare except)
SWALLOWED_CTRL_C = """
import os, signal, sys, time
name = sys.argv.pop(1)
class Swallow:
    def find_spec(self, fullname, path, target=None):
        if fullname == name:
            sys.meta_path.remove(self)
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            except BaseException:
                pass
sys.meta_path.insert(0, Swallow())
from mic.cli import main
main()
"""


@pytest.mark.parametrize("module", ["mic.experiment", "mic.tasks.classification"])
def test_a_ctrl_c_that_an_import_swallows_still_stops_mic_train(tmp_path, module):
    # mic.experiment: while mic-train imports itself; mic.tasks.classification: while the
    # config's objects are built. Before, the run trained on as if nothing had been pressed.
    done = subprocess.run(
        [sys.executable, "-c", SWALLOWED_CTRL_C, module, *TINY_RUN, f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 128 + signal.SIGINT, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == INTERRUPTED, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "mic: error" not in done.stderr
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "checkpoints").exists()


def test_a_sweep_value_its_job_would_refuse_is_named_before_the_first_job(tmp_path):
    """seed=0,abc ran job 0 to its end and stopped job 1 (hours later in a real sweep)."""
    result = _cli("-m", *TINY, "seed=0,abc", f"hydra.sweep.dir={tmp_path / 's'}")
    assert result.returncode == 2
    said = "mic: error: the sweep's job with seed=abc would stop: 1 config value is not valid"
    assert said in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "s").exists()


def test_the_sweep_check_leaves_what_it_cannot_judge_here_to_the_run(tmp_path):
    from mic.train import sweep_value_problem

    (tmp_path / "myroot.yaml").write_text("defaults: [config, _self_]\niterations: 5000\n")
    own_root = ["--config-dir", str(tmp_path), "--config-name", "myroot"]  # (mic's root read)
    assert sweep_value_problem(["-m", *own_root, "adaptation_start=500,2000"]) is None
    # interval(): a sampling sweeper's (Hydra's basic sweeper raised its traceback)
    interval = ["-m", "optimizer.lr=interval(1e-4,1e-3)"]
    assert "a sampling sweeper draws from" in sweep_value_problem(interval)
    assert sweep_value_problem([*interval, "hydra/sweeper=optuna"]) is None
    # a glob: judged where mic's options are all there are (one's own folders may add some)
    assert sweep_value_problem(["-m", "model=glob(small*)"]) is None
    own = ["-m", "--config-dir", str(tmp_path), "model=glob(mine*)"]
    assert sweep_value_problem(own) is None
    env = "seed=${oc.env:MIC_TEST_UNSET_VARIABLE}"  # set where a launcher runs the job
    assert sweep_value_problem(["-m", env, "method.terms.mic.weight=0.3,1"]) is None
    launcher = ["-m", "hydra/launcher=submitit_slurm", "seed=0,abc"]
    assert sweep_value_problem(launcher) is None
    # an experiment whose hydra.sweeper.params sweep too (its jobs are not the ones judged)
    assert sweep_value_problem(["-m", "experiment=officehome_sdat_mic_vit", "seed=0,1"]) is None
    # a deletion is part of every job (~notes: a setting the experiment adds, which nothing
    # reads: refused unless deleted)
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "junk.yaml").write_text(
        "# @package _global_\niterations: 4\nadaptation_start: 1\nnotes: x\n"
    )
    junk = ["-m", "--config-dir", str(tmp_path), "experiment=junk", "seed=0,1"]
    assert "notes" in sweep_value_problem(junk)
    assert sweep_value_problem([*junk, "~notes"]) is None
    # a fault of every job is said of the first, not of a swept value
    said = sweep_value_problem(["-m", "experiment=streets", "method=sada", "seed=0,1"])
    assert said.startswith("the sweep's first job (seed=0) would stop: ")


def test_a_job_of_a_sweep_that_stops_on_an_error_leaves_the_others_running(tmp_path):
    # (a batch the data cannot fill: found by the job, a value of the config's checks is
    # named before the first job)
    batch = "loader.source_batch_size=100000,32"
    result = _cli("-m", *TINY, batch, f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "1 of the sweep's 2 jobs stopped on the errors above (the others ran)" in result.stderr
    assert result.stderr.rstrip().endswith(f"their folders: {tmp_path / '0'}")
    assert not (tmp_path / "0" / "summary.json").exists()
    assert (tmp_path / "1" / "summary.json").is_file()  # the valid job ran


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("# @package _global_\ndefaults:\n  - /experiment/digits_oracle\n", None),  # absolute
        ("# @package _global_\ndefaults:\n  - model: tiny\n", None),  # experiment/model/tiny
        ("# @package _global_\ndefaults:\n  - optional model: nothing\n", None),
        ("# @package _global_\ndefaults:\n  - _self_\n  - override /model: null\n", None),
        ("\n  # @package _global_\ndefaults:\n  - override /method: dann\n", None),
        ("# @package _global_\ndefaults:\n  - model: tinny\n", "unknown experiment/model 'tinny'"),
        ("# @package _global_\ndefaults:\n  - /experiment/digits_orcle\n", "Did you mean"),
        ("# a comment\n# @package _global_\ndefaults:\n  - override /method: dann\n", "above"),
    ],
)
def test_an_experiment_file_s_defaults_list_is_read_as_hydra_reads_it(tmp_path, text, problem):
    from mic.train import unknown_option

    (tmp_path / "experiment" / "model").mkdir(parents=True)
    (tmp_path / "experiment" / "model" / "tiny.yaml").write_text("bottleneck_dim: 32\n")
    (tmp_path / "experiment" / "mine.yaml").write_text(text)
    found = unknown_option(["--config-dir", str(tmp_path), "experiment=mine"])
    assert (found is None) if problem is None else (problem in found), found


def test_own_dataset_class_replaces_the_target_as_docs_own_dataset_shows(tmp_path):
    """docs/own_dataset.md's command: ``~dataset.target`` drops the bundled target, ``+``
    adds the user's class (the check before Hydra composes with the deletion); a deleted key
    that is not there is named with its level's closest names."""
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "data.py").write_text(
        "import torch\n"
        "class MyTarget(torch.utils.data.Dataset):\n"
        "    def __init__(self, root, n=40):\n"
        "        self.root, self.n = root, n\n"
        "    def __len__(self):\n"
        "        return self.n\n"
        "    def __getitem__(self, i):\n"
        "        return torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i))\n"
        "class NoLength(MyTarget):\n"
        "    __len__ = None\n"
    )
    own = "+dataset.target={_target_: mypkg.data.MyTarget, root: /data/tgt}"
    out = _cli(*TINY, "~dataset.target", own, "hydra.run.dir=run", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    resolved = (tmp_path / "run" / "config.yaml").read_text()
    assert "mypkg.data.MyTarget" in resolved and "DigitsDomain" in resolved  # source kept
    from mic.train import unknown_setting  # what mic-train says before Hydra composes

    said = unknown_setting(["~dataset.targt"])
    assert said.startswith(
        "no setting dataset.targt: dataset has no 'targt'. Did you mean: target?"
    )
    assert unknown_setting(["~dataset.target", own]) is None
    # a dataset without __len__ ended in a TypeError of the resume record
    own = own.replace("MyTarget", "NoLength")
    out = _cli(*TINY, "~dataset.target", own, "hydra.run.dir=nolen", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "dataset.target (NoLength) has no __len__ or no __getitem__" in out.stderr


def test_the_default_run_folder_says_whether_mic_is_on_and_source_only_with_mic_is_warned(
    tmp_path,
):
    out = _cli(*TINY, "method=source_only", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (
        "trains on target images: this is not the source-only baseline (mic=none for that)"
        in out.stderr
    )
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["digits_source_only_mic"]
    (log,) = (tmp_path / "runs" / "digits_source_only_mic").glob("*/*.log")  # said once there
    assert "[WARNING] - method=source_only with mic, which" in log.read_text()
    # without MIC: no suffix (the folder name's resolver, as Hydra calls it)
    from omegaconf import OmegaConf

    import mic.train  # noqa: F401  (registers the resolver)

    root = importlib.resources.files("mic.conf") / "config.yaml"
    name = OmegaConf.to_container(OmegaConf.create(root.read_text()).hydra.job, resolve=False)
    name = name["name"]
    for terms, want in [
        ({}, "d_m"),
        ({"mic": {"_target_": "mic.MaskedImageConsistency"}}, "d_m_mic"),
    ]:
        method = {"name": "m", "terms": terms}
        assert OmegaConf.create({"dataset": {"name": "d"}, "method": method, "x": name}).x == want


def test_mic_train_writes_mic_s_warnings_as_one_line_and_others_as_python_does():
    import warnings

    import mic.experiment
    from mic.train import _format_warning

    ours = _format_warning("the loader is short", UserWarning, mic.experiment.__file__, 12, "x")
    assert ours == "mic: warning: the loader is short\n"
    theirs = _format_warning("deprecated", FutureWarning, warnings.__file__, 3, "line")
    assert "FutureWarning: deprecated" in theirs and warnings.__file__ in theirs


def test_a_class_of_one_s_own_given_the_group_s_other_keys_is_told_to_replace_the_group():
    """model._target_=mine on the command line kept model.backbone: a bare TypeError."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from mic.train import user_error

    cfg = OmegaConf.create({"model": {"_target_": "tests.helpers.tiny_model", "backbone": "x"}})
    with pytest.raises(Exception) as info:
        instantiate(cfg.model)
    said = user_error(info.value)
    assert "unexpected keyword argument 'backbone'" in said
    assert "drop them (~model.backbone), or replace the whole model config" in said


def test_a_fault_in_a_term_of_one_s_own_is_in_the_run_log_with_its_traceback(tmp_path):
    """The log ended at the last evaluation line: an error that is no user error (it keeps
    its traceback on the console) was in no file."""
    (tmp_path / "boom.py").write_text(
        "import mic\n"
        "class Boom(mic.LossTerm):\n"
        "    def forward(self, ctx):\n"
        "        raise RuntimeError('boom in my term')\n"
    )
    out = _cli(*TINY, "+method.terms.boom={_target_: boom.Boom}", "hydra.run.dir=r", cwd=tmp_path)
    assert out.returncode == 1 and "RuntimeError: boom in my term" in out.stderr
    log = (tmp_path / "r" / "digits_mean_teacher_mic.log").read_text()
    assert "[ERROR] - the run stopped on an error:" in log
    assert "RuntimeError: boom in my term" in log


def test_a_model_of_one_s_own_that_is_no_module_is_named(tmp_path):
    """It ended in the optimiser's AttributeError ('NotModule' ... 'named_parameters')."""
    (tmp_path / "mine.py").write_text(
        "class NotModule:\n    def __init__(self, num_classes=10):\n        self.num_classes = 10\n"
    )
    own = ["~model.backbone", "~model.bottleneck_dim", "~model.pretrained"]
    out = _cli(*TINY, *own, "model._target_=mine.NotModule", "hydra.run.dir=r", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "model (mine.NotModule) built a NotModule, not a torch.nn.Module" in out.stderr


@pytest.mark.parametrize("finished, status", [(True, 0), (False, 143)])
def test_a_signal_after_the_command_has_ended_leaves_at_once(finished, status):
    """A scheduler's SIGTERM in the second a finished run cleans up marked the done job as
    failed (143, no message); a command that ended on an error still leaves with 128 + 15."""
    import subprocess
    import sys

    code = (
        "import os, signal, time\n"
        "from mic.cli import leave_at_next_signal\n"
        f"leave_at_next_signal(finished={finished})\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(30)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert out.returncode == status, out.stderr[-500:]


def test_a_list_of_one_group_s_options_is_refused_with_what_to_give_instead():
    from mic.train import unknown_option

    several = unknown_option(["experiment=[streets, det_shapes]"])
    assert several.startswith("experiment=[streets, det_shapes] chooses several experiment")
    assert "(experiment=streets)" in several and "-m experiment=streets,det_shapes" in several
    assert unknown_option(["+experiment=[streets]"]) == (
        "experiment=[streets]: experiment takes one option, without brackets: experiment=streets"
    )
    empty = unknown_option(["method=[]"])
    assert empty.startswith("method=[]: method takes one option") and "dacs" in empty
    assert unknown_option(["-m", "method=dacs,mean_teacher"]) is None  # a sweep's: Hydra's
    # without -m: Hydra's "Ambiguous value" and its traceback-like advice
    assert unknown_option(["method=dacs,mean_teacher"]) == (
        "method=dacs,mean_teacher names several method options: run each in turn with -m "
        "(mic-train -m method=dacs,mean_teacher), or choose one (method=dacs)"
    )


def test_a_list_of_options_of_a_group_of_one_s_own_is_left_to_hydra(tmp_path):
    """Hydra composes several options of a group (+extra=[a,b]) on purpose; mic's groups
    take one each, a group of one's own may not."""
    from mic.train import unknown_option

    (tmp_path / "extra").mkdir()
    for name, setting in (("a", "seed: 3"), ("b", "iterations: 3")):
        (tmp_path / "extra" / f"{name}.yaml").write_text(f"# @package _global_\n{setting}\n")
    assert unknown_option(["--config-dir", str(tmp_path), "+extra=[a,b]"]) is None
