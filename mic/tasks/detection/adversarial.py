"""Adversarial feature alignment for detection (DA-Faster R-CNN, scale-aware as in SADA).

Domain classifiers learn to tell source from target features; a gradient reversal layer in
front of each turns their training signal into one that makes the detector's features
domain-invariant. Two levels, each with one classifier per FPN level (scale-aware):

- image level: a 1 x 1 convolutional classifier on every FPN map, one logit per position;
- instance level: an MLP on the ROI features of the sampled proposals, one classifier per
  FPN level the proposal was pooled from;

plus a consistency term: the image-level probability averaged over each proposal's region
must agree (L1) with the instance-level probability of that proposal.

The weights 0.025 (image) and 0.1 (instance) scale the reversed gradient that reaches the
detector, as published; the classifiers themselves get the full gradient. The consistency
term reaches the detector's features with the gradient scaled by 0.1 x those weights, not
reversed (published ``COS_WEIGHT`` 0.1).

Where mic differs from the published SADA copy (MIC's ``det/``): every instance level has its
classifier applied (the published head returns after the first level, so only level 0 ever
trains); image-level losses are averaged per level at each level's own resolution instead of
after upsampling every level's logits to the finest level.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mic.core import ConfigError, IterationContext, LossTerm, SharedForward
from mic.core.teacher import unwrap
from mic.core.terms import sum_parts
from mic.functional import reverse_gradient, scale_gradient
from mic.tasks.common import check_whole
from mic.tasks.detection.model import Capture, images_device, sampling_from


class ImageDomainClassifier(nn.Module):
    """Per FPN level: 1 x 1 conv (channels -> hidden), ReLU, 1 x 1 conv (hidden -> 1).

    Args:
        channels: FPN width.
        levels: the most FPN maps it serves (one classifier each when ``per_level``).
        hidden: the hidden width (published 512).
        per_level: one classifier per level (scale-aware, SADA) or one shared (DA-Faster).
    """

    def __init__(
        self, channels: int, levels: int = 5, hidden: int = 512, per_level: bool = True
    ) -> None:
        super().__init__()
        self.levels = int(levels)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, 1, 1))
            for _ in range(self.levels if per_level else 1)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
                nn.init.zeros_(m.bias)

    def forward(self, maps: list[Tensor]) -> list[Tensor]:
        if len(maps) > self.levels:
            raise ConfigError(
                f"the detector gives {len(maps)} feature levels but the image-level domain "
                f"classifier serves {self.levels}; raise image_levels in the method config"
            )
        heads = list(self.heads) if len(self.heads) > 1 else [self.heads[0]] * len(maps)
        return [head(x) for head, x in zip(heads, maps, strict=False)]


class InstanceDomainClassifier(nn.Module):
    """Per FPN level: Linear (features -> hidden), ReLU, dropout 0.5, Linear (hidden -> hidden),
    ReLU, dropout 0.5, Linear (hidden -> 1); each ROI goes to its level's classifier."""

    def __init__(
        self,
        features: int,
        levels: int = 4,
        hidden: int = 1024,
        dropout: float = 0.5,
        per_level: bool = True,
    ) -> None:
        super().__init__()
        self.levels = int(levels)
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Linear(features, hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, 1),
            )
            for _ in range(self.levels if per_level else 1)
        )
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, levels: Tensor) -> Tensor:
        if len(self.heads) == 1:
            return self.heads[0](x).squeeze(1)
        if levels.numel() and int(levels.max()) >= self.levels:
            raise ConfigError(
                f"a ROI comes from feature level {int(levels.max())} but the instance-level "
                f"domain classifier serves {self.levels} levels; raise instance_levels"
            )
        out = x.new_zeros(x.shape[0])
        for level, head in enumerate(self.heads):
            index = torch.where(levels == level)[0]
            out = out.index_put((index,), head(x[index]).squeeze(1))
        return out


