"""NaN and Inf: a skipped step changes nothing (weights, BatchNorm statistics, optimiser state,
teacher), the teacher never averages in a non-finite value, weights made non-finite by a step
stop the run, and too many skipped steps stop it."""

import math
import warnings

import pytest
import torch

from mic import (
    AdaptationLoop,
    BlockMasker,
    EMATeacher,
    Hook,
    LossTerm,
    NumericalError,
    TrainingGuard,
    UDAMethod,
    mean_teacher,
)

from .cli import run_mic_train
from .helpers import TINY_RUN, tiny_loaders, tiny_model


class Poisoned(LossTerm):
    """The source loss, NaN at the iterations listed in ``bad``."""

    uses_target = False

    def __init__(self, bad=()):
        super().__init__()
        self.bad = set(bad)

    def forward(self, ctx):
        loss = ctx.task.loss(ctx.student, ctx.source_images, ctx.source_targets)
        return loss * float("nan") if ctx.step in self.bad else loss


def _loop(method, iterations=6, **kwargs):
    task, source, target, _ = tiny_loaders()
    student = tiny_model()
    opt = torch.optim.Adam(list(student.parameters()) + list(method.parameters()), 1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1 + t))
    teacher = EMATeacher(student, 0.9)  # predicts in batch mode: its BatchNorm statistics move
    return AdaptationLoop(
        task,
        student,
        method,
        opt,
        source,
        target,
        iterations,
        teacher=teacher,
        scheduler=scheduler,
        guard=TrainingGuard(**kwargs),
    )


def _state(loop):
    """Everything a skipped step must leave as it was (optimiser state included)."""
    return {
        "student": {k: v.clone() for k, v in loop.student.state_dict().items()},
        "teacher": {k: v.clone() for k, v in loop.teacher.model.state_dict().items()},
        "optimizer": repr(loop.optimizer.state_dict()["state"]),
    }


def _same(a, b):
    assert a["optimizer"] == b["optimizer"]
    for part in ("student", "teacher"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} changed"


def test_a_skipped_step_changes_nothing_and_the_teacher_waits_for_the_next_step():
    method = mean_teacher().with_terms(source=Poisoned(bad={2}))
    loop = _loop(method)
    for _ in range(2):
        loop.train_step()
        loop.step += 1
    before = {}
    update = loop.teacher.update  # the update that step 1 earned runs first; then the snapshot
    loop.teacher.update = lambda *a: update(*a) or before.update(_state(loop))
    lr = loop.lr()
    losses = loop.train_step()  # iteration 2: NaN
    loop.teacher.update = update
    loop.step += 1
    assert not torch.isfinite(losses["source"]) and loop.skipped_steps == 1
    _same(before, _state(loop))  # BatchNorm statistics of student and teacher included
    assert loop.lr() < lr  # only the schedule follows the iteration
    # the next iteration: no teacher update from the unchanged student before a step is taken
    teacher = {k: v.clone() for k, v in loop.teacher.model.named_parameters()}
    loop.train_step()
    loop.step += 1
    after = dict(loop.teacher.model.named_parameters())
    assert all(torch.equal(teacher[k], after[k]) for k in teacher)
    loop.train_step()  # and the one after follows the student again
    assert any(not torch.equal(teacher[k], after[k]) for k in teacher)


def test_weights_made_non_finite_by_a_step_stop_the_run_and_never_reach_the_teacher():
    loop = _loop(mean_teacher(), nan_policy="skip")
    loop.train_step()
    loop.step += 1
    with torch.no_grad():  # what an exploding step leaves behind
        next(loop.student.parameters()).fill_(float("inf"))
    with pytest.raises(NumericalError, match="optimiser step of iteration 1 made weights NaN"):
        loop.train_step()
    assert all(torch.isfinite(p).all() for p in loop.teacher.model.parameters())


class Recorder(Hook):
    def __init__(self):
        self.steps = []

    def after_step(self, loop, losses):
        self.steps.append(loop.step)


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_a_step_that_makes_weights_non_finite_stops_the_run_before_the_hooks_see_them(policy):
    """Finite losses and gradients, but an optimiser step (here Adam with eps=0, 0 / 0 where a
    gradient is 0) that writes NaN: the run stops right after that step, so no evaluation
    scores the weights and no checkpoint holds them (the check before the next step came after
    the hooks of this one)."""
    loop = _loop(mean_teacher(), iterations=3, nan_policy=policy)
    frozen = next(loop.student.parameters())
    frozen.register_hook(torch.zeros_like)  # a gradient of exactly 0
    loop.optimizer.param_groups[0]["eps"] = 0.0
    recorder = Recorder()
    loop.hooks.append(recorder)
    with pytest.raises(NumericalError, match="optimiser step of iteration 1 made weights NaN"):
        loop.run()
    assert recorder.steps == [] and not torch.isfinite(frozen).all()
    handles = loop.optimizer._optimizer_step_post_hooks
    assert not handles  # the guard's check leaves with the run
    ignoring = _loop(mean_teacher(), iterations=2, nan_policy="ignore")
    ignoring.optimizer.param_groups[0]["eps"] = 0.0
    next(ignoring.student.parameters()).register_hook(torch.zeros_like)
    ignoring.run()  # checks nothing, as documented


