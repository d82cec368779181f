"""The classifier of the published recipe: backbone + bottleneck + linear head."""

from __future__ import annotations

import numbers
from typing import Any

from torch import Tensor, nn

from mic.backbones import create_backbone
from mic.core import ConfigError, DatasetError
from mic.tasks.common import check_whole


class Classifier(nn.Module):
    """A timm backbone (pooled features), a bottleneck (Linear + BatchNorm1d + ReLU, 256 wide
    as published) and a linear head.

    Submodules are named ``backbone``, ``bottleneck`` and ``head`` so that optimiser configs
    can give them their own learning rates (SDAT: backbone x 0.1).

    Args:
        backbone: a timm model name (see ``mic.backbones.create_backbone``) or a module whose
            forward returns pooled features and which has ``num_features``.
        num_classes: the number of classes, >= 2.
        bottleneck_dim: the bottleneck width, >= 0 (0: no bottleneck; 256 as published).
        pretrained: load the backbone's pretrained weights.
        **backbone_kwargs: passed to ``create_backbone``.

    Raises:
        ConfigError: ``num_classes`` or ``bottleneck_dim`` that is no whole number in range;
            a ``backbone`` that is neither a name nor a module with ``num_features``.
    """

    def __init__(
        self,
        backbone: str | nn.Module,
        num_classes: int,
        bottleneck_dim: int = 256,
        pretrained: bool = False,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        check_whole(
            "Classifier num_classes (dataset.num_classes)",
            num_classes,
            2,
            "a softmax over the classes; for one output, e.g. regression, give a model of your own",
        )
        check_whole("model.bottleneck_dim", bottleneck_dim, 0, "the width; 0: no bottleneck")
        if isinstance(backbone, str):
            backbone = create_backbone(backbone, pretrained=pretrained, **backbone_kwargs)
        if not isinstance(getattr(backbone, "num_features", None), numbers.Integral):
            raise ConfigError(
                f"model.backbone must be a timm model name (e.g. resnet50) or a module with "
                f"num_features (its pooled feature width), got {backbone!r}"
            )
        self.backbone = backbone
        # what the backbone returns without a classifier: timm's head_hidden_size where a
        # head layer follows the pooling (mobilenetv3: 1024, its num_features 288)
        width = int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)
        if bottleneck_dim > 0:
            self.bottleneck: nn.Module = nn.Sequential(
                nn.Linear(width, bottleneck_dim), nn.BatchNorm1d(bottleneck_dim), nn.ReLU()
            )
            width = bottleneck_dim
        else:
            self.bottleneck = nn.Identity()
        self.num_features = width
        self.num_classes = int(num_classes)
        self.head = nn.Linear(width, self.num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """Bottleneck features (what adversarial heads and MCC look at).

        Raises:
            DatasetError: a batch of one image while the bottleneck's BatchNorm1d normalises
                with batch statistics (training mode, or a teacher's ``norm="batch"``).
            ConfigError: images of another size than a vision transformer's fixed
                ``img_size`` (timm's ``strict_img_size``).
        """
        patches = getattr(self.backbone, "patch_embed", None)
        size = tuple(getattr(patches, "img_size", None) or ())
        if getattr(patches, "strict_img_size", False) and tuple(x.shape[-2:]) != size:
            h, w = x.shape[-2:]
            raise ConfigError(
                f"the backbone {type(self.backbone).__name__} takes {size[0]} x {size[1]} px "
                f"images (its img_size), these are {h} x {w}: set model.img_size="
                f"{h if h == w else f'[{h},{w}]'} (+model.img_size=... where the model's config "
                "has none, as model=small_cnn), where timm resamples its position embedding to "
                "it, or +model.dynamic_img_size=true"
            )
        step = tuple(getattr(patches, "patch_size", None) or ())
        unpadded = not getattr(patches, "dynamic_img_pad", True)  # (timm's: pads the border)
        dynamic = not getattr(patches, "strict_img_size", True) and unpadded
        h, w = x.shape[-2:]
        if step and dynamic and (h % step[0] or w % step[1]):
            raise ConfigError(  # (timm: an AssertionError of divisibility)
                f"the backbone {type(self.backbone).__name__} takes images of any size "
                f"(dynamic_img_size) made of whole {step[0]} x {step[1]} px patches, these are "
                f"{h} x {w}: give images of a multiple of {step[0]} px (dataset.size), or "
                "+model.dynamic_img_pad=true (timm pads the border)"
            )
        by_batch = any(
            m.training for m in self.bottleneck.modules() if isinstance(m, nn.BatchNorm1d)
        )
        if by_batch and len(x) == 1:  # (training, or a teacher that normalises by the batch)
            error = DatasetError(
                "a batch of 1 image reached the classifier while its bottleneck's BatchNorm1d "
                "normalises with batch statistics (training, or the teacher's teacher.norm="
                "batch), which it cannot compute from one sample: give the loaders "
                "drop_last=True (as mic-train does) and batches of 2 or more images, or a "
                "dataset that holds a multiple of the batch size"
            )
            error.batch_of_one = True  # (a validator's batch of one names its own loader)
            raise error
        return self.bottleneck(self.backbone(x))

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and bottleneck features from one forward pass."""
        f = self.forward_features(x)
        return self.head(f), f

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Logits; with ``return_features``, logits and bottleneck features (a keyword that
        passes through DistributedDataParallel)."""
        if return_features:
            return self.forward_with_features(x)
        return self.head(self.forward_features(x))
