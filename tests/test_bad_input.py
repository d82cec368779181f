"""Bad input to a run: every case stops with one clear paragraph, and an existing run folder
(its checkpoints and logs) is left exactly as it was. docs/errors.md lists each case with the
message it gives: regenerate it with ``python -m tests.test_bad_input``."""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import pytest
import torch

from mic.experiment import load_config, run_experiment
from mic.train import user_error
from mic.training import per_process_batch_size
from tests.helpers import TINY_RUN, class_folders, folder_overrides, write_png

TINY = [*TINY_RUN, "log.tensorboard=false"]
DOCS = Path(__file__).parent.parent / "docs" / "errors.md"


def _unreadable(tmp):
    tgt = class_folders(tmp / "bad_tgt", ["x"], n=3)
    (tgt / "x" / "broken.png").write_bytes(b"garbage")
    return [*folder_overrides(tmp, target=tgt), "loader.num_workers=1"]


def _flat(tmp):
    for i in range(2):
        write_png(tmp / "flat" / f"{i}.png")
    return folder_overrides(tmp, source=tmp / "flat")


def _empty(tmp):
    (tmp / "empty").mkdir()
    return folder_overrides(tmp, target=tmp / "empty")


def _write(tmp, name, data: bytes):
    path = tmp / name
    path.write_bytes(data)
    return path


#: a few tiny street scenes for the segmentation cases that fail in the first iteration
SCENES = [
    "dataset.size=32",
    "dataset.train_count=8",
    "dataset.test_count=2",
    "loader.source_batch_size=2",
    "loader.target_batch_size=2",
]

