"""The segmentation experiment configs: published hyperparameters, and a tiny run end to end."""

import json

import pytest
import torch
from omegaconf import OmegaConf

from mic.experiment import load_config, run_experiment
from mic.train import user_error

pytestmark = pytest.mark.usefixtures("one_thread")


THINGS = [6, 7, 11, 12, 13, 14, 15, 16, 17, 18]


def _resolved(experiment):
    return OmegaConf.to_container(load_config([f"experiment={experiment}"]), resolve=True)


@pytest.mark.parametrize(
    "experiment, dataset, images, margins, protocol, augmented",
    [
        ("gta2cs_daformer_mic", "gta2cityscapes", "target", [15, 120, 0, 0], "cityscapes19", True),
        (
            "synthia2cs_daformer_mic",
            "synthia2cityscapes",
            "target",
            [15, 120, 0, 0],
            "synthia16",
            True,
        ),
        (
            "cs2acdc_daformer_mic",
            "cityscapes2acdc",
            "source+target",
            [0, 0, 0, 0],
            "cityscapes19",
            False,
        ),
        (
            "cs2darkzurich_daformer_mic",
            "cityscapes2darkzurich",
            "source+target",
            [0, 0, 0, 0],
            "cityscapes19",
            False,
        ),
    ],
)
def test_published_hyperparameters(experiment, dataset, images, margins, protocol, augmented):
    c = _resolved(experiment)
    assert c["dataset"]["name"] == dataset and c["dataset"]["num_classes"] == 19
    assert c["model"]["_target_"] == "mic.tasks.segmentation.DAFormer"
    assert c["model"]["encoder"] == "mit_b5" and c["model"]["pretrained"] is True
    assert c["model"]["embed_dim"] == 256 and c["model"]["dilations"] == [1, 6, 12, 18]
    # optimiser and schedule: AdamW 6e-5, weight decay 0.01, head x10, no decay on norm / pos
    assert c["optimizer"]["_target_"] == "torch.optim.AdamW"
    assert c["optimizer"]["lr"] == 6e-5 and c["optimizer"]["weight_decay"] == 0.01
    assert c["lr_mult"] == {"model.decode_head": 10.0}
    assert c["no_weight_decay"] == ["norm", "pos_block"]
    s = c["scheduler"]
    assert (s["max_iters"], s["warmup_iters"], s["power"], s["warmup_ratio"]) == (
        40000,
        1500,
        1.0,
        1e-6,
    )
    assert c["iterations"] == 40000 and c["adaptation_start"] == 0
    assert c["loader"]["source_batch_size"] == 2 and c["loader"]["target_batch_size"] == 2
    assert c["teacher"]["alpha"] == 0.999
    # DACS + rare class sampling + feature distance
    terms = c["method"]["terms"]
    assert c["method"]["name"] == "daformer" and c["dataset"]["source"]["enabled"] is True
    rcs = c["dataset"]["source"]
    assert (rcs["temperature"], rcs["min_pixels"], rcs["min_crop_ratio"]) == (0.01, 3000, 0.5)
    fd = terms["feature_distance"]
    assert (fd["weight"], fd["classes"], fd["min_ratio"]) == (0.005, THINGS, 0.75)
    mix = terms["mix"]
    assert (mix["weighting"], mix["tau"]) == ("quality", 0.968)
    a = mix["augmentation"]
    assert (a["jitter_p"], a["strength"], a["blur_p"]) == (0.8, 0.2, 0.5)
    # MIC: block 32 at 512 crops, ratio 0.7, lambda 1, the base method's pseudo-labels
    m = terms["mic"]
    assert m["_target_"] == "mic.tasks.segmentation.SegmentationMIC"
    assert (m["masker"]["block_size"], m["masker"]["ratio"], m["weight"]) == (32, 0.7, 1.0)
    assert (m["weighting"], m["tau"], m["images"]) == ("quality", 0.968, images)
    assert (m["masker"]["augmentation"] is not None) == augmented
    # data: 512 crops, ImageNet normalisation, whole-image test at half resolution
    assert c["dataset"]["crop_size"] == [512, 512]
    assert c["dataset"]["mean"] == [0.485, 0.456, 0.406]
    assert c["task"]["inference"] == "whole" and c["task"]["pseudo_label_margins"] == margins
    assert c["task"]["protocol"] == protocol
    src = c["dataset"]["source"]["dataset"]["transform"]
    assert src["crop_size"] == [512, 512] and src["cat_max_ratio"] == 0.75 and src["flip"]
    assert c["dataset"]["test"]["transform"]["keep_label_size"] is True


