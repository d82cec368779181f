"""Segmentation models by name: DAFormer, DeepLabV2, smp architectures, the small U-Net; the
published optimiser groups."""

import pytest
import torch

from mic import ConfigError, param_groups
from mic.tasks.segmentation import DAFormer, DeepLabV2, SmallUNet, SmpModel

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


def test_unknown_names_are_clear_errors():
    with pytest.raises(ConfigError, match=r"unknown encoder 'mit_b9'.*mit_b"):
        DAFormer(19, "mit_b9", pretrained=False)
    with pytest.raises(ConfigError, match="unknown smp architecture"):
        SmpModel(3, "Unet3000", "resnet18")
    with pytest.raises(ConfigError, match="unknown backbone"):
        SmpModel(3, "Unet", "tu-resnet5")


def test_small_unet_keeps_full_resolution():
    assert SmallUNet(8)(torch.randn(2, 3, 64, 64)).shape == (2, 8, 64, 64)
