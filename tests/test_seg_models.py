"""Segmentation models by name: DAFormer, DeepLabV2, smp architectures, the small U-Net; the
published optimiser groups."""

import pytest
import torch
from torch import nn

from mic import ConfigError, param_groups
from mic.tasks.segmentation import (
    HRDA,
    ContextUNet,
    DAFormer,
    DeepLabV2,
    Segmenter,
    SmallUNet,
    SmpModel,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_daformer_mit_encoder_fusion_decoder_and_published_param_groups():
    torch.manual_seed(0)
    model = DAFormer(19, "mit_b0", pretrained=False)
    x = torch.randn(2, 3, 64, 64)
    features = model.forward_features(x)
    assert [f.shape[-1] for f in features] == [16, 8, 4, 2]  # strides 4 .. 32
    assert model(x).shape == (2, 19, 16, 16)
    assert [len(b) for b in model.decode_head.branches] == [3, 2, 2, 2]  # 1x1, 3 separable
    groups = param_groups(
        {"model": model},
        lr=6e-5,
        lr_mult={"model.decode_head": 10.0},
        weight_decay=0.01,
        no_weight_decay=["norm", "pos_block"],
    )
    by = {(g["lr_mult"], g["weight_decay"]) for g in groups}
    assert by == {(1.0, 0.01), (1.0, 0.0), (10.0, 0.01)}  # head BN ('bn') decays, as published
    head = {id(p) for p in model.decode_head.parameters()}
    for g in groups:
        assert all((id(p) in head) == (g["lr_mult"] == 10.0) for p in g["params"])


def test_deeplabv2_is_dilated_with_the_aspp_classifier():
    model = DeepLabV2(5, encoder="resnet18", pretrained=False)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5, 4, 4)  # output stride 8
    assert [b.dilation for b in model.decode_head.branches] == [
        (6, 6),
        (12, 12),
        (18, 18),
        (24, 24),
    ]


def test_smp_architecture_with_a_timm_encoder_by_name():
    model = SmpModel(
        4, "FPN", "tu-resnet10t", decoder_segmentation_channels=32, decoder_pyramid_channels=32
    )
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4, 64, 64)
    assert model.num_classes == 4 and hasattr(model, "decode_head")


def test_a_setting_smp_s_own_encoders_would_drop_is_refused_and_timm_s_pass_on():
    # smp's own encoders dropped unknown keywords: a misspelt setting (or a U-Net's settings
    # left under HRDA's segmenter) trained the default model without a word
    said = r"'decoder_segmentation_channel' is no setting of smp's Segformer .* drop it unread\. "
    with pytest.raises(ConfigError, match=said + "Did you mean: decoder_segmentation_channels"):
        SmpModel(4, "Segformer", "mit_b0", decoder_segmentation_channel=16)
    with pytest.raises(ConfigError, match="'widths' is no setting of smp's Unet"):
        SmpModel(4, "Unet", "resnet18", widths=[8, 16], norm="batch")
    narrow = SmpModel(4, "Segformer", "mit_b0", decoder_segmentation_channels=16)
    assert narrow.decode_head.segmentation_head[0].in_channels == 16
    # smp's deprecated names, which its architectures read from their keywords, are taken
    for arch, given in (("Unet", "decoder_use_batchnorm"), ("PSPNet", "psp_use_batchnorm")):
        assert SmpModel(4, arch, "resnet18", **{given: False}) is not None
    # a tu- encoder takes timm's keywords, which timm checks itself
    assert SmpModel(4, "FPN", "tu-resnet10t", drop_path_rate=0.1) is not None
    with pytest.raises(TypeError, match="unexpected keyword argument 'widths'"):
        SmpModel(4, "FPN", "tu-resnet10t", widths=[8])


@pytest.mark.parametrize(("arch", "stride"), [("Unet", 32), ("PSPNet", 8), ("Segformer", 32)])
def test_smp_models_refuse_sides_their_stride_does_not_divide(arch, stride):
    """smp fails on such sides (Unet) or gives logits of another size (PSPNet: 40 x 48 for
    33 x 47, which the task would stretch over the labels)."""
    model = SmpModel(3, arch, "resnet18").eval()
    assert model.side_multiple == stride
    with torch.no_grad():
        assert model(torch.rand(1, 3, 2 * stride, 3 * stride)).shape == (
            1,
            3,
            2 * stride,
            3 * stride,
        )
        with pytest.raises(ConfigError, match=f"multiples of its encoder's output stride {stride}"):
            model(torch.rand(1, 3, 33, 47))


