"""``init_from``: a run starts from given model weights (a weights file, a mic checkpoint or a
run folder), the teacher from a copy of them; weights of another model are refused (through
``mic-train`` in tests/test_bad_input.py)."""

from __future__ import annotations

import re

import pytest
import torch

from mic.core import ConfigError
from mic.experiment import build_experiment, load_config, run_experiment
from mic.training import initial_weights, load_checkpoint
from tests.helpers import TINY_RUN

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = [*TINY_RUN, "log.tensorboard=false", "eval.adabn_batches=0"]


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("init") / "source"
    run_experiment(load_config([*TINY, "method=source_only", "mic=none", "seed=5"]), folder)
    return folder


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("which", ["folder", "weights", "checkpoint"])
def test_student_and_teacher_start_from_the_given_weights(source_run, which):
    path = {
        "folder": source_run,
        "weights": source_run / "checkpoints" / "student.pt",
        "checkpoint": source_run / "checkpoints" / "iter_00000004.pt",
    }[which]
    saved = torch.load(source_run / "checkpoints" / "student.pt", weights_only=True)
    if which == "checkpoint":
        assert _equal(load_checkpoint(path)["student"], saved)
    exp = build_experiment(load_config([*TINY, f"init_from={path}"]))
    assert _equal(exp.student.state_dict(), saved)
    exp.loop.teacher.update(exp.student, 0)  # what iteration 0 does
    assert _equal(exp.loop.teacher.model.state_dict(), saved)
    fresh = build_experiment(load_config(TINY))  # the same seed without init_from differs
    assert not _equal(fresh.student.state_dict(), saved)


def test_a_resumed_run_keeps_its_own_weights(source_run, tmp_path):
    run = tmp_path / "run"
    overrides = [*TINY, f"init_from={source_run}", "checkpoint.interval=2"]
    run_experiment(load_config(overrides), run)
    last = load_checkpoint(run / "checkpoints" / "iter_00000004.pt")["student"]
    exp = build_experiment(load_config([*overrides, "resume=auto", "iterations=6"]), run)
    assert _equal(exp.student.state_dict(), last)


def test_a_run_from_init_from_scores_the_start_model_before_adaptation(source_run, tmp_path):
    """With adaptation_start=0 (the recipe from a converged source model) the start model was
    never scored: the summary had no 'before adaptation' to measure the adaptation against."""
    import json

    run = tmp_path / "run"
    summary = run_experiment(load_config([*TINY, f"init_from={source_run}"]), run)
    source = json.loads((source_run / "summary.json").read_text())["after_adaptation"]
    before = summary["before_adaptation"]
    assert before["step"] == 0  # the source model's final score, scored again: the same
    assert before["student"] == before["teacher"] == source["student"]
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval/student/accuracy" in r] == [0, 4]
    trained = load_checkpoint(run / "checkpoints" / "iter_00000004.pt")["student"]
    unscored = build_experiment(load_config([*TINY, f"init_from={source_run}"]), tmp_path / "u")
    unscored.evaluation.at.discard(0)  # the score at 0 leaves training as it was
    unscored.loop.run()
    assert _equal(unscored.student.state_dict(), trained)


def test_a_run_stopped_after_scoring_its_start_model_resumes_with_its_best_pt(source_run, tmp_path):
    """A stop right after the iteration-0 evaluation leaves best.pt alone (no iter_*.pt yet):
    resume=auto took it for another run's and moved it to previous_run/, and the summary
    then named a best.pt that was not there."""
    from mic import Hook
    from mic.training import TrainingInterrupted

    class StopAfterScoring(Hook):
        def on_record(self, loop, record):
            if record.get("step") == 0:
                loop.request_stop("SIGINT")

    run, overrides = tmp_path / "run", [*TINY, f"init_from={source_run}", "checkpoint.interval=2"]
    exp = build_experiment(load_config(overrides), run)
    exp.loop.hooks.append(StopAfterScoring())
    with pytest.raises(TrainingInterrupted):
        exp.loop.run()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt"]
    summary = run_experiment(load_config([*overrides, "resume=auto"]), run)
    assert not (run / "checkpoints" / "previous_run").exists()
    best = summary["best_checkpoint"]  # the file it names is there, of the iteration named
    assert load_checkpoint(best["path"])["step"] == best["step"]


