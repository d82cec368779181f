"""The detector's seams, on both backends (torchvision's FasterRCNN, detectron2's
Detectron2RCNN): per-box weights on the RPN and ROI losses, training forwards without targets,
captured features, 0-based classes, and gradient reversal."""

import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mic import ConfigError
from mic.tasks.detection import (
    BOX_REGRESSION_PARTS,
    LOSS_PARTS,
    Detectron2RCNN,
    DomainAdversarial,
    FasterRCNN,
    reverse_gradient,
    scale_gradient,
)
from mic.tasks.detection.model import build_backbone, check_detector_settings, sample_weights
from tests.det_helpers import (
    BACKENDS,
    NUM_CLASSES,
    TINY_SIZES,
    head_weights,
    need,
    tiny_batch,
    tiny_detector,
)
from tests.det_helpers import task as det_task

backends = pytest.mark.parametrize("backend", BACKENDS)
CONF_MODELS = Path(__file__).parents[1] / "conf" / "model"


def _losses(model, images, targets, weights=None, seed=0):
    torch.manual_seed(seed)  # the same anchor and proposal samples for every call
    return det_task().loss(model, images, targets, weights)


@backends
@pytest.mark.parametrize(
    "bad, error, said",
    [
        (lambda x: [(x * 255).to(torch.uint8)], TypeError, "floating point images in [0, 1]"),
        (lambda x: [x[0]], ValueError, "3 x H x W images, got one of shape (64, 64)"),
        (lambda x: [x[:, :0]], ValueError, "got one of shape (3, 0, 64)"),
        (lambda x: [], ValueError, "the detector got no images"),
        (lambda x: [x.double()], TypeError, "got float64: give image.float()"),
    ],
    ids=["uint8", "2d", "no-pixels", "none", "float64"],
)
def test_both_backends_refuse_images_they_would_misread(backend, bad, error, said):
    # detectron2 scaled uint8 images by 255 in uint8 (wrapping around: 50 boxes for 16) and
    # broadcast a 2-D image to three channels; torchvision's tracebacks were IndexError and
    # ZeroDivisionError for no images and an image of no pixels; both ended float64 images in
    # 'expected scalar type Double but found Float'
    model = tiny_detector(backend=backend).eval()
    images, _ = tiny_batch()
    with pytest.raises(error, match=re.escape(said)):
        model(bad(images[0]))


@backends
def test_loss_has_the_four_named_parts_and_back_propagates(backend):
    model = tiny_detector(backend=backend)
    images, targets = tiny_batch()
    losses = _losses(model, images, targets)
    assert tuple(losses) == LOSS_PARTS
    assert all(torch.isfinite(v) and v.requires_grad for v in losses.values())
    sum(losses.values()).backward()
    for name, weight in head_weights(model).items():
        assert weight.grad is not None and weight.grad.abs().sum() > 0, name


@backends
def test_unit_weights_change_nothing_and_a_common_factor_scales_every_part(backend):
    model = tiny_detector(backend=backend)
    images, targets = tiny_batch()
    plain = _losses(model, images, targets)
    ones = _losses(model, images, targets, [torch.ones(len(t["boxes"])) for t in targets])
    half = _losses(model, images, targets, [torch.full((len(t["boxes"]),), 0.5) for t in targets])
    for k in LOSS_PARTS:
        assert torch.allclose(plain[k], ones[k])
        assert torch.allclose(half[k], 0.5 * plain[k], atol=1e-6)


