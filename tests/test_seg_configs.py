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


@pytest.mark.parametrize(
    "experiment, dataset, images, margins, protocol, scales",
    [
        (
            "gta2cs_hrda_mic",
            "gta2cityscapes",
            "target",
            [30, 240, 0, 0],
            "cityscapes19",
            ([2560, 1440], [2048, 1024], [2048, 1024]),
        ),
        (
            "synthia2cs_hrda_mic",
            "synthia2cityscapes",
            "target",
            [30, 240, 0, 0],
            "synthia16",
            ([2560, 1520], [2048, 1024], [2048, 1024]),
        ),
        (
            "cs2acdc_hrda_mic",
            "cityscapes2acdc",
            "source+target",
            [0, 0, 0, 0],
            "cityscapes19",
            ([2048, 1024], [1920, 1080], [1920, 1080]),
        ),
        (
            "cs2darkzurich_hrda_mic",
            "cityscapes2darkzurich",
            "source+target",
            [0, 0, 0, 0],
            "cityscapes19",
            ([2048, 1024], [1920, 1080], [1920, 1080]),
        ),
    ],
)
def test_published_hrda_hyperparameters(experiment, dataset, images, margins, protocol, scales):
    """github.com/lhoyer/MIC seg/experiments.py (id 80) and seg/configs/mic/
    gtaHR2csHR_mic_hrda.py, HRDA's configs/hrda/gtaHR2csHR_hrda.py and the *HR_1024x1024
    dataset configs."""
    c = _resolved(experiment)
    assert c["dataset"]["name"] == dataset and c["dataset"]["num_classes"] == 19
    # HRDA around DAFormer (MiT-B5): scales [1, 0.5], detail 512, offsets on 8, class-wise
    m = c["model"]
    assert m["_target_"] == "mic.tasks.segmentation.HRDA"
    assert (m["context_scale"], m["detail_crop"], m["crop_divisible"]) == (0.5, [512, 512], 8)
    assert m["detail_stride"] is None and m["classwise_attention"] is True  # overlapping windows
    s = m["segmenter"]
    assert s["_target_"] == "mic.tasks.segmentation.DAFormer" and s["encoder"] == "mit_b5"
    assert s["pretrained"] is True and s["embed_dim"] == 256 and s["dilations"] == [1, 6, 12, 18]
    # loss 0.9 fused + 0.1 detail; tests by 1024 windows every 512 px
    t = c["task"]
    assert t["_target_"] == "mic.tasks.segmentation.HRDASegmentationTask"
    assert (t["detail_loss_weight"], t["context_loss_weight"]) == (0.1, 0.0)
    assert (t["inference"], t["crop_size"], t["stride"]) == ("slide", [1024, 1024], [512, 512])
    assert t["pseudo_label_margins"] == margins and t["protocol"] == protocol
    # optimiser and schedule as DAFormer's; 'head' x10 covers the scale-attention head too
    assert c["optimizer"]["_target_"] == "torch.optim.AdamW"
    assert c["optimizer"]["lr"] == 6e-5 and c["optimizer"]["weight_decay"] == 0.01
    assert c["lr_mult"] == {"model.decode_head": 10.0, "model.scale_attention": 10.0}
    assert c["no_weight_decay"] == ["norm", "pos_block"]
    sch = c["scheduler"]
    assert (sch["max_iters"], sch["warmup_iters"], sch["power"]) == (40000, 1500, 1.0)
    assert c["iterations"] == 40000 and c["adaptation_start"] == 0
    assert c["loader"]["source_batch_size"] == 2 and c["loader"]["target_batch_size"] == 2
    assert c["teacher"]["alpha"] == 0.999
    # DAFormer's self-training; rare class re-crops to > 2 x 3000 px at the 1024 crops
    terms = c["method"]["terms"]
    assert c["method"]["name"] == "daformer" and c["dataset"]["source"]["enabled"] is True
    rcs = c["dataset"]["source"]
    assert (rcs["temperature"], rcs["min_pixels"], rcs["min_crop_ratio"]) == (0.01, 3000, 2.0)
    fd = terms["feature_distance"]
    assert (fd["weight"], fd["classes"], fd["min_ratio"]) == (0.005, THINGS, 0.75)
    assert (terms["mix"]["weighting"], terms["mix"]["tau"]) == ("quality", 0.968)
    # MIC: block 64 at 1024 crops, ratio 0.7, lambda 1 on every part of the masked loss
    mi = terms["mic"]
    assert (mi["masker"]["block_size"], mi["masker"]["ratio"], mi["weight"]) == (64, 0.7, 1.0)
    assert (mi["weighting"], mi["tau"], mi["images"]) == ("quality", 0.968, images)
    assert mi["unscaled_parts"] == []
    assert (mi["masker"]["augmentation"] is not None) == (images == "target")
    # data: 1024 crops at full resolution, flips, <= 75 % one class in source crops
    d = c["dataset"]
    assert d["crop_size"] == [1024, 1024]
    src, tgt, test = (
        d["source"]["dataset"]["transform"],
        d["target"]["transform"],
        d["test"]["transform"],
    )
    assert (src["scale"], tgt["scale"], test["scale"]) == scales
    assert src["crop_size"] == tgt["crop_size"] == [1024, 1024] and src["cat_max_ratio"] == 0.75
    assert src["flip"] and tgt["flip"] and test["keep_label_size"] is True


def test_the_daformer_experiments_keep_their_model_task_and_crops():
    c = _resolved("gta2cs_daformer_mic")
    assert c["model"]["_target_"] == "mic.tasks.segmentation.DAFormer"
    assert c["task"]["_target_"] == "mic.tasks.segmentation.SegmentationTask"
    assert c["dataset"]["crop_size"] == [512, 512] and c["lr_mult"] == {"model.decode_head": 10.0}
    assert c["method"]["terms"]["mic"]["masker"]["block_size"] == 32


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


def test_streets_hrda_experiment_end_to_end(tmp_path):
    tiny = [o for o in TINY if not o.startswith(("experiment=", "model.widths="))]
    tiny += [
        "experiment=streets_hrda",
        "model.detail_crop=[16,16]",
        "model.segmenter.widths=[4,8,8]",
    ]
    summary = run_experiment(load_config(tiny), tmp_path)
    assert summary["after_adaptation"]["step"] == 3
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = set().union(*records)
    assert {"loss/source", "loss/mix", "loss/mic"} <= logged
    # the feature distance is left out: on 2 x 2 context cells it never counts a cell
    assert "loss/feature_distance" not in logged


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

    confidence = torch.tensor([[0.5, 0.97], [0.99, 0.2]])
    stats = PseudoLabelWeighting("quality", 0.968).statistics(confidence)
    assert stats["q"].item() == pytest.approx(0.5)
    assert stats["confidence"].item() == pytest.approx(0.665)
    boxes = PseudoLabelWeighting("none", 0.968).statistics([confidence[0], confidence[1, :1]])
    assert boxes["q"].item() == pytest.approx(2 / 3)  # a list (one tensor per image) too


def test_own_segmentation_folders_take_mic_s_block_size_as_own_dataset_md_says():
    """dataset=seg_folders had no mic_block_size: dataset.mic_block_size=8 was refused, asking
    to add it with +."""
    cfg = load_config(["experiment=streets", "dataset=seg_folders", "dataset.mic_block_size=8"])
    assert cfg.method.terms.mic.masker.block_size == 8
    default = load_config(["experiment=streets", "dataset=seg_folders"])
    assert default.method.terms.mic.masker.block_size == 32  # published, at 512 px crops