def test_load_run_of_a_task_of_one_s_own_not_importable_here_is_one_clear_error(
    source_run, tmp_path
):
    """Hydra's InstantiationException came with its traceback; mic-train says what to do."""
    from omegaconf import OmegaConf

    import mic

    cfg = OmegaConf.load(source_run / "config.yaml")
    cfg.task._target_ = "my_own_tasks.DepthTask"  # importable where the run was started
    (tmp_path / "run").mkdir()
    OmegaConf.save(cfg, tmp_path / "run" / "config.yaml")
    with pytest.raises(ConfigError, match=r"Error locating target 'my_own_tasks.DepthTask'\): a _"):
        mic.load_run(tmp_path / "run")
    # a class that is found but fails in its constructor: its own error, not "not importable"
    cfg.task._target_ = "tests.test_init_from._broken_task"
    OmegaConf.save(cfg, tmp_path / "run" / "config.yaml")
    with pytest.raises(Exception, match="a bug of the task's own") as raised:
        mic.load_run(tmp_path / "run")
    assert "importable" not in str(raised.value)


def _broken_task(**_):
    raise AttributeError("a bug of the task's own")


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_weights_saved_from_a_wrapped_model_load_without_their_prefix(source_run, tmp_path, prefix):
    # DistributedDataParallel's, and torch.compile's, which the checkpoints of a student
    # given compiled held before unwrap took it off
    saved = torch.load(source_run / "checkpoints" / "student.pt", weights_only=True)
    path = tmp_path / "wrapped_student.pt"
    torch.save({f"{prefix}{k}": v for k, v in saved.items()}, path)
    exp = build_experiment(load_config([*TINY, f"init_from={path}"]))
    assert _equal(exp.student.state_dict(), saved)


def test_a_checkpoint_of_a_compiled_student_with_its_prefix_resumes(teacher_run, tmp_path):
    file = max((teacher_run / "checkpoints").glob("iter_*.pt"))
    state = load_checkpoint(file)
    renamed = {"student": "_orig_mod.", "teacher": "model._orig_mod."}
    for part, prefix in renamed.items():  # as a student given compiled saved them
        cut = len("model.") if part == "teacher" else 0
        state[part] = {f"{prefix}{k[cut:]}": v for k, v in state[part].items()}
    torch.save(state, tmp_path / "compiled.pt")
    exp = build_experiment(load_config(TINY))
    exp.loop.load_state_dict(load_checkpoint(tmp_path / "compiled.pt"))
    assert _equal(exp.loop.student.state_dict(), load_checkpoint(file)["student"])


def test_a_file_without_weights_is_refused(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"step": 3}, path)
    with pytest.raises(ConfigError, match="holds no model weights"):
        initial_weights(path)
    with pytest.raises(ConfigError, match=r"holds no student\.pt"):
        initial_weights(tmp_path)


def test_weights_with_nan_or_inf_are_named():
    """Floating-point tensors with NaN or Inf are named by their dotted paths; integer
    tensors (BatchNorm's batch counts) and finite ones are not."""
    from mic.training.checkpoint import nonfinite_weights

    state = {
        "student": {"a": torch.zeros(3), "b": torch.tensor([1.0, float("inf")])},
        "teacher": {"n": torch.tensor(7), "c": torch.full((2,), float("nan"))},
        "step": 4,
    }
    assert nonfinite_weights(state) == ["student.b", "teacher.c"]
    assert nonfinite_weights({"a": torch.zeros(2, dtype=torch.float16)}) == []


def test_a_checkpoint_with_nan_weights_is_refused_naming_the_earlier_ones(tmp_path):
    from mic.core import CheckpointError
    from tests.test_bad_input import _diverged

    run = tmp_path / "run"
    overrides = [*TINY, "checkpoint.interval=1", "checkpoint.keep=3"]
    run_experiment(load_config(overrides), run)
    _diverged(run / "checkpoints" / "iter_00000004.pt")
    with pytest.raises(CheckpointError, match="hold NaN or Inf values") as error:
        build_experiment(load_config([*overrides, "resume=auto", "iterations=6"]), run)
    assert "also holds iter_00000002.pt, iter_00000003.pt)" in str(error.value)