def test_hrda_around_an_smp_model_refuses_context_and_detail_sides_its_stride_does_not_divide():
    # they were named as the image's sides, which fit: the setting to change is HRDA's own
    with pytest.raises(
        ConfigError,
        match=r"model.detail_crop \[40, 40\]: the inner model takes "
        r"sides that are multiples of its encoder's output stride 16: give e\.g\. "
        r"model.detail_crop=\[48, 48\]",
    ):
        HRDA(SmpModel(3, "DeepLabV3Plus", "resnet18"), context_scale=0.5, detail_crop=[40, 40])
    model = HRDA(SmpModel(3, "DeepLabV3Plus", "resnet18"), context_scale=0.5, detail_crop=[32, 32])
    with (
        torch.no_grad(),
        pytest.raises(
            ConfigError,
            match=r"model.context_scale=0.5 of 80 x 80 "
            r"images gives a 40 x 40 px context image, which the",
        ),
    ):
        model.eval()(torch.randn(1, 3, 80, 80))  # a 40 px context


def test_unknown_names_are_clear_errors():
    with pytest.raises(ConfigError, match=r"unknown encoder 'mit_b9'.*mit_b"):
        DAFormer(19, "mit_b9", pretrained=False)
    with pytest.raises(ConfigError, match="unknown smp architecture"):
        SmpModel(3, "Unet3000", "resnet18")
    with pytest.raises(ConfigError, match="unknown backbone"):
        SmpModel(3, "Unet", "tu-resnet5")


def test_small_unet_keeps_full_resolution():
    assert SmallUNet(8)(torch.randn(2, 3, 64, 64)).shape == (2, 8, 64, 64)


@pytest.mark.parametrize("cls", [SmallUNet, ContextUNet])
def test_layer_norm_normalises_each_image_on_its_own(cls: type) -> None:
    """In training mode, BatchNorm makes one image's logits depend on the other images of the
    batch; ``norm="layer"`` does not (the same parameter count, no BatchNorm left)."""
    torch.manual_seed(0)
    widths = (4, 8, 8)
    batch, layer = cls(4, widths), cls(4, widths, norm="layer")
    assert sum(p.numel() for p in batch.parameters()) == sum(p.numel() for p in layer.parameters())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in layer.modules())
    head = layer.scale_attention_head(1)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in head.modules())
    x = torch.randn(3, 3, 16, 16)
    other = torch.cat([x[:1], torch.randn(2, 3, 16, 16)])
    for model, alone in ((batch, False), (layer, True)):
        model.train()
        same = torch.allclose(model(x)[0], model(other)[0], atol=1e-5)
        assert same is alone
    with pytest.raises(ConfigError, match=r"model\.norm must be one of"):
        cls(4, norm="group")


def _input_pixels_seen(model: nn.Module, size: int, row: int, col: int) -> torch.Tensor:
    """(size, size) bool: the input pixels that output pixel (row, col)'s first logit
    depends on (a nonzero gradient), in eval mode."""
    torch.manual_seed(0)
    model.eval()
    x = torch.randn(1, 3, size, size, requires_grad=True)
    model(x)[0, 0, row, col].backward()
    return x.grad.abs().sum(1)[0] > 0


def test_context_unet_sees_the_whole_image_where_the_small_unet_does_not():
    widths = (4, 8, 8, 8, 8)  # five stages, as the benchmark's models
    small = _input_pixels_seen(SmallUNet(3, widths=widths), 256, 10, 10)
    context = _input_pixels_seen(ContextUNet(3, widths=widths), 256, 10, 10)
    assert context.all()
    assert not small[-1, -1] and small.float().mean() < 0.5  # 191 px at most
    unet = SmallUNet(8, widths=(8, 16, 32, 48, 64))
    model = ContextUNet(8)  # the config's widths: about the small U-Net's size
    count = [sum(p.numel() for p in m.parameters()) for m in (unet, model)]
    assert count[0] < count[1] < 1.3 * count[0]


def test_context_unet_at_other_sizes_in_hrda_and_its_errors():
    model = ContextUNet(5, widths=(4, 8, 8, 8, 8), heads=2)
    for side in (32, 96):  # the position embedding resized to 2 x 2 and 6 x 6 maps
        assert model(torch.randn(2, 3, side, side)).shape == (2, 5, side, side)
    hrda = HRDA(model, detail_crop=(16, 16)).eval()  # its attention head: a context head
    assert type(hrda.scale_attention).__name__ == "ContextUNetHead"
    with torch.no_grad():
        assert hrda(torch.randn(2, 3, 32, 32)).shape == (2, 5, 32, 32)
    with pytest.raises(ConfigError, match=r"divisible by model\.heads"):
        ContextUNet(3, widths=(4, 6), heads=4)
    with pytest.raises(ConfigError, match="no pretrained weights"):
        ContextUNet(3, pretrained=True)


