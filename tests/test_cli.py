"""The command line end to end, and the clear errors it gives for bad input."""

import json

from tests.helpers import (
    TINY_RUN,
    class_folders,
    folder_overrides,
    user_error_of,
    write_png,
)
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
    assert summary["after_adaptation"]["step"] == 4


def test_cli_unknown_config_key_is_one_clear_message(tmp_path):
    out = _cli(*TINY, "learning_rate=0.1", f"hydra.run.dir={tmp_path}")
    assert out.returncode != 0
    assert "Could not override 'learning_rate'" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_user_error_exits_cleanly_without_traceback(tmp_path):
    out = _cli(*TINY, "model.backbone=resnet5", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2
    assert "mic: error: unknown backbone 'resnet5'" in out.stderr
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------- bad input, in-process


def _error(overrides):
    return user_error_of([*TINY, *overrides])


def test_missing_dataset_folder(tmp_path):
    msg = _error(folder_overrides(tmp_path, target=tmp_path / "does_not_exist"))
    assert "does_not_exist' does not exist" in msg


def test_empty_dataset_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "no images found" in _error(folder_overrides(tmp_path, target=tmp_path / "empty"))


def test_wrong_layout(tmp_path):
    flat = tmp_path / "flat"
    write_png(flat / "1.png")
    write_png(flat / "2.png")
    assert "no class sub-folders" in _error(folder_overrides(tmp_path, source=flat))


def test_unreadable_image_through_a_worker(tmp_path):
    tgt = class_folders(tmp_path / "tgt", ["x"], n=3)
    (tgt / "x" / "broken.png").write_bytes(b"garbage")
    msg = _error([*folder_overrides(tmp_path, target=tgt), "loader.num_workers=1"])
    assert msg.startswith("cannot read image") and "broken.png" in msg
    assert "Traceback" not in msg


def test_more_class_folders_than_classes(tmp_path):
    # a source with 4 class folders while the task has 3 classes
    src = class_folders(tmp_path / "src4", ["a", "b", "c", "d"])
    msg = _error(folder_overrides(tmp_path, source=src))
    assert "class counts disagree" in msg and "source has 4" in msg


def test_label_outside_the_class_range_from_a_user_dataset():
    # a user's dataset that declares no class count is caught on its labels
    msg = _error(["dataset.source._target_=tests.test_cli.shifted_digits"])
    assert "is outside the class range [0, 9]" in msg


def shifted_digits(**kwargs):
    """The digits source with labels shifted by 3 and no declared class count."""
    from mic.datasets import DigitsDomain

    ds = DigitsDomain(**kwargs)
    return [(x, int(y) + 3) for x, y in (ds[i] for i in range(len(ds)))]


def test_unknown_backbone():
    assert "unknown backbone 'resnet5'" in _error(["model.backbone=resnet5"])


def test_source_and_target_with_different_class_counts(tmp_path):
    tst = class_folders(tmp_path / "tst2", ["a", "b"])
    msg = _error(folder_overrides(tmp_path, test=tst))
    assert "class counts disagree" in msg and "test has 2" in msg


def test_model_and_task_class_counts_disagree():
    assert "the model predicts 7 classes" in _error(["model.num_classes=7"])


def test_batch_larger_than_dataset(tmp_path):
    msg = _error([*folder_overrides(tmp_path), "loader.source_batch_size=50"])
    assert "fewer than one batch of 50" in msg


def test_unknown_constructor_argument():
    assert "cannot build an object from the config" in _error(["+model.colour=red"])
