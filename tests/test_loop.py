import json
from typing import ClassVar

import pytest
import torch

import mic
from mic import (
    AdaptationLoop,
    BlockMasker,
    Checkpointer,
    ConfigError,
    DatasetError,
    EMATeacher,
    EndlessLoader,
    Evaluation,
    Hook,
    LossTerm,
    MaskedImageConsistency,
    MetricsLogger,
    ProgressBar,
    PseudoLabels,
    StrongAugmentation,
    UDAMethod,
    load_checkpoint,
    mean_teacher,
    source_only,
)

from .helpers import tiny_loaders, tiny_model


def _aug():
    return StrongAugmentation(mean=[0.5] * 3, std=[0.5] * 3)  # the tiny loaders' images: randn


def _mic():
    return MaskedImageConsistency(BlockMasker(block_size=2, ratio=0.7, augmentation=_aug()))


METHODS = {
    "source_only": lambda: source_only(),
    "source_only+mic": lambda: source_only().with_terms(mic=_mic()),
    "mean_teacher": lambda: mean_teacher(_aug()),
    "mean_teacher+mic": lambda: mean_teacher(_aug()).with_terms(mic=_mic()),
}


def make_loop(method, iterations=3, lr=0.01, seed=0, hooks=(), **kwargs):
    task, source, target, test = tiny_loaders(seed=seed)
    student = tiny_model(seed=seed)
    teacher = EMATeacher(student, alpha=0.9) if method.uses_pseudo_labels else None
    params = list(student.parameters()) + list(method.parameters())
    opt = torch.optim.SGD(params, lr=lr)
    loop = AdaptationLoop(
        task,
        student,
        method,
        opt,
        source,
        target,
        iterations,
        teacher=teacher,
        hooks=hooks,
        seed=seed,
        **kwargs,
    )
    return loop, test


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_with_and_without_mic_trains(name):
    loop, _ = make_loop(METHODS[name](), iterations=3)
    before = [p.clone() for p in loop.student.parameters()]
    losses = None
    while loop.step < loop.iterations:
        losses = loop.train_step()
        loop.step += 1
    assert set(losses) == set(dict(loop.method.terms.items()))
    assert all(torch.isfinite(v) for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, loop.student.parameters()))
    if loop.teacher is not None:
        t = list(loop.teacher.model.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(t, loop.student.parameters()))


def test_backward_per_branch_accumulates_the_gradient_of_the_sum():
    method = mean_teacher(_aug()).with_terms(mic=_mic())
    loop, _ = make_loop(method, lr=0.0)
    loop.train_step()
    per_branch = [p.grad.clone() for p in loop.student.parameters()]

    ref, _ = make_loop(mean_teacher(_aug()).with_terms(mic=_mic()), lr=0.0)
    ref.teacher.update(ref.student, 0)
    ctx = ref.context(0)
    total = sum(term(ctx) for _, term in ref.method)
    total.backward()
    for a, p in zip(per_branch, ref.student.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_teacher_predicts_once_per_iteration_and_terms_share_it():
    method = mean_teacher(_aug()).with_terms(mic=_mic())
    loop, _ = make_loop(method)
    calls = []
    original = loop.task.predict
    loop.task.predict = lambda model, images: calls.append(1) or original(model, images)
    loop.train_step()
    assert len(calls) == 1


def test_teacher_update_happens_first_from_the_previous_step_weights():
    loop, _ = make_loop(mean_teacher(), lr=0.1)
    s0 = [p.clone() for p in loop.student.parameters()]
    loop.train_step()
    loop.step = 1
    t0 = [p.clone() for p in loop.teacher.model.parameters()]
    for a, b in zip(t0, s0):
        torch.testing.assert_close(a, b)  # step 0 copied the initial student
    s1 = [p.clone() for p in loop.student.parameters()]
    loop.train_step()
    for t, a, b in zip(loop.teacher.model.parameters(), s0, s1):
        torch.testing.assert_close(t, 0.5 * a + 0.5 * b)  # a = min(1 - 1/2, 0.9)


def test_adaptation_start_runs_source_terms_only_before_it():
    loop, _ = make_loop(mean_teacher().with_terms(mic=_mic()), iterations=4, adaptation_start=2)
    seen = []
    while loop.step < loop.iterations:
        seen.append(sorted(loop.train_step()))
        loop.step += 1
    assert seen[:2] == [["source"], ["source"]]
    assert seen[2] == ["mic", "self_training", "source"]


def test_pseudo_labels_without_teacher_is_a_config_error():
    task, source, target, _ = tiny_loaders()
    student = tiny_model()
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="teacher"):
        AdaptationLoop(task, student, mean_teacher(), opt, source, target, 2)


@pytest.mark.parametrize("kwargs", [{"iterations": 0}, {"adaptation_start": 9}])
def test_bad_loop_settings(kwargs):
    kwargs = {"iterations": 3, **kwargs}
    with pytest.raises(ConfigError):
        make_loop(source_only(), **kwargs)


class _Returns(LossTerm):
    """A source term that returns what it is given (``make``: the context's source loss ->
    the term's output)."""

    uses_target = False

    def __init__(self, make, weight=1.0):
        super().__init__(weight)
        self.make = make

    def forward(self, ctx):
        return self.make(ctx.task.loss(ctx.student, ctx.source_images, ctx.source_targets))


def _one_step(term):
    loop, _ = make_loop(UDAMethod({"custom": term}), lr=1.0)
    before = [p.detach().clone() for p in loop.student.parameters()]
    losses = loop.train_step()
    return losses, [p - b for p, b in zip(loop.student.parameters(), before)]