def test_weights_act_per_box_on_the_samples_matched_to_it():
    # one image, two boxes: anchors / proposals matched to box 0 weigh w0, to box 1 w1,
    # background the mean of both
    target = {"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40]]), "weights": None}
    target["weights"] = torch.tensor([0.2, 1.0])
    matched = torch.tensor([0, 1, -1, -2, 1])
    fg = matched >= 0
    w = sample_weights(target, matched, fg)
    assert torch.allclose(w, torch.tensor([0.2, 1.0, 0.6, 0.6, 1.0]))
    # no weights, or no boxes: every sample weighs 1
    assert torch.equal(sample_weights({"boxes": target["boxes"]}, matched, fg), torch.ones(5))
    empty = {"boxes": torch.zeros(0, 4), "weights": torch.zeros(0)}
    assert torch.equal(sample_weights(empty, None, torch.zeros(3, dtype=torch.bool)), torch.ones(3))


@backends
def test_zero_weight_on_one_image_removes_its_samples_from_the_losses(backend):
    model = tiny_detector(backend=backend)
    images, targets = tiny_batch()
    plain = _losses(model, images, targets)
    zero = _losses(model, images, targets, [torch.tensor([1.0, 1.0]), torch.tensor([0.0])])
    # image 2's samples weigh 0 (its boxes and, through their mean, its background)
    for k in LOSS_PARTS:
        assert zero[k] <= plain[k]
    assert zero["roi_classifier"] < plain["roi_classifier"]
    assert zero["rpn_objectness"] < plain["rpn_objectness"]


@backends
def test_a_box_weight_reaches_the_samples_matched_to_that_box(backend):
    # one image, two boxes: only the weight of box 1 changes, so only its samples (and, through
    # the mean, the background's) change; with box 1's weight 0 and box 0's 2 the background
    # still weighs 1
    model = tiny_detector(backend=backend)
    images, targets = tiny_batch(n=1)
    plain = _losses(model, images, targets)
    shifted = _losses(model, images, targets, [torch.tensor([2.0, 0.0])])
    assert not torch.allclose(shifted["roi_classifier"], plain["roi_classifier"])
    assert not torch.allclose(shifted["rpn_box"], plain["rpn_box"])
    swapped = _losses(model, images, targets, [torch.tensor([0.0, 2.0])])
    assert not torch.allclose(shifted["rpn_box"], swapped["rpn_box"])


@pytest.mark.parametrize(
    ("backbone", "kwargs"),
    [
        ("resnet50", {}),
        ("mobilenet_v3_large", {"anchor_sizes": [[16, 32, 64]] * 3}),
        ("regnetx_002", {"fpn_channels": 32, "representation_size": 64}),
    ],
)
def test_backbones_build_and_predict(backbone, kwargs):
    model = FasterRCNN(backbone, num_classes=2, min_size=64, max_size=64, **kwargs).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert set(out[0]) == {"boxes", "labels", "scores"}
    norms = {type(m).__name__ for m in model.backbone.modules()}
    assert "FrozenBatchNorm2d" not in norms  # from scratch: trainable BatchNorm


@pytest.mark.parametrize("backbone", ["resnet18", "regnetx_002"])
def test_layer_norm_detector_normalises_each_image_on_its_own(backbone):
    """``norm="layer"`` leaves no BatchNorm (torchvision's and timm's backbones), keeps the
    parameter count, and makes one image's training features independent of the others."""
    kwargs = {"min_size": 64, "max_size": 64}
    if backbone == "regnetx_002":
        kwargs.update(fpn_channels=32, representation_size=64)
    torch.manual_seed(0)
    batch = FasterRCNN(backbone, num_classes=2, **kwargs)
    layer = FasterRCNN(backbone, num_classes=2, norm="layer", **kwargs)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(batch) == count(layer)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in layer.modules())
    x = torch.rand(3, 3, 64, 64)
    other = torch.cat([x[:1], torch.rand(2, 3, 64, 64)])
    for model, alone in ((batch, False), (layer, True)):
        model.train()
        a, b = model.backbone(x), model.backbone(other)
        same = all(torch.allclose(a[k][0], b[k][0], atol=1e-5) for k in a)
        assert same is alone
    with pytest.raises(ConfigError, match=r"model\.norm must be"):
        FasterRCNN(backbone, num_classes=2, norm="group", **kwargs)
    # pretrained weights carry BatchNorm statistics: refused before any weights are looked for
    with pytest.raises(ConfigError, match=r"model\.pretrained=false"):
        FasterRCNN(backbone, num_classes=2, norm="layer", pretrained=True, **kwargs)


@backends
def test_images_without_objects_are_valid_training_samples(backend):
    model = tiny_detector(backend=backend)
    images, _ = tiny_batch()
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2
    losses = _losses(model, images, empty)
    assert losses["rpn_box"] == 0 and losses["roi_box"] == 0
    assert losses["rpn_objectness"] > 0 and losses["roi_classifier"] > 0