# (id, what is wrong, overrides(tmp, run) -> list, a fragment of the message)
CASES = [
    # ------------------------------------------------------------------ config
    (
        "config-unknown-key",
        "a key that does not exist",
        lambda t, r: ["learning_rate=0.1"],
        "Could not override 'learning_rate'",
    ),
    (
        "config-missing-value",
        "a mandatory value not given",
        lambda t, r: ["dataset=folders"],
        "Missing mandatory value",
    ),
    (
        "config-unknown-argument",
        "an argument the class does not take",
        lambda t, r: ["+model.colour=red"],
        "cannot build an object from the config",
    ),
    (
        "config-precision",
        "an unknown precision",
        lambda t, r: ["precision=fp8"],
        "precision must be one of",
    ),
    (
        "config-nan-policy",
        "an unknown NaN policy",
        lambda t, r: ["nan_policy=maybe"],
        "nan_policy must be",
    ),
    (
        "config-accumulate",
        "gradient accumulation of 0",
        lambda t, r: ["accumulate=0"],
        "accumulate must be at least 1",
    ),
    (
        "config-iterations",
        "no iterations",
        lambda t, r: ["iterations=0"],
        "iterations must be at least 1",
    ),
    (
        "config-adaptation-start",
        "adaptation after the end",
        lambda t, r: ["adaptation_start=5"],
        "adaptation_start must lie in",
    ),
    (
        "config-fp16-sam",
        "fp16 with SDAT's SAM",
        lambda t, r: ["method=sdat", "precision=fp16"],
        "cannot be combined with sharpness-aware minimisation",
    ),
    (
        "config-lr-mult",
        "a learning-rate multiplier for no parameter",
        lambda t, r: ["lr_mult={model.decoder: 10}"],
        "matches no trainable parameter",
    ),
    (
        "config-backbone",
        "an unknown backbone",
        lambda t, r: ["model.backbone=resnet5"],
        "unknown backbone 'resnet5'",
    ),
    (
        "config-model-classes",
        "model and dataset class counts differ",
        lambda t, r: ["model.num_classes=7"],
        "the model predicts 7 classes",
    ),
    (
        "config-teacher-alpha",
        "an EMA decay outside [0, 1]",
        lambda t, r: ["teacher.alpha=1.5"],
        "teacher.alpha must lie in [0, 1]",
    ),
    (
        "config-mask-ratio",
        "a mask ratio outside [0, 1]",
        lambda t, r: ["method.terms.mic.masker.ratio=1.5"],
        "masker ratio must be a probability",
    ),
    (
        "config-weighting",
        "an unknown pseudo-label weighting",
        lambda t, r: ["method.terms.mic.weighting=soft"],
        "pseudo-label weighting must be one of",
    ),
    (
        "segmentation-config-mask",
        "segmentation: a zero mask block",
        lambda t, r: ["experiment=streets", "iterations=2", "method.terms.mic.masker.block_size=0"],
        "block_size must be a positive",
    ),
    (
        "segmentation-hrda-plain-task",
        "segmentation: an HRDA model with the plain segmentation task",
        lambda t, r: ["experiment=streets", *SCENES, "model=hrda_small_unet"],
        "set task=segmentation_hrda",
    ),
    (
        "segmentation-hrda-plain-model",
        "segmentation: HRDA's task with a single-scale model",
        lambda t, r: ["experiment=streets", *SCENES, "task=segmentation_hrda"],
        "HRDASegmentationTask trains HRDA models",
    ),
    (
        "segmentation-hrda-large-crop",
        "segmentation: an HRDA detail crop larger than the training crop",
        lambda t, r: ["experiment=streets_hrda", *SCENES, "model.detail_crop=[64,64]"],
        "larger than the training images",
    ),
    (
        "detection-config-classes",
        "detection: model and dataset class counts differ",
        lambda t, r: [
            "experiment=det_shapes",
            "iterations=2",
            "adaptation_start=0",
            "dataset.source.length=8",
            "dataset.target.length=8",
            "dataset.test.length=8",
            "loader.source_batch_size=2",
            "loader.target_batch_size=2",
            "model.num_classes=9",
        ],
        "classes",
    ),
    # ------------------------------------------------------------------ data
    (
        "data-missing-folder",
        "a dataset folder that does not exist",
        lambda t, r: folder_overrides(t, target=t / "nowhere"),
        "does not exist",
    ),
    ("data-empty-folder", "an empty image folder", lambda t, r: _empty(t), "no images found"),
    (
        "data-wrong-layout",
        "images where class folders should be",
        lambda t, r: _flat(t),
        "no class sub-folders",
    ),
    (
        "data-unreadable-image",
        "an image file that cannot be read (in a worker)",
        lambda t, r: _unreadable(t),
        "cannot read image",
    ),
    (
        "data-label-range",
        "a label outside the class range",
        lambda t, r: ["dataset.source._target_=tests.test_cli.shifted_digits"],
        "outside the class range",
    ),
    (
        "data-class-counts",
        "source and target with different class counts",
        lambda t, r: folder_overrides(t, test=class_folders(t / "tst2", ["a", "b"])),
        "class counts disagree",
    ),
    (
        "data-batch-size",
        "a batch larger than the dataset",
        lambda t, r: [*folder_overrides(t), "loader.source_batch_size=50"],
        "fewer than one batch of 50",
    ),
    # ------------------------------------------------------------------ checkpoint
    (
        "checkpoint-missing",
        "resume from a file that does not exist",
        lambda t, r: [f"resume={t / 'none.pt'}"],
        "no such checkpoint file",
    ),
    (
        "checkpoint-foreign",
        "resume from a file that is not a mic checkpoint",
        lambda t, r: [f"resume={_write(t, 'w.pt', _torch_bytes())}"],
        "is not a mic checkpoint",
    ),
    (
        "checkpoint-corrupt",
        "resume from a corrupt file",
        lambda t, r: [f"resume={_write(t, 'c.pt', b'PK broken')}"],
        "corrupt or not a mic checkpoint",
    ),
    (
        "checkpoint-other-model",
        "resume with a different model",
        lambda t, r: [f"resume={r}", "model.bottleneck_dim=32"],
        "does not fit this experiment",
    ),
    (
        "checkpoint-empty-folder",
        "resume from a folder without checkpoints",
        lambda t, r: [f"resume={t}"],
        "no readable checkpoint",
    ),
    # ------------------------------------------------------------------ environment
    (
        "env-no-cuda",
        "device=cuda on a machine without CUDA",
        lambda t, r: ["device=cuda"],
        "CUDA is not available",
    ),
]


