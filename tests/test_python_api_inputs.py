"""What the Python API does with the inputs a newcomer gives it: batch structures, label and
image dtypes, empty or unlabelled test sets, lower-is-better metrics, hook settings."""

import json
import math
import re
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import mic
from mic.core.errors import ConfigError, DatasetError
from mic.tasks.classification import ClassificationTask
from mic.tasks.detection import DetectionTask
from mic.tasks.segmentation import SegmentationTask, SmallUNet
from mic.training import load_checkpoint
from mic.training.evaluation import check_pairs
from mic.training.validators import MaskedAgreement, ModelSelection, TargetOutputs
from tests.helpers import Regression

K = 3


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, K)
    )


def data(n: int = 8, labelled: bool = True) -> TensorDataset:
    x = torch.randn(n, 3, 8, 8)
    return TensorDataset(x, torch.arange(n) % K) if labelled else TensorDataset(x)


def run(task, source, target, iterations=2, hooks=(), model=None):
    model = model or net()
    optimizer = torch.optim.SGD(model.parameters(), 0.1)
    loop = mic.AdaptationLoop(
        task, model, mic.source_only(), optimizer, source, target, iterations, hooks=hooks
    )
    loop.run()
    return loop


# ---------------------------------------------------------------- batch structures
def test_a_tensordataset_target_collates_to_images_alone():
    task = ClassificationTask(K)
    batch = task.collate([data(2, labelled=False)[i] for i in range(2)])
    assert isinstance(batch, torch.Tensor) and batch.shape == (2, 3, 8, 8)
    seg = SegmentationTask(K).collate([(torch.zeros(3, 4, 4),)] * 2)
    assert isinstance(seg, torch.Tensor) and seg.shape == (2, 3, 4, 4)
    images, targets = DetectionTask(K).collate([(torch.zeros(3, 4, 4),)] * 2)
    assert targets is None and images.shape == (2, 3, 4, 4)


def test_a_tensordataset_target_trains():
    task = ClassificationTask(K)
    source = DataLoader(data(), 4, collate_fn=task.collate)
    target = DataLoader(data(labelled=False), 4, collate_fn=task.collate)
    assert run(task, source, target).step == 2


@pytest.mark.parametrize(
    "sample, named",
    [
        ({"image": torch.zeros(3, 4, 4), "label": 1}, "a dict with keys ['image', 'label']"),
        ((torch.zeros(3, 4, 4), 1, 7), "a tuple of 3 items"),
    ],
)
@pytest.mark.parametrize("task", [ClassificationTask(K), SegmentationTask(K), DetectionTask(K)])
def test_collate_names_samples_that_are_neither_images_nor_pairs(task, sample, named):
    with pytest.raises(DatasetError, match="the dataset yields samples that are") as e:
        task.collate([sample, sample])
    assert named in str(e.value)


def _triples():
    x = TensorDataset(torch.randn(8, 3, 8, 8), torch.arange(8) % K, torch.arange(8))
    return DataLoader(x, 4)


def _dicts():
    return DataLoader([{"image": torch.randn(3, 8, 8), "label": torch.tensor(1)}] * 8, 4)


@pytest.mark.parametrize(
    "source, named",
    [
        (_dicts, "a dict with keys ['image', 'label']"),
        (_triples, "a list of 3 items"),
    ],
)
def test_default_collated_dicts_and_triples_stop_the_loop_with_their_structure(source, named):
    task = ClassificationTask(K)
    target = DataLoader(data(labelled=False), 4, collate_fn=task.collate)
    with pytest.raises(DatasetError) as e:
        run(task, source(), target)
    assert named in str(e.value)
    with pytest.raises(DatasetError) as e:  # evaluation says so too, not "unlabelled"
        mic.evaluate(task, net(), source())
    assert named in str(e.value) and "the set is unlabelled" not in str(e.value)


def test_an_unlabelled_source_is_a_dataset_error():
    task = ClassificationTask(K)
    target = DataLoader(data(labelled=False), 4, collate_fn=task.collate)
    with pytest.raises(DatasetError, match="the source loader yields images alone"):
        run(task, target, target)


def test_a_default_collated_tensordataset_target_names_the_one_item_batches():
    task = ClassificationTask(K)
    source = DataLoader(data(), 4, collate_fn=task.collate)
    target = DataLoader(data(labelled=False), 4)  # default collate: [images]
    model = net()
    method = mic.mean_teacher()
    with pytest.raises(DatasetError, match="a list of 1 item") as e:
        mic.AdaptationLoop(
            task, model, method, torch.optim.SGD(model.parameters(), 0.1), source, target, 2,
            teacher=mic.EMATeacher(model, 0.9),
        ).run()  # fmt: skip
    assert "collate_fn=task.collate" in str(e.value)


# ---------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_classification_labels_of_any_integer_width_become_long_and_train(dtype):
    task = ClassificationTask(K)
    x = data()
    ds = TensorDataset(x.tensors[0], x.tensors[1].to(dtype))
    _, labels = task.collate([ds[0], ds[1]])
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 1]
    target = DataLoader(data(labelled=False), 4, collate_fn=task.collate)
    assert run(task, DataLoader(ds, 4, collate_fn=task.collate), target).step == 2


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32])
def test_segmentation_label_maps_become_long_and_train(dtype):
    task = SegmentationTask(K)
    x = torch.randn(4, 3, 8, 8)
    y = torch.randint(0, K, (4, 8, 8)).to(dtype)
    y[0, 0, 0] = 255  # ignore_index fits uint8
    ds = TensorDataset(x, y)
    _, labels = task.collate([ds[0], ds[1]])
    assert labels.dtype == torch.int64 and int(labels[0, 0, 0]) == 255
    source = DataLoader(ds, 2, collate_fn=task.collate)
    target = DataLoader(TensorDataset(x), 2, collate_fn=task.collate)
    assert run(task, source, target, model=SmallUNet(K, widths=(4, 8))).step == 2


@pytest.mark.parametrize("task", [ClassificationTask(K), SegmentationTask(K), DetectionTask(K)])
def test_float64_images_are_refused_by_collate_naming_float32(task):
    with pytest.raises(DatasetError, match="float64 images, but models take float32"):
        task.collate([torch.zeros(3, 4, 4, dtype=torch.float64)] * 2)


# ---------------------------------------------------------------- empty / undefined scores
def test_evaluate_on_an_empty_loader_is_a_dataset_error():
    task = ClassificationTask(K)
    empty = DataLoader(data(3), 8, drop_last=True, collate_fn=task.collate)
    for loader in (empty, []):
        with pytest.raises(DatasetError, match="yields no batch"):
            mic.evaluate(task, net(), loader)


def test_segmentation_with_every_pixel_ignored_scores_nan_not_zero():
    task = SegmentationTask(K)
    loader = DataLoader(TensorDataset(torch.randn(2, 3, 8, 8), torch.full((2, 8, 8), 255)), 2)
    scores = mic.evaluate(task, SmallUNet(K, widths=(4, 8)), loader)
    assert math.isnan(scores["miou"]) and math.isnan(scores["accuracy"])


# ---------------------------------------------------------------- lower-is-better metrics
class _Loop:
    def __init__(self, task) -> None:
        self.task, self.step = task, 0

    def state_dict(self) -> dict:
        return {"step": self.step}


def test_best_checkpoint_follows_the_lowest_error_of_a_lower_is_better_task(tmp_path):
    checkpointer = mic.Checkpointer(tmp_path, best_metric="eval/student/mse")
    loop = _Loop(Regression())
    for step, mse in ((10, 0.5), (20, 0.2), (30, 0.9), (40, 0.3)):
        loop.step = step
        checkpointer.on_record(loop, {"step": step, "eval/student/mse": mse})
    assert load_checkpoint(tmp_path / "best.pt")["step"] == 20
    assert checkpointer.best == 0.2
    # a higher-is-better task (the default) keeps the highest
    assert ClassificationTask(K).higher_is_better
    selection = ModelSelection.for_task(ClassificationTask(K))
    for step, acc in ((10, 0.5), (20, 0.2)):
        selection.update({"step": step, "eval/student/accuracy": acc})
    assert selection.best["eval/student/accuracy"]["step"] == 10


def test_selection_picks_the_lowest_error_and_validators_stay_higher_is_better():
    selection = ModelSelection.for_task(Regression())
    records = [(10, 0.5, 0.1), (20, 0.2, 0.3), (30, 0.9, 0.2)]  # (step, mse, validator)
    for step, mse, v in records:
        selection.update({"step": step, "eval/student/mse": mse, "validator/student/snd": v})
    picks = selection.picks("student", "mse")
    assert picks["mse"]["step"] == 20 and picks["snd"]["step"] == 20
    assert picks["snd"]["mse"] == 0.2


def test_masked_agreement_of_a_lower_is_better_task_is_the_negated_error():
    v = MaskedAgreement()
    task = Regression()
    v.start(task, torch.device("cpu"))
    reference = task.pseudo_label(torch.tensor([1.0, 2.0]))
    v.update(TargetOutputs(task, masked=torch.tensor([1.0, 4.0]), reference=reference))
    assert v.compute() == pytest.approx(-2.0)  # -(0 + 4) / 2: higher is better


def test_a_short_run_of_a_lower_is_better_task_keeps_the_best_evaluation(tmp_path):
    task = Regression()
    torch.manual_seed(0)
    x = torch.randn(16, 3, 8, 8)
    y = x.mean((1, 2, 3)) * 10
    source = DataLoader(TensorDataset(x, y), 8, collate_fn=task.collate)
    target = DataLoader(TensorDataset(x), 8, collate_fn=task.collate)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1)
    )
    evaluation = mic.Evaluation(task, source, interval=2, models="student")
    checkpointer = mic.Checkpointer(tmp_path, best_metric="eval/student/mse")
    run(task, source, target, iterations=6, hooks=[evaluation, checkpointer], model=model)
    scores = {r["step"]: r["eval/student/mse"] for r in evaluation.history}
    assert load_checkpoint(tmp_path / "best.pt")["step"] == min(scores, key=scores.get)
    # the console shows the error as it is, not as a percentage (0.0123 was "1.23")
    last = evaluation.history[-1]
    assert f"student mse {last['eval/student/mse']:.4g}" in last["summary"]