@backends
def test_training_forward_without_targets_captures_features_and_computes_no_loss(backend):
    model = tiny_detector(backend=backend).train()
    images, _ = tiny_batch()
    with model.capture() as captured:
        out = model(images)
    assert out == {}
    names = {"torchvision": ["0", "1", "2", "3", "pool"], "detectron2": ["p2", "p3", "p4", "p5"]}
    assert list(captured.features)[:4] == names[backend][:4] and len(captured.features) == 5
    assert [f.shape[1] for f in captured.features.values()] == [model.fpn_channels] * 5
    rois = captured.roi_features
    assert rois.shape == (sum(len(p) for p in captured.proposals), model.representation_size)
    assert captured.roi_levels.shape == (rois.shape[0],)
    assert int(captured.roi_levels.min()) >= 0 and int(captured.roi_levels.max()) < 4
    assert captured.image_sizes == [(64, 64), (64, 64)]
    assert all(len(p) <= 16 for p in captured.proposals)  # a subset, as for labelled images
    pooled = model.pool_regions(captured.features, captured.proposals, captured.image_sizes)
    assert pooled.shape == (rois.shape[0], model.fpn_channels, 7, 7)
    with model.capture() as earlier:
        pass
    model(images)  # outside the block nothing is recorded, by the model or its heads
    assert earlier.roi_features is None and not earlier.features and not earlier.proposals


@backends
def test_domain_classifiers_reverse_and_scale_the_gradient_into_the_detector(backend):
    model = tiny_detector(backend=backend).train()
    images, _ = tiny_batch()
    term = DomainAdversarial(channels=16, roi_features=32, image_weight=0.025).eval()  # no dropout
    with model.capture() as captured:
        model(images)
    maps, rois = list(captured.features.values()), captured.roi_features
    for x in (*maps, rois):
        x.retain_grad()
    image, instance, _ = term.domain_losses(model, captured, 1.0)
    image.backward(retain_graph=True)
    reached = [x.grad.clone() for x in maps]
    # the classifiers' own gradient of the same losses, without the reversal layer (the
    # gradient of a map includes what reaches it through the maps computed from it)
    logits = term.image_classifier(maps)
    loss = torch.stack([F.binary_cross_entropy_with_logits(z, torch.ones_like(z)) for z in logits])
    grads = torch.autograd.grad(loss.mean(), maps, retain_graph=True)
    for r, g in zip(reached, grads, strict=True):
        assert g.abs().sum() > 0
        assert torch.allclose(r, -0.025 * g, rtol=1e-4, atol=1e-12)
    instance.backward(retain_graph=True)
    reached = rois.grad.clone()
    z = term.instance_classifier(rois, captured.roi_levels)
    (g,) = torch.autograd.grad(F.binary_cross_entropy_with_logits(z, torch.ones_like(z)), rois)
    assert g.abs().sum() > 0
    assert torch.allclose(reached, -0.1 * g, rtol=1e-4, atol=1e-12)


@backends
def test_eval_predicts_0_based_classes_in_input_pixels(backend):
    model = tiny_detector(backend=backend).eval()
    images = [torch.rand(3, 64, 64), torch.rand(3, 48, 80)]  # sizes differ: a list
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for d, img in zip(out, images, strict=True):
        assert set(d) == {"boxes", "labels", "scores"}
        assert len(d["labels"]) > 0  # an untrained detector scores everything above 0.05
        assert d["labels"].min() >= 0 and d["labels"].max() < NUM_CLASSES
        assert d["boxes"][:, 2].max() <= img.shape[-1] + 1e-3
        assert d["boxes"][:, 3].max() <= img.shape[-2] + 1e-3


def test_box_regression_parts_are_named():
    assert set(BOX_REGRESSION_PARTS) <= set(LOSS_PARTS)


def test_gradient_reversal_flips_and_scales_the_gradient():
    x = torch.randn(5, requires_grad=True)
    (reverse_gradient(x, 0.1) * 3).sum().backward()
    assert torch.allclose(x.grad, torch.full((5,), -0.3))
    y = torch.randn(5, requires_grad=True)
    out = scale_gradient(y, 0.25)
    assert torch.equal(out, y)
    out.sum().backward()
    assert torch.allclose(y.grad, torch.full((5,), 0.25))


