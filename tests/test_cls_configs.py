"""The published SDAT + MIC experiment configs resolve to the published hyperparameters
(MIC's classification code, cls/experiments.py, on top of SDAT's run_visda.sh and
run_office_home.sh)."""

import itertools

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mic import param_groups
from mic.experiment import build_method, load_config
from mic.tasks.classification import (
    Classifier,
    ConditionalDomainAdversarial,
    JointSourceSupervision,
    MinimumClassConfusion,
    SharpnessAwareMinimization,
    joint_forward,
    separate_forward,
)

COMMON = {
    # SDAT: SGD, Nesterov momentum 0.9, weight decay 1e-3, lr 0.002, (1 + 0.001 t)^-0.75,
    # backbone lr x 0.1, bottleneck 256, SAM rho 0.02, CDAN without entropy conditioning or
    # randomised map, discriminator 1024 wide, trade-off 1, gradient-reversal warm start
    "optimizer._target_": "torch.optim.SGD",
    "optimizer.lr": 0.002,
    "optimizer.momentum": 0.9,
    "optimizer.nesterov": True,
    "optimizer.weight_decay": 0.001,
    "scheduler._target_": "mic.InverseDecay",
    "scheduler.gamma": 0.001,
    "scheduler.power": 0.75,
    "lr_mult": {"model.backbone": 0.1},
    "no_weight_decay": [],
    "model.bottleneck_dim": 256,
    "model.pretrained": True,
    "adaptation_start": 0,
    "method.step.rho": 0.02,
    "method.step.adaptive": False,
    "method.terms.cdan.entropy_conditioning": False,
    "method.terms.cdan.randomized": False,
    "method.terms.cdan.hidden_dim": 1024,
    "method.terms.cdan.weight": 1.0,
    "method.terms.cdan.features_dim": 256,
    "method.terms.cdan.coefficient.alpha": 1.0,
    "method.terms.cdan.coefficient.max_iters": 1000,
    "method.terms.cdan.batch_norm": True,  # TLlib's DomainDiscriminator, batch_norm=True
    "method.terms.mcc.weight": 1.0,
    # one forward pass over cat(source, target): cdan_mcc_sdat*.py (the BatchNorm of the
    # bottleneck sees both domains in one batch)
    "method.forward_pass": "joint",
    "method.terms.source.forward_pass": "joint",
    "method.terms.cdan.forward_pass": "joint",
    "method.terms.mcc.forward_pass": "joint",
    # MIC: EMA alpha 0.9, block 64, ratio 0.7, colour jitter (p 0.8, s 0.2), blur (p 0.5),
    # lambda 1
    "teacher.alpha": 0.9,
    "method.terms.mic.weight": 1.0,
    "method.terms.mic.masker.block_size": 64,
    "method.terms.mic.masker.ratio": 0.7,
    "method.terms.mic.masker.augmentation.jitter_p": 0.8,
    "method.terms.mic.masker.augmentation.strength": 0.2,
    "method.terms.mic.masker.augmentation.blur_p": 0.5,
    "method.terms.mic.masker.augmentation.jitter": "published",  # kornia 0.5's operations
    "method.terms.mic.masker.augmentation.mean": [0.485, 0.456, 0.406],
    "method.terms.mic.masker.augmentation.std": [0.229, 0.224, 0.225],
    # pre-processing: 256 x 256 (resize null: size x 256 / 224), 224 crops, flip, ImageNet
    # normalisation
    "dataset.resize": None,
    "dataset.size": 224,
    "dataset.source.transform.square": True,
    "dataset.source.transform.flip": True,
    "dataset.test.transform.train": False,
    "dataset.mean": [0.485, 0.456, 0.406],
    "dataset.std": [0.229, 0.224, 0.225],
    "eval.adabn_batches": 0,
}

