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


@pytest.mark.parametrize("pretrained", [False, True])
def test_an_unknown_weights_tag_names_the_model_s_tags(pretrained):
    # timm's RuntimeError 'Invalid pretrained tag (foo)' came through Hydra's raw message
    # (pretrained off), and 'no pretrained weights are known' blamed the model (on)
    said = r"timm knows no weights tagged 'foo' for resnet18 \(its tags: a1_in1k, "
    with pytest.raises(ConfigError, match=said):
        create_backbone("resnet18.foo", pretrained=pretrained)
    assert create_backbone("resnet18.a1_in1k").num_features == 512
    assert create_backbone("seresnet34.untrained").num_features == 512  # a tag of no weights


def test_pretrained_without_known_weights_names_the_overrides_that_fix_it():
    """The hint is read by mic-train users: it names command-line overrides (and Python's)."""
    with pytest.raises(ConfigError, match="no pretrained weights are known") as error:
        create_backbone("darknet17", pretrained=True)  # a timm model without published weights
    message = str(error.value)
    assert "on the command line model.pretrained=false" in message
    assert "+model.pretrained_cfg_overlay={file:/path/to/weights.pth}" in message
    assert "pretrained=False" in message


@pytest.mark.parametrize("name", ["tiny_cnn", "small_cnn"])
def test_pretrained_small_backbones_are_refused_even_with_a_weights_file(name, tmp_path):
    """timm builds mic's small CNNs without loading a file: it would be ignored silently."""
    torch.save(create_backbone(name).state_dict(), tmp_path / "w.pth")
    overlay = {"file": str(tmp_path / "w.pth")}
    for kwargs in ({}, {"pretrained_cfg_overlay": overlay}):
        with pytest.raises(ConfigError, match=f"'{name}' has no pretrained weights.*init_from"):
            create_backbone(name, pretrained=True, **kwargs)


def test_pretrained_weights_that_cannot_be_loaded_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "x.pth")
    with pytest.raises(ConfigError, match=f"file {missing} is not a file"):
        create_backbone("resnet18", pretrained=True, pretrained_cfg_overlay={"file": missing})
    (tmp_path / "y.pth").write_text("not weights")
    with pytest.raises(ConfigError, match=r"could not load the pretrained weights .*\(\w+Error: "):
        create_backbone(
            "resnet18", pretrained=True, pretrained_cfg_overlay={"file": str(tmp_path / "y.pth")}
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


def _offline(monkeypatch, cache) -> None:
    """No route to the Hugging Face hub, and ``cache`` as its local cache."""
    import socket

    from huggingface_hub import constants

    def no_route(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", no_route)
    # timm asks the hub only through this (which would retry it for up to a minute)
    monkeypatch.setattr("timm.models._hub.hf_hub_download", no_route)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for variable in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)


def test_offline_pretrained_weights_load_from_the_hugging_face_cache_at_once(tmp_path, monkeypatch):
    import timm
    from safetensors.torch import save_file

    repo = timm.models.get_pretrained_cfg("resnet18").hf_hub_id  # timm/resnet18.a1_in1k
    snapshot = tmp_path / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    torch.manual_seed(3)
    full = timm.create_model("resnet18")
    save_file(full.state_dict(), snapshot / "model.safetensors")
    _offline(monkeypatch, tmp_path)
    loaded = create_backbone("resnet18", pretrained=True)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, full.state_dict()[key]), key


def test_offline_pretrained_weights_not_in_the_cache_is_a_clear_error_at_once(
    tmp_path, monkeypatch
):
    _offline(monkeypatch, tmp_path)
    with pytest.raises(
        ConfigError, match=r"hub cannot be reached and timm/resnet18\.\S+ is not in"
    ) as error:
        create_backbone("resnet18", pretrained=True)
    # the ways out, as mic-train overrides (a key=value a user can type)
    assert "on the command line +model.pretrained_cfg_overlay={file:/path/to/weights.pth}" in str(
        error.value
    )
    assert "on the command line model.pretrained=false" in str(error.value)


def test_a_weights_file_without_pretrained_is_refused_not_ignored(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"pretrained=false, so the file would not be read"):
        create_backbone("resnet18", pretrained=False, pretrained_cfg_overlay={"file": str(weights)})


def test_pretrained_weights_of_another_model_are_refused_not_left_random(tmp_path):
    """timm loads a backbone's weights leniently (no classifier): another model's file or
    junk would leave it at random weights, with a log line only."""
    import timm

    from mic.tasks.classification import Classifier
    from mic.tasks.segmentation import SmpModel

    own, other, junk = tmp_path / "r18.pth", tmp_path / "cnx.pth", tmp_path / "junk.pth"
    torch.save(timm.create_model("resnet18").state_dict(), own)
    torch.save(timm.create_model("convnext_atto", num_classes=0).state_dict(), other)
    torch.save({"foo": torch.zeros(3)}, junk)
    builds = {
        "classifier": lambda f: Classifier(
            "resnet18", 3, pretrained=True, pretrained_cfg_overlay=f
        ),
        "features": lambda f: create_backbone(
            "resnet18", True, features_only=True, pretrained_cfg_overlay=f
        ),
        "smp": lambda f: SmpModel(3, "Unet", "tu-resnet18", True, pretrained_cfg_overlay=f),
    }
    for name, build in builds.items():
        build({"file": str(own)})  # its own weights load
        for wrong in (other, junk):
            with pytest.raises(ConfigError, match=r"hold 0 of its \d+ tensors"):
                build({"file": str(wrong)})
                pytest.fail(f"{name}: {wrong.name} was taken")


def test_weights_of_a_deeper_or_shallower_model_of_the_family_are_refused(tmp_path):
    """resnet18's file fits resnet34's first blocks and leaves the rest random; resnet34's
    fits every tensor of resnet18 with blocks it does not have."""
    import timm

    files = {}
    for name in ("resnet18", "resnet34"):
        files[name] = tmp_path / f"{name}.pth"
        torch.save(timm.create_model(name).state_dict(), files[name])
    for name, other, said in (
        ("resnet34", "resnet18", "hold 100 of its 180"),
        ("resnet18", "resnet34", "tensors it does not have"),
    ):
        overlay = {"file": str(files[other])}
        with pytest.raises(ConfigError, match=said):
            create_backbone(name, pretrained=True, pretrained_cfg_overlay=overlay)
        create_backbone(name, pretrained=True, pretrained_cfg_overlay={"file": str(files[name])})


def test_a_local_weights_file_that_cannot_be_read_gets_no_advice_on_downloading(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(ConfigError) as error:
        create_backbone("resnet18", pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    assert f"from {path}" in str(error.value) and "internet" not in str(error.value)