def test_bad_model_settings_are_clear():
    with pytest.raises(ConfigError, match="256 channels"):
        FasterRCNN("resnet18", num_classes=2, fpn_channels=64)
    with pytest.raises(ConfigError, match="anchor_sizes has 2 sizes"):
        FasterRCNN("test_efficientnet", num_classes=2, fpn_channels=16, anchor_sizes=[8, 16])
    with pytest.raises(ConfigError, match="at least 1 class"):
        FasterRCNN("test_efficientnet", num_classes=0, fpn_channels=16)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("setting", "value", "said"),
    [
        ("min_size", 0, "model.min_size must be a positive whole number, got 0"),
        ("fpn_channels", 0, "model.fpn_channels must be a positive whole number"),
        ("anchor_sizes", 16, "model.anchor_sizes must list, for every FPN level"),
        ("anchor_sizes", [8, 16, -32], "model.anchor_sizes must list"),
        ("anchor_sizes", [[8, 16], [16], [32]], "the same number of sizes (the RPN head"),
        ("aspect_ratios", [0.0, 1.0], "model.aspect_ratios must list positive"),
        ("box_score_thresh", 2.0, "model.box_score_thresh must lie in [0, 1), got 2.0"),
        ("box_nms_thresh", 2.0, "model.box_nms_thresh must lie in [0, 1], got 2.0"),
        ("box_score_thresh", 1, "model.box_score_thresh=1 keeps no box"),  # (mAP 0 for good)
    ],
)
def test_settings_the_backend_would_fail_on_deep_inside_are_named(backend, setting, value, said):
    """torchvision / detectron2 failed on these with a ZeroDivisionError, a TypeError of
    len(int) or took them silently."""
    from tests.det_helpers import need

    need(backend)
    cls = Detectron2RCNN if backend == "detectron2" else FasterRCNN
    with pytest.raises(ConfigError, match=re.escape(said)):
        cls(num_classes=2, backbone="test_efficientnet", **{setting: value})


def test_a_torchvision_name_of_another_fpn_width_names_timm_s_model_of_that_name():
    # 'pick a timm backbone' did not say how: resnet18 is torchvision's in this backend
    said = r"timm's resnet18 is model\.backbone=resnet18\.a1_in1k"
    with pytest.raises(ConfigError, match=said):
        FasterRCNN("resnet18", num_classes=2, fpn_channels=16)
    model = FasterRCNN("resnet18.a1_in1k", num_classes=2, fpn_channels=16, min_size=64, max_size=64)
    assert model.eval()([torch.rand(3, 64, 64)])[0]["boxes"].shape[-1] == 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_min_size_above_max_size_is_named(backend):
    # both backends took it and resized below min_size (the longer side's cap wins)
    from tests.det_helpers import need

    need(backend)
    cls = Detectron2RCNN if backend == "detectron2" else FasterRCNN
    with pytest.raises(ConfigError, match=re.escape("model.min_size (256) exceeds model.max")):
        cls(num_classes=2, backbone="test_efficientnet", min_size=256, max_size=128)


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_images_shrunk_to_under_half_their_size_are_warned_of_once(backend):
    import warnings

    model = tiny_detector(backend=backend)  # resizes to the tiny batch's size
    model.train()
    images, targets = tiny_batch()
    big = [F.interpolate(images[:1], scale_factor=4.0)[0]]
    with pytest.warns(
        UserWarning, match=r"objects shrink 4\.0x\. For photos set model\.min_size"
    ) as w:
        model(big, targets[:1])
    # raised at mic's line, which mic-train shows as "mic: warning: ..." (it named torch's)
    assert "/mic/tasks/detection/" in w[0].filename.replace("\\", "/"), w[0].filename
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(big, targets[:1])  # once
        fitting = tiny_detector(backend=backend)
        fitting.train()
        fitting(images, targets)  # images of the detector's size: no warning
    # a batch whose first image fits: the image shrunk most is named (the first alone was
    # looked at, and only in the first batch, so a set of mixed sizes could go unwarned)
    mixed = tiny_detector(backend=backend).train()
    with pytest.warns(UserWarning, match=r"resizes the 256 x 256 training images .* 4\.0x"):
        mixed([images[0], big[0]], targets)


def test_no_backbone_name_is_named():
    """model.backbone=null on the torchvision backend ended in AttributeError("'NoneType'
    object has no attribute 'startswith'"); on detectron2's, null keeps the config's own."""
    from mic.tasks.detection.model import build_backbone

    with pytest.raises(ConfigError, match=r"model\.backbone must be the name of a backbone"):
        build_backbone(None, pretrained=False, fpn_channels=16)  # type: ignore[arg-type]


def _detector(backend, backbone, **kwargs):
    from tests.det_helpers import TINY_SIZES, need

    need(backend)
    settings = dict(num_classes=2, fpn_channels=16, representation_size=32, **TINY_SIZES)
    if backend == "torchvision":
        return FasterRCNN(backbone, **settings, **kwargs)
    return Detectron2RCNN(backbone=backbone, **settings, **kwargs)


