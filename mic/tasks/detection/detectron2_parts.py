"""detectron2's RPN and standard ROI heads with the seams that adaptation needs, and a timm
bottom-up for detectron2's FPN. Imports detectron2: only ``Detectron2RCNN`` imports this
module, after checking that detectron2 is installed.

As for torchvision's parts (``mic.tasks.detection.model``), the heads are detectron2's own with
their loss computation re-done so that:

- each target box may carry a weight (``gt_weights`` on the target ``Instances``): anchors and
  proposals matched to a box weigh that box's weight, background samples weigh the mean weight
  of their image's boxes (1 when no weights are given). The losses are normalised as
  detectron2 normalises them (RPN: by ``batch_size_per_image`` x images; ROI heads: by the
  number of sampled proposals), so unit weights give detectron2's own losses and weight 0
  removes a sample without renormalising;
- a training-mode forward without targets is allowed: it computes proposals and the ROI
  features of a random subset of them, but no loss;
- the ROI features of the sampled proposals, the proposals and the FPN level each was pooled
  from can be captured for alignment losses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from detectron2.layers import cat
from detectron2.modeling.backbone import FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.poolers import assign_boxes_to_levels
from detectron2.modeling.proposal_generator.rpn import RPN
from detectron2.modeling.roi_heads import StandardROIHeads
from detectron2.structures import Boxes, Instances, pairwise_iou
from fvcore.nn import giou_loss, smooth_l1_loss
from torch import Tensor

from mic.core.errors import ConfigError
from mic.tasks.detection.model import (
    OUT_INDICES,
    Capture,
    ignore_near,
    sample_weights,
    timm_features,
)


def _box_weights(instances: Instances, matched: Tensor | None, foreground: Tensor) -> Tensor:
    """Per-sample weights from the per-box ``gt_weights`` of one image's targets."""
    target = {"weights": instances.gt_weights} if instances.has("gt_weights") else {}
    return sample_weights(target, matched, foreground)


def detectron2_near(matcher: Any) -> Any:
    """``ignore_near``'s ``near`` for a detectron2 ``Matcher``: not labelled background (0)
    against the boxes (RPN: IoU >= 0.3, and each box's best-matching anchors; ROI heads: IoU
    >= 0.5)."""
    return lambda boxes, candidates: matcher(pairwise_iou(Boxes(boxes), Boxes(candidates)))[1] != 0


def regression_loss(
    kind: str,
    transform: Box2BoxTransform,
    deltas: Tensor,
    references: Tensor,
    gt_boxes: Tensor,
    beta: float,
) -> Tensor:
    """detectron2's box-regression loss per box (N,), not summed: ``smooth_l1`` on the deltas
    or ``giou`` on the decoded boxes (``MODEL.*.BBOX_REG_LOSS_TYPE``).

    Args:
        kind: ``smooth_l1`` or ``giou``.
        transform: the head's box coder.
        deltas: N x 4 predicted deltas.
        references: N x 4 anchors or proposals the deltas apply to (x1 y1 x2 y2, pixels).
        gt_boxes: N x 4 matched target boxes.
        beta: the smooth L1 beta (0: L1).

    Raises:
        ConfigError: another loss type.
    """
    if kind == "smooth_l1":
        target = transform.get_deltas(references, gt_boxes)
        return smooth_l1_loss(deltas, target, beta, reduction="none").sum(1)
    if kind == "giou":
        return giou_loss(transform.apply_deltas(deltas, references), gt_boxes, reduction="none")
    raise ConfigError(
        f"the detectron2 backend weights the box-regression losses 'smooth_l1' and 'giou', "
        f"not {kind!r}: set MODEL.RPN.BBOX_REG_LOSS_TYPE and "
        "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE to one of them"
    )


