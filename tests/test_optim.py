import pytest
import torch
from torch import nn

from mic import ConfigError
from mic.training import InverseDecay, WarmupPoly, lr_scheduler, param_groups

from .helpers import tiny_model


def test_lr_multipliers_by_longest_prefix_and_weight_decay_exemptions():
    model = tiny_model()
    head = nn.Linear(2, 2)
    groups = param_groups(
        {"model": model, "method": head},
        lr=0.01,
        lr_mult={"model.backbone": 0.1, "model": 1.0, "method": 10.0},
        weight_decay=1e-3,
        no_weight_decay=["bias"],
    )
    by_param = {id(p): g for g in groups for p in g["params"]}
    for name, p in model.backbone.named_parameters():
        g = by_param[id(p)]
        assert g["lr"] == pytest.approx(0.001)
        assert g["weight_decay"] == (0.0 if "bias" in name else 1e-3)
    assert by_param[id(model.head.weight)]["lr"] == pytest.approx(0.01)
    assert by_param[id(head.weight)]["lr"] == pytest.approx(0.1)
    total = sum(len(g["params"]) for g in groups)
    assert total == len(list(model.parameters())) + 2


def test_biases_learn_at_bias_lr_factor_times_their_multiplier():
    """(maskrcnn-benchmark's SOLVER.BIAS_LR_FACTOR, the published detection recipe's 2)"""
    model = tiny_model()
    common = {"lr": 0.01, "lr_mult": {"model.backbone": 0.1}, "weight_decay": 1e-4}
    groups = param_groups({"model": model}, **common, no_weight_decay=["bias"], bias_lr_factor=2)
    by_param = {id(p): g for g in groups for p in g["params"]}
    names = [n for n, _ in model.named_parameters()]
    assert any(n.endswith(".bias") for n in names) and any(n.endswith(".weight") for n in names)
    for name, p in model.named_parameters():
        base = 0.001 if name.startswith("backbone.") else 0.01
        bias = name.endswith(".bias")
        assert by_param[id(p)]["lr"] == pytest.approx(base * (2 if bias else 1)), name
        assert by_param[id(p)]["weight_decay"] == (0.0 if bias else 1e-4), name
    # 1, the default, leaves the groups as they were
    plain = param_groups({"model": model}, **common)
    assert param_groups({"model": model}, **common, bias_lr_factor=1.0) == plain
    for bad in (0, -1.0, float("inf"), float("nan"), True, "2"):
        with pytest.raises(ConfigError, match="bias_lr_factor must be a finite number > 0"):
            param_groups({"model": model}, **common, bias_lr_factor=bad)


def test_nested_multipliers_read_as_dotted_prefixes():
    model = tiny_model()
    nested = param_groups({"model": model}, lr=1.0, lr_mult={"model": {"backbone": 0.1}})
    dotted = param_groups({"model": model}, lr=1.0, lr_mult={"model.backbone": 0.1})
    assert [(g["lr"], len(g["params"])) for g in nested] == [
        (g["lr"], len(g["params"])) for g in dotted
    ]


def test_unknown_prefix_is_a_config_error():
    with pytest.raises(ConfigError, match="matches no trainable parameter"):
        param_groups({"model": tiny_model()}, lr=0.1, lr_mult={"model.decoder": 10})


def test_a_no_weight_decay_entry_that_matches_no_parameter_is_warned_of(caplog):
    model = tiny_model()
    names = [n for n, _ in model.named_parameters()]
    typo = "bais"  # of bias, which every layer of the model has
    assert any("bias" in n for n in names) and not any(typo in n for n in names)
    groups = param_groups(
        {"model": model}, lr=0.1, weight_decay=1e-2, no_weight_decay=["bias", typo]
    )
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith(f"no_weight_decay entry '{typo}' matches no trainable parameter")
    assert "exempts nothing from weight decay" in warning and "Did you mean: bias?" in warning
    assert sorted(g["weight_decay"] for g in groups) == [0.0, 1e-2]  # "bias" still applies


