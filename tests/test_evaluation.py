import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from mic import (
    CheckpointError,
    DatasetError,
    evaluate,
    load_checkpoint,
    recalibrated_batchnorm,
    save_checkpoint,
)
from mic.tasks.classification import ClassificationTask
from mic.training import ResumableSampler
from mic.training.evaluation import cycled

from .helpers import tiny_model


def test_evaluate_scores_through_the_task_and_restores_mode():
    model = tiny_model().train()
    x = torch.randn(12, 3, 8, 8)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    model.train()
    loader = DataLoader(TensorDataset(x, y), batch_size=5)
    scores = evaluate(ClassificationTask(3), model, loader)
    assert scores["accuracy"] == pytest.approx(1.0)
    assert model.training


def test_recalibrated_batchnorm_uses_target_statistics_and_restores_buffers():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    target = [torch.randn(16, 3, 8, 8) * 3 + 2 for _ in range(3)]
    with recalibrated_batchnorm(model, target, batches=3) as m:
        bn = m.backbone.stages[0][1]
        assert not bn.training
        mean = torch.cat(target).mean((0, 2, 3))
        conv = m.backbone.stages[0][0]
        want = conv(torch.cat(target)).mean((0, 2, 3))
        torch.testing.assert_close(bn.running_mean, want, rtol=1e-4, atol=1e-4)
        assert mean.shape[0] == 3
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert model.training


def test_adabn_on_more_batches_than_the_loader_holds_passes_over_it_again():
    model = tiny_model()
    target = [torch.randn(16, 3, 8, 8) * (1 + i) + i for i in range(3)]
    with recalibrated_batchnorm(model, target, batches=5) as m:
        conv, bn = m.backbone.stages[0][0], m.backbone.stages[0][1]
        seen = [*target, *target[:2]]  # a plain list has no sampler: the same order again
        # the cumulative average over the 5 batches (momentum None), not over the 3 there are
        want = torch.stack([conv(x).mean((0, 2, 3)) for x in seen]).mean(0)
        torch.testing.assert_close(bn.running_mean, want, rtol=1e-4, atol=1e-4)
        assert int(bn.num_batches_tracked) == 5


def test_a_further_pass_over_a_resumable_loader_draws_a_new_order_and_restores_its_epoch():
    sampler = ResumableSampler(12, shuffle=True, seed=3)
    loader = DataLoader(list(range(12)), batch_size=4, sampler=sampler)
    epoch0 = [b.tolist() for b in loader]
    sampler.set_epoch(1)
    epoch1 = [b.tolist() for b in loader]
    sampler.set_epoch(0)
    assert epoch0 != epoch1
    got = [b.tolist() for b in cycled(loader, 5)]
    assert got == epoch0 + epoch1[:2]
    assert sampler.epoch == 0  # the validators read the same first batches afterwards
    assert [b.tolist() for b in cycled(loader, 2)] == epoch0[:2]
    with pytest.raises(DatasetError, match="adabn_batches=0"):
        list(cycled([], 1))


def test_checkpoint_round_trip_and_foreign_files(tmp_path):
    path = save_checkpoint({"step": 3, "w": torch.ones(2)}, tmp_path / "a.pt")
    state = load_checkpoint(path)
    assert state["step"] == 3 and torch.equal(state["w"], torch.ones(2))
    assert not list(tmp_path.glob(".*.tmp"))
    torch.save({"w": torch.ones(1)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a mic checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_interrupted_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = save_checkpoint({"step": 1}, tmp_path / "c.pt")

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_adabn_on_a_batch_of_one_image_with_a_batchnorm1d_says_drop_last():
    model = tiny_model()
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    target = [torch.randn(4, 3, 8, 8), torch.randn(1, 3, 8, 8)]  # a last batch of 1
    with (
        pytest.raises(DatasetError, match="drop_last=True"),
        recalibrated_batchnorm(model, target, batches=2),
    ):
        pass
    assert model.training  # the buffers and the mode restored on the way out


class MisnamedMetricTask(ClassificationTask):
    """A task whose metric names its score 'acc' while ``primary_metric`` stays 'accuracy'
    (the new-task docs' example with a MetricCollection of another name)."""

    def metric(self):
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MulticlassAccuracy

        return MetricCollection({"acc": MulticlassAccuracy(self.num_classes, average="micro")})


def test_a_metric_without_the_primary_score_names_primary_metric_the_task_and_its_keys():
    from mic import BlockMasker
    from mic.core import ConfigError
    from mic.training import LabelFreeValidation

    model = tiny_model()
    loader = DataLoader(TensorDataset(torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))), 4)
    message = r"MisnamedMetricTask.primary_metric is 'accuracy'.*returns 'acc'\)"
    with pytest.raises(ConfigError, match=message):
        evaluate(MisnamedMetricTask(3), model, loader)
    # the same from the label-free masked_agreement (the default validator of mic-train)
    images = [torch.randn(4, 3, 8, 8)]
    masker = BlockMasker(2, 0.5)  # blocks smaller than the 8 px images
    validation = LabelFreeValidation(["masked_agreement"], images, batches=1, masker=masker)
    with pytest.raises(ConfigError, match=message):
        validation.score(MisnamedMetricTask(3), model)
    assert model.training  # the mode restored on the way out


