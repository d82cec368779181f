"""The detectron2 backend: its losses are detectron2's own at unit weights, it builds from the
model zoo's published config and loads detectron2 checkpoints, its settings fail clearly, the
published Cityscapes -> Foggy Cityscapes experiment on it, the start-up check of the build, and
one clear paragraph with install instructions where detectron2 is missing (through mic-train:
tests/test_bad_input.py, case env-no-detectron2)."""

from __future__ import annotations

import copy
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mic import ConfigError
from mic.experiment import load_config
from mic.tasks.detection import LOSS_PARTS, Detectron2RCNN, detectron2_build
from tests.cli import run_mic_train
from tests.det_helpers import TINY_DET, TINY_SIZES, need, tiny_batch, tiny_detector

ROOT = Path(__file__).parents[1]
R18 = {"MODEL.RESNETS.DEPTH": 18, "MODEL.RESNETS.RES2_OUT_CHANNELS": 64}


@pytest.fixture
def detectron2():
    need("detectron2")


@pytest.mark.usefixtures("detectron2", "one_thread")
@pytest.mark.parametrize(
    "kwargs",
    [
        {"backbone": "test_efficientnet", "fpn_channels": 16, "representation_size": 32},
        {"opts": R18, "fpn_channels": 32, "representation_size": 64, "norm": "batch"},
    ],
    ids=["timm", "resnet18"],
)
def test_unit_weights_give_detectron2s_own_losses(kwargs):
    """The re-done losses equal those of detectron2's RPN and StandardROIHeads on the same
    weights, images, targets and random samples."""
    from detectron2.modeling import GeneralizedRCNN
    from detectron2.modeling.proposal_generator.rpn import RPN
    from detectron2.modeling.roi_heads import StandardROIHeads
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    torch.manual_seed(0)
    model = Detectron2RCNN(num_classes=3, **TINY_SIZES, **kwargs).train()
    cfg, shapes = model.cfg, model.rcnn.backbone.output_shape()
    stock = GeneralizedRCNN(
        backbone=copy.deepcopy(model.rcnn.backbone),
        proposal_generator=RPN(cfg, shapes),
        roi_heads=StandardROIHeads(cfg, shapes),
        pixel_mean=cfg.MODEL.PIXEL_MEAN,
        pixel_std=cfg.MODEL.PIXEL_STD,
        input_format=cfg.INPUT.FORMAT,
    ).train()
    stock.load_state_dict(model.rcnn.state_dict())
    images, targets = tiny_batch()
    torch.manual_seed(1)
    ours = model(images, [{**t, "weights": torch.ones(len(t["boxes"]))} for t in targets])
    inputs = [
        {
            "image": 255 * (x if cfg.INPUT.FORMAT == "RGB" else x.flip(0)),
            "instances": Instances((64, 64), gt_boxes=Boxes(t["boxes"]), gt_classes=t["labels"]),
        }
        for x, t in zip(images, targets, strict=True)
    ]
    torch.manual_seed(1)
    with EventStorage(0):
        theirs = stock(inputs)
    names = ["loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"]
    assert tuple(ours) == LOSS_PARTS
    for part, name in zip(LOSS_PARTS, names, strict=True):
        assert theirs[name] > 0
        assert torch.allclose(ours[part], theirs[name], rtol=1e-5), (part, ours, theirs)