def test_the_loop_applies_every_term_weight_to_its_loss_and_parts():
    one_losses, one = _one_step(_Returns(lambda loss: loss))
    for weight, make in [(2.0, lambda loss: loss), (2.0, lambda loss: {"a": loss, "b": 0 * loss})]:
        losses, steps = _one_step(_Returns(make, weight))
        name = "custom" if "custom" in losses else "a"
        torch.testing.assert_close(losses[name], 2 * one_losses["custom"])  # logged weighted
        for a, b in zip(steps, one):
            torch.testing.assert_close(a, 2 * b)
    with pytest.raises(ConfigError, match="every loss term of the method has weight 0"):
        _one_step(_Returns(lambda loss: loss, weight=0.0))  # nothing would train


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda loss: loss.expand(4),
            r"'custom' \(or the Task.loss it calls\) returned 'custom' as a tensor of shape "
            r"\(4,\); a term returns a",
        ),
        (lambda loss: None, r"returned 'custom' as <class 'NoneType'>"),
        (lambda loss: {"part": "x"}, r"returned 'part' as <class 'str'>"),
        (lambda loss: (loss, 1), r"returned 'custom' as <class 'tuple'>"),
    ],
)
def test_a_term_that_returns_no_scalar_is_named(make, match):
    with pytest.raises(ConfigError, match=match):
        _one_step(_Returns(make))


class _ReadsPseudoLabels(LossTerm):
    """A term that reads the pseudo-labels but forgot ``uses_pseudo_labels = True``."""

    uses_target = False

    def forward(self, ctx):
        return ctx.pseudo_labels.confidence.mean()


def test_a_term_that_reads_pseudo_labels_without_the_flag_is_named_with_the_flag():
    loop, _ = make_loop(UDAMethod({"forgot": _ReadsPseudoLabels()}))
    match = r"loss term 'forgot' reads ctx.pseudo_labels .*uses_pseudo_labels = True on its class"
    with pytest.raises(ConfigError, match=match):
        loop.train_step()


def test_a_term_name_with_a_dot_is_refused_naming_it():
    with pytest.raises(ConfigError, match=r"method term name 'a.b' must be text without '.'"):
        UDAMethod({"src": _Returns(lambda loss: loss), "a.b": _Returns(lambda loss: loss)})


@pytest.mark.parametrize("weight", [-1, float("nan"), float("inf"), "abc", None])
def test_a_negative_or_non_finite_term_weight_is_refused_as_mic_train_does(weight):
    with pytest.raises(ConfigError, match=r"_Returns\(weight=.*\): a loss weight must be a finite"):
        _Returns(lambda loss: loss, weight=weight)


def test_a_term_may_return_a_number_for_no_loss():
    losses, steps = _one_step(_Returns(lambda loss: 0.0))
    assert losses == {"custom": torch.tensor(0.0)} and all(not s.any() for s in steps)


def test_iterations_before_adaptation_start_without_a_term_to_run_are_refused():
    term = _Returns(lambda loss: loss)
    term.uses_target = True  # forgotten uses_target = False: nothing would run before step 2
    with pytest.raises(ConfigError, match=r"no term of the method runs before adaptation_start=2"):
        make_loop(UDAMethod({"custom": term}), adaptation_start=2)
    make_loop(UDAMethod({"custom": term}), adaptation_start=0)
    # the source loss switched off (weight 0) leaves the same iterations with nothing to run
    off = source_only().with_terms(mic=_mic())
    off.terms["source"].weight = 0.0
    with pytest.raises(ConfigError, match=r"uses_target = True or weight 0"):
        make_loop(off, adaptation_start=2)


def test_a_teacher_that_is_the_student_is_refused():
    """A teacher holding the student itself (a FixMatch-style self-teacher) put the student in
    eval mode at every prediction: MIC and every later term trained without dropout and
    with BatchNorm's running statistics, silently."""

    class SelfTeacher(mic.Teacher):
        def __init__(self, student):
            super().__init__()
            self.model = student

        def update(self, student, step):
            pass

    task, source, target, _ = tiny_loaders()
    student = tiny_model()
    method = source_only().with_terms(mic=_mic())
    opt = torch.optim.SGD(student.parameters(), lr=0.01)
    with pytest.raises(ConfigError, match=r"the teacher shares \d+ parameters with the student"):
        AdaptationLoop(task, student, method, opt, source, target, 2, teacher=SelfTeacher(student))
    AdaptationLoop(task, student, method, opt, source, target, 2, teacher=EMATeacher(student, 0))


@pytest.mark.parametrize(
    "change, said",
    [
        (lambda x: x[:, :, :4, :4], "(4, 3, 4, 4)"),  # global pooling trained on it silently
        (lambda x: x.double(), "torch.float64"),  # torch's 'Input type (double) and bias type'
        (lambda x: x[:2], "(2, 3, 8, 8)"),  # half the batch: torch's batch-size mismatch
        (lambda x: [*x], None),  # a list for a tensor: ConsistencyLoss.loss names the kind
    ],
)
def test_a_masker_that_returns_other_images_than_it_was_given_is_refused(change, said):
    class Changes(mic.Masker):
        def forward(self, images, rng=None):
            return change(images)

    method = source_only().with_terms(mic=MaskedImageConsistency(Changes(), weighting="none"))
    loop, _ = make_loop(method, iterations=1)
    other = "returned images of another shape, dtype or device than it was given"
    with pytest.raises(ConfigError, match=other if said else "returned a list for images") as e:
        loop.train_step()
    assert said is None or said in str(e.value)