def test_the_file_started_from_is_named_and_a_bad_path_before_any_data_is_read(
    source_run, tmp_path, monkeypatch, capsys
):
    build_experiment(load_config([*TINY, f"init_from={source_run}"]))
    chosen = source_run / "checkpoints" / "student.pt"
    assert f"init_from: the model starts from the weights in {chosen}" in capsys.readouterr().out

    def read_data(*args, **kwargs):
        raise AssertionError("the data were read before the bad path was named")

    monkeypatch.setattr("mic.experiment.build_datasets", read_data)
    with pytest.raises(ConfigError, match=r"init_from: '.*none\.pt' does not exist"):
        build_experiment(load_config([*TINY, f"init_from={tmp_path / 'none.pt'}"]))
    from mic.core import CheckpointError

    with pytest.raises(CheckpointError, match="no such checkpoint file or run folder"):
        build_experiment(load_config([*TINY, f"resume={tmp_path / 'none.pt'}"]), tmp_path / "r")


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("init") / "adapted"
    run_experiment(
        load_config([*TINY, "seed=6", "checkpoint.interval=2", "checkpoint.keep=2"]), folder
    )
    return folder


def test_init_model_teacher_starts_from_the_teacher_of_a_checkpoint_or_run(teacher_run, capsys):
    """``best.pt`` may be chosen by the teacher's score; ``init_from`` took its student
    without a word. ``init_model=teacher`` takes the teacher, and the log names which."""
    checkpoint = teacher_run / "checkpoints" / "iter_00000002.pt"
    state = load_checkpoint(checkpoint)
    teacher = {k.removeprefix("model."): v for k, v in state["teacher"].items()}
    assert not _equal(teacher, state["student"])
    for which, expected in (("student", state["student"]), ("teacher", teacher)):
        exp = build_experiment(
            load_config([*TINY, f"init_from={checkpoint}", f"init_model={which}"])
        )
        assert _equal(exp.student.state_dict(), expected)
        told = f"init_from: the model starts from the {which} of the checkpoint {checkpoint}"
        assert told in capsys.readouterr().out
    # a run folder: the teacher at the end of the run
    exp = build_experiment(load_config([*TINY, f"init_from={teacher_run}", "init_model=teacher"]))
    final = torch.load(teacher_run / "checkpoints" / "teacher.pt", weights_only=True)
    assert _equal(exp.student.state_dict(), final)


def test_init_model_teacher_is_refused_where_there_is_no_teacher_to_take(source_run, teacher_run):
    weights = teacher_run / "checkpoints" / "student.pt"
    with pytest.raises(ConfigError, match="is a weights file, which holds one model"):
        initial_weights(weights, model="teacher")
    source = source_run / "checkpoints" / "iter_00000004.pt"  # method=source_only: no teacher
    with pytest.raises(ConfigError, match="holds no teacher"):
        initial_weights(source, model="teacher")


def test_a_run_folder_of_a_stopped_run_gives_its_newest_checkpoint_best_pt_included(
    teacher_run, tmp_path
):
    """A run stopped before its end with the default checkpoint.interval=0 leaves only
    best.pt, which resume=auto takes and init_from refused."""
    import shutil

    folder = tmp_path / "stopped"
    (folder / "checkpoints").mkdir(parents=True)
    shutil.copy(teacher_run / "checkpoints" / "iter_00000002.pt", folder / "checkpoints")
    best = load_checkpoint(teacher_run / "checkpoints" / "iter_00000004.pt")
    torch.save(best, folder / "checkpoints" / "best.pt")  # newer than iter_00000002.pt
    assert _equal(initial_weights(folder), best["student"])
    (folder / "checkpoints" / "iter_00000002.pt").unlink()
    assert _equal(initial_weights(folder), best["student"])