def test_the_summary_shows_an_error_as_it_is_and_a_share_in_percent():
    from mic.experiment import format_summary

    def summary(percent: bool, protocols=("plain",)) -> dict:
        after = {"step": 6, "student": 0.0123, "teacher": 0.02}
        after["protocol"] = dict(zip(("student", "teacher"), protocols * 2, strict=False))
        return {"metric": "m", "in_percent": percent, "after_adaptation": after}

    assert format_summary(summary(False)) == (
        "target m after adaptation (iteration 6): student 0.0123, teacher 0.02"  # no BatchNorm
    )
    assert "student 1.23%, teacher 2.00%" in format_summary(summary(True))
    # the BatchNorm protocol in words: once where the models share it, else after each score
    said = format_summary(summary(True, ("adabn:10",)))
    assert said.endswith(
        "teacher 2.00% (AdaBN: BatchNorm statistics of 10 target training batches)"
    )
    said = format_summary(summary(True, ("train-statistics", "adabn:3")))
    assert "student 1.23% (BatchNorm's statistics from training), teacher 2.00% (AdaBN: " in said
    said = format_summary(summary(True, ("plain", "adabn:3")))  # which model the note is of
    assert "student 1.23% (no BatchNorm), teacher 2.00% (AdaBN: BatchNorm statistics" in said
    # skipped iterations name what was NaN or Inf (a term of one's own: it said data, lr)
    skipped = {**summary(True), "iterations": 6, "skipped_steps": 4}
    skipped["non_finite"] = {"bad": 4, "gradients": 1}
    assert format_summary(skipped).endswith(
        "warning: 4 of 6 iterations (66.7%) had NaN or Inf losses or gradients and took no "
        "optimiser step (nan_policy=skip); NaN or Inf: loss/bad in 4, the gradients in 1"
    )


# ---------------------------------------------------------------- augmentation inputs
def test_strong_augmentation_refuses_mean_std_of_another_channel_count():
    aug = mic.StrongAugmentation(mean=[0.5] * 3, std=[0.5] * 3)
    with pytest.raises(ConfigError, match="mean/std have 3 values but the images have 1"):
        aug(torch.rand(2, 1, 8, 8))
    with pytest.raises(ConfigError, match="2 mean values but 3 std"):
        mic.StrongAugmentation(mean=[0.5] * 2, std=[0.5] * 3)
    assert aug(torch.rand(2, 3, 8, 8)).shape == (2, 3, 8, 8)


def test_a_std_of_0_and_a_fill_of_another_channel_count_are_refused_in_mic_s_words():
    """A std of 0 divided the images into inf / NaN; a fill of 2 values failed as torch's
    broadcast error inside the masker."""
    with pytest.raises(ConfigError, match=r"std must be above 0 in every channel, got \[0.5, 0"):
        mic.StrongAugmentation(mean=[0.5] * 3, std=[0.5, 0.0, 0.5])
    masker = mic.BlockMasker(2, 0.5, fill=[0.4, 0.5])
    with pytest.raises(ConfigError, match="the masker's fill has 2 values but the images have 3"):
        masker(torch.rand(2, 3, 8, 8))
    assert mic.BlockMasker(2, 0.5, fill=[0.4])(torch.rand(2, 3, 8, 8)).shape == (2, 3, 8, 8)


def test_strong_augmentation_without_mean_std_warns_once_for_normalised_input():
    aug = mic.StrongAugmentation()
    with pytest.warns(UserWarning, match=r"no mean/std.*\[0, 1\]"):
        aug(torch.randn(4, 3, 8, 8) * 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aug(torch.randn(4, 3, 8, 8) * 3)  # once per instance
        mic.StrongAugmentation()(torch.rand(4, 3, 8, 8))  # in [0, 1]: silent
        normalised = (torch.rand(4, 3, 8, 8) - 0.5) / 0.5
        mic.StrongAugmentation(mean=[0.5] * 3, std=[0.5] * 3)(normalised)


def test_strong_augmentation_with_mean_std_warns_of_images_not_normalised_with_them():
    """Images in [0, 255] given to an augmentation with a mean/std came back clamped to
    about [0, 1], silently: mapped back to [0, 1] with the mean/std they lie far outside."""
    images = torch.rand(4, 3, 8, 8) * 255
    aug = mic.StrongAugmentation(mean=[0.5] * 3, std=[0.5] * 3, jitter_p=1.0, blur_p=0.0)
    with pytest.warns(UserWarning, match=r"not normalised with this mean/std.*\[0, 255\]"):
        aug(images)
    masker = mic.BlockMasker(4, 0.7, augmentation=mic.StrongAugmentation(mean=0.5, std=0.5))
    with pytest.warns(UserWarning, match="maps its input back to"):
        masker(images)


# ---------------------------------------------------------------- hooks
class _Count(mic.Hook):
    def __init__(self) -> None:
        self.steps = 0

    def after_step(self, loop, losses) -> None:
        self.steps += 1


def test_an_unlabelled_test_loader_is_found_before_training():
    task = ClassificationTask(K)
    source = DataLoader(data(), 4, collate_fn=task.collate)
    unlabelled = DataLoader(data(labelled=False), 4, collate_fn=task.collate)
    count = _Count()
    evaluation = mic.Evaluation(task, unlabelled)
    with pytest.raises(DatasetError, match="unlabelled"):
        run(task, source, unlabelled, iterations=50, hooks=[count, evaluation])
    assert count.steps == 0
    empty = DataLoader(data(3), 4, drop_last=True, collate_fn=task.collate)
    with pytest.raises(DatasetError, match="yields no batch"):
        run(task, source, unlabelled, hooks=[count, mic.Evaluation(task, empty)])
    assert count.steps == 0


def test_the_first_batch_check_leaves_the_random_generators_alone():
    task = ClassificationTask(K)
    test = DataLoader(data(), 4, shuffle=True, collate_fn=task.collate)  # draws a seed
    torch.manual_seed(3)
    mic.Evaluation(task, test).before_run(None)
    after = torch.rand(1)
    torch.manual_seed(3)
    assert torch.equal(torch.rand(1), after)


def test_evaluation_takes_one_model_name_as_a_list_of_one():
    assert mic.Evaluation(ClassificationTask(K), [], models="teacher").models == ("teacher",)


def test_metrics_logger_logs_a_record_without_step_at_the_loops_step(tmp_path):
    class Emit(mic.Hook):
        def after_step(self, loop, losses) -> None:
            if loop.step == 2:
                loop.emit({"my/score": 0.5})

    task = ClassificationTask(K)
    source = DataLoader(data(), 4, collate_fn=task.collate)
    logger = mic.MetricsLogger(tmp_path, interval=100, tensorboard=True)
    run(task, source, source, iterations=3, hooks=[Emit(), logger])
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"step": 2, "my/score": 0.5} in lines


def test_best_metric_without_an_evaluation_hook_warns_at_the_start(tmp_path):
    task = ClassificationTask(K)
    source = DataLoader(data(), 4, collate_fn=task.collate)
    checkpointer = mic.Checkpointer(tmp_path, best_metric="eval/student/accuracy")
    with pytest.warns(UserWarning, match="no Evaluation hook.*best.pt will never be written"):
        run(task, source, source, hooks=[checkpointer])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(task, source, source, hooks=[mic.Checkpointer(tmp_path / "b"), _Count()])


