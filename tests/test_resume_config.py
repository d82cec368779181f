"""Resuming with a changed config, after a bad file, and what a resumed run records."""

import json

import torch

from mic.experiment import build_experiment, load_config, run_experiment
from tests.cli import run_mic_train
from tests.helpers import TINY_RUN, class_folders, folder_overrides

TINY = [*TINY_RUN, "log.tensorboard=false", "optimizer=sgd", "optimizer.lr=0.001"]


def test_an_allowed_learning_rate_change_applies_from_the_resumed_iteration(tmp_path):
    run_experiment(load_config([*TINY, "iterations=2", "checkpoint.interval=1"]), tmp_path)
    changed = ["iterations=4", "resume=auto", "optimizer.lr=0.01"]
    exp = build_experiment(
        load_config([*TINY, *changed, "resume_allow_changes=[optimizer.lr]"]), tmp_path
    )
    assert exp.loop.step == 2
    assert exp.loop.lr() == 0.01  # not the checkpoint's 0.001
    assert exp.loop.scheduler.base_lrs == [0.01] * len(exp.loop.optimizer.param_groups)
    momentum = exp.loop.optimizer.state_dict()["state"]
    assert momentum  # the optimiser's state still comes from the checkpoint
    exp.loop.run()
    assert exp.loop.step == 4


def test_a_bad_file_met_mid_run_saves_first_and_resume_continues_once_it_is_fixed(tmp_path):
    tgt = class_folders(tmp_path / "tgt", ["x"], n=40)
    broken = tgt / "x" / "7.png"
    good = broken.read_bytes()
    broken.write_bytes(b"garbage")
    run = tmp_path / "run"
    args = [
        *TINY_RUN,
        *folder_overrides(tmp_path, target=tgt),
        "preflight=false",  # met mid-run, not before: the case this test is about
        "iterations=12",
        "loader.target_batch_size=4",
        "loader.source_batch_size=4",
        f"hydra.run.dir={run}",
    ]
    first = run_mic_train(args)
    assert first.returncode == 2, first.stderr[-2000:]
    assert "cannot read image" in first.stderr and "resume=auto" in first.stderr
    saved = sorted(run.glob("checkpoints/iter_*.pt"))
    assert saved, "the state before the bad batch must be saved"
    step = torch.load(saved[-1], weights_only=True)["step"]
    broken.write_bytes(good)
    second = run_mic_train([*args, "resume=auto"])
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"resuming from {saved[-1]} at iteration {step}" in second.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["after_adaptation"]["step"] == 12


def test_a_resumed_run_keeps_its_evaluation_history_and_a_restart_its_log_clean(tmp_path):
    base = [*TINY, "adaptation_start=2", "checkpoint.interval=1", "log.interval=1"]
    run_experiment(load_config([*base, "iterations=3"]), tmp_path)
    summary = run_experiment(load_config([*base, "iterations=4", "resume=auto"]), tmp_path)
    assert summary["before_adaptation"]["step"] == 2  # the evaluation of the first part
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # no step logged twice after the resume
    # a run restarted before its first checkpoint starts its log afresh
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "metrics.jsonl").write_text('{"step": 3, "lr": 0.1}\n')
    run_experiment(load_config([*TINY, "iterations=2", "log.interval=1"]), fresh)
    steps = [json.loads(x)["step"] for x in (fresh / "metrics.jsonl").read_text().splitlines()]
    assert 3 not in steps and steps == sorted(steps)


def test_resume_auto_says_which_newer_checkpoints_it_cannot_read(tmp_path):
    import pytest

    from mic.resume import find_resume_checkpoint
    from mic.training.checkpoint import save_checkpoint

    good = save_checkpoint({"step": 1}, tmp_path / "checkpoints" / "iter_00000001.pt")
    (tmp_path / "checkpoints" / "iter_00000002.pt").write_bytes(b"cut off")
    with pytest.warns(UserWarning, match=r"iter_00000002\.pt of .* cannot be read.*iter_00000001"):
        assert find_resume_checkpoint("auto", tmp_path) == good


def test_a_part_switched_off_on_resume_is_named_once_by_its_prefix(tmp_path):
    import pytest

    from mic import ConfigError

    run_experiment(load_config([*TINY, "iterations=2", "checkpoint.interval=1"]), tmp_path)
    off = [*TINY, "iterations=4", "resume=auto", "mic=none"]
    with pytest.raises(ConfigError) as info:
        build_experiment(load_config(off), tmp_path)
    message = str(info.value)
    assert (
        "method.terms.mic.* (" in message and "resume_allow_changes=[method.terms.mic]" in message
    )
    exp = build_experiment(load_config([*off, "resume_allow_changes=[method.terms.mic]"]), tmp_path)
    assert exp.loop.step == 2


def test_resume_refuses_init_from_and_unknown_allowed_changes_through_mic_train(tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "iterations=2", "checkpoint.interval=1", f"hydra.run.dir={run}"]
    assert run_mic_train(args).returncode == 0
    weights = run / "checkpoints" / "student.pt"

    init = run_mic_train([*args, "resume=auto", "iterations=3", f"init_from={weights}"])
    assert init.returncode == 2 and "Traceback" not in init.stderr
    assert f"mic: error: init_from={weights} but a resumed run" in init.stderr
    assert "reads no init_from" in init.stderr and "Drop init_from" in init.stderr
    assert "resume_allow_changes=[init_from]" not in init.stderr

    typo = run_mic_train([*args, "resume=auto", "iterations=3", "resume_allow_changes=[iteratons]"])
    assert typo.returncode == 2 and "Traceback" not in typo.stderr
    assert "resume_allow_changes names a key of no setting" in typo.stderr
    assert "'iteratons': Did you mean: iterations?" in typo.stderr
    # a prefix of a key, and a part that only the checkpoint's config has, are keys
    ok = run_mic_train(
        [
            *args,
            "resume=auto",
            "iterations=3",
            "mic=none",
            "resume_allow_changes=[method.terms.mic]",
        ]
    )
    assert ok.returncode == 0, ok.stderr[-2000:]


def test_an_allowed_change_that_adds_modules_names_them_and_points_to_init_from(tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "iterations=2", "checkpoint.interval=1", f"hydra.run.dir={run}"]
    assert run_mic_train(args).returncode == 0
    checkpoint = run / "checkpoints" / "iter_00000002.pt"

    allowed = ["resume=auto", "iterations=3", "method=dann", "resume_allow_changes=[method]"]
    out = run_mic_train([*args, *allowed])
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    message = out.stderr.split("mic: error: ")[-1]
    assert "does not fit this experiment's modules (the method's weights: 6 not in the " in message
    assert "terms.dann.discriminator.0.weight" in message and "and 3 more" in message
    assert "cannot be resumed from this checkpoint, even where resume_allow_changes" in message
    assert f"with init_from={checkpoint}" in message
    assert "Error(s) in loading state_dict" not in message

    # the advice works: a new run of the other method from the checkpoint's weights
    new = run_mic_train(
        [
            *TINY,
            "iterations=1",
            "method=dann",
            f"init_from={checkpoint}",
            f"hydra.run.dir={tmp_path}/new",
        ]
    )
    assert new.returncode == 0, new.stderr[-3000:]
