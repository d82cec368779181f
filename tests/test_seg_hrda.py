"""HRDA: crop geometry, the attention and the fusion, the loss weights, multi-resolution and
sliding-window inference, pseudo-labels, MIC through both resolutions, and the loop."""

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import mic
from mic import AdaptationLoop, ConfigError, EMATeacher, IterationContext, RandomStream, UDAMethod
from mic.datasets.segmentation import StreetScenes
from mic.tasks.segmentation import (
    HRDA,
    ClassMix,
    DAFormer,
    DeepLabV2,
    FeatureDistance,
    HRDAOutput,
    HRDASegmentationTask,
    SegmentationMIC,
    SegmentationTask,
    Segmenter,
    SharedSourceSupervision,
    SmallUNet,
    detail_crop_boxes,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class _Encoder(nn.Module):
    def __init__(self, stride: int) -> None:
        super().__init__()
        self.conv, self.stride = nn.Conv2d(3, 4, 1), stride

    def forward(self, x):
        return [F.avg_pool2d(torch.tanh(self.conv(x)), self.stride)]


class _Head(nn.Module):
    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, outputs, 1)

    def forward(self, features):
        return self.conv(features[-1])


class Tiles(Segmenter):
    """1 x 1 convs and non-overlapping average pooling (output stride ``stride``): every
    output cell sees only its own ``stride`` x ``stride`` tile of the input, so windows on
    that grid that tile an image give exactly its whole-image logits."""

    def __init__(self, num_classes: int = 3, stride: int = 2) -> None:
        super().__init__(_Encoder(stride), _Head(num_classes), num_classes)

    def scale_attention_head(self, num_outputs):
        return _Head(num_outputs)


class Constant(nn.Module):
    """An attention head whose logits are ``value`` everywhere."""

    def __init__(self, value: float, outputs: int = 3) -> None:
        super().__init__()
        self.value, self.outputs = value, outputs

    def forward(self, features):
        f = features[-1]
        return f.new_full((f.shape[0], self.outputs, *f.shape[-2:]), self.value)


def _hrda(stride=2, crop=8, **kwargs):
    torch.manual_seed(0)
    return HRDA(Tiles(3, stride), detail_crop=(crop, crop), crop_divisible=4, **kwargs)


