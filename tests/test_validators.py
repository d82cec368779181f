"""Label-free validators: each formula against a hand computation (and against pytorch-adapt
where it is installed), the tasks' class probabilities, checkpoint selection on scripted
scores, the selection record across a resume, and ``checkpoint.best_by`` end to end.

pytorch-adapt pins torchmetrics 0.9, which would replace this library's torchmetrics 1.x, so
it is no dependency; to run the comparison, install it beside without its dependencies:
``pip install --no-deps pytorch-adapt==0.0.83 pytorch-metric-learning==1.6.3``.
"""

from __future__ import annotations

import json
import math
import re
import warnings

import pytest
import torch

from mic import BlockMasker, PseudoLabels
from mic.core import ConfigError, DatasetError
from mic.experiment import load_config, run_experiment
from mic.tasks.classification import ClassificationTask
from mic.tasks.detection import DetectionTask
from mic.tasks.segmentation import SegmentationTask
from mic.training import (
    BatchNuclearNorm,
    Checkpointer,
    Entropy,
    InformationMaximization,
    LabelFreeValidation,
    MaskedAgreement,
    ModelSelection,
    SoftNeighborhoodDensity,
    load_checkpoint,
    make_validators,
)
from mic.training.validators import TargetOutputs, Validator
from tests.helpers import TINY_RUN, tiny_loaders, tiny_model, user_error_of
from tests.helpers import run_cli as _cli

P = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.25, 0.75]])


def h(*p: float) -> float:
    """Entropy in nats, by hand."""
    return -sum(x * math.log(x) for x in p if x > 0)


# ---------------------------------------------------------------- formulas, by hand
def _mean_teacher_loop(task, student, source, target, hooks):
    """Four iterations of mean teacher with ``hooks``."""
    from mic import EMATeacher, mean_teacher
    from mic.core import AdaptationLoop

    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)
    teacher = EMATeacher(student, alpha=0.9)
    return AdaptationLoop(
        task, student, mean_teacher(), optimizer, source, target, 4, teacher=teacher, hooks=hooks
    )


def test_entropy_is_minus_the_mean_entropy_of_the_rows():
    expected = -(h(1, 0) + h(0.5, 0.5) + h(0.25, 0.75)) / 3
    assert Entropy().score(P).item() == pytest.approx(expected, abs=1e-6)


def test_information_maximization_is_entropy_of_the_mean_minus_mean_entropy():
    mean = ((1 + 0.5 + 0.25) / 3, (0 + 0.5 + 0.75) / 3)
    expected = h(*mean) - (h(1, 0) + h(0.5, 0.5) + h(0.25, 0.75)) / 3
    assert InformationMaximization().score(P).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("chunk", [1, 2, 1024])
def test_soft_neighborhood_density_by_hand(chunk):
    t = 0.05
    q = [[x / math.hypot(*row) for x in row] for row in P.tolist()]
    total = 0.0
    for i in range(3):
        sims = [sum(a * b for a, b in zip(q[i], q[j])) / t for j in range(3) if j != i]
        z = sum(math.exp(s) for s in sims)
        total += h(*(math.exp(s) / z for s in sims))
    score = SoftNeighborhoodDensity(temperature=t, chunk=chunk).score(P).item()
    assert score == pytest.approx(total / 3, abs=1e-5)


def test_batch_nuclear_norm_by_hand():
    # P^T P = [[2, 0], [0, 1]]: singular values sqrt(2) and 1
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert BatchNuclearNorm().score(p).item() == pytest.approx((math.sqrt(2) + 1) / 3)
    # all rows alike: rank 1, the norm of one column of ones times the row's norm, over N
    same = torch.tensor([[0.6, 0.4]] * 4)
    expected = math.sqrt(4) * math.hypot(0.6, 0.4) / 4
    assert BatchNuclearNorm().score(same).item() == pytest.approx(expected)


def test_probability_validators_accumulate_batches_and_need_two_elements():
    v = InformationMaximization()
    v.start(ClassificationTask(2), torch.device("cpu"))
    assert math.isnan(v.compute())
    task = ClassificationTask(2)
    v.update(TargetOutputs(task, probabilities=P[:1]))
    assert math.isnan(v.compute())  # one element: no neighbourhood, no spread
    v.update(TargetOutputs(task, probabilities=P[1:]))
    assert v.compute() == pytest.approx(InformationMaximization().score(P).item(), abs=1e-6)


def test_masked_agreement_is_the_task_metric_against_the_pseudo_labels():
    task = ClassificationTask(3)
    v = MaskedAgreement()
    v.start(task, torch.device("cpu"))
    masked = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    reference = PseudoLabels(torch.tensor([0, 1, 0]), torch.ones(3))
    v.update(TargetOutputs(task, masked=masked, reference=reference))
    assert v.compute() == pytest.approx(2 / 3)


def test_masked_agreement_names_itself_when_the_metric_refuses_the_pseudo_labels():
    """Soft pseudo-labels (a task's own, which its loss takes) ended the first evaluation in a
    torchmetrics traceback from inside the validator."""
    from torchmetrics.classification import MultilabelAccuracy

    class Attributes(ClassificationTask):  # three yes/no attributes per image
        def metric(self):
            return MultilabelAccuracy(3)  # (it refuses targets other than 0 and 1)

    task = Attributes(3)
    v = MaskedAgreement()
    v.start(task, torch.device("cpu"))
    masked = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    soft = PseudoLabels(masked.clone(), torch.ones(2, 3))  # probabilities, not 0 and 1
    with pytest.raises(ConfigError, match=r"the masked_agreement validator .* refused them"):
        v.update(TargetOutputs(task, masked=masked, reference=soft))