@pytest.mark.usefixtures("detectron2", "one_thread")
def test_the_zoo_r50_fpn_builds_loads_detectron2_weights_and_predicts(tmp_path):
    # from scratch: trainable BatchNorm, every stage trains
    scratch = Detectron2RCNN(num_classes=8, norm="auto", min_size=64, max_size=64)
    cfg = scratch.cfg.MODEL
    assert (cfg.RESNETS.DEPTH, cfg.RESNETS.NORM, cfg.BACKBONE.FREEZE_AT) == (50, "BN", 0)
    assert scratch.fpn_channels == 256 and scratch.representation_size == 1024
    assert all(p.requires_grad for p in scratch.parameters())
    assert scratch.image_mean == pytest.approx([0.485, 0.456, 0.406], abs=1e-3)
    assert scratch.image_std == pytest.approx([1 / 255] * 3)  # the MSRA weights' pixels
    # a detectron2 checkpoint (here: that model's weights) as published: frozen BatchNorm,
    # stem and res2 frozen (the config's FREEZE_AT), the classifier of another class count
    # left out
    path = tmp_path / "model.pth"
    torch.save({"model": scratch.rcnn.state_dict()}, path)
    loaded = Detectron2RCNN(num_classes=3, weights=str(path), min_size=64, max_size=64)
    assert (loaded.cfg.MODEL.RESNETS.NORM, loaded.cfg.MODEL.BACKBONE.FREEZE_AT) == ("FrozenBN", 2)
    norms = {type(m).__name__ for m in loaded.rcnn.backbone.modules()}
    assert "FrozenBatchNorm2d" in norms and "BatchNorm2d" not in norms
    stem = "backbone.bottom_up.stem.conv1.weight"
    res4 = "backbone.bottom_up.res4.0.conv1.weight"
    params = dict(loaded.rcnn.named_parameters())
    assert not params[stem].requires_grad and params[res4].requires_grad
    assert torch.equal(params[res4], dict(scratch.rcnn.named_parameters())[res4])
    assert loaded.rcnn.roi_heads.box_predictor.cls_score.weight.shape[0] == 3 + 1
    loaded.eval()
    with torch.no_grad():
        out = loaded([torch.rand(3, 48, 80)])
    assert set(out[0]) == {"boxes", "labels", "scores"}


@pytest.mark.usefixtures("detectron2")
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"config": "COCO-Detection/faster_rcnn_R_5_FPN.yaml"}, "neither a file nor"),
        ({"config": "COCO-Detection/retinanet_R_50_FPN_1x.yaml"}, "builds Faster R-CNN"),
        ({"opts": {"MODEL.RESNETS.DEPT": 18}}, "model.opts: Non-existent key: MODEL.RESNETS.DEPT"),
        ({"opts": {"MODEL": {"RESNETS": {"DEPTH": "deep"}}}}, "model.opts: Type mismatch"),
        ({"norm": "group"}, "model.norm must be"),
        ({"trainable_layers": 7}, "trainable_layers must lie in [0, 5]"),
        ({"num_classes": 0}, "at least 1 class"),
        ({"anchor_sizes": [8, 16]}, "anchor_sizes has 2 sizes but the RPN reads 5"),
        ({"pretrained": True, "opts": {**R18, "MODEL.WEIGHTS": ""}}, "names no MODEL.WEIGHTS"),
        # a path that is no file: it was told to fetch the file without internet
        ({"weights": "/nowhere/model_final.pkl"}, "model_final.pkl: no such file (from"),
    ],
)
def test_bad_detectron2_settings_are_clear(kwargs, message):
    kwargs = {"num_classes": 2, "opts": R18, **kwargs}  # ResNet-18: quick to build
    with pytest.raises(ConfigError, match=re.escape(message)):
        Detectron2RCNN(**kwargs)