PUBLISHED = {
    "visda2017_sdat_mic_vit": {
        **COMMON,
        "model.backbone": "vit_base_patch16_224.augreg_in21k_ft_in1k",
        "iterations": 15000,  # --epochs 15, 1000 iterations each
        "seed": 0,
        "loader.source_batch_size": 32,
        "loader.target_batch_size": 32,
        "method.terms.mcc.temperature": 2.0,
        "method.terms.mic.weighting": "prob",
        "method.step.second_pass_weighting": "none",
        "dataset.name": "visda2017",
        "dataset.train_crop": "center",  # --train-resizing cen.crop
        "dataset.num_classes": 12,
        "task.primary_metric": "mean_class_accuracy",  # --per-class-eval
    },
    "visda2017_sdat_mic_resnet101": {
        **COMMON,
        "model.backbone": "resnet101.tv_in1k",
        "iterations": 30000,
        "seed": 2,
        "loader.source_batch_size": 32,
        "loader.target_batch_size": 32,
        "method.terms.mcc.temperature": 3.0,
        "method.terms.mic.weighting": "none",
        "method.step.second_pass_weighting": None,
        "dataset.name": "visda2017",
        "dataset.train_crop": "center",
        "dataset.num_classes": 12,
        "task.primary_metric": "mean_class_accuracy",
    },
    "officehome_sdat_mic_vit": {
        **COMMON,
        "model.backbone": "vit_base_patch16_224.augreg_in21k_ft_in1k",
        "iterations": 30000,  # --epochs 30
        "seed": 0,
        "loader.source_batch_size": 24,  # -b 24
        "loader.target_batch_size": 24,
        "method.terms.mcc.temperature": 2.0,
        "method.terms.mic.weighting": "prob",
        "method.step.second_pass_weighting": "none",
        "dataset.name": "officehome",
        "dataset.train_crop": "random_resized",  # --train-resizing default
        "dataset.num_classes": 65,
        "task.primary_metric": "accuracy",
    },
}


def _resolved(experiment):
    cfg = load_config([f"experiment={experiment}", "dataset.root=/data"])
    return cfg, OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))


@pytest.mark.parametrize("experiment", list(PUBLISHED))
def test_experiment_resolves_to_the_published_values(experiment):
    cfg, resolved = _resolved(experiment)
    got = {key: OmegaConf.select(resolved, key) for key in PUBLISHED[experiment]}
    got = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in got.items()}
    assert got == PUBLISHED[experiment]
    assert list(cfg.method.terms) == ["source", "cdan", "mcc", "mic"]
    for split in ("source", "test"):  # the published 256 x 256 before the 224 px crops
        steps = instantiate(resolved.dataset[split].transform).transforms
        assert steps[0].size == (256, 256), split


def test_a_smaller_image_size_scales_the_resize_of_the_published_layouts():
    # dataset.resize stayed 256 at dataset.size=32: the test scored the centre 32 px of a
    # 256 px image, 1/64 of it, without a word
    for dataset in ("officehome", "visda2017"):
        cfg = load_config([f"dataset={dataset}", "dataset.size=32", "dataset.root=/data"])
        steps = instantiate(cfg.dataset.test.transform).transforms
        assert steps[0].size == (37, 37) and steps[1].size == (32, 32), dataset


