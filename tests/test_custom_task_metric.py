"""A Task of one's own whose ``metric()`` is broken stops the run before training (the
Evaluation hook scores its test loader's first batch at ``before_run``), not at the first
evaluation, which with ``interval=0`` comes after all of training."""

import math
import re

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import mic
from mic.core.errors import ConfigError, DatasetError
from mic.training import LabelFreeValidation
from mic.training.evaluation import fresh_metric, primary_score
from tests.helpers import Regression

ITERATIONS = 3


class ReturnsTheClass(Regression):
    """``return MeanSquaredError`` without ``()``."""

    def metric(self):
        from torchmetrics import MeanSquaredError

        return MeanSquaredError


class ReturnsAFunction(Regression):
    """A plain function of prediction and targets, not an accumulator."""

    def metric(self):
        def mse(prediction, targets):
            return ((prediction - targets) ** 2).mean()

        return mse


class ComputesAnotherName(Regression):
    """``primary_metric`` names a score that ``compute()`` does not return."""

    def metric(self):
        from torchmetrics import MeanSquaredError, MetricCollection

        return MetricCollection({"error": MeanSquaredError()})


class Fixed:
    """An accumulator whose ``compute()`` gives ``{"mse": value}``."""

    def __init__(self, value) -> None:
        self.value = value

    def update(self, prediction, targets) -> None:
        pass

    def compute(self):
        return {"mse": self.value}


class ComputesNotANumber(Regression):
    def __init__(self, value) -> None:
        self.value = value

    def metric(self):
        return Fixed(self.value)


def regressor() -> nn.Module:
    """A tiny model with BatchNorm (running statistics) and dropout (global random draws)."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 1),
    )


def loaders(task):
    """Source, target and test loaders; all shuffled from the global generator (a check that
    drew from it would change the order of every later batch)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 8, 8, generator=g)
    y = x.mean((1, 2, 3)) * 10
    source = DataLoader(TensorDataset(x, y), 4, shuffle=True, collate_fn=task.collate)
    target = DataLoader(list(x + 0.5), 4, shuffle=True, collate_fn=task.collate)
    test = DataLoader(TensorDataset(x + 0.5, y), 8, shuffle=True, collate_fn=task.collate)
    return source, target, test


def adaptation_loop(task, source, target, hooks=(), seed=0) -> mic.AdaptationLoop:
    torch.manual_seed(seed)
    model = regressor()
    optimizer = torch.optim.SGD(model.parameters(), 0.1)
    return mic.AdaptationLoop(
        task, model, mic.source_only(), optimizer, source, target, ITERATIONS, hooks=hooks
    )


def stopped_before_training(task, match: str, interval: int = 0) -> str:
    """Run ``task`` with an Evaluation hook whose first evaluation would come only at the end;
    assert it stops with a ConfigError before the first iteration; return the message."""
    source, target, test = loaders(task)
    evaluation = mic.Evaluation(task, test, interval=interval, models="student")
    loop = adaptation_loop(task, source, target, hooks=[evaluation])
    with pytest.raises(ConfigError, match=match) as error:
        loop.run()
    assert loop.step == 0  # no iteration ran
    assert evaluation.history == []
    return str(error.value)


# ---------------------------------------------------------------- each broken metric, at a run
@pytest.mark.parametrize("interval", [0, ITERATIONS])
def test_a_metric_returned_as_a_class_stops_the_run_before_training(interval):
    message = stopped_before_training(
        ReturnsTheClass(),
        r"ReturnsTheClass\.metric\(\) returned the class MeanSquaredError,",
        interval,
    )
    assert "return a fresh instance, MeanSquaredError(...)" in message
    assert "`return MeanSquaredError()`, not `return MeanSquaredError`" in message
    assert "ReturnsTheClass.primary_metric ('mse')" in message


def test_a_metric_returned_as_a_plain_function_stops_the_run_before_training():
    message = stopped_before_training(
        ReturnsAFunction(),
        r"ReturnsAFunction\.metric\(\) returned the function 'mse', which has no update and "
        r"no compute method",
    )
    assert "must return a fresh accumulator object with update(prediction, targets)" in message
    assert "torchmetrics Metric such as MeanSquaredError()" in message
    assert "ReturnsAFunction.primary_metric ('mse')" in message