def test_a_resume_sets_aside_a_best_pt_that_the_current_criterion_did_not_choose(tmp_path):
    from mic.training import Checkpointer, load_checkpoint, save_checkpoint

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    save_checkpoint({"step": 80}, folder / "best.pt")  # chosen by accuracy
    snd = "validator/student/snd"
    record = {"best": {snd: {"step": 20, "score": 0.5, "metrics": {}}}, "last": {}}
    state = {"step": 100, "selection": record}
    checkpoints = Checkpointer(folder, best_metric=snd)
    with pytest.warns(UserWarning, match="held iteration 80.*renamed best_superseded_00000080"):
        checkpoints.load_state_dict(state, folder / "iter_00000100.pt")
    assert not (folder / "best.pt").exists()
    assert (folder / "best_superseded_00000080.pt").is_file()
    assert checkpoints.best_file is None
    # the best.pt of the recorded best stays where it is
    save_checkpoint({"step": 20}, folder / "best.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Checkpointer(folder, best_metric=snd).load_state_dict(state, folder / "iter_00000100.pt")
    assert (folder / "best.pt").is_file()
    # chosen by another criterion, where the checkpoint of the recorded best is on disk (the
    # iteration resumed from): best.pt becomes it; no best.pt was written, and the run said
    # the checkpoint was not on disk
    save_checkpoint({"step": 80}, folder / "best.pt")
    save_checkpoint({"step": 100, "selection": record}, folder / "iter_00000100.pt")
    at_resume = {"best": {snd: {"step": 100, "score": 0.5, "metrics": {}}}, "last": {}}
    checkpoints = Checkpointer(folder, best_metric=snd)
    with pytest.warns(UserWarning, match="held iteration 80.*renamed best_superseded_00000080"):
        checkpoints.load_state_dict({**state, "selection": at_resume}, folder / "iter_00000100.pt")
    assert checkpoints.best_file == folder / "best.pt"
    assert load_checkpoint(folder / "best.pt")["step"] == 100
    # resumed into a new folder: its own best.pt (it named the other run's iter_*.pt, which
    # that run's checkpoint.keep may delete)
    (folder / "best.pt").rename(folder / "best_superseded_00000100.pt")
    new = Checkpointer(tmp_path / "new" / "checkpoints", best_metric=snd)
    new.load_state_dict({**state, "selection": at_resume}, folder / "iter_00000100.pt")
    assert new.best_file == tmp_path / "new" / "checkpoints" / "best.pt"
    assert load_checkpoint(new.best_file)["step"] == 100


# ---------------------------------------------------------------- methods, terms, teachers
class _Named(mic.UDAMethod):
    """A method subclass with an attribute of its own."""

    def __init__(self) -> None:
        super().__init__({"source": mic.SourceSupervision()})
        self.label = "mine"


def test_with_terms_keeps_the_subclass_and_leaves_the_original_alone():
    original = _Named()
    extended = original.with_terms(mic=mic.MaskedImageConsistency(mic.BlockMasker(4, 0.5)))
    assert type(extended) is _Named and extended.label == "mine"
    assert list(dict(extended.terms)) == ["source", "mic"]
    assert list(dict(original.terms)) == ["source"]  # the copy's modules are its own
    assert extended.terms["source"] is original.terms["source"]  # the terms are shared
    assert list(dict(extended.with_terms(mic=None).terms)) == ["source"]


def test_mic_without_a_masker_is_refused_when_built():
    with pytest.raises(ConfigError, match=r"MIC's masker must be a Masker .*, got <class 'No"):
        mic.MaskedImageConsistency(None)
    with pytest.raises(ConfigError, match=r"got the class BlockMasker"):
        mic.MaskedImageConsistency(mic.BlockMasker)


def test_a_teacher_of_another_architecture_is_named_at_its_first_update():
    student = net()
    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    teacher = mic.EMATeacher(other, 0.9)
    with pytest.raises(ConfigError, match="the teacher is not the student's architecture"):
        teacher.update(student, 0)


# ---------------------------------------------------------------- a task of one's own
class _OwnTask(mic.Task):
    """A task of one's own on the base Task's collate: class scores, a plain cross-entropy."""

    num_classes = K

    def loss(self, model, images, targets, weights=None, rng=None):
        return nn.functional.cross_entropy(model(images), targets)

    def predict(self, model, images):
        return model(images).softmax(1)

    def pseudo_label(self, prediction):
        confidence, labels = prediction.max(1)
        return mic.PseudoLabels(labels, confidence)

    def metric(self):
        from torchmetrics.classification import MulticlassAccuracy

        return MulticlassAccuracy(K)


@pytest.mark.parametrize(
    "sample, named",
    [
        ((torch.zeros(3, 4, 4), 1, 7), "samples of 3 or more items; a sample is an image or"),
        ({"image": torch.zeros(3, 4, 4), "label": 1}, r"dicts with keys \['image', 'label'\]"),
        ((torch.zeros(3, 4, 4, dtype=torch.uint8), 1), "torch.uint8 images, but models take"),
    ],
)
def test_the_base_collate_names_samples_a_model_cannot_take(sample, named):
    with pytest.raises(DatasetError, match=named):
        _OwnTask().collate([sample, sample])


@pytest.mark.parametrize("first_is_a_tensor", [True, False])
def test_a_batch_with_a_pil_image_names_it(first_is_a_tensor):
    """A transform without ToTensor on one path: the data check reads sample 0 alone, and a
    later batch ended in default_collate's (or torch.stack's) TypeError."""
    from PIL import Image

    picture = (Image.new("RGB", (4, 4)), 1)
    first = (torch.zeros(3, 4, 4), 0) if first_is_a_tensor else picture
    with pytest.raises(DatasetError, match=r"images that are PIL.Image.Image objects, not tensors"):
        _OwnTask().collate([first, picture])


def test_the_base_collate_leaves_images_of_a_tasks_own_kind_alone():
    """A dict of modalities, or float64 images for a float64 model, are the task's to read."""
    images, labels = _OwnTask().collate([({"rgb": torch.zeros(3, 4, 4)}, 1)] * 2)
    assert images["rgb"].shape == (2, 3, 4, 4) and labels.tolist() == [1, 1]
    images = _OwnTask().collate([(torch.zeros(3, 4, 4, dtype=torch.float64),)] * 2)
    assert images.dtype == torch.float64


def test_an_unlabelled_source_is_named_before_a_loss_of_ones_own_meets_none():
    task = _OwnTask()
    unlabelled = DataLoader(data(labelled=False), 4, collate_fn=task.collate)
    with pytest.raises(DatasetError, match="the task's loss got images without targets"):
        run(task, unlabelled, unlabelled)
    modalities = [{"rgb": torch.randn(3, 8, 8)} for _ in range(8)]  # dict images, no labels
    unlabelled = DataLoader(modalities, 4, collate_fn=task.collate)
    with pytest.raises(DatasetError, match="the task's loss got images without targets"):
        run(task, unlabelled, unlabelled)
    # the label under a key of its own: the message said only "images alone"
    named = [{"rgb": torch.randn(3, 8, 8), "depth": torch.rand(8, 8)} for _ in range(8)]
    unlabelled = DataLoader(named, 4, collate_fn=task.collate)
    said = r"dicts with keys \['depth', 'rgb'\], read as one image of several inputs \(a dict"
    with pytest.raises(DatasetError, match=said):
        run(task, unlabelled, unlabelled)


class _TuplePseudoLabels(_OwnTask):
    def pseudo_label(self, prediction):
        confidence, labels = prediction.max(1)
        return labels, confidence


def test_pseudo_label_returning_no_pseudo_labels_is_named():
    task = _TuplePseudoLabels()
    source = DataLoader(data(), 4, collate_fn=task.collate)
    target = DataLoader(data(labelled=False), 4, collate_fn=task.collate)
    model = net()
    loop = mic.AdaptationLoop(
        task, model, mic.mean_teacher(), torch.optim.SGD(model.parameters(), 0.1), source,
        target, 2, teacher=mic.EMATeacher(model, 0.9),
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"Task\.pseudo_label returned a tuple, not mic\.Pseudo"):
        loop.run()


def test_a_loss_part_that_is_no_scalar_is_named():
    from mic.core.terms import sum_parts

    with pytest.raises(ConfigError, match=r"part 'mse' is a tensor of shape \(8,\), not a scalar"):
        sum_parts({"mse": torch.ones(8), "other": torch.ones(())}, None)
    assert sum_parts({"a": torch.ones(()), "b": torch.ones(1)}, None) == 2
    with pytest.raises(ConfigError, match=r"Task\.loss returned an empty mapping"):
        sum_parts({}, None)  # (a bare StopIteration)


def test_images_channels_last_are_told_to_come_channels_first():
    """NumPy-style H x W x C images reached the model as H channels: torch's conv error."""
    from tests.helpers import tiny_model

    nhwc = torch.rand(2, 8, 8, 3)
    with pytest.raises(DatasetError, match=r"2x8x8x3 tensors, channels last.*ToTensor"):
        ClassificationTask(3).loss(tiny_model(), nhwc, torch.tensor([0, 1]))
    with pytest.raises(DatasetError, match="channels last"):
        SegmentationTask(3).predict(SmallUNet(3, [4, 8, 8]), nhwc)
    with pytest.raises(DatasetError, match=r"8x8x3 tensors, channels last"):
        DetectionTask(2).predict(nn.Identity(), [torch.rand(8, 8, 3)])
    # channels first, of 1 or 3 channels, and small images whose width is 3: taken
    assert ClassificationTask(3).loss(tiny_model(), nhwc.permute(0, 3, 1, 2), torch.tensor([0, 1]))
    from mic.training.batches import require_images

    require_images(torch.rand(2, 1, 8, 8))
    require_images(torch.rand(2, 3, 3, 3))


@pytest.mark.parametrize(
    "build, fragment",
    [
        (
            lambda: mic.BlockMasker(4, "0.7"),
            "masker ratio must be a probability in [0, 1), got '0.7'",
        ),
        (
            lambda: mic.EMATeacher(nn.Linear(2, 2), "0.9"),
            "teacher.alpha must lie in [0, 1], got '0.9'",
        ),
    ],
)
def test_a_probability_given_as_text_is_a_config_error(build, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        build()


def test_a_training_batch_of_one_image_names_drop_last_not_batchnorm():
    model = mic.tasks.classification.Classifier("small_cnn", K, bottleneck_dim=8)
    with pytest.raises(DatasetError, match=r"a batch of 1 image .* drop_last=True"):
        model(torch.rand(1, 3, 16, 16))
    assert model.eval()(torch.rand(1, 3, 16, 16)).shape == (1, K)  # evaluation: fine
    teacher = mic.EMATeacher(model, 0.9, norm="batch")  # a target batch of 1: batch statistics
    teacher.prepare_for_prediction()
    with pytest.raises(DatasetError, match=r"a batch of 1 image .* teacher.norm=batch"):
        teacher.model(torch.rand(1, 3, 16, 16))
    unbottlenecked = mic.tasks.classification.Classifier("small_cnn", K, bottleneck_dim=0)
    assert unbottlenecked(torch.rand(1, 3, 16, 16)).shape == (1, K)


# ----------------------------------------------------- the standalone pieces, misused
@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"blur_sigma": (0, 0)}, "blur_sigma must be a range"),  # NaN images, before
        ({"blur_sigma": (1.0, 0.5)}, "0 < low <= high"),
        ({"blur_sigma": 0.5}, "blur_sigma must be a range"),
        ({"blur_kernel_ratio": 0}, r"blur_kernel_ratio .* must lie in \(0, 1\]"),
    ],
)
def test_strong_augmentation_refuses_blur_settings_that_give_nan_or_nothing(kwargs, named):
    with pytest.raises(ConfigError, match=named):
        mic.StrongAugmentation(**kwargs)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_maskers_and_the_augmentation_refuse_integer_images(dtype):
    images = torch.randint(0, 255, (2, 3, 8, 8)).to(dtype)
    for who, transform in (
        ("BlockMasker", mic.BlockMasker(4, 0.5)),
        ("Strong", mic.StrongAugmentation()),
    ):
        with pytest.raises(ConfigError, match=rf"{who}\w* takes float images .*x.float\(\) / 255"):
            transform(images)
        with pytest.raises(ConfigError, match="takes float images"):
            transform([images[0]])  # a list of images too