def test_pseudo_labels_in_another_layout_than_their_labels_are_refused():
    labels = torch.zeros(4, dtype=torch.long)
    PseudoLabels(labels, torch.ones(4), valid=torch.ones(4, dtype=torch.bool))
    with pytest.raises(
        ConfigError, match=r"confidence has the layout \(4, 1\) and their labels \(4,\)"
    ):
        PseudoLabels(labels, torch.ones(4, 1))
    with pytest.raises(ConfigError, match=r"valid has the layout 3 and their labels 2"):
        PseudoLabels([{}, {}], [torch.ones(1)] * 2, valid=[torch.ones(1, dtype=torch.bool)] * 3)
    # a mask of other values than 0 and 1: a 0/255 one weighed its pseudo-labels 255 times
    said = r"valid must be a mask of 0 and 1 \(or False and True\), got torch.uint8 values up to"
    with pytest.raises(ConfigError, match=said):
        PseudoLabels(
            labels, torch.ones(4), torch.full((4,), 255, dtype=torch.uint8)
        ).check_confidence()
    with pytest.raises(ConfigError, match=r"got torch.float32 values up to 3: give mask > 0"):
        masks = [torch.ones(1, dtype=torch.bool), torch.full((1,), 3.0)]
        PseudoLabels([{}, {}], [torch.ones(1)] * 2, masks).check_confidence()
    PseudoLabels(labels, torch.ones(4), torch.tensor([1, 0, 1, 1])).check_confidence()  # 0/1
    # no tensor or list at all: a number, a dict
    with pytest.raises(ConfigError, match=r"confidence is a float, not a tensor or a list"):
        PseudoLabels(labels, 0.9)
    with pytest.raises(ConfigError, match=r"valid is a dict, not a tensor or a list"):
        PseudoLabels(labels, torch.ones(4), valid={"a": torch.ones(4)})
    # a tensor for list labels, a list for tensor labels: one per image each (the task reads it)
    PseudoLabels([labels[i : i + 1] for i in range(4)], torch.ones(4))
    PseudoLabels(labels, list(torch.ones(4)))
    PseudoLabels([{}] * 2, (torch.ones(1), torch.ones(1)))
    with pytest.raises(ConfigError, match=r"confidence has the layout 3 and their labels \(4,\)"):
        PseudoLabels(labels, list(torch.ones(3)))
    with pytest.raises(ConfigError, match=r"confidence has the layout \(3,\) and their labels 4"):
        PseudoLabels([labels[i : i + 1] for i in range(4)], torch.ones(3))
    PseudoLabels({"value": torch.zeros(4)}, torch.ones(4))
    PseudoLabels((labels, torch.zeros(4, 2)), (torch.ones(4), torch.ones(4)))


def test_a_thresholded_confidence_is_told_to_go_in_valid():
    labels = torch.zeros(4, dtype=torch.long)
    said = r"got a bool mask; a mask of the elements that may carry weight is PseudoLabels\("
    said += r"\.\.\., valid=mask\)"
    with pytest.raises(ConfigError, match=said):
        PseudoLabels(labels, torch.rand(4) > 0.5).check_confidence()


def test_a_tuple_of_confidences_is_checked_like_a_list():
    PseudoLabels(torch.zeros(2), (torch.ones(1), torch.ones(1))).check_confidence()
    with pytest.raises(ConfigError, match=r"got torch.float32 in \[2, 2\]"):
        PseudoLabels(torch.zeros(2), (torch.ones(1), torch.full((1,), 2.0))).check_confidence()
    with pytest.raises(ConfigError, match=r"confidence holds a float, not tensors"):
        PseudoLabels([0, 1], [0.5, 0.9]).check_confidence()


def test_pseudo_label_confidence_with_nan_is_named_with_its_count():
    confidence = torch.tensor([0.5, float("nan"), 0.9])
    with pytest.raises(
        ConfigError, match=r"got 1 NaN of 3; NaN or Inf in the target images or the teacher"
    ):
        PseudoLabels(torch.zeros(3, dtype=torch.long), confidence).check_confidence()


def test_forever_cycles_epochs_and_reports_empty_loaders():
    class Sampler(list):
        epochs: ClassVar[list[int]] = []

        def set_epoch(self, e):
            self.epochs.append(e)

    class Loader:
        sampler = Sampler()

        def __iter__(self):
            return iter([1, 2])

    it = EndlessLoader(Loader(), "source")
    assert [next(it) for _ in range(5)] == [1, 2, 1, 2, 1]
    assert Loader.sampler.epochs == [0, 1, 2]
    with pytest.raises(DatasetError, match="target loader yields no batch"):
        next(EndlessLoader([], "target"))


def test_state_dict_round_trip_continues_identically():
    a, _ = make_loop(mean_teacher().with_terms(mic=_mic()), iterations=4)
    for _ in range(2):
        a.train_step()
        a.step += 1
    state = a.state_dict()
    b, _ = make_loop(mean_teacher().with_terms(mic=_mic()), iterations=4, seed=0)
    b.load_state_dict(state)
    assert b.step == 2
    for x, y in zip(a.student.state_dict().values(), b.student.state_dict().values()):
        assert torch.equal(x, y)
    for loop in (a, b):  # the same batches and the same masks: the streams need no state
        for _ in range(2):
            loop.train_step()
            loop.step += 1
    for x, y in zip(a.student.state_dict().values(), b.student.state_dict().values()):
        assert torch.equal(x, y)


