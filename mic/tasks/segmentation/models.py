"""Segmentation models: DAFormer, DeepLabV2 and any segmentation_models_pytorch architecture,
all as an ``encoder`` (a feature pyramid) and a ``decode_head``.

The names matter: optimiser configs give ``model.decode_head`` its x10 learning rate, and
the ImageNet feature distance compares ``forward_features(x)[-1]`` (the encoder's deepest
features) with a frozen copy of the initial ``encoder``. Every model's ``forward`` returns
logits at the decoder's resolution (1/4 for DAFormer, 1/8 for DeepLabV2, full for smp's);
the Task upsamples them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mic.core.errors import ConfigError, did_you_mean


def create_encoder(
    name: str,
    pretrained: bool = False,
    depth: int = 5,
    output_stride: int = 32,
    **kwargs: Any,
) -> nn.Module:
    """An smp encoder by name: smp's own (``mit_b0`` ... ``mit_b5``, ``resnet101``, ...) or
    any timm model as ``tu-<name>``. Returns smp's encoder, whose forward gives the list of
    feature maps (input resolution first) and whose ``out_channels`` lists their widths."""
    import segmentation_models_pytorch as smp

    weights = encoder_weights(name, pretrained)
    try:
        return smp.encoders.get_encoder(
            name, in_channels=3, depth=depth, weights=weights, output_stride=output_stride, **kwargs
        )
    except Exception as e:
        if pretrained:
            raise _weights_error(name, e) from e
        raise


def encoder_weights(name: str, pretrained: bool) -> Any:
    """smp's ``encoder_weights`` for encoder ``name`` (smp's own or ``tu-<timm name>``), after
    a clear error for a name neither knows; building nothing."""
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


def _weights_error(name: str, error: Exception) -> ConfigError:
    return ConfigError(
        f"could not load the pretrained weights of encoder '{name}' "
        f"({error.__class__.__name__}: {error}). Without internet, download them once into the "
        "Hugging Face cache (then set HF_HUB_OFFLINE=1), or use pretrained=false"
    )


def _conv_bn_relu(
    cin: int, cout: int, kernel: int = 1, dilation: int = 1, groups: int = 1
) -> nn.Sequential:
    pad = dilation * (kernel // 2)
    conv = nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, groups=groups, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SeparableConv(nn.Sequential):
    """Depthwise 3 x 3 (dilated) conv + BN + ReLU, then pointwise 1 x 1 conv + BN + ReLU."""

    def __init__(self, cin: int, cout: int, dilation: int) -> None:
        super().__init__(
            _conv_bn_relu(cin, cin, 3, dilation, groups=cin), _conv_bn_relu(cin, cout, 1)
        )


class DAFormerHead(nn.Module):
    """DAFormer's context-aware fusion decoder.

    Each encoder level is embedded to ``embed_dim`` channels by a linear layer (a 1 x 1 conv,
    no norm, no activation), upsampled to the finest level (1/4) and concatenated; the stack
    is fused by parallel branches (a 1 x 1 conv for dilation 1, depthwise-separable 3 x 3
    convs for the others, each with BN + ReLU), concatenated again and reduced by a 3 x 3
    conv + BN + ReLU; dropout and a 1 x 1 classifier follow.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        embed_dim: int = 256,
        dilations: Sequence[int] = (1, 6, 12, 18),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embed = nn.ModuleList(nn.Conv2d(c, embed_dim, 1) for c in in_channels)
        fused = embed_dim * len(in_channels)
        self.branches = nn.ModuleList(
            _conv_bn_relu(fused, embed_dim, 1) if d == 1 else SeparableConv(fused, embed_dim, d)
            for d in dilations
        )
        self.bottleneck = _conv_bn_relu(embed_dim * len(dilations), embed_dim, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(embed_dim, num_classes, 1)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        size = features[0].shape[-2:]
        embedded = [
            F.interpolate(e(f), size=size, mode="bilinear", align_corners=False)
            if f.shape[-2:] != size
            else e(f)
            for e, f in zip(self.embed, features, strict=True)
        ]
        x = torch.cat(embedded, dim=1)
        x = self.bottleneck(torch.cat([b(x) for b in self.branches], dim=1))
        return self.classifier(self.dropout(x))


class DeepLabV2Head(nn.Module):
    """DeepLabV2's ASPP classifier: parallel 3 x 3 convs with dilations 6, 12, 18, 24 from the
    deepest features straight to class scores, summed."""

    def __init__(
        self, in_channels: int, num_classes: int, dilations: Sequence[int] = (6, 12, 18, 24)
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d) for d in dilations
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, 0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        x = features[-1]
        return torch.stack([b(x) for b in self.branches]).sum(0)


class PyramidEncoder(nn.Module):
    """An smp encoder whose forward returns only the feature levels listed in ``levels``
    (indices into smp's list, which starts with the input itself)."""

    def __init__(self, encoder: nn.Module, levels: Sequence[int]) -> None:
        super().__init__()
        self.encoder = encoder
        self.levels = list(levels)
        self.out_channels = [encoder.out_channels[i] for i in self.levels]

    def forward(self, x: Tensor) -> list[Tensor]:
        features = self.encoder(x)
        return [features[i] for i in self.levels]


class Segmenter(nn.Module):
    """An encoder (image -> list of feature maps) and a decode head (features -> logits).

    ``forward(x, return_features=True)`` gives the logits and the features of one forward
    pass (DAFormer's source loss and feature distance).
    """

    def __init__(self, encoder: nn.Module, decode_head: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.decode_head = decode_head
        self.num_classes = int(num_classes)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        return list(self.encoder(x))

    def decode(self, features: Sequence[Tensor]) -> Tensor:
        return self.decode_head(features)

    def forward(
        self, x: Tensor, return_features: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Logits; with ``return_features`` also the encoder's feature maps (through the
        module's own forward, so that a DistributedDataParallel wrapper sees the call)."""
        features = self.forward_features(x)
        logits = self.decode(features)
        return (logits, features) if return_features else logits


def DAFormer(
    num_classes: int,
    encoder: str = "mit_b5",
    pretrained: bool = True,
    embed_dim: int = 256,
    dilations: Sequence[int] = (1, 6, 12, 18),
    dropout: float = 0.1,
) -> Segmenter:
    """DAFormer: a MiT encoder (``mit_b0`` ... ``mit_b5``; any smp or ``tu-`` encoder works)
    and the context-aware fusion decoder over its four levels (strides 4 to 32)."""
    base = create_encoder(encoder, pretrained)
    levels = [i for i, c in enumerate(base.out_channels) if i >= 2 and c > 0][-4:]
    enc = PyramidEncoder(base, levels)
    head = DAFormerHead(enc.out_channels, num_classes, embed_dim, dilations, dropout)
    return Segmenter(enc, head, num_classes)


def DeepLabV2(
    num_classes: int,
    encoder: str = "resnet101",
    pretrained: bool = True,
    dilations: Sequence[int] = (6, 12, 18, 24),
) -> Segmenter:
    """DeepLabV2: a dilated ResNet-101 (output stride 8) and the ASPP classifier."""
    base = create_encoder(encoder, pretrained, output_stride=8)
    enc = PyramidEncoder(base, [len(base.out_channels) - 1])
    return Segmenter(enc, DeepLabV2Head(enc.out_channels[-1], num_classes, dilations), num_classes)


class SmpDecodeHead(nn.Module):
    """An smp model's decoder and segmentation head, as one decode head."""

    def __init__(self, decoder: nn.Module, segmentation_head: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.segmentation_head = segmentation_head

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        return self.segmentation_head(self.decoder(list(features)))


def SmpModel(
    num_classes: int,
    arch: str = "Unet",
    encoder: str = "resnet34",
    pretrained: bool = False,
    **kwargs: Any,
) -> Segmenter:
    """Any segmentation_models_pytorch architecture (``Unet``, ``FPN``, ``DeepLabV3Plus``,
    ``Segformer``, ...) with any of its encoders or a timm model as ``tu-<name>``."""
    import segmentation_models_pytorch as smp

    archs = {
        a.lower(): a
        for a in (
            "Unet",
            "UnetPlusPlus",
            "MAnet",
            "Linknet",
            "FPN",
            "PSPNet",
            "DeepLabV3",
            "DeepLabV3Plus",
            "PAN",
            "UPerNet",
            "Segformer",
            "DPT",
        )
    }
    if arch.lower() not in archs:
        raise ConfigError(
            f"unknown smp architecture '{arch}'; choose one of {sorted(archs.values())}"
        )
    weights = encoder_weights(encoder, pretrained)
    try:
        model = smp.create_model(
            archs[arch.lower()],
            encoder_name=encoder,
            encoder_weights=weights,
            classes=num_classes,
            **kwargs,
        )
    except Exception as e:
        if pretrained:
            raise _weights_error(encoder, e) from e
        raise
    return Segmenter(
        model.encoder, SmpDecodeHead(model.decoder, model.segmentation_head), num_classes
    )


class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class SmallUNetEncoder(nn.Module):
    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            _Block(cin, cout, 1 if i == 0 else 2)
            for i, (cin, cout) in enumerate(zip([3, *widths[:-1]], widths, strict=True))
        )
        self.out_channels = list(widths)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class SmallUNetHead(nn.Module):
    def __init__(self, widths: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.up = nn.ModuleList(
            _Block(widths[i] + widths[i + 1], widths[i]) for i in range(len(widths) - 1)
        )
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        x = features[-1]
        for i in range(len(features) - 2, -1, -1):
            skip = features[i]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.up[i](torch.cat([skip, x], dim=1))
        return self.classifier(x)


def SmallUNet(
    num_classes: int, widths: Sequence[int] = (16, 32, 48, 64, 96), pretrained: bool = False
) -> Segmenter:
    """A small full-resolution U-Net (the bundled benchmark's model and the tests'): every
    encoder stage after the first halves the resolution (five stages: 4 x 4 px cells of a
    64 px image at the bottom, with a receptive field over all of it), and the decoder
    returns to full resolution, so that thin poles survive."""
    if pretrained:
        raise ConfigError("SmallUNet has no pretrained weights; use pretrained=false")
    return Segmenter(SmallUNetEncoder(widths), SmallUNetHead(widths, num_classes), num_classes)