def test_masked_agreement_for_detection_leaves_out_images_without_pseudo_boxes():
    task = DetectionTask(2)
    v = MaskedAgreement()
    v.start(task, torch.device("cpu"))
    box = torch.tensor([[10.0, 10.0, 30.0, 30.0]])
    found = {"boxes": box, "labels": torch.tensor([1]), "scores": torch.tensor([0.9])}
    astray = {"boxes": box + 20, "labels": torch.tensor([0]), "scores": torch.tensor([0.9])}
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    reference = PseudoLabels(
        [{"boxes": box, "labels": torch.tensor([1])}, empty],
        [torch.ones(1), torch.ones(0)],
        keep=[True, False],
    )
    v.update(TargetOutputs(task, masked=[found, astray], reference=reference))
    assert v.compute() == pytest.approx(1.0)  # the second image (no pseudo-box) is left out
    v.start(task, torch.device("cpu"))
    v.update(
        TargetOutputs(
            task, masked=[astray], reference=PseudoLabels([empty], [torch.ones(0)], keep=[False])
        )
    )
    assert math.isnan(v.compute())


def test_pytorch_adapt_gives_the_same_scores():
    validators = pytest.importorskip("pytorch_adapt.validators")
    logits = torch.randn(200, 6, generator=torch.Generator().manual_seed(0)) * 3
    p = logits.softmax(1)
    pairs = [
        (Entropy(), validators.EntropyValidator(), {"logits": logits}),
        (InformationMaximization(), validators.IMValidator(), {"logits": logits}),
        (SoftNeighborhoodDensity(chunk=64), validators.SNDValidator(), {"preds": p}),
        (BatchNuclearNorm(), validators.BNMValidator(), {"logits": logits}),
    ]
    for ours, theirs, data in pairs:
        assert ours.score(p).item() == pytest.approx(theirs(target_train=data), abs=1e-5)


def test_unknown_validator_names_the_known_ones():
    with pytest.raises(ConfigError, match="entropy, im, snd, bnm, masked_agreement"):
        make_validators(["entropy", "accuracy"])
    with pytest.raises(ConfigError, match=r"Did you mean: im\?"):  # (best_by=IM said so)
        make_validators(["IM"])
    with pytest.raises(ConfigError, match=r"validators 'Im', 'Bnmm' .* Im -> im, Bnmm -> bnm\?"):
        make_validators(["Im", "Bnmm"])  # (the first alone was named)


# ---------------------------------------------------------------- what tasks give validators
def test_segmentation_class_probabilities_sample_the_same_pixels_each_time():
    from mic import RandomStream

    task = SegmentationTask(3)
    probs = torch.rand(2, 3, 4, 5).softmax(1)
    rows = task.class_probabilities(probs, 7, RandomStream(1))
    assert rows.shape == (14, 3)
    assert torch.equal(rows, task.class_probabilities(probs, 7, RandomStream(1)))
    every = task.class_probabilities(probs, None)
    assert every.shape == (40, 3)
    # every sampled row is the probability vector of a pixel of its own image
    for i in range(2):
        pixels = probs[i].flatten(1).T
        for row in rows[7 * i : 7 * (i + 1)]:
            assert (pixels == row).all(1).any()


def test_detection_class_probabilities_are_score_and_background_per_box():
    task = DetectionTask(2)
    boxes = torch.tensor([[0.0, 0, 5, 5], [1, 1, 6, 6], [2, 2, 7, 7]])
    prediction = [
        {
            "boxes": boxes,
            "labels": torch.tensor([1, 0, 1]),
            "scores": torch.tensor([0.5, 0.9, 0.2]),
        },
        {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.long),
            "scores": torch.zeros(0),
        },
    ]
    rows = task.class_probabilities(prediction, 2)
    expected = torch.tensor([[0.9, 0.0, 0.1], [0.0, 0.5, 0.5]])  # the two top-scoring boxes
    assert torch.allclose(rows, expected)
    assert task.class_probabilities(prediction[1:], 2).shape == (0, 3)


class _Attributes(ClassificationTask):
    """A task of its own (several binary attributes): no class probabilities to give."""

    class_probabilities = None


def test_a_task_without_class_probabilities_is_a_config_error():
    validation = LabelFreeValidation(["entropy", "masked_agreement"], [torch.zeros(2, 3, 8, 8)])
    with pytest.raises(ConfigError, match=r"class_probabilities.*masked_agreement"):
        validation.check(_Attributes(3))
    LabelFreeValidation(["masked_agreement"], [torch.zeros(2, 3, 8, 8)]).check(_Attributes(3))