def test_weights_for_inference_are_saved_from_the_cpu(tmp_path):
    """A GPU run's student.pt held CUDA tensors, which ``torch.load`` without
    ``map_location`` cannot read on a machine without a GPU. A tensor of another device is
    stood in for by a subclass whose ``cpu()`` gives a plain tensor: only the copy on the CPU
    is a plain tensor, which ``weights_only`` loading takes."""
    from mic.training.checkpoint import save_weights

    class OnDevice(torch.Tensor):
        def cpu(self, *args, **kwargs):
            return torch.Tensor(self.as_subclass(torch.Tensor)).clone()

    model = torch.nn.Linear(2, 3)
    state = {k: v.detach().as_subclass(OnDevice) for k, v in model.state_dict().items()}
    model.state_dict = lambda: state  # type: ignore[method-assign]
    path = save_weights(model, tmp_path / "student.pt")
    saved = torch.load(path, weights_only=True)
    assert all(type(v) is torch.Tensor for v in saved.values())
    assert torch.equal(saved["weight"], state["weight"].as_subclass(torch.Tensor))


def test_load_run_rebuilds_a_run_s_task_and_model_without_its_data(teacher_run, tmp_path):
    import shutil

    import mic
    from mic.tasks.classification import ClassificationTask

    task, model = mic.load_run(teacher_run, model="teacher")
    final = torch.load(teacher_run / "checkpoints" / "teacher.pt", weights_only=True)
    assert isinstance(task, ClassificationTask) and not model.training
    assert _equal(model.state_dict(), final)
    checkpoint = teacher_run / "checkpoints" / "iter_00000002.pt"
    student = mic.load_run(teacher_run, checkpoint=checkpoint)[1]
    assert _equal(student.state_dict(), load_checkpoint(checkpoint)["student"])
    weights = teacher_run / "checkpoints" / "student.pt"  # a weights file: as it is
    plain = mic.load_run(teacher_run, model="teacher", checkpoint=weights)[1]
    assert _equal(plain.state_dict(), torch.load(weights, weights_only=True))
    with torch.no_grad():
        probabilities = task.predict(model, torch.rand(2, 3, 32, 32))
    assert probabilities.shape == (2, task.num_classes)
    with pytest.raises(ConfigError, match=r"holds no config\.yaml: give the folder of a run"):
        mic.load_run(tmp_path)
    with pytest.raises(ConfigError, match=r"the run folder '.*nowhere' does not exist"):
        mic.load_run(tmp_path / "nowhere")  # (was said to hold no config.yaml)
    with pytest.raises(ConfigError, match="model must be 'student' or 'teacher'"):
        mic.load_run(teacher_run, model="ema")
    said = r"takes a path, got 2 \(the checkpoint of iteration 2 is checkpoints/iter_00000002\.pt"
    with pytest.raises(ConfigError, match=said):  # (pathlib's TypeError before)
        mic.load_run(teacher_run, checkpoint=2)
    with pytest.raises(ConfigError, match=r"load_run\(run=\.\.\.\) takes a path, got None"):
        mic.load_run(None)
    failed = tmp_path / "failed"  # a sweep's job that stopped on a data error: Hydra's record
    (failed / ".hydra").mkdir(parents=True)
    (failed / "digits_mean_teacher.log").write_text("mic: error: ...\n")
    said = r"holds no config\.yaml: the run stopped before it began training \(its log: digits_"
    with pytest.raises(ConfigError, match=said):
        mic.load_run(failed)
    (failed / "checkpoints").mkdir()  # a run's folder that lost its config.yaml: not said so
    with pytest.raises(ConfigError, match=r"holds no config\.yaml: give the folder of a run"):
        mic.load_run(failed)
    # the checkpoints of a loop trained in Python: how to load them, which load_run cannot
    python = tmp_path / "python"
    shutil.copytree(teacher_run / "checkpoints", python)
    with pytest.raises(ConfigError, match="trained in Python") as refused:
        mic.load_run(python, model="teacher")
    said = f"mic.training.load_initial_weights(model, '{python}', which='teacher')"
    assert said in str(refused.value)
    net = mic.load_run(teacher_run)[1]  # the model "as that run did", the student's weights
    mic.training.load_initial_weights(net, python, which="teacher")  # (as it says: it loads)
    assert _equal(net.state_dict(), mic.load_run(teacher_run, model="teacher")[1].state_dict())