class WeightedRPN(RPN):
    """detectron2's RPN with per-box weights on its losses and an optional-target training
    forward. Losses: ``loss_rpn_cls`` (binary cross-entropy over the sampled anchors) and
    ``loss_rpn_loc`` (box regression over the positive anchors), each sample weighted, both
    divided by ``batch_size_per_image`` x images and scaled by the config's loss weights, as
    detectron2 computes them. With ``confidence_weighted`` (see
    ``Detectron2RCNN.student_confidence_weights``) each sampled anchor's weight is also
    multiplied by its own objectness probability, detached."""

    confidence_weighted: bool = False

    def forward(  # type: ignore[override]
        self,
        images: Any,
        features: dict[str, Tensor],
        gt_instances: list[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, Tensor]]:
        maps = [features[f] for f in self.in_features]
        anchors = self.anchor_generator(maps)
        objectness, deltas = self.rpn_head(maps)
        # (N, A, Hi, Wi) -> (N, Hi * Wi * A), and (N, A * 4, Hi, Wi) -> (N, Hi * Wi * A, 4)
        objectness = [score.permute(0, 2, 3, 1).flatten(1) for score in objectness]
        box_dim = self.anchor_generator.box_dim
        deltas = [
            x.view(x.shape[0], -1, box_dim, x.shape[-2], x.shape[-1])
            .permute(0, 3, 4, 1, 2)
            .flatten(1, -2)
            for x in deltas
        ]
        losses: dict[str, Tensor] = {}
        if self.training and gt_instances is not None:
            labels, boxes, weights = self.label_and_weigh_anchors(anchors, gt_instances)
            losses = self.weighted_losses(anchors, objectness, labels, deltas, boxes, weights)
        proposals = self.predict_proposals(anchors, objectness, deltas, images.image_sizes)
        return proposals, losses

    @torch.no_grad()
    def label_and_weigh_anchors(
        self, anchors: list[Boxes], gt_instances: list[Instances]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """detectron2's ``label_and_sample_anchors`` (labels 1 / 0 / -1 ignored, matched
        boxes), plus each anchor's weight."""
        every = Boxes.cat(anchors)
        labels, matched_boxes, weights = [], [], []
        near = detectron2_near(self.anchor_matcher)
        for instances in gt_instances:
            gt_boxes = instances.gt_boxes
            matched, label = self.anchor_matcher(pairwise_iou(gt_boxes, every))
            label = label.to(device=gt_boxes.device)
            if self.anchor_boundary_thresh >= 0:
                label[~every.inside_box(instances.image_size, self.anchor_boundary_thresh)] = -1
            label = self._subsample_labels(label)
            has_gt = len(gt_boxes) > 0
            boxes = gt_boxes[matched].tensor if has_gt else torch.zeros_like(every.tensor)
            labels.append(label)
            matched_boxes.append(boxes)
            weight = _box_weights(instances, matched if has_gt else None, label == 1)
            ignore = {"ignore_boxes": getattr(instances, "_ignore_boxes", None)}
            weights.append(ignore_near(weight, label == 0, ignore, near, every.tensor))
        return labels, matched_boxes, weights

    def weighted_losses(
        self,
        anchors: list[Boxes],
        objectness: list[Tensor],
        labels: list[Tensor],
        deltas: list[Tensor],
        gt_boxes: list[Tensor],
        weights: list[Tensor],
    ) -> dict[str, Tensor]:
        label, weight = torch.stack(labels), torch.stack(weights)  # N x R
        positive, valid = label == 1, label >= 0
        logits = cat(objectness, dim=1)[valid]
        bce = F.binary_cross_entropy_with_logits(
            logits, label[valid].to(torch.float32), reduction="none"
        )
        sample_weight = weight[valid]
        if self.confidence_weighted:
            sample_weight = sample_weight * logits.detach().float().sigmoid()
        every = Boxes.cat(anchors).tensor.expand(len(labels), -1, -1)
        box = regression_loss(
            self.box_reg_loss_type,
            self.box2box_transform,
            cat(deltas, dim=1)[positive],
            every[positive],
            torch.stack(gt_boxes)[positive],
            self.smooth_l1_beta,
        )
        normalizer = self.batch_size_per_image * len(labels)
        losses = {
            "loss_rpn_cls": (bce * sample_weight).sum() / normalizer,
            "loss_rpn_loc": (box * weight[positive]).sum() / normalizer,
        }
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}


