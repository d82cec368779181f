"""What every segmentation model shares: ``Segmenter`` (an ``encoder`` and a ``decode_head``),
encoders by name, the feature-level selection and the conv helpers of the decode heads.

The submodule names matter: optimiser configs give ``model.decode_head`` its x10 learning
rate, and the ImageNet feature distance compares ``forward_features(x)[-1]`` (the encoder's
deepest features) with a frozen copy of the initial ``encoder``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from torch import Tensor, nn

from mic.core.errors import ConfigError
from mic.schema import did_you_mean

#: how to train without pretrained weights, in each config that holds an encoder: a
#: segmentation model's own, or the segmenter an HRDA model wraps (conf/model/hrda_*.yaml)
_NO_WEIGHTS = (
    "train without them (on the command line model.pretrained=false, or "
    "model.segmenter.pretrained=false with an HRDA model (model=hrda_*, the *_hrda_* "
    "experiments), whose segmenter holds the encoder; in Python pretrained=False)"
)
_OFFLINE_ADVICE = (
    "Without internet, download them once into the Hugging Face cache (a run with pretrained "
    f"weights on a machine with internet fills it; HF_HOME moves it), or {_NO_WEIGHTS}."
)


def create_encoder(
    name: str,
    pretrained: bool = False,
    depth: int = 5,
    output_stride: int = 32,
    **kwargs: Any,
) -> nn.Module:
    """Create a segmentation_models_pytorch (smp) encoder by name.

    Args:
        name: smp's own encoder (``mit_b0`` ... ``mit_b5``, ``resnet101``, ...; see
            ``segmentation_models_pytorch.encoders.get_encoder_names()``) or any timm model
            as ``tu-<timm name>``.
        pretrained: load the ImageNet weights (smp's ``"imagenet"``, or timm's default
            pretrained tag for ``tu-`` encoders).
        depth: the number of downsampling stages (smp's ``depth``; 5 gives strides 2 to 32).
        output_stride: 32, or 16 / 8 to replace the last strides by dilations (smp's
            ``output_stride``).
        **kwargs: passed to ``segmentation_models_pytorch.encoders.get_encoder``.

    Returns:
        smp's encoder: its forward maps an image (B, 3, H, W) to a list of ``depth + 1``
        feature maps (B, C_i, H / 2**i, W / 2**i), the input itself first (strides capped at
        ``output_stride``); its ``out_channels`` lists the widths C_i (0 for a level the
        encoder does not produce, such as the stride-2 level of MiT).

    Raises:
        ConfigError: ``name`` is neither smp's nor a timm model's, an ``output_stride``
            below 32 for an encoder that cannot be dilated (VGG), or, with ``pretrained``,
            the weights cannot be loaded (e.g. offline without a cached copy).
    """
    import segmentation_models_pytorch as smp

    weights = encoder_weights(name, pretrained)
    kwargs, building = weights_from_cache(name, pretrained, kwargs)
    try:
        with building:
            return smp.encoders.get_encoder(
                name,
                in_channels=3,
                depth=depth,
                weights=weights,
                output_stride=output_stride,
                **kwargs,
            )
    except Exception as e:
        if output_stride != 32 and "dilated mode" in str(e):  # smp's VGG, DenseNet, ...
            raise ConfigError(
                f"encoder '{name}' cannot replace its last strides by dilations (output stride "
                f"{output_stride}, as DeepLabV2 needs): {e} Choose one that can, e.g. "
                "resnet101 (published), resnet50 or tu-<a timm ResNet or ConvNeXt>"
            ) from e
        if pretrained:
            raise _weights_error(name, e) from e
        raise


def encoder_weights(name: str, pretrained: bool) -> Any:
    """smp's ``encoder_weights`` argument for encoder ``name``, building nothing.

    Args:
        name: smp's own encoder name or ``tu-<timm name>``.
        pretrained: whether ImageNet weights are wanted.

    Returns:
        ``"imagenet"`` for smp's encoders and ``True`` for ``tu-`` ones when ``pretrained``,
        else ``None``.

    Raises:
        ConfigError: neither smp nor timm knows ``name`` (with the nearest known names).
    """
    import segmentation_models_pytorch as smp

    if name.startswith("tu-"):
        from mic.backbones import check_backbone_name

        check_backbone_name(name[3:])
        return True if pretrained else None
    known = smp.encoders.get_encoder_names()
    if name not in known:
        raise ConfigError(
            f"unknown encoder '{name}'.{did_you_mean(name, known)} Use one of smp's encoders "
            "(segmentation_models_pytorch.encoders.get_encoder_names()) or any timm model "
            "as 'tu-<timm name>'"
        )
    return "imagenet" if pretrained else None


def weights_from_cache(
    name: str, pretrained: bool, kwargs: dict[str, Any]
) -> tuple[dict[str, Any], AbstractContextManager[None]]:
    """How to build encoder ``name`` so that, when the Hugging Face hub cannot be reached (a
    compute node without internet), its pretrained weights come from the local Hugging Face
    cache at once, or the build stops at once, instead of retrying the hub for half a minute:
    the timm backbones' way (``mic.backbones.factory.cached_when_offline``).

    Args:
        name: smp's own encoder name or ``tu-<timm name>`` (``encoder_weights`` checked it).
        pretrained: whether ImageNet weights are wanted (nothing to do without).
        kwargs: the keywords for smp's encoder.

    Returns:
        ``kwargs`` for smp's encoder (a ``tu-`` encoder's cached file as timm's
        ``pretrained_cfg_overlay``) and a context to build it in (huggingface_hub's offline
        mode for smp's own encoders, whose files are then in the cache).

    Raises:
        ConfigError: the hub cannot be reached and the weights are not in the local cache
            (naming them, and the setting that trains without them).
    """
    from mic.backbones.factory import cached_when_offline, timm_weights_when_offline

    what = f"encoder '{name}'"
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    if not pretrained or overlay.get("file"):
        return kwargs, nullcontext()
    if name.startswith("tu-"):
        cached = timm_weights_when_offline(name[3:], what, _OFFLINE_ADVICE)
        if cached is None:
            return kwargs, nullcontext()
        return {**kwargs, "pretrained_cfg_overlay": {**overlay, "file": cached}}, nullcontext()
    import segmentation_models_pytorch as smp

    settings = smp.encoders.encoders[name]["pretrained_settings"].get("imagenet") or {}
    if not settings.get("repo_id"):
        return kwargs, nullcontext()
    revision = settings.get("revision")
    repo = settings["repo_id"] + (f"@{revision}" if revision else "")
    # smp's get_encoder reads both files
    found = cached_when_offline(repo, ["config.json", "model.safetensors"], what, _OFFLINE_ADVICE)
    return kwargs, (_hub_offline() if found else nullcontext())


@contextmanager
def _hub_offline() -> Iterator[None]:
    """huggingface_hub's offline mode (as ``HF_HUB_OFFLINE=1``) within the block: its
    downloads take the cached file without a request (only used once the hub is known to be
    unreachable and the files cached)."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _weights_error(name: str, error: Exception) -> ConfigError:
    return ConfigError(
        f"could not load the pretrained weights of encoder '{name}' "
        f"({error.__class__.__name__}: {error}). {_OFFLINE_ADVICE}"
    )


def _conv_bn_relu(
    cin: int, cout: int, kernel: int = 1, dilation: int = 1, groups: int = 1
) -> nn.Sequential:
    """A bias-free (dilated) conv with 'same' padding (Kaiming-normal, fan-out), BN, ReLU."""
    pad = dilation * (kernel // 2)
    conv = nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, groups=groups, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SeparableConv(nn.Sequential):
    """Depthwise 3 x 3 (dilated) conv + BN + ReLU, then pointwise 1 x 1 conv + BN + ReLU.

    Args:
        cin: input channels.
        cout: output channels.
        dilation: the depthwise conv's dilation (its padding keeps H and W).
    """

    def __init__(self, cin: int, cout: int, dilation: int) -> None:
        super().__init__(
            _conv_bn_relu(cin, cin, 3, dilation, groups=cin), _conv_bn_relu(cin, cout, 1)
        )


class PyramidEncoder(nn.Module):
    """An smp encoder whose forward returns only some of its feature levels.

    Args:
        encoder: an smp encoder (see ``create_encoder``), kept as ``self.encoder``.
        levels: indices into the encoder's list of feature maps (index 0 is the input itself,
            index i has stride 2**i).
    """

    def __init__(self, encoder: nn.Module, levels: Sequence[int]) -> None:
        super().__init__()
        self.encoder = encoder
        self.levels = list(levels)
        self.out_channels = [encoder.out_channels[i] for i in self.levels]

    def forward(self, x: Tensor) -> list[Tensor]:
        """The selected levels of the encoder's features.

        Args:
            x: images (B, 3, H, W).

        Returns:
            the selected feature maps, (B, out_channels[k], H_k, W_k) each, finest first.
        """
        features = self.encoder(x)
        return [features[i] for i in self.levels]


class Segmenter(nn.Module):
    """An encoder (image -> list of feature maps) and a decode head (features -> logits).

    Every mic segmentation model is a ``Segmenter``; ``DAFormer``, ``DeepLabV2``,
    ``SmpModel`` and ``SmallUNet`` only build the two parts. Logits come at the decode head's
    resolution (its output stride); the Task upsamples them to the labels.

    Args:
        encoder: maps images (B, 3, H, W) to a sequence of feature maps (B, C_i, H_i, W_i),
            kept as ``self.encoder`` (state_dict keys ``encoder.*``).
        decode_head: maps that sequence to logits (B, num_classes, h, w), kept as
            ``self.decode_head`` (state_dict keys ``decode_head.*``).
        num_classes: the number of classes (``self.num_classes``).
    """

    #: the smallest image side the encoder takes (pixels); smaller images are refused by
    #: ``forward_features`` with a message instead of torch's kernel-size error
    min_side = 1
    #: image sides must be multiples of it (an smp model: its encoder's output stride), else
    #: ``forward_features`` refuses them with a message instead of a size mismatch deep inside
    side_multiple = 1

    def __init__(self, encoder: nn.Module, decode_head: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.decode_head = decode_head
        self.num_classes = int(num_classes)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The encoder's feature maps.

        Args:
            x: images (B, 3, H, W), float.

        Returns:
            the encoder's feature maps, (B, C_i, H_i, W_i) each, finest first.

        Raises:
            ConfigError: an image side below ``min_side`` (e.g. an HRDA crop too small), or
                not a multiple of ``side_multiple``.
        """
        where = (
            "(HRDA: its detail crop, or its context at context_scale; sliding-window "
            "inference: its crop)"
        )
        if min(x.shape[-2:]) < self.min_side:
            raise ConfigError(
                f"{type(self).__name__} takes images of at least {self.min_side} px a side, got "
                f"{tuple(x.shape[-2:])} {where}: use larger crops or images"
            )
        h, w = x.shape[-2:]
        if h % self.side_multiple or w % self.side_multiple:
            fit = [-(-side // self.side_multiple) * self.side_multiple for side in (h, w)]
            raise ConfigError(
                f"{type(self).__name__} takes image sides that are multiples of its encoder's "
                f"output stride {self.side_multiple}, got {h} x {w} {where}: its logits would "
                f"not fit the image. Resize or pad the images to e.g. {fit[0]} x {fit[1]} "
                "(dataset.size), or choose crops and a context_scale that give such sides"
            )
        return list(self.encoder(x))

    def decode(self, features: Sequence[Tensor]) -> Tensor:
        """The decode head's logits.

        Args:
            features: the encoder's feature maps (``forward_features``).

        Returns:
            logits (B, num_classes, h, w) at the decode head's resolution.
        """
        return self.decode_head(features)

    def feature_input(self, x: Tensor) -> Tensor:
        """The images whose encoder features ``forward(x, return_features=True)`` returns
        (here ``x`` itself; HRDA: its context image). The ImageNet feature distance feeds them
        to its frozen encoder.

        Args:
            x: images (B, 3, H, W).

        Returns:
            images (B, 3, H', W').
        """
        return x

    def scale_attention_head(self, num_outputs: int) -> nn.Module:
        """The head HRDA learns its scale attention with, on this model's features.

        Args:
            num_outputs: attention channels (the classes, or 1 for one shared attention).

        Returns:
            a module mapping ``forward_features(x)`` to (B, num_outputs, h, w) at the decode
            head's resolution.

        Raises:
            ConfigError: this architecture has none (give ``HRDA`` an ``attention_head``).
        """
        raise ConfigError(
            f"{type(self).__name__} defines no scale-attention head for HRDA; pass "
            "HRDA(..., attention_head=<a module mapping the encoder's features to "
            "(B, num_classes, h, w)>) or use DAFormer, DeepLabV2, SmpModel or SmallUNet"
        )

    def forward(
        self, x: Tensor, return_features: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Logits, and with ``return_features`` the features of the same forward pass.

        The features come through the module's own forward so that a DistributedDataParallel
        wrapper sees the call (DAFormer's source loss and feature distance read them).

        Args:
            x: images (B, 3, H, W), float (the dtype of the parameters).
            return_features: also return the encoder's feature maps.

        Returns:
            logits (B, num_classes, h, w), float, where (h, w) is (H, W) divided by the
            model's output stride; with ``return_features``, ``(logits, features)``, features
            a list of (B, C_i, H_i, W_i) tensors as from ``forward_features``.
        """
        features = self.forward_features(x)
        logits = self.decode(features)
        return (logits, features) if return_features else logits