@pytest.mark.parametrize("experiment", list(PUBLISHED))
def test_experiment_builds_sdat_with_sam_and_sgd_and_the_backbone_at_a_tenth(experiment):
    cfg, _ = _resolved(experiment)
    method = build_method(cfg)
    terms = dict(method.terms.items())
    assert isinstance(terms["source"], JointSourceSupervision)
    assert isinstance(terms["cdan"], ConditionalDomainAdversarial)
    assert terms["cdan"].discriminator.in_features == 256 * cfg.dataset.num_classes
    step = instantiate(cfg.method.step)
    assert isinstance(step, SharpnessAwareMinimization) and step.rho == 0.02
    assert step.first_pass_skips == ("cdan",)  # the perturbation follows the other losses
    assert isinstance(terms["mcc"], MinimumClassConfusion)
    assert {t.shared_forward for t in terms.values() if t.shared_forward} == {joint_forward}
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in terms["cdan"].discriminator)
    model = Classifier("tiny_cnn", cfg.dataset.num_classes, bottleneck_dim=256)
    groups = param_groups(
        {"model": model, "method": method},
        lr=cfg.optimizer.lr,
        lr_mult=OmegaConf.to_container(cfg.lr_mult),
        weight_decay=cfg.optimizer.weight_decay,
    )
    optimizer = instantiate(cfg.optimizer)(groups)
    assert isinstance(optimizer, torch.optim.SGD)
    lrs = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert lrs[id(next(model.backbone.parameters()))] == pytest.approx(0.0002)
    assert lrs[id(model.head.weight)] == pytest.approx(0.002)
    assert lrs[id(next(terms["cdan"].parameters()))] == pytest.approx(0.002)
    assert all(g["weight_decay"] == 0.001 and g["nesterov"] for g in optimizer.param_groups)
    assert instantiate(cfg.scheduler)(1000) == pytest.approx(2**-0.75)


def test_office_home_multirun_covers_the_12_transfer_tasks():
    with initialize_config_module("mic.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["experiment=officehome_sdat_mic_vit", "dataset.root=/data"],
            return_hydra_config=True,
        )
    pairs = cfg.hydra.sweeper.params["dataset.pair"].split(",")
    domains = ["Ar", "Cl", "Pr", "Rw"]
    assert sorted(pairs) == sorted(f"{s}2{t}" for s, t in itertools.permutations(domains, 2))
    for pair in pairs:
        c = load_config(
            ["experiment=officehome_sdat_mic_vit", "dataset.root=/r", f"dataset.pair={pair}"]
        )
        assert instantiate(c.dataset.source.domain) == pair[:2]
        assert (
            instantiate(c.dataset.target.domain) == instantiate(c.dataset.test.domain) == pair[3:]
        )


def test_the_published_experiments_without_mic_are_sdat_alone():
    for experiment in PUBLISHED:
        cfg = load_config([f"experiment={experiment}", "dataset.root=/data", "mic=none"])
        assert list(build_method(cfg).terms) == ["source", "cdan", "mcc"]


def test_settings_of_a_term_switched_off_are_left_out_with_a_warning():
    cfg = load_config(["mic=none", "+method.terms.mic.weight=2.0"])
    with pytest.warns(UserWarning, match=r"method.terms.mic has settings \(weight\)"):
        terms = build_method(cfg).terms
    assert list(terms) == ["source", "self_training"]


@pytest.mark.parametrize(
    ("method", "passes", "discriminator_batch_norm"),
    [
        ("dann", separate_forward, False),  # ahead on digits (digits_normalisation.md)
        ("cdan", separate_forward, True),
        ("cdan_e", separate_forward, True),
        ("mcc", separate_forward, None),
        ("sdat", joint_forward, True),  # the published SDAT code
    ],
)
def test_alignment_method_configs_choose_how_batchnorm_sees_the_domains(
    method, passes, discriminator_batch_norm
):
    built = dict(build_method(load_config([f"method={method}", "mic=none"])))
    assert {t.shared_forward for t in built.values()} == {passes}
    discriminators = [t.discriminator for t in built.values() if hasattr(t, "discriminator")]
    has_batch_norm = [
        any(isinstance(m, torch.nn.BatchNorm1d) for m in d.modules()) for d in discriminators
    ]
    assert has_batch_norm == (
        [] if discriminator_batch_norm is None else [discriminator_batch_norm]
    )


def test_the_vit_config_takes_images_of_the_data_sets_size():
    size = 32  # timm's ViT-B/16 takes 224 px unless told
    overrides = [f"dataset.{k}=/data/{k}" for k in ("root_source", "root_target", "root_test")]
    model = ["model=vit_b16", "model.pretrained=false"]
    cfg = load_config(
        [*overrides, *model, "dataset=folders", "dataset.num_classes=3", f"dataset.size={size}"]
    )
    assert cfg.model.img_size == size  # timm's 224 px position embedding, resampled
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 3)