class WeightedROIHeads(StandardROIHeads):
    """detectron2's standard ROI heads (box branch) with per-box weights on their losses, an
    optional-target training forward, and capture of the ROI features of the sampled
    proposals. Losses: ``loss_cls`` (cross-entropy over the sampled proposals) and
    ``loss_box_reg`` (box regression over the foreground ones), each sample weighted, both
    divided by the number of sampled proposals and scaled by the predictor's loss weights, as
    detectron2 computes them. Background is class ``num_classes`` (detectron2's convention);
    foreground classes are 0-based. With ``confidence_weighted`` (see
    ``Detectron2RCNN.student_confidence_weights``) each sampled proposal's classification
    weight is also multiplied by the head's own highest class probability on it (background
    included), detached."""

    captured: Capture | None = None
    confidence_weighted: bool = False

    def forward(  # type: ignore[override]
        self,
        images: Any,
        features: dict[str, Tensor],
        proposals: list[Instances],
        targets: list[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, Tensor]]:
        if self.training and targets is not None:
            for t in targets:  # the mean weight reaches background samples through the matching
                if t.has("gt_weights"):
                    t.gt_background_weights = t.gt_weights.mean().expand(len(t))
            proposals = self.label_and_sample_proposals(proposals, targets)
            near = detectron2_near(self.proposal_matcher)
            # only with ignore boxes: the kept share of each sample (0 for the background
            # samples near one), read by weighted_losses
            if any(getattr(t, "_ignore_boxes", None) is not None for t in targets):
                for p, t in zip(proposals, targets, strict=True):
                    ignore = {"ignore_boxes": getattr(t, "_ignore_boxes", None)}
                    background = p.gt_classes == self.num_classes
                    keep = torch.ones(len(p), device=p.gt_classes.device)
                    boxes = p.proposal_boxes.tensor
                    p.gt_kept = ignore_near(keep, background, ignore, near, boxes)
        elif self.training:  # no targets: the ROI features of a random subset of proposals
            proposals = [
                p[
                    torch.randperm(len(p), device=p.proposal_boxes.device)[
                        : self.batch_size_per_image
                    ]
                ]
                for p in proposals
            ]
        outputs = self._forward_box(features, proposals)
        if not self.training:
            return outputs, {}
        return proposals, outputs if targets is not None else {}

    def _forward_box(
        self, features: dict[str, Tensor], proposals: list[Instances]
    ) -> list[Instances] | dict[str, Tensor]:
        maps = [features[f] for f in self.box_in_features]
        boxes = [p.proposal_boxes for p in proposals]
        box_features = self.box_head(self.box_pooler(maps, boxes))
        predictions = self.box_predictor(box_features)
        if self.captured is not None:
            pooler = self.box_pooler
            levels = assign_boxes_to_levels(
                boxes,
                pooler.min_level,
                pooler.max_level,
                pooler.canonical_box_size,
                pooler.canonical_level,
            )
            self.captured.proposals = [b.tensor for b in boxes]
            self.captured.roi_features = box_features
            self.captured.roi_levels = levels
        if not self.training:
            instances, _ = self.box_predictor.inference(predictions, proposals)
            return instances
        if not proposals or not proposals[0].has("gt_classes"):
            return {}
        return self.weighted_losses(predictions, proposals)

    def weighted_losses(
        self, predictions: tuple[Tensor, Tensor], proposals: list[Instances]
    ) -> dict[str, Tensor]:
        scores, deltas = predictions
        predictor = self.box_predictor
        gt_classes = cat([p.gt_classes for p in proposals], dim=0)
        foreground = (gt_classes >= 0) & (gt_classes < self.num_classes)
        weights = []
        for p in proposals:
            fg = (p.gt_classes >= 0) & (p.gt_classes < self.num_classes)
            if p.has("gt_weights"):
                weights.append(torch.where(fg, p.gt_weights, p.gt_background_weights).float())
            else:
                weights.append(torch.ones(len(p), device=scores.device))
        weight = cat(weights, dim=0)
        if proposals[0].has("gt_kept"):  # background samples near an ignore box weigh 0
            weight = weight * cat([p.gt_kept for p in proposals], dim=0)
        ce = F.cross_entropy(scores, gt_classes, reduction="none")
        classifier_weight = weight
        if self.confidence_weighted:
            classifier_weight = weight * scores.detach().float().softmax(1).amax(1)
        references = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
        gt_boxes = cat(
            [(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals]
        )
        fg = torch.where(foreground)[0]
        box_dim = references.shape[1]
        if deltas.shape[1] == box_dim:  # class-agnostic regression
            fg_deltas = deltas[fg]
        else:
            fg_deltas = deltas.view(-1, self.num_classes, box_dim)[fg, gt_classes[fg]]
        box = regression_loss(
            predictor.box_reg_loss_type,
            predictor.box2box_transform,
            fg_deltas,
            references[fg],
            gt_boxes[fg],
            predictor.smooth_l1_beta,
        )
        count = max(gt_classes.numel(), 1)
        losses = {
            "loss_cls": (ce * classifier_weight).sum() / count,
            "loss_box_reg": (box * weight[fg]).sum() / count,
        }
        return {k: v * predictor.loss_weight.get(k, 1.0) for k, v in losses.items()}


class TimmBottomUp(Backbone):
    """A timm feature extractor (``timm_features``) as the bottom-up of detectron2's FPN: maps
    ``res2`` .. ``res5`` at strides 4 .. 32."""

    def __init__(
        self,
        name: str,
        pretrained: bool,
        out_indices: Sequence[int] = OUT_INDICES,
        frozen_norm: bool = False,
        trainable_layers: int | None = None,
    ) -> None:
        super().__init__()
        norm = "frozen" if frozen_norm else "batch"
        self.body = timm_features(name, pretrained, out_indices, norm, trainable_layers)
        info = self.body.feature_info
        strides, channels = info.reduction(), info.channels()
        self._out_features = [f"res{i + 2}" for i in range(len(strides))]
        self._out_feature_strides = dict(zip(self._out_features, strides, strict=True))
        self._out_feature_channels = dict(zip(self._out_features, channels, strict=True))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return dict(zip(self._out_features, self.body(x), strict=True))


def timm_fpn(
    name: str,
    pretrained: bool,
    frozen_norm: bool,
    out_channels: int,
    norm: str,
    fuse: str,
    trainable_layers: int = 5,
) -> FPN:
    """detectron2's FPN (levels p2 .. p5 plus a max-pooled p6) on a timm bottom-up whose last
    ``trainable_layers`` of (stem, level 1, ..., level 4) train (5 - ``FREEZE_AT``)."""
    bottom_up = TimmBottomUp(
        name, pretrained, frozen_norm=frozen_norm, trainable_layers=trainable_layers
    )
    return FPN(
        bottom_up=bottom_up,
        in_features=list(bottom_up.output_shape()),
        out_channels=out_channels,
        norm=norm,
        top_block=LastLevelMaxPool(),
        fuse_type=fuse,
    )