@backends
@pytest.mark.parametrize("backbone", ["convnext_atto", "regnetx_002"])  # 4 and 5 timm levels
def test_a_timm_backbone_of_four_levels_or_five_gives_the_strides_4_to_32(backend, backbone):
    model = _detector(backend, backbone).eval()
    body = model.backbone.body if backend == "torchvision" else model.rcnn.backbone.bottom_up.body
    assert body.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 80))
    assert set(out[0]) == {"boxes", "labels", "scores"}


@backends
@pytest.mark.parametrize(
    ("backbone", "told"),
    [
        ("vit_tiny_patch16_224", "strides 16, 16, 16, 16"),  # no pyramid: was a raw error
        ("swin_tiny_patch4_window7_224", "cannot take detection's images"),  # one img_size
    ],
)
def test_a_backbone_that_cannot_feed_a_feature_pyramid_is_refused(backend, backbone, told):
    with pytest.raises(ConfigError, match=re.escape(told)):
        _detector(backend, backbone)


@backends
@pytest.mark.parametrize("backbone", ["convnext_atto", "regnetx_002"])
@pytest.mark.filterwarnings("ignore:model.trainable_layers=.* freezes")  # (random weights here)
def test_trainable_layers_freezes_the_first_stages_of_a_timm_backbone(backend, backbone):
    def frozen(layers):
        model = _detector(backend, backbone, trainable_layers=layers)
        body = (
            model.backbone.body if backend == "torchvision" else model.rcnn.backbone.bottom_up.body
        )
        return {n for n, p in body.named_parameters() if not p.requires_grad}, body

    everything, body = frozen(0)
    assert everything == {n for n, _ in body.named_parameters()}
    assert frozen(5)[0] == set()
    stem = frozen(4)[0]
    first = frozen(3)[0]
    level_1 = body.feature_info.module_name()[0].replace(".", "_")
    assert stem and stem < first < everything
    assert not any(n.startswith(level_1) for n in stem)
    assert any(n.startswith(level_1) for n in first)
    assert not any(
        n.startswith(body.feature_info.module_name()[1].replace(".", "_")) for n in first
    )
    with pytest.raises(ConfigError, match=r"trainable_layers must lie in \[0, 5\]"):
        frozen(6)


@backends
def test_stages_frozen_without_pretrained_weights_are_warned_of(backend):
    """model.trainable_layers=3 with model.pretrained=false froze two stages at their random
    initial weights without a word; all stages training (null, 5) says nothing."""
    with pytest.warns(UserWarning, match=r"trainable_layers=3 freezes 2 of the backbone's 5"):
        _detector(backend, "regnetx_002", trainable_layers=3)
    for layers in (None, 5):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _detector(backend, "regnetx_002", trainable_layers=layers)