def test_a_primary_metric_that_compute_does_not_return_stops_the_run_before_training():
    # the message of primary_value, unchanged, but before the first iteration
    message = stopped_before_training(
        ComputesAnotherName(),
        r"ComputesAnotherName\.primary_metric is 'mse', but ComputesAnotherName\.metric\(\) "
        r"computes no score of that name \(its compute\(\) returns 'error'\)",
    )
    assert "Set primary_metric to the key of the score that ranks checkpoints" in message


@pytest.mark.parametrize(
    ("value", "kind"), [(None, "NoneType"), ("n/a", "str"), ([0.5, 0.25], "list")]
)
def test_a_primary_score_that_is_not_a_number_stops_the_run_before_training(value, kind):
    message = stopped_before_training(
        ComputesNotANumber(value),
        rf"ComputesNotANumber\.metric\(\) computes its primary metric 'mse' as a {kind} "
        rf"\({re.escape(repr(value))}\), not a number",
    )
    assert "let compute() return the primary score as a float or a one-element tensor" in message
    assert "or set primary_metric to the key of such a score" in message


def test_without_a_labelled_loader_what_metric_returns_is_checked_before_training():
    task = ReturnsTheClass()
    source, target, _ = loaders(task)
    validation = LabelFreeValidation(["masked_agreement"], target, batches=1)
    evaluation = mic.Evaluation(task, None, models="student", validation=validation)
    loop = adaptation_loop(task, source, target, hooks=[evaluation])
    with pytest.raises(ConfigError, match=r"ReturnsTheClass\.metric\(\) returned the class"):
        loop.run()
    assert loop.step == 0


# ---------------------------------------------------------------- fresh_metric, primary_score
def test_fresh_metric_refuses_a_class_a_function_and_none_and_takes_an_instance():
    with pytest.raises(ConfigError, match=r"returned the class MeanSquaredError, not an instance"):
        fresh_metric(ReturnsTheClass(), "cpu")
    with pytest.raises(ConfigError, match=r"returned the function 'mse', which has no update"):
        fresh_metric(ReturnsAFunction(), "cpu")

    class ReturnsNothing(Regression):
        def metric(self):
            pass

    with pytest.raises(ConfigError, match=r"returned None \(does it lack a return statement"):
        fresh_metric(ReturnsNothing(), "cpu")

    class UpdateOnly:
        def update(self, prediction, targets) -> None:
            pass

    class ReturnsUpdateOnly(Regression):
        def metric(self):
            return UpdateOnly()

    with pytest.raises(ConfigError, match=r"returned a UpdateOnly object, which has no compute "):
        fresh_metric(ReturnsUpdateOnly(), "cpu")
    from torchmetrics import MeanSquaredError

    assert isinstance(fresh_metric(Regression(), "cpu"), MeanSquaredError)
    assert isinstance(fresh_metric(ComputesNotANumber(1.0), "cpu"), Fixed)


def test_primary_score_refuses_what_is_not_a_number_and_keeps_nan():
    task = Regression()
    for value in (None, "n/a", "0.5", [0.5, 0.25], {"a": 1.0}):
        with pytest.raises(ConfigError, match=r"Regression\.metric\(\) computes its primary"):
            primary_score(task, {"mse": value})
    with pytest.raises(ConfigError, match=r"as a str \('n/a'\), not a number"):
        primary_score(task, "n/a")  # one scalar, not a dict
    long = primary_score.__name__ * 20
    with pytest.raises(ConfigError, match=r"as a str \('primary_score.*\.\.\.\), not a number"):
        primary_score(task, {"mse": long})  # a long value is cut short
    assert primary_score(task, {"mse": torch.tensor(0.25)}) == 0.25
    assert primary_score(task, torch.tensor([0.5])) == 0.5
    assert primary_score(task, {"mse": 1}) == 1.0
    assert math.isnan(primary_score(task, {"mse": torch.tensor(float("nan"))}))  # all ignored
    with pytest.raises(ConfigError, match=r"primary_metric is 'mse', but"):  # unchanged
        primary_score(task, {"error": 0.5})


# ---------------------------------------------------------------- training left unchanged
def test_the_check_leaves_training_bitwise_unchanged():
    task = Regression()
    source, target, _ = loaders(task)
    plain = adaptation_loop(task, source, target)
    plain.run()
    source, target, test = loaders(task)
    evaluation = mic.Evaluation(task, test, interval=ITERATIONS, models="student")
    checked = adaptation_loop(task, source, target, hooks=[evaluation])
    checked.run()
    assert [r["step"] for r in evaluation.history] == [ITERATIONS]  # scored at the end only
    assert math.isfinite(evaluation.history[0]["eval/student/mse"])
    ours, theirs = plain.student.state_dict(), checked.student.state_dict()
    assert ours.keys() == theirs.keys()
    for name, tensor in ours.items():
        assert torch.equal(tensor, theirs[name]), name


