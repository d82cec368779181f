"""The detection Task: losses computed inside the detector, per-box weights, pseudo-boxes."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mic.core import ConfigError, DatasetError, PseudoLabels, Task
from mic.core.batch import collate_pairs
from mic.core.streams import Random
from mic.core.task import Metric
from mic.core.teacher import unwrap
from mic.datasets.detection.targets import batch_images, check_target, image_size
from mic.datasets.preflight import PIXEL_VALUE_LIMIT
from mic.tasks.common import check_class_datasets, check_whole, lazy_metrics
from mic.tasks.detection.model import LOSS_PARTS, images_device, sampling_from
from mic.training.batches import (
    plain_samples,
    require_float32_images,
    require_images,
    require_targets,
)

#: below this, images in [0, 1] have been normalised (ImageNet's statistics give about -2.1);
#: a resize's overshoot stays far above it
NORMALISED_BELOW = -0.5

Detections = list[dict[str, Tensor]]


class DetectionTask(Task):
    """Object detection with a ``FasterRCNN`` or ``Detectron2RCNN`` (or any model with their
    interface).

    - ``loss``: the detector's four named losses (``rpn_objectness``, ``rpn_box``,
      ``roi_classifier``, ``roi_box``); per-box weights go into the targets as ``weights``,
      where the detector's heads apply them to the samples matched to each box.
    - ``predict``: post-processed boxes (eval mode).
    - ``pseudo_label``: boxes with score >= ``score_threshold`` become pseudo-boxes, their
      scores the confidence; images without a pseudo-box are left out of consistency terms.
      With ``ignore_threshold``, the boxes with a score in [ignore_threshold,
      score_threshold) become ``ignore_boxes``: the detector's samples near them (RPN: IoU
      >= 0.3, ROI heads: IoU >= 0.5) that would be background weigh 0, so an object the
      teacher is unsure of is not taught as background.

    Args:
        num_classes: foreground classes (class ids 0 .. num_classes - 1).
        score_threshold: the pseudo-label score threshold (published 0.8).
        ignore_threshold: the lowest score of an ignore box; None (default, as published):
            no ignore boxes, every sample matched to no pseudo-box is background.
        class_names: names for reports (default: the ids).
        primary_metric: ``map_50`` (published) or ``map`` (COCO AP).

    Raises:
        ConfigError: (at construction) thresholds that are no numbers, a score threshold
            outside [0, 1], an ignore threshold outside [0, score_threshold), an unknown
            primary metric; (in use) a detector in the wrong mode for the call (losses from
            a training-mode model, detections from an eval-mode one), one of another class
            count, one that returns other loss parts than mic's (torchvision's own
            ``fasterrcnn_*``: use ``mic.tasks.detection.FasterRCNN``).
        DatasetError: class names of another count than ``num_classes``; targets or weights
            of another count than the images, class ids outside the classes; images that are no
            B x 3 x H x W batch or list of 3 x H x W float images in [0, 1].
    """

    #: one target dict per image: a test batch of another count is refused (``check_pairs``)
    targets_per_image = True

    def __init__(
        self,
        num_classes: int,
        score_threshold: float = 0.8,
        class_names: Sequence[str] | None = None,
        primary_metric: str = "map_50",
        ignore_threshold: float | None = None,
    ) -> None:
        check_whole("num_classes", num_classes, 1, "detection needs at least 1 class")
        thresholds = {"score_threshold": score_threshold, "ignore_threshold": ignore_threshold}
        for name, value in thresholds.items():
            optional = value is None and name == "ignore_threshold"
            if not optional and (isinstance(value, bool) or not isinstance(value, Real)):
                raise ConfigError(f"task.{name} must be a number, got {value!r}")
        if not 0.0 <= score_threshold <= 1.0:
            raise ConfigError(f"task.score_threshold must lie in [0, 1], got {score_threshold}")
        if ignore_threshold is not None and not 0.0 <= ignore_threshold < score_threshold:
            raise ConfigError(
                f"task.ignore_threshold must be null or lie in [0, task.score_threshold = "
                f"{score_threshold}), got {ignore_threshold}"
            )
        if primary_metric not in ("map_50", "map"):
            raise ConfigError(
                f"task.primary_metric must be 'map_50' or 'map', got {primary_metric!r}"
            )
        self.num_classes = int(num_classes)
        self.score_threshold = float(score_threshold)
        self.ignore_threshold = None if ignore_threshold is None else float(ignore_threshold)
        names = list(class_names) if class_names else [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise DatasetError(  # (mic-train: either count may be the one set by hand)
                f"class counts disagree: the class names (task.class_names, from the "
                f"dataset's classes) list {len(names)} classes but task.num_classes is "
                f"{self.num_classes}; give both one count: {len(names)} classes "
                f"(dataset.num_classes={len(names)}, task.num_classes left to follow it), or "
                f"{self.num_classes} names in dataset.classes"
            )
        self.class_names = names
        self.primary_metric = primary_metric
        self._range_checked = False
        self._range_warned: set[str] = set()  # the kinds of pixel range warned of

    def loss(
        self,
        model: nn.Module,
        images: Tensor | list[Tensor],
        targets: list[dict[str, Tensor]],
        weights: list[Tensor] | None = None,
        rng: Random = None,
    ) -> dict[str, Tensor]:
        """The detector's losses on labelled (or pseudo-labelled) images, each box weighted.

        Args:
            model: a ``FasterRCNN`` or ``Detectron2RCNN`` in training mode.
            images: (B, 3, H, W) float images in [0, 1], or a list of (3, H, W) ones of
                different sizes (the model resizes and normalises them).
            targets: per image a dict of ``boxes`` (N x 4 float, x1 y1 x2 y2 pixels) and
                ``labels`` (N int64 class ids in [0, num_classes)), and optionally
                ``ignore_boxes`` (M x 4: regions trained as neither object nor background).
            weights: per image one weight per box (N float), or None: weight 1.
            rng: the calling term's ``RandomStream``, which seeds the detector's sampling of
                anchors and proposals (``sampling_from``); a ``torch.Generator`` or None:
                the sampling draws from torch's global generators as they are.

        Returns:
            The loss parts by name (``LOSS_PARTS``: ``rpn_objectness``, ``rpn_box``,
            ``roi_classifier``, ``roi_box``), each a 0-d float tensor.

        Raises:
            ConfigError, DatasetError: what the class's Raises section names.
        """
        self._check_inputs(model, images)
        require_targets(targets)
        if not isinstance(targets, (list, tuple)) or not all(
            isinstance(t, dict) and {"boxes", "labels"} <= set(t) for t in targets
        ):  # (a batched dict, a tensor of boxes per image: the detector's TypeError)
            self.check_targets(targets)  # names what is wrong
        n = self.count(images)
        for what, given in (("targets", targets), ("weights", weights)):
            if given is not None and len(given) != n:  # (torchvision's IndexError, zip's)
                raise DatasetError(
                    f"DetectionTask.loss got {len(given)} {what} for {n} images: one per image"
                )
        self._check_class_ids(targets, images)
        if weights is not None:
            targets = [{**t, "weights": w} for t, w in zip(targets, weights, strict=True)]
        with sampling_from(rng, images_device(images)):
            losses = model(images, targets)
        if not isinstance(losses, dict):  # detections: the model is in eval mode
            raise ConfigError(
                f"{type(model).__name__} returned detections, not losses: it is in eval "
                "mode; call model.train() before computing a loss"
            )
        missing = [k for k in LOSS_PARTS if k not in losses]
        if missing:
            raise ConfigError(
                f"the detector {type(model).__module__}.{type(model).__name__} returned losses "
                f"{sorted(losses)} without "
                f"mic's parts {missing}: DetectionTask trains mic.tasks.detection.FasterRCNN "
                "or Detectron2RCNN (torchvision's own detectors take no per-box weights)"
            )
        return {k: losses[k] for k in LOSS_PARTS}

    def _check_class_ids(self, targets: list[dict[str, Tensor]], images: Any) -> None:
        """``check_targets`` where a class id lies outside [0, num_classes) (one
        synchronisation): batches that did not pass ``collate`` (a loader's own collate_fn)
        gave detectron2 the id num_classes, its background, trained without a word, and
        torchvision an IndexError naming id + 1."""
        ids = [t["labels"] for t in targets]
        if not all(isinstance(i, Tensor) and not i.is_floating_point() for i in ids):
            self.check_targets(targets, images)  # (names the labels' type)
        ids = [i.reshape(-1) for i in ids if i.numel()]
        every = torch.cat(ids) if ids else None
        if every is not None and bool(((every < 0) | (every >= self.num_classes)).any()):
            self.check_targets(targets, images)

    def predict(self, model: nn.Module, images: Tensor | list[Tensor]) -> Detections:
        """The detections of ``model`` (in eval mode) on ``images``: per image a dict of
        ``boxes`` (N x 4 float32, x1 y1 x2 y2 pixels), ``labels`` (N int64) and ``scores``
        (N float32), also under bf16 or fp16 autocast (the teacher's pseudo-boxes).

        Raises:
            ConfigError: a model of another class count than the task, or one in training
                mode (which returns losses, not detections).
            DatasetError: images that are not a B x 3 x H x W batch or a list of 3 x H x W
                float images.
        """
        self._check_inputs(model, images)
        out = model(images)
        if isinstance(out, dict):
            raise ConfigError(
                f"{type(model).__name__} returned {'losses' if out else 'an empty dict'}, not "
                "detections: a detector in training mode does; call model.eval() before "
                "predicting (mic's evaluation and teachers do)"
            )
        return [{k: _float32(v) for k, v in d.items()} for d in out]

    def _check_inputs(self, model: nn.Module, images: Any) -> None:
        """Refuse what the detectors would take silently or with torch's errors: a model of
        another class count, a single image or a batch of another rank, images that are not
        float (uint8, NumPy); warn once of colour values beyond [0, 1] (0..255)."""
        inner = unwrap(model)
        classes = getattr(inner, "num_classes", None)
        if isinstance(classes, int) and classes != self.num_classes:
            raise ConfigError(
                f"the model predicts {classes} classes but the task has {self.num_classes}: "
                "give both the dataset's number of classes (mic-train: model.num_classes "
                f"follows dataset.num_classes; in Python: num_classes={self.num_classes})"
            )
        require_images(images, allow_list=True)
        first = images[0] if isinstance(images, (list, tuple)) and images else images
        shape = tuple(images.shape) if isinstance(images, Tensor) else None
        if shape is not None and len(shape) != 4:
            raise DatasetError(
                f"detection takes a B x 3 x H x W batch or a list of 3 x H x W images, got a "
                f"tensor of shape {shape}: for one image give image[None] or [image]"
            )
        if not isinstance(first, Tensor) or not first.is_floating_point():
            got = f"{first.dtype} tensors" if isinstance(first, Tensor) else type(first).__name__
            raise DatasetError(
                f"detection takes float images in [0, 1], got {got}: convert them (e.g. "
                "torchvision's ToTensor, or torch.from_numpy(x).permute(2, 0, 1).float() / 255)"
            )
        if not self._range_checked:  # once here: a host synchronisation (collate: each batch)
            self._range_checked = True
            self._warn_of_pixel_range(first)
            self._warn_of_score_floor(getattr(inner, "box_score_thresh", None))

    def _warn_of_score_floor(self, floor: Any) -> None:
        """Warn when a pseudo-label threshold lies below the lowest score the model predicts
        (its ``box_score_thresh``): boxes under that floor never reach ``pseudo_label``."""
        if not isinstance(floor, float):  # (a detector of one's own may not say)
            return
        given = {"score_threshold": self.score_threshold, "ignore_threshold": self.ignore_threshold}
        below = {k: v for k, v in given.items() if v is not None and v < floor}
        if below:
            said = " and ".join(f"task.{k}={v:g}" for k, v in below.items())
            warnings.warn(
                f"{said} {'lie' if len(below) > 1 else 'lies'} below the model's "
                f"box_score_thresh={floor:g}, the lowest score "
                f"its post-processing keeps: no teacher box scored below {floor:g} reaches "
                "the pseudo-labels; lower model.box_score_thresh as well (or raise the "
                "threshold to it)",
                stacklevel=4,
            )

    def _warn_of_pixel_range(self, images: Tensor | list[Tensor]) -> None:
        """Warn (once per kind) of images outside [0, 1]: pixel values in 0..255, or images
        normalised already (which the detector would normalise again)."""
        listed = images if isinstance(images, (list, tuple)) else [images]
        parts = [x.detach() for x in listed if isinstance(x, Tensor) and x.numel()]
        if not parts:
            return
        top = max(float(x.amax()) for x in parts)
        low = min(float(x.amin()) for x in parts)
        found = {
            "high": (top > PIXEL_VALUE_LIMIT, f"reach {top:.0f}: divide images in 0..255 by 255"),
            "low": (
                low < NORMALISED_BELOW,
                f"go down to {low:.2f}: give them unnormalised (drop Normalize from the transform)",
            ),
        }
        for kind, (bad, what) in found.items():
            if bad and kind not in self._range_warned:
                self._range_warned.add(kind)
                warnings.warn(
                    f"the detector's images {what}; detection models take images in [0, 1] "
                    "and normalise them themselves",
                    stacklevel=4,
                )

    def pseudo_label(self, prediction: Detections) -> PseudoLabels:
        """The teacher's detections as pseudo-boxes: those scored >= ``score_threshold``.

        Args:
            prediction: ``predict``'s detections, per image a dict of ``boxes``, ``labels``
                and ``scores``.

        Returns:
            ``PseudoLabels``: labels, per image a dict of ``boxes`` (N x 4) and ``labels``
            (N int64), with ``ignore_boxes`` (the boxes scored in [ignore_threshold,
            score_threshold)) where ``ignore_threshold`` is set; confidence, per image the
            kept boxes' scores (N float); keep, per image whether any box was kept (the
            images without one are left out of the loss).
        """
        labels, confidence = [], []
        for p in prediction:
            keep = p["scores"] >= self.score_threshold
            label = {"boxes": p["boxes"][keep].detach(), "labels": p["labels"][keep]}
            if self.ignore_threshold is not None:
                unsure = (p["scores"] >= self.ignore_threshold) & ~keep
                label["ignore_boxes"] = p["boxes"][unsure].detach()
            labels.append(label)
            confidence.append(p["scores"][keep].detach())
        return PseudoLabels(labels, confidence, keep=[len(c) > 0 for c in confidence])

    def class_probabilities(
        self, prediction: Detections, samples_per_image: int | None = None, rng: Random = None
    ) -> Tensor:
        """What the label-free validators read (``mic.training.validators``): one row per
        detected box over the classes and the background, the box's score on its class and
        1 - score on the background (post-processed boxes keep no other class
        probabilities); at most ``samples_per_image`` top-scoring boxes per image (None: all).

        Returns:
            N x (num_classes + 1) float32, N the number of boxes kept (0 without any).
        """
        rows = []
        for p in prediction:
            scores, labels = p["scores"].float(), p["labels"]
            if samples_per_image is not None:
                top = scores.argsort(descending=True)[:samples_per_image]
                scores, labels = scores[top], labels[top]
            row = scores.new_zeros(len(scores), self.num_classes + 1)
            row[torch.arange(len(scores), device=row.device), labels] = scores
            row[:, -1] = 1 - scores
            rows.append(row)
        return torch.cat(rows) if rows else torch.zeros(0, self.num_classes + 1)

    def metric(self) -> Metric:
        """A fresh ``DetectionMetrics`` (mic.tasks.detection.metrics)."""
        from mic.tasks.detection.metrics import DetectionMetrics

        return DetectionMetrics(self.num_classes)

    def check_targets(self, targets: Any, images: Any = None) -> None:
        """Each target's format, classes and boxes (against its image's size when the
        images are given)."""
        if not isinstance(targets, (list, tuple)):
            raise DatasetError(
                f"detection targets must be a list of dicts (one per image), got "
                f"{type(targets).__name__}"
            )
        for i, t in enumerate(targets):
            size = None if images is None else image_size(images[i])
            check_target(t, self.num_classes, size, f"the target of batch item {i}")

    def collate(self, samples: list[Any]) -> Any:
        """``(images, targets)``: images a tensor, or a list when sizes differ; targets a list
        of dicts checked against their image, or None for unlabelled samples (a pair either
        way: a list of two images of different sizes would read as an image and a target).
        A ``(image,)`` 1-tuple (``TensorDataset(x)``) is an image alone.

        Raises:
            DatasetError: a sample that is a dict or has more than 2 items, float64 images,
                or bad targets.
        """
        images, targets = collate_pairs(plain_samples(samples), batch_images, list)
        require_images(images, allow_list=True)  # channels last: named before the boxes
        require_float32_images(images)
        self._warn_of_pixel_range(images)  # every batch: on the CPU, no synchronisation
        if targets is not None:
            self.check_targets(targets, images)
        return images, targets

    def check_datasets(self, datasets: Mapping[str, Any]) -> None:
        """``check_class_datasets`` with ``class_names`` (the ids by default: no order set);
        those then named as the test set names its classes, else the source (a run without
        a test set names them as the source's json does).

        Raises:
            DatasetError: another class count, or the class names in another order.
        """
        self.class_names = check_class_datasets(
            datasets,
            self.num_classes,
            self.class_names,
            [str(i) for i in range(self.num_classes)],
            "fix the datasets (a COCO json's categories or a VOC reader's classes set theirs)",
        )

    def report_hooks(self, run_dir: Path | None, test: Iterable[Any] | None) -> list[Any]:
        """Box drawings and the per-class AP table at each evaluation, the classes named as
        the test dataset names them (a COCO json's categories) unless names were given."""
        from mic.tasks.detection.report import DetectionReport

        named = getattr(getattr(test, "dataset", test), "classes", None)
        default = [str(i) for i in range(self.num_classes)]
        if self.class_names == default and named is not None and len(named) == self.num_classes:
            self.class_names = [str(n) for n in named]
        return [DetectionReport(self, test, run_dir)] if test is not None else []


def _float32(value: Any) -> Any:
    """A floating tensor as float32 (boxes and scores under autocast), anything else as is."""
    return value.float() if isinstance(value, Tensor) and value.is_floating_point() else value


# DetectionMetrics on first use (mic.tasks.common.lazy_metrics)
__getattr__, __dir__ = lazy_metrics(__name__, "DetectionMetrics", "mic.tasks.detection.metrics")