# ----------------------------------------------------------------------------- crop geometry
def test_detail_crops_lie_on_the_grid_inside_the_image_and_reach_every_position():
    g = torch.Generator().manual_seed(0)
    boxes = detail_crop_boxes(g, 4000, (64, 96), (32, 48), divisible=8)
    assert boxes.dtype == torch.long and boxes.shape == (4000, 4)
    y1, y2, x1, x2 = boxes.unbind(1)
    assert ((y2 - y1) == 32).all() and ((x2 - x1) == 48).all()
    assert (y1 % 8 == 0).all() and (x1 % 8 == 0).all()
    assert y1.min() >= 0 and y2.max() <= 64 and x2.max() <= 96
    # every grid position, the last one too (the published draw never reaches it)
    assert set(y1.tolist()) == {0, 8, 16, 24, 32} and set(x1.tolist()) == set(range(0, 49, 8))
    counts = torch.bincount(y1 // 8)
    assert counts.min() > 0.8 * counts.float().mean()  # about uniform
    # a crop that fills the image has one place
    whole = detail_crop_boxes(g, 3, (32, 32), (32, 32))
    assert whole.tolist() == [[0, 32, 0, 32]] * 3
    with pytest.raises(ConfigError, match="larger than the training images"):
        detail_crop_boxes(g, 1, (32, 32), (64, 32))


def test_detail_crops_are_keyed_to_each_images_place_in_the_global_batch():
    one = detail_crop_boxes(RandomStream(7), 4, (64, 64), (32, 32))
    # two processes with two images each draw the rows of the global batch of four
    ranks = [
        detail_crop_boxes(RandomStream(7, rank=r, world_size=2), 2, (64, 64), (32, 32))
        for r in (0, 1)
    ]
    assert torch.equal(torch.stack(ranks, 1).reshape(4, 4), one)
    assert not torch.equal(one, detail_crop_boxes(RandomStream(8), 4, (64, 64), (32, 32)))


def test_crop_boxes_off_the_context_grid_are_refused():
    model, x = _hrda(), torch.randn(2, 3, 16, 16)
    # context at 0.5 with output stride 2: offsets must be multiples of 4
    bad = torch.tensor([[2, 10, 0, 8], [0, 8, 0, 8]])
    with pytest.raises(ConfigError, match="crop_divisible"):
        model(x, crop_box=bad)
    with pytest.raises(ConfigError, match="one size"):
        model(x, crop_box=torch.tensor([[0, 8, 0, 8], [0, 12, 0, 8]]))


# ----------------------------------------------------------------------------- fusion
def test_a_crop_grid_or_context_scale_that_cannot_fit_is_refused_on_any_box():
    x, box = torch.randn(2, 3, 16, 16), torch.tensor([[0, 8, 0, 8]] * 2)  # a box on any grid
    # context at 0.5 with output stride 2 puts a cell every 4 px: crop_divisible=2 could draw
    # off-grid boxes later in a run, so it is refused at once, with the value that works
    torch.manual_seed(0)
    loose = HRDA(Tiles(3, 2), detail_crop=(8, 8), crop_divisible=2)
    with pytest.raises(ConfigError, match=r"one cell every 4 px.*model.crop_divisible=4 \(now 2\)"):
        loose(x, crop_box=box)
    # 16 px at scale 0.3 is 4.8 px: no crop_divisible could help; the scale is named
    odd = HRDA(Tiles(3, 2), context_scale=0.3, detail_crop=(8, 8), crop_divisible=4)
    with pytest.raises(ConfigError, match=r"context_scale=0.3 of the 16 x 16 .* 4.8 x 4.8 px"):
        odd(x, crop_box=box)
    # 15 px crops at the published 0.5: the crop size is what to change, with one that works
    half = HRDA(Tiles(3, 2), detail_crop=(8, 8), crop_divisible=4)
    said = r"multiples of 2 \(e.g. \[16, 16\]: dataset.crop_size, or dataset.size for the bundled"
    said += r" street scenes\), or another scale"
    with pytest.raises(ConfigError, match=said):
        half(x[..., :15, :15], crop_box=torch.tensor([[0, 8, 0, 8]] * 2))
    # 20 px crops at 0.5 into a model of output stride 4 that rounds up (MiT's convolutions):
    # its 3 logits lie on no grid of the 10 px context; the crop is what to change (the
    # lowest common multiple of the logits' grids asked for crop_divisible=20)
    ceil = HRDA(Tiles(3, 4), detail_crop=(8, 8), crop_divisible=8)
    ceil.encoder.forward = lambda x: [F.avg_pool2d(x[:, :4], 4, ceil_mode=True)]
    said = r"10 x 10 px context image, which the inner model's output stride 4 does not divide"
    said += r" \(its 3 x 3 logits lie on no pixel grid\): give training crops whose sides are "
    said += r"multiples of 8 \(e.g. \[24, 24\]"
    with pytest.raises(ConfigError, match=said):
        ceil(torch.randn(2, 4, 20, 20), crop_box=box)
    # a deep stride (32) rounded up: said as 32 (16 suggested crops refused in turn)
    deep = HRDA(Tiles(3, 32), detail_crop=(64, 64), crop_divisible=64)
    deep.encoder.forward = lambda x: [F.avg_pool2d(x[:, :4], 32, ceil_mode=True)]
    said = r"output stride 32 does not divide .* multiples of 64 \(e.g. \[128, 128\]"
    with pytest.raises(ConfigError, match=said):
        deep(torch.randn(2, 4, 90, 90), crop_box=torch.tensor([[0, 64, 0, 64]] * 2))
    deep(torch.randn(2, 4, 128, 128), crop_box=torch.tensor([[0, 64, 0, 64]] * 2))  # taken
    # an image whose context is under 1 px: what the inner model takes is said
    # (in prediction the images are the sliding windows: the window is named too)
    said = r"it takes sides that are at least 1 px\): .*; in prediction the sliding window, task"
    with pytest.raises(ConfigError, match=said):
        HRDASegmentationTask(3).predict(HRDA(Tiles(3, 1), detail_crop=(8, 8)), x[..., :1, :1])


@pytest.mark.parametrize(
    ("crop", "stride", "said"),
    [
        ([32], None, "detail_crop must be two positive"),
        ([0, 0], None, "detail_crop must be two"),
        ([8, 8], [0, 4], "detail_stride must be two positive"),
        ([1, 1], None, r"detail_stride \(null: half of model.detail_crop \[1, 1\]\) comes to"),
    ],
)
def test_detail_crop_and_stride_are_named_as_given(crop, stride, said):
    with pytest.raises(ConfigError, match=said):
        HRDA(Tiles(3, 2), detail_crop=crop, detail_stride=stride, crop_divisible=1)


def test_attention_is_zero_outside_the_detail_crop_and_the_context_rules_there():
    model, x = _hrda(), torch.randn(2, 3, 16, 16)
    box = torch.tensor([[4, 12, 8, 16], [0, 8, 4, 12]])
    out = model(x, crop_box=box)
    assert isinstance(out, HRDAOutput)
    # shapes: context 8 x 8 px at stride 2, detail 8 x 8 px at stride 2, fused on 16 / 2
    assert out.context.shape == (2, 3, 4, 4) and out.detail.shape == (2, 3, 4, 4)
    assert out.fused.shape == (2, 3, 8, 8) and out.attention.shape == (2, 3, 4, 4)
    for i, (y1, y2, x1, x2) in enumerate(box.tolist()):
        inside = torch.zeros(4, 4, dtype=torch.bool)
        inside[y1 // 4 : y2 // 4, x1 // 4 : x2 // 4] = True  # the box on the context grid
        att = out.attention[i]
        assert (att[:, ~inside] == 0).all() and (att[:, inside] > 0).all()
        # one output pixel beyond the crop (the bilinear rim) the fused logits are the context's
        far = torch.ones(8, 8, dtype=torch.bool)
        far[max(y1 // 2 - 1, 0) : y2 // 2 + 1, max(x1 // 2 - 1, 0) : x2 // 2 + 1] = False
        up = F.interpolate(out.context[i : i + 1], (8, 8), mode="bilinear", align_corners=False)
        assert torch.allclose(out.fused[i][:, far], up[0][:, far], atol=1e-6)
        assert not torch.allclose(out.fused[i][:, ~far], up[0][:, ~far])


def test_full_attention_gives_the_detail_logits_inside_the_crop():
    torch.manual_seed(0)
    model = HRDA(Tiles(3, 2), detail_crop=(8, 8), crop_divisible=4, attention_head=Constant(50.0))
    x = torch.randn(1, 3, 16, 16)
    out = model(x, crop_box=torch.tensor([[4, 12, 4, 12]]))
    # inside the crop away from its rim, attention 1: the fused logits are the detail's
    assert torch.allclose(out.fused[0, :, 3:5, 3:5], out.detail[0, :, 1:3, 1:3], atol=1e-5)
    # the detail logits are the model's own on the cropped image
    assert torch.allclose(out.detail, model.decode(model.forward_features(x[..., 4:12, 4:12])))
    # and the context logits its own on the half-resolution image
    half = F.interpolate(x, (8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(out.context, model.decode(model.forward_features(half)))


def test_one_attention_for_all_classes():
    model = _hrda(classwise_attention=False)
    out = model(torch.randn(1, 3, 16, 16), crop_box=torch.tensor([[0, 8, 0, 8]]))
    assert out.attention.shape == (1, 1, 4, 4)


# ----------------------------------------------------------------------------- loss
def test_fused_and_detail_losses_against_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    fused, detail = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    context = torch.randn(2, 3, 4, 4, generator=g)
    labels = torch.randint(0, 3, (2, 8, 8), generator=g)
    labels[0, 0, :3] = 255  # ignored pixels count in the mean with 0, as published
    weights = torch.rand(2, 8, 8, generator=g)
    box = torch.tensor([[0, 4, 4, 8], [4, 8, 0, 4]])
    out = HRDAOutput(fused, context, detail, torch.zeros(2, 3, 4, 4), box)

    def ce(logits, y, w):  # per pixel, by hand
        logp = torch.log_softmax(logits, 1)
        total = 0.0
        for b in range(y.shape[0]):
            for i in range(y.shape[1]):
                for j in range(y.shape[2]):
                    c = int(y[b, i, j])
                    if c != 255:
                        total += -float(logp[b, c, i, j]) * float(w[b, i, j])
        return total / y.numel()

    parts = HRDASegmentationTask(3).loss_from_logits(out, labels, weights)
    assert set(parts) == {"fused", "detail"}
    assert parts["fused"].item() == pytest.approx(0.9 * ce(fused, labels, weights), rel=1e-5)
    crop = torch.stack([labels[0, 0:4, 4:8], labels[1, 4:8, 0:4]])
    crop_w = torch.stack([weights[0, 0:4, 4:8], weights[1, 4:8, 0:4]])
    up = F.interpolate(detail, (4, 4), mode="bilinear", align_corners=False)  # already 4 x 4
    assert parts["detail"].item() == pytest.approx(0.1 * ce(up, crop, crop_w), rel=1e-5)
    # a context term when asked for; the fused part weighs the rest
    parts = HRDASegmentationTask(3, 0.2, 0.3).loss_from_logits(out, labels, None)
    ones = torch.ones_like(weights)
    up = F.interpolate(context, (8, 8), mode="bilinear", align_corners=False)
    assert parts["context"].item() == pytest.approx(0.3 * ce(up, labels, ones), rel=1e-5)
    assert parts["fused"].item() == pytest.approx(0.5 * ce(fused, labels, ones), rel=1e-5)
    # no detail term at weight 0; plain logits are scored as by SegmentationTask
    assert set(HRDASegmentationTask(3, 0.0).loss_from_logits(out, labels)) == {"fused"}
    plain = HRDASegmentationTask(3).loss_from_logits(fused, labels, weights)
    assert torch.equal(plain, SegmentationTask(3).loss_from_logits(fused, labels, weights))
    with pytest.raises(ConfigError, match="sum to at most 1"):
        HRDASegmentationTask(3, 0.7, 0.5)
    with pytest.warns(UserWarning, match=r"sum to 1: the fused prediction, which inference"):
        HRDASegmentationTask(3, 1.0)  # accepted silently: the attention head never trained


def test_the_loss_draws_its_crop_from_the_calling_terms_stream():
    model, task = _hrda(), HRDASegmentationTask(3)
    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 3, (2, 16, 16))
    seen = []
    model.register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append(kwargs["crop_box"]), with_kwargs=True
    )
    a = task.loss(model, x, y, rng=RandomStream(3))
    b = task.loss(model, x, y, rng=RandomStream(3))
    assert torch.equal(seen[0], seen[1]) and torch.equal(a["fused"], b["fused"])
    assert torch.equal(seen[0], detail_crop_boxes(RandomStream(3), 2, (16, 16), (8, 8), 4))
    # the models that fit, the bundled one (no weights to download) first
    with pytest.raises(
        ConfigError, match=r"trains HRDA models.*model=hrda_small_unet.*model=hrda_daformer_mitb5"
    ):
        task.loss(Tiles(), x, y)


# ----------------------------------------------------------------------------- inference
def test_sliding_windows_that_tile_the_image_once_equal_a_whole_image_forward():
    model = _hrda(detail_stride=(8, 8))
    x = torch.randn(2, 3, 16, 24)
    whole = model.decode(model.forward_features(x))
    assert torch.allclose(model.detail_logits(x), whole, atol=1e-6)  # 2 x 3 windows, no overlap
    # the published overlapping windows (stride half the crop) average the same values
    overlapping = _hrda()
    assert overlapping.detail_stride == (4, 4)
    assert torch.allclose(overlapping.detail_logits(x), whole, atol=1e-6)
    # the Task's outer sliding windows, tiling the image once, equal its whole-image prediction
    # (at output stride 1: it upsamples each window's logits to its pixels on its own)
    slide = SegmentationTask(3, inference="slide", crop_size=(8, 8), stride=(8, 8))
    plain = Tiles(3, 1)
    assert torch.allclose(slide.logits(plain, x), SegmentationTask(3).logits(plain, x), atol=1e-6)
    # a stride past the crop would leave pixels no window covers (their logits 0 / 0 = NaN)
    with pytest.raises(mic.ConfigError, match=r"detail_stride \[12, 12\] must be at most"):
        _hrda(detail_stride=(12, 12))


def test_detail_windows_off_the_logits_grid_are_warned_of_once():
    # a 66 px input at output stride 4: the last window (at 34 px) was placed at 32, unsaid
    model = _hrda(stride=4, crop=32)
    with pytest.warns(UserWarning, match=r"66 x 66 input lie off the grid of its 4 px logits"):
        model.detail_logits(torch.randn(1, 3, 66, 66))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.detail_logits(torch.randn(1, 3, 66, 66))  # once
        _hrda(stride=4, crop=32).detail_logits(torch.randn(1, 3, 64, 64))  # on the grid
    # an input shorter than the detail crop on one side: the other side's grid stays 4 px
    assert _hrda(stride=4, crop=32).detail_logits(torch.randn(1, 3, 30, 128)).shape[-1] == 32
    # on a 64 px input the windows' offsets come from the detail stride: it is named
    with pytest.warns(UserWarning, match=r"give model.detail_stride \(now \[6, 6\]\) multiples"):
        _hrda(stride=4, crop=32, detail_stride=(6, 6)).detail_logits(torch.randn(1, 3, 64, 64))


def test_prediction_fuses_everywhere_and_one_window_is_the_whole_image():
    model = _hrda()
    x = torch.randn(2, 3, 16, 16)
    context, attention, _ = model.context(x)
    expected = HRDA.fuse(context, attention, model.detail_logits(x))
    assert (attention > 0).all()  # no crop at inference: attention everywhere
    assert torch.allclose(model(x), expected)
    task = HRDASegmentationTask(3, inference="slide", crop_size=(16, 16), stride=(8, 8))
    probs = task.predict(model, x)
    assert probs.shape == (2, 3, 16, 16)
    assert torch.allclose(probs.sum(1), torch.ones(2, 16, 16))
    whole = HRDASegmentationTask(3).predict(model, x)
    assert torch.allclose(probs, whole, atol=1e-6)


def test_pseudo_labels_of_multi_resolution_inference_keep_the_margins():
    model = _hrda()
    task = HRDASegmentationTask(3, pseudo_label_margins=(3, 5, 1, 2))
    pseudo = task.pseudo_label(task.predict(model, torch.randn(2, 3, 16, 16)))
    assert pseudo.labels.shape == (2, 16, 16) and pseudo.confidence.shape == (2, 16, 16)
    valid = pseudo.valid
    assert not valid[:, :3].any() and not valid[:, -5:].any()
    assert not valid[:, :, :1].any() and not valid[:, :, -2:].any()
    assert valid[:, 3:11, 1:14].all()


# ----------------------------------------------------------------------------- models
def test_published_attention_heads_of_daformer_and_deeplabv2():
    torch.manual_seed(0)
    model = HRDA(DAFormer(5, "mit_b0", pretrained=False), detail_crop=(32, 32))
    head = model.scale_attention
    # DAFormer's head with the 1 x 1 conv fusion, 256 channels, one output per class
    assert len(head.branches) == 1 and isinstance(head.bottleneck, nn.Identity)
    assert head.classifier.out_channels == 5 and head.embed[0].out_channels == 256
    out = model(torch.randn(1, 3, 64, 64), crop_box=torch.tensor([[16, 48, 8, 40]]))
    assert out.fused.shape == (1, 5, 16, 16) and out.attention.shape == (1, 5, 8, 8)
    groups = mic.param_groups(
        {"model": model},
        lr=6e-5,
        lr_mult={"model.decode_head": 10.0, "model.scale_attention": 10.0},
    )
    heads = {id(p) for m in (model.decode_head, head) for p in m.parameters()}
    for g in groups:  # the published 'head' key matches the attention head too
        assert all((id(p) in heads) == (g["lr_mult"] == 10.0) for p in g["params"])
    dl = HRDA(DeepLabV2(4, "resnet18", pretrained=False), detail_crop=(32, 32), crop_divisible=16)
    assert [b.dilation[0] for b in dl.scale_attention.branches] == [6, 12, 18, 24]
    out = dl(torch.randn(1, 3, 64, 64), crop_box=torch.tensor([[0, 32, 16, 48]]))
    assert out.fused.shape == (1, 4, 8, 8)
    with pytest.raises(ConfigError, match="crop_divisible"):  # 8 is off DeepLabV2's grid
        dl(torch.randn(1, 3, 64, 64), crop_box=torch.tensor([[8, 40, 0, 32]]))


def test_checkpoint_of_the_wrapped_model_loads_into_hrda_and_state_round_trips():
    torch.manual_seed(0)
    base = SmallUNet(4, (4, 8, 8))
    model = HRDA(copy.deepcopy(base), detail_crop=(16, 16))
    assert {k.split(".")[0] for k in model.state_dict()} == {
        "encoder",
        "decode_head",
        "scale_attention",
    }
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("scale_attention") for k in missing)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    again = HRDA(SmallUNet(4, (4, 8, 8)), detail_crop=(16, 16))
    again.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(1, 3, 32, 32)
    model.eval(), again.eval()
    assert torch.equal(model(x), again(x))


def test_feature_distance_reads_the_context_features_of_hrda():
    torch.manual_seed(0)
    model = HRDA(SmallUNet(8, (4, 8, 8)), detail_crop=(16, 16)).eval()
    x = torch.randn(2, 3, 32, 32)
    labels = torch.full((2, 32, 32), 5)
    _, features = model(x, crop_box=torch.tensor([[0, 16, 0, 16]] * 2), return_features=True)
    assert features[-1].shape[-2:] == (4, 4)  # the 16 px context image at stride 4
    fd = FeatureDistance(weight=1.0, classes=[5])
    # the frozen copy sees the context image: at the initial weights the distance is 0
    assert float(fd.distance(model, x, features[-1].detach(), labels, 8)) == 0.0
    assert float(fd.distance(model, x, features[-1].detach() + 1, labels, 8)) > 0


# ----------------------------------------------------------------------------- MIC
def test_mic_masks_the_image_that_hrda_sees_at_both_resolutions_and_lambda_scales_each_part():
    model, task = _hrda(), HRDASegmentationTask(3)
    g = torch.Generator().manual_seed(0)
    target = torch.randn(2, 3, 16, 16, generator=g)
    teacher = 4 * torch.randn(2, 3, 16, 16, generator=g)
    masker = mic.BlockMasker(4, 0.5)
    seen = []
    model.register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append((args[0], kwargs["crop_box"])), with_kwargs=True
    )

    def run(term):
        ctx = IterationContext(0, task, model, (target, teacher.argmax(1)), target, seed=1)
        ctx._pseudo = task.pseudo_label(torch.softmax(teacher, 1))
        ctx.term = "mic"
        return term.weight * term(ctx), ctx  # the loop multiplies a term's loss by its weight

    loss, ctx = run(SegmentationMIC(masker, weight=0.5))
    images, box = seen[-1]
    ctx.restart()
    rng = ctx.rng
    masked = masker(target, rng)
    assert torch.equal(images, masked) and (masked == 0).any()  # the whole masked crop ...
    assert torch.equal(box, detail_crop_boxes(rng, 2, (16, 16), (8, 8), 4))  # ... then a crop
    pseudo = ctx.pseudo_labels
    q = SegmentationMIC(masker).weighting(pseudo)
    parts = task.loss_from_logits(model(masked, crop_box=box), pseudo.labels, q)
    assert torch.allclose(loss, 0.5 * (parts["fused"] + parts["detail"]))
    # the published code leaves the detail part unscaled
    published, _ = run(SegmentationMIC(masker, weight=0.5, unscaled_parts=["detail"]))
    assert torch.allclose(published, 0.5 * parts["fused"] + parts["detail"])
    with pytest.raises(ConfigError, match="mic=none"):
        SegmentationMIC(masker, weight=0.0, unscaled_parts=["detail"])
    # a task whose loss has no detail part says so
    plain = IterationContext(0, SegmentationTask(3), Tiles(), (target, teacher.argmax(1)), target)
    plain._pseudo = SegmentationTask(3).pseudo_label(torch.softmax(teacher, 1))
    with pytest.raises(
        ConfigError,
        match=r"unscaled_parts \(method\.terms\.mic\.unscaled_parts\) name \['detail'\].*no named",
    ):
        SegmentationMIC(masker, unscaled_parts=["detail"])(plain)
    # a part the loss does not have is named as the user's setting, unscaled_parts
    ctx.restart()
    with pytest.raises(ConfigError) as error:
        SegmentationMIC(masker, unscaled_parts=["foo"])(ctx)
    assert "unscaled_parts (method.terms.mic.unscaled_parts) name ['foo']" in str(error.value)
    assert "its parts are ['detail', 'fused']" in str(error.value)
    assert "part_weights" not in str(error.value)


# ----------------------------------------------------------------------------- the loop
WIDTHS = (4, 8, 8)


def _loop(terms, seed=0, iterations=3):
    task = HRDASegmentationTask(8, classes=StreetScenes.classes)
    src = StreetScenes("source", "train", count=8, size=32)
    tgt = StreetScenes("target", "train", count=8, size=32, labelled=False)

    def loader(ds, s):
        g = torch.Generator().manual_seed(s)
        return DataLoader(ds, 2, shuffle=True, drop_last=True, collate_fn=task.collate, generator=g)

    torch.manual_seed(seed)
    student = HRDA(SmallUNet(8, WIDTHS), detail_crop=(16, 16))
    method = UDAMethod(terms)
    opt = torch.optim.AdamW(list(student.parameters()) + list(method.parameters()), 1e-3)
    teacher = EMATeacher(student, 0.99) if method.uses_pseudo_labels else None
    return AdaptationLoop(
        task, student, method, opt, loader(src, 1), loader(tgt, 2), iterations, teacher=teacher
    )


def _daformer(mic_term=True):
    aug = mic.StrongAugmentation(mean=StreetScenes.mean, std=StreetScenes.std)
    terms = {
        "source": SharedSourceSupervision(),
        "mix": ClassMix(aug),
        "feature_distance": FeatureDistance(classes=[5, 6, 7]),
    }
    if mic_term:
        terms["mic"] = SegmentationMIC(mic.BlockMasker(4, 0.7, aug))
    return terms


def _record_boxes(loop):
    boxes = []
    loop.student.register_forward_pre_hook(
        lambda _m, args, kwargs: (
            kwargs.get("crop_box") is not None and boxes.append(kwargs["crop_box"].clone())
        ),
        with_kwargs=True,
    )
    return boxes


@pytest.mark.parametrize(
    "terms",
    [
        lambda: {"source": mic.SourceSupervision()},  # HRDA (source only)
        lambda: {
            "source": mic.SourceSupervision(),
            "mic": SegmentationMIC(mic.BlockMasker(4, 0.7)),
        },  # HRDA + MIC
        lambda: _daformer(),  # HRDA + DAFormer (DACS, RCS-free, feature distance) + MIC
    ],
    ids=["hrda", "hrda_mic", "hrda_daformer_mic"],
)
def test_hrda_trains_in_the_generic_loop(terms):
    loop = _loop(terms(), iterations=2)
    attention = [p.clone() for p in loop.student.scale_attention.parameters()]
    for _ in range(2):
        losses = loop.train_step()
        loop.step += 1
        assert all(torch.isfinite(v) for v in losses.values())
    assert set(losses) == set(loop.method.terms)
    changed = [
        not torch.equal(a, b) for a, b in zip(attention, loop.student.scale_attention.parameters())
    ]
    assert any(changed)  # the scale attention learns


def test_hrdas_crops_are_the_same_with_and_without_mic():
    runs = []
    for with_mic in (False, True):
        loop = _loop(_daformer(with_mic))
        boxes = _record_boxes(loop)
        for _ in range(3):
            loop.train_step()
            loop.step += 1
        runs.append(boxes)
    without, with_mic = runs
    assert len(without) == 3 * 2 and len(with_mic) == 3 * 3  # source, mix (, mic) per step
    base = [b for i, b in enumerate(with_mic) if i % 3 != 2]
    assert all(torch.equal(a, b) for a, b in zip(without, base))
    mic_boxes = [b for i, b in enumerate(with_mic) if i % 3 == 2]
    assert any(not torch.equal(a, b) for a, b in zip(mic_boxes, without[1::2]))


def test_hrda_with_mic_resumes_exactly_from_its_state():
    straight = _loop(_daformer(), iterations=3)
    for _ in range(3):
        straight.train_step()
        straight.step += 1
    first = _loop(_daformer(), iterations=3)
    for _ in range(2):
        first.train_step()
        first.step += 1
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = _loop(_daformer(), iterations=3, seed=5)  # other initial weights: all restored
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    resumed.train_step()
    resumed.step += 1
    for a, b in zip(straight.student.state_dict().values(), resumed.student.state_dict().values()):
        assert torch.equal(a, b)


def test_hrda_refuses_crops_its_segmenter_cannot_take_when_built_or_called():
    daformer = DAFormer(8, "mit_b0", pretrained=False, embed_dim=16)
    # a crop off the output grid failed at the first step, blaming the crop offsets
    with pytest.raises(ConfigError, match=r"detail_crop \[36, 36\] must be a multiple of"):
        HRDA(daformer, detail_crop=(36, 36))
    with pytest.raises(ConfigError, match=r"wraps a segmenter instance .* got the class DAFormer"):
        HRDA(DAFormer)
    # MiT below 32 px ended in torch's kernel-size error
    model = HRDA(daformer, detail_crop=(32, 32)).eval()
    said = r"context_scale=0.5 of 40 x 40 images gives a 20 x 20 px context image, which the "
    with pytest.raises(
        ConfigError,
        match=said + r"inner model cannot take \(it takes sides "
        r"that are at least 32 px\)",
    ):
        HRDASegmentationTask(8).predict(model, torch.randn(1, 3, 40, 40))  # context 20 px
    with pytest.raises(ConfigError, match=r"at least 32 px a side, got \(24, 24\)"):
        daformer(torch.randn(1, 3, 24, 24))
    assert HRDASegmentationTask(8).predict(model, torch.randn(1, 3, 64, 64)).shape[-1] == 64
    # a test image of an odd side: its context is the whole part of its scaled sides
    odd = HRDA(SmallUNet(num_classes=3), context_scale=0.5, detail_crop=(32, 32)).eval()
    with torch.no_grad():
        assert odd(torch.randn(1, 3, 65, 66)).shape == (1, 3, 65, 66)


def test_weights_of_the_single_scale_model_start_hrda_with_its_attention_as_initialised(
    tmp_path, caplog
):
    """HRDA's state is its segmenter's plus ``scale_attention.*``: a single-scale source
    model's weights (``init_from`` its run) were refused for lacking the attention head."""
    import logging

    from mic.tasks.segmentation import SmallUNet
    from mic.training import load_initial_weights

    torch.manual_seed(0)
    single = SmallUNet(num_classes=4, widths=[8, 16])
    hrda = HRDA(SmallUNet(num_classes=4, widths=[8, 16]), detail_crop=(16, 16))
    attention = {k: v.clone() for k, v in hrda.scale_attention.state_dict().items()}
    path = tmp_path / "student.pt"
    torch.save(single.state_dict(), path)
    with caplog.at_level(logging.INFO):
        load_initial_weights(hrda, path)
    loaded = hrda.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in single.state_dict().items())
    assert all(torch.equal(hrda.scale_attention.state_dict()[k], v) for k, v in attention.items())
    assert "holds no scale_attention.*" in caplog.text
    # a trained model rebuilt (mic.load_run): nothing may be left as initialised
    with pytest.raises(ConfigError, match=r"missing from the file: scale_attention\."):
        load_initial_weights(hrda, path, "load_run", lacking_ok=False)
    # part of the head is no model's weights: refused, as every other missing tensor
    head = {f"scale_attention.{k}": v for k, v in attention.items()}
    first = next(iter(head))
    torch.save({**single.state_dict(), first: head[first]}, path)
    with pytest.raises(ConfigError, match=r"missing from the file: scale_attention\."):
        load_initial_weights(hrda, path)
    torch.save({k: v for k, v in single.state_dict().items() if k.startswith("encoder.")}, path)
    with pytest.raises(ConfigError, match=r"missing from the file: decode_head\."):
        load_initial_weights(hrda, path)


def test_labels_of_another_size_than_the_images_are_a_dataset_error():
    """torch's stack error from the detail crop of the labels before."""
    from mic import DatasetError

    task, model = HRDASegmentationTask(8), HRDA(SmallUNet(8), detail_crop=(32, 32))
    with pytest.raises(DatasetError, match=r"labels of \(32, 32\) for images of \(64, 64\)"):
        task.loss(model, torch.randn(2, 3, 64, 64), torch.randint(0, 8, (2, 32, 32)))
    assert set(task.loss(model, torch.randn(2, 3, 64, 64), torch.randint(0, 8, (2, 64, 64)))) == {
        "fused",
        "detail",
    }