@pytest.mark.usefixtures("detectron2")
@pytest.mark.parametrize(
    ("kwargs", "opts", "refused", "instead"),
    [
        (
            {},
            {"MODEL.ROI_HEADS.NUM_CLASSES": 7},
            "MODEL.ROI_HEADS.NUM_CLASSES",
            "model.num_classes",
        ),
        ({}, {"MODEL": {"RESNETS": {"NORM": "GN"}}}, "MODEL.RESNETS.NORM", "model.norm"),
        (
            {"rpn_nms_thresh": 0.7},
            ["MODEL.RPN.NMS_THRESH", 0.6],
            "MODEL.RPN.NMS_THRESH",
            "model.rpn_nms_thresh",
        ),
        (
            {"image_mean": [0.5] * 3},
            {"MODEL.PIXEL_MEAN": [0, 0, 0]},
            "MODEL.PIXEL_MEAN",
            "image_mean",
        ),
        ({}, {"INPUT.FORMAT": "RGB"}, "INPUT.FORMAT", "YAML file of your own as model.config"),
        ({}, {"MODEL.MASK_ON": True}, "MODEL.MASK_ON", "always off"),
        # a whole node that holds one of mic's keys
        ({}, ["MODEL.ROI_HEADS", {"NUM_CLASSES": 7}], "MODEL.ROI_HEADS.NUM_CLASSES", "num_classes"),
    ],
    ids=["num-classes", "nested", "flat-list", "pixel-mean", "format", "masks", "node"],
)
def test_opts_refuse_the_keys_mic_sets_itself(kwargs, opts, refused, instead):
    with pytest.raises(ConfigError) as error:
        Detectron2RCNN(num_classes=2, opts=opts, **kwargs)
    text = str(error.value)
    assert f"{refused} (" in text and instead in text and "Remove them from model.opts" in text
    assert "\n" not in text  # one paragraph


@pytest.mark.usefixtures("detectron2")
@pytest.mark.parametrize(
    ("kwargs", "opts", "refused", "instead"),
    [
        ({}, {"SOLVER.BASE_LR": 0.5}, "SOLVER.BASE_LR", "optimizer.*"),
        ({}, {"INPUT": {"MIN_SIZE_TRAIN": [64]}}, "INPUT.MIN_SIZE_TRAIN", "model.min_size"),
        ({}, {"INPUT.RANDOM_FLIP": "none"}, "INPUT.RANDOM_FLIP", "augmentation"),
        ({}, {"DATALOADER.NUM_WORKERS": 0}, "DATALOADER.NUM_WORKERS", "loader.*"),
        ({}, {"TEST.EVAL_PERIOD": 10}, "TEST.EVAL_PERIOD", "eval.*"),
        ({}, {"SEED": 3}, "SEED", "no setting of the model"),
        ({}, {"MODEL.ROI_MASK_HEAD.NAME": "x"}, "MODEL.ROI_MASK_HEAD.NAME", "Faster R-CNN"),
        # without pretrained (the small config's default): never loaded
        ({}, {"MODEL.WEIGHTS": "/tmp/r18.pth"}, "MODEL.WEIGHTS", "model.weights=<file>"),
        ({"backbone": "test_efficientnet"}, R18, "MODEL.RESNETS.DEPTH", "model.backbone=null"),
    ],
    ids=["solver", "input-nested", "flip", "loader", "test", "seed", "masks", "weights", "resnet"],
)
def test_opts_refuse_the_keys_the_backend_does_not_read(kwargs, opts, refused, instead):
    """Keys of detectron2's trainer, of other models, or of a part not built were applied to
    a config nothing reads again: the run trained as without them, without a word."""
    opts = {**R18, **opts} if "backbone" not in kwargs else opts
    with pytest.raises(ConfigError) as error:
        Detectron2RCNN(num_classes=2, opts=opts, **kwargs)
    text = str(error.value)
    assert "does not read, so they would change nothing" in text, text
    assert f"{refused} (" in text and instead in text, text