def test_a_metric_without_the_primary_score_through_mic_train(tmp_path):
    from tests.cli import run_mic_train
    from tests.helpers import TINY_RUN

    task = "task._target_=tests.test_evaluation.MisnamedMetricTask"
    out = run_mic_train([*TINY_RUN, task, "eval.interval=2", f"hydra.run.dir={tmp_path}"])
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert (
        "mic: error: MisnamedMetricTask.primary_metric is 'accuracy', but "
        "MisnamedMetricTask.metric() computes no score of that name (its compute() returns "
        "'acc'). Set primary_metric to " in out.stderr
    )
    assert "(no labels)" not in out.stdout + out.stderr  # the test set is labelled


def _tiny_task_and_loader():
    task = ClassificationTask(3)
    data = TensorDataset(torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,)))
    return task, DataLoader(data, 4, drop_last=True, collate_fn=task.collate)


def _source_only_loop(task, loader, iterations, hooks):
    import mic

    student = tiny_model()
    return mic.AdaptationLoop(
        task,
        student,
        mic.UDAMethod({"source": mic.SourceSupervision()}),
        torch.optim.SGD(student.parameters(), 0.1),
        loader,
        loader,
        iterations=iterations,
        hooks=hooks,
    )


def test_a_student_whose_weights_went_non_finite_scores_nan_with_a_warning():
    # in a loop of one's own (the default Guard checks nothing) a NaN loss made every weight
    # NaN and the evaluation still reported an accuracy: the share of the argmax's class
    import math

    import mic

    task, loader = _tiny_task_and_loader()
    evaluation = mic.Evaluation(task, loader)
    loop = _source_only_loop(task, loader, 2, [evaluation])
    loop.run()
    assert evaluation.history[-1]["eval/student/accuracy"] > 0  # finite weights: scored
    with torch.no_grad():
        next(loop.student.parameters()).fill_(math.nan)
    with pytest.warns(UserWarning, match="the student's weights hold NaN or Inf"):
        record = evaluation.run(loop)
    assert math.isnan(record["eval/student/accuracy"])
    assert "accuracy nan" in record["summary"]


def test_an_evaluation_of_the_teacher_alone_in_a_run_without_one_is_refused_before_training():
    """Evaluation(models=('teacher',)) of a loop without a teacher scored nothing: every
    evaluation a '(no labels)' summary, and no error."""
    import mic
    from mic.core import ConfigError

    task, loader = _tiny_task_and_loader()
    evaluation = mic.Evaluation(task, loader, models=("teacher",))
    loop = _source_only_loop(task, loader, 2, [evaluation])
    with pytest.raises(ConfigError, match=r"scores only \['teacher'\], but the method has no"):
        loop.run()
    assert loop.step == 0
    mic.Evaluation(task, loader, models=("student", "teacher")).before_run(loop)  # student: fine


