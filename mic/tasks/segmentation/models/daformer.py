"""DAFormer: a MiT encoder and the context-aware fusion decoder.

Hoyer, Dai and Van Gool, "DAFormer: Improving Network Architectures and Training Strategies for
Domain-Adaptive Semantic Segmentation", CVPR 2022 (the model MIC, CVPR 2023, builds on). The
defaults are the published mmseg configs' (github.com/lhoyer/DAFormer,
``configs/_base_/models/daformer_conv1_mitb5.py``: ``embed_dims=256``, ``channels=256``,
``dropout_ratio=0.1``; ``daformer_sepaspp_mitb5.py``: separable ASPP fusion with
``dilations=(1, 6, 12, 18)``, no pooling branch, BN + ReLU).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mic.core.errors import ConfigError
from mic.tasks.common import check_dilations, check_dropout, check_whole
from mic.tasks.segmentation.models.base import (
    PyramidEncoder,
    Segmenter,
    SeparableConv,
    _conv_bn_relu,
    create_encoder,
)


class DAFormerHead(nn.Module):
    """DAFormer's context-aware fusion decoder.

    Each encoder level is embedded to ``embed_dim`` channels by a linear layer (a 1 x 1 conv,
    no norm, no activation), upsampled to the finest level (1/4) and concatenated; the stack
    is fused by parallel branches (a 1 x 1 conv for dilation 1, depthwise-separable 3 x 3
    convs for the others, each with BN + ReLU), concatenated again and reduced by a 3 x 3
    conv + BN + ReLU; dropout and a 1 x 1 classifier follow.

    Args:
        in_channels: the width of each encoder level, finest first.
        num_classes: the number of classes.
        embed_dim: the embedding and fusion width (256, as published).
        dilations: one fusion branch per dilation, 1 meaning a 1 x 1 conv ((1, 6, 12, 18), as
            published).
        dropout: the ``Dropout2d`` probability before the classifier (0.1, as published).
        fusion: ``"aspp"`` (the branches above and the 3 x 3 reduction, as published for the
            segmentation head) or ``"conv"`` (one 1 x 1 conv + BN + ReLU, ``dilations``
            unused: the fusion of HRDA's scale-attention head, published
            ``fusion_cfg=dict(type='conv', kernel_size=1)``).

    Raises:
        ConfigError: an unknown ``fusion``.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        embed_dim: int = 256,
        dilations: Sequence[int] = (1, 6, 12, 18),
        dropout: float = 0.1,
        fusion: Literal["aspp", "conv"] = "aspp",
    ) -> None:
        super().__init__()
        if fusion not in ("aspp", "conv"):
            raise ConfigError(f"DAFormerHead fusion must be 'aspp' or 'conv', got {fusion!r}")
        self.embed = nn.ModuleList(nn.Conv2d(c, embed_dim, 1) for c in in_channels)
        fused = embed_dim * len(in_channels)
        if fusion == "conv":
            dilations = (1,)
        self.branches = nn.ModuleList(
            _conv_bn_relu(fused, embed_dim, 1) if d == 1 else SeparableConv(fused, embed_dim, d)
            for d in dilations
        )
        self.bottleneck = (
            _conv_bn_relu(embed_dim * len(dilations), embed_dim, 3)
            if fusion == "aspp"
            else nn.Identity()
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(embed_dim, num_classes, 1)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """Fuse the levels and classify.

        Args:
            features: one (B, in_channels[i], H_i, W_i) map per level, the finest first.

        Returns:
            logits (B, num_classes, H_0, W_0) at the finest level's resolution.
        """
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


class DAFormer(Segmenter):
    """DAFormer: a MiT encoder and the context-aware fusion decoder (``DAFormerHead``) over
    its four levels (strides 4, 8, 16 and 32).

    Output stride 4: ``forward`` gives logits at 1/4 of the input resolution,
    (B, num_classes, H / 4, W / 4) for H and W divisible by 32; the Task upsamples them.

    Args:
        num_classes: the number of classes.
        encoder: ``mit_b0`` ... ``mit_b5`` (``mit_b5`` as published); any smp encoder or
            ``tu-<timm name>`` works, its last four levels of stride >= 4 feeding the head.
        pretrained: load the encoder's ImageNet weights (as published).
        embed_dim: the decoder's width (256, the published config's ``embed_dims``).
        dilations: the fusion branches' dilations ((1, 6, 12, 18), the published config's
            separable ASPP).
        dropout: the dropout before the classifier (0.1, the published ``dropout_ratio``).

    Raises:
        ConfigError: unknown encoder name, pretrained weights that cannot be loaded, an
            ``embed_dim`` below 1, empty dilations, a dropout outside [0, 1); (when called)
            images below 32 px a side.
    """

    #: MiT's first stage (stride 4) reduces its attention keys by 8: below 32 px, too few
    min_side = 32

    def __init__(
        self,
        num_classes: int,
        encoder: str = "mit_b5",
        pretrained: bool = True,
        embed_dim: int = 256,
        dilations: Sequence[int] = (1, 6, 12, 18),
        dropout: float = 0.1,
    ) -> None:
        check_whole("num_classes", num_classes, what="the classes the model predicts")
        check_whole("model.embed_dim", embed_dim, what="the decoder's width")
        check_dilations("model.dilations", dilations)
        check_dropout("model.dropout", dropout)
        embed_dim, dilations = int(embed_dim), [int(d) for d in dilations]  # YAML's 256.0
        base = create_encoder(encoder, pretrained)
        levels = [i for i, c in enumerate(base.out_channels) if i >= 2 and c > 0][-4:]
        enc = PyramidEncoder(base, levels)
        head = DAFormerHead(enc.out_channels, num_classes, embed_dim, dilations, dropout)
        super().__init__(enc, head, num_classes)
        self.embed_dim, self.dropout = embed_dim, dropout

    def scale_attention_head(self, num_outputs: int) -> nn.Module:
        """HRDA's scale-attention head for DAFormer: a ``DAFormerHead`` of the same width and
        dropout with the 1 x 1 conv fusion (published ``attention_embed_dim=256``, the ASPP
        fusion replaced by ``type='conv', kernel_size=1``).

        Args:
            num_outputs: attention channels (the classes, or 1 for one shared attention).

        Returns:
            a head mapping this encoder's features to (B, num_outputs, H / 4, W / 4).
        """
        channels = self.encoder.out_channels
        return DAFormerHead(
            channels, num_outputs, self.embed_dim, dropout=self.dropout, fusion="conv"
        )
