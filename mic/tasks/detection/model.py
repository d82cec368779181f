"""Faster R-CNN with FPN on torchvision's parts, with the seams that adaptation needs.

torchvision computes a detector's losses inside its heads and knows no per-box weights. The
two heads here are torchvision's with their loss computation re-done so that:

- each target box may carry a weight (``target["weights"]``, one per box): anchors and
  proposals matched to a box weigh that box's weight, background samples weigh the mean
  weight of their image's boxes (1 when no weights are given);
- a training-mode forward without targets is allowed: it computes proposals and ROI features
  but no loss (what feature alignment on unlabelled target images needs);
- the FPN features and the ROI features of the sampled proposals can be captured for
  alignment losses (``FasterRCNN.capture``).

Class ids are 0-based for the user (``num_classes`` foreground classes); torchvision's
background class 0 stays inside the model.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import timm
import torch
import torch.nn.functional as F
import torchvision
from timm.layers import LayerNorm2d
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import (
    mobilenet_backbone,
    resnet_fpn_backbone,
)
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import (
    RegionProposalNetwork,
    RPNHead,
    concat_box_prediction_layers,
)
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from mic.backbones import create_backbone
from mic.core.errors import ConfigError
from mic.core.streams import Random, RandomStream, stream_seed
from mic.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD
from mic.tasks.common import check_whole

#: the loss parts of the detector, as ``DetectionTask.loss`` names them
LOSS_PARTS = ("rpn_objectness", "rpn_box", "roi_classifier", "roi_box")
#: the box-regression parts (off for pseudo-labels in the published masked branch)
BOX_REGRESSION_PARTS = ("rpn_box", "roi_box")


# ---------------------------------------------------------------------------------- sampling
def images_device(images: Tensor | Sequence[Tensor]) -> torch.device:
    """The device of a batch of images (a tensor, or a list of images of different sizes)."""
    return images.device if isinstance(images, Tensor) else images[0].device


@contextmanager
def sampling_from(rng: Random, device: torch.device | str) -> Iterator[None]:
    """Within the block, the detector's own random draws (the RPN's and the ROI heads'
    positive / negative sampling, the proposals sampled without targets) come from torch's
    global generators of the CPU and ``device`` reseeded from the term's stream ``rng``; the
    generators are restored afterwards. So each loss term's sampling is fixed by (seed, term,
    iteration, process), whatever other terms drew before it: adding MIC leaves the base
    method's draws unchanged. ``rng`` a ``torch.Generator`` or None: the global generators
    as they are."""
    if not isinstance(rng, RandomStream):
        yield
        return
    device = torch.device(device)
    seed = stream_seed(rng.seed, "sampling", rng.rank, rng.micro)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.default_generators[device.index or 0].manual_seed(seed)
        yield


# ---------------------------------------------------------------------------------- matching
def match_boxes(matcher: Any, gt_boxes: Tensor, candidates: Tensor) -> Tensor | None:
    """The index of the matched target box per candidate (anchor or proposal), with the
    matcher's negative codes for background (-1) and in-between (-2); None without boxes."""
    if gt_boxes.numel() == 0:
        return None
    return matcher(torchvision.ops.box_iou(gt_boxes, candidates))


def sample_weights(target: dict[str, Tensor], matched: Tensor | None, foreground: Tensor) -> Tensor:
    """Per-sample weights from the per-box ``target["weights"]``: a foreground sample weighs
    its box's weight, any other sample the mean weight of the image's boxes."""
    n = foreground.shape[0]
    weights = target.get("weights")
    if weights is None or weights.numel() == 0 or matched is None:
        return foreground.new_ones(n, dtype=torch.float32)
    weights = weights.to(torch.float32)
    background = weights.mean().expand(n)
    return torch.where(foreground, weights[matched.clamp(min=0)], background)


def ignore_near(
    weights: Tensor, background: Tensor, target: dict[str, Tensor], near: Any, candidates: Tensor
) -> Tensor:
    """``weights`` with the background samples near one of ``target["ignore_boxes"]`` (the
    teacher's boxes of too low a score to be pseudo-boxes, ``DetectionTask.ignore_threshold``)
    set to 0. ``near(ignore_boxes, candidates)``: a bool per candidate, True where the head's
    matcher would not call it background against those boxes. Without ignore boxes
    ``weights`` is returned as it is."""
    ignore = target.get("ignore_boxes")
    if ignore is None or ignore.numel() == 0:
        return weights
    return torch.where(background & near(ignore, candidates), weights.new_zeros(()), weights)


def torchvision_near(matcher: Any) -> Any:
    """``ignore_near``'s ``near`` for a torchvision ``Matcher``: not below its low threshold
    (RPN: IoU >= 0.3, and each box's best-matching anchors, the matcher's low-quality
    matches; ROI heads: IoU >= 0.5)."""
    return lambda boxes, candidates: (
        match_boxes(matcher, boxes, candidates) != matcher.BELOW_LOW_THRESHOLD
    )


def weighted_mean(loss: Tensor, weights: Tensor | None, count: int | None = None) -> Tensor:
    loss = loss if weights is None else loss * weights
    return loss.sum() / max(1, loss.numel() if count is None else count)