def test_an_empty_batch_passes_the_augmentation_and_the_masker_unchanged():
    empty = torch.zeros(0, 3, 8, 8)
    assert mic.StrongAugmentation()(empty).shape == (0, 3, 8, 8)
    assert mic.BlockMasker(4, 0.5)(empty).shape == (0, 3, 8, 8)


def test_block_masker_inputs_that_are_not_its_own_are_named():
    images = torch.rand(2, 3, 8, 8)
    with pytest.raises(
        ConfigError, match=r"rng must be a RandomStream, torch\.Generator or None, got 3"
    ):
        mic.BlockMasker(4, 0.5)(images, 3)
    with pytest.raises(ConfigError, match="ratio must be a probability"):
        mic.BlockMasker(4, True)
    with pytest.raises(ConfigError, match=r"mask takes a \(B, C, H, W\) tensor, got torch.Size"):
        mic.BlockMasker(4, 0.5).mask(images[0])
    generator = torch.Generator().manual_seed(0)
    assert mic.BlockMasker(4, 0.5)(images, generator).shape == images.shape


def test_a_teacher_update_from_another_model_or_a_negative_step_is_named():
    teacher = mic.EMATeacher(net(), 0.9)
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ConfigError, match="the teacher is not the student's architecture"):
        teacher.update(other, 1)  # fewer tensors
    wider = nn.Sequential(
        nn.Conv2d(3, 5, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, K)
    )
    with pytest.raises(ConfigError, match="the teacher is not the student's architecture"):
        teacher.update(wider, 1)  # as many tensors, of other shapes
    with pytest.raises(
        ConfigError, match=r"update step must be an int >= 0 \(the iteration\), got -1"
    ):
        teacher.update(net(), -1)


def test_calling_a_teacher_predicts_in_its_prediction_mode_without_gradients():
    student = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    teacher = mic.EMATeacher(student, 0.9)
    teacher.eval()  # leaves the mode alone: prediction sets it
    x = torch.ones(2, 4)
    first, second = teacher(x), teacher(x)
    assert torch.equal(first, second)  # dropout off
    assert not first.requires_grad
    torch.testing.assert_close(first, student.eval()(x))


def test_integer_confidences_weigh_as_floats_and_a_text_tau_is_named():
    weighting = mic.PseudoLabelWeighting("quality", tau=0.9)
    pseudo = mic.PseudoLabels(torch.zeros(4, dtype=torch.long), torch.tensor([1, 1, 0, 0]))
    weights = weighting(pseudo)
    assert weights.dtype == torch.float32 and weights.tolist() == [0.5] * 4  # q, not 0
    with pytest.raises(ConfigError, match=r"tau must lie in \[0, 1\], got '0\.9'"):
        mic.PseudoLabelWeighting("quality", tau="0.9")


def test_scoring_validators_that_read_probabilities_a_task_lacks_is_named():
    loader = DataLoader(data(8, labelled=False), 4, collate_fn=Regression().collate)
    validation = mic.LabelFreeValidation(["entropy"], loader, 1, masker=mic.BlockMasker(4, 0.5))
    with pytest.raises(ConfigError, match=r"the validators \['entropy'\] read class prob"):
        validation.score(Regression(), nn.Sequential(nn.Flatten(), nn.Linear(192, 1)))


def test_a_checkpoint_resumed_into_a_loop_of_another_optimiser_is_named(tmp_path):
    from mic.core.errors import CheckpointError
    from mic.resume import resume

    def loop(optimizer, iterations):
        model = net()
        source = DataLoader(data(), 4, drop_last=True, collate_fn=_OwnTask().collate)
        target = DataLoader(data(labelled=False), 4, drop_last=True, collate_fn=_OwnTask().collate)
        return mic.AdaptationLoop(
            _OwnTask(),
            model,
            mic.source_only(),
            optimizer(model.parameters()),
            source,
            target,
            iterations,
        )

    first = loop(lambda p: torch.optim.Adam(p, 1e-3), 2)
    first.hooks.append(mic.Checkpointer(tmp_path))
    first.run()
    with pytest.raises(CheckpointError, match="optimiser is Adam, this loop's is SGD"):
        resume(loop(lambda p: torch.optim.SGD(p, 0.01, momentum=0.9), 4), tmp_path)
    resume(loop(lambda p: torch.optim.Adam(p, 1e-3), 4), tmp_path)  # the same class resumes


def test_what_is_no_loop_state_given_to_load_state_dict_is_named(tmp_path):
    """A path met AttributeError "'str' object has no attribute 'get'", a model's weights
    KeyError 'student'."""
    from mic.core.errors import CheckpointError

    task = ClassificationTask(K)
    loop = run(task, DataLoader(data(), 4, collate_fn=task.collate), DataLoader(data(), 4))
    path = tmp_path / "loop.pt"
    torch.save(loop.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"got str: load a file first \(torch.load\)"):
        loop.load_state_dict(str(path))
    weights = loop.student.state_dict()
    with pytest.raises(CheckpointError, match=r"got OrderedDict without \['step', 'student'"):
        loop.load_state_dict(weights)
    loop.load_state_dict(torch.load(path, weights_only=True))
    assert loop.step == 2


def test_a_duck_typed_task_without_the_optional_methods_is_named_before_training():
    class Duck:
        num_classes, primary_metric = K, "accuracy"
        loss, predict, pseudo_label, metric = (
            _OwnTask.loss,
            _OwnTask.predict,
            _OwnTask.pseudo_label,
            _OwnTask.metric,
        )

    model = net()
    source = DataLoader(data(), 4, drop_last=True)
    with pytest.raises(ConfigError, match=r"the task Duck lacks check_targets, .*count"):
        mic.AdaptationLoop(
            Duck(),
            model,
            mic.source_only(),
            torch.optim.SGD(model.parameters(), 0.1),
            source,
            source,
            1,
        )
    with pytest.raises(ConfigError, match="the task Duck lacks check_targets"):
        mic.Evaluation(Duck(), source)


@pytest.fixture
def determinism_off(monkeypatch):
    """torch's deterministic mode off, as in a fresh process (an earlier test's build of a
    deterministic=true experiment leaves it on for that experiment's run), then as it was."""
    before = torch.are_deterministic_algorithms_enabled()
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.use_deterministic_algorithms(False)
    yield
    torch.use_deterministic_algorithms(before)


def test_deterministic_mode_is_the_runs_own_and_a_refused_build_leaves_it(determinism_off):
    """Research code runs experiments one after another in one process: deterministic=true
    holds for its run only, and a build refused for a bad setting changes nothing."""
    import os

    from mic.experiment import build_experiment, load_config, run_experiment
    from tests.helpers import TINY_RUN

    seen = []
    run_experiment(
        load_config([*TINY_RUN, "deterministic=true"]),
        on_start=lambda exp: seen.append(torch.are_deterministic_algorithms_enabled()),
    )
    assert seen == [True] and not torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    with pytest.raises(ConfigError, match="best_by"):
        build_experiment(load_config([*TINY_RUN, "deterministic=true", "checkpoint.best_by=foo"]))
    assert not torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_a_run_leaves_the_callers_random_generators_as_they_were():
    """run_experiment seeds the global generators for its run; the calling script's own
    draws after it go on as if the run had not happened (they restarted from the run's seed)."""
    import random

    import numpy as np

    from mic.experiment import load_config, run_experiment
    from tests.helpers import TINY_RUN

    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    run_experiment(load_config(TINY_RUN))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_run_folder_advice_from_python_names_run_experiments_argument(tmp_path):
    """From Python, hydra.run.dir changes nothing (load_config warns so): the refusals that
    advise a run folder name run_experiment's run_dir instead."""
    from mic.experiment import load_config, run_experiment
    from tests.helpers import TINY_RUN

    with pytest.raises(
        ConfigError, match=r"resume=auto needs .* \(run_experiment\(cfg, run_dir\)\)"
    ):
        run_experiment(load_config([*TINY_RUN, "resume=auto"]))
    with pytest.raises(ConfigError, match=r"run_dir=''\): the run would be written .* into the"):
        run_experiment(load_config(TINY_RUN), "")  # (as mic-train's hydra.run.dir=)
    run_experiment(load_config(TINY_RUN), tmp_path)
    with pytest.raises(
        ConfigError, match=r"already holds a run .* another folder \(run_dir=\.\.\.\)"
    ):
        run_experiment(load_config(TINY_RUN), tmp_path)