def test_source_scales_of_the_published_pipelines():
    scale = lambda e, k: _resolved(e)["dataset"][k]  # noqa: E731
    assert scale("gta2cs_daformer_mic", "source")["dataset"]["transform"]["scale"] == [1280, 720]
    assert scale("synthia2cs_daformer_mic", "source")["dataset"]["transform"]["scale"] == [
        1280,
        760,
    ]
    assert scale("cs2acdc_daformer_mic", "target")["transform"]["scale"] == [960, 540]
    assert scale("cs2darkzurich_daformer_mic", "test")["transform"]["scale"] == [960, 540]


TINY = [
    "experiment=streets",
    "iterations=3",
    "eval.interval=0",
    "eval.adabn_batches=1",
    "dataset.train_count=8",
    "dataset.test_count=4",
    "dataset.size=32",
    "model.widths=[4,8,8]",
    "loader.source_batch_size=4",
    "loader.target_batch_size=4",
    "loader.test_batch_size=4",
    "log.progress=false",
    "log.tensorboard=false",
    "task.visualize=2",
    "device=cpu",
]


def test_streets_experiment_end_to_end_with_prediction_images_and_iou_table(tmp_path, caplog):
    caplog.set_level("INFO", logger="mic")
    summary = run_experiment(load_config([*TINY, "method=daformer"]), tmp_path)
    assert summary["metric"] == "miou" and summary["after_adaptation"]["step"] == 3
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = set().union(*records)
    assert {"loss/source", "loss/feature_distance", "loss/mix", "loss/mic"} <= losses
    assert (
        len(
            next(r for r in records if "eval/teacher/per_class_iou" in r)[
                "eval/teacher/per_class_iou"
            ]
        )
        == 8
    )
    pictures = sorted(p.name for p in (tmp_path / "predictions" / "iter_00000003").iterdir())
    assert pictures == ["00_student.png", "00_teacher.png", "01_student.png", "01_teacher.png"]
    assert "per-class IoU (%) at iteration 3" in caplog.text and "sidewalk" in caplog.text


def test_model_and_dataset_class_counts_disagree():
    with pytest.raises(Exception) as info:
        run_experiment(load_config([*TINY, "model.num_classes=5"]))
    assert "the model predicts 5 classes" in user_error(info.value)


@pytest.mark.parametrize(("tau", "q"), [(0.0, 1.0), (1.0, 0.0)])
def test_dacs_and_mic_log_the_quality_weight_and_the_mic_loss(tmp_path, tau, q):
    overrides = [*TINY, "log.interval=1", f"pseudo_label_threshold={tau}"]
    run_experiment(load_config(overrides), tmp_path)
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "loss/mic" in r]
    assert [r["step"] for r in logged] == [1, 2, 3]
    for r in logged:
        assert r["mic/q"] == r["mix/q"] == q  # every pixel is >= 0, none is >= 1
        assert 1 / 8 < r["mic/confidence"] == r["mix/confidence"] <= 1


def test_quality_statistics_by_hand():
    from mic import PseudoLabelWeighting
    from mic.tasks.common import quality_statistics

    confidence = torch.tensor([[0.5, 0.97], [0.99, 0.2]])
    stats = quality_statistics(confidence, PseudoLabelWeighting("quality", 0.968))
    assert stats["q"].item() == pytest.approx(0.5)
    assert stats["confidence"].item() == pytest.approx(0.665)