def test_the_check_scores_without_touching_the_student_or_the_random_generators():
    task = Regression()
    source, target, test = loaders(task)
    evaluation = mic.Evaluation(task, test, models="student")
    loop = adaptation_loop(task, source, target, hooks=[evaluation])
    loop.student.train()
    with torch.no_grad():  # running statistics that are not the defaults
        loop.student[1].running_mean.fill_(0.3)
        loop.student[1].running_var.fill_(2.0)
    before = {k: v.clone() for k, v in loop.student.state_dict().items()}
    torch.manual_seed(5)
    evaluation.before_run(loop)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(3), after)  # no global random draw left behind
    assert loop.student.training
    assert all(p.grad is None for p in loop.student.parameters())
    for name, tensor in loop.student.state_dict().items():  # BatchNorm statistics included
        assert torch.equal(tensor, before[name]), name
    assert evaluation.history == []  # a check, not an evaluation record


def test_evaluations_during_training_leave_training_bitwise_unchanged():
    """A test DataLoader without a generator draws its seed from the global generator each
    time it is passed over: evaluations every iteration must not change what training draws."""
    task = Regression()
    source, target, _ = loaders(task)
    plain = adaptation_loop(task, source, target)
    plain.run()
    source, target, test = loaders(task)
    evaluation = mic.Evaluation(task, test, interval=1, models="student")
    evaluated = adaptation_loop(task, source, target, hooks=[evaluation])
    evaluated.run()
    assert [r["step"] for r in evaluation.history] == list(range(1, ITERATIONS + 1))
    for name, tensor in plain.student.state_dict().items():
        assert torch.equal(tensor, evaluated.student.state_dict()[name]), name


class NeedsTwoSamples(Regression):
    """R2: a metric that cannot score a batch of one sample (torchmetrics raises)."""

    higher_is_better = True
    in_percent = False  # R2 is no share: shown as it is
    primary_metric = "r2"

    def metric(self):
        from torchmetrics import MetricCollection, R2Score

        return MetricCollection({"r2": R2Score()})


def test_a_metric_that_cannot_score_the_first_batch_alone_still_trains_and_scores():
    task = NeedsTwoSamples()
    source, target, _ = loaders(task)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, 8, 8, generator=g)
    test = DataLoader(TensorDataset(x, x.mean((1, 2, 3))), 1, collate_fn=task.collate)
    evaluation = mic.Evaluation(task, test, interval=0, models="student")
    loop = adaptation_loop(task, source, target, hooks=[evaluation])
    loop.run()
    assert loop.step == ITERATIONS
    assert math.isfinite(evaluation.history[-1]["eval/student/r2"])


def test_an_iterator_as_test_loader_is_refused_when_built():
    task = Regression()
    _, _, test = loaders(task)
    with pytest.raises(ConfigError, match=r"Evaluation's loader is an iterator \(generator\)"):
        mic.Evaluation(task, (b for b in test))
    with pytest.raises(ConfigError, match=r"Evaluation's adabn_loader is an iterator"):
        mic.Evaluation(task, test, adabn_loader=iter(test), adabn_batches=2)
    mic.Evaluation(task, list(test))  # a list of batches: passed over at every evaluation


@pytest.mark.parametrize("domain", ["source", "target"])
def test_an_iterator_as_training_loader_is_refused_when_the_loop_is_built(domain):
    task = Regression()
    source, target, _ = loaders(task)
    given = {"source": source, "target": target}
    given[domain] = (b for b in given[domain])
    with pytest.raises(DatasetError, match=rf"the {domain} loader is an iterator \(generator\)"):
        adaptation_loop(task, given["source"], given["target"])
    adaptation_loop(task, list(source), list(target)).run()  # lists: drawn from again and again


def test_the_console_shows_shares_in_percent_and_other_scores_as_they_are():
    from mic.training.evaluation import in_percent, shown_metric

    assert shown_metric(0.9356) == "93.56%"
    assert shown_metric(0.0123, percent=False) == "0.0123"
    assert shown_metric(0.4, percent=False) == "0.4"  # R2 inside [0, 1]: still as it is
    assert shown_metric(float("nan"), percent=False) == "nan"
    assert not in_percent(Regression())  # lower is better: as it is
    assert not in_percent(NeedsTwoSamples())  # R2 sets in_percent = False
    assert in_percent(mic.tasks.classification.ClassificationTask(3))