def test_load_config_inside_an_app_of_ones_own_that_uses_hydra(tmp_path):
    """A notebook that initialised Hydra for its own configs (or a @hydra.main app) composes
    mic's config, and its own Hydra and version_base are as before afterwards."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.version import VersionBase

    from mic.experiment import load_config

    (tmp_path / "mine.yaml").write_text("lr: 0.5\n")
    with initialize_config_dir(str(tmp_path), version_base=None):
        base, hydra = VersionBase.instance().getbase(), GlobalHydra.instance().hydra
        assert load_config(["seed=3"]).seed == 3
        assert GlobalHydra.instance().hydra is hydra
        assert VersionBase.instance().getbase() == base
        assert compose("mine").lr == 0.5
    assert not GlobalHydra.instance().is_initialized()
    assert load_config(["seed=4"]).seed == 4


def test_hydra_settings_given_to_load_config_are_said_to_change_nothing():
    """``hydra.run.dir=runs/x`` from Python was dropped without a word: nothing was written."""
    from mic.experiment import load_config

    with pytest.warns(UserWarning, match=r"hydra.run.dir=runs/x set\(s\) what mic-train's"):
        load_config(["hydra.run.dir=runs/x", "seed=2"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(["seed=2"])


@pytest.mark.parametrize(
    "build",
    [
        "mic.tasks.detection:DetectionTask",
        "mic.tasks.detection:FasterRCNN",
        "mic.tasks.segmentation:SegmentationTask",
    ],
)
def test_a_class_count_that_is_no_whole_number_is_refused_not_cut_down(build):
    import importlib

    module, name = build.split(":")
    cls = getattr(importlib.import_module(module), name)
    with pytest.raises(ConfigError, match=r"num_classes must be .*whole number.*got 2\.5"):
        cls(num_classes=2.5)


def _hurried_mistakes():
    """A newcomer's trial: each ran silently (the first two) or failed deep in torch or
    OmegaConf (the rest)."""
    from omegaconf import OmegaConf

    from mic.experiment import load_config, run_experiment
    from tests.helpers import tiny_loaders, tiny_model

    task, source, target, test = tiny_loaders()
    student = tiny_model()
    optimizer = torch.optim.SGD(student.parameters(), 0.1)
    config = OmegaConf.create({"_target_": "mic.EMATeacher", "alpha": 0.9})
    return {
        "a masker as self-training's augmentation": (
            lambda: mic.mean_teacher(mic.BlockMasker(4, 0.7)),
            "self-training's augmentation is a BlockMasker, a masker: the base method would",
        ),
        "a typo of a term to remove": (
            lambda: mic.mean_teacher().with_terms(mci=None),
            "with_terms: ['mci'] name no term of the method, which has ['source', 'self_tr",
        ),
        "evaluate with task and model swapped": (
            lambda: mic.evaluate(student, task, test),
            "evaluate(task, model, loader): model must be an nn.Module, got ClassificationTask",
        ),
        "evaluate with a Hydra config for the task": (
            lambda: mic.evaluate(OmegaConf.create({"num_classes": 3}), student, test),
            "the task DictConfig lacks loss, predict",
        ),
        "overrides as one text": (
            lambda: load_config("mic=none"),
            "load_config takes a list of overrides, got the text 'mic=none': write ['mic=none']",
        ),
        "an override that is no text": (
            lambda: load_config(["seed=1", 3]),
            "load_config takes a list of overrides as texts (['seed=1']), got ['seed=1', 3]",
        ),
        "a misspelt setting (Hydra's advice: append it with +)": (
            lambda: load_config(["iteratons=20"]),
            "mic-train has no setting 'iteratons'. Did you mean: iterations?",
        ),
        "a misspelt option (Hydra's: its search path)": (
            lambda: load_config(["method=dan"]),
            "unknown method 'dan'. Did you mean: dann, cdan, cdan_e? The method options: cdan,",
        ),
        "an option of one's own without its folder": (
            lambda: load_config(["method=mine"]),
            "(a file of your own: give the folder that holds method/mine.yaml with config_dir=)",
        ),
        "a deletion of a key the config lacks (composed again and again before)": (
            lambda: load_config(["~eval.nope"]),
            "no setting eval.nope: eval has no 'nope'. Its settings: adabn_batches, interval,",
        ),
        "an option misspelt beside a config_dir given with ~": (
            lambda: load_config(["method=mymethd"], config_dir="~"),
            "unknown method 'mymethd'",
        ),
        "an override Hydra's grammar refuses": (
            lambda: load_config(["seed=="]),
            "the overrides do not compose: Error parsing override 'seed=='",
        ),
        "run_experiment's arguments swapped": (
            lambda: run_experiment("runs/x", load_config([])),
            "run_experiment(cfg, run_dir): cfg must be a composed config (load_config(...)), g",
        ),
        "a term's class for the term": (
            lambda: mic.UDAMethod({"x": mic.SourceSupervision}),
            "method term 'x' is the class SourceSupervision, not an instance of it: give Sour",
        ),
        "a teacher's config for the teacher": (
            lambda: mic.AdaptationLoop(
                task, student, mic.mean_teacher(), optimizer, source, target, 2, teacher=config
            ),
            "teacher must be a mic.Teacher (EMATeacher(student, alpha)) instance, got",
        ),
    }


@pytest.mark.parametrize("mistake", list(_hurried_mistakes()))
def test_a_hurried_user_s_mistakes_are_named(mistake):
    make, said = _hurried_mistakes()[mistake]
    with pytest.raises(ConfigError, match=re.escape(said)):
        make()


def test_segmentation_predict_on_what_is_no_image_batch_is_named():
    """README sends users to task.predict on new images: uint8 pixels failed inside torch
    (expected scalar type Byte but found Float). Classification's predict takes any batch of
    a model's inputs (features, token ids), and is left unchecked."""
    task = "segmentation"
    made, model = SegmentationTask(3), SmallUNet(3, widths=(4, 8))
    one = torch.rand(3, 16, 16)
    with pytest.raises(DatasetError, match=rf"{task} takes a B x C x H x W batch, got a tensor"):
        made.predict(model.eval(), one)
    with pytest.raises(DatasetError, match=rf"{task} takes float images, got torch.uint8"):
        made.predict(model, (one[None] * 255).to(torch.uint8))
    assert made.predict(model, one[None]).shape[:2] == (1, 3)


def _classmix(augmentation):
    from mic.tasks.segmentation import ClassMix

    return ClassMix(augmentation)


@pytest.mark.parametrize(
    "build, said",
    [
        # int() made 2.5 classes 2, silently; text and None failed in int()
        (lambda: ClassificationTask(2.5), r"num_classes must be a whole number >= 2 .* got 2\.5"),
        (lambda: ClassificationTask("abc"), r"num_classes must be a whole number >= 2"),
        # no class: the mIoU of none, NaN at every evaluation
        (lambda: SegmentationTask(3, protocol=[]), r"task.protocol must list classes in \[0, 2\]"),
        (lambda: SegmentationTask(3, protocol=[5]), r"task.protocol must list classes in"),
        # 'no' is true to Python: test-time flipping was switched on
        (lambda: SegmentationTask(3, flip="no"), r"flip must be True or False, got 'no'"),
        (
            lambda: mic.tasks.classification.ConditionalDomainAdversarial(8, 3, randomized="yes"),
            r"randomized must be True or False",
        ),
        (
            lambda: mic.datasets.classification_transform("yes"),
            r"classification_transform: train must be True or False",
        ),
        # a negative part weight made training maximise that part
        (
            lambda: mic.core.terms.sum_parts({"a": torch.tensor(1.0)}, {"a": -1}),
            r"part_weights must be finite numbers >= 0",
        ),
        # the class, not an instance: the images became its jitter_p at the first iteration
        (
            lambda: mic.mean_teacher(augmentation=mic.StrongAugmentation),
            r"self-training's augmentation must be an instance .* got the class Strong",
        ),
        (
            lambda: _classmix(mic.StrongAugmentation),
            r"ClassMix's augmentation must be an instance",
        ),
        (
            lambda: mic.training.make_validators([mic.training.Entropy]),
            r"a validator is a name or a Validator instance, got the class Entropy",
        ),
    ],
)
def test_constructor_arguments_of_the_wrong_kind_are_config_errors(build, said):
    with pytest.raises(ConfigError, match=said):
        build()


def test_one_name_where_a_list_of_names_goes_is_that_name_not_its_letters():
    """make_validators('entropy') said "unknown validator 'e'"; SeededDataset('flip') too."""
    assert [v.name for v in mic.training.make_validators("entropy")] == ["entropy"]
    assert mic.training.SeededDataset([0, 1], generators="torch").generators == ("torch",)


def test_classification_loss_takes_labels_of_any_integer_width_and_names_other_labels():
    """int32 labels (which the loaders take) ended in torch's 'expected target dtype to be
    Long'; one-hot, float or (B, 1) labels in torch's words, naming nothing."""
    task, model, images = ClassificationTask(K), net(), torch.rand(4, 3, 8, 8)
    labels = torch.tensor([0, 1, 2, 1])
    want = task.loss(model, images, labels)
    torch.testing.assert_close(task.loss(model, images, labels.int()), want)
    torch.testing.assert_close(task.loss(model, images, labels.to(torch.uint8)), want)
    soft = nn.functional.one_hot(labels, K).float()  # class probabilities (mixup, smoothing)
    torch.testing.assert_close(task.loss(model, images, soft), want)
    for wrong, said in (
        (labels.float(), r"dtype torch.float32 and shape \(4,\)"),
        (nn.functional.one_hot(labels, K), r"dtype torch.int64 and shape \(4, 3\)"),
        (labels[:, None], r"shape \(4, 1\)"),
        ([0, 1, 2, 1], "got list"),
    ):
        with pytest.raises(
            DatasetError, match=f"integer class indices of shape \\(B,\\), .*{said}"
        ):
            task.loss(model, images, wrong)


def test_mic_loss_with_pseudo_labels_of_other_images_is_named():
    """3 images against 5 pseudo-labels ended in torch's 'Expected input batch_size (3) to
    match target batch_size (5)'."""
    term = mic.MaskedImageConsistency(mic.BlockMasker(2, 0.5))
    pseudo = mic.PseudoLabels(torch.tensor([0, 1, 2, 0, 1]), torch.ones(5))
    with pytest.raises(ConfigError, match="got 3 images and pseudo-labels of 5: give the"):
        term.loss(net(), ClassificationTask(K), torch.rand(3, 3, 8, 8), pseudo)