def test_load_run_of_a_stopped_run_says_which_checkpoint_it_loaded(teacher_run, tmp_path):
    # it loaded the newest checkpoint without a word, where README promised the final weights
    import shutil

    import mic

    stopped = tmp_path / "stopped"
    shutil.copytree(teacher_run, stopped)
    for name in ("student.pt", "teacher.pt", "best.pt", "iter_00000004.pt"):
        (stopped / "checkpoints" / name).unlink(missing_ok=True)
    with pytest.warns(
        UserWarning,
        match=r"no checkpoints/teacher\.pt \(it did not finish\): "
        r"the teacher of its newest checkpoint, iter_00000002\.pt, is loaded",
    ):
        model = mic.load_run(stopped, model="teacher")[1]
    saved = load_checkpoint(stopped / "checkpoints" / "iter_00000002.pt")["teacher"]
    assert _equal(model.state_dict(), {k.removeprefix("model."): v for k, v in saved.items()})
    by_name = mic.load_run(stopped, model="teacher", checkpoint="iter_00000002.pt")[1]
    assert _equal(by_name.state_dict(), model.state_dict())  # a name in checkpoints/
    with pytest.raises(ConfigError, match=r"'best.pt' is no file \(neither here nor in '"):
        mic.load_run(stopped, checkpoint="best.pt")
    import os

    here = os.getcwd()
    os.chdir(tmp_path)  # a file of that name here too: which one is meant is asked
    try:
        shutil.copy(stopped / "checkpoints" / "iter_00000002.pt", "iter_00000002.pt")
        with pytest.raises(ConfigError, match=r"names a file here and one in"):
            mic.load_run(stopped, checkpoint="iter_00000002.pt")
        assert mic.load_run(stopped, checkpoint="./iter_00000002.pt")  # this folder's
    finally:
        os.chdir(here)


def test_weights_without_batchnorm_counts_load_and_others_missing_are_still_refused(
    source_run, tmp_path
):
    """Files from other code often leave out BatchNorm's ``num_batches_tracked``, which
    ``torch.nn.Module.load_state_dict`` takes and no mic model reads; init_from refused them."""
    saved = torch.load(source_run / "checkpoints" / "student.pt", weights_only=True)
    counts = [k for k in saved if k.endswith("num_batches_tracked")]
    assert counts
    path = tmp_path / "no_counts.pt"
    torch.save({k: v for k, v in saved.items() if k not in counts}, path)
    exp = build_experiment(load_config([*TINY, f"init_from={path}"]))
    mine = exp.student.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in saved.items() if k not in counts)
    weight = next(k for k in saved if k.endswith(".weight"))
    torch.save({k: v for k, v in saved.items() if k not in [*counts, weight]}, path)
    with pytest.raises(ConfigError, match=f"1 missing from the file: {re.escape(weight)}"):
        build_experiment(load_config([*TINY, f"init_from={path}"]))


def test_load_run_needs_no_pretrained_weights_and_no_checkpoint_folder(teacher_run, tmp_path):
    """A run trained from pretrained weights (the published recipes) was rebuilt with them,
    downloading what the trained weights replace, and failing offline; a folder given as the
    checkpoint was loaded as a weights file."""
    import shutil

    import mic

    run = shutil.copytree(teacher_run, tmp_path / "run")
    config = (run / "config.yaml").read_text()
    assert "  pretrained: false\n" in config
    pretrained = config.replace("  pretrained: false\n", "  pretrained: true\n")
    (run / "config.yaml").write_text(pretrained)
    model = mic.load_run(run, model="teacher")[1]
    final = torch.load(run / "checkpoints" / "teacher.pt", weights_only=True)
    assert _equal(model.state_dict(), final)
    with pytest.raises(ConfigError, match="is no file"):
        mic.load_run(run, checkpoint=teacher_run)