class PredictsATuple(Regression):
    """A bug in predict (not in the metric): found before training, as before."""

    def predict(self, model, images):
        return model(images).squeeze(1), None


def test_an_error_in_predict_is_not_taken_for_a_metric_that_needs_more_samples():
    task = PredictsATuple()
    source, target, test = loaders(task)
    loop = adaptation_loop(task, source, target, hooks=[mic.Evaluation(task, test)])
    with pytest.raises((TypeError, AttributeError, ValueError, RuntimeError)):
        loop.run()
    assert loop.step == 0  # found before training, not after it


class Restarting:
    """A loader of one's own whose ``__iter__`` restarts and returns itself (DALI-style)."""

    def __init__(self, batches) -> None:
        self.batches, self.i = list(batches), 0

    def __iter__(self):
        self.i = 0
        return self

    def __next__(self):
        if self.i == len(self.batches):
            raise StopIteration
        self.i += 1
        return self.batches[self.i - 1]


def test_a_loader_that_restarts_its_own_iteration_is_welcome():
    task = Regression()
    _, _, test = loaders(task)
    evaluation = mic.Evaluation(task, Restarting(test), interval=1, models="student")
    source, target, _ = loaders(task)
    adaptation_loop(task, source, target, hooks=[evaluation]).run()
    assert len(evaluation.history) == ITERATIONS


class CachedMetric(Regression):
    """``metric()`` that hands out one cached object instead of a fresh one each call."""

    def metric(self):
        if not hasattr(self, "_metric"):
            self._metric = super().metric()
        return self._metric


def test_a_metric_handed_out_again_scores_each_evaluation_on_its_own_batches():
    fresh, cached = Regression(), CachedMetric()
    _, _, test = loaders(fresh)
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(regressor().eval())
    with torch.no_grad():
        expected = [mic.evaluate(fresh, m, test)["mse"] for m in models]
        scores = [mic.evaluate(cached, m, test)["mse"] for m in models]
    assert len(set(expected)) == 3
    assert scores == pytest.approx(expected)


def test_a_metric_ranked_the_other_way_than_the_task_says_is_refused():
    class HigherMseIsBetter(Regression):
        higher_is_better = True

    with pytest.raises(ConfigError, match="set higher_is_better = False in HigherMseIsBetter"):
        fresh_metric(HigherMseIsBetter(), "cpu")

    class InACollection(HigherMseIsBetter):
        def metric(self):
            from torchmetrics import MeanSquaredError, MetricCollection

            return MetricCollection({"mse": MeanSquaredError()})

    with pytest.raises(ConfigError, match="set higher_is_better = False in InACollection"):
        fresh_metric(InACollection(), "cpu")

    class Said(Regression):
        higher_is_better = "False"

    with pytest.raises(ConfigError, match="must be True or False, got 'False'"):
        fresh_metric(Said(), "cpu")
    fresh_metric(Regression(), "cpu")  # MeanSquaredError, lower is better: as the task says


class FailsAtSecondScoring(Regression):
    """A metric that fails at its second evaluation (mse grows past a threshold, say)."""

    def __init__(self) -> None:
        self.scorings = 0

    def metric(self):
        metric = super().metric()
        compute = metric.compute

        def failing():
            self.scorings += 1
            if self.scorings == 3:  # the first test batch before training, then 2 evaluations
                raise RuntimeError("the metric failed")
            return compute()

        metric.compute = failing
        return metric


def test_an_evaluation_that_failed_is_made_up_first_when_the_run_resumes(tmp_path):
    from mic.resume import resume

    def run(task, folder, start_from=None, iterations=4):
        source, target, test = loaders(Regression())
        evaluation = mic.Evaluation(task, test, interval=1, models="student")
        checkpointer = mic.Checkpointer(folder, interval=1, stateful={"evaluation": evaluation})
        loop = adaptation_loop(
            task, source, target, hooks=[evaluation, checkpointer, mic.OwedEvaluation(evaluation)]
        )
        loop.iterations = iterations
        if start_from is not None:
            resume(loop, start_from, checkpointer=checkpointer, announce=False)
        return loop, evaluation

    reference, scored = run(Regression(), tmp_path / "reference")
    reference.run()
    loop, evaluation = run(FailsAtSecondScoring(), tmp_path / "failed")
    with pytest.raises(RuntimeError, match="the metric failed"):
        loop.run()
    assert [r["step"] for r in evaluation.history] == [1]
    assert (tmp_path / "failed" / "iter_00000002.pt").is_file()  # saved before the error
    resumed, again = run(
        Regression(), tmp_path / "failed", tmp_path / "failed" / "iter_00000002.pt"
    )
    resumed.run()
    assert [r["step"] for r in again.history] == [1, 2, 3, 4]
    # the made-up evaluation scores the weights of iteration 2 (plain shuffled loaders do not
    # resume their order, so the later ones differ)
    assert again.history[1]["eval/student/mse"] == pytest.approx(
        scored.history[1]["eval/student/mse"]
    )


