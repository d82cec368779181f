"""DeepLabV2: a dilated ResNet-101 and the ASPP classifier.

Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, Atrous
Convolution, and Fully Connected CRFs", TPAMI 2018 (ASPP-L: rates 6, 12, 18, 24), the
convolutional baseline of DACS, DAFormer and MIC (DAFormer's mmseg config
``configs/_base_/models/deeplabv2_r50-d8.py``: ``DLV2Head`` with ``dilations=(6, 12, 18, 24)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mic.tasks.common import check_dilations, check_whole
from mic.tasks.segmentation.models.base import PyramidEncoder, Segmenter, create_encoder


class DeepLabV2Head(nn.Module):
    """DeepLabV2's ASPP classifier: parallel 3 x 3 convs with dilations 6, 12, 18, 24 from the
    deepest features straight to class scores, summed.

    Args:
        in_channels: the width of the deepest features.
        num_classes: the number of classes.
        dilations: one branch per dilation ((6, 12, 18, 24), DeepLabV2's ASPP-L).
    """

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
        """Classify the deepest features.

        Args:
            features: feature maps, the last (B, in_channels, h, w).

        Returns:
            logits (B, num_classes, h, w), the sum of the branches'.
        """
        x = features[-1]
        return torch.stack([b(x) for b in self.branches]).sum(0)


class DeepLabV2(Segmenter):
    """DeepLabV2: a dilated ResNet-101 (smp's ``output_stride=8``: the last two stages dilated
    by 2 and 4 instead of strided) and the ASPP classifier (``DeepLabV2Head``).

    Output stride 8: ``forward`` gives logits at 1/8 of the input resolution,
    (B, num_classes, H / 8, W / 8) for H and W divisible by 8; the Task upsamples them. The
    features are a one-element list, the deepest map.

    Args:
        num_classes: the number of classes.
        encoder: ``resnet101`` as published; any smp encoder that supports
            ``output_stride=8`` (``resnet18``, ``resnet50``, ``tu-<timm name>``, ...).
        pretrained: load the encoder's ImageNet weights (as published).
        dilations: the ASPP branches' dilations ((6, 12, 18, 24), DeepLabV2's ASPP-L).

    Raises:
        ConfigError: unknown encoder name, an encoder that cannot be dilated (VGG), empty or
            non-positive dilations, or pretrained weights that cannot be loaded.
    """

    def __init__(
        self,
        num_classes: int,
        encoder: str = "resnet101",
        pretrained: bool = True,
        dilations: Sequence[int] = (6, 12, 18, 24),
    ) -> None:
        check_whole("num_classes", num_classes, what="the classes the model predicts")
        check_dilations("model.dilations", dilations)
        dilations = [int(d) for d in dilations]  # YAML's 6.0
        base = create_encoder(encoder, pretrained, output_stride=8)
        enc = PyramidEncoder(base, [len(base.out_channels) - 1])
        head = DeepLabV2Head(enc.out_channels[-1], num_classes, dilations)
        super().__init__(enc, head, num_classes)
        self.dilations = tuple(dilations)

    def scale_attention_head(self, num_outputs: int) -> nn.Module:
        """HRDA's scale-attention head for DeepLabV2: the ASPP classifier with the same
        dilations and ``num_outputs`` outputs (published: the ``DLV2Head`` config itself).

        Args:
            num_outputs: attention channels (the classes, or 1 for one shared attention).

        Returns:
            a head mapping this encoder's features to (B, num_outputs, H / 8, W / 8).
        """
        return DeepLabV2Head(self.encoder.out_channels[-1], num_outputs, self.dilations)