@contextmanager
def confidence_weighted(*heads: nn.Module) -> Iterator[None]:
    """Within the block, each of ``heads`` (an RPN or ROI heads of either backend) weights its
    classification loss's samples by its own detached confidence (``confidence_weighted``);
    switched off again on leaving, also on an error."""
    for head in heads:
        head.confidence_weighted = True
    try:
        yield
    finally:
        for head in heads:
            head.confidence_weighted = False


# ------------------------------------------------------------------------------------- heads
class WeightedRPN(RegionProposalNetwork):
    """torchvision's RPN with per-box weights on its losses and an optional-target training
    forward. Losses: ``rpn_objectness`` (binary cross-entropy over the sampled anchors, each
    weighted) and ``rpn_box`` (smooth L1 over the positive anchors, weighted, divided by the
    number of sampled anchors, as torchvision does). With ``confidence_weighted`` (see
    ``FasterRCNN.student_confidence_weights``) each sampled anchor's weight is also
    multiplied by its own objectness probability, detached."""

    confidence_weighted: bool = False

    def forward(  # type: ignore[override]
        self,
        images: Any,
        features: dict[str, Tensor],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        maps = list(features.values())
        objectness, deltas = self.head(maps)
        anchors = self.anchor_generator(images, maps)
        per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        # proposals do not back-propagate into the box deltas (as in torchvision); decoded in
        # float32 (torchvision decodes in the deltas' dtype: under bf16 autocast, boxes on
        # bf16's grid, 4 px steps at 512 to 1024 px)
        proposals = self.box_coder.decode(deltas.detach().float(), anchors)
        proposals = proposals.view(len(anchors), -1, 4)
        boxes, _ = self.filter_proposals(proposals, objectness, images.image_sizes, per_level)
        losses: dict[str, Tensor] = {}
        if self.training and targets is not None:
            losses = self.losses(anchors, objectness, deltas, targets)
        return boxes, losses

    def losses(
        self,
        anchors: list[Tensor],
        objectness: Tensor,
        deltas: Tensor,
        targets: list[dict[str, Tensor]],
    ) -> dict[str, Tensor]:
        labels, matched_boxes, weights = [], [], []
        near = torchvision_near(self.proposal_matcher)
        for anchors_i, target in zip(anchors, targets, strict=True):
            matched = match_boxes(self.proposal_matcher, target["boxes"], anchors_i)
            if matched is None:  # an image without objects: every anchor is background
                label = anchors_i.new_zeros(anchors_i.shape[0])
                boxes = torch.zeros_like(anchors_i)
            else:
                label = (matched >= 0).to(torch.float32)
                label[matched == self.proposal_matcher.BETWEEN_THRESHOLDS] = -1.0
                boxes = target["boxes"][matched.clamp(min=0)]
            labels.append(label)
            matched_boxes.append(boxes)
            weight = sample_weights(target, matched, label > 0)
            weights.append(ignore_near(weight, label == 0, target, near, anchors_i))
        regression_targets = self.box_coder.encode(matched_boxes, anchors)
        positive, negative = self.fg_bg_sampler(labels)
        positive, negative = torch.cat(positive).bool(), torch.cat(negative).bool()
        sampled = torch.where(positive | negative)[0]
        pos = torch.where(positive)[0]
        labels_all, weights_all = torch.cat(labels), torch.cat(weights)
        regression_all = torch.cat(regression_targets)
        logits = objectness.flatten()[sampled]
        bce = F.binary_cross_entropy_with_logits(logits, labels_all[sampled], reduction="none")
        box = F.smooth_l1_loss(deltas[pos], regression_all[pos], beta=1 / 9, reduction="none")
        sample_weight = weights_all[sampled]
        if self.confidence_weighted:
            sample_weight = sample_weight * logits.detach().float().sigmoid()
        return {
            "rpn_objectness": weighted_mean(bce, sample_weight),
            "rpn_box": weighted_mean(box.sum(1), weights_all[pos], sampled.numel()),
        }


class WeightedRoIHeads(RoIHeads):
    """torchvision's box ROI heads with per-box weights on their losses, an optional-target
    training forward, and capture of the ROI features of the sampled proposals. Losses:
    ``roi_classifier`` (cross-entropy over the sampled proposals, weighted) and ``roi_box``
    (smooth L1 over the foreground proposals, weighted, divided by the number of samples).

    With ``confidence_weighted`` (see ``FasterRCNN.student_confidence_weights``) each
    sampled proposal's classification weight is also multiplied by the head's own highest
    class probability on it (background included), detached.

    Args:
        unlabelled_samples: proposals per image whose ROI features a training forward
            without targets computes (a random subset, as for labelled images).
    """

    confidence_weighted: bool = False

    def __init__(self, *args: Any, unlabelled_samples: int = 512, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unlabelled_samples = int(unlabelled_samples)
        self.captured: Capture | None = None

    def forward(  # type: ignore[override]
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        labels = weights = regression_targets = None
        if self.training and targets is not None:
            proposals, matched, labels, regression_targets = self.select_training_samples(
                proposals, targets
            )
            near = torchvision_near(self.proposal_matcher)
            weights = [
                ignore_near(
                    sample_weights(t, m if t["boxes"].numel() else None, lab > 0),
                    lab == 0,
                    t,
                    near,
                    p,
                )
                for t, m, lab, p in zip(targets, matched, labels, proposals, strict=True)
            ]
        elif self.training:
            proposals = [
                p[torch.randperm(len(p), device=p.device)[: self.unlabelled_samples]]
                for p in proposals
            ]
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        if self.captured is not None:
            self.captured.proposals = proposals
            self.captured.roi_features = box_features
            self.captured.roi_levels = self.box_roi_pool.map_levels(proposals)  # type: ignore[misc]
        if not self.training:
            boxes, scores, classes = self.postprocess_detections(  # (float32: as the RPN's)
                class_logits.float(), box_regression.float(), proposals, image_shapes
            )
            result = [
                {"boxes": b, "labels": c, "scores": s}
                for b, s, c in zip(boxes, scores, classes, strict=True)
            ]
            return result, {}
        if labels is None or weights is None or regression_targets is None:
            return [], {}
        return [], self.losses(class_logits, box_regression, labels, regression_targets, weights)

    def losses(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        labels: list[Tensor],
        regression_targets: list[Tensor],
        weights: list[Tensor],
    ) -> dict[str, Tensor]:
        labels_all, weights_all = torch.cat(labels), torch.cat(weights)
        regression_all = torch.cat(regression_targets)
        ce = F.cross_entropy(class_logits, labels_all, reduction="none")
        fg = torch.where(labels_all > 0)[0]
        deltas = box_regression.reshape(len(labels_all), -1, 4)[fg, labels_all[fg]]
        box = F.smooth_l1_loss(deltas, regression_all[fg], beta=1 / 9, reduction="none")
        class_weights = weights_all
        if self.confidence_weighted:
            confidence = class_logits.detach().float().softmax(1).amax(1)
            class_weights = class_weights * confidence
        return {
            "roi_classifier": weighted_mean(ce, class_weights),
            "roi_box": weighted_mean(box.sum(1), weights_all[fg], len(labels_all)),
        }


@dataclass
class Capture:
    """What a captured forward leaves for alignment losses: the FPN feature maps (name ->
    B x C x h x w), the proposals whose ROI features were computed (per image, in the
    resized image's coordinates), their ROI features (N x D, images in order) and the FPN
    level each was pooled from; ``image_sizes`` are the resized images' (H, W)."""

    features: dict[str, Tensor] = field(default_factory=dict)
    image_sizes: list[tuple[int, int]] = field(default_factory=list)
    proposals: list[Tensor] = field(default_factory=list)
    roi_features: Tensor | None = None
    roi_levels: Tensor | None = None


# ---------------------------------------------------------------------------------- backbones
#: model.norm's layers (``auto``: ``frozen`` with pretrained weights, else ``batch``)
NORM_LAYERS: dict[str, type[nn.Module]] = {
    "frozen": FrozenBatchNorm2d,
    "batch": nn.BatchNorm2d,
    "layer": LayerNorm2d,
}


def _resolve_norm(norm: str, pretrained: bool) -> str:
    if norm == "auto":
        return "frozen" if pretrained else "batch"
    if norm not in NORM_LAYERS:
        raise ConfigError(f"model.norm must be 'auto', 'frozen', 'batch' or 'layer', got {norm!r}")
    if norm == "layer" and pretrained:
        raise ConfigError(
            "model.norm=layer replaces the backbone's BatchNorm, so its pretrained weights (with "
            "BatchNorm statistics) do not fit; set model.pretrained=false, or keep BatchNorm "
            "(model.norm=auto, frozen or batch)"
        )
    return norm


#: the four deepest feature levels of a timm model (strides 4 .. 32 of a CNN), whatever
#: number of levels it has (5 for a ResNet or RegNet, 4 for a ConvNeXt)
OUT_INDICES = (-4, -3, -2, -1)


def timm_features(
    name: str,
    pretrained: bool,
    out_indices: Sequence[int] = OUT_INDICES,
    norm: str = "batch",
    trainable_layers: int | None = None,
) -> nn.Module:
    """A timm feature extractor (``features_only``, through ``mic.backbones``) with its
    BatchNorm trainable (``norm="batch"``), frozen (``"frozen"``) or replaced by timm's
    ``LayerNorm2d`` (``"layer"``); ``feature_info`` gives the maps' channels and strides.
    ``trainable_layers`` (0 .. 5, torchvision's meaning; None: all train) freezes the stem and
    the first levels (``freeze_stages``).

    Raises:
        ConfigError: ``norm="layer"`` for a timm model that takes no ``norm_layer``;
            ``trainable_layers`` outside [0, 5]; feature maps whose strides do not grow
            (a ViT's are all 16); a model that fails on a 64 x 64 image (one of a fixed
            ``img_size``, a Swin).
    """
    extra = {"norm_layer": "layernorm2d"} if norm == "layer" else {}
    try:
        body = create_backbone(
            name, pretrained=pretrained, features_only=True, out_indices=tuple(out_indices), **extra
        )
    except TypeError as e:
        if not extra:
            raise
        raise ConfigError(
            f"timm's {name} takes no norm_layer ({e}); model.norm=layer needs a backbone "
            "that does (e.g. regnetx_002)"
        ) from e
    strides = body.feature_info.reduction()  # type: ignore[operator]
    if any(b <= a for a, b in itertools.pairwise(strides)):
        raise ConfigError(
            f"backbone '{name}' gives its feature maps at strides {', '.join(map(str, strides))}"
            ": a feature pyramid (FPN) needs levels of growing strides (4, 8, 16, 32), which a "
            "plain vision transformer (ViT, DeiT) does not have; choose a convolutional or "
            "hierarchical backbone (resnet50, convnext_tiny, regnetx_002)"
        )
    training = body.training
    try:
        with torch.no_grad():
            body.eval()(torch.zeros(1, 3, 64, 64))
    except (AssertionError, RuntimeError, ValueError) as e:  # timm's fixed-size transformers
        raise ConfigError(
            f"backbone '{name}' cannot take detection's images, whose sizes vary: on a 64 x 64 "
            f"image it raised {type(e).__name__}: {str(e).rstrip('.!')}. A transformer built "
            "for one img_size "
            "(Swin, ViT) does not take them; choose a convolutional backbone (resnet50, "
            "convnext_tiny, regnetx_002)"
        ) from e
    finally:
        body.train(training)
    if norm == "frozen":
        from timm.layers import freeze_batch_norm_2d

        body = freeze_batch_norm_2d(body)
    freeze_stages(body, trainable_layers)
    return body


def freeze_stages(body: nn.Module, trainable_layers: int | None) -> None:
    """Freeze the parameters of a timm feature extractor of 4 levels before its last
    ``trainable_layers`` of (stem, level 1, ..., level 4), as torchvision's
    ``trainable_layers`` does for a ResNet: 5 (or None) trains all, 3 freezes the stem and the
    stride-4 level, 0 the whole backbone. The stem is what comes before level 1's module, a
    level what comes after the previous level's module up to its own (with what it holds).

    Raises:
        ConfigError: ``trainable_layers`` outside [0, 5].
    """
    if trainable_layers is None:
        return
    if isinstance(trainable_layers, bool) or not 0 <= int(trainable_layers) <= 5:
        raise ConfigError(f"model.trainable_layers must lie in [0, 5], got {trainable_layers}")
    levels = body.feature_info.module_name()  # type: ignore[operator]
    order = [n for n, _ in body.named_modules()]  # in the order the forward runs them

    def span(level: int) -> tuple[int, int]:  # a level module's place and its last descendant's
        flat = levels[level].replace(".", "_")  # features_only flattens module names
        name = flat if flat in order else levels[level]
        inside = [i for i, n in enumerate(order) if n == name or n.startswith(name + ".")]
        return inside[0], inside[-1]

    k = int(trainable_layers)
    stop = 0 if k == 5 else span(0)[0] if k == 4 else span(3 - k)[1] + 1
    frozen = set(order[:stop])  # each module's own parameters (a level may hold none)
    for name, module in body.named_modules():
        if name in frozen:
            for parameter in module.parameters(recurse=False):
                parameter.requires_grad_(False)


class TimmFPN(nn.Module):
    """A timm feature extractor (``features_only``) followed by a feature pyramid network with
    a max-pooled extra level; returns an ordered dict of maps with ``out_channels`` each."""

    def __init__(
        self,
        name: str,
        pretrained: bool,
        out_channels: int,
        out_indices: Sequence[int] = OUT_INDICES,
        norm: str = "batch",
        trainable_layers: int | None = None,
    ) -> None:
        super().__init__()
        self.body = timm_features(name, pretrained, out_indices, norm, trainable_layers)
        channels = self.body.feature_info.channels()
        self.fpn = FeaturePyramidNetwork(channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        maps = OrderedDict((str(i), f) for i, f in enumerate(self.body(x)))
        return self.fpn(maps)


def build_backbone(
    name: str,
    pretrained: bool,
    fpn_channels: int,
    norm: str = "auto",
    trainable_layers: int | None = None,
) -> tuple[nn.Module, list[str]]:
    """A backbone with FPN and the names of its maps that ROI pooling uses.

    ``resnet18`` ... ``resnet152``, ``resnext*``, ``wide_resnet*``: torchvision's ResNet-FPN;
    ``mobilenet_v3_large`` / ``mobilenet_v3_small``: torchvision's MobileNetV3-FPN (both with
    256 FPN channels, as torchvision builds them); any other name: a timm model through
    ``mic.backbones.create_backbone`` with an FPN of ``fpn_channels``.

    Raises:
        ConfigError: a ``name`` that is no text (``model.backbone=null``).
    """
    if not isinstance(name, str):
        raise ConfigError(
            f"model.backbone must be the name of a backbone (e.g. resnet50, mobilenet_v3_large "
            f"or a timm model), got {name!r}"
        )
    if norm == "frozen":
        warn_of_random_frozen_norm(pretrained)
    norm = _resolve_norm(norm, pretrained)
    norm_layer = NORM_LAYERS[norm]
    tv_resnet = name.startswith(("resnet", "resnext", "wide_resnet")) and name in dir(
        torchvision.models.resnet
    )
    tv_mobile = name in ("mobilenet_v3_large", "mobilenet_v3_small")
    if (tv_resnet or tv_mobile) and fpn_channels != 256:
        tagged = timm.list_pretrained(f"{name}.*")[:1]  # timm's model of this name, by a tag
        timms = f": timm's {name} is model.backbone={tagged[0]}" if tagged else ""
        raise ConfigError(
            f"torchvision's {name} FPN has 256 channels; set model.fpn_channels=256 (or pick "
            f"a timm backbone for another width{timms})"
        )
    weights = None
    if pretrained and (tv_resnet or tv_mobile):
        weights = torchvision.models.get_model_weights(name).DEFAULT
        try:  # torchvision would download them on first use; say what to do without internet
            weights.get_state_dict(progress=False, check_hash=True)
        except Exception as e:
            raise ConfigError(
                f"could not load torchvision's pretrained {name} weights ({e.__class__.__name__}: "
                f"{e}). Without internet, put '{weights.url.rsplit('/', 1)[-1]}' into "
                f"{torch.hub.get_dir()}/checkpoints, or use model.pretrained=false"
            ) from e
    warn_of_random_frozen(trainable_layers, pretrained, 6 if tv_mobile else 5)
    if tv_resnet:
        layers = (3 if pretrained else 5) if trainable_layers is None else trainable_layers
        body = resnet_fpn_backbone(
            backbone_name=name, weights=weights, norm_layer=norm_layer, trainable_layers=layers
        )
        return body, ["0", "1", "2", "3"]
    if tv_mobile:
        layers = (3 if pretrained else 6) if trainable_layers is None else trainable_layers
        body = mobilenet_backbone(
            backbone_name=name,
            weights=weights,
            fpn=True,
            norm_layer=norm_layer,
            trainable_layers=layers,
        )
        return body, ["0", "1"]
    layers = (3 if pretrained else 5) if trainable_layers is None else trainable_layers
    fpn = TimmFPN(name, pretrained, fpn_channels, norm=norm, trainable_layers=layers)
    return fpn, ["0", "1", "2", "3"]


def warn_of_random_frozen(trainable_layers: Any, initialised: bool, stages: int = 5) -> None:
    """Warn when ``trainable_layers`` (of ``stages``) freezes backbone stages that hold no
    pretrained weights: they keep their random initial weights unless weights are loaded
    into the model afterwards (mic-train's ``init_from``, ``load_initial_weights``)."""
    if initialised or trainable_layers is None or isinstance(trainable_layers, bool):
        return
    if isinstance(trainable_layers, int) and 0 <= trainable_layers < stages:
        warnings.warn(
            f"model.trainable_layers={trainable_layers} freezes {stages - trainable_layers} of "
            f"the backbone's {stages} stages, but the backbone has no pretrained weights "
            "(model.pretrained=false): those stages keep their random initial weights unless "
            "weights are loaded afterwards (init_from); leave model.trainable_layers out (null: "
            "every stage trains without pretrained weights) to train them",
            stacklevel=4,
        )


def warn_of_random_frozen_norm(
    initialised: bool, norm: str = "frozen", stacklevel: int = 4
) -> None:
    """Warn when BatchNorm is frozen (``model.norm=frozen``) in a backbone without pretrained
    weights: its statistics are those of a random network (mean 0, variance 1), under which
    detection training diverges, unless weights are loaded into the model afterwards
    (mic-train's ``init_from``)."""
    if not initialised:
        warnings.warn(
            f"model.norm={norm} freezes the backbone's BatchNorm statistics, but the backbone has "
            "no pretrained weights (model.pretrained=false): frozen statistics of a random "
            "network make detection training diverge, unless weights are loaded afterwards "
            "(init_from); model.norm=auto (or batch) trains them",
            stacklevel=stacklevel,
        )


#: the detector settings that are positive whole numbers / fractions in [0, 1] (both backends)
COUNT_SETTINGS = (
    "fpn_channels",
    "representation_size",
    "min_size",
    "max_size",
    "rpn_pre_nms_top_n_train",
    "rpn_post_nms_top_n_train",
    "rpn_pre_nms_top_n_test",
    "rpn_post_nms_top_n_test",
    "rpn_batch_size_per_image",
    "box_batch_size_per_image",
    "box_detections_per_img",
)
FRACTION_SETTINGS = ("rpn_nms_thresh", "box_score_thresh", "box_nms_thresh")


def check_detector_images(images: Any) -> None:
    """Raise the error of a detector's input that is no list (or batch) of float 3 x H x W
    images: what detectron2 would read wrongly (uint8 images, in which ``255 * x`` wraps
    around; a 2-D image, broadcast to three channels) and what torchvision would end in a
    traceback on (no images, an image of no pixels), for both backends alike.

    Raises:
        TypeError: an image that is not floating point, or float64 (both backends' weights
            are float32: torchvision and detectron2 end in 'expected scalar type Double').
        ValueError: no images, or an image that is not 3 x H x W with H, W > 0.
    """
    if len(images) == 0:
        raise ValueError("the detector got no images: give a list of 3 x H x W images")
    for x in images:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            kind = x.dtype if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(
                f"the detector takes floating point images in [0, 1], got {kind} (for uint8 "
                "images in [0, 255]: image.float() / 255)"
            )
        if x.dtype == torch.float64:
            raise TypeError(
                "the detector takes float32 images (its weights are float32), got float64: "
                "give image.float()"
            )
        if x.dim() != 3 or x.shape[0] != 3 or x.shape[-2] == 0 or x.shape[-1] == 0:
            raise ValueError(
                f"the detector takes 3 x H x W images, got one of shape {tuple(x.shape)}"
            )


def warn_of_shrinking(
    sizes: Sequence[Sequence[int]], resized: Sequence[Sequence[int]], settings: str, fix: str
) -> bool:
    """Warn when a detector shrinks a training image of a batch (``sizes``, each (H, W)) to
    less than half its size (``resized``, each (H, W); photos under the small detectors'
    128 px resize): its objects shrink as much. The image shrunk most is named. ``settings``:
    the settings that made the resize; ``fix``: those for photos.

    Returns:
        Whether it warned (a detector warns once per run).
    """
    factor, size, small = max(
        (int(s[0]) / max(int(r[0]), 1), s, r) for s, r in zip(sizes, resized, strict=True)
    )
    if factor > 2:
        warnings.warn(
            f"the detector resizes the {size[1]} x {size[0]} training images to "
            f"{int(small[1])} x {int(small[0])} ({settings}): their objects shrink "
            f"{factor:.1f}x. For photos set {fix}, or sizes that keep the objects' pixels",
            stacklevel=2,  # (mic's line: called from a forward pass, under torch's frames)
        )
    return factor > 2


def check_detector_settings(given: Mapping[str, Any]) -> None:
    """Refuse detector settings that torchvision or detectron2 would fail on deep inside (or
    take silently): sizes and counts that are not positive whole numbers, anchor sizes that
    are not one entry per FPN level, aspect ratios <= 0, thresholds outside [0, 1] (a box
    score threshold of 1, which keeps no box), a
    min_size above max_size (the longer side's cap wins: the resize ends below min_size), an
    ``image_mean`` or ``image_std`` that is not one number per RGB channel (std > 0).

    Args:
        given: a detector's arguments by name (its ``locals()``): ``COUNT_SETTINGS`` (each a
            positive whole number or None: unset), ``FRACTION_SETTINGS`` (in [0, 1] or None),
            ``anchor_sizes`` (per FPN level a size or a list of sizes, in pixels, as many at
            every level) and
            ``aspect_ratios`` (height / width ratios), ``image_mean`` and ``image_std`` (3
            numbers each, RGB in [0, 1] units), each None when unset.

    Raises:
        ConfigError: naming the setting as ``model.<name>``, the value given and what it takes.
    """
    counts = {f"model.{k}": given.get(k) for k in COUNT_SETTINGS}
    fractions = {f"model.{k}": given.get(k) for k in FRACTION_SETTINGS}
    anchor_sizes, aspect_ratios = given.get("anchor_sizes"), given.get("aspect_ratios")
    for key, value in counts.items():
        if value is not None:
            check_whole(key, value)
    low, high = given.get("min_size"), given.get("max_size")
    if low is not None and high is not None and low > high:
        raise ConfigError(
            f"model.min_size ({low}) exceeds model.max_size ({high}): the shorter side would "
            "never reach min_size, as the cap on the longer side wins; give min_size <= "
            "max_size (published 800 and 1333)"
        )
    for key, value in fractions.items():
        if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= 1):
            bounds = "[0, 1)" if key == "model.box_score_thresh" else "[0, 1]"  # (1: no box)
            raise ConfigError(f"{key} must lie in {bounds}, got {value!r}")
    if given.get("box_score_thresh") == 1:  # (both backends keep scores above it: none)
        raise ConfigError(
            "model.box_score_thresh=1 keeps no box: the detector keeps the boxes scored above "
            "it, and no score exceeds 1; give a threshold below 1 (published 0.05)"
        )
    if anchor_sizes is not None:
        per_level = (
            [s if isinstance(s, Sequence) and not isinstance(s, str) else [s] for s in anchor_sizes]
            if isinstance(anchor_sizes, Sequence) and not isinstance(anchor_sizes, str)
            else None
        )
        flat = [v for s in per_level or [] for v in s]
        if (
            not per_level
            or any(not s for s in per_level)
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 for v in flat)
        ):
            raise ConfigError(
                f"model.anchor_sizes must list, for every FPN level, a positive size in pixels "
                f"(or a list of them), e.g. [8, 16, 32, 64, 128]; got {anchor_sizes!r}"
            )
        if len({len(s) for s in per_level}) > 1:
            raise ConfigError(
                f"model.anchor_sizes must give every FPN level the same number of sizes (the "
                f"RPN head predicts one set of anchors per location for all levels); got "
                f"{[list(s) for s in per_level]!r}, e.g. [[8, 12], [16, 24], [32, 48], ...]"
            )
        if any(min(b) < min(a) for a, b in itertools.pairwise(per_level)):
            warnings.warn(  # (trains, with the large anchors on the maps of small objects)
                f"model.anchor_sizes {[s[0] if len(s) == 1 else list(s) for s in per_level]} "
                "shrink from one FPN level "
                "to the next, but the levels run from the finest map (stride 4, for small "
                "objects) to the coarsest: list the sizes smallest first, e.g. [32, 64, 128, "
                "256, 512] (published)",
                stacklevel=3,
            )
    if aspect_ratios is not None:
        ratios = aspect_ratios if isinstance(aspect_ratios, Sequence) else None
        if (
            not ratios
            or isinstance(ratios, str)
            or any(isinstance(a, bool) or not isinstance(a, (int, float)) or a <= 0 for a in ratios)
        ):
            raise ConfigError(
                "model.aspect_ratios must list positive height / width ratios, e.g. "
                f"[0.5, 1.0, 2.0]; got {aspect_ratios!r}"
            )
    for name in ("image_mean", "image_std"):
        value = given.get(name)
        if value is None:
            continue
        try:  # a list, a NumPy array or a tensor of numbers
            floats = [float(v) for v in value] if not isinstance(value, str) else []
        except (TypeError, ValueError):
            floats = []
        wrong = len(floats) != 3 or not all(map(math.isfinite, floats))
        if wrong or (name == "image_std" and min(floats) <= 0):
            raise ConfigError(
                f"model.{name} must give 3 numbers, one per RGB channel of images in [0, 1]"
                f"{' (each > 0)' if name == 'image_std' else ''}, e.g. "
                f"{list(IMAGENET_MEAN if name == 'image_mean' else IMAGENET_STD)}; got {value!r}"
            )


# ---------------------------------------------------------------------------------- detector
class SideKeepingTransform(GeneralizedRCNNTransform):
    """torchvision's resize and normalisation, except that an image whose sides' ratio
    exceeds ``max_size`` (e.g. 1000 x 6 px at max_size=128) is resized to a shorter side of
    1 px and a longer side of ``max_size``: torchvision's own resize gives it a side of 0 px
    and ends in interpolate's error."""

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        h, w = int(image.shape[-2]), int(image.shape[-1])
        if self.fixed_size is not None or min(h, w) * self.max_size > max(h, w) * (1 + 1e-6):
            return super().resize(image, target)
        self.fixed_size = (self.max_size, 1) if w >= h else (1, self.max_size)  # (W, H)
        try:
            return super().resize(image, target)
        finally:
            self.fixed_size = None


class FasterRCNN(nn.Module):
    """Faster R-CNN with FPN (torchvision's parts, mic's loss seams).

    Input: images in [0, 1], a B x 3 x H x W batch or a list of 3 x H x W images; targets: a
    list of dicts with ``boxes`` (N x 4, x1 y1 x2 y2 in pixels), ``labels`` (N, 0-based class
    ids) and optionally ``weights`` (N). Training mode returns the dict of named losses
    (``LOSS_PARTS``; empty without targets); eval mode returns per-image dicts of ``boxes``,
    ``labels`` (0-based) and ``scores`` in the input's pixel coordinates.

    Args:
        backbone: ``resnet50`` (published), ``mobilenet_v3_large``, or any timm name.
        num_classes: foreground classes.
        pretrained: ImageNet weights for the backbone (needs them in the local cache).
        fpn_channels: FPN width (256 for torchvision's backbones).
        representation_size: width of the two-layer box head (1024 published).
        norm: ``auto`` (frozen BatchNorm with pretrained weights, trainable BatchNorm from
            scratch: frozen statistics of a random network make training diverge), ``frozen``,
            ``batch``, or ``layer`` (timm's ``LayerNorm2d`` over each pixel's channels: no
            statistic of the batch, so MIC's masked images change none that the full images
            are normalised with; as frozen BatchNorm in the published recipe; from scratch
            only, and slower to train there: benchmarks/results/detection_layernorm.md).
        trainable_layers: backbone stages that train (torchvision's meaning, for a timm
            backbone its (stem, level 1, ..., level 4); None: 3 with pretrained weights, all
            without).
        min_size, max_size: torchvision's resize of the shorter / longer side (published
            800 / 1600 for Cityscapes).
        image_mean, image_std: normalisation inside the model (images come in [0, 1]).
        anchor_sizes: the anchor sizes of each FPN level (a number or a list per level), each
            at every aspect ratio.
        rpn_*, box_*: torchvision's Faster R-CNN settings of the same names.

    Raises:
        ConfigError: an unknown ``norm``, ``norm="layer"`` with pretrained weights,
            pretrained weights that are not in the local cache, or settings torchvision would
            fail on (``check_detector_settings``: sizes and counts < 1, anchor sizes not given
            per level, aspect ratios <= 0, thresholds outside [0, 1]).
        TypeError, ValueError: (when called) images that are not floating point, or not
            3 x H x W (of no pixels, or none at all): ``check_detector_images``.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        num_classes: int = 8,
        pretrained: bool = False,
        fpn_channels: int = 256,
        representation_size: int = 1024,
        norm: str = "auto",
        trainable_layers: int | None = None,
        min_size: int = 800,
        max_size: int = 1333,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        anchor_sizes: Sequence[int | Sequence[int]] = (32, 64, 128, 256, 512),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        rpn_pre_nms_top_n_train: int = 2000,
        rpn_post_nms_top_n_train: int = 2000,
        rpn_pre_nms_top_n_test: int = 1000,
        rpn_post_nms_top_n_test: int = 1000,
        rpn_batch_size_per_image: int = 256,
        rpn_nms_thresh: float = 0.7,
        box_batch_size_per_image: int = 512,
        box_score_thresh: float = 0.05,
        box_nms_thresh: float = 0.5,
        box_detections_per_img: int = 100,
    ) -> None:
        super().__init__()
        check_whole("num_classes", num_classes, 1, "detection needs at least 1 class")
        check_detector_settings(locals())
        self.num_classes = int(num_classes)
        self.box_score_thresh = float(box_score_thresh)  # (the lowest score it predicts)
        self.fpn_channels = int(fpn_channels)
        self.representation_size = int(representation_size)
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.backbone, pooled = build_backbone(
            backbone, pretrained, self.fpn_channels, norm, trainable_layers
        )
        with torch.no_grad():
            self.backbone.eval()
            probe = self.backbone(torch.zeros(1, 3, 64, 64))
            self.backbone.train()
        levels = len(probe)
        if len(anchor_sizes) != levels:
            # one size per level; a pyramid with another number of levels spreads them
            raise ConfigError(
                f"model.anchor_sizes has {len(anchor_sizes)} sizes but backbone '{backbone}' "
                f"gives {levels} feature levels; give one anchor size per level"
            )
        sizes = tuple(
            (int(s),) if isinstance(s, (int, float)) else tuple(int(v) for v in s)
            for s in anchor_sizes
        )
        anchors = AnchorGenerator(sizes, (tuple(float(a) for a in aspect_ratios),) * levels)
        self.rpn = WeightedRPN(
            anchors,
            RPNHead(self.fpn_channels, anchors.num_anchors_per_location()[0]),
            fg_iou_thresh=0.7,
            bg_iou_thresh=0.3,
            batch_size_per_image=rpn_batch_size_per_image,
            positive_fraction=0.5,
            pre_nms_top_n={"training": rpn_pre_nms_top_n_train, "testing": rpn_pre_nms_top_n_test},
            post_nms_top_n={
                "training": rpn_post_nms_top_n_train,
                "testing": rpn_post_nms_top_n_test,
            },
            nms_thresh=rpn_nms_thresh,
        )
        pool = MultiScaleRoIAlign(pooled, output_size=7, sampling_ratio=2)
        self.roi_heads = WeightedRoIHeads(
            pool,
            TwoMLPHead(self.fpn_channels * 7 * 7, self.representation_size),
            FastRCNNPredictor(self.representation_size, self.num_classes + 1),
            fg_iou_thresh=0.5,
            bg_iou_thresh=0.5,
            batch_size_per_image=box_batch_size_per_image,
            positive_fraction=0.25,
            bbox_reg_weights=None,
            score_thresh=box_score_thresh,
            nms_thresh=box_nms_thresh,
            detections_per_img=box_detections_per_img,
            unlabelled_samples=box_batch_size_per_image,
        )
        self.transform = SideKeepingTransform(min_size, max_size, self.image_mean, self.image_std)
        self._capture: Capture | None = None
        self._shrink_warned = False

    @contextmanager
    def capture(self) -> Iterator[Capture]:
        """Within the block, forward passes record their FPN and ROI features (the last
        forward's are kept) for alignment losses."""
        captured = Capture()
        self._capture = self.roi_heads.captured = captured
        try:
            yield captured
        finally:
            self._capture = self.roi_heads.captured = None

    def student_confidence_weights(self) -> AbstractContextManager[None]:
        """Within the block, training losses weight each sample by the model's own confidence
        on it, on top of its box's weight: a sampled anchor by its objectness probability
        (``rpn_objectness``), a sampled proposal by its highest class probability
        (``roi_classifier``), both detached. This is the published masked branch's
        ``PSEUDO_LABEL_WEIGHT='prob'`` of MIC's detection code, where the student's own
        confidence weighs the pseudo-labelled samples; the published RPN weight is not
        detached (its gradient then also pushes on the objectness through the weight), ours
        is. The box-regression losses are unchanged."""
        return confidence_weighted(self.rpn, self.roi_heads)

    def forward(
        self, images: Tensor | Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        check_detector_images(images)
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        inner = None
        if targets is not None:  # torchvision's class 0 is the background
            inner = [{**t, "labels": t["labels"].to(torch.int64) + 1} for t in targets]
        batch, inner = self.transform(list(images), inner)
        if self.training and not self._shrink_warned:  # once, of any image of a batch
            self._shrink_warned = warn_of_shrinking(
                sizes,
                batch.image_sizes,
                f"model.min_size={self.transform.min_size[0]}, "
                f"model.max_size={self.transform.max_size}",
                "model.min_size=800 model.max_size=1333 model.anchor_sizes=[32,64,128,256,512] "
                "(torchvision's sizes)",
            )
        if inner is not None:  # the transform resizes "boxes" alone
            inner = [
                {**t, "ignore_boxes": resize_boxes(t["ignore_boxes"], size, resized)}
                if "ignore_boxes" in t
                else t
                for t, size, resized in zip(inner, sizes, batch.image_sizes, strict=True)
            ]
        features = self.backbone(batch.tensors)
        if self._capture is not None:
            self._capture.features = features
            self._capture.image_sizes = list(batch.image_sizes)
        proposals, rpn_losses = self.rpn(batch, features, inner if self.training else None)
        detections, roi_losses = self.roi_heads(
            features, proposals, batch.image_sizes, inner if self.training else None
        )
        if self.training:
            return {**rpn_losses, **roi_losses}
        return self.postprocess(detections, batch.image_sizes, sizes)

    def postprocess(
        self,
        detections: list[dict[str, Tensor]],
        image_sizes: Sequence[tuple[int, int]],
        original_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """torchvision's raw detections (``boxes`` in the resized images, ``labels`` with
        background 0, ``scores``) as mic's: ``boxes`` in the original images' pixels,
        ``labels`` 0-based."""
        detections = self.transform.postprocess(detections, list(image_sizes), list(original_sizes))
        return [{**d, "labels": d["labels"] - 1} for d in detections]

    def pool_regions(
        self,
        maps: dict[str, Tensor],
        proposals: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
    ) -> Tensor:
        """The box head's ROI pooling of ``maps`` (named as the FPN's) over ``proposals``
        (per image, N_i x 4 in the resized image's pixels): N x C x 7 x 7 (torchvision's
        ``MultiScaleRoIAlign``)."""
        return self.roi_heads.box_roi_pool(maps, list(proposals), list(image_sizes))
