"""A small full-resolution U-Net with a global-context branch: every output pixel sees the
whole image, so that classes told apart only by their surroundings can be."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mic.core.errors import ConfigError
from mic.tasks.common import check_whole
from mic.tasks.segmentation.models.base import Segmenter, _conv_bn_relu
from mic.tasks.segmentation.models.small_unet import (
    NORMS,
    Norm,
    SmallUNetEncoder,
    SmallUNetHead,
    _norm,
    stage_widths,
)


class GlobalContext(nn.Module):
    """Global context on the deepest feature map: self-attention over all its positions
    and an image-pooling branch, fused with the map itself.

    The attention branch is one pre-norm transformer encoder layer
    (``torch.nn.TransformerEncoderLayer``: multi-head self-attention and an MLP, no dropout)
    over the H x W positions, with a learned position embedding (resized bilinearly to maps of
    another size) so that it can relate a position to where the others are. The pooling
    branch is the image pooling of DeepLabV3's ASPP (global average, 1 x 1 conv, ReLU;
    Chen et al. 2017), broadcast to every position. A 1 x 1 conv + norm + ReLU fuses the map,
    the attention output and the pooled vector (3C channels) back to C.

    Args:
        channels: C, the map's channels (divisible by ``heads``).
        heads: attention heads (4).
        grid: the position embedding's side (4: the deepest map of a 64 px image after four
            halvings).
        norm: the fusing conv's normalisation (``Norm``).

    Raises:
        ConfigError: ``channels`` is not divisible by ``heads``.
    """

    def __init__(self, channels: int, heads: int = 4, grid: int = 4, norm: Norm = "batch") -> None:
        super().__init__()
        if channels % heads:
            raise ConfigError(
                f"the context branch's {channels} channels (the last of model.widths) must be "
                f"divisible by model.heads={heads}"
            )
        self.pos_embed = nn.Parameter(torch.zeros(1, channels, grid, grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.attention = nn.TransformerEncoderLayer(
            channels,
            heads,
            dim_feedforward=2 * channels,
            dropout=0.0,
            batch_first=True,
            norm_first=True,
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels, 1))
        self.fuse = _conv_bn_relu(3 * channels, channels, 1)
        if norm != "batch":
            self.fuse[1] = _norm(norm, channels)

    def forward(self, x: Tensor) -> Tensor:
        """Add the global context to every position.

        Args:
            x: the deepest feature map (B, C, H, W).

        Returns:
            (B, C, H, W): each position a function of the whole map.
        """
        b, c, h, w = x.shape
        pos = self.pos_embed
        if pos.shape[-2:] != (h, w):
            pos = F.interpolate(pos, size=(h, w), mode="bilinear", align_corners=False)
        tokens = (x + pos).flatten(2).transpose(1, 2)  # (B, H * W, C)
        attended = self.attention(tokens).transpose(1, 2).reshape(b, c, h, w)
        pooled = F.relu(self.pool(x)).expand(-1, -1, h, w)
        return self.fuse(torch.cat([x, attended, pooled], dim=1))


class ContextUNetHead(SmallUNetHead):
    """``SmallUNetHead`` whose deepest input first passes through ``GlobalContext``.

    Args:
        widths: the encoder's stage widths, finest first.
        num_classes: the number of classes.
        heads: the context branch's attention heads.
        grid: the side of the context branch's position embedding.
        norm: the normalisation layers (``Norm``).
    """

    def __init__(
        self,
        widths: Sequence[int],
        num_classes: int,
        heads: int = 4,
        grid: int = 4,
        norm: Norm = "batch",
    ) -> None:
        super().__init__(widths, num_classes, norm)
        self.context = GlobalContext(widths[-1], heads, grid, norm)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """Add the global context to the deepest map, then decode as the U-Net does.

        Args:
            features: the encoder's maps, finest (B, widths[0], H, W) first.

        Returns:
            logits (B, num_classes, H, W).
        """
        return super().forward([*features[:-1], self.context(features[-1])])


class ContextUNet(Segmenter):
    """``SmallUNet`` with a global-context branch: a small full-resolution model whose every
    output pixel sees the whole image.

    The encoder is ``SmallUNetEncoder`` (one stage of two 3 x 3 convs per width, each after
    the first halving the resolution; the default five stages reach 1/16: 4 x 4 for 64 px).
    The decode head (``ContextUNetHead``) passes the deepest map through ``GlobalContext``
    (self-attention over all its positions with a learned position embedding, and DeepLabV3's
    image pooling), then returns to full resolution through the U-Net's skips: ``forward``
    gives logits (B, num_classes, H, W), output stride 1, so thin poles survive. The features
    are the encoder's stage outputs, finest first (the context branch belongs to the head,
    whose learning rate ``lr_mult`` of ``model.decode_head`` scales).

    Receptive field: the whole image, at any size. Every deepest position attends to all
    the others and the pooled vector averages them all, and every output pixel reads the
    deepest map through the decoder (a test back-propagates from one output pixel of a
    256 x 256 image and finds a gradient on every input pixel; ``SmallUNet``'s receptive field
    is at most 191 x 191 px and, a stack of 3 x 3 convs, weighs its centre most: Luo et al.
    2016, the effective receptive field).

    Size: 0.28 M parameters with the street-scene benchmark's widths (8, 16, 32, 48, 64) and 8
    classes (``SmallUNet``: 0.23 M; smp's Segformer with ``mit_b0`` and a 64-channel decoder:
    3.4 M, and it predicts at 1/4 of the resolution, coarser than the 2 to 4 px wide people
    and poles of 64 px scenes).

    Args:
        num_classes: the number of classes.
        widths: the stage widths, finest first ((8, 16, 32, 48, 64), the street-scene
            benchmark's ``SmallUNet`` widths); the last must be divisible by ``heads``.
        heads: the context branch's attention heads (4).
        grid: the side of the context branch's position embedding (4, the deepest map of a
            64 px image with five stages; other sizes resize it).
        pretrained: must be False (there are no pretrained weights); accepted so that every
            model config can set it.
        norm: ``"batch"`` (default) or ``"layer"``, as for ``SmallUNet`` (``Norm``; the
            attention branch keeps its own LayerNorms).

    Raises:
        ConfigError: ``pretrained`` is True, an unknown ``norm``, ``heads`` or ``grid`` no
            positive whole number, or the last width not divisible by ``heads``.
    """

    def __init__(
        self,
        num_classes: int,
        widths: Sequence[int] = (8, 16, 32, 48, 64),
        heads: int = 4,
        grid: int = 4,
        pretrained: bool = False,
        norm: Norm = "batch",
    ) -> None:
        check_whole("num_classes", num_classes, what="the classes the model predicts")
        check_whole("model.heads", heads, what="the context branch's attention heads")
        check_whole("model.grid", grid, what="the side of its position embedding")
        widths, heads, grid = stage_widths(widths), int(heads), int(grid)
        if pretrained:
            raise ConfigError(
                "ContextUNet has no pretrained weights; set model.pretrained=false (in Python "
                "pretrained=False)"
            )
        if norm not in NORMS:
            raise ConfigError(f"model.norm must be one of {NORMS} (ContextUNet), got {norm!r}")
        encoder = SmallUNetEncoder(widths, norm)
        head = ContextUNetHead(widths, num_classes, heads, grid, norm)
        super().__init__(encoder, head, num_classes)
        self.widths, self.heads, self.grid, self.norm = tuple(widths), heads, grid, norm

    def scale_attention_head(self, num_outputs: int) -> nn.Module:
        """A scale-attention head for HRDA: a second ``ContextUNetHead`` with
        ``num_outputs`` outputs, as HRDA takes its attention head from the segmentation
        head's architecture.

        Args:
            num_outputs: attention channels (the classes, or 1 for one shared attention).

        Returns:
            a head mapping this encoder's features to (B, num_outputs, H, W).
        """
        return ContextUNetHead(self.widths, num_outputs, self.heads, self.grid, self.norm)