def test_a_method_of_a_list_of_terms_is_named():
    with pytest.raises(
        ConfigError, match=r"takes name -> LossTerm \(\{'mic': term\}\), got a list"
    ):
        mic.UDAMethod([mic.SourceSupervision()])


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"interval": -1}, "checkpoint.interval must be a whole number >= 0, got -1"),
        ({"interval": 2.5}, "checkpoint.interval must be a whole number >= 0, got 2.5"),
        ({"keep": 0}, "checkpoint.keep must be a whole number >= 1, got 0"),
    ],
)
def test_a_checkpointer_of_a_negative_interval_or_no_file_kept_is_refused(tmp_path, given, said):
    """interval=-1 acted as 0 (saving only at the end), without a word."""
    with pytest.raises(ConfigError, match=re.escape(said)):
        mic.Checkpointer(tmp_path, **given)
    assert mic.Checkpointer(tmp_path, interval=2.0, keep=1).interval == 2  # (YAML's 2.0)


@pytest.mark.parametrize("width", [{"channels": -1}, {"roi_features": 0}, {"channels": 2.5}])
def test_a_domain_classifier_of_no_width_is_named(width):
    """A negative width ended in torch's 'Trying to create tensor with negative dimension'."""
    from mic.tasks.detection import DomainAdversarial

    (name,) = width
    with pytest.raises(
        ConfigError, match=re.escape(f"adversarial.{name} must be a positive whole")
    ):
        DomainAdversarial(**width)


def test_model_selection_reads_record_keys_one_name_as_text_and_scores_of_other_number_kinds():
    """lower_is_better=["eval/student/err"] (its docstring's form) picked the higher error;
    "error" became {'e', 'o', 'r'}; an int or a 0-d tensor score was never counted."""
    import numpy as np

    for names in (["eval/student/err"], ["err"], "err"):
        selection = mic.ModelSelection(lower_is_better=names)
        selection.update({"step": 1, "eval/student/err": 0.5})
        selection.update({"step": 2, "eval/student/err": 0.2})
        assert selection.best["eval/student/err"]["step"] == 2, names
    selection = mic.ModelSelection()
    for step, score in enumerate([1, torch.tensor(0.9), np.float32(0.8), 0.5]):
        selection.update({"step": step, "validator/student/im": score})
    assert selection.best["validator/student/im"] == {"step": 0, "score": 1.0, "metrics": {}}


def test_param_groups_take_one_exempt_name_as_text_and_refuse_a_rate_of_no_use():
    """no_weight_decay="norm" was read letter by letter: every parameter lost its decay."""
    from mic.training.optim import param_groups

    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    groups = param_groups({"model": net}, 0.1, weight_decay=0.01, no_weight_decay="1")
    assert sorted(g["weight_decay"] for g in groups) == [0.0, 0.01]  # the BatchNorm alone
    for bad, said in (
        ({"lr": -0.1}, "lr must be a finite number > 0, got -0.1"),
        ({"lr": "0.1"}, "lr must be a finite number > 0, got '0.1'"),
        ({"lr": 0.1, "weight_decay": -1}, "weight_decay must be a finite number >= 0"),
    ):
        with pytest.raises(ConfigError, match=re.escape(said)):
            param_groups({"model": net}, **bad)


def test_adabn_refuses_a_count_of_batches_that_is_no_whole_number_and_no_loader():
    """batches=2.5 passed over the whole loader; batches="2" and loader=None failed in torch."""
    from mic.training import recalibrated_batchnorm

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    loader = [torch.rand(2, 3, 8, 8)] * 3
    for bad in (2.5, "2", None, -1):
        with pytest.raises(ConfigError, match="AdaBN's batches must be a whole number >= 0"):
            recalibrated_batchnorm(model, loader, bad).__enter__()
    with pytest.raises(ConfigError, match="AdaBN needs a loader"):
        recalibrated_batchnorm(model, None, 2).__enter__()


def test_a_checkpointer_or_logger_given_a_file_for_its_folder_is_named_before_training(tmp_path):
    """A Checkpointer pointed at a file failed at its first save, after training had begun; a
    MetricsLogger with Python's FileExistsError."""
    file = tmp_path / "taken"
    file.write_text("x")
    with pytest.raises(ConfigError, match=r"Checkpointer's folder .* is a file"):
        mic.Checkpointer(file)
    with pytest.raises(ConfigError, match=r"MetricsLogger's run folder .* is a file"):
        mic.MetricsLogger(file, tensorboard=False)


@pytest.mark.parametrize("bad", [0, -5, 2.5, "10", None])
def test_a_logging_interval_below_one_or_no_whole_number_is_refused(tmp_path, bad):
    """MetricsLogger(interval=0) and ProgressBar(interval=-5) logged every iteration without a
    word (0 reads as 'only at the end' everywhere else); "10" failed inside max()."""
    with pytest.raises(ConfigError, match=r"MetricsLogger\(interval=...\) must be a whole"):
        mic.MetricsLogger(tmp_path, interval=bad, tensorboard=False)
    with pytest.raises(ConfigError, match=r"ProgressBar\(interval=...\) must be a whole"):
        mic.ProgressBar(interval=bad)
    assert mic.MetricsLogger(tmp_path, interval=3.0, tensorboard=False).interval == 3


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"length": 2.5}, "length"),  # read as 2 images
        ({"length": -3}, "length"),  # torch's negative dimension
        ({"length": 10, "seed": 1.5}, "seed"),  # read as seed 1
        ({"length": 10, "seed": 2**60}, "seed"),  # overflowed at the first epoch
        ({"length": 10, "rank": "0"}, "rank"),  # '<=' not supported
        ({"length": 10, "world_size": 0}, "world_size"),
    ],
)
def test_the_resumable_sampler_refuses_numbers_it_would_misread(kwargs, key):
    from mic.training import ResumableSampler

    with pytest.raises(ConfigError, match=f"ResumableSampler's {key} must be a whole number"):
        ResumableSampler(**kwargs)
    assert len(ResumableSampler(10.0, seed=3, rank=1.0, world_size=2)) == 5


@pytest.mark.parametrize(
    "kwargs, said",
    [
        ({"batches": 2.5}, "at least 1 target batch"),  # read as 2
        ({"batches": None}, "at least 1 target batch"),  # int(None)
        ({"samples_per_image": "x"}, "samples_per_image must be a whole number"),
        ({"seed": "a"}, "seed must be a whole number"),
    ],
)
def test_label_free_validation_refuses_counts_it_would_misread(kwargs, said):
    from mic.training import LabelFreeValidation

    with pytest.raises(ConfigError, match=said):
        LabelFreeValidation(["entropy"], [torch.rand(2, 3, 8, 8)], **kwargs)


@pytest.mark.parametrize(
    "kwargs", [{"temperature": "a"}, {"temperature": float("nan")}, {"chunk": 0}, {"chunk": 2.5}]
)
def test_snd_refuses_a_temperature_or_chunk_it_would_misread(kwargs):
    """A NaN temperature scored NaN at every evaluation; chunk 0 and 2.5 read as 1 and 2."""
    from mic.training import SoftNeighborhoodDensity

    with pytest.raises(ConfigError, match="SND"):
        SoftNeighborhoodDensity(**kwargs)
    import numpy as np

    assert SoftNeighborhoodDensity(np.float32(0.25)).temperature == 0.25  # (as before)
    assert SoftNeighborhoodDensity(torch.tensor(0.25)).temperature == 0.25


def test_a_test_batch_with_fewer_targets_than_images_is_named():
    """A batch of one's own making, not collated by the task: torchmetrics met it as a size
    mismatch deep in its statistics (or, for a detector's list, scored the images in part)."""
    from mic.tasks.detection import DetectionTask
    from tests.helpers import tiny_loaders, tiny_model

    task, *_ = tiny_loaders()
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 3, (6,))
    model = tiny_model()
    assert "accuracy" in mic.evaluate(task, model, [(x, y)])
    with pytest.raises(DatasetError, match=r"^a test batch holds 6 images but 4 targets: each "):
        mic.evaluate(task, model, [(x, y[:4])])
    boxes = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    with pytest.raises(DatasetError, match="a test batch holds 2 images but 1 targets"):
        check_pairs(DetectionTask(3), [x[0], x[1]], [boxes])
    check_pairs(DetectionTask(3), [x[0], x[1]], [boxes, boxes])
    check_pairs(task, x, (y, y))  # a task's own form of targets: the task's to judge
    from tests.helpers import Regression

    own = Regression()  # a task of one's own chooses its forms: a dict of modalities, ...
    check_pairs(own, {"rgb": x, "depth": x[:, :1]}, y)
    check_pairs(own, x, y[:1])  # ... one target a batch