class Batches:
    """A loader of one's own that gives batches by index (no ``__iter__``)."""

    def __init__(self, loader):
        self.batches = list(loader)

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return self.batches[index]


def test_a_dataset_where_a_loader_of_batches_goes_is_named():
    # iterated, a dataset yields samples, which were taken for batches (a shape error deep in
    # the model, or a score over the wrong units)
    task = Regression()
    source, target, test = loaders(task)
    images = TensorDataset(torch.stack(target.dataset))
    with pytest.raises(DatasetError, match=r"the source loader is a dataset \(TensorDataset\)"):
        adaptation_loop(task, source.dataset, target)
    with pytest.raises(DatasetError, match=r"evaluate's loader is a dataset \(TensorDataset\)"):
        mic.evaluate(task, nn.Linear(1, 1), test.dataset)
    with pytest.raises(ConfigError, match=r"Evaluation's adabn_loader is a dataset"):
        mic.Evaluation(task, test, adabn_loader=images, adabn_batches=2)
    with pytest.raises(ConfigError, match=r"LabelFreeValidation's loader is a dataset"):
        LabelFreeValidation(["entropy"], images)
    with pytest.raises(ConfigError, match=r"LabelFreeValidation's loader is an iterator"):
        LabelFreeValidation(["entropy"], iter(target))

    class Samples:  # a dataset of a class of its own, as the bundled ones (no torch Dataset)
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return source.dataset[index]

    with pytest.raises(ConfigError, match=r"the source loader \(Samples\) is not iterable: a da"):
        adaptation_loop(task, Samples(), target)  # (it was: "must be a DataLoader or a list")
    mic.evaluate(task, regressor(), Batches(test))  # batches by index: still taken there


class PredictsInTrainMode(Regression):
    """``model.train()`` in predict: scored with the batch's statistics and wrote the test
    set's into the model's BatchNorm, silently."""

    def predict(self, model, images):
        model.train()
        return super().predict(model, images)


class RestoresTheMode(Regression):
    """A predict that changes modes and restores them is welcome."""

    def predict(self, model, images):
        was = model.training
        try:
            return super().predict(model.train(), images)
        finally:
            model.train(was)


def test_a_predict_that_switches_the_model_s_mode_stops_the_run_before_training():
    message = stopped_before_training(
        PredictsInTrainMode(), r"PredictsInTrainMode\.predict left \d module\(s\) of the model"
    )
    assert "(the model, 0, 1)" in message
    *_, test = loaders(Regression())
    model = regressor()
    with pytest.raises(ConfigError, match=r"predict left .* in another mode than it found"):
        mic.evaluate(PredictsInTrainMode(), model, test)  # from Python too
    assert "mse" in mic.evaluate(RestoresTheMode(), model, test)

    class MakesAModule(Regression):  # a module made on first use is not judged
        def predict(self, model, images):
            model.cache = nn.Identity()
            return super().predict(model, images)

    assert "mse" in mic.evaluate(MakesAModule(), regressor(), test)


def test_a_task_that_sets_no_num_classes_is_named_where_its_datasets_are_checked():
    class NoClassCount(mic.Task):  # Regression's methods, without num_classes
        primary_metric = "mse"
        loss, predict = Regression.loss, Regression.predict
        pseudo_label, metric = Regression.pseudo_label, Regression.metric

    task = NoClassCount()
    *_, test = loaders(task)
    with pytest.raises(ConfigError, match=r"^NoClassCount\.num_classes is not set: set it \(1 "):
        mic.Evaluation(task, test)  # it checks its test set (an AttributeError before)
    task.num_classes = "3"
    with pytest.raises(ConfigError, match=r"NoClassCount\.num_classes is '3': set it"):
        task.check_datasets({"test": None})
    task.num_classes = 3
    task.check_datasets({"test": None})  # (nothing to compare)
    task.num_classes = torch.tensor(3).numpy()[()]  # NumPy's int64, as len(np.unique(y)) gives
    task.check_datasets({"test": None})