@SharedForward
def source_forward(ctx: IterationContext) -> tuple[dict[str, Tensor], Capture]:
    """The detector's losses on the labelled source batch, with its FPN and ROI features
    captured (read by ``SharedSourceSupervision`` and ``DomainAdversarial``, back-propagated
    together, source and target in one graph as published)."""
    model = unwrap(ctx.student)
    if not hasattr(model, "capture"):
        raise ConfigError(
            "the domain-adversarial terms need a mic.tasks.detection.FasterRCNN or "
            "Detectron2RCNN student (they read the detector's features), got "
            f"{type(model).__name__}"
        )
    with model.capture() as captured:
        losses = ctx.task.loss(ctx.student, ctx.source_images, ctx.source_targets, rng=ctx.rng)
    return losses, captured


class SharedSourceSupervision(LossTerm):
    """The detection losses on the labelled source batch from ``source_forward``, the pass
    whose features ``DomainAdversarial`` aligns (use ``mic.SourceSupervision`` without it).

    Args:
        weight: the loss weight.
        part_weights: multipliers of the detection loss parts.
    """

    uses_target = False
    shared_forward = source_forward

    def __init__(self, weight: float = 1.0, part_weights: Mapping[str, float] | None = None):
        super().__init__(weight)
        self.part_weights = dict(part_weights or {})

    def forward(self, ctx: IterationContext) -> Tensor:
        losses, _ = source_forward(ctx)
        return sum_parts(losses, self.part_weights)


