"""Mixed precision on the CPU: bf16 autocast trains every task for a few steps; fp16 loss
scaling and gradient accumulation behave as documented."""

import warnings

import pytest
import torch

from mic.experiment import build_experiment, load_config

TINY = [
    "eval.interval=0",
    "eval.adabn_batches=1",
    "log.progress=false",
    "device=cpu",
    "adaptation_start=0",
]
TASKS = {
    "classification": ["iterations=3", "loader.source_batch_size=8", "loader.target_batch_size=8"],
    "segmentation": [
        "experiment=streets",
        "iterations=3",
        "dataset.train_count=8",
        "dataset.test_count=4",
        "loader.source_batch_size=4",
        "loader.target_batch_size=4",
    ],
    "detection": [
        "experiment=det_shapes",
        "iterations=3",
        "dataset.source.length=4",
        "dataset.target.length=4",
        "dataset.test.length=2",
        "loader.source_batch_size=2",
        "loader.target_batch_size=2",
    ],
}


def _steps(exp, n):
    loop = exp.loop
    out = []
    for _ in range(n):
        out.append(loop.train_step())
        loop.step += 1
    return out


@pytest.mark.parametrize("task", list(TASKS))
def test_bf16_autocast_trains_every_task(task):
    exp = build_experiment(load_config([*TINY, *TASKS[task], "precision=bf16"]))
    before = [p.detach().clone() for p in exp.student.parameters()]
    losses = _steps(exp, 2)
    assert all(torch.isfinite(v) for step in losses for v in step.values())
    assert exp.loop.skipped_steps == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, exp.student.parameters()))
    with exp.loop.autocast():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled(
            "cpu"
        )
    assert all(p.dtype == torch.float32 for p in exp.student.parameters())  # master weights


def test_fp16_uses_a_loss_scaler_and_accumulation_averages_micro_batches():
    with pytest.warns(UserWarning, match="precision=fp16 on the CPU"):  # tens of times slower
        exp = build_experiment(
            load_config([*TINY, *TASKS["classification"], "precision=fp16", "accumulate=2"])
        )
    assert exp.loop.scaler.is_enabled()
    draws = []
    original = exp.loop.context
    exp.loop.context = lambda step, micro=0: draws.append(step) or original(step, micro)
    _steps(exp, 1)
    assert draws == [0, 0]  # two micro-batches for one optimiser step
    assert exp.loop.source.batches == 2


def test_nan_is_skipped_or_stops_with_the_branch_name():
    from mic.training import NumericalError

    for policy in ("skip", "stop"):
        exp = build_experiment(
            load_config([*TINY, *TASKS["classification"], f"nan_policy={policy}"])
        )
        term = exp.method.terms["mic"]
        forward = term.forward
        term.forward = lambda ctx, f=forward: f(ctx) * float("nan")
        before = [p.detach().clone() for p in exp.student.parameters()]
        if policy == "stop":
            with pytest.raises(NumericalError, match="the loss 'mic' is NaN or Inf at iteration 1"):
                _steps(exp, 1)
            continue
        with warnings.catch_warnings():  # a skipped step must not warn about the scheduler
            warnings.simplefilter("error")
            _steps(exp, 2)
        assert exp.loop.skipped_steps == 2
        assert all(torch.equal(a, b) for a, b in zip(before, exp.student.parameters()))
        teacher = dict(exp.loop.teacher.model.named_parameters())
        assert all(torch.isfinite(p).all() for p in teacher.values())


def test_sada_s_consistency_loss_survives_bf16():
    """Under bf16 autocast both of SADA's domain probabilities, near 0.5, rounded to the same
    value and the consistency loss was exactly 0 at every step."""
    from tests.det_helpers import TINY_DET  # (a small backbone: seconds)

    overrides = [*TINY, *TASKS["detection"], *TINY_DET, "precision=bf16"]
    losses = _steps(build_experiment(load_config(overrides)), 2)
    consistency = [step[k] for step in losses for k in step if k.endswith("consistency")]
    assert consistency and all(v.item() > 0 for v in consistency), losses


def test_mic_train_leaves_out_torch_s_warning_of_a_step_the_fp16_loss_scaler_skipped():
    """fp16's GradScaler skips the optimiser step while it finds its scale, the loop steps the
    schedule all the same, and torch warned ``mic: warning: Detected call of
    `lr_scheduler.step()` before `optimizer.step()` ...``: advice that fits no mic-train run.
    mic-train filters it by its text, so the filter must match torch's words."""
    import re

    from mic.training.guard import SCHEDULE_WITHOUT_STEP

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), 0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scheduler.step()  # as after a step the scaler skipped
    said = [str(w.message) for w in caught]
    assert any(re.match(SCHEDULE_WITHOUT_STEP, s) for s in said), said