def test_hooks_log_evaluate_and_checkpoint(tmp_path):
    task, _, _, test = tiny_loaders()
    evaluation = Evaluation(task, test, interval=2, models=["student", "teacher"])
    hooks = [
        evaluation,
        MetricsLogger(tmp_path, interval=1, tensorboard=True),
        Checkpointer(tmp_path / "ckpt", interval=2, keep=1, best_metric="eval/student/accuracy"),
    ]
    loop, _ = make_loop(mean_teacher().with_terms(mic=_mic()), iterations=5, hooks=hooks)
    loop.run()
    assert [r["step"] for r in evaluation.history] == [2, 4, 5]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    loss_steps = [r["step"] for r in records if "loss/mic" in r]
    assert loss_steps == [1, 2, 3, 4, 5]
    evals = [r for r in records if "eval/teacher/accuracy" in r]
    assert len(evals) == 3 and 0.0 <= evals[-1]["eval/student/accuracy"] <= 1.0
    assert any((tmp_path / "tensorboard").iterdir())
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("iter_*.pt")) == ["iter_00000005.pt"]
    state = load_checkpoint(tmp_path / "ckpt" / "iter_00000005.pt")
    assert state["step"] == 5 and "teacher" in state and "optimizer" in state
    assert (tmp_path / "ckpt" / "best.pt").exists()


def test_a_bad_label_names_the_loader_it_came_from():
    """A label out of range reads the same from every loader's collate: a note says which."""
    from torch.utils.data import DataLoader, TensorDataset

    task, source, target, test = tiny_loaders()
    bad = TensorDataset(torch.randn(8, 3, 8, 8), torch.full((8,), 5))
    for name in ("source", "test"):
        loader = DataLoader(bad, batch_size=4, drop_last=True, collate_fn=task.collate)
        loaders = {"source": source, "test": test, name: loader}
        student = tiny_model()
        hooks = [Evaluation(task, loaders["test"], 1)]
        opt = torch.optim.SGD(student.parameters(), lr=0.01)
        loop = AdaptationLoop(
            task, student, source_only(), opt, loaders["source"], target, 1, hooks=hooks
        )
        with pytest.raises(DatasetError, match="label 5 is outside") as raised:
            loop.run()
        said = {"source": "of the source loader", "test": "of the test loader"}[name]
        assert any(said in note for note in raised.value.__notes__)


def test_a_callers_own_log_file_gets_nothing_from_a_python_run(tmp_path):
    """mic-train writes its console lines to the run's log; from Python, a research script's
    own log file on the root logger is its own (the scores once went into it, past its
    WARNING level)."""
    import logging

    handler = logging.FileHandler(tmp_path / "mine.log")
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        task, _, _, test = tiny_loaders()
        hooks = [Evaluation(task, test, 1), ProgressBar(enabled=False)]  # (the bar says scores)
        loop, _ = make_loop(mean_teacher(), iterations=2, hooks=hooks)
        loop.run()
    finally:
        root.removeHandler(handler)
        handler.close()
    assert (tmp_path / "mine.log").read_text() == ""