@backends
def test_batchnorm_frozen_without_pretrained_weights_is_warned_of(backend):
    """model.norm=frozen with model.pretrained=false froze the statistics of a random network
    (training diverges) without a word; auto and batch train them."""
    from mic.experiment import LEFT_RANDOM

    with pytest.warns(
        UserWarning, match=r"model.norm=frozen freezes the backbone's BatchNorm"
    ) as w:
        _detector(backend, "regnetx_002", norm="frozen")
    # what mic-train and load_run leave out where weights are loaded afterwards
    assert re.match(LEFT_RANDOM, str(w[0].message))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", LEFT_RANDOM)
        _detector(backend, "regnetx_002", norm="frozen", trainable_layers=3)
    for norm in ("auto", "batch"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _detector(backend, "regnetx_002", norm=norm)


def test_torchvision_s_mobilenet_counts_its_six_stages():
    with pytest.warns(UserWarning, match=r"freezes 1 of the backbone's 6 stages"):
        build_backbone("mobilenet_v3_small", pretrained=False, fpn_channels=256, trainable_layers=5)


@backends
def test_anchor_sizes_that_shrink_toward_the_coarse_levels_are_warned_of(backend):
    """Reversed anchors ([128, ..., 8]: the largest on the stride-4 map) trained silently."""
    reversed_sizes = {**TINY_SIZES, "anchor_sizes": [128, 64, 32, 16, 8]}
    with pytest.warns(UserWarning, match=r"\[128, 64, 32, 16, 8\] shrink from one FPN level"):
        check_detector_settings(reversed_sizes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_detector_settings({"anchor_sizes": [[8, 12], [16, 24], [32, 48]]})
        _detector(backend, "regnetx_002")  # (TINY_SIZES' anchors grow)


def test_trainable_layers_takes_levels_whose_module_holds_no_parameters(monkeypatch):
    import copy

    from mic.tasks.detection import model
    from mic.tasks.detection.model import timm_features

    built, create = [], model.create_backbone

    def once(*args, **kwargs):  # every call asks for the same model: built once (2 s), copied
        built[:] = built or [create(*args, **kwargs)]
        return copy.deepcopy(built[0])

    monkeypatch.setattr(model, "create_backbone", once)
    frozen = []  # vgg11's last level is a ReLU (features.20)
    for layers in range(6):
        body = timm_features("vgg11", False, trainable_layers=layers)
        frozen.append(sum(not p.requires_grad for p in body.parameters()))
    assert frozen[0] == len(list(body.parameters())) and frozen[5] == 0
    assert frozen == sorted(frozen, reverse=True)


@backends
def test_an_image_of_sides_further_apart_than_max_size_trains_and_is_predicted(backend):
    """Both resizes gave such an image (1000 x 2 px at max_size=64) a side of 0 px, and the
    run ended in interpolate's error at the first batch that drew it; it now keeps a shorter
    side of 1 px (torchvision), or 1 px at the least (detectron2), its boxes scaled with it."""
    model = tiny_detector(backend=backend)  # max_size 64
    image = torch.rand(3, 2, 1000)
    box = {"boxes": torch.tensor([[10.0, 0.0, 400.0, 2.0]]), "labels": torch.tensor([1])}
    losses = _losses(model, [image], [box])
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        (out,) = model([image])
    assert out["boxes"].numel() == 0 or out["boxes"][:, 2].max() <= image.shape[-1] + 1e-3


@backends
def test_the_loss_names_targets_and_modes_the_detector_would_fail_on_deep_inside(backend):
    """Boxes as a tensor per image, or one batched dict (a DataLoader without
    collate_fn=task.collate), ended in TypeError or IndexError inside the detector; a model in
    eval mode in "'<' not supported between instances of 'dict' and 'dict'"."""
    from mic import DatasetError

    model = tiny_detector(backend=backend)
    images, targets = tiny_batch()
    with pytest.raises(DatasetError, match="must be a dict with 'boxes'"):
        det_task().loss(model, images, [t["boxes"] for t in targets])
    batched = {"boxes": torch.stack([t["boxes"][:1] for t in targets]), "labels": [0, 1]}
    with pytest.raises(DatasetError, match="must be a list of dicts"):
        det_task().loss(model, images, batched)
    with pytest.raises(ConfigError, match=r"returned detections, not losses.*model\.train\(\)"):
        det_task().loss(model.eval(), images, targets)


def test_boxes_normalised_to_the_image_size_are_warned_of_in_any_batch(monkeypatch):
    """A warning, not a refusal: a flip can move one tiny corner box of a valid image there."""
    import warnings

    from mic.datasets.detection import targets as module

    monkeypatch.setattr(module, "_NORMALISED_SAID", [])
    target = {"boxes": torch.tensor([[0.1, 0.2, 0.5, 0.6]]), "labels": torch.tensor([0])}
    with pytest.warns(UserWarning, match=r"every box lies within \[0, 1\] x \[0, 1\]"):
        module.check_target(target, 3, (64, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module.check_target(target, 3, (64, 64))  # once per process
        monkeypatch.setattr(module, "_NORMALISED_SAID", [])
        module.check_target(target, 3, None)  # no size: nothing to tell them from
        module.check_target({**target, "boxes": torch.tensor([[0.1, 0.2, 5.0, 6.0]])}, 3, (64, 64))


@pytest.mark.parametrize("model", sorted(p.stem for p in CONF_MODELS.glob("*faster_rcnn*.yaml")))
def test_every_detector_config_lists_the_post_processing_settings_the_docs_name(model):
    """docs/detection.md names model.box_score_thresh and model.box_detections_per_img; the
    configs that left them out refused the plain override (`+model....` was needed)."""
    from mic.experiment import load_config

    settings = ["model.box_score_thresh=0.2", "model.box_detections_per_img=20"]
    cfg = load_config(["experiment=det_shapes", f"model={model}", *settings])
    assert (cfg.model.box_score_thresh, cfg.model.box_detections_per_img) == (0.2, 20)
    if "small" in model:  # (the others build ResNet-50s)
        from hydra.utils import instantiate

        need("detectron2" if model.startswith("d2_") else "torchvision")

        detector = instantiate(cfg.model)
        assert detector.box_score_thresh == pytest.approx(0.2)
