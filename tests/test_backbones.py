import pytest
import torch

from mic import ConfigError
from mic.backbones import create_backbone

# small members of the families the tasks use (ResNet, ViT, MiT-like, our CNNs)
NAMES = ["tiny_cnn", "small_cnn", "resnet18", "vit_tiny_patch16_224", "efficientnet_b0"]


@pytest.mark.parametrize("name", NAMES)
def test_pooled_features_have_num_features(name):
    model = create_backbone(name).eval()
    size = 224 if "vit" in name else 32
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, model.num_features)


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0"])
def test_features_only_gives_a_pyramid(name):
    model = create_backbone(name, features_only=True, out_indices=(1, 2, 3))
    feats = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == model.feature_info.channels()
    assert [64 // f.shape[-1] for f in feats] == model.feature_info.reduction()


def test_unknown_name_suggests_close_names():
    with pytest.raises(ConfigError, match=r"unknown backbone 'resnet5'.*resnet50"):
        create_backbone("resnet5")


def test_pretrained_without_known_weights_is_a_clear_error():
    with pytest.raises(ConfigError, match="no pretrained weights are known"):
        create_backbone("tiny_cnn", pretrained=True)


def test_pretrained_weights_that_cannot_be_loaded_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="could not load the pretrained weights"):
        create_backbone(
            "resnet18", pretrained=True, pretrained_cfg_overlay={"file": str(tmp_path / "x.pth")}
        )


def test_pretrained_from_a_local_file_loads_it(tmp_path):
    ref = create_backbone("resnet18")
    import timm

    full = timm.create_model("resnet18")
    full.load_state_dict({**full.state_dict(), **ref.state_dict()})
    torch.save(full.state_dict(), tmp_path / "w.pth")
    loaded = create_backbone(
        "resnet18", pretrained=True, pretrained_cfg_overlay={"file": str(tmp_path / "w.pth")}
    )
    for a, b in zip(ref.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