def test_a_classifier_that_returns_probabilities_is_named_at_its_first_batch():
    """A model ending in a softmax trained silently wrong: the task's softmax, taken a second
    time, capped every confidence at e / (e + C - 1) (0.576 for 3 classes), below tau."""
    from mic.tasks.classification import ClassificationTask
    from tests.helpers import tiny_loaders, tiny_model

    _, source, *_ = tiny_loaders()
    x, y = next(iter(source))
    with pytest.raises(ConfigError, match=r"returns class probabilities .* confidence at 0\.576"):
        ClassificationTask(3).loss(nn.Sequential(tiny_model(), nn.Softmax(1)), x, y)
    probabilities = nn.Sequential(tiny_model(), nn.Softmax(1))
    assert ClassificationTask(3).predict(probabilities, x).shape == (len(x), 3)  # scored as is
    task = ClassificationTask(3)
    with pytest.raises(ConfigError, match="returns class probabilities"):  # (half: sums drift)
        task.check_not_probabilities(probabilities(x).bfloat16())
    assert ClassificationTask(3).loss(nn.Sequential(tiny_model(), nn.LogSoftmax(1)), x, y) > 0
    with pytest.raises(DatasetError, match=r"label 3 is outside the class range \[0, 2\]"):
        ClassificationTask(3).loss(tiny_model(), x, torch.full_like(y, 3))  # (torch: IndexError)
    task = ClassificationTask(3)  # one task reused for a second model (a sweep in one process)
    assert task.loss(tiny_model(), x, y) > 0
    with pytest.raises(ConfigError, match="returns class probabilities"):
        task.loss(probabilities, x, y)
    sigmoid = nn.Sequential(tiny_model(), nn.Sigmoid())  # capped alike: warned of
    with pytest.warns(UserWarning, match=r"inside \(0, 1\) .* a sigmoid's do; .* at 0\.576"):
        ClassificationTask(3).loss(sigmoid, x, y)
    for logits in (  # logits that look like probabilities are no probabilities
        torch.full((4, 3), 1 / 3),  # uniform rows (a chance-level baseline)
        torch.eye(3)[[0, 1, 2, 0]],  # one-hot
        torch.zeros(4, 3),  # a zero-initialised head
        torch.full((1, 3), 0.5) + torch.tensor([0.0, 0.1, 0.2]),  # one image: no judgement
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ClassificationTask(3).check_not_probabilities(logits)
    with pytest.raises(ConfigError, match=r"got tuple: return the logits alone when called as"):
        ClassificationTask(3).check_logits((x, x))


def test_float_and_one_hot_classification_labels_say_what_to_return():
    from mic.tasks.classification import ClassificationTask

    task = ClassificationTask(3)
    with pytest.raises(DatasetError, match=r"float64 and shape \(2,\): a dataset of one's own "):
        task.check_targets(torch.tensor([0.0, 1.0], dtype=torch.float64))
    with pytest.raises(DatasetError, match=r"shape \(2, 3\): .*\(of one-hot labels: their argmax"):
        task.check_targets(torch.eye(3, dtype=torch.long)[:2])


@pytest.mark.parametrize("term", ["dann", "cdan", "mcc"])
def test_an_alignment_term_names_a_model_without_features_before_training(term):
    """Met once adaptation started (adaptation_start iterations in), as the shared forward
    pass first asked the model for its features."""
    from mic.tasks.classification.alignment import (
        ConditionalDomainAdversarial,
        DomainAdversarial,
        MinimumClassConfusion,
    )
    from tests.helpers import tiny_model

    make = {
        "dann": lambda: DomainAdversarial(8),
        "cdan": lambda: ConditionalDomainAdversarial(8, 3),
        "mcc": MinimumClassConfusion,
    }[term]
    with pytest.raises(ConfigError, match="takes no return_features"):
        make().check_student(nn.Linear(3, 3))
    model = tiny_model()
    if term in ("dann", "cdan") and model.num_features != 8:
        with pytest.raises(ConfigError, match=rf"but the model gives {model.num_features}; set"):
            make().check_student(model)
    else:
        make().check_student(model)


def test_torch_s_channel_and_forward_errors_are_explained_only_where_they_are_the_input_s():
    """The data's channels against the model's first layer, and the model's own forward: a
    mismatch between two layers inside a model, or a helper module's forward, keeps its
    traceback (the advice would be wrong there)."""
    from omegaconf import OmegaConf

    from mic.train import _forward_problem
    from mic.training.evaluation import input_channels_problem

    said = "Given groups=1, weight of size [8, 3, 3, 3], expected input[2, {}, {}, {}] to have 3"
    batch = (torch.zeros(2, 4, 32, 32), torch.zeros(2))
    first = RuntimeError(said.format(4, 32, 32) + " channels, but got 4 channels instead")
    inner = RuntimeError(said.format(4, 30, 30) + " channels, but got 4 channels instead")
    said = input_channels_problem(first, batch[0])
    assert "the model's first layer takes 3-channel images" in said
    assert input_channels_problem(inner, batch[0]) is None
    cfg = OmegaConf.create({"model": {"_target_": "mymodels.TakesADomain"}})
    own = TypeError("TakesADomain.forward() missing 1 required positional argument: 'domain'")
    helper = TypeError("Gate.forward() missing 1 required positional argument: 'mask'")
    assert "TakesADomain.forward needs 'domain' besides the images" in _forward_problem(own, cfg)
    assert _forward_problem(helper, cfg) is None


def test_a_classifier_on_a_timm_backbone_with_a_head_layer_takes_its_hidden_width():
    """mobilenetv3's pooled features pass a 1 x 1 conv to 1024 (timm's head_hidden_size)
    before the classifier; its num_features is 288: the head was built for 288."""
    from mic.tasks.classification import Classifier

    model = Classifier("mobilenetv3_small_050", num_classes=5, bottleneck_dim=0).eval()
    logits, features = model(torch.rand(2, 3, 32, 32), return_features=True)
    assert logits.shape == (2, 5) and features.shape == (2, model.num_features) == (2, 1024)


def test_a_run_stopped_in_python_says_how_to_continue_it(tmp_path):
    """A Ctrl-C (SIGINT) stops the run after saving; mic-train says how to continue, a
    script got the bare TrainingInterrupted: it carries the advice as a note."""
    from mic import Hook
    from mic.experiment import load_config, run_experiment
    from mic.training import TrainingInterrupted
    from tests.helpers import TINY_RUN

    class StopAtTwo(Hook):
        def after_step(self, loop, losses):
            if loop.step == 2:
                loop.request_stop("SIGINT")

    def stop_at_two(exp):
        exp.loop.hooks.insert(0, StopAtTwo())

    cfg = load_config([*TINY_RUN, "iterations=6"])
    with pytest.raises(TrainingInterrupted) as stopped:
        run_experiment(cfg, tmp_path / "run", on_start=stop_at_two)
    (note,) = stopped.value.__notes__
    assert "saved its state after iteration 2" in note and "once this is fixed" not in note
    assert f"run_experiment(cfg, '{tmp_path / 'run'}')" in note and "resume=auto" in note
    resumed = load_config([*TINY_RUN, "iterations=6", "resume=auto"])
    assert run_experiment(resumed, tmp_path / "run")["after_adaptation"]["step"] == 6


@pytest.mark.parametrize(
    "mean, std, channels",
    [(0.5, 0.25, [0.5]), (torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2] * 3), [0.4, 0.5, 0.6])],
)
def test_a_normalisation_given_as_one_number_or_a_tensor_is_taken(mean, std, channels):
    """(and one value for all beside one per channel; a NumPy array)"""
    aug = mic.StrongAugmentation(mean=mean, std=std)
    assert aug.normalization.mean.flatten().tolist() == pytest.approx(channels)
    x = torch.rand(2, 3, 8, 8)
    assert aug(x, torch.Generator().manual_seed(0)).shape == x.shape


@pytest.mark.parametrize(
    "mean", ["abc", [0.5, "a", 0.5], [], [True, False, True], float("nan"), [0.5, math.inf, 0.5]]
)
def test_a_normalisation_of_no_numbers_is_named(mean):
    with pytest.raises(ConfigError, match="the input normalisation's mean must be finite numbers"):
        mic.StrongAugmentation(mean=mean, std=[0.2] * 3)


def test_one_normalisation_value_for_all_channels_beside_one_per_channel():
    import numpy as np

    aug = mic.StrongAugmentation(mean=np.array([0.4, 0.5, 0.6]), std=0.25)
    assert aug.normalization.std.flatten().tolist() == [0.25] * 3
    assert aug.normalization.mean.flatten().tolist() == pytest.approx([0.4, 0.5, 0.6])


def test_a_masker_fill_is_checked_when_built_and_taken_as_a_number_tensor_or_array():
    import numpy as np

    for fill in ("abc", [], [True], float("nan"), [0.1, math.inf, 0.1]):
        with pytest.raises(ConfigError, match=r"masker fill .* must be finite numbers"):
            mic.BlockMasker(2, fill=fill)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (torch.tensor(tensor) warned of copy-constructing)
        tensor = mic.BlockMasker(2, 0.5, fill=torch.tensor([0.1, 0.2, 0.3]))
    number = mic.BlockMasker(2, 0.5, fill=0.25)
    array = mic.BlockMasker(2, 0.5, fill=np.array([0.1, 0.2, 0.3]))  # (as the mean and std)
    assert torch.equal(array.fill, tensor.fill)
    x = torch.rand(2, 3, 8, 8)
    out = tensor(x, torch.Generator().manual_seed(0))
    withheld = (out != x).any(1)  # the withheld pixels take the fill, per channel
    assert withheld.any()
    assert torch.allclose(out.permute(0, 2, 3, 1)[withheld], torch.tensor([0.1, 0.2, 0.3]))
    assert (number(x, torch.Generator().manual_seed(0))[out != x] == 0.25).all()


def test_the_segmentation_metric_names_a_label_out_of_range():
    metric = SegmentationTask(3).metric()
    metric.update(torch.rand(1, 3, 2, 2), torch.tensor([[[0, 1], [2, 255]]]))  # 255: ignored
    for bad in (5, -1):
        with pytest.raises(DatasetError, match=f"label {bad} is outside the classes \\[0, 2\\]"):
            metric.update(torch.rand(1, 3, 2, 2), torch.tensor([[[0, 1], [bad, 2]]]))
    assert metric.confmat.sum() == 3  # the refused batches left the counts as they were


