"""Resuming with a changed config, after a bad file, and what a resumed run records."""

import json
import re
import shutil
import warnings

import pytest
import torch
from omegaconf import OmegaConf

from mic import CheckpointError, DatasetError, LossTerm
from mic.experiment import build_experiment, load_config, run_experiment
from tests.cli import run_mic_train
from tests.helpers import TINY_RUN, class_folders, folder_overrides, write_png

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


def test_an_allowed_bias_lr_factor_change_applies_from_the_resumed_iteration(tmp_path):
    """(the checkpoint's groups were kept: its factor in silence)"""
    run_experiment(
        load_config([*TINY, "iterations=2", "checkpoint.interval=1", "bias_lr_factor=2"]), tmp_path
    )
    again = ["iterations=4", "resume=auto", "bias_lr_factor=3"]
    exp = build_experiment(
        load_config([*TINY, *again, "resume_allow_changes=[bias_lr_factor]"]), tmp_path
    )
    assert sorted({g["lr_mult"] for g in exp.loop.optimizer.param_groups}) == [1.0, 3.0]
    assert sorted({g["lr"] for g in exp.loop.optimizer.param_groups}) == pytest.approx(
        [0.001, 0.003]
    )
    # one that groups the parameters otherwise cannot carry the optimiser's state over
    regrouped = ["iterations=4", "resume=auto", "bias_lr_factor=1"]
    with pytest.raises(CheckpointError, match=r"holds the optimiser's state of 2 parameter gr"):
        build_experiment(
            load_config([*TINY, *regrouped, "resume_allow_changes=[bias_lr_factor]"]), tmp_path
        )