def test_mic_train_with_an_optimiser_that_writes_nan_stops_before_any_record_of_them(tmp_path):
    """Through mic-train (Adam's eps=0 on the digits run): one paragraph, no traceback of the
    label-free validators' SVD, no checkpoint, no evaluation of the NaN weights."""
    run = tmp_path / "run"
    out = run_mic_train(
        [*TINY_RUN, "+optimizer.eps=0", "checkpoint.interval=1", f"hydra.run.dir={run}"]
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "the optimiser step of iteration 1 made weights NaN or Inf" in out.stderr
    assert not list(run.glob("checkpoints/*.pt"))
    assert "eval/" not in (run / "metrics.jsonl").read_text()


def test_a_label_free_score_of_non_finite_probabilities_is_nan():
    from mic.training.validators import BatchNuclearNorm, TargetOutputs

    validator = BatchNuclearNorm()
    validator.start(None, torch.device("cpu"))
    out = TargetOutputs(None)
    out.probabilities = torch.full((4, 3), float("nan"))
    validator.update(out)
    assert math.isnan(validator.compute())  # not linalg.svd's error


def test_too_many_skipped_steps_stop_the_run():
    loop = _loop(mean_teacher().with_terms(source=Poisoned(bad=range(100))), iterations=20)
    with pytest.raises(
        NumericalError, match=r"5 of the first 5 iterations .* max_skipped=0.1"
    ) as e:
        loop.run()
    assert loop.skipped_steps == 5
    assert "max_skipped=0.1 (NaN or Inf: 'source' in 5 iterations" in str(e.value)
    assert "precision=fp32" not in str(e.value)  # a run in fp32 is not told to use it
    lenient = _loop(
        mean_teacher().with_terms(source=Poisoned(bad={0, 3, 6, 9, 12})),
        iterations=20,
        max_skipped=0.4,
    )
    with pytest.warns(UserWarning, match=r"5 of the 20 iterations run had NaN or Inf .* took no"):
        lenient.run()  # 5 of 13 at the fifth skip: under 0.4 x 13
    assert lenient.skipped_steps == 5
    assert lenient.guard.non_finite == {"source": 5, "gradients": 5}  # (in the summary)
    resumed = TrainingGuard()  # what a checkpoint keeps of it (the Checkpointer's "guard")
    resumed.load_state_dict(lenient.guard.state_dict())
    assert resumed.non_finite == {"source": 5, "gradients": 5}


def test_a_short_run_whose_every_iteration_was_skipped_is_an_error_not_a_success():
    loop = _loop(mean_teacher().with_terms(source=Poisoned(bad=range(100))), iterations=3)
    with pytest.raises(
        NumericalError, match="every one of the 3 iterations run had NaN or Inf"
    ) as e:
        loop.run()
    assert "nothing trained (NaN or Inf: 'source' in 3 iterations" in str(e.value)
    assert "look for NaN or Inf in the images or the targets" in str(e.value)
    assert loop.skipped_steps == 3 and loop.step == 3
    partly = _loop(mean_teacher().with_terms(source=Poisoned(bad={0, 1})), iterations=3)
    with pytest.warns(UserWarning, match=r"2 of the 3 iterations run had NaN or Inf losses"):
        partly.run()  # one iteration trained: the run stands, but says what it skipped
    assert partly.skipped_steps == 2
    told = _loop(mean_teacher().with_terms(source=Poisoned(bad={1})), 3, warn_skipped=False)
    with warnings.catch_warnings():  # (mic-train's summary says it)
        warnings.simplefilter("error")
        told.run()
    assert told.skipped_steps == 1


def test_stop_policy_names_the_branch_in_the_console_numbering():
    loop = _loop(UDAMethod({"source": Poisoned(bad={0})}), nan_policy="stop")
    with pytest.raises(NumericalError, match="the loss 'source' is NaN or Inf at iteration 1"):
        loop.train_step()


class GradientOfNaN(LossTerm):
    """A finite loss (0) whose gradient is NaN: the square root's at 0 (inf) times 0."""

    uses_target = False

    def forward(self, ctx):
        return torch.sqrt((ctx.student(ctx.source_images) * 0).sum())


def test_stop_policy_calls_non_finite_gradients_gradients_not_a_loss():
    """It said "the loss 'gradients' is NaN or Inf"."""
    loop = _loop(UDAMethod({"source": GradientOfNaN()}), nan_policy="stop")
    with pytest.raises(NumericalError, match="the gradients are NaN or Inf at iteration 1"):
        loop.train_step()


def test_no_label_free_score_picks_a_model_whose_weights_are_not_finite():
    """Under nan_policy=ignore a step may leave NaN weights; masked_agreement still agreed
    with itself on them (the probability validators gave NaN) and could pick that iteration."""
    from mic.training import LabelFreeValidation

    task, _, _, _ = tiny_loaders()
    model = tiny_model()
    images = [torch.randn(4, 3, 8, 8)]
    validation = LabelFreeValidation(
        ["masked_agreement", "entropy"], images, batches=1, masker=BlockMasker(2, 0.5)
    )
    assert all(math.isfinite(v) for v in validation.score(task, model).values())
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    assert all(math.isnan(v) for v in validation.score(task, model).values())