def test_majority_labels_and_segmentation_mic_name_their_bad_arguments():
    from mic.tasks.segmentation import SegmentationMIC, majority_labels

    for labels in (torch.zeros(1, 4, 4), torch.zeros(4, 4, dtype=torch.long)):
        with pytest.raises(ConfigError, match="majority_labels takes B x H x W integer label"):
            majority_labels(labels, (2, 2), 3, 0.75)
    with pytest.raises(ConfigError, match=r"min_ratio must lie in \[0, 1\], got 2.0"):
        majority_labels(torch.zeros(1, 4, 4, dtype=torch.long), (2, 2), 3, 2.0)
    cells = majority_labels(torch.ones(1, 4, 4, dtype=torch.uint8), (2, 2), 3, 0.75)
    assert cells.dtype == torch.int64 and (cells == 1).all()
    with pytest.raises(ConfigError, match=r"SegmentationMIC\(weight='x'\): a loss weight must"):
        SegmentationMIC(mic.BlockMasker(2), weight="x", unscaled_parts=["detail"])


def test_mcc_and_the_reversal_ramp_take_numbers_of_any_kind_and_refuse_the_rest():
    import numpy as np

    from mic.tasks.classification.alignment import (
        GradientReversalRamp,
        MinimumClassConfusion,
        minimum_class_confusion,
    )

    assert GradientReversalRamp(alpha=np.float32(1.0))(1000) == pytest.approx(0.4621, abs=1e-4)
    for t in (0.0, -1.0, "2", float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="MCC's temperature must be a finite number > 0"):
            minimum_class_confusion(torch.randn(4, 3), t)
        with pytest.raises(ConfigError, match="MCC's temperature must be a finite number > 0"):
            MinimumClassConfusion(temperature=t)
    with pytest.raises(ConfigError, match="MCC got an empty batch"):
        minimum_class_confusion(torch.randn(0, 3))
    assert torch.isfinite(minimum_class_confusion(torch.randn(4, 3), np.float64(2.5)))


@pytest.mark.parametrize("shape", [(2, 16, 16, 19), (2, 5, 16, 16), (2, 19, 16)])
def test_segmentation_pseudo_labels_of_a_prediction_of_another_layout_are_named(shape):
    """(the classes last gave labels of shape B x H x C, every id a valid class: trained on)"""
    task = SegmentationTask(19)
    with pytest.raises(ConfigError, match=r"takes B x 19 x H x W class probabilities"):
        task.pseudo_label(torch.rand(shape))
    pseudo = task.pseudo_label(torch.rand(2, 19, 16, 16).softmax(1))
    assert pseudo.labels.shape == pseudo.confidence.shape == (2, 16, 16)


def test_classification_pseudo_labels_of_a_prediction_of_another_layout_are_named():
    task = ClassificationTask(3)
    for bad in (torch.rand(2, 5), torch.rand(2, 3, 1, 1), [0.2, 0.8]):
        with pytest.raises(ConfigError, match=r"takes B x 3 class probabilities"):
            task.pseudo_label(bad)
    assert task.pseudo_label(torch.rand(4, 3).softmax(1)).labels.shape == (4,)


def test_a_teacher_normalising_one_image_with_the_batch_statistics_names_the_setting():
    """torch's ValueError named no setting; norm='running' predicts on one image."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    task, image = ClassificationTask(3), torch.rand(1, 3, 4, 4)
    with pytest.raises(ConfigError, match=r"norm='running'"):
        mic.EMATeacher(model).predict(task, image)
    assert mic.EMATeacher(model, norm="running").predict(task, image).shape == (1, 3)


def test_a_detector_that_returns_other_loss_parts_is_named():
    """torchvision's own fasterrcnn_* returns loss_classifier, ...: a RuntimeError before"""

    class TorchvisionLike(nn.Module):
        def forward(self, images, targets=None):
            zero = torch.zeros((), requires_grad=True)
            return {"loss_classifier": zero, "loss_box_reg": zero, "loss_objectness": zero}

    target = {"boxes": torch.tensor([[1.0, 1.0, 5.0, 5.0]]), "labels": torch.tensor([0])}
    with pytest.raises(ConfigError, match=r"returned losses .* without mic's parts"):
        DetectionTask(2).loss(TorchvisionLike().train(), torch.rand(1, 3, 8, 8), [target])


def test_a_loss_term_whose_forward_takes_other_arguments_is_named_when_the_run_is_built():
    """forward(self) or forward(self, ctx, extra) met the loop's TypeError at the first
    adapting iteration, as a traceback, minutes into a run."""
    from mic.experiment import check_forward_signature

    class NoContext(mic.LossTerm):
        def forward(self):
            return torch.zeros(())

    class Optional(mic.LossTerm):
        def forward(self, ctx, scale=1.0):
            return torch.zeros(())

    with pytest.raises(ConfigError, match=r"^loss term 'mine' \(NoContext\): forward\(\) cannot"):
        check_forward_signature("mine", NoContext())
    check_forward_signature("mine", Optional())  # more arguments, with defaults: callable
    check_forward_signature("mic", mic.MaskedImageConsistency(mic.BlockMasker(8, 0.7)))


# ------------------------------------------------- a task's loss, called by a loop of one's own
def test_a_loss_weight_given_as_text_or_a_bool_is_refused_as_mic_train_refuses_it():
    """``float(weight)`` took "2" as 2.0 and True as 1.0; ``mic-train`` refuses both."""
    for weight in ("2", True, "1e-1"):
        with pytest.raises(ConfigError, match=r"\(weight=.*\): a loss weight must be a finite"):
            mic.SourceSupervision(weight=weight)
        with pytest.raises(ConfigError, match="a loss weight must be a finite number"):
            mic.MaskedImageConsistency(mic.BlockMasker(4), weight=weight)
    assert mic.SourceSupervision(weight=2).weight == 2.0


def test_per_image_weights_of_a_segmentation_loss_are_refused_also_when_the_batch_is_as_wide():
    """(B,) weights against B x H x W labels broadcast over the columns when B == W: the
    same call was refused for B = 2 and weighed columns for B = 16."""
    task, model = SegmentationTask(num_classes=3), nn.Conv2d(3, 3, 1)
    for b in (2, 16):
        x, y = torch.randn(b, 3, 4, 16), torch.randint(0, 3, (b, 4, 16))
        per_image = torch.zeros(b)
        per_image[0] = 1.0
        with pytest.raises(ValueError, match=r"one weight per image: weights.view\(-1, 1, 1\)"):
            task.loss(model, x, y, weights=per_image)
        kept = task.loss(model, x, y, weights=per_image[:, None, None])
        alone = task.loss(model, x[:1], y[:1]) / b  # (the mean runs over every pixel)
        assert torch.allclose(kept, alone, atol=1e-6)
        assert torch.allclose(task.loss(model, x, y, weights=0.5), task.loss(model, x, y) / 2)
    with pytest.raises(ValueError, match=r"weights must be a float tensor .*got list"):
        ClassificationTask(K).loss(
            nn.Linear(4, K), torch.randn(4, 4), torch.zeros(4).long(), [1.0] * 4
        )


def test_a_segmentation_label_outside_the_classes_is_named_by_loss_and_loss_from_logits():
    """torch's IndexError "Target 5 is out of bounds" before (the class's Raises section
    promised a DatasetError)."""
    task, model = SegmentationTask(num_classes=3), nn.Conv2d(3, 3, 1)
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    for bad in (5, -1):
        y[0, 0, 0] = bad
        with pytest.raises(DatasetError, match=rf"label {bad} is outside the classes \[0, 2\]"):
            task.loss(model, x, y)
        with pytest.raises(DatasetError, match=rf"label {bad} is outside the classes"):
            task.loss_from_logits(model(x), y)
    y[0, 0, 0] = 255  # the ignore index: taken
    assert torch.isfinite(task.loss(model, x, y))


def test_a_segmentation_loss_warns_of_label_maps_of_another_aspect_ratio():
    task, model = SegmentationTask(num_classes=3), nn.Conv2d(3, 3, 1)
    x = torch.randn(2, 3, 16, 32)
    with pytest.warns(UserWarning, match="label maps of 32 x 16 against images of 16 x 32"):
        task.loss(model, x, torch.randint(0, 3, (2, 32, 16)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task.loss(model, x, torch.randint(0, 3, (2, 8, 16)))  # the same view, smaller


def test_a_loss_given_images_of_a_dtype_the_model_cannot_take_or_another_count_is_named():
    """torch's RuntimeError "expected scalar type Byte but found Float" (twenty frames deep)
    and ValueError "Expected input batch_size (4) to match target batch_size (3)" before."""
    from mic.tasks.classification import Classifier

    cls, seg = ClassificationTask(K), SegmentationTask(K)
    cm, sm = Classifier("small_cnn", num_classes=K), nn.Conv2d(3, K, 1)
    x, yc, ys = (
        torch.rand(4, 3, 16, 16),
        torch.randint(0, K, (4,)),
        torch.randint(0, K, (4, 16, 16)),
    )
    for task, model, y, name in ((cls, cm, yc, "classification"), (seg, sm, ys, "segmentation")):
        with pytest.raises(DatasetError, match=rf"{name} takes float images, got torch.uint8"):
            task.loss(model, (x * 255).to(torch.uint8), y)
        with pytest.raises(
            DatasetError, match=r"model's dtype \(torch.float32\), got torch.float64"
        ):
            task.loss(model, x.double(), y)
        with pytest.raises(DatasetError, match="got 4 images but 3 targets"):
            task.loss(model, x, y[:3])
    with pytest.raises(DatasetError, match="classification takes float images"):
        cls.predict(cm, (x * 255).to(torch.uint8))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts: taken
        assert cls.loss(cm, x.bfloat16(), yc).isfinite()
    tokens = torch.randint(0, 10, (4, 5))  # a model of one's own taking token ids: taken
    embedder = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(20, K))
    assert cls.loss(embedder, tokens, yc).isfinite()