@pytest.mark.usefixtures("detectron2")
@pytest.mark.parametrize(
    "opts",
    [
        {**R18, "MODEL.WEIGHTS": "/nowhere/r18.pth"},
        {"MODEL": {"RESNETS": {"DEPTH": 18, "RES2_OUT_CHANNELS": 64}, "WEIGHTS": "/nowhere"}},
        [x for k, v in {**R18, "MODEL.WEIGHTS": "/nowhere/r18.pth"}.items() for x in (k, v)],
    ],
    ids=["dotted", "nested", "list"],
)
def test_a_run_that_set_model_weights_in_opts_is_rebuilt_for_its_checkpoints(opts):
    """load_run and mic-score rebuild a run's model without its pretrained weights (its
    checkpoint's replace them): the MODEL.WEIGHTS of its opts, read only with pretrained,
    was refused there, so such a run could not be loaded or scored."""
    from hydra.utils import instantiate

    from mic.experiment import _without_pretrained_weights

    node = OmegaConf.create(
        {
            "_target_": "mic.tasks.detection.Detectron2RCNN",
            "num_classes": 2,
            "pretrained": True,
            "norm": "auto",
            "opts": opts,
            **TINY_SIZES,
        }
    )
    with pytest.raises(Exception, match=r"/nowhere"):  # as the run had it (Hydra wraps it)
        instantiate(node)
    model = instantiate(_without_pretrained_weights(node))
    assert model.cfg.MODEL.RESNETS.DEPTH == 18 and model.cfg.MODEL.RESNETS.NORM == "FrozenBN"


@pytest.mark.usefixtures("detectron2")
def test_detectron2_s_own_refusal_of_a_config_is_a_config_error():
    # ResNet-18 without its RES2_OUT_CHANNELS: detectron2's assert escaped as Hydra's error
    with pytest.raises(ConfigError, match=r"detectron2 cannot build the backbone of model\.con"):
        Detectron2RCNN(num_classes=2, opts={"MODEL.RESNETS.DEPTH": 18})


@pytest.mark.usefixtures("detectron2")
def test_a_config_without_an_fpn_refuses_an_fpn_width_and_sada_its_own():
    """DC5 builds no FPN: model.fpn_channels was ignored, and SADA's classifiers refused the
    detector's 2048 channels only once adaptation began."""
    from mic.tasks.detection import DomainAdversarial

    dc5 = "COCO-Detection/faster_rcnn_R_50_DC5_1x.yaml"
    with pytest.raises(ConfigError, match=r"model.fpn_channels=64 sets the width of an FPN, bu"):
        Detectron2RCNN(config=dc5, num_classes=2, fpn_channels=64, opts=R18)
    detector = Detectron2RCNN(
        config=dc5, num_classes=2, opts={**R18, "MODEL.RESNETS.RES5_DILATION": 1}
    )
    with pytest.raises(
        ConfigError, match=r"DomainAdversarial\(channels=64\) but the detector's fpn_c"
    ):
        DomainAdversarial(channels=64, roi_features=detector.representation_size).check_student(
            detector
        )
    DomainAdversarial(
        channels=detector.fpn_channels, roi_features=detector.representation_size
    ).check_student(detector)


@pytest.mark.usefixtures("detectron2", "one_thread")
def test_opts_set_the_keys_whose_argument_is_not_given():
    """A key mic sets only from an argument goes through ``opts`` where that argument is
    left out (no conflict: mic leaves the config's value alone)."""
    model = Detectron2RCNN(
        num_classes=2,
        opts={**R18, "MODEL.RPN.NMS_THRESH": 0.6, "MODEL.PIXEL_STD": [50.0, 50.0, 50.0]},
        **TINY_SIZES,
    )
    assert model.cfg.MODEL.RPN.NMS_THRESH == 0.6
    assert model.image_std == pytest.approx([50 / 255] * 3)