def test_load_run_turns_off_only_the_weight_settings_a_model_config_has():
    """A model class that takes a ``weights`` file but no ``pretrained`` must not be given
    one; HRDA's wrapped model is reached, and ``norm: auto`` keeps the BatchNorm it chose."""
    from omegaconf import OmegaConf

    from mic.experiment import _without_pretrained_weights

    own = OmegaConf.create({"_target_": "x.Mine", "weights": "w.pt", "width": 8})
    assert OmegaConf.to_container(_without_pretrained_weights(own)) == {
        "_target_": "x.Mine",
        "weights": None,
        "width": 8,
    }
    hrda = OmegaConf.create({"segmenter": {"pretrained": True, "norm": "auto"}, "scale": 0.5})
    off = _without_pretrained_weights(hrda)
    assert OmegaConf.to_container(off.segmenter) == {"pretrained": False, "norm": "frozen"}
    assert hrda.segmenter.pretrained is True  # the run's config is left as it was


def test_load_run_names_its_own_arguments_and_checks_the_device_first(source_run, teacher_run):
    """load_run's refusals spoke of mic-train's init_model, and a device that is not there
    gave torch's error after the model was built."""
    import mic

    checkpoint = source_run / "checkpoints" / "iter_00000004.pt"  # method=source_only
    said = r"load_run\(model='teacher'\), but the checkpoint .* holds no teacher"
    with pytest.raises(ConfigError, match=said) as refused:
        mic.load_run(source_run, model="teacher", checkpoint=checkpoint)
    assert "(load_run(model='student'))" in str(refused.value)
    assert "init_model" not in str(refused.value)
    with pytest.raises(
        ConfigError, match=r"load_run\(device='gpu'\): it is no torch device: use 'cpu'"
    ):
        mic.load_run(teacher_run, device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"load_run\(device='cuda'\): CUDA is not avail"):
            mic.load_run(teacher_run, device="cuda")
    assert next(mic.load_run(teacher_run, device="auto")[1].parameters()).device.type in (
        "cpu",
        "cuda",
    )
    with pytest.raises(ConfigError, match=r"a folder inside the run folder .*: give the run fo"):
        mic.load_run(teacher_run / "checkpoints")  # (was: "a run trained in Python")


def test_a_model_name_other_than_student_or_teacher_is_named(tmp_path):
    """initial_weights(ckpt, model='Teacher') said the file 'holds no model weights'."""
    from mic import ConfigError
    from mic.training import initial_weights

    with pytest.raises(ConfigError, match=r"init_from: the model to read is 'student' or "
                       r"'teacher', got 'Teacher'"):  # fmt: skip
        initial_weights(tmp_path, model="Teacher")


def test_a_backbone_s_own_weights_as_init_from_are_told_to_go_to_the_backbone(tmp_path):
    """A timm backbone's state_dict given as the whole model's listed 100+ missing and extra
    names and nothing else; the message now says whose names they are and where they go."""
    import timm

    from mic import ConfigError
    from mic.tasks.classification import Classifier
    from mic.training import load_initial_weights

    path = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    with pytest.raises(ConfigError) as e:
        load_initial_weights(Classifier("resnet18", 10, pretrained=False), path)
    said = str(e.value)
    assert "the model's part 'backbone' without 'backbone.'" in said
    assert "+model.pretrained_cfg_overlay={file:...}" in said
    other = tmp_path / "other.pth"  # unrelated names: no such advice
    torch.save({"stem.weight": torch.zeros(3), "head.bias": torch.zeros(2)}, other)
    with pytest.raises(ConfigError) as e:
        load_initial_weights(Classifier("resnet18", 10, pretrained=False), other)
    assert "part 'backbone'" not in str(e.value)


def test_weights_of_another_model_class_say_which_class_saved_them(teacher_run):
    """A detectron2 run's weights given to torchvision's detector were listed as 98 missing and
    110 left-over tensors, without a word of the two classes."""
    from mic.training import load_initial_weights

    other = torch.nn.Sequential(torch.nn.Linear(2, 3))
    with pytest.raises(ConfigError) as refused:
        load_initial_weights(other, teacher_run)
    said = str(refused.value)
    assert "; the run that saved them built mic." in said
    assert "this one builds torch.nn.modules.container.Sequential" in said
    # a model of the run's own class is no other class: no such words
    from mic.training.checkpoint import _other_class_hint

    _, same = __import__("mic").load_run(teacher_run)
    assert _other_class_hint(teacher_run / "checkpoints" / "student.pt", same) == ""