def test_a_resume_that_rescales_the_validators_says_so(tmp_path):
    """eval.* may change on resume, but validators scoring another number of elements mixed
    scores of two scales in one pick (snd 3.08 -> 1.78 at the resume), without a word."""
    validators = ["eval.validators=[snd,bnm]", "checkpoint.interval=1"]
    run_experiment(load_config([*TINY, *validators, "iterations=2"]), tmp_path)
    again = [*TINY, *validators, "iterations=3", "resume=auto"]
    with pytest.warns(UserWarning, match=r"batches: 4 -> 1: the validators may now"):
        build_experiment(load_config([*again, "eval.validation.batches=1"]), tmp_path)
    with warnings.catch_warnings():  # entropy and im are means: no scale to change
        warnings.filterwarnings("error", message="resume: eval.validation")
        again[again.index("eval.validators=[snd,bnm]")] = "eval.validators=[entropy,im]"
        build_experiment(load_config([*again, "eval.validation.batches=1"]), tmp_path)
    # another BatchNorm protocol: the run's records and picks mixed two, without a word
    with pytest.warns(UserWarning, match=r"resume: eval.adabn_batches: 1 -> 2: the evaluations"):
        build_experiment(load_config([*again, "eval.adabn_batches=2"]), tmp_path)


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
    assert "(in a batch of the target loader). The run saved its state" in first.stderr
    saved = sorted(run.glob("checkpoints/iter_*.pt"))
    assert saved, "the state before the bad batch must be saved"
    step = torch.load(saved[-1], weights_only=True)["step"]
    # removing the file is the other fix: the message's options continue the run
    advised = re.search(
        r"plus: (\S+) (resume=auto) \(and, .*?(resume_allow_changes=\S+)\)", first.stderr
    )
    assert advised, first.stderr[-2000:]
    shutil.copytree(run, tmp_path / "removed")
    broken.unlink()
    where = advised.group(1).replace(str(run), str(tmp_path / "removed"))
    removed = run_mic_train([*args[:-1], where, advised.group(2), advised.group(3)])
    assert removed.returncode == 0, removed.stderr[-2000:]
    assert (tmp_path / "removed" / "summary.json").exists() and not (run / "summary.json").exists()
    broken.write_bytes(good)
    second = run_mic_train([*args, "resume=auto"])
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"resuming from {saved[-1]} at iteration {step}" in second.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["after_adaptation"]["step"] == 12
    broken.write_bytes(b"garbage")  # from Python: no command to add options to
    with pytest.raises(DatasetError) as raised:
        run_experiment(load_config(args[:-1]), tmp_path / "py")
    said = str(raised.value)
    assert "of the target loader" in said and f"run_experiment(cfg, '{tmp_path / 'py'}')" in said


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
    from mic.resume import find_resume_checkpoint
    from mic.training.checkpoint import save_checkpoint

    good = save_checkpoint({"step": 1}, tmp_path / "checkpoints" / "iter_00000001.pt")
    (tmp_path / "checkpoints" / "iter_00000002.pt").write_bytes(b"cut off")
    with pytest.warns(UserWarning, match=r"iter_00000002\.pt of .* cannot be read.*iter_00000001"):
        assert find_resume_checkpoint("auto", tmp_path) == good
    # through mic-train: one line, mic: warning: ..., as mic's other warnings (not Python's
    # form with its source line)
    run_experiment(load_config([*TINY, "iterations=2", "checkpoint.interval=1"]), tmp_path / "r")
    (tmp_path / "r" / "checkpoints" / "iter_00000003.pt").write_bytes(b"cut off")
    out = run_mic_train([*TINY, "iterations=3", "resume=auto", f"hydra.run.dir={tmp_path / 'r'}"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert "mic: warning: resume=auto: the newer checkpoint iter_00000003.pt of" in out.stderr
    assert "UserWarning" not in out.stderr and "warnings.warn" not in out.stderr


def test_resume_auto_without_a_checkpoint_says_it_starts_a_new_run(tmp_path):
    out = run_mic_train([*TINY, "iterations=1", "resume=auto", f"hydra.run.dir={tmp_path / 'r'}"])
    assert out.returncode == 0, out.stderr[-2000:]
    said = out.stdout + out.stderr
    assert f"resume=auto: no checkpoint in {tmp_path / 'r'}; starting a new run" in said
    assert "hydra.run.dir=<the run's folder>" not in said
    # the default run folder is new at each command: resuming needs hydra.run.dir
    out = run_mic_train([*TINY, "iterations=1", "resume=auto"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    said = out.stdout + out.stderr
    assert "resume=auto: no checkpoint in " in said and "; starting a new run" in said
    assert "hydra.run.dir=<the run's folder>" in said


def _data_run(tmp_path, n):
    """A finished 2-iteration run on folders whose target holds ``n`` images."""
    tgt = class_folders(tmp_path / f"tgt{n}", ["x"], n=n)
    data = folder_overrides(tmp_path, target=tgt)
    run_experiment(load_config([*TINY, *data, "iterations=2"]), tmp_path / "run")
    return data, tgt


def test_a_root_may_move_but_not_to_other_data(tmp_path):
    import shutil

    data, tgt = _data_run(tmp_path, 6)
    other = class_folders(tmp_path / "other", ["x"], n=9)
    common = [*TINY, "iterations=3", "resume=auto", f"hydra.run.dir={tmp_path / 'run'}"]
    out = run_mic_train([*common, *data, f"dataset.root_target={other}"])
    assert out.returncode == 2, out.stderr[-2000:]
    assert "the training data differ from the checkpoint's (target: 9 samples, the " in out.stderr
    assert "run had 6)" in out.stderr
    assert f"dataset.root_target: '{tgt}' -> '{other}'" in out.stderr
    assert "resume_allow_changes=[dataset.root_target]" in out.stderr
    assert "dataset.target.root" not in out.stderr  # the interpolated copy: named once
    # the same data moved elsewhere: resumed
    moved = shutil.copytree(tgt, tmp_path / "moved")
    out = run_mic_train([*common, *data, f"dataset.root_target={moved}"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert "resuming from" in out.stdout


def test_other_files_of_the_same_count_are_other_data(tmp_path):
    data, _ = _data_run(tmp_path, 6)
    renamed = tmp_path / "renamed"
    for i in range(6):  # 6 images, as before, of other names
        write_png(renamed / f"frame_{i}.png", 40 * i)
    common = [*TINY, "iterations=3", "resume=auto", f"hydra.run.dir={tmp_path / 'run'}"]
    out = run_mic_train([*common, *data, f"dataset.root_target={renamed}"])
    assert out.returncode == 2, out.stderr[-2000:]
    assert "(target: other files (by name) than the checkpoint's run had)" in out.stderr
    assert "resume_allow_changes=[dataset.root_target]" in out.stderr


def test_a_checkpoint_without_the_data_record_still_resumes(tmp_path):
    data, _ = _data_run(tmp_path, 6)
    path = tmp_path / "run" / "checkpoints" / "iter_00000002.pt"
    state = torch.load(path, weights_only=True)
    assert {k: state["data"][k] for k in ("source", "target")} == {"source": 6, "target": 6}
    assert len(state["data"]["source_files"]) == 16  # a digest of the file names
    del state["data"]  # as written before the record
    torch.save(state, path)
    other = class_folders(tmp_path / "other", ["x"], n=9)
    again = [*TINY, *data, f"dataset.root_target={other}", "iterations=3", "resume=auto"]
    exp = build_experiment(load_config(again), tmp_path / "run")
    assert exp.loop.step == 2


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


def test_other_data_are_allowed_by_the_changed_setting_the_config_check_named():
    """A dataset's paths need not be called roots (seg_folders' ``dataset.target_images``):
    the key the config check asked to allow also allows the other sample counts."""
    import pytest
    from omegaconf import OmegaConf

    from mic.core import ConfigError
    from mic.resume import check_same_data

    saved_config = {"dataset": {"target_images": "/a", "test": {"images": "/t"}}}

    def cfg(allow, test="/t"):
        data = {"target_images": "/b", "test": {"images": test}}
        return OmegaConf.create({"dataset": data, "resume_allow_changes": allow})

    check_same_data({"target": 6}, {"target": 9}, saved_config, cfg(["dataset.target_images"]))
    with pytest.raises(ConfigError, match=r"resume_allow_changes=\[dataset\.target_images\]"):
        check_same_data({"target": 6}, {"target": 9}, saved_config, cfg([]))
    with pytest.raises(ConfigError) as error:  # the test set only scores: not named
        check_same_data({"target": 6}, {"target": 9}, saved_config, cfg([], test="/u"))
    assert "dataset.test" not in str(error.value)


def test_own_data_paths_may_move_like_roots_and_test_paths_change_freely():
    """det_coco / seg_folders name their paths ``source_images``, ``test_annotations``, ...:
    moving them was refused as a change of the training setup, though docs/training.md lets
    data folders move (to the same data) and the test set change."""
    from mic.resume import config_changes

    def coco(where: str, test: str) -> dict:
        return {
            "dataset": {
                "source_images": f"{where}/src",
                "source_annotations": f"{where}/src.json",
                "target_images": f"{where}/tgt",
                "test_images": f"{test}/tst",
                "test_annotations": f"{test}/tst.json",
                "source": {"images": f"{where}/src", "annotations": f"{where}/src.json"},
                "target": {"root": f"{where}/tgt"},
                "test": {"images": f"{test}/tst", "annotations": f"{test}/tst.json"},
                "num_classes": 3,
            }
        }

    assert config_changes(coco("/a", "/t"), coco("/b", "/u"), (1, 1)) == {}
    changed = coco("/b", "/u")
    changed["dataset"]["num_classes"] = 4
    assert set(config_changes(coco("/a", "/t"), changed, (1, 1))) == {"dataset.num_classes"}


def test_a_change_read_from_another_setting_names_that_setting(tmp_path):
    import pytest

    from mic import ConfigError

    first = [*TINY, "scheduler=poly", "scheduler.warmup_iters=0"]
    run_experiment(load_config([*first, "iterations=2", "checkpoint.interval=1"]), tmp_path)
    with pytest.raises(ConfigError) as info:
        build_experiment(load_config([*first, "iterations=4", "resume=auto"]), tmp_path)
    assert "scheduler.max_iters: 2 -> 4 (= ${iterations})" in str(info.value)


def test_other_annotations_under_the_same_images_are_other_data(tmp_path):
    """A COCO source whose json changed (boxes removed) holds the same image files: its
    labels' fingerprint tells the runs apart."""
    import json

    import pytest
    from omegaconf import OmegaConf
    from PIL import Image

    from mic.core import ConfigError
    from mic.datasets.detection import CocoDetection
    from mic.resume import check_same_data, data_record

    (tmp_path / "img").mkdir()
    Image.new("RGB", (30, 20)).save(tmp_path / "img" / "a.png")
    boxes = [[1, 1, 5, 5], [10, 5, 8, 6]]
    for name, kept in (("all", boxes), ("fewer", boxes[:1])):
        data = {
            "images": [{"id": 1, "file_name": "a.png", "width": 30, "height": 20}],
            "annotations": [
                {"id": i, "image_id": 1, "category_id": 1, "bbox": b} for i, b in enumerate(kept)
            ],
            "categories": [{"id": 1, "name": "car"}],
        }
        (tmp_path / f"{name}.json").write_text(json.dumps(data))

    def record(name):
        source = CocoDetection(tmp_path / "img", tmp_path / f"{name}.json")
        return data_record({"source": source, "target": source})

    saved, now = record("all"), record("fewer")
    assert saved["source_files"] == now["source_files"]  # the same image files
    assert saved["source_labels"] != now["source_labels"] and record("all") == saved
    before = {"dataset": {"source_annotations": str(tmp_path / "all.json")}}

    def cfg(allow):
        data = {"source_annotations": str(tmp_path / "fewer.json")}
        return OmegaConf.create({"dataset": data, "resume_allow_changes": allow})

    with pytest.raises(ConfigError, match="source: other labels than the checkpoint's run had"):
        check_same_data(saved, now, before, cfg([]))
    check_same_data(saved, now, before, cfg(["dataset.source_annotations"]))


def test_a_resume_with_another_class_count_is_refused_whatever_is_allowed(tmp_path):
    import pytest

    from mic import ConfigError

    three = folder_overrides(tmp_path / "three")
    four = [
        *folder_overrides(
            tmp_path / "four",
            source=class_folders(tmp_path / "four" / "src", "abcd"),
            test=class_folders(tmp_path / "four" / "tst", "abcd"),
            num_classes=4,
        ),
        "dataset.size=8",
    ]
    run = tmp_path / "run"
    run_experiment(load_config([*TINY, *three, "dataset.size=8", "iterations=2"]), run)
    for allow in ([], ["resume_allow_changes=[dataset,model,task]"]):
        again = load_config([*TINY, *four, "iterations=4", "resume=auto", *allow])
        with pytest.raises(ConfigError, match="the model predicts 4 classes, the checkpoint's 3"):
            run_experiment(again, run)


def test_a_checkpoint_of_a_model_that_keeps_its_class_count_elsewhere_is_named_as_such(tmp_path):
    """HRDA keeps its count under model.segmenter: resuming a plain segmenter's checkpoint
    said 'the model predicts None classes'."""
    from mic import ConfigError

    tiny = ["dataset.train_count=4", "dataset.test_count=2", "loader.source_batch_size=2",
            "loader.target_batch_size=2", "scheduler.warmup_iters=0", "eval.interval=0",
            "log.progress=false", "log.tensorboard=false"]  # fmt: skip
    run_experiment(load_config(["experiment=streets", *tiny, "iterations=1"]), tmp_path)
    again = load_config(["experiment=streets_hrda", *tiny, "iterations=2", "resume=auto"])
    with pytest.raises(ConfigError) as refused:
        run_experiment(again, tmp_path)
    said = str(refused.value)
    assert "None" not in said and "the checkpoint's a mic.tasks.segmentation.SmallUNet" in said
    assert "whatever resume_allow_changes lists" in said  # (allowing it would not fit)
    allowed = load_config(
        ["experiment=streets_hrda", *tiny, "iterations=2", "resume=auto",
         "resume_allow_changes=[model,task,method,dataset]"]
    )  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"the checkpoint.s a mic\.tasks\.segmentation\.SmallUNet"
    ):
        run_experiment(allowed, tmp_path)
    # the same class by another path is no other model: allowed, it resumes
    same = "model._target_=mic.tasks.segmentation.models.small_unet.SmallUNet"
    again = ["experiment=streets", *tiny, "iterations=2", "resume=auto", same]
    run_experiment(
        load_config([*again, "resume_allow_changes=[model._target_,iterations]"]), tmp_path
    )


def test_a_best_by_whose_best_lies_before_the_resume_says_so(tmp_path):
    import warnings

    run = [*TINY, "adaptation_start=1", "eval.interval=2", "eval.validation.batches=1"]
    run_experiment(load_config([*run, "iterations=4"]), tmp_path)
    again = load_config([*run, "iterations=6", "checkpoint.best_by=snd", "resume=auto"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_experiment(again, tmp_path)
    said = " ".join(str(w.message) for w in caught)
    # this seed's snd is best at iteration 1 (before the resume), and no later evaluation
    # beats it: no best.pt, for that reason, not for scores that were never finite
    assert not (tmp_path / "checkpoints" / "best.pt").is_file()
    assert "its best score was at iteration 1, at or before the checkpoint" in said
    assert "not a finite number at any evaluation" not in said


def test_a_section_of_many_changes_is_named_by_the_section_to_allow(tmp_path):
    import pytest

    from mic import ConfigError

    run_experiment(load_config([*TINY, "iterations=2", "scheduler=poly"]), tmp_path)
    again = load_config([*TINY, "iterations=4", "scheduler=warmup_multistep", "resume=auto"])
    with pytest.raises(ConfigError, match=r"scheduler\.\* \(\d+ settings") as info:
        run_experiment(again, tmp_path)
    assert "resume_allow_changes=[scheduler]" in str(info.value)


def test_a_resume_with_iterations_left_removes_the_earlier_end_s_summary_and_exports(tmp_path):
    """A finished run extended (iterations raised) and stopped again kept the first end's
    summary.json (best.pt at an iteration it no longer held) and student.pt / teacher.pt."""
    base = [*TINY, "adaptation_start=2"]
    run_experiment(load_config([*base, "iterations=3"]), tmp_path)
    ends = [tmp_path / "summary.json", *(tmp_path / "checkpoints").glob("*ent.pt")]
    assert len(ends) == 2 and (tmp_path / "checkpoints" / "teacher.pt").exists()
    again = build_experiment(load_config([*base, "iterations=3", "resume=auto"]), tmp_path)
    assert again.loop.step == 3 and all(p.exists() for p in ends)  # nothing left: kept
    longer = build_experiment(load_config([*base, "iterations=5", "resume=auto"]), tmp_path)
    assert all(p.exists() for p in ends)  # a resume that fails before a checkpoint keeps them
    longer.loop.train_step()
    longer.loop.step += 1
    longer.checkpointer.save(longer.loop)  # a newer checkpoint supersedes them
    assert not any(p.exists() for p in ends)
    assert not (tmp_path / "checkpoints" / "teacher.pt").exists()


def test_a_resume_from_an_earlier_checkpoint_sets_the_later_ones_aside(tmp_path):
    """Resumed from iter_2 of a folder holding iter_4 (another learning rate, say), a crash
    before the resumed run's next checkpoint must not let resume=auto continue from iter_4,
    the abandoned path's."""
    run_experiment(load_config([*TINY, "checkpoint.interval=1", "checkpoint.keep=4"]), tmp_path)
    folder = tmp_path / "checkpoints"
    assert (folder / "iter_00000004.pt").exists()
    again = [*TINY, "checkpoint.interval=1", "checkpoint.keep=4", "optimizer.lr=0.002"]
    allowed = [f"resume={folder / 'iter_00000002.pt'}", "resume_allow_changes=[optimizer.lr]"]
    exp = build_experiment(load_config([*again, *allowed]), tmp_path)
    assert exp.loop.step == 2
    with pytest.warns(UserWarning, match="resumed at iteration 2, before this folder's 2 later"):
        exp.checkpointer.before_run(exp.loop)  # as the run starts; then it crashes
    assert sorted(p.name for p in (folder / "abandoned_at_00000002").iterdir()) == [
        "iter_00000003.pt",
        "iter_00000004.pt",
    ]
    auto = build_experiment(
        load_config([*again, "resume=auto", "resume_allow_changes=[optimizer.lr]"]), tmp_path
    )
    assert auto.loop.step == 2  # the resumed path's newest, not the abandoned iter_4
    auto.loop.run()  # iterations 3 and 4 again, at the new rate
    back = build_experiment(
        load_config(
            [*again, f"resume={folder / 'iter_00000001.pt'}", "resume_allow_changes=[optimizer.lr]"]
        ),
        tmp_path,
    )
    with pytest.warns(UserWarning, match=r"3 later checkpoint\(s\) \(iter_00000002.pt to iter_"):
        back.checkpointer.before_run(back.loop)  # a second go-back keeps the first one's files
    assert len(list((folder / "abandoned_at_00000002").iterdir())) == 2
    assert len(list((folder / "abandoned_at_00000001").iterdir())) == 3


def test_a_crash_while_metrics_jsonl_is_rewritten_on_resume_loses_no_line(tmp_path, monkeypatch):
    """The resume's rewrite of metrics.jsonl (dropping lines after the checkpoint) goes
    through a temporary file: a crash in it leaves the whole file."""
    import mic.training.checkpoint as checkpoint

    run_experiment(load_config([*TINY, "checkpoint.interval=2", "log.interval=1"]), tmp_path)
    metrics = tmp_path / "metrics.jsonl"
    before = metrics.read_text()

    def crash(*args):
        raise KeyboardInterrupt  # a kill between the temporary file and its rename

    monkeypatch.setattr(checkpoint.os, "replace", crash)
    exp = build_experiment(load_config([*TINY, "iterations=6", "resume=auto"]), tmp_path)
    logger = next(h for h in exp.loop.hooks if type(h).__name__ == "MetricsLogger")
    with pytest.raises(KeyboardInterrupt):
        logger.before_run(exp.loop)
    assert metrics.read_text() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_resume_with_another_method_says_at_once_that_new_modules_cannot_resume(tmp_path):
    """method=dann over mean teacher: the first refusal advised resume_allow_changes=[method],
    which then met a second refusal (the discriminator's weights are not in the checkpoint)."""
    from mic import ConfigError

    run_experiment(load_config([*TINY, "iterations=2"]), tmp_path)
    again = load_config([*TINY, "iterations=4", "resume=auto", "method=dann"])
    with pytest.raises(ConfigError, match="cannot be resumed even so") as e:
        build_experiment(again, tmp_path)
    assert "init_from=<checkpoint>" in str(e.value)
    lr = load_config([*TINY, "iterations=4", "resume=auto", "optimizer.lr=0.01"])
    with pytest.raises(ConfigError) as e:  # a change without new modules is not told so
        build_experiment(lr, tmp_path)
    assert "even so" not in str(e.value)


def test_the_settings_free_to_change_on_resume_are_the_ones_the_docs_list():
    """docs/training.md lists them; the list lived in the code alone."""
    import re
    from pathlib import Path

    from mic.resume import FREE_TO_CHANGE

    docs = (Path(__file__).parents[1] / "docs" / "training.md").read_text()
    listed = docs.split("these settings may change on resume without being")[1].split("\n\n")[0]
    written = set(re.findall(r"`([\w.]+?)(?:\*)?`", listed))
    for key in FREE_TO_CHANGE:
        if key.startswith("dataset."):  # the test set: listed in the paragraph before
            assert f"`{key}" in docs, key
            continue
        assert key.rstrip(".") in {w.rstrip(".") for w in written}, key


def test_a_setting_added_to_mic_s_configs_at_its_default_is_no_change_on_resume():
    """augmentation.jitter, added to conf/ at StrongAugmentation's default, made every
    checkpoint written before it refuse to resume (None -> 'torchvision')."""
    from mic.resume import config_changes

    def config(**augmentation) -> dict:
        aug = {"_target_": "mic.StrongAugmentation", "jitter_p": 0.8, **augmentation}
        return {"method": {"terms": {"mic": {"masker": {"augmentation": aug}}}}}

    key = "method.terms.mic.masker.augmentation.jitter"
    assert config_changes(config(), config(jitter="torchvision"), (1, 1)) == {}
    assert config_changes(config(jitter="torchvision"), config(), (1, 1)) == {}  # and back
    assert config_changes(config(), config(jitter="published"), (1, 1)) == {
        key: (None, "published")
    }
    assert config_changes(config(jitter="published"), config(jitter="torchvision"), (1, 1))
    assert config_changes(config(), config(kornia="x"), (1, 1))  # no such argument: a change
    # a data set config's own value added since (dataset.source_label_format, read through
    # the readers' nodes, which are compared): no change; a reader's value changed is one
    reader = {"_target_": "mic.datasets.segmentation.Cityscapes", "label_format": "labelTrainIds"}
    old = {"dataset": {"source": {"dataset": dict(reader)}}}
    new = {"dataset": {"source_label_format": "labelTrainIds", "source": {"dataset": reader}}}
    assert config_changes(old, new, (1, 1)) == {}
    new["dataset"]["source"]["dataset"] = {**reader, "label_format": "labelIds"}
    assert set(config_changes(old, new, (1, 1))) == {"dataset.source.dataset.label_format"}


def test_a_null_that_stands_for_the_class_s_own_value_is_no_change_on_resume():
    """task.primary_metric, now null where a data set sets none (the task's own: accuracy),
    was 'accuracy' in the configs of earlier digits runs: their resume, and the benchmark
    cache's runs, counted it a change."""
    from mic.resume import config_changes, same_meaning

    def config(metric) -> dict:
        task = "mic.tasks.classification.ClassificationTask"
        return {"task": {"_target_": task, "num_classes": 10, "primary_metric": metric}}

    assert config_changes(config("accuracy"), config(None), (1, 1)) == {}
    assert config_changes(config(None), config("accuracy"), (1, 1)) == {}
    key = "task.primary_metric"
    assert config_changes(config("mean_class_accuracy"), config(None), (1, 1)) == {
        key: ("mean_class_accuracy", None)
    }
    # a null where the argument's default is not null is a change (num_classes has none)
    target = {"task._target_": "mic.tasks.classification.ClassificationTask"}
    given, null = {**target, "task.num_classes": 10}, {**target, "task.num_classes": None}
    assert not same_meaning("task.num_classes", given, null)


def test_a_root_setting_added_at_its_default_is_no_change_on_resume():
    """augmentation_jitter, added to conf/config.yaml at 'torchvision' (what every strong
    augmentation computed before it): the checkpoints written before it resume with it set so,
    and the default since, 'published', is a change for them in the augmentations that read it
    (not today's default but what the run ran: ABSENT_MEANS); the root key itself, read only
    through them, is free, and so a run without strong augmentation resumes; an unknown root
    key is a change."""
    from mic.resume import config_changes, flatten

    new = load_config(["experiment=streets", "augmentation_jitter=torchvision"])
    after = OmegaConf.to_container(new, resolve=True)
    before = {k: v for k, v in after.items() if k != "augmentation_jitter"}
    assert config_changes(before, after, (1, 1)) == {}
    default = load_config(["experiment=streets"])
    assert default.augmentation_jitter == "published"
    published = OmegaConf.to_container(default, resolve=True)
    assert set(config_changes(before, published, (1, 1))) == {
        "method.terms.mix.augmentation.jitter",
        "method.terms.mic.masker.augmentation.jitter",
    }
    assert config_changes(before, {**before, "colour": "torchvision"}, (1, 1))
    sada = OmegaConf.to_container(load_config(["experiment=det_shapes", "mic=none"]), resolve=True)
    assert not [k for k in flatten(sada) if k.endswith("augmentation.jitter")]
    old = {k: v for k, v in sada.items() if k != "augmentation_jitter"}
    assert config_changes(old, sada, (1, 1)) == {}


def test_a_checkpoint_from_before_the_jitter_setting_is_told_what_it_ran():
    """A 0.1.0 checkpoint's config has no augmentation.jitter (it ran torchvision's formulas);
    under the default since, published, the refusal said 'None -> published', which names no
    value to resume with: it names the one the run ran, and that value resumes."""
    from mic import ConfigError
    from mic.resume import check_resume_config

    def without_jitter(tree):
        if isinstance(tree, dict):
            return {k: without_jitter(v) for k, v in tree.items() if k != "jitter"}
        return tree

    saved = OmegaConf.to_container(load_config(["experiment=streets"]), resolve=True)
    saved = without_jitter(saved)
    saved.pop("augmentation_jitter")
    with pytest.raises(ConfigError) as info:
        check_resume_config(saved, load_config(["experiment=streets"]), (1, 1))
    assert "method.terms.mic.masker.augmentation.jitter: unset, so 'torchvision' then ->" in str(
        info.value
    )
    back = load_config(["experiment=streets", "augmentation_jitter=torchvision"])
    assert check_resume_config(saved, back, (1, 1)) == {}
    # a subclass of StrongAugmentation inherits what its absent setting meant
    from mic.augmentation import StrongAugmentation
    from mic.resume import _absent_means

    class Own(StrongAugmentation):
        pass

    assert _absent_means(Own, "jitter", "published") == "torchvision"
    assert _absent_means(Own, "jitter_p", 0.8) == 0.8


def test_an_allowed_key_covers_the_settings_read_from_it_and_is_the_one_advised(tmp_path):
    """dataset.train_count=10 on resume advised [dataset] (every data change), and
    [dataset.train_count] itself was refused, naming the reader keys read from it."""
    from mic import ConfigError

    tiny = ["experiment=streets", "dataset.test_count=2", "loader.source_batch_size=2",
            "loader.target_batch_size=2", "scheduler.warmup_iters=0", "eval.interval=0",
            "log.progress=false", "log.tensorboard=false", "scheduler.max_iters=3"]  # fmt: skip
    run_experiment(load_config([*tiny, "dataset.train_count=8", "iterations=1"]), tmp_path)
    again = [*tiny, "dataset.train_count=10", "iterations=2", "resume=auto"]
    with pytest.raises(
        ConfigError, match=re.escape("add resume_allow_changes=[dataset.train_count]")
    ):
        run_experiment(load_config(again), tmp_path)
    allowed = load_config([*again, "resume_allow_changes=[dataset.train_count]"])
    assert run_experiment(allowed, tmp_path)["iterations"] == 2


def test_another_process_count_is_named_as_such_and_the_grouping_clause_only_where_it_applies():
    """A resume with another torchrun process count was refused as a change of "the config",
    with a clause on lr_mult that had nothing to do with it."""
    from mic import ConfigError
    from mic.resume import check_resume_config

    cfg = load_config(TINY)
    saved = OmegaConf.to_container(cfg, resolve=True)
    with pytest.raises(ConfigError) as refused:
        check_resume_config(saved, cfg, (2, 1))
    said = str(refused.value)
    assert said.startswith("the run differs from the checkpoint's in what the run trains with ")
    assert "(processes: 2 -> 1 torchrun processes)" in said and "lr_mult" not in said
    assert "resume_allow_changes=[processes]" in said
    for change in ("bias_lr_factor=3", "+lr_mult={model.backbone: 0.1}"):
        with pytest.raises(ConfigError, match="a change of lr_mult, no_weight_decay or bias_lr"):
            check_resume_config(saved, load_config([*TINY, change]), (1, 1))


#: a run whose loss term refuses its batch at iteration 4 (``RefusesAtStep``), on top of TINY
REFUSING = [
    *TINY,
    "iterations=6",
    "+method.terms.bad._target_=tests.test_resume_config.RefusesAtStep",
    "+method.terms.bad.at=3",
]


def _refused(overrides: list[str], run_dir) -> str:
    """The message of the DatasetError that ends a REFUSING run with ``overrides``."""
    with pytest.raises(DatasetError) as said:
        run_experiment(load_config([*REFUSING, *overrides]), run_dir)
    return str(said.value)


class RefusesAtStep(LossTerm):
    """A loss term that refuses the batch of iteration ``at`` (0-based), as ClassMix refuses
    a batch of one."""

    uses_target = False

    def __init__(self, at: int, weight: float = 1.0) -> None:
        super().__init__(weight)
        self.at = at

    def forward(self, ctx):
        if ctx.step == self.at:
            raise DatasetError("this term cannot use the batch")
        return ctx.task.loss(ctx.student, ctx.source_images, ctx.source_targets) * 0.0


def test_a_term_s_data_error_names_the_last_checkpoint_the_resumed_one_or_that_none_was_written(
    tmp_path,
):
    """After a term's DatasetError (its step half done: nothing saved), the message named a
    checkpoint only where this process had written one: a resumed run said nothing of the one
    it resumed from, and a run without a checkpoint nothing of what was lost."""
    periodic = ["eval.interval=0", "checkpoint.interval=2"]
    said = _refused(periodic, tmp_path / "run")
    assert "The run's last checkpoint is of iteration 2 (iteration 4 was not finished) in " in said
    said = _refused([*periodic, "resume=auto"], tmp_path / "run")  # again, resumed from it
    assert "of iteration 2 (iteration 4 was not finished) in " in said
    assert "checkpoints/iter_00000002.pt: once this is fixed, continue" in said
    said = _refused(["eval.interval=0", "checkpoint.interval=0"], tmp_path / "never")
    assert "(iterations 1 to 3 are lost; checkpoint.interval=N saves one every N" in said


def test_a_resume_into_a_new_folder_is_not_refused_by_the_best_pt_it_copies_there(tmp_path):
    """Resuming another run's iter_*.pt into a new folder copied the recorded best's checkpoint
    there as best.pt first, then refused the folder as one that held a run."""
    args = [*TINY, "eval.interval=2", "checkpoint.interval=2", "checkpoint.keep=5"]
    run_experiment(load_config(args), tmp_path / "first")
    start = tmp_path / "first" / "checkpoints" / "iter_00000002.pt"
    summary = run_experiment(load_config([*args, f"resume={start}"]), tmp_path / "second")
    assert summary["after_adaptation"]["step"] == 4
    assert (tmp_path / "second" / "checkpoints" / "iter_00000004.pt").is_file()


def test_a_term_s_data_error_names_a_best_pt_newer_than_any_periodic_checkpoint(tmp_path):
    """With checkpoint.interval=0 an evaluation's best.pt was the run's one checkpoint, yet the
    message said none was written and to run the command again (which is refused)."""
    said = _refused(["eval.interval=1", "checkpoint.interval=0"], tmp_path / "run")
    assert "checkpoints/best.pt: once this is fixed, continue with the same command plus: " in said
    assert "No checkpoint" not in said