@pytest.mark.usefixtures("detectron2", "one_thread")
@pytest.mark.filterwarnings("ignore:model.trainable_layers=4 freezes")  # (random weights here)
def test_every_key_mic_sets_is_refused_in_opts_and_others_are_applied():
    """Every detectron2 config key the arguments (or mic, always) change is in MIC_KEYS, so
    that ``opts`` cannot override it; a key mic leaves alone still goes through."""
    from detectron2.config import get_cfg

    from mic.tasks.detection.detectron2_rcnn import MIC_KEYS, config_file

    opts = {"MODEL.ROI_HEADS.POSITIVE_FRACTION": 0.5}
    model = Detectron2RCNN(
        num_classes=3,
        backbone="test_efficientnet",  # RGB, timm's mean and std
        norm="batch",
        trainable_layers=4,
        fpn_channels=16,
        representation_size=32,
        image_std=[0.2, 0.2, 0.2],
        aspect_ratios=[1.0],
        rpn_batch_size_per_image=64,
        rpn_nms_thresh=0.6,
        box_score_thresh=0.1,
        box_nms_thresh=0.4,
        box_detections_per_img=30,
        opts=opts,
        **TINY_SIZES,
    )
    zoo = get_cfg()
    zoo.merge_from_file(config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))

    def leaves(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    before = dict(leaves(zoo))
    changed = {k for k, v in leaves(model.cfg) if before[k] != v} - set(opts)
    assert len(changed) >= 20  # the test gives (nearly) every argument a value of its own
    assert changed <= set(MIC_KEYS), changed - set(MIC_KEYS)
    assert model.rcnn.roi_heads.positive_fraction == 0.5


@pytest.mark.usefixtures("detectron2", "one_thread")
def test_weights_of_another_depth_are_refused_and_backbone_weights_alone_load(tmp_path):
    """detectron2 loads any file leniently (it logs what it left out): a ResNet-18 model's
    weights in a ResNet-34 left its deeper blocks random, silently; a ResNet-34's in a
    ResNet-18 brought blocks it has not."""
    r34_opts = {**R18, "MODEL.RESNETS.DEPTH": 34}
    sizes = {"min_size": 64, "max_size": 64}
    models = {
        "r18": Detectron2RCNN(num_classes=3, opts=R18, **sizes),
        "r34": Detectron2RCNN(num_classes=3, opts=r34_opts, **sizes),
    }
    files = {}
    for name, model in models.items():
        files[name] = tmp_path / f"{name}.pth"
        torch.save({"model": model.rcnn.state_dict()}, files[name])
    state = models["r18"].rcnn.state_dict()
    body = {k: v for k, v in state.items() if k.startswith("backbone.bottom_up.")}
    files["r18_backbone"] = tmp_path / "r18_backbone.pth"  # as ImageNet weights: no FPN, heads
    torch.save({"model": body}, files["r18_backbone"])
    for opts, name, told in [
        (r34_opts, "r18", "fill 60 of the backbone's 108 tensors"),  # its deeper blocks: none
        (R18, "r34", "tensors this model does not have"),  # blocks it has not
    ]:
        with pytest.raises(ConfigError, match="they are another model's") as caught:
            Detectron2RCNN(num_classes=3, opts=opts, weights=str(files[name]), **sizes)
        assert told in str(caught.value) and str(files[name]) in str(caught.value)
    loaded = Detectron2RCNN(num_classes=3, opts=R18, weights=str(files["r18_backbone"]), **sizes)
    stem = "backbone.bottom_up.stem.conv1.weight"
    assert torch.equal(loaded.rcnn.state_dict()[stem], body[stem])


@pytest.mark.usefixtures("detectron2")
def test_mic_train_refuses_weights_that_are_no_detectron2_model_s(tmp_path):
    junk = tmp_path / "classifier.pth"
    torch.save({"model": {"fc.weight": torch.zeros(10, 8)}}, junk)
    run = tmp_path / "run"
    out = run_mic_train(
        [*TINY_DET, "model=d2_faster_rcnn_small", f"model.weights={junk}", f"hydra.run.dir={run}"]
    )
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    error = next(line for line in out.stderr.splitlines() if line.startswith("mic: error: "))
    assert f"the detectron2 weights '{junk}' fill 0 of the backbone's" in error, error
    assert not list(run.glob("checkpoints/*.pt"))


@pytest.mark.usefixtures("detectron2")
def test_mic_train_refuses_a_class_count_in_opts_before_training(tmp_path):
    """The user trial's command: a 7-class head on the 4-class shapes stops at once with the
    setting to use instead, where it trained and crashed at the first evaluation."""
    run = tmp_path / "run"
    out = run_mic_train(
        [
            *TINY_DET,
            "model=d2_faster_rcnn_small",
            "+model.opts.MODEL.ROI_HEADS.NUM_CLASSES=7",
            f"hydra.run.dir={run}",
        ]
    )
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    error = next(line for line in out.stderr.splitlines() if line.startswith("mic: error: "))
    assert "model.opts sets detectron2 config keys that mic sets itself" in error
    assert "MODEL.ROI_HEADS.NUM_CLASSES (use model.num_classes" in error
    assert not list(run.glob("checkpoints/*.pt"))


def test_cityscapes_foggy_on_detectron2_has_the_published_hyperparameters():
    c = OmegaConf.to_container(
        load_config(["experiment=cityscapes_foggy_d2", "dataset.root=/data/cs"]), resolve=True
    )
    m = c["model"]
    assert m["_target_"] == "mic.tasks.detection.Detectron2RCNN"
    assert m["config"] == "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml" and m["backbone"] is None
    assert m["pretrained"] is True and m["norm"] == "auto"  # ImageNet R-50, frozen BatchNorm
    assert (m["min_size"], m["max_size"], m["num_classes"]) == (800, 1600, 8)
    assert (m["fpn_channels"], m["representation_size"]) == (256, 1024)
    # published ROI_HEADS.BATCH_SIZE_PER_IMAGE; FPN_POST_NMS_TOP_N_TRAIN 2000 per two images
    assert (m["box_batch_size_per_image"], m["rpn_post_nms_top_n_train"]) == (256, 1000)
    assert c["dataset"]["name"] == "cityscapes_foggy" and c["dataset"]["beta"] == 0.02
    assert c["iterations"] == 60000 and c["adaptation_start"] == 0
    assert c["optimizer"]["lr"] == 0.0025 and c["optimizer"]["weight_decay"] == 0.0001
    assert c["optimizer"]["momentum"] == 0.9
    # maskrcnn-benchmark's SOLVER.BIAS_LR_FACTOR 2 and WEIGHT_DECAY_BIAS 0
    assert c["bias_lr_factor"] == 2.0 and c["no_weight_decay"] == ["bias"]
    assert c["scheduler"]["steps"] == [30000, 40000]
    assert c["loader"]["source_batch_size"] == c["loader"]["target_batch_size"] == 1
    assert c["teacher"]["alpha"] == 0.9 and c["task"]["score_threshold"] == 0.8
    adversarial = c["method"]["terms"]["adversarial"]
    assert adversarial["image_weight"] == 0.025 and adversarial["instance_weight"] == 0.1
    assert (adversarial["channels"], adversarial["roi_features"]) == (256, 1024)
    mic = c["method"]["terms"]["mic"]
    assert mic["masker"]["block_size"] == 32 and mic["masker"]["ratio"] == 0.5
    assert mic["part_weights"] == {"rpn_box": 0.0, "roi_box": 0.0}
    assert mic["masker"]["fill"] == [0.485, 0.456, 0.406]
    # the same recipe as the torchvision experiment, but for the model
    tv = OmegaConf.to_container(
        load_config(["experiment=cityscapes_foggy", "dataset.root=/data/cs"]), resolve=True
    )
    assert {k: v for k, v in c.items() if k != "model"} == {
        k: v for k, v in tv.items() if k != "model"
    }


@pytest.mark.usefixtures("detectron2")
def test_start_up_says_which_detectron2_build_is_present(caplog):
    from mic.tasks.detection.detectron2_rcnn import require_detectron2

    require_detectron2.said = False
    with caplog.at_level(logging.INFO, logger="mic.tasks.detection.detectron2_rcnn"):
        build = require_detectron2()
    assert build == detectron2_build()
    expected = "compiled with its C++/CUDA ops" if build == "compiled" else "without its C++"
    assert expected in caplog.text


@pytest.mark.usefixtures("detectron2")
def test_the_install_script_leaves_an_installed_detectron2_alone():
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install_detectron2_cpu.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "is already installed" in out.stdout and "nothing to do" in out.stdout


def test_mic_and_the_torchvision_backend_import_without_detectron2():
    # tests/faults/environment.py makes `import detectron2` fail, as where it is missing;
    # mic-train's message for that is a case of tests/test_bad_input.py
    fault = ROOT / "tests" / "faults" / "environment.py"
    code = (
        "import importlib.util as u; s = u.spec_from_file_location('fault', "
        f"{str(fault)!r}); s.loader.exec_module(u.module_from_spec(s)); "
        "import mic, mic.tasks.detection as d; print(d.detectron2_build(), d.FasterRCNN.__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "MIC_TEST_FAULT": "no-detectron2"},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["None", "FasterRCNN"]


@pytest.mark.usefixtures("detectron2")
def test_a_detectron2_yaml_file_of_ones_own_works_as_the_config(tmp_path):
    from detectron2 import model_zoo

    base = Path(model_zoo.__file__).parent / "configs" / "Base-RCNN-FPN.yaml"
    own = tmp_path / "r18.yaml"
    own.write_text(
        f"_BASE_: {base}\nMODEL:\n  RESNETS:\n    DEPTH: 18\n    RES2_OUT_CHANNELS: 64\n"
    )
    model = Detectron2RCNN(config=str(own), num_classes=2, fpn_channels=32)
    assert model.cfg.MODEL.RESNETS.DEPTH == 18 and model.fpn_channels == 32
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  RESNET:\n    DEPTH: 18\n")
    with pytest.raises(
        ConfigError, match=re.escape("cannot be read: Non-existent config key: MODEL.RESNET")
    ):
        Detectron2RCNN(config=str(bad), num_classes=2)


@pytest.mark.usefixtures("detectron2")
def test_a_detectron2_that_cannot_be_imported_is_told_apart_from_a_missing_one(monkeypatch):
    monkeypatch.setitem(sys.modules, "detectron2.modeling", None)
    with pytest.raises(ConfigError, match=r"detectron2 0\.6 is installed but cannot be imported"):
        Detectron2RCNN(num_classes=2)
    assert detectron2_build() is not None
    monkeypatch.setitem(sys.modules, "detectron2", None)
    with pytest.raises(ConfigError) as missing:
        Detectron2RCNN(num_classes=2)
    for fragment in (
        "needs detectron2",
        "pip install -e '.[detectron2]'",
        "bash scripts/install_detectron2_cpu.sh",
        "with its CUDA ops",
        "model=faster_rcnn_r50",
    ):
        assert fragment in str(missing.value)
    assert "\n" not in str(missing.value)  # one paragraph
    assert detectron2_build() is None


@pytest.mark.usefixtures("detectron2", "one_thread")
def test_a_mic_file_given_as_detectron2_weights_points_to_init_from(tmp_path):
    """A run's student.pt (names under ``rcnn.``) was called another model's, a checkpoint
    unreadable 'without internet'."""
    from mic.training.checkpoint import save_checkpoint, save_weights

    model = Detectron2RCNN(num_classes=3, opts=R18, min_size=64, max_size=64)
    files = [
        save_weights(model, tmp_path / "student.pt"),
        save_checkpoint({"step": 1, "student": model.state_dict()}, tmp_path / "best.pt"),
    ]
    # the torchvision detector's student.pt was called another model's weights
    files.append(save_weights(tiny_detector(), tmp_path / "torchvision_student.pt"))
    for file in files:
        with pytest.raises(ConfigError, match="is a mic file of the whole model") as caught:
            Detectron2RCNN(num_classes=3, opts=R18, weights=str(file), min_size=64, max_size=64)
        assert "init_from=" in str(caught.value)
        assert "not detectron2's" in str(caught.value)  # named before detectron2 loads it