def test_validation_is_reproducible_and_leaves_the_model_and_generators_alone(one_thread):
    task, _, target, _ = tiny_loaders()
    model = tiny_model()
    batches = list(target)
    validation = LabelFreeValidation(
        ["entropy", "snd", "masked_agreement"], batches, batches=2, masker=BlockMasker(2, 0.5)
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(5)
    first = validation.score(task, model)
    drawn_after = torch.rand(1)
    torch.manual_seed(5)
    assert validation.score(task, model) == first
    assert torch.equal(torch.rand(1), drawn_after)  # the global generator was left alone
    assert model.training  # the mode is restored
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(math.isfinite(v) for v in first.values())
    # against another model's pseudo-labels (the teacher's, in a run)
    other = tiny_model(seed=1)
    references = validation.references(task, other)
    assert validation.score(task, model, references=references) != first


# ---------------------------------------------------------------- selection
class _Loop:
    """What a Checkpointer reads of a loop when it saves."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}


def _records(key: str, scores: list[float], metrics: list[float]) -> list[dict]:
    return [
        {"step": 10 * (i + 1), key: s, "eval/student/accuracy": m}
        for i, (s, m) in enumerate(zip(scores, metrics))
    ]


def _feed(checkpointer: Checkpointer, loop: _Loop, records: list[dict]) -> list[int]:
    """Hand the records to the checkpointer; the steps at which it wrote best.pt."""
    written = []
    best = checkpointer.directory / "best.pt"
    for record in records:  # each at its own step: best.pt holds that step once written
        loop.step = record["step"]
        checkpointer.on_record(loop, record)
        if best.exists() and load_checkpoint(best)["step"] == loop.step:
            written.append(loop.step)
    return written


def test_best_checkpoint_follows_the_validator_on_scripted_scores(tmp_path):
    key = "validator/student/snd"
    scores = [0.2, 0.5, float("nan"), 0.4, 0.7, 0.7, 0.1]
    metrics = [0.50, 0.60, 0.90, 0.80, 0.70, 0.65, 0.95]
    checkpointer = Checkpointer(tmp_path, best_metric=key)
    loop = _Loop()
    # a new best at steps 10, 20 and 50; NaN and ties never count
    assert _feed(checkpointer, loop, _records(key, scores, metrics)) == [10, 20, 50]
    assert checkpointer.best == 0.7
    picks = checkpointer.selection.picks("student", "accuracy")
    assert picks["snd"] == {"step": 50, "score": 0.7, "accuracy": 0.70}
    assert picks["accuracy"]["step"] == 70  # the best possible, by the labels
    assert picks["last"] == {"step": 70, "accuracy": 0.95}


def test_resume_keeps_the_best_so_far_record(tmp_path):
    key = "validator/student/entropy"
    records = _records(key, [0.3, 0.9, 0.5, 0.95], [0.1, 0.2, 0.3, 0.4])
    first, rest = records[:2], records[2:]
    before = Checkpointer(tmp_path, best_metric=key)
    loop = _Loop()
    _feed(before, loop, first)
    state = before.state(loop)  # what a checkpoint holds
    after = Checkpointer(tmp_path, best_metric=key)
    after.load_state_dict(load_checkpoint(before.save(loop)))
    assert after.selection.state_dict() == state["selection"]
    # 0.5 does not beat the 0.9 of before the resume; 0.95 does
    assert _feed(after, loop, rest) == [40]
    assert after.selection.picks("student", "accuracy")["entropy"]["step"] == 40


def test_a_checkpoint_without_a_selection_record_keeps_its_best_value(tmp_path):
    checkpointer = Checkpointer(tmp_path, best_metric="eval/student/accuracy")
    checkpointer.load_state_dict({"best": 0.8})
    assert checkpointer.best == 0.8
    assert _feed(checkpointer, _Loop(), [{"step": 5, "eval/student/accuracy": 0.7}]) == []


def test_model_selection_replays_to_the_same_picks():
    records = _records("validator/teacher/bnm", [0.1, 0.3, 0.2], [0.5, 0.4, 0.6])
    records = [{k.replace("student", "teacher"): v for k, v in r.items()} for r in records]
    selection = ModelSelection()
    for r in records:
        selection.update(r)
    picks = selection.picks("teacher", "accuracy")
    assert picks["bnm"]["step"] == 20 and picks["bnm"]["accuracy"] == 0.4
    assert picks["accuracy"]["step"] == 30


def test_a_score_undefined_at_every_evaluation_is_listed_as_picking_nothing():
    """A validator that was NaN at every evaluation (a detection teacher with no pseudo-box
    yet) stays in the picks, the summary's console lines and a resumed record, instead of
    vanishing from them."""
    from mic.experiment import format_selection

    selection = ModelSelection()
    for step, acc in [(5, 0.4), (10, 0.6)]:
        selection.update(
            {
                "step": step,
                "eval/student/accuracy": acc,
                "validator/student/masked_agreement": math.nan,
                "validator/student/entropy": acc,
            }
        )
    picks = selection.picks("student", "accuracy")
    assert list(picks) == ["masked_agreement", "entropy", "accuracy", "last"]
    assert picks["masked_agreement"] == {"step": None, "score": None, "accuracy": None}
    assert picks["entropy"]["step"] == 10
    resumed = ModelSelection()
    resumed.load_state_dict(json.loads(json.dumps(selection.state_dict())))
    assert resumed.picks("student", "accuracy") == picks
    lines = format_selection({"metric": "accuracy", "selection": {"student": picks}})
    (line,) = [x for x in lines if "masked_agreement" in x]
    assert "undefined (NaN) at every evaluation" in line
    # no labelled target and one validator, NaN throughout (was: no picks, no last, no line)
    alone = ModelSelection()
    for step in (10, 20):
        alone.update({"step": step, "validator/student/masked_agreement": math.nan})
    picks = alone.picks("student", "map_50")
    assert picks == {
        "masked_agreement": {"step": None, "score": None, "map_50": None},
        "last": {"step": 20, "map_50": None},
    }
    lines = format_selection({"metric": "map_50", "selection": {"student": picks}})
    assert any("undefined (NaN) at every evaluation" in x for x in lines)


def test_the_last_evaluation_is_the_last_one_also_when_its_scores_are_nan():
    """'last' named the last evaluation with a finite score: a run whose final evaluation
    was NaN (weights gone NaN, a detector without pseudo-boxes) said an older step."""
    selection = ModelSelection()
    selection.update({"step": 10, "validator/student/masked_agreement": 0.3})
    selection.update({"step": 20, "validator/student/masked_agreement": math.nan})
    assert selection.picks("student", "map_50")["last"]["step"] == 20
    assert selection.picks("student", "map_50")["masked_agreement"]["step"] == 10
    selection.update({"step": 30, "eval/student/accuracy": 0.5})
    for model, metric, said in [("student", "acc", "metric 'acc'"), ("st", "accuracy", "model")]:
        with pytest.raises(ConfigError, match=f"no evaluation record scores the {said}"):
            selection.picks(model, metric)  # (was: None throughout, as if never measured)
    nan = ModelSelection()  # a metric NaN at every evaluation is known, a misspelt one is not
    nan.update({"step": 10, "eval/student/map_50": math.nan})
    assert nan.picks("student", "map_50")["map_50"]["step"] is None
    with pytest.raises(ConfigError, match="no evaluation record scores the metric 'map50'"):
        nan.picks("student", "map50")
    unlabelled = ModelSelection()  # validators alone: the protocol is no metric
    unlabelled.update({"step": 5, "eval/student/protocol": "adabn:1", "validator/student/im": 1.0})
    assert unlabelled.picks("student", "accuracy")["im"]["step"] == 5


def test_evaluation_with_validators_alone_for_targets_without_labels(tmp_path, one_thread):
    from mic import Evaluation

    task, source, target, _ = tiny_loaders()
    student = tiny_model()
    batches = list(target)  # the same batches at every evaluation
    masker = BlockMasker(2, 0.5)  # blocks smaller than the 8 px images
    validation = LabelFreeValidation(["im", "masked_agreement"], batches, batches=2, masker=masker)
    evaluation = Evaluation(task, None, interval=2, validation=validation)
    checkpointer = Checkpointer(tmp_path, best_metric="validator/student/im")
    loop = _mean_teacher_loop(task, student, source, target, [evaluation, checkpointer])
    loop.run()
    record = evaluation.history[-1]
    assert not any(k.startswith("eval/") and k.endswith("accuracy") for k in record)
    assert {"validator/student/im", "validator/teacher/masked_agreement"} <= set(record)
    picks = checkpointer.selection.picks("student", "accuracy")
    scores = [r["validator/student/im"] for r in evaluation.history]
    assert picks["im"]["step"] == [2, 4][scores.index(max(scores))]
    assert picks["im"]["accuracy"] is None  # no labels: no true metric to show beside
    # a labelled score asked for where there are no labels: said so, not a validator's typo
    labelled = Checkpointer(tmp_path / "labelled", best_metric="eval/student/accuracy")
    loop = _mean_teacher_loop(task, student, source, target, [evaluation, labelled])
    with pytest.raises(ConfigError) as error:
        loop.run()
    assert "the evaluation has no labelled test loader, so it records no labelled score" in str(
        error.value
    )
    assert "Did you mean" not in str(error.value) and "validator/student/im" in str(error.value)


def test_evaluation_needs_labels_or_validators():
    with pytest.raises(ConfigError, match="labelled loader, label-free validators or both"):
        from mic import Evaluation

        Evaluation(ClassificationTask(2), None)


# ---------------------------------------------------------------- through mic-train
TINY = [*TINY_RUN, "log.tensorboard=false"]


def test_validators_change_nothing_in_training(tmp_path):
    def final_weights(extra):
        summary = run_experiment(
            load_config([*TINY, "eval.interval=2", *extra]), tmp_path / extra[0]
        )
        state = torch.load(tmp_path / extra[0] / "checkpoints" / "student.pt")
        return summary, state

    with_v, weights = final_weights(["eval.validators=[entropy,im,snd,bnm,masked_agreement]"])
    without, weights_without = final_weights(["eval.validators=[]"])
    assert all(torch.equal(weights[k], weights_without[k]) for k in weights)
    assert with_v["after_adaptation"] == without["after_adaptation"]
    assert set(with_v["selection"]["student"]) == {
        "entropy", "im", "snd", "bnm", "masked_agreement", "accuracy", "last"
    }  # fmt: skip
    assert set(without["selection"]["student"]) == {"accuracy", "last"}


def test_a_resumed_run_keeps_the_record_of_before(tmp_path):
    from mic.training import save_checkpoint

    run = tmp_path / "run"
    run_experiment(load_config([*TINY, "iterations=2", "checkpoint.best_by=entropy"]), run)
    path = run / "checkpoints" / "iter_00000002.pt"
    state = load_checkpoint(path)
    key = "validator/student/entropy"
    assert state["selection"]["best"][key]["step"] == 2
    state["selection"]["best"][key]["score"] = 1e9  # a mark no later evaluation beats
    save_checkpoint({k: v for k, v in state.items() if k != "format"}, path)
    overrides = [*TINY, "iterations=4", "checkpoint.best_by=entropy", "resume=auto"]
    summary = run_experiment(load_config(overrides), run)
    assert summary["selection"]["student"]["entropy"]["step"] == 2
    assert summary["selection"]["student"]["entropy"]["score"] == 1e9
    assert summary["selection"]["student"]["last"]["step"] == 4
    assert summary["best_checkpoint"]["step"] == 2


def test_a_validator_added_on_resume_says_it_picks_among_the_later_evaluations(tmp_path):
    """It picked among the evaluations after the resume only, and the picks did not say so."""
    from mic.experiment import format_selection

    run = tmp_path / "run"
    first = [*TINY, "iterations=2", "eval.interval=1", "eval.validators=[entropy]"]
    run_experiment(load_config(first), run)
    resumed = [*first[:-3], "iterations=4", "eval.interval=1", "eval.validators=[entropy,im]"]
    summary = run_experiment(load_config([*resumed, "resume=auto"]), run)
    picks = summary["selection"]["student"]
    assert "since" not in picks["entropy"] and "since" not in picks["accuracy"]
    assert picks["im"]["since"] == 3 and picks["im"]["step"] >= 3
    (line,) = [x for x in format_selection(summary) if x.strip().startswith("im ")]
    assert "among the evaluations from iteration 3 on, when it was added" in line
    # a checkpoint of before the steps were recorded (its keys as a list) picks as before
    selection = ModelSelection()
    old = {"step": 3, "score": 1.0, "metrics": {}}
    selection.load_state_dict(
        {"best": {"validator/student/im": old}, "seen": ["validator/student/im"]}
    )
    assert "since" not in selection.picks("student", "accuracy")["im"]


def test_cli_best_by_a_validator_end_to_end(tmp_path):
    run = tmp_path / "run"
    out = _cli(
        *TINY, "iterations=6", "eval.interval=2", "checkpoint.best_by=snd", f"hydra.run.dir={run}"
    )
    assert out.returncode == 0, out.stderr
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if "validator/student/snd" in r]
    assert [r["step"] for r in evaluations] == [2, 4, 6]
    assert all("eval/student/accuracy" in r for r in evaluations)  # the true metric beside
    best = max(evaluations, key=lambda r: r["validator/student/snd"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_checkpoint"]["by"] == "validator/student/snd"
    assert summary["best_checkpoint"]["step"] == best["step"]
    assert load_checkpoint(run / "checkpoints" / "best.pt")["step"] == best["step"]
    pick = summary["selection"]["student"]["snd"]
    assert pick == {
        "step": best["step"],
        "score": best["validator/student/snd"],
        "accuracy": best["eval/student/accuracy"],
    }
    assert "checkpoint picks for the student" in out.stdout
    assert f"best.pt chosen by validator/student/snd (iteration {best['step']})" in out.stdout


def test_cli_without_a_labelled_target_chooses_best_pt_by_a_validator(tmp_path):
    """dataset.test=null, the real situation of domain adaptation: mic-train required a
    labelled test set (label-free selection worked from Python alone)."""
    run = tmp_path / "run"
    out = _cli(
        *TINY, "iterations=6", "eval.interval=2", "dataset.test=null", "checkpoint.best_by=im",
        f"hydra.run.dir={run}",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if "validator/student/im" in r]
    assert [r["step"] for r in evaluations] == [2, 4, 6]
    assert not any(k.startswith("eval/student/accuracy") for r in records for k in r)
    best = max(evaluations, key=lambda r: r["validator/student/im"])
    summary = json.loads((run / "summary.json").read_text())
    assert "after_adaptation" not in summary
    assert summary["best_checkpoint"]["step"] == best["step"]
    assert load_checkpoint(run / "checkpoints" / "best.pt")["step"] == best["step"]
    assert "no labelled target: the iteration alone" in out.stdout
    for r in evaluations:  # the console shows the scores that choose (it showed none)
        score = {k.split("/")[-1]: v for k, v in r.items() if k.startswith("validator/student/")}
        said = f"student entropy {score['entropy']:.4g}, im {score['im']:.4g}"
        assert (
            f"[iteration {r['step']}] target (no labels), validators (higher is better): {said}"
            in out.stdout + out.stderr
        )
    # without a validator to choose by: refused before training, naming the way
    out = _cli(*TINY, "dataset.test=null", f"hydra.run.dir={tmp_path / 'refused'}")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "dataset.test=null: without a labelled target there is no accuracy" in out.stderr
    out = _cli(*TINY, "dataset.test=null", "checkpoint.best_by=Accuracy", f"hydra.run.dir={run}2")
    assert "(dataset.test=null: there is no labelled target metric)" in out.stderr
    assert "or null" not in out.stderr and "Did you mean: accuracy" not in out.stderr


def test_cli_unknown_validator_is_one_clear_message(tmp_path):
    out = _cli(*TINY, "checkpoint.best_by=accurracy", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2
    assert "checkpoint.best_by='accurracy' names no validator" in out.stderr
    assert "entropy, im, snd, bnm, masked_agreement" in out.stderr
    assert "Traceback" not in out.stderr


def test_best_by_a_validator_that_is_not_computed():
    message = user_error_of([*TINY, "eval.validators=[entropy]", "checkpoint.best_by=snd"])
    assert "does not compute it" in message and "eval.validators=[entropy, snd]" in message


def test_best_by_another_labelled_score_names_the_task_s_primary_metric():
    from mic.experiment import best_metric_key

    task = ClassificationTask(3)
    cfg = load_config(["checkpoint.best_by=mean_class_accuracy"])
    with pytest.raises(ConfigError, match="names no validator") as info:
        best_metric_key(cfg, task)
    assert "task.primary_metric=mean_class_accuracy with checkpoint.best_by=null" in str(info.value)
    # a score the task's metric does not give: no advice that ends in the next error
    with pytest.raises(ConfigError) as info:
        best_metric_key(load_config(["checkpoint.best_by=miou"]), task)
    said = "Nor is it a score of ClassificationTask's metric (task.primary_metric "
    assert said in str(info.value) and "'mean_class_accuracy', got 'miou')." in str(info.value)
    typo = load_config(["checkpoint.best_by=accurracy"])
    with pytest.raises(ConfigError, match="Did you mean: accuracy") as info:
        best_metric_key(typo, task)
    assert "primary_metric=accurracy" not in str(info.value)  # a typo is not another score
    chosen = load_config(["task.primary_metric=mean_class_accuracy"])
    assert best_metric_key(chosen, ClassificationTask(3, chosen.task.primary_metric)) == (
        "eval/student/mean_class_accuracy"
    )


def test_validation_over_an_empty_loader_is_a_dataset_error_not_nan():
    from mic.core import DatasetError

    class Emptied(list):  # emptied after it was built (a loader without a length too)
        pass

    batches = Emptied([torch.zeros(2, 3, 8, 8)])
    validation = LabelFreeValidation(["entropy", "masked_agreement"], batches, batches=4)
    batches.clear()
    model, task = tiny_model(), ClassificationTask(3)
    with pytest.raises(DatasetError, match=r"label-free validation.*yields no batch.*entropy"):
        validation.score(task, model)
    with pytest.raises(DatasetError, match="yields no batch"):
        validation.references(task, model)
    # a loader of no batch is named when it is given, not at the first evaluation
    with pytest.raises(DatasetError, match=r"label-free validation.*yields no batch.*entropy"):
        LabelFreeValidation(["entropy"], [], batches=4)


def test_a_best_metric_that_is_nan_at_every_evaluation_warns_at_the_end(tmp_path):
    """masked_agreement is NaN while the teacher's pseudo-labels are empty: a run whose every
    evaluation was NaN ended without best.pt, and without a word."""
    import warnings

    key = "validator/teacher/masked_agreement"
    loop = _Loop()
    loop.student, loop.teacher, loop.interrupted_by = tiny_model(), None, None
    nan = Checkpointer(tmp_path / "nan", best_metric=key)
    _feed(nan, loop, _records(key, [float("nan")] * 2, [0.5, 0.6]))
    with pytest.warns(UserWarning, match=r"not a finite number at any evaluation.*no best\.pt"):
        nan.after_run(loop)  # (without a teacher, no teacher.pt is named)
    with pytest.warns(UserWarning, match=r"final weights are in student\.pt$"):
        nan.after_run(loop)
    assert not (tmp_path / "nan" / "best.pt").exists()
    finite = Checkpointer(tmp_path / "finite", best_metric=key)
    _feed(finite, loop, _records(key, [float("nan"), 0.4], [0.5, 0.6]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        finite.after_run(loop)
    assert (tmp_path / "finite" / "best.pt").exists()


class Batches:
    """Batches that can be passed over again but have no length (an iterable data set's)."""

    def __init__(self, batches: list) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


def test_validation_over_a_loader_of_fewer_batches_than_asked_says_so_once(one_thread):
    import warnings

    task, _, target, _ = tiny_loaders()
    model = tiny_model()
    batches = list(target)[:2]
    with pytest.warns(UserWarning, match=r"scores 2 batches, not the 5 asked for"):
        validation = LabelFreeValidation(["entropy"], batches, batches=5)  # before training
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validation.score(task, model)  # once
        LabelFreeValidation(["entropy"], batches, batches=2).score(task, model)
    unsized = LabelFreeValidation(["entropy"], Batches(batches), batches=5)
    with pytest.warns(UserWarning, match=r"scores 2 batches, not the 5 asked for"):
        unsized.score(task, model)  # a loader without a length: told when it runs short


def test_mic_train_says_before_training_that_the_validation_asks_for_more_batches(tmp_path):
    """It said so at the first evaluation (by default after 250 iterations)."""
    out = _cli(*TINY, "iterations=1", "eval.validation.batches=1000", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-2000:]
    said = "validation scores 28 batches, not the 1000 asked for (eval.validation.batches)"
    assert out.stderr.count(said) == 1, out.stderr[-2000:]
    (log,) = tmp_path.glob("*.log")
    lines = log.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if said in line)
    assert not any("[iteration " in line for line in lines[:first]), lines[: first + 1]


def test_a_shuffling_loader_is_warned_of_and_a_fixed_one_is_not():
    import warnings

    from torch.utils.data import DataLoader, TensorDataset

    data = TensorDataset(torch.rand(8, 3, 8, 8))
    with pytest.warns(UserWarning, match=r"loader shuffles \(a RandomSampler\), so each"):
        LabelFreeValidation(["entropy"], DataLoader(data, batch_size=4, shuffle=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LabelFreeValidation(["entropy"], DataLoader(data, batch_size=4), batches=2)


@pytest.mark.parametrize(
    ("best", "message"),
    [
        ("validator/student/sdn", "Did you mean: validator/student/snd, "),
        ("eval/teacher/acuracy", "Did you mean: eval/teacher/accuracy, "),
    ],
)
def test_a_best_metric_typo_is_refused_before_the_first_iteration(tmp_path, best, message):
    from mic import Evaluation

    task, source, target, test = tiny_loaders()
    student = tiny_model()
    validation = LabelFreeValidation(["snd"], list(target), batches=1)
    evaluation = Evaluation(task, test, interval=2, validation=validation)
    loop = _mean_teacher_loop(
        task, student, source, target, [evaluation, Checkpointer(tmp_path, best_metric=best)]
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        loop.run()
    assert loop.step == 0 and not evaluation.history  # before training and any evaluation


def test_a_metric_that_fails_on_the_first_test_batch_says_where(tmp_path):
    from mic import Evaluation, source_only
    from mic.core import AdaptationLoop

    class WrongShape(ClassificationTask):
        def predict(self, model, images):
            return super().predict(model, images)[:, :1, None]  # (B, 1, 1): no class scores

    task, source, target, test = tiny_loaders()
    task = WrongShape(num_classes=task.num_classes)
    student = tiny_model()
    loop = AdaptationLoop(
        task,
        student,
        source_only(),
        torch.optim.SGD(student.parameters(), lr=0.01),
        source,
        target,
        2,
        hooks=[Evaluation(task, test, interval=0)],
    )
    with pytest.raises(Exception) as error:
        loop.run()
    assert any("scoring the first test batch before training" in n for n in error.value.__notes__)


def test_best_by_takes_a_record_key_as_the_reports_write_it():
    from mic.experiment import best_metric_key

    task = ClassificationTask(3)
    cfg = load_config(["checkpoint.best_by=validator/student/snd"])
    assert best_metric_key(cfg, task) == "validator/student/snd"
    labelled = load_config(["checkpoint.best_by=eval/student/accuracy"])
    assert best_metric_key(labelled, task) == "eval/student/accuracy"
    teacher = load_config(["checkpoint.best_by=validator/teacher/snd"])
    with pytest.raises(ConfigError, match=r"best_by=snd\) with eval.models=\[teacher,...\]"):
        best_metric_key(teacher, task)
    # a prefix that does not match the score (was: followed the labelled accuracy, silently)
    for key, said in [
        ("validator/student/accuracy", "accuracy is no validator, so its record key is eval/"),
        ("eval/student/im", "im is a label-free validator, so its record key is validator/"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(said)):
            best_metric_key(load_config([f"checkpoint.best_by={key}"]), task)
    # a typo of a validator in a record key: the advice for the typo (was: to give the typo alone)
    typo = load_config(["checkpoint.best_by=validator/student/entorpy"])
    with pytest.raises(ConfigError, match=r"best_by='validator/student/entorpy' names no valid"):
        best_metric_key(typo, task)
    with pytest.raises(ConfigError, match="Did you mean: entropy"):
        best_metric_key(typo, task)
    # the labelled metric's key without a labelled target: that advice, not to give accuracy
    unlabelled = ["checkpoint.best_by=validator/student/accuracy", "dataset.test=null"]
    with pytest.raises(ConfigError, match=r"dataset\.test=null: without a labelled target"):
        best_metric_key(load_config(unlabelled), task)


def test_snd_over_many_elements_warns_of_its_cost_once():
    # 250 validation batches of every pixel did not finish one evaluation in 10 minutes
    snd = SoftNeighborhoodDensity()
    snd.large = 16  # (2^16 elements in the run)
    p = torch.softmax(torch.randn(17, 3, generator=torch.Generator().manual_seed(0)), 1)
    with pytest.warns(UserWarning, match="snd compares every pair of its 17 scored elements"):
        first = snd.score(p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert snd.score(p) == first  # once; the score unchanged
        SoftNeighborhoodDensity().score(p)  # below the default: no warning


class _OwnProbabilities(ClassificationTask):
    """A task of its own whose ``class_probabilities`` returns what ``make`` makes of the
    probabilities."""

    def __init__(self, num_classes: int, make) -> None:
        super().__init__(num_classes)
        self.make = make

    def class_probabilities(self, prediction, samples_per_image=None, rng=None):
        return self.make(super().class_probabilities(prediction, samples_per_image, rng))


@pytest.mark.parametrize(
    ("make", "message"),
    [  # each scored without a word (logits: NaN), or failed in a validator's formula
        (lambda p: p.log(), r"returned rows that are no probabilities \(least value -"),
        (
            lambda p: torch.sigmoid(p * 5),
            r"returned rows .*, row sums [\d.]+ to [\d.]+\): each row is non-neg",
        ),
        (lambda p: p.flatten(), r"returned a \(12,\) torch.float32 tensor: class probabil"),
        (lambda p: p.tolist(), r"returned <class 'list'>: class probabilities are an N x K"),
        (lambda p: None, r"returned <class 'NoneType'>"),
    ],
)
def test_class_probabilities_that_are_no_probabilities_are_a_config_error(make, message):
    _, _, target, _ = tiny_loaders()
    validation = LabelFreeValidation(["entropy", "im"], list(target), batches=1)
    task, model = _OwnProbabilities(3, make), tiny_model().eval()
    with pytest.raises(ConfigError, match=f"_OwnProbabilities.class_probabilities {message}"):
        validation.score(task, model)
    scores = validation.score(_OwnProbabilities(3, lambda p: p), model)  # as they are: scored
    assert all(math.isfinite(s) for s in scores.values())


def test_class_probabilities_that_ignore_samples_per_image_are_warned_of_once():
    # a task of one's own that returns every element: each evaluation 15x slower, unsaid
    _, _, target, _ = tiny_loaders()
    model = tiny_model().eval()
    every = _OwnProbabilities(3, lambda p: p.repeat(2, 1))  # two rows an image
    validation = LabelFreeValidation(["entropy"], list(target), batches=2, samples_per_image=1)
    said = r"_OwnProbabilities.class_probabilities returned \d+ rows for \d+ images, more than "
    with pytest.warns(UserWarning, match=said + r"eval.validation.samples_per_image=1 per image"):
        validation.score(every, model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validation.score(every, model)  # once
        LabelFreeValidation(["entropy"], list(target), 2, samples_per_image=1).score(
            _OwnProbabilities(3, lambda p: p),
            model,  # one row an image: within
        )
        LabelFreeValidation(["entropy"], list(target), 2).score(every, model)  # None: all


@pytest.mark.parametrize(
    ("given", "message"),
    [  # Entropy scored -3.18, NaN, 366 and NaN for these
        (torch.full((6,), 0.5), r"a \(6,\) torch.float32 tensor: class probabilities are an N x K"),
        (torch.full((1, 6, 2), 0.5), r"a \(1, 6, 2\) torch.float32 tensor"),
        (torch.full((6, 2), 50, dtype=torch.uint8), r"a \(6, 2\) torch.uint8 tensor"),
        (torch.randn(6, 2) * 3, r"rows that are no probabilities"),
    ],
)
@pytest.mark.parametrize("name", ["entropy", "im", "snd", "bnm"])
def test_a_validator_used_on_its_own_refuses_what_are_no_probabilities(name, given, message):
    from mic.tasks.classification import ClassificationTask
    from mic.training.validators import TargetOutputs, make_validators

    (validator,) = make_validators([name])
    validator.start(ClassificationTask(2), torch.device("cpu"))
    outputs = TargetOutputs(ClassificationTask(2))
    outputs.probabilities = given
    with pytest.raises(ConfigError, match=f"validator '{name}' was given {message}"):
        validator.update(outputs)
    outputs.probabilities = torch.softmax(torch.randn(6, 2), 1)
    validator.update(outputs)
    assert math.isfinite(validator.compute())


def test_label_free_validation_checks_each_batch_s_probabilities_once(monkeypatch):
    """Each probability validator checked them again (four host syncs more per batch)."""
    from mic.training import validators

    calls = []
    check = validators._probabilities
    monkeypatch.setattr(validators, "_probabilities", lambda p, s: calls.append(s) or check(p, s))
    _, _, target, _ = tiny_loaders()
    validation = LabelFreeValidation(["entropy", "im", "snd", "bnm"], list(target), batches=2)
    validation.score(ClassificationTask(3), tiny_model())
    assert calls == ["ClassificationTask.class_probabilities returned"] * 2


class _Scripted(Validator):
    name = "scripted"

    def __init__(self, score) -> None:
        self.value = score

    def update(self, outputs) -> None:
        pass

    def compute(self):
        return self.value


def test_a_validator_s_number_of_another_type_is_a_float_and_anything_else_refused():
    """An int was logged but never counted as a best; a 0-d tensor failed the log."""
    import numpy as np

    _, _, target, _ = tiny_loaders()
    model, task = tiny_model(), ClassificationTask(3)
    for score in (3, np.float32(0.5), torch.tensor(0.25), torch.tensor([2.0])):
        scores = LabelFreeValidation([_Scripted(score)], list(target), batches=1).score(task, model)
        assert type(scores["scripted"]) is float and scores["scripted"] == float(score)
    for score in (None, "0.5", True, torch.ones(2)):
        validation = LabelFreeValidation([_Scripted(score)], list(target), batches=1)
        with pytest.raises(ConfigError, match=r"validator .scripted.: compute\(\) returned"):
            validation.score(task, model)


def test_masked_agreement_on_a_batch_of_one_image_is_a_dataset_error():
    from mic.core import DatasetError

    _, _, target, _ = tiny_loaders()
    one = [next(iter(target))[:1]]  # the bottleneck's BatchNorm1d: no batch statistics
    validation = LabelFreeValidation(["masked_agreement"], one, masker=BlockMasker(2, 0.5))
    with pytest.raises(DatasetError, match=r"masked_agreement met a batch of 1 image.*drop_last"):
        validation.score(ClassificationTask(3), tiny_model())


class _HardLabelsOnly:
    """A metric that refuses float (soft) targets as torchmetrics does, quoting them."""

    def update(self, prediction, targets):
        if targets.is_floating_point():
            raise ValueError(f"Expected integer targets, got\n{targets}")

    def compute(self):
        return 0.0

    def reset(self):
        pass


class _SoftPseudoLabels(ClassificationTask):
    """Soft pseudo-labels (the class probabilities): the loss takes them, the metric not."""

    def metric(self):
        return _HardLabelsOnly()

    def pseudo_label(self, prediction):
        return PseudoLabels(prediction, prediction)


def test_a_metric_that_refuses_soft_pseudo_labels_is_named_in_one_short_line():
    """torchmetrics' error quoted every value of the soft labels (about 200 numbers)."""
    from mic.training.validators import MaskedAgreement, TargetOutputs

    task = _SoftPseudoLabels(3)
    soft = torch.softmax(torch.randn(64, 3), 1)
    validator = MaskedAgreement()
    validator.start(task, torch.device("cpu"))
    outputs = TargetOutputs(task, masked=soft, reference=PseudoLabels(soft, soft))
    with pytest.raises(ConfigError, match="refused them") as refused:
        validator.update(outputs)
    assert len(str(refused.value)) < 600 and "\n" not in str(refused.value)


def test_masked_agreement_on_pseudo_labels_the_metric_refuses_is_named_before_training():
    """A task of soft pseudo-labels (which its loss takes, its metric not) trained until the
    first evaluation, at the end of a run with eval.interval=0, before masked_agreement
    failed on them."""
    _, source, target, _ = tiny_loaders()
    task = _SoftPseudoLabels(3)
    validation = LabelFreeValidation(["masked_agreement"], target, batches=1)
    from mic.training import Evaluation

    hooks = [Evaluation(task, None, interval=0, validation=validation)]
    loop = _mean_teacher_loop(task, tiny_model(), source, target, hooks)
    with pytest.raises(ConfigError, match=r"masked_agreement validator .* refused them"):
        loop.run()
    assert loop.step == 0
    from mic import source_only  # without a teacher: the model's own pseudo-labels
    from mic.core import AdaptationLoop

    student = tiny_model()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)
    alone = AdaptationLoop(task, student, source_only(), optimizer, source, target, 4, hooks=hooks)
    with pytest.raises(ConfigError, match=r"masked_agreement validator .* refused them"):
        alone.run()
    assert alone.step == 0
    # a data error in the validation's own loader says whose batch it was
    from torch.utils.data import DataLoader

    two_sizes = [torch.zeros(3, 8, 8), torch.zeros(3, 8, 9)]
    loader = DataLoader(two_sizes, batch_size=2, collate_fn=task.collate)
    with pytest.raises(DatasetError) as raised:
        LabelFreeValidation(["masked_agreement"], loader, 1).check_agreement(task, student)
    assert "(in a batch of the label-free validation's loader" in raised.value.__notes__[0]


def test_the_teacher_re_estimates_its_batchnorm_once_for_its_references_and_its_scores():
    """AdaBN of the teacher ran twice per evaluation: for masked_agreement's references, then
    again to score it, with the same batches (0.46 s of each 12.7 s fog-shapes evaluation)."""
    from mic import EMATeacher, Evaluation

    task, _, target, test = tiny_loaders()
    student = tiny_model()
    teacher = EMATeacher(student).model
    validation = LabelFreeValidation(["masked_agreement", "entropy"], list(target), batches=1)
    evaluation = Evaluation(
        task, test, validation=validation, adabn_loader=list(target), adabn_batches=2
    )
    passes = []
    recalibrated = evaluation.recalibrated
    evaluation.recalibrated = lambda m, d: passes.append(m) or recalibrated(m, d)
    record = evaluation.score_models(3, student, teacher)
    assert passes == [teacher, student]  # the teacher's pass serves both
    from mic.training.evaluation import scores_of

    with recalibrated(teacher, None):  # the two passes of before: the same scores
        references = validation.references(task, teacher)
    with recalibrated(teacher, None):
        found = validation.score(task, teacher, references=references)
        scores = scores_of(task, teacher, test)
    assert found == {k.split("/")[2]: v for k, v in record.items() if "validator/teacher" in k}
    assert scores["accuracy"] == record["eval/teacher/accuracy"]