ARCHITECTURES = {
    # name: (build, output stride)
    "daformer": (lambda n=3: DAFormer(n, "mit_b0", pretrained=False, embed_dim=16), 4),
    "deeplabv2": (lambda n=3: DeepLabV2(n, encoder="resnet18", pretrained=False), 8),
    "smp_unet": (
        lambda n=3: SmpModel(n, "Unet", "resnet18", decoder_channels=(16, 16, 16, 16, 16)),
        1,
    ),
    "small_unet": (lambda n=3: SmallUNet(n, widths=(4, 8, 8)), 1),
    "context_unet": (lambda n=3: ContextUNet(n, widths=(4, 8, 8), heads=2), 1),
}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_architecture_is_a_segmenter_module(name):
    build, stride = ARCHITECTURES[name]
    torch.manual_seed(0)
    model = build().eval()
    assert isinstance(model, Segmenter) and issubclass(type(model), nn.Module)
    assert type(model).__name__ != "Segmenter"  # a model class of its own
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
        both = model(x, return_features=True)
    assert logits.shape == (2, 3, 64 // stride, 64 // stride)
    assert isinstance(both, tuple) and len(both) == 2
    again, features = both
    assert torch.equal(again, logits)
    assert isinstance(features, list) and features
    assert all(isinstance(f, torch.Tensor) and f.dim() == 4 and len(f) == 2 for f in features)
    names = [n for n, _ in model.named_parameters()]
    assert names and all(n.startswith(("encoder.", "decode_head.")) for n in names)
    assert any(n.startswith("decode_head.") for n in names)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
@pytest.mark.parametrize("bad", ["3", 2.5, 0])
def test_every_architecture_refuses_a_class_count_that_is_no_whole_number(name, bad):
    # "3" ended in a TypeError of string formatting deep in torch's Conv2d
    with pytest.raises(
        ConfigError, match=f"num_classes must be a positive whole number .* got {bad!r}"
    ):
        ARCHITECTURES[name][0](bad)


def test_model_names_import_from_the_task_package_and_the_models_package():
    import mic.tasks.segmentation as seg
    from mic.tasks.segmentation import models

    assert set(models.__all__) <= set(seg.__all__)
    assert all(getattr(seg, name) is getattr(models, name) for name in models.__all__)


@pytest.mark.parametrize("name", ["mit_b0", "timm-efficientnet-b0"])
def test_offline_encoder_weights_load_from_the_hugging_face_cache_at_once(
    name, tmp_path, monkeypatch
):
    """smp's own encoders (timm-* among them: they retried the hub for 37 s) where the hub
    cannot be reached: their weights come from the local cache without a request; without
    them in the cache the error names the way out."""
    import segmentation_models_pytorch as smp
    from safetensors.torch import save_file

    from mic.tasks.segmentation.models.base import create_encoder
    from tests.test_backbones import _offline

    _offline(monkeypatch, tmp_path)
    with pytest.raises(ConfigError, match=rf"smp-hub/{name}\.imagenet is not in the local") as e:
        create_encoder(name, pretrained=True)
    assert "model.segmenter.pretrained=false" in str(e.value)

    settings = smp.encoders.encoders[name]["pretrained_settings"]["imagenet"]
    repo = tmp_path / f"models--{settings['repo_id'].replace('/', '--')}"
    snapshot = repo / "snapshots" / settings["revision"]
    snapshot.mkdir(parents=True)
    torch.manual_seed(5)
    saved = smp.encoders.get_encoder(name, weights=None).state_dict()
    save_file({k: v.contiguous() for k, v in saved.items()}, snapshot / "model.safetensors")
    (snapshot / "config.json").write_text("{}")
    loaded = create_encoder(name, pretrained=True).state_dict()
    for key, value in saved.items():
        assert torch.equal(loaded[key], value), key


def test_a_weights_file_for_an_smp_encoder_of_its_own_is_refused_not_ignored(tmp_path):
    with pytest.raises(ConfigError, match="read by timm encoders"):
        SmpModel(3, "Unet", "resnet18", True, pretrained_cfg_overlay={"file": str(tmp_path)})
    with pytest.raises(ConfigError, match="pretrained=false, so the file would not be read"):
        SmpModel(3, "Unet", "tu-resnet18", False, pretrained_cfg_overlay={"file": str(tmp_path)})
    # a file that is not there (timm's message was 'FileNotFoundError: ' and no name)
    missing = {"file": str(tmp_path / "nowhere.pth")}
    with pytest.raises(ConfigError, match=r"pretrained_cfg_overlay\.file .*nowhere\.pth is not a"):
        SmpModel(3, "Unet", "tu-resnet18", True, pretrained_cfg_overlay=missing)


def test_whole_float_settings_from_yaml_build_models_that_run():
    """``dilations: [6.0, 12]`` passed the check and crashed in conv2d at the first forward;
    ``embed_dim: 256.0`` failed in torch with an unrelated message."""
    torch.manual_seed(0)
    models = [
        DeepLabV2(3, encoder="resnet18", pretrained=False, dilations=[6.0, 12]),
        DAFormer(3, "mit_b0", pretrained=False, embed_dim=32.0, dilations=[1, 6.0]),
    ]
    for model in models:
        with torch.no_grad():
            out = model.eval()(torch.rand(1, 3, 64, 64))
        assert out.shape[:2] == (1, 3)