def test_the_shared_no_weight_decay_names_of_mic_s_configs_are_no_warning(caplog):
    # the segmentation experiments list [norm, pos_block] for MiT; a U-Net has neither
    param_groups(
        {"model": tiny_model()}, lr=0.1, no_weight_decay=["norm", "pos_block", "pos_embed"]
    )
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_mic_train_warns_of_a_no_weight_decay_typo(tmp_path):
    from tests.cli import run_mic_train
    from tests.helpers import TINY_RUN

    args = [*TINY_RUN, "iterations=1", "optimizer=adamw", "no_weight_decay=[nrom]"]
    out = run_mic_train([*args, "log.tensorboard=false", f"hydra.run.dir={tmp_path / 'run'}"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "no_weight_decay entry 'nrom' matches no trainable parameter" in out.stdout


@pytest.mark.parametrize(
    "mult,why",
    [
        ("abc", "it is no number"),
        (True, "it is no number"),
        (-1, "climb their loss"),
        (float("nan"), "NaN or Inf"),
        (float("inf"), "NaN or Inf"),
    ],
)
def test_a_multiplier_that_is_no_finite_number_at_least_0_is_a_config_error(mult, why):
    with pytest.raises(ConfigError, match=rf"^lr_mult\.model\.backbone: .*finite .*{why}"):
        param_groups({"model": tiny_model()}, lr=0.1, lr_mult={"model": {"backbone": mult}})


def test_a_multiplier_of_0_freezes_and_a_whole_number_is_read_as_a_float():
    groups = param_groups({"model": tiny_model()}, lr=0.1, lr_mult={"model.backbone": 0})
    assert sorted(g["lr"] for g in groups) == [0.0, 0.1]
    assert all(isinstance(g["lr_mult"], float) for g in groups)


def test_frozen_parameters_are_left_out():
    model = tiny_model()
    model.backbone.requires_grad_(False)
    groups = param_groups({"model": model}, lr=0.1)
    n = sum(len(g["params"]) for g in groups)
    assert n == len([p for p in model.parameters() if p.requires_grad])


def test_warmup_poly_matches_hand_computation():
    s = WarmupPoly(max_iters=100, warmup_iters=10, power=1.0, warmup_ratio=1e-6)
    assert s(0) == pytest.approx(1e-6)
    assert s(5) == pytest.approx((1 - 0.05) * (1 - 0.5 * (1 - 1e-6)))
    assert s(10) == pytest.approx(0.9)
    assert s(50) == pytest.approx(0.5)
    assert s(100) == pytest.approx(0.0)
    assert WarmupPoly(100, power=0.9)(50) == pytest.approx(0.5**0.9)


def test_inverse_decay_is_sdat_schedule():
    s = InverseDecay(gamma=0.001, power=0.75)
    assert s(0) == 1.0
    assert s(1000) == pytest.approx(2**-0.75)


def test_scheduler_scales_every_group_from_its_own_lr():
    w1, w2 = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [w1], "lr": 0.1}, {"params": [w2], "lr": 1.0}])
    sched = lr_scheduler(opt, InverseDecay())
    for _ in range(1000):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 2**-0.75)
    assert opt.param_groups[1]["lr"] == pytest.approx(2**-0.75)


def test_warmup_multistep_against_a_hand_computation():
    from mic.training import WarmupMultiStep

    f = WarmupMultiStep(steps=(10, 20), gamma=0.1, warmup_iters=4, warmup_factor=0.25)
    assert f(0) == pytest.approx(0.25)
    assert f(2) == pytest.approx(0.25 * 0.5 + 0.5)  # half way through the warm-up
    assert [f(t) for t in (4, 9, 10, 19, 20)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_schedules_take_numpy_numbers_and_lr_scheduler_names_a_class_given_for_a_schedule():
    """WarmupPoly(np.int64(10)) said 10 was no whole number >= 1; lr_scheduler(opt,
    WarmupPoly) said 'scheduler.max_iters: must be a whole number >= 1 (got 0)'."""
    import numpy as np

    from mic import ConfigError
    from mic.training import WarmupMultiStep, WarmupPoly, lr_scheduler

    assert WarmupPoly(np.int64(10)).max_iters == 10
    assert WarmupMultiStep(steps=np.array([8, 3])).steps == [3, 8]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ConfigError, match="got the class WarmupPoly"):
        lr_scheduler(opt, WarmupPoly)


@pytest.mark.parametrize(
    "given, said",
    [  # an lr_mult prefix no parameter has (a recipe's under another model): at the optimiser
        (["++lr_mult={model.backbone: 0.1}"], "lr_mult prefix 'model.backbone' matches no"),
        # the feature distance's Cityscapes thing classes on 3 classes: at the first iteration
        (["method=daformer"], "feature distance's classes [6, 7, 11, 12, 13, 14, 15, 16, 17, 18]"),
    ],
)
def test_mic_train_names_settings_the_model_or_task_lacks_before_reading_the_data(
    tmp_path, given, said
):
    """Both were named after a data check that takes minutes on a published data set: here
    the data folder does not exist, and the setting is what is named."""
    from tests.cli import run_mic_train

    args = [
        "experiment=streets",
        "dataset=seg_folders",
        "dataset.num_classes=3",
        *(f"dataset.{k}={tmp_path / 'missing'}" for k in ("source_images", "source_labels")),
        *(f"dataset.{k}={tmp_path / 'missing'}" for k in ("target_images", "test_images")),
        f"dataset.test_labels={tmp_path / 'missing'}",
        *given,
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    out = run_mic_train(args)
    assert out.returncode != 0
    assert said in out.stderr
    assert "Traceback" not in out.stderr
