"""The detector's seams: per-box weights on the RPN and ROI losses, training forwards without
targets, captured features, 0-based classes, and gradient reversal."""

import pytest
import torch

from mic import ConfigError
from mic.tasks.detection import (
    BOX_REGRESSION_PARTS,
    LOSS_PARTS,
    FasterRCNN,
    reverse_gradient,
    scale_gradient,
)
from mic.tasks.detection.model import sample_weights
from tests.det_helpers import NUM_CLASSES, tiny_batch, tiny_detector
from tests.det_helpers import task as det_task


def _losses(model, images, targets, weights=None, seed=0):
    torch.manual_seed(seed)  # the same anchor and proposal samples for every call
    return det_task().loss(model, images, targets, weights)


def test_loss_has_the_four_named_parts_and_back_propagates():
    model = tiny_detector()
    images, targets = tiny_batch()
    losses = _losses(model, images, targets)
    assert tuple(losses) == LOSS_PARTS
    assert all(torch.isfinite(v) and v.requires_grad for v in losses.values())
    sum(losses.values()).backward()
    assert model.rpn.head.cls_logits.weight.grad is not None
    assert model.roi_heads.box_predictor.cls_score.weight.grad is not None


def test_unit_weights_change_nothing_and_a_common_factor_scales_every_part():
    model = tiny_detector()
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


def test_zero_weight_on_one_image_removes_its_samples_from_the_losses():
    model = tiny_detector()
    images, targets = tiny_batch()
    plain = _losses(model, images, targets)
    zero = _losses(model, images, targets, [torch.tensor([1.0, 1.0]), torch.tensor([0.0])])
    # image 2's samples weigh 0 (its boxes and, through their mean, its background)
    for k in LOSS_PARTS:
        assert zero[k] <= plain[k]
    assert zero["roi_classifier"] < plain["roi_classifier"]


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


def test_images_without_objects_are_valid_training_samples():
    model = tiny_detector()
    images, _ = tiny_batch()
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2
    losses = _losses(model, images, empty)
    assert losses["rpn_box"] == 0 and losses["roi_box"] == 0
    assert losses["rpn_objectness"] > 0 and losses["roi_classifier"] > 0


def test_training_forward_without_targets_captures_features_and_computes_no_loss():
    model = tiny_detector().train()
    images, _ = tiny_batch()
    with model.capture() as captured:
        out = model(images)
    assert out == {}
    assert list(captured.features) == ["0", "1", "2", "3", "pool"]
    assert captured.roi_features.shape == (sum(len(p) for p in captured.proposals), 32)
    assert captured.roi_levels.shape == (captured.roi_features.shape[0],)
    assert captured.image_sizes == [(64, 64), (64, 64)]
    assert model._capture is None and model.roi_heads.captured is None


def test_eval_predicts_0_based_classes_in_input_pixels():
    model = tiny_detector().eval()
    images = [torch.rand(3, 64, 64), torch.rand(3, 48, 80)]  # sizes differ: a list
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for d, img in zip(out, images, strict=True):
        assert set(d) == {"boxes", "labels", "scores"}
        if len(d["labels"]):
            assert d["labels"].min() >= 0 and d["labels"].max() < NUM_CLASSES
            assert d["boxes"][:, 2].max() <= img.shape[-1] + 1e-3


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