class DomainAdversarial(LossTerm):
    """DA-Faster / SADA alignment: image- and instance-level domain classifiers on the
    features of the source pass (``source_forward``) and of one training-mode forward of the
    student on the target batch (without targets).

    Parts: ``adv_image``, ``adv_instance``, ``adv_consistency``, each the mean of its source
    and target losses; back-propagated together with the source loss.

    Args:
        channels: the detector's FPN width (``model.fpn_channels``).
        roi_features: the width of its box head (``model.representation_size``).
        image_weight: gradient-reversal weight of the image level (published 0.025).
        instance_weight: gradient-reversal weight of the instance level (published 0.1).
        consistency_weight: scales the consistency term's gradient into the features
            (published 0.1); 0 switches the term off.
        image_levels, instance_levels: the most FPN levels of each classifier.
        image_hidden, instance_hidden: classifier widths (None: 2 x ``channels`` and
            ``roi_features``, i.e. the published 512 and 1024 for a 256-channel FPN and a
            1024-wide box head).
        per_level: scale-aware classifiers, one per level (SADA), or one shared (DA-Faster).

    Raises:
        ConfigError: a negative weight.
    """

    shared_forward = source_forward

    def __init__(
        self,
        channels: int = 256,
        roi_features: int = 1024,
        image_weight: float = 0.025,
        instance_weight: float = 0.1,
        consistency_weight: float = 0.1,
        image_levels: int = 5,
        instance_levels: int = 4,
        image_hidden: int | None = None,
        instance_hidden: int | None = None,
        per_level: bool = True,
    ) -> None:
        super().__init__()
        for name, w in (
            ("image_weight", image_weight),
            ("instance_weight", instance_weight),
            ("consistency_weight", consistency_weight),
        ):
            if w < 0:
                raise ConfigError(f"{name} must be >= 0, got {w}")
        for name, width in (("image_hidden", image_hidden), ("instance_hidden", instance_hidden)):
            if width is not None:  # 0 would fall back to the default width
                check_whole(f"method.terms.adversarial.{name}", width, what="a classifier width")
        for name, width in (("channels", channels), ("roi_features", roi_features)):
            check_whole(f"method.terms.adversarial.{name}", width, what="a feature width")
        image_hidden = int(image_hidden) if image_hidden is not None else None
        instance_hidden = int(instance_hidden) if instance_hidden is not None else None
        self.image_weight = float(image_weight)
        self.instance_weight = float(instance_weight)
        self.consistency_weight = float(consistency_weight)
        self.channels, self.roi_features = int(channels), int(roi_features)
        self.image_classifier = ImageDomainClassifier(
            channels, image_levels, image_hidden or 2 * channels, per_level
        )
        self.instance_classifier = InstanceDomainClassifier(
            roi_features, instance_levels, instance_hidden or roi_features, per_level=per_level
        )

    def forward(self, ctx: IterationContext) -> dict[str, Tensor]:
        model = unwrap(ctx.student)
        _, source = source_forward(ctx)
        with model.capture() as target, sampling_from(ctx.rng, images_device(ctx.target_images)):
            ctx.student(ctx.target_images)
        parts = [self.domain_losses(model, c, float(d)) for c, d in ((source, 1), (target, 0))]
        out = {
            "adv_image": 0.5 * (parts[0][0] + parts[1][0]),
            "adv_instance": 0.5 * (parts[0][1] + parts[1][1]),
        }
        if self.consistency_weight > 0:
            out["adv_consistency"] = 0.5 * (parts[0][2] + parts[1][2])
        return out

    def check_student(self, student: nn.Module) -> None:
        """Raise ``ConfigError`` when the classifiers' widths are not those the detector
        states (``fpn_channels``, ``representation_size``; ``mic-train`` calls this when it
        builds the run: a config without an FPN was refused only once adaptation began)."""
        model = unwrap(student)
        self._check_widths(
            getattr(model, "fpn_channels", None), getattr(model, "representation_size", None)
        )

    def _check_widths(self, channels: int | None, roi_features: int | None) -> None:
        """Refuse classifier widths that are not the detector's (torch's shape errors else)."""
        for name, built, got, key in (
            ("channels", self.channels, channels, "fpn_channels"),
            ("roi_features", self.roi_features, roi_features, "representation_size"),
        ):
            if got is not None and got != built:
                raise ConfigError(
                    f"DomainAdversarial({name}={built}) but the detector's {key} is {got}: give "
                    f"{name}={got} (mic-train: the method's {name} follows model.{key})"
                )

    def domain_losses(
        self, model: nn.Module, captured: Capture, domain: float
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Image-level, instance-level and consistency losses of one domain's forward."""
        names = list(captured.features)
        maps = [captured.features[k] for k in names]
        rois, levels = captured.roi_features, captured.roi_levels
        self._check_widths(maps[0].shape[1], None if rois is None else rois.shape[1])
        logits = self.image_classifier([reverse_gradient(x, self.image_weight) for x in maps])
        image = torch.stack(
            [F.binary_cross_entropy_with_logits(z, torch.full_like(z, domain)) for z in logits]
        ).mean()
        zero = maps[0].new_zeros(())
        if rois is None or levels is None or rois.shape[0] == 0:
            return image, zero, zero
        z = self.instance_classifier(reverse_gradient(rois, self.instance_weight), levels)
        instance = F.binary_cross_entropy_with_logits(z, torch.full_like(z, domain))
        if self.consistency_weight == 0:
            return image, instance, zero
        scale = self.consistency_weight
        probs = self.image_classifier([scale_gradient(x, scale * self.image_weight) for x in maps])
        inst = self.instance_classifier(scale_gradient(rois, scale * self.instance_weight), levels)
        # in float32: under bf16 / fp16 autocast both probabilities, near 0.5, rounded to the
        # same value (bf16 steps 0.004 there) and the consistency loss was exactly 0
        with torch.autocast(maps[0].device.type, enabled=False):
            prob_maps = {k: p.float().sigmoid() for k, p in zip(names, probs, strict=True)}
            pooled = model.pool_regions(prob_maps, captured.proposals, captured.image_sizes)
            region = pooled.float().mean(dim=(1, 2, 3))
            return image, instance, F.l1_loss(region, inst.float().sigmoid())