def test_the_logged_learning_rate_is_the_one_the_iteration_trained_with(tmp_path):
    """The scheduler steps inside an iteration: lr read after it was the next iteration's (a
    poly run ended logging lr 0.0, and the first rate was never logged). A line of
    metrics.jsonl cut off by a crash was kept on resume."""
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "x": 1}\n{"step": 3, "loss/')
    loop, _ = make_loop(mean_teacher(), iterations=4, hooks=[MetricsLogger(tmp_path, 1, False)])
    loop.scheduler = torch.optim.lr_scheduler.LambdaLR(loop.optimizer, lambda i: 1 - i / 4)
    loop.run()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is JSON again
    logged = [r["lr"] for r in records if "lr" in r]
    assert logged == pytest.approx([0.01, 0.0075, 0.005, 0.0025])


class _Reports(LossTerm):
    """A source term that reports how often it ran before (0, 1, 2: the micro-batch)."""

    uses_target = False
    calls = 0

    def forward(self, ctx):
        self.statistics = {"micro": torch.tensor(float(self.calls)), "note": "text"}
        self.calls += 1
        return ctx.task.loss(ctx.student, ctx.source_images, ctx.source_targets)


def test_term_statistics_are_averaged_over_micro_batches_as_the_losses_are():
    """With accumulate=2, q and confidence were the last micro-batch's alone."""
    term = _Reports()
    loop, _ = make_loop(UDAMethod({"source": term}), iterations=1, accumulate=3)
    loop.train_step()
    assert term.statistics["micro"].item() == 1.0 and term.statistics["note"] == "text"
    one, _ = make_loop(UDAMethod({"source": _Reports()}), iterations=1)
    one.train_step()  # one micro-batch: what the term set, as it was
    assert one.method.terms["source"].statistics["note"] == "text"


def test_a_term_named_as_a_section_of_the_metrics_record_is_refused(tmp_path):
    """A term named 'loss' reporting a statistic 'source' logged it as loss/source, over the
    source loss, without a word."""
    from mic.training.hooks import MetricsLogger

    loop, _ = make_loop(mean_teacher().with_terms(loss=_Reports()), iterations=1)
    said = r"^loss term 'loss': its statistics are logged as loss/<name>, where the metrics "
    with pytest.raises(ConfigError, match=said + r"record keeps the losses \(loss/<term>\)"):
        MetricsLogger(tmp_path).before_run(loop)
    assert not (tmp_path / "metrics.jsonl").exists()
    MetricsLogger(tmp_path).before_run(make_loop(mean_teacher(), iterations=1)[0])


class _Noisy(LossTerm):
    """A target term that adds noise to the batch's images in place."""

    def forward(self, ctx):
        ctx.target_images.add_(0.1)
        return ctx.task.loss(ctx.student, ctx.source_images, ctx.source_targets)


def test_a_term_that_changes_the_batch_s_images_in_place_is_named():
    """The teacher's pseudo-labels and MIC read the noised images without a word (MIC's
    confidence fell from 0.43 to 0.23 in a user's run)."""
    method = mean_teacher().with_terms(noise=_Noisy())
    loop, _ = make_loop(method, iterations=1)
    with pytest.raises(ConfigError, match=r"loss term 'noise' changed the batch's images or"):
        loop.train_step()


class _PeeksAtTarget(LossTerm):
    """A term that says it needs no target data, and reads it."""

    uses_target = False

    def forward(self, ctx):
        return ctx.task.loss(ctx.student, ctx.source_images, ctx.source_targets) + 0 * (
            ctx.target_images.mean()
        )


def test_a_term_that_reads_the_target_before_adaptation_start_is_named():
    """It adapted in the source-only iterations: the score 'before adaptation' was an adapted
    model's (78.0 against 75.8)."""
    loop, _ = make_loop(UDAMethod({"peek": _PeeksAtTarget()}), iterations=3, adaptation_start=1)
    with pytest.raises(ConfigError, match=r"'peek' reads the target images \(or the pseudo-l"):
        loop.train_step()
    loop.step = 1  # from adaptation_start it may
    loop.train_step()


class _Replaces(LossTerm):
    """A term that replaces a part of the batch with a new tensor (or changes it in place)."""

    def __init__(self, change):
        super().__init__()
        self.change = change

    def forward(self, ctx):
        self.change(ctx)
        return ctx.task.loss(ctx.student, ctx.source_images, ctx.source_targets)


def _flip_target(ctx):
    ctx.target_images = ctx.target_images.flip(-1)


def _flip_source(ctx):
    ctx.source_images = ctx.source_images.flip(-1)


def _zero_labels(ctx):
    ctx.source_targets.zero_()


@pytest.mark.parametrize(
    "change, said",
    [
        (_flip_target, r"loss term 'x' replaced ctx\.target_images: the teacher's pseudo-labels"),
        (_flip_source, r"loss term 'x' changed the batch's images or the source's labels"),
        (_zero_labels, r"loss term 'x' changed the batch's images or the source's labels"),
    ],
)
def test_a_term_that_replaces_the_batch_or_changes_the_labels_in_place_is_named(change, said):
    """A term's new target images went to the teacher, which predicted on them when a later
    term first asked (MIC's pseudo-labels of images of mean 7, silently); new source images
    and source labels zeroed in place went to the source loss after it."""
    loop, _ = make_loop(mean_teacher().with_terms(x=_Replaces(change)), iterations=1)
    with pytest.raises(ConfigError, match=said):
        loop.train_step()


def _relabel_first_box_dict(ctx):
    ctx.source_targets[0]["labels"] = ctx.source_targets[0]["labels"] * 0


def test_a_term_that_gives_a_source_box_dict_new_labels_is_named():
    """Detection's source labels are a list of dicts: a new tensor put in a dict left every
    in-place counter as it was, and the terms after it trained on the new labels."""
    from tests.test_random_streams import _detection_loop

    loop = _detection_loop({"x": _Replaces(_relabel_first_box_dict)}, with_mic=False)
    with pytest.raises(ConfigError, match=r"loss term 'x' changed the batch's images or the sour"):
        loop.train_step()


class _RelabelsPseudoBoxes(LossTerm):
    uses_pseudo_labels = True

    def forward(self, ctx):
        boxes = ctx.pseudo_labels.labels[0]
        boxes["labels"] = boxes["labels"] * 0  # a new tensor in the teacher's box dict
        return ctx.task.loss(ctx.student, ctx.source_images, ctx.source_targets)


def test_pseudo_boxes_given_new_labels_by_one_term_are_refused_to_the_next():
    import mic
    from tests.test_random_streams import _detection_loop

    terms = {"x": _RelabelsPseudoBoxes(), "self_training": mic.SelfTraining(None, "none")}
    loop = _detection_loop(terms, with_mic=False)
    loop.step = loop.adaptation_start
    with pytest.raises(ConfigError, match=r"changed in place after loss term\(s\) 'x' read them"):
        loop.train_step()


class _CtrlCTwice(LossTerm):
    """A term during whose forward pass Ctrl-C is pressed twice (a long first iteration)."""

    uses_target = False

    def forward(self, ctx):
        import os
        import signal

        if ctx.step == 1:
            os.kill(os.getpid(), signal.SIGINT)  # finish the iteration, then stop
            os.kill(os.getpid(), signal.SIGINT)  # no: now
        return ctx.task.loss(ctx.student, ctx.source_images, ctx.source_targets)


def test_a_second_ctrl_c_stops_at_once_and_a_first_one_after_the_iteration():
    """A first iteration that compiled for minutes ignored every Ctrl-C after the first."""
    import signal

    from mic.training import StoppedAtOnce, TrainingGuard

    before = signal.getsignal(signal.SIGINT)
    loop, _ = make_loop(UDAMethod({"x": _CtrlCTwice()}), iterations=4, guard=TrainingGuard())
    with pytest.raises(StoppedAtOnce, match="after iteration 1, unsaved"):
        loop.run()
    assert loop.step == 1 and signal.getsignal(signal.SIGINT) is before  # handler given back
    import pickle

    again = pickle.loads(pickle.dumps(StoppedAtOnce(3)))  # (a run in a process pool)
    assert again.step == 3 and str(again) == str(StoppedAtOnce(3))


def test_a_run_ended_by_a_stop_request_trains_on_when_run_again():
    """A notebook cell run again after Ctrl-C: the stop was that run's, not the next one's."""
    from mic import Hook

    class StopAt(Hook):
        def after_step(self, loop, losses):
            if loop.step == 2 and loop.iterations == 5:
                loop.request_stop("SIGINT")

    loop, _ = make_loop(source_only(), iterations=5, hooks=[StopAt()])
    loop.run()
    assert (loop.step, loop.interrupted_by) == (2, "SIGINT")
    loop.iterations = 6
    loop.run()
    assert (loop.step, loop.interrupted_by, loop.stop_reason) == (6, None, None)
    with pytest.warns(UserWarning, match="at iteration 6 of its 6: it trains nothing; raise"):
        loop.run()  # a notebook cell run again after the end: it trained nothing, silently
    assert loop.step == 6


def test_a_state_of_another_optimiser_or_past_the_end_is_named_on_loading():
    """An Adam loop's state loaded into an SGD loop took SGD's lr from it and ended in
    KeyError: 'momentum' at the next step; a state past iterations trained nothing, silently."""
    loop, _ = make_loop(source_only(), iterations=4)
    loop.run()
    state = loop.state_dict()
    other, _ = make_loop(source_only(), iterations=4)
    other.optimizer = torch.optim.Adam(other.student.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in other.student.state_dict().items()}
    with pytest.raises(mic.CheckpointError, match="optimiser is SGD, this loop's is Adam"):
        other.load_state_dict(state)
    assert all(torch.equal(v, other.student.state_dict()[k]) for k, v in before.items())
    shorter, _ = make_loop(source_only(), iterations=3)
    shorter.load_state_dict(state)
    with pytest.warns(UserWarning, match="at iteration 4 of its 3: it trains nothing"):
        shorter.run()


def test_hooks_release_what_they_hold_when_a_run_raises(tmp_path):
    """An error that is no data error (a hook's own bug, a numerical stop) skips after_run,
    but every hook's teardown runs: the metrics file, TensorBoard's writer and the bar close."""
    from mic import Hook

    class Broken(Hook):
        def after_step(self, loop, losses):
            if loop.step == 2:
                raise RuntimeError("a bug in a hook of one's own")

    logger, bar = MetricsLogger(tmp_path, interval=1), ProgressBar(enabled=False)
    loop, _ = make_loop(source_only(), iterations=4, hooks=[bar, logger, Broken()])
    with pytest.raises(RuntimeError, match="a bug in a hook"):
        loop.run()
    assert logger._file is None and logger.writer is None and bar.bar.disable
    assert [
        json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ] == [
        1,
        2,
    ]


def test_every_hook_s_after_run_runs_and_a_hook_s_error_names_the_hook(tmp_path):
    """A logger whose after_run raised kept the checkpointer listed after it from saving the
    finished run; and a hook's error said nothing of which hook raised it."""

    class BrokenLogger(Hook):
        def after_run(self, loop):
            raise OSError("the log's disk is full")

    checkpoints = Checkpointer(tmp_path / "ckpt", interval=0)
    loop, _ = make_loop(source_only(), iterations=2, hooks=[BrokenLogger(), checkpoints])
    with pytest.raises(OSError, match="disk is full") as raised:
        loop.run()
    assert (tmp_path / "ckpt" / "student.pt").exists()  # the checkpointer saved the run
    assert "(raised in BrokenLogger.after_run, step 2)" in raised.value.__notes__


class FailsAfterStep(Hook):
    """A hook that raises after a given iteration, as a broken metric does at an evaluation."""

    def __init__(self, at: int) -> None:
        self.at = at

    def after_step(self, loop, losses):
        if loop.step == self.at:
            raise RuntimeError("the metric could not score")


class FailsInStep(LossTerm):
    def forward(self, ctx):
        raise RuntimeError("the term is broken")


def test_an_error_of_a_hook_after_a_whole_step_saves_that_step_first(tmp_path):
    checkpoints = Checkpointer(tmp_path / "ckpt", interval=0)
    loop, _ = make_loop(source_only(), iterations=6, hooks=[FailsAfterStep(3), checkpoints])
    with pytest.raises(RuntimeError, match="could not score"):
        loop.run()
    assert loop.interrupted_by == "an error"
    saved = torch.load(tmp_path / "ckpt" / "iter_00000003.pt", weights_only=False)
    assert saved["step"] == 3
    assert not (tmp_path / "ckpt" / "student.pt").exists()  # the run did not finish
    # an error inside a step leaves nothing half-done on disk
    broken, _ = make_loop(
        UDAMethod({"broken": FailsInStep()}), iterations=6, hooks=[Checkpointer(tmp_path / "b")]
    )
    with pytest.raises(RuntimeError, match="the term is broken"):
        broken.run()
    assert not list((tmp_path / "b").glob("*.pt"))


class RefusesItsBatch(LossTerm):
    """A term that refuses the batch it is given (as ClassMix refuses a batch of one)."""

    def forward(self, ctx):
        if ctx.step == 2:
            raise DatasetError("this term cannot use a batch like this one")
        return ctx.task.loss(ctx.student, ctx.source_images, ctx.source_targets)


def test_a_data_error_raised_inside_a_step_saves_nothing_half_done(tmp_path):
    """A term's DatasetError was taken for a bad batch: the run saved its state after the
    teacher's update and the loaders' draw of the step it had not finished, so a resume updated
    the teacher twice and skipped a batch."""

    class Positions(Hook):
        def after_step(self, loop, losses):
            self.whole = loop.source.state_dict()  # the loader after the last whole step

    positions, checkpoints = Positions(), Checkpointer(tmp_path / "ckpt", interval=1)
    method = UDAMethod({"refuses": RefusesItsBatch()})
    loop, _ = make_loop(method, iterations=6, hooks=[positions, checkpoints])
    with pytest.raises(DatasetError, match="cannot use a batch"):
        loop.run()
    assert loop.interrupted_by is None  # after_run was not called: nothing saved after step 2
    assert loop.source.state_dict() != positions.whole  # (the step drew its batch)
    saved = torch.load(tmp_path / "ckpt" / "iter_00000002.pt", weights_only=False)
    assert saved["step"] == 2 and saved["source"] == positions.whole


class _NaNLoss(LossTerm):
    """A term whose loss is NaN (with a gradient), counting its calls."""

    calls = 0

    def forward(self, ctx):
        type(self).calls += 1
        return ctx.task.loss(ctx.student, ctx.source_images, ctx.source_targets) * float("nan")


def test_a_term_of_weight_0_is_switched_off_not_computed_times_0():
    """The messages say 0 switches a term off, but it ran at full cost and 0 x NaN made every
    student parameter NaN."""
    _NaNLoss.calls = 0
    loop, _ = make_loop(mean_teacher().with_terms(nan=_NaNLoss(weight=0.0)), iterations=2)
    loop.run()
    assert _NaNLoss.calls == 0
    assert all(torch.isfinite(p).all() for p in loop.student.parameters())
    _NaNLoss.calls = 0
    loop, _ = make_loop(mean_teacher().with_terms(nan=_NaNLoss(weight=1.0)), iterations=1)
    loop.run()
    assert _NaNLoss.calls == 1


def test_a_numpy_number_is_a_loss_as_a_python_number_is():
    """np.float32(0.0), from a term that computes with NumPy, was refused as a 'numpy.float32'."""
    import numpy as np

    losses, steps = _one_step(_Returns(lambda loss: {"main": loss, "extra": np.float32(0.0)}))
    assert losses["extra"].item() == 0.0 and any(s.any() for s in steps)


def test_a_step_strategy_may_replace_the_target_images_between_its_passes():
    """The last term's name stayed set after the terms, so the strategy's own replacement was
    refused as that term's."""
    from mic import StepStrategy

    class Twice(StepStrategy):
        def __call__(self, loop, contexts, terms):
            loop.backward(contexts, terms)
            for ctx in contexts:
                ctx.target_images = ctx.target_images.flip(-1)
                ctx.restart()
            losses = loop.backward(contexts, terms)
            loop.finish_step(losses)
            return losses

    loop, _ = make_loop(mean_teacher(), iterations=1, step_strategy=Twice())
    loop.train_step()


def test_a_term_s_config_error_names_the_term():
    """A part_weights typo in one of three terms said which parts the loss has, not whose
    part_weights it was."""
    mic_term = MaskedImageConsistency(BlockMasker(2), weighting="none", part_weights={"nlll": 1})
    loop, _ = make_loop(source_only().with_terms(mic=mic_term), iterations=1)
    with pytest.raises(ConfigError, match=r"^loss term 'mic': part_weights name \['nlll'\]"):
        loop.train_step()


def test_a_hook_whose_before_run_was_not_called_is_not_torn_down():
    """Every teardown was registered before any before_run: a hook after a failing one was
    torn down without having started, and its AttributeError hid the real error."""

    class Fails(Hook):
        def before_run(self, loop):
            raise ValueError("the first hook's own error")

    class Opens(Hook):
        def before_run(self, loop):
            self.file = object()

        def teardown(self, loop):
            del self.file  # (an AttributeError unless before_run ran)

    loop, _ = make_loop(source_only(), iterations=1, hooks=[Fails(), Opens()])
    with pytest.raises(ValueError, match="the first hook's own error"):
        loop.run()


def test_a_pseudo_label_error_is_not_blamed_on_the_term_that_read_them_first():
    class Overconfident(type(tiny_loaders()[0])):
        def pseudo_label(self, prediction):
            pseudo = super().pseudo_label(prediction)
            return PseudoLabels(pseudo.labels, pseudo.confidence * 5)

    task, source, target, _ = tiny_loaders()
    task.__class__ = Overconfident
    student = tiny_model()
    method = mean_teacher(_aug()).with_terms(mic=_mic())
    opt = torch.optim.SGD(student.parameters(), lr=0.01)
    teacher = EMATeacher(student, alpha=0.9)
    loop = AdaptationLoop(task, student, method, opt, source, target, 1, teacher=teacher)
    with pytest.raises(ConfigError, match=r"^pseudo-label confidence must be"):
        loop.train_step()


def test_a_consistency_term_whose_quality_weight_stays_zero_is_warned_of_once(tmp_path):
    """A sigmoid task's confidences never reached tau: MIC's q was 0 at every logged
    iteration and the '+MIC' run was its base run, without a word."""
    from mic import MetricsLogger

    never = MaskedImageConsistency(BlockMasker(2, 0.5), weighting="quality", tau=1.0)
    logger = MetricsLogger(tmp_path, interval=1, tensorboard=False)
    loop, _ = make_loop(source_only().with_terms(mic=never), iterations=6, hooks=[logger])
    said = r"'mic': its quality weight q was 0 at the last 3 logged iterations \(up to 3\)"
    with pytest.warns(UserWarning, match=said + r".*lower method.terms.mic.tau") as got:
        loop.run()
    assert sum("quality weight q was 0" in str(w.message) for w in got) == 1
    import warnings

    for n, (term, iterations) in enumerate(
        [
            (MaskedImageConsistency(BlockMasker(2, 0.5), weighting="quality", tau=0.0), 6),
            (MaskedImageConsistency(BlockMasker(2, 0.5), weighting="prob", tau=1.0), 6),
            (never, 16),  # 0 at 3 of 16: not yet a quarter of the run (from scratch: soon)
        ]
    ):
        logger = MetricsLogger(tmp_path / str(n), interval=1, tensorboard=False)
        stop = _StopAt(3 if iterations == 16 else None)
        loop, _ = make_loop(source_only().with_terms(mic=term), iterations, hooks=[logger, stop])
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*quality weight q was 0")
            loop.run()
        assert loop.step == (3 if iterations == 16 else iterations)


class _StopAt(mic.Hook):
    def __init__(self, step):
        self.step = step

    def after_step(self, loop, losses):
        if loop.step == self.step:
            loop.request_stop("test")


def test_a_python_resume_into_a_loop_of_another_schedule_keeps_the_loop_s_own(tmp_path):
    """An 8-iteration run's checkpoint resumed into a 12-iteration loop trained its last 4
    iterations at lr 0: torch restored the schedule's max_iters 8, without a word."""
    from mic.resume import resume
    from mic.training import WarmupPoly, lr_scheduler, save_checkpoint

    def built(iterations):
        loop, _ = make_loop(source_only(), iterations=iterations, lr=0.05)
        loop.scheduler = lr_scheduler(loop.optimizer, WarmupPoly(iterations, warmup_iters=2))
        return loop

    short = built(8)
    short.iterations = 4
    short.run()
    save_checkpoint(short.state_dict(), tmp_path / "iter_00000004.pt")
    longer = built(12)
    with pytest.warns(UserWarning, match=r"differs from the checkpoint's \(max_iters 12 \(the "
                      r"checkpoint's 8\).*the loop's own are kept from iteration 4"):  # fmt: skip
        resume(longer, tmp_path / "iter_00000004.pt", announce=False)
    longer.run()
    assert longer.optimizer.param_groups[0]["lr"] == 0.0  # the end of its own 12
    fresh = built(12)
    fresh.run()
    torch.testing.assert_close(longer.lr(), fresh.lr())
    same = built(8)  # the run's own schedule: no word
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*differs from the checkpoint")
        resume(same, tmp_path / "iter_00000004.pt", announce=False)
    # without a scheduler the lr is the loop's setting: the checkpoint's replaced it unsaid
    plain, _ = make_loop(source_only(), iterations=8, lr=0.5)
    with pytest.warns(UserWarning, match=r"differs from the checkpoint's \(lr 0.5 \(the checkp"):
        resume(plain, tmp_path / "iter_00000004.pt", announce=False)
    assert plain.optimizer.param_groups[0]["lr"] == 0.5


def test_the_same_hook_twice_and_evaluations_of_no_model_or_odd_steps_are_named():
    """A hook listed twice wrote every record twice; Evaluation(models=[]) scored nothing and
    Evaluation(at="3") never evaluated at step 3."""
    from mic import Evaluation, MetricsLogger

    task, _, _, test = tiny_loaders()
    with pytest.raises(ConfigError, match="names no model"):
        Evaluation(task, test, models=[])
    for odd in ("3", [-1], [2.5], None):
        with pytest.raises(ConfigError, match=r"Evaluation\(at=...\) takes iterations"):
            Evaluation(task, test, at=odd)
    assert Evaluation(task, test, at=3).at == {3} and Evaluation(task, test, at=[2.0]).at == {2}
    logger = MetricsLogger("unused", tensorboard=False)
    with pytest.raises(ConfigError, match="hooks list the hook MetricsLogger twice"):
        make_loop(source_only(), hooks=[logger, logger])


def test_hooks_reused_for_a_second_run_start_from_nothing(tmp_path):
    """A seed sweep reusing its hook objects carried run 1's best score and records into run
    2: best.pt named a file that was set aside, and picks() reported run 1's step."""
    from mic import Checkpointer, Evaluation

    task, _, _, test = tiny_loaders()
    evaluation = Evaluation(task, test, interval=2, models=("student",))
    checkpointer = Checkpointer(tmp_path, best_metric="eval/student/accuracy")
    for seed in (0, 1):
        loop, _ = make_loop(
            source_only(), iterations=4, seed=seed, hooks=[evaluation, checkpointer]
        )
        loop.run()
        if seed == 0:  # a first run better than any second one could be
            checkpointer.selection.best["eval/student/accuracy"]["score"] = 2.0
    assert [r["step"] for r in evaluation.history] == [2, 4]
    assert checkpointer.selection.best["eval/student/accuracy"]["score"] <= 1.0
    assert checkpointer.best_file is not None and checkpointer.best_file.exists()


def test_a_run_folder_deleted_mid_run_stops_the_run_rather_than_log_into_the_deleted_file(
    tmp_path,
):
    """The run went on to exit 0, writing every record into the deleted metrics.jsonl (and a
    warning said that file held them)."""
    import shutil

    from mic import Hook, MicError

    class Remove(Hook):
        def after_step(self, loop, losses):
            if loop.step == 2:
                shutil.rmtree(tmp_path / "run")

    logger = MetricsLogger(tmp_path / "run", 1, tensorboard=False)
    loop, _ = make_loop(mean_teacher(), iterations=5, hooks=[Remove(), logger])
    with pytest.raises(MicError, match=r"metrics.jsonl' was deleted while the run went on"):
        loop.run()
    assert loop.step == 2
