"""A small full-resolution U-Net: the bundled street-scene benchmark's model and the tests'."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import Tensor, nn

from mic.core.errors import ConfigError, is_whole
from mic.tasks.common import check_whole
from mic.tasks.segmentation.models.base import Segmenter

#: ``"batch"``: BatchNorm (statistics of the batch); ``"layer"``: LayerNorm over the channels
#: of each pixel (timm's ``LayerNorm2d``, as in ConvNeXt), which no other pixel or image
#: changes, like the LayerNorm of the transformer encoders the published MIC adapts
Norm = Literal["batch", "layer"]
NORMS = ("batch", "layer")


def _norm(kind: Norm, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else LayerNorm2d(channels)


class _Block(nn.Sequential):
    """Two 3 x 3 convs (bias-free, norm + ReLU each), the first with ``stride``."""

    def __init__(self, cin: int, cout: int, stride: int = 1, norm: Norm = "batch") -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            _norm(norm, cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            _norm(norm, cout),
            nn.ReLU(inplace=True),
        )


def stage_widths(widths: Any) -> list[int]:
    """``widths`` as ints (``16.0`` and NumPy integers too).

    Raises:
        ConfigError: not a non-empty list of positive whole numbers (``model.widths``).
    """
    listed = not isinstance(widths, (str, bytes)) and hasattr(widths, "__len__") and len(widths)
    if not listed or not all(is_whole(w) for w in widths):
        raise ConfigError(
            f"model.widths must list each stage's channels as positive whole numbers, "
            f"finest first (e.g. [16, 32, 64, 128]), got {widths!r}"
        )
    return [int(w) for w in widths]


class SmallUNetEncoder(nn.Module):
    """One two-conv block per width; every block after the first halves the resolution.

    Args:
        widths: the output channels of each stage, finest first.
        norm: the normalisation layers (``Norm``).
    """

    def __init__(self, widths: Sequence[int], norm: Norm = "batch") -> None:
        super().__init__()
        widths = stage_widths(widths)
        self.stages = nn.ModuleList(
            _Block(cin, cout, 1 if i == 0 else 2, norm)
            for i, (cin, cout) in enumerate(zip([3, *widths[:-1]], widths, strict=True))
        )
        self.out_channels = list(widths)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Each stage's output.

        Args:
            x: images (B, 3, H, W).

        Returns:
            one map per stage, (B, widths[i], H / 2**i, W / 2**i) (sizes rounded up).
        """
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class SmallUNetHead(nn.Module):
    """The U-Net decoder: from the deepest map up, bilinear x2 upsampling, concatenation with
    the skip of that level and a two-conv block, then a 1 x 1 classifier.

    Args:
        widths: the encoder's stage widths, finest first.
        num_classes: the number of classes.
        norm: the normalisation layers (``Norm``).
    """

    def __init__(self, widths: Sequence[int], num_classes: int, norm: Norm = "batch") -> None:
        super().__init__()
        self.up = nn.ModuleList(
            _Block(widths[i] + widths[i + 1], widths[i], 1, norm) for i in range(len(widths) - 1)
        )
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """Decode to the finest level's resolution.

        Args:
            features: the encoder's maps, finest (B, widths[0], H, W) first.

        Returns:
            logits (B, num_classes, H, W).
        """
        x = features[-1]
        for i in range(len(features) - 2, -1, -1):
            skip = features[i]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.up[i](torch.cat([skip, x], dim=1))
        return self.classifier(x)


class SmallUNet(Segmenter):
    """A small full-resolution U-Net, so that thin poles survive.

    The encoder (``SmallUNetEncoder``) has one stage per width, each two 3 x 3 convs with norm +
    ReLU; every stage after the first halves the resolution (the default five stages reach
    1/16: a 4 x 4 map for a 64 px image). The decoder (``SmallUNetHead``) returns to full
    resolution through the skips, so the output stride is 1: ``forward`` gives logits
    (B, num_classes, H, W) for any H and W (multiples of 2**(len(widths) - 1) keep the levels
    exactly aligned). The features are the n = len(widths) stage outputs, finest first.

    Receptive field (theoretical, away from the borders): 191 x 191 px at most for the
    default five stages, 175 or 191 px along each axis depending on the output pixel's position
    modulo 16 (the bilinear x2 upsamplings read 2 coarse neighbours chosen by the fine pixel's
    parity); 95 px for the deepest features (3 * 2**n - 1 for n stages). So every output pixel
    sees all of a 64 px crop. It depends on the number of stages only, not on the widths (39 or
    43 px for three stages). Computed by propagating an interval of pixels backwards through
    every layer (3 x 3 conv: widen by 1 on each side; stride 2: pixel i reads 2 * i - 1 to
    2 * i + 1; bilinear x2 upsampling: fine pixel p reads coarse pixels floor((p - 1/2) / 2)
    and the next; the skip and the upsampled path of each decoder block united), and checked
    by back-propagating from every output position modulo 16 through a copy with all-positive
    weights.

    Args:
        num_classes: the number of classes.
        widths: the stage widths, finest first ((16, 32, 48, 64, 96); the street-scene
            benchmark's config uses (8, 16, 32, 48, 64)).
        pretrained: must be False (there are no pretrained weights); accepted so that every
            model config can set it.
        norm: ``"batch"`` (default, BatchNorm) or ``"layer"`` (LayerNorm over each pixel's
            channels: a masked image's withheld blocks then change no statistic the kept
            pixels are normalised with; ``Norm``).

    Raises:
        ConfigError: ``pretrained`` is True, or an unknown ``norm``.
    """

    def __init__(
        self,
        num_classes: int,
        widths: Sequence[int] = (16, 32, 48, 64, 96),
        pretrained: bool = False,
        norm: Norm = "batch",
    ) -> None:
        check_whole("num_classes", num_classes, what="the classes the model predicts")
        if pretrained:
            raise ConfigError(
                "SmallUNet has no pretrained weights; set model.pretrained=false (in Python "
                "pretrained=False)"
            )
        if norm not in NORMS:
            raise ConfigError(f"model.norm must be one of {NORMS} (SmallUNet), got {norm!r}")
        widths = stage_widths(widths)
        encoder = SmallUNetEncoder(widths, norm)
        head = SmallUNetHead(widths, num_classes, norm)
        super().__init__(encoder, head, num_classes)
        self.widths, self.norm = tuple(widths), norm

    def scale_attention_head(self, num_outputs: int) -> nn.Module:
        """A scale-attention head for HRDA: a second U-Net decoder (``SmallUNetHead``) with
        ``num_outputs`` outputs, as HRDA takes its attention head from the segmentation
        head's architecture.

        Args:
            num_outputs: attention channels (the classes, or 1 for one shared attention).

        Returns:
            a head mapping this encoder's features to (B, num_outputs, H, W).
        """
        return SmallUNetHead(self.widths, num_outputs, self.norm)