def _torch_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    torch.save({"weight": torch.ones(2)}, buf)
    return buf.getvalue()


def _assert_intact(folder: Path, before: dict[str, str]) -> None:
    """Every file that was there is there, byte for byte (a failed resume may add its
    config_resumed.yaml)."""
    after = _snapshot(folder)
    assert {k: after.get(k) for k in before} == before


def _new_run(args: list[str]) -> bool:
    """Whether a case starts a new run (another dataset) rather than resuming the existing one."""
    return "dataset=folders" in args or SCENES[0] in args


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory):
    """A finished run folder, which no failing run may touch."""
    run = tmp_path_factory.mktemp("existing")
    run_experiment(load_config([*TINY, "iterations=2", "checkpoint.interval=1"]), run)
    return run


def message_of(overrides, run_dir, resume="auto") -> str:
    """The message of a run into ``run_dir`` (by default resuming the run that is there)."""
    try:
        run_experiment(load_config([*TINY, f"resume={resume}", *overrides]), run_dir)
    except Exception as e:
        message = user_error(e)
        assert message is not None, f"not a clear error: {e!r}"
        return message
    raise AssertionError(f"no error for {overrides}")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_paragraph_and_leaves_the_run_folder_intact(
    case, tmp_path, existing_run
):
    _, _, overrides, fragment = case
    before = _snapshot(existing_run)
    checkpoint = existing_run / "checkpoints" / "iter_00000002.pt"
    args = overrides(tmp_path, checkpoint)
    if _new_run(args):  # another dataset: a new run, which must leave no checkpoint
        fresh = tmp_path / "fresh"
        message = message_of(args, fresh, resume="null")
        assert not list(fresh.glob("checkpoints/*.pt"))
    else:  # resuming the existing run with the bad input
        message = message_of(args, existing_run)
    assert fragment in message
    assert "\n" not in message and "Traceback" not in message
    _assert_intact(existing_run, before)


def test_unwritable_run_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert "cannot be written" in message_of([], blocker / "run", resume="null")


def test_a_new_run_into_a_folder_that_holds_one(existing_run):
    before = _snapshot(existing_run)
    assert "already holds a run" in message_of([], existing_run, resume="null")
    _assert_intact(existing_run, before)


def test_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch, existing_run):
    import shutil

    import mic.training.checkpoint as ckpt

    run = tmp_path / "run"
    shutil.copytree(existing_run, run)
    before = _snapshot(run / "checkpoints")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full)
    message = message_of(["checkpoint.interval=1"], run)
    assert "No space left on device" in message and "previous checkpoint is intact" in message
    assert _snapshot(run / "checkpoints") == before
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_global_batch_that_does_not_divide_among_processes():
    from mic.core import ConfigError

    with pytest.raises(ConfigError, match="does not divide among 3 processes"):
        per_process_batch_size(16, 3, "source")


def test_every_case_is_documented():
    text = DOCS.read_text()
    missing = [c[0] for c in CASES if f"`{c[0]}`" not in text]
    assert not missing, f"add to docs/errors.md (python -m tests.test_bad_input): {missing}"


if __name__ == "__main__":  # print docs/errors.md's table
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        run = root / "existing"
        run_experiment(load_config([*TINY, "iterations=2", "checkpoint.interval=1"]), run)
        print("| case | what is wrong | message |\n|---|---|---|")
        for i, (name, what, overrides, _) in enumerate(CASES):
            tmp = root / f"case{i}"
            tmp.mkdir()
            args = overrides(tmp, run / "checkpoints" / "iter_00000002.pt")
            fresh = _new_run(args)
            text = message_of(args, tmp / "fresh" if fresh else run, "null" if fresh else "auto")
            text = text.replace(d, "/tmp/x").replace("|", "\\|")
            print(f"| `{name}` | {what} | {text} |")