def test_metrics_jsonl_is_strict_json_with_undefined_scores_as_null(tmp_path):
    import json

    from mic.training import MetricsLogger

    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger._file = open(tmp_path / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
    logger.write({"step": 3, "eval/student/miou": float("nan"), "loss/x": [1.0, float("inf")]})
    logger._file.close()
    line = (tmp_path / "metrics.jsonl").read_text()
    assert "NaN" not in line and "Infinity" not in line
    record = json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in {line}"))
    assert record == {"step": 3, "eval/student/miou": None, "loss/x": [1.0, None]}


@pytest.mark.parametrize(("key", "value"), [("interval", -1), ("adabn_batches", 2.5)])
def test_an_interval_or_adabn_count_that_is_no_whole_number_is_refused(key, value):
    # interval=-1 was taken as 0 (evaluate only at the end) without a word
    import mic

    with pytest.raises(mic.ConfigError, match=f"eval.{key} must be a whole number >= 0"):
        mic.Evaluation(ClassificationTask(3), [], **{key: value})


def test_evaluate_checks_the_test_set_and_its_labels_as_evaluation_does():
    """mic.evaluate scored a 19-class model on an 8-class test set (0.9 % mIoU, no word), and a
    loader without task.collate met labels out of range as torchmetrics' reshape error."""

    from mic.datasets.segmentation import StreetScenes
    from mic.tasks.segmentation import SegmentationTask, SmallUNet

    task = SegmentationTask(19)
    test = StreetScenes("target", "test", count=4, size=32)
    loader = DataLoader(test, 4, collate_fn=task.collate)
    with pytest.raises(DatasetError, match=r"predicts 19 classes but test has 8.*evaluate's"):
        evaluate(task, SmallUNet(19, widths=(8, 16)), loader)
    four = SegmentationTask(4)
    labels = torch.full((2, 16, 16), 9)
    loader = DataLoader(TensorDataset(torch.randn(2, 3, 16, 16), labels), 2)
    with pytest.raises(DatasetError, match=r"label 9 is outside the classes \[0, 3\]"):
        evaluate(four, SmallUNet(4, widths=(8, 16)), loader)


def test_a_record_a_later_hook_could_not_take_is_owed_and_tensorboard_failures_do_not_stop_runs(
    tmp_path, monkeypatch
):
    """A TensorBoard folder removed mid-run ended the run at the next evaluation before the
    checkpointer saw its record, while the history the saved checkpoint holds had it: best.pt
    stayed at an older iteration for good (the evaluation was never run again)."""
    import mic
    from mic.training import MetricsLogger

    class Refuses(mic.Hook):
        def on_record(self, loop, record):
            raise OSError("no space left on device")

    task, loader = _tiny_task_and_loader()
    evaluation = mic.Evaluation(task, loader, interval=1)
    logger = MetricsLogger(tmp_path, interval=1, tensorboard=True)
    loop = _source_only_loop(task, loader, 3, [evaluation, logger, Refuses()])
    with pytest.raises(OSError, match="no space"):
        loop.run()
    assert loop.step == 1 and evaluation.history == [] and evaluation.owed == 1
    written = (tmp_path / "metrics.jsonl").read_text()
    assert '"step": 1, "eval/student/' in written  # the logger took it before the failure
    loop.hooks = [evaluation, logger]
    logger.before_run(loop)  # the resumed run: the owed evaluation writes it again
    assert '"step": 1, "eval/student/' not in (tmp_path / "metrics.jsonl").read_text()
    logger.teardown(loop)
    # TensorBoard's files cannot be written (its folder removed, a full disk): a warning, and
    # the run goes on with metrics.jsonl alone
    loop.hooks = [evaluation, logger]
    logger.before_run(loop)

    def gone():
        raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "tensorboard"))

    monkeypatch.setattr(logger.writer, "flush", gone)
    with pytest.warns(UserWarning, match="TensorBoard's log could not be written"):
        logger.write({"step": 1, "eval/student/accuracy": 0.5})
    assert logger.writer is None
    logger.write({"step": 2, "eval/student/accuracy": 0.6})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert lines[-2:] == [
        '{"step": 1, "eval/student/accuracy": 0.5}',
        '{"step": 2, "eval/student/accuracy": 0.6}',
    ]


def test_adabn_passing_over_a_small_target_set_again_and_again_is_warned_of(tmp_path):
    """32 target images, passed over 2.5 times by AdaBN, cost a detector 40 points of mAP@0.5
    against the running statistics, without a word."""
    import warnings

    from mic.experiment import build_experiment, load_config

    small = [
        "experiment=streets", "dataset.train_count=32", "dataset.test_count=8",
        "loader.source_batch_size=8", "loader.target_batch_size=8", "device=cpu",
    ]  # fmt: skip
    with pytest.warns(UserWarning, match=r"adabn_batches=10 passes over the target loader's 4 "
                      r"batches \(32 images\) again and again"):  # fmt: skip
        build_experiment(load_config(small), tmp_path / "a")
    with warnings.catch_warnings():  # enough batches, or none asked for, or no BatchNorm
        warnings.filterwarnings("error", message=".*again and again")
        build_experiment(load_config([*small, "eval.adabn_batches=4"]), tmp_path / "b")
        build_experiment(load_config([*small, "dataset.train_count=200"]), tmp_path / "c")
        build_experiment(load_config([*small, "model=small_unet_layernorm"]), tmp_path / "d")


