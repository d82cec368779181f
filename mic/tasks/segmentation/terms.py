"""DAFormer's self-training terms (DACS with ClassMix, the ImageNet feature distance on the
source forward pass that the source loss shares) and MIC's choice of masked images, as loss
terms of the generic loop. Each goes through the Task (``loss``, ``forward_train``), so with
``HRDASegmentationTask`` every term trains HRDA on its crops: ClassMix and MIC on the mixed or
masked 1024 px crop (context and a detail crop of it), the feature distance on the context
features."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mic.core import (
    QUALITY_THRESHOLD,
    ConfigError,
    DatasetError,
    IterationContext,
    LossTerm,
    MaskedImageConsistency,
    Masker,
    PseudoLabels,
    PseudoLabelWeighting,
    SharedForward,
)
from mic.core.checks import loss_weight
from mic.core.masking import Augmentation
from mic.core.streams import Random, uniform
from mic.core.teacher import unwrap
from mic.core.terms import sum_parts
from mic.core.weighting import WeightingMode
from mic.datasets.segmentation.labels import CITYSCAPES_THING_CLASSES
from mic.methods import check_augmentation
from mic.tasks.common import require_features
from mic.training.batches import require_images


def class_mix_masks(
    labels: Tensor,
    num_classes: int,
    rng: Random = None,
    classes_from: Literal["image", "batch"] = "image",
    ignore_index: int = 255,
) -> Tensor:
    """ClassMix masks, B x H x W bool: for each image, half of the classes (rounded up) are
    drawn at random and their pixels pasted.

    ``classes_from="image"`` draws among the classes of each image itself (ClassMix as
    described); ``"batch"`` draws, for each image, among the classes of the whole batch, as
    the published DACS code does (a drawn class missing from the image pastes nothing).
    Ignored pixels are never pasted. All on the labels' device, without host sync.

    Args:
        labels: B x H x W integer label maps (training ids, ``ignore_index`` ignored).
        num_classes: the number of classes (>= 1).
        rng: what to draw from (a term's ``RandomStream`` in the loop).

    Raises:
        ConfigError: labels that are not an integer tensor of at least 2 dimensions, a class
            count below 1, or an unknown ``classes_from``.
    """
    check_label_maps(labels, num_classes, "ClassMix", exact=False)
    b = labels.shape[0]
    if b == 0:
        return torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    flat = labels.reshape(b, -1).long()  # (any integer width: scatter takes int64)
    index = torch.where((flat >= 0) & (flat < num_classes), flat, num_classes)
    present = torch.zeros(b, num_classes + 1, dtype=torch.bool, device=labels.device)
    present.scatter_(1, index, True)
    present = present[:, :num_classes]
    if classes_from == "batch":
        present = present.any(0, keepdim=True).expand(b, -1)
    elif classes_from != "image":
        raise ConfigError(f"classes_from must be 'image' or 'batch', got {classes_from!r}")
    n = present.sum(1, keepdim=True)
    scores = uniform(rng, b, num_classes, device=labels.device)
    scores = scores.masked_fill(~present, 2.0)
    rank = scores.argsort(1).argsort(1)
    chosen = present & (rank < (n + 1) // 2)
    chosen = torch.cat([chosen, chosen.new_zeros(b, 1)], dim=1)  # the ignore column
    return chosen.gather(1, index).reshape(labels.shape)


class ClassMix(LossTerm):
    """DACS: the student on source/target mixes against mixed labels.

    For each target image, half of the classes of its paired source image (rounded up) are
    cut out of the source and pasted onto the target; the mixed label is the source truth
    inside (weight 1) and the teacher's pseudo-label outside (weight ``weighting``: the
    quality q as published, 0 in the task's pseudo-label margins). The mix is then strongly
    augmented (colour jitter, blur) before the student sees it.

    Args:
        augmentation: the strong augmentation of the mixed images (None: none).
        weighting, tau: pseudo-label weights (see ``PseudoLabelWeighting``).
        classes_from: ``"image"`` (default) or ``"batch"`` (the published code), see
            ``class_mix_masks``.
        weight: the loss weight.
    """

    uses_pseudo_labels = True

    def __init__(
        self,
        augmentation: Augmentation | None = None,
        weighting: WeightingMode = "quality",
        tau: float = QUALITY_THRESHOLD,
        classes_from: Literal["image", "batch"] = "image",
        weight: float = 1.0,
    ) -> None:
        super().__init__(weight)
        if classes_from not in ("image", "batch"):
            raise ConfigError(f"classes_from must be 'image' or 'batch', got {classes_from!r}")
        check_augmentation(augmentation, "ClassMix")
        self.augmentation = augmentation
        self.weighting = PseudoLabelWeighting(weighting, tau)
        self.classes_from = classes_from
        #: the last call's quality weight ``q`` and mean confidence, for logs
        self.statistics: dict[str, Tensor] = {}

    def check_batch_sizes(self, source: int, target: int) -> None:
        """Refuse, when the experiment is built, batch sizes that ``mix`` cannot pair.

        Raises:
            ConfigError: ``source`` (``loader.source_batch_size``) differs from ``target``.
        """
        if source != target:
            raise ConfigError(
                "ClassMix pastes each source crop onto one target crop, so source and target "
                f"batches must have one shape; got loader.source_batch_size={source} and "
                f"loader.target_batch_size={target} (set equal batch sizes and crop sizes)"
            )

    def mix(self, ctx: IterationContext) -> tuple[Tensor, Tensor, Tensor]:
        """The mixed images, labels and per-pixel weights of this iteration."""
        source, labels = ctx.source_images, ctx.source_targets
        target = ctx.target_images
        require_images(source)  # a 1-item batch (no collate_fn), images channels last: named
        require_images(target)
        maps = isinstance(labels, Tensor) and isinstance(source, Tensor) and labels.ndim == 3
        if maps and labels.shape[-2:] != source.shape[-2:]:
            raise DatasetError(
                f"ClassMix pastes source pixels by their labels, so the label maps must have "
                f"the images' size; the source batch has {tuple(labels.shape[-2:])} labels for "
                f"{tuple(source.shape[-2:])} images: give labels at the images' resolution "
                "(resize them with the images, nearest neighbour, in the dataset's transform)"
            )
        if not (
            isinstance(labels, Tensor)
            and isinstance(source, Tensor)
            and labels.ndim == 3
            and labels.shape[-2:] == source.shape[-2:]
        ):
            got = (
                f"targets of shape {tuple(labels.shape)}"
                if isinstance(labels, Tensor)
                else f"{type(labels).__name__} targets"
            )
            raise ConfigError(
                "ClassMix is a segmentation term: it pastes the pixels of source classes, so it "
                "needs B x H x W label maps of the images' size (SegmentationTask), but "
                f"{type(ctx.task).__name__} gives {got}; remove it from the method (a "
                "classification or detection method has no ClassMix term)"
            )
        if source.shape != target.shape:
            short = (
                "; or a loader's last batch is short, from a data set smaller than a batch or whose"
                " size the batch does not divide: DataLoader(..., drop_last=True), as mic-train's"
                if source.shape[1:] == target.shape[1:]
                else ""
            )
            raise ConfigError(
                f"ClassMix pastes each source crop onto one target crop, so source and target "
                f"batches must have one shape; got {tuple(source.shape)} and "
                f"{tuple(target.shape)} (set equal batch sizes and crop sizes{short})"
            )
        pseudo = ctx.pseudo_labels
        weights = self.weighting(pseudo, q=ctx.quality(self.weighting))
        self.statistics = self.weighting.statistics(pseudo.confidence)
        ignore = getattr(ctx.task, "ignore_index", 255)
        mask = class_mix_masks(labels, ctx.task.num_classes, ctx.rng, self.classes_from, ignore)
        images = torch.where(mask[:, None], source, target)
        mixed_labels = torch.where(mask, labels, pseudo.labels)
        mixed_weights = torch.where(mask, torch.ones_like(weights), weights)  # type: ignore[arg-type]
        if self.augmentation is not None:
            images = self.augmentation(images, ctx.rng)
        return images, mixed_labels, mixed_weights

    def forward(self, ctx: IterationContext) -> Tensor:
        images, labels, weights = self.mix(ctx)
        loss = ctx.task.loss(ctx.student, images, labels, weights=weights, rng=ctx.rng)
        return sum_parts(loss, None)


def check_label_maps(labels: Any, num_classes: Any, who: str, exact: bool = True) -> None:
    """Raise ``ConfigError`` unless ``labels`` is a (B, H, W) integer tensor (``exact``; else
    of at least 2 dimensions) and ``num_classes`` an int >= 1 (what ``who`` takes)."""
    integer = isinstance(labels, Tensor) and not (labels.is_floating_point() or labels.is_complex())
    dims = integer and (labels.dim() == 3 if exact else labels.dim() >= 2)
    if not (dims and labels.dtype != torch.bool):
        got = (
            f"{labels.dtype} of shape {tuple(labels.shape)}"
            if isinstance(labels, Tensor)
            else labels
        )
        raise ConfigError(f"{who} takes B x H x W integer label maps, got {got}")
    if isinstance(num_classes, bool) or not (isinstance(num_classes, int) and num_classes >= 1):
        raise ConfigError(f"{who}'s num_classes must be an int >= 1, got {num_classes!r}")


def majority_labels(
    labels: Tensor, size: Sequence[int], num_classes: int, min_ratio: float, ignore_index: int = 255
) -> Tensor:
    """Labels of the cells of a ``size`` grid over B x H x W labels: a cell takes its majority
    class where that covers at least ``min_ratio`` of it, else ``ignore_index`` (DAFormer's
    feature distance reads them at its feature map's size).

    Args:
        labels: (B, H, W) integer label maps; ids outside [0, num_classes) count as no class.
        size: the grid, (h, w) cells.
        num_classes: the classes of the label space.
        min_ratio: the share of a cell its majority class must cover (published 0.75).
        ignore_index: the label of cells without one.

    Returns:
        (B, h, w) int64 cell labels.

    Raises:
        ConfigError: labels that are no (B, H, W) integer tensor, a class count below 1, a
            min_ratio outside [0, 1].
    """
    check_label_maps(labels, num_classes, "majority_labels")
    if not 0 <= min_ratio <= 1:  # (NaN too; 0: every cell its majority class)
        raise ConfigError(f"majority_labels' min_ratio must lie in [0, 1], got {min_ratio!r}")
    labels = labels.long()  # (one_hot takes int64)
    _b, h, w = labels.shape
    factor = max(1, h // size[0]), max(1, w // size[1])
    index = torch.where((labels >= 0) & (labels < num_classes), labels, num_classes)
    one_hot = F.one_hot(index, num_classes + 1).permute(0, 3, 1, 2).float()
    ratio = F.avg_pool2d(one_hot, kernel_size=factor, stride=factor)
    share, cls = ratio.max(1)
    cls = torch.where((share >= min_ratio) & (cls < num_classes), cls, ignore_index)
    if tuple(cls.shape[-2:]) != tuple(size):
        cls = F.interpolate(cls[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()
    return cls


@SharedForward
def source_forward(ctx: IterationContext) -> tuple[Any, list[Tensor]]:
    """One student pass over the source batch (the Task's ``forward_train``, drawing from the
    running term's stream): its output (logits; HRDA: an ``HRDAOutput``) and the encoder's
    feature maps (HRDA: of the context image), read by ``SharedSourceSupervision`` and
    ``FeatureDistance`` and back-propagated together."""
    if not hasattr(ctx.task, "forward_train") or not hasattr(ctx.task, "loss_from_logits"):
        raise ConfigError(
            f"the segmentation terms SharedSourceSupervision and FeatureDistance train through "
            f"a SegmentationTask's forward_train and loss_from_logits, which "
            f"{type(ctx.task).__name__} has not; remove them from the method (mic."
            "SourceSupervision is the source loss of every task)"
        )
    require_features(ctx.student, "the feature distance")
    return ctx.task.forward_train(  # type: ignore[attr-defined]
        ctx.student, ctx.source_images, ctx.rng, return_features=True
    )


class SharedSourceSupervision(LossTerm):
    """The source cross-entropy from ``source_forward``, the source pass that
    ``FeatureDistance`` also reads (use ``mic.SourceSupervision`` without it).

    Needs a model whose ``forward(x, return_features=True)`` returns the logits and the
    encoder's feature maps (every ``Segmenter``).

    Args:
        weight: the loss weight.
    """

    uses_target = False
    shared_forward = source_forward

    def forward(self, ctx: IterationContext) -> Tensor:
        logits, _ = source_forward(ctx)
        loss = ctx.task.loss_from_logits(logits, ctx.source_targets)  # type: ignore[attr-defined]
        return sum_parts(loss, None)


#: the iteration at which a feature distance that has counted no cell so far warns
EMPTY_CELLS_AFTER = 50


class FeatureDistance(LossTerm):
    """DAFormer's ImageNet feature distance: the L2 distance between the student's deepest
    encoder features (of ``source_forward``) and those of a frozen copy of the initial encoder
    (the ImageNet weights), averaged over the feature cells whose majority source class
    (covering >= ``min_ratio`` of the cell) is one of ``classes``. The frozen encoder sees the
    model's ``feature_input`` of the source images (HRDA: the context image, as published with
    ``feature_scale=0.5``); the cells' classes come from the full-resolution labels.

    The frozen copy is taken from the student the first time the loss runs (iteration 0,
    before any update) and travels with checkpoints. An empty mask gives 0; a term whose mask
    was empty in each of the first ``EMPTY_CELLS_AFTER`` iterations warns (at that iteration)
    that it does nothing (deep features too coarse for ``min_ratio``, or none of ``classes``).

    Args:
        weight: the loss weight (published 0.005).
        classes: the class ids whose cells count (published: Cityscapes' "thing" classes);
            None: every cell.
        min_ratio: the share of a cell its majority class must cover (published 0.75).
    """

    uses_target = False
    shared_forward = source_forward

    def __init__(
        self,
        weight: float = 0.005,
        classes: Sequence[int] | None = CITYSCAPES_THING_CLASSES,
        min_ratio: float = 0.75,
    ) -> None:
        super().__init__(weight)
        self.classes = list(classes) if classes is not None else None
        if self.classes == [] or not 0 <= float(min_ratio) <= 1:  # (the term did nothing)
            raise ConfigError(
                "feature distance: classes must name at least one class id (null: every "
                f"class) and min_ratio lie in [0, 1]; got classes={self.classes}, "
                f"min_ratio={min_ratio} (to switch the term off, give it weight 0)"
            )
        # on the loss's device with the method, not copied there every iteration
        self.register_buffer(
            "class_ids", torch.tensor(self.classes or [], dtype=torch.long), persistent=False
        )
        self.min_ratio = float(min_ratio)
        self._initial: list[nn.Module] = []  # not a submodule: never trained or moved by .to
        self._pending: dict[str, Tensor] | None = None
        # the cells counted so far (for the warning of a term that does nothing)
        self._cells: Tensor | float = 0.0
        self._last_cells: Tensor | float = 0.0

    def initial_encoder(self, student: nn.Module) -> nn.Module:
        """The frozen copy of the student's encoder (taken on the first call)."""
        if not self._initial:
            model = unwrap(student)
            encoder = getattr(model, "encoder", model)
            frozen = copy.deepcopy(encoder).requires_grad_(False).eval()
            if self._pending is not None:
                frozen.load_state_dict(self._pending)
                self._pending = None
            self._initial.append(frozen)
        return self._initial[0]

    def get_extra_state(self) -> Any:
        if self._initial:
            return {k: v.detach().clone() for k, v in self._initial[0].state_dict().items()}
        return self._pending or {}

    def set_extra_state(self, state: Any) -> None:
        self._pending = dict(state) if state else None
        if self._initial and self._pending is not None:
            self._initial[0].load_state_dict(self._pending)
            self._pending = None

    def check_task(self, task: Any) -> None:
        """Refuse ``classes`` outside the task's (``mic-train`` asks before reading data; the
        loop at the first iteration).

        Raises:
            ConfigError: a class id outside [0, task.num_classes).
        """
        outside = [c for c in self.classes or [] if not 0 <= c < task.num_classes]
        if outside:
            raise ConfigError(
                f"the feature distance's classes {self.classes} include {outside}, outside the "
                f"task's {task.num_classes} classes (its default is Cityscapes' thing "
                "classes): give your dataset's thing class ids (FeatureDistance(classes=...); "
                "mic-train: dataset.thing_classes=[...], +dataset.thing_classes=[...] where the "
                "dataset config has none)"
            )

    def forward(self, ctx: IterationContext) -> Tensor:
        self.check_task(ctx.task)
        _, features = source_forward(ctx)
        loss = self.distance(
            ctx.student, ctx.source_images, features[-1], ctx.source_targets, ctx.task.num_classes
        )
        if ctx.step < EMPTY_CELLS_AFTER:  # one host sync, at EMPTY_CELLS_AFTER
            self._cells = self._cells + self._last_cells
        elif ctx.step == EMPTY_CELLS_AFTER and self.classes and not float(self._cells):
            self._cells = 1.0  # warned (once, also with several micro-batches)
            warnings.warn(
                f"the feature distance counted no feature cell in the first {EMPTY_CELLS_AFTER} "
                f"iterations: no cell of the student's deepest features "
                f"({'x'.join(str(n) for n in features[-1].shape[-2:])} per image) has one of the "
                f"classes {self.classes} covering min_ratio={self.min_ratio} of it, so the loss is "
                "0 and the term does nothing; lower min_ratio, widen classes (null: every cell) "
                "or remove the term",
                stacklevel=1,
            )
        return loss

    def distance(
        self, student: nn.Module, images: Tensor, features: Tensor, labels: Tensor, num_classes: int
    ) -> Tensor:
        """The distance of ``features`` (B x C x h x w, the student's deepest) to the
        frozen encoder's on ``images`` (B x 3 x H x W, passed through the student's
        ``feature_input`` if it has one), over the cells of ``labels`` (B x H x W)."""
        encoder = self.initial_encoder(student)
        feature_input = getattr(unwrap(student), "feature_input", None)
        with torch.no_grad():
            encoder.eval()
            out = encoder(feature_input(images) if feature_input is not None else images)
            reference = (out[-1] if isinstance(out, (list, tuple)) else out).detach()
        distance = torch.norm(features.float() - reference.float(), p=2, dim=1)
        if self.classes is None:
            return distance.mean()
        cells = majority_labels(labels, distance.shape[-2:], num_classes, self.min_ratio)
        mask = torch.isin(cells, self.class_ids.to(cells.device)).float()
        self._last_cells = mask.sum().detach()
        return (distance * mask).sum() / mask.sum().clamp_min(1.0)


class SegmentationMIC(MaskedImageConsistency):
    """MIC with the published choice of which images are masked.

    Args:
        masker: the block masker (its augmentation: published on for the target-only mode
            ``separatetrgaug``, off for the source + target mode ``separate``).
        images: ``"target"``: the whole target batch against its pseudo-labels (published for
            GTA and SYNTHIA), exactly ``MaskedImageConsistency``; ``"source+target"``: the
            first source image with its labels (weight 1) and the first target image with its
            pseudo-labels (published for Cityscapes -> ACDC and -> Dark Zurich), through the
            same ``ConsistencyLoss.loss``.
        weighting, tau, weight: as in ``MaskedImageConsistency`` (``weight`` is lambda).
        unscaled_parts: named parts of the Task's loss that lambda leaves unscaled (default
            none: lambda scales the whole masked loss). ``["detail"]`` reproduces the
            published HRDA + MIC code, which multiplies only the fused part by lambda
            (``masked_loss['decode.loss_seg'] *= self.mask_lambda``); the two agree at the
            published lambda = 1.

    Raises:
        ConfigError: an unknown ``images`` mode, ``unscaled_parts`` given as text or with
            lambda = 0 (switch MIC off with ``mic=none`` instead), a weight that is no finite
            number >= 0, and what ``mic.MaskedImageConsistency`` refuses.
    """

    def __init__(
        self,
        masker: Masker,
        images: Literal["target", "source+target"] = "target",
        weighting: WeightingMode = "quality",
        tau: float = QUALITY_THRESHOLD,
        weight: float = 1.0,
        unscaled_parts: Sequence[str] = (),
    ) -> None:
        if isinstance(unscaled_parts, str):  # list("fd") would be its letters
            raise ConfigError(
                f"MIC's unscaled_parts is a list of part names, got the text {unscaled_parts!r}:"
                f" write [{unscaled_parts}]"
            )
        unscaled = list(unscaled_parts)
        weight = loss_weight(self, weight)  # (no number: named before 1 / weight below)
        if unscaled and weight == 0:
            raise ConfigError(
                f"MIC's lambda (weight) is 0 but unscaled_parts {unscaled} would still train "
                "on the masked images; switch MIC off with mic=none, or set unscaled_parts=[]"
            )
        # ConsistencyLoss scales every part by lambda; a part lambda leaves alone is weighted
        # 1 / lambda before that
        part_weights = {name: 1.0 / float(weight) for name in unscaled}
        super().__init__(masker, weighting, tau, weight, part_weights)
        if images not in ("target", "source+target"):
            raise ConfigError(f"MIC images must be 'target' or 'source+target', got {images!r}")
        self.images = images
        self.unscaled_parts = unscaled
        self.parts_setting = "MIC's unscaled_parts (method.terms.mic.unscaled_parts)"
        #: the last call's quality weight ``q`` and mean confidence, for logs
        self.statistics: dict[str, Tensor] = {}

    def forward(self, ctx: IterationContext) -> Tensor:
        pseudo = ctx.pseudo_labels
        self.statistics = self.weighting.statistics(pseudo.confidence)
        if self.images == "target":
            return super().forward(ctx)
        weights = self.weighting(pseudo, q=ctx.quality(self.weighting))  # the whole batch's q
        images = torch.cat([ctx.source_images[:1], ctx.target_images[:1]])
        labels = torch.cat([ctx.source_targets[:1], pseudo.labels[:1]])
        pixel_weights = torch.cat([torch.ones_like(weights[:1]), weights[:1]])  # type: ignore[index]
        mixed = PseudoLabels(labels, confidence=pixel_weights)
        return self.loss(ctx.student, ctx.task, images, mixed, ctx.rng, pixel_weights)


__all__ = [
    "ClassMix",
    "FeatureDistance",
    "SegmentationMIC",
    "SharedSourceSupervision",
    "class_mix_masks",
    "majority_labels",
    "source_forward",
]
