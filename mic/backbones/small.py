"""Small backbones for the bundled benchmarks and the tests, registered in timm's registry so
that they are created by name like any timm model."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import torch
from timm.models import register_model
from torch import Tensor, nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Conv-BN-ReLU blocks, each halving the resolution (stride 2), then global average pooling.

    Follows timm's model API: ``num_features``, ``forward_features``, ``forward_head``,
    ``reset_classifier``; ``num_classes=0`` gives pooled features.
    """

    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 128),
        in_chans: int = 3,
        num_classes: int = 1000,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        chans = (in_chans, *widths)
        self.stages = nn.Sequential(*(_block(a, b) for a, b in pairwise(chans)))
        self.num_features = widths[-1]
        self.drop = nn.Dropout(drop_rate)
        self.head: nn.Module = nn.Identity()
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int, *_: Any) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.drop(torch.flatten(x.mean((2, 3)), 1))
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _create(widths: tuple[int, ...], kwargs: dict[str, Any]) -> SmallCNN:
    # timm hands every model its pretrained-config entries; anything else must be ours
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    if kwargs.pop("features_only", False):
        raise ValueError("mic's small CNNs have no features_only mode; use a timm model")
    return SmallCNN(widths, **kwargs)


#: mic's own backbones: no pretrained weights exist for them
SMALL_MODELS = ("small_cnn", "tiny_cnn")


@register_model
def small_cnn(pretrained: bool = False, **kwargs: Any) -> SmallCNN:
    """Three blocks of widths 32-64-128: the bundled digits benchmark's backbone."""
    return _create((32, 64, 128), kwargs)


@register_model
def tiny_cnn(pretrained: bool = False, **kwargs: Any) -> SmallCNN:
    """Two blocks of widths 8-16: a backbone for fast tests."""
    return _create((8, 16), kwargs)