def test_a_metric_s_error_on_the_first_test_batch_names_the_shapes_it_was_given():
    """A predict of another layout ended in torchmetrics' words alone, with no shapes."""
    from mic.training.evaluation import check_scoring

    class FirstFive(ClassificationTask):
        def predict(self, model, images):
            return super().predict(model, images)[:, :5]

    batch = (torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,)))
    with pytest.raises(Exception) as raised:
        check_scoring(FirstFive(10), tiny_model(10), batch, "cpu")
    notes = " ".join(getattr(raised.value, "__notes__", []))
    assert "raised scoring the first test batch before training" in notes
    assert "; the prediction (8, 5), the targets (8,))" in notes


@pytest.mark.parametrize("progress", [True, False])
def test_an_evaluation_shows_a_progress_bar_of_its_test_batches_when_asked(
    progress, capsys, monkeypatch
):
    """An evaluation of a large test set (Cityscapes' 500 images, slid over) ran for minutes
    under a training bar that stood still. On a terminal: into a log file the cleared bar
    left its control codes alone."""
    import mic
    from mic.training import hooks

    task, loader = _tiny_task_and_loader()
    evaluation = mic.Evaluation(task, loader, interval=2, progress=True)
    _source_only_loop(task, loader, 2, [evaluation]).run()
    assert "scoring the student" not in capsys.readouterr().err  # (not a terminal)
    monkeypatch.setattr(hooks, "_on_terminal", lambda: True)

    task, loader = _tiny_task_and_loader()
    evaluation = mic.Evaluation(task, loader, interval=2, progress=progress)
    loop = _source_only_loop(task, loader, 2, [evaluation])
    loop.run()
    shown = capsys.readouterr().err
    assert ("scoring the student (iteration 2)" in shown) is progress
    assert ("0/2" in shown) is progress  # the loader's two batches
    assert evaluation.history[-1]["eval/student/accuracy"] >= 0


def test_an_adabn_loader_without_a_length_recalibrates_inside_the_loop():
    """A loader of one's own that restarts its passes but has no length: the wrapper that
    ends an evaluation at a stop request got a length, and ``adabn_loader or ()`` asked for
    it (TypeError at every evaluation of the loop)."""
    import mic

    task, loader = _tiny_task_and_loader()

    class Restartable:
        def __iter__(self):
            return iter(list(loader))

    evaluation = mic.Evaluation(task, loader, adabn_loader=Restartable(), adabn_batches=1)
    loop = _source_only_loop(task, loader, 2, [evaluation])
    loop.run()
    assert evaluation.history[-1]["eval/student/protocol"] == "adabn:1"


def test_a_model_whose_batchnorm_statistics_were_never_estimated_is_said_to_be_so():
    # eval.adabn_batches=0 with adaptation_start > 0: the teacher (buffers=own) holds the
    # statistics it was built with until it first predicts; its score was said to use
    # "BatchNorm's statistics from training" (12.9 % on digits where AdaBN gave 70.4 %)
    import warnings

    import mic
    from mic.experiment import protocol_words

    task, loader = _tiny_task_and_loader()
    student = tiny_model()
    teacher = mic.EMATeacher(student, alpha=0.9).model  # built before any batch
    with torch.no_grad():
        student.train()(torch.randn(8, 3, 8, 8))  # the student has normalised a batch
    evaluation = mic.Evaluation(task, loader, models=("student", "teacher"))
    said = r"the teacher is scored at iteration 5 with BatchNorm statistics that 3 of its 3 Ba"
    with pytest.warns(UserWarning, match=said):
        record = evaluation.score_models(5, student, teacher)
    assert record["eval/student/protocol"] == "train-statistics"
    assert record["eval/teacher/protocol"] == "initial-statistics"
    assert protocol_words("initial-statistics").startswith("BatchNorm statistics left as built")
    # one layer left as built beside estimated ones (a new bottleneck beside pretrained layers)
    partial = tiny_model()
    with torch.no_grad():
        partial.train()(torch.randn(8, 3, 8, 8))
    norm = next(m for m in partial.modules() if isinstance(m, torch.nn.BatchNorm2d))
    norm.reset_running_stats()
    with pytest.warns(UserWarning, match=r"that 1 of its 3 BatchNorm layers hold"):
        said = mic.Evaluation(task, loader, models=("student",)).score_models(1, partial)
    assert said["eval/student/protocol"] == "initial-statistics"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per model
        evaluation.score_models(6, student, teacher)
        adabn = mic.Evaluation(task, loader, adabn_loader=loader, adabn_batches=1)
        assert adabn.score_models(5, student, teacher)["eval/teacher/protocol"] == "adabn:1"
