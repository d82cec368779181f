"""The semantic segmentation Task: per-pixel weighted cross-entropy, whole-image or sliding-
window inference, argmax pseudo-labels with per-pixel confidence and zero-weight margins,
and confusion-matrix mIoU; and HRDA's variant, whose loss draws a detail crop and weighs the
fused and detail predictions."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mic.core import ConfigError, DatasetError, PseudoLabels, Task
from mic.core.errors import is_whole
from mic.core.streams import Random, uniform
from mic.core.task import Metric
from mic.core.teacher import unwrap
from mic.datasets.segmentation.labels import (
    CITYSCAPES_PALETTE,
    PROTOCOLS,
    default_class_names,
)
from mic.functional import weighted_cross_entropy
from mic.tasks.common import (
    check_class_datasets,
    check_class_probabilities,
    check_flag,
    check_image_dtype,
    check_whole,
    lazy_metrics,
    predicting,
)
from mic.tasks.segmentation.models.hrda import HRDA, HRDAOutput, crop_per_image, detail_crop_boxes
from mic.training.batches import (
    plain_samples,
    require_images,
    require_targets,
    with_int64_labels,
)


def warn_of_another_aspect(image: tuple[int, int], label: tuple[int, int]) -> None:
    """Warn when label maps (h x w) have another aspect ratio than their images (H x W),
    beyond a scale's rounding: predictions are resized to the label's size, which is right
    when both show the same view (an image resized alone), wrong when one was cropped."""
    (big_h, big_w), (h, w) = image, label
    scale_h, scale_w = h / big_h, w / big_w
    if abs(scale_h - scale_w) <= max(scale_h, scale_w) * (1 / big_h + 1 / big_w):
        return
    warnings.warn(
        f"label maps of {h} x {w} against images of {big_h} x {big_w} (another aspect "
        "ratio): predictions are resized to the labels' size, which is right only when "
        "both show the same view; a transform that crops or pads the image alone (or the "
        "label alone) misaligns them: apply it to both",
        stacklevel=3,
    )


def resize_logits(logits: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize (align_corners=False, as DAFormer) to ``size`` when it differs."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def label_outside(targets: Tensor, num_classes: int, ignore_index: int) -> int | None:
    """The first label of ``targets`` outside [0, num_classes) that is not ``ignore_index``
    (a host synchronisation), None where there is none."""
    bad = ((targets >= num_classes) | (targets < 0)) & (targets != ignore_index)
    return int(targets[bad][0]) if bad.any() else None


def _require_batch(images: Any) -> None:
    """Refuse what is no (B, C, H, W) float tensor (``require_images``'s checks, then a NumPy
    array, a single C x H x W image or integer pixels, which ended in torch's errors).

    Raises:
        DatasetError: naming what was given and how to make a batch of it.
    """
    require_images(images)
    if not isinstance(images, Tensor):
        raise DatasetError(
            f"segmentation takes a B x C x H x W float tensor, got {type(images).__name__}: "
            "convert it (torch.from_numpy(x), with channels first)"
        )
    if images.ndim != 4:
        raise DatasetError(
            f"segmentation takes a B x C x H x W batch, got a tensor of shape "
            f"{tuple(images.shape)}: for one image give image[None]"
        )
    if not images.is_floating_point():
        raise DatasetError(
            f"segmentation takes float images, got {images.dtype}: transform them as the "
            "training images were (e.g. torchvision's ToTensor, then Normalize with the same "
            "mean and std)"
        )


class SegmentationTask(Task):
    """Semantic segmentation.

    Args:
        num_classes: classes the model predicts.
        ignore_index: label of pixels without a class (255).
        protocol: which classes ``miou`` averages: ``"all"``, ``"cityscapes19"``,
            ``"synthia16"``, ``"synthia13"`` (the last three for the 19 Cityscapes classes),
            or a list of class indices.
        inference: ``"whole"`` (one forward per image, DAFormer) or ``"slide"`` (windows of
            ``crop_size`` every ``stride`` pixels, logits averaged where they overlap, HRDA).
        crop_size, stride: the sliding windows (height, width).
        flip: also predict on the mirrored image and average the class probabilities.
        pseudo_label_margins: ``(top, bottom, left, right)`` pixels of every target image
            whose pseudo-labels weigh 0 (DAFormer: 15 rows at the top and 120 at the bottom
            of Cityscapes crops, where rectification artefacts and the ego car sit).
        classes: class names (the per-class IoU table, visualisations).
        palette: one RGB colour per class for visualisations (Cityscapes' by default).
        visualize: how many test images are drawn (input, prediction, label) at every
            evaluation into ``<run>/predictions/`` (0: none).

    Raises:
        ConfigError: (at construction) an ``ignore_index`` inside the classes, an unknown
            protocol or one of the 19 Cityscapes classes for another class count, an unknown
            inference mode, windows without ``inference="slide"`` or missing with it, window
            sizes or a stride that are no positive pixel counts (or a stride above the
            window), margins that are no four counts >= 0, class names or palette colours of
            another count than the classes; (in use) a model output that is no B x C x h x w
            tensor of ``num_classes`` scores.
        DatasetError: labels that are no B x H x W integer maps or hold ids outside the
            classes (``check_targets``), data sets of another class count or order; (in
            ``loss``) another count of label maps than images, images of a dtype the model
            cannot take (``check_image_dtype``).

    Warns:
        UserWarning: label maps of another aspect ratio than their images (``collate`` and
            ``loss``: predictions are resized to the labels' size).
    """

    primary_metric = "miou"
    #: one label map per image: a test batch of another count is refused (``check_pairs``)
    targets_per_image = True

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        protocol: str | Sequence[int] = "all",
        inference: str = "whole",
        crop_size: Sequence[int] | None = None,
        stride: Sequence[int] | None = None,
        flip: bool = False,
        pseudo_label_margins: Sequence[int] = (0, 0, 0, 0),
        classes: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        visualize: int = 4,
    ) -> None:
        check_whole("num_classes", num_classes, 2, "segmentation needs at least 2 classes")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        if 0 <= self.ignore_index < self.num_classes:
            raise ConfigError(
                f"task.ignore_index={self.ignore_index} is one of the classes [0, "
                f"{self.num_classes - 1}]: the label of pixels without a class must lie outside "
                "them (255 as Cityscapes' training ids, or a negative value such as -1)"
            )
        if isinstance(protocol, str):
            if protocol == "all":
                self.eval_classes = None
            elif protocol in PROTOCOLS:
                if self.num_classes != 19:
                    raise ConfigError(
                        f"protocol '{protocol}' is defined on the 19 Cityscapes classes, but the "
                        f"task has {self.num_classes}; use protocol='all' (mic-train: "
                        "dataset.protocol=all)"
                    )
                self.eval_classes = list(PROTOCOLS[protocol])
            else:
                raise ConfigError(
                    f"task.protocol must be 'all', {sorted(PROTOCOLS)} or a list of classes, "
                    f"got {protocol!r}"
                )
        else:
            self.eval_classes = [int(c) for c in protocol]
            if not self.eval_classes or any(
                not 0 <= c < self.num_classes for c in self.eval_classes
            ):  # (none: the mIoU of no class, NaN)
                raise ConfigError(
                    f"task.protocol must list classes in [0, {self.num_classes - 1}] (at least "
                    f"one), got {list(protocol)}"
                )
        if inference not in ("whole", "slide"):
            raise ConfigError(f"task.inference must be 'whole' or 'slide', got {inference!r}")
        if inference == "slide" and (crop_size is None or stride is None):
            raise ConfigError("sliding-window inference needs task.crop_size and task.stride")
        if inference == "whole" and (crop_size is not None or stride is not None):
            warnings.warn(  # (a window asked for, whole images predicted)
                "task.crop_size and task.stride are the windows of task.inference=slide; with "
                "inference=whole each image is predicted whole and they change nothing (set "
                "task.inference=slide to predict in windows)",
                stacklevel=2,
            )
        self.inference = inference
        self.crop_size = tuple(int(s) for s in crop_size) if crop_size is not None else None
        self.stride = tuple(int(s) for s in stride) if stride is not None else None
        if self.crop_size is not None and (len(self.crop_size) != 2 or min(self.crop_size) < 1):
            raise ConfigError(
                f"task.crop_size must be two positive pixel counts [height, width], got "
                f"{list(self.crop_size)}"
            )
        if self.stride is not None and len(self.stride) != 2:  # (unpacked when sliding)
            raise ConfigError(
                f"task.stride must be two positive pixel counts [height, width], got "
                f"{list(self.stride)}"
            )
        if (
            self.crop_size
            and self.stride
            and any(s > c or s < 1 for s, c in zip(self.stride, self.crop_size, strict=True))
        ):
            raise ConfigError(
                f"task.stride {list(self.stride)} must be between 1 and task.crop_size "
                f"{list(self.crop_size)}: a larger stride leaves pixels no window covers"
            )
        self.flip = check_flag("flip", flip)
        margins = tuple(int(m) for m in pseudo_label_margins)
        if len(margins) != 4 or min(margins) < 0:
            raise ConfigError(
                "task.pseudo_label_margins must be four non-negative pixel counts "
                f"(top, bottom, left, right), got {list(pseudo_label_margins)}"
            )
        self.margins = margins
        self.classes = (
            list(classes) if classes is not None else default_class_names(self.num_classes)
        )
        if len(self.classes) != self.num_classes:
            raise ConfigError(
                f"task.classes names {len(self.classes)} classes but task.num_classes is "
                f"{self.num_classes}: give one name per class (mic-train: dataset.classes and "
                "dataset.num_classes, which the task reads, must agree)"
            )
        self.palette = [tuple(c) for c in (palette or CITYSCAPES_PALETTE)]
        rgb = all(len(c) == 3 and all(is_whole(v, 0) and v <= 255 for v in c) for c in self.palette)
        short = palette is not None and len(self.palette) < self.num_classes  # the rest: black
        if not rgb or short:
            raise ConfigError(
                f"the palette (dataset.palette) gives {len(self.palette)} colours for "
                f"{self.num_classes} classes: give one [r, g, b] per class, each in 0..255"
            )
        check_whole("task.visualize", visualize, least=0, what="test images drawn")
        self.visualize = int(visualize)

    # ------------------------------------------------------------------------- training
    def check_logits(self, logits: Tensor) -> None:
        if not isinstance(logits, Tensor) or logits.ndim != 4:
            raise ConfigError(
                "a segmentation model must return B x C x h x w class scores (a tensor), got "
                + (
                    f"a tensor of shape {tuple(logits.shape)}"
                    if isinstance(logits, Tensor)
                    else f"a {type(logits).__name__}"
                )
                + ": wrap a model that returns a dict or tuple (e.g. torchvision's "
                "{'out': ...}) in a module whose forward returns the class scores"
            )
        if logits.shape[1] != self.num_classes and logits.shape[-1] == self.num_classes:
            raise ConfigError(
                f"the model returns class scores of shape {tuple(logits.shape)}, the classes "
                "last (B x h x w x C): a segmentation model returns B x C x h x w; permute "
                "them in its forward (.permute(0, 3, 1, 2))"
            )
        if logits.shape[1] != self.num_classes:
            raise ConfigError(
                f"the model predicts {logits.shape[1]} classes but the task (dataset) has "
                f"{self.num_classes}; set model.num_classes to ${{dataset.num_classes}} (in "
                f"Python: build the model with num_classes={self.num_classes})"
            )

    def loss_from_logits(
        self, logits: Tensor, targets: Tensor, weights: Tensor | None = None
    ) -> Tensor:
        """Weighted cross-entropy of logits (upsampled to the labels' size) against labels.

        Raises:
            DatasetError: on the CPU, a label outside the classes (``check_targets``; on a GPU
                ``collate`` checks them, where that costs no device synchronisation).
        """
        self.check_logits(logits)
        if isinstance(targets, Tensor) and targets.device.type == "cpu":
            self.check_targets(targets)  # (torch's IndexError "Target 5 is out of bounds")
        logits = resize_logits(logits, targets.shape[-2:])
        return weighted_cross_entropy(logits, targets, weights, ignore_index=self.ignore_index)

    def forward_train(
        self, model: nn.Module, images: Tensor, rng: Random = None, return_features: bool = False
    ) -> Any:
        """The model's training forward pass, whose output ``loss_from_logits`` scores.

        Args:
            model: the model in training mode.
            images: (B, C, H, W) float (C = 3 for mic's models; any C the model takes).
            rng: the calling term's random stream (unused here; HRDA draws its crops from it).
            return_features: also return the encoder's features (``model(x,
                return_features=True)``).

        Returns:
            logits (B, C, h, w), or ``(logits, features)``.

        Raises:
            ConfigError: the model is an ``HRDA`` (it trains through ``HRDASegmentationTask``,
                which draws its detail crops).
        """
        if isinstance(unwrap(model), HRDA):
            raise ConfigError(
                "the model is HRDA, which trains with its detail crops through "
                "HRDASegmentationTask: set task=segmentation_hrda (or build "
                "HRDASegmentationTask in Python)"
            )
        return model(images, return_features=True) if return_features else model(images)

    def loss(
        self,
        model: nn.Module,
        images: Tensor,
        targets: Tensor,
        weights: Tensor | None = None,
        rng: Random = None,
    ) -> Any:
        require_images(images)
        check_image_dtype(model, images, "segmentation")
        require_targets(targets, images)
        if not isinstance(targets, Tensor) or targets.is_floating_point() or targets.ndim != 3:
            self.check_targets(targets)  # names what is wrong (torch's dtype or shape error)
        if isinstance(images, Tensor) and images.ndim == 4:
            warn_of_another_aspect(tuple(images.shape[-2:]), tuple(targets.shape[-2:]))
        targets = targets if targets.dtype == torch.int64 else targets.long()  # uint8 maps
        return self.loss_from_logits(self.forward_train(model, images, rng), targets, weights)

    # ------------------------------------------------------------------------- inference
    def logits(self, model: nn.Module, images: Tensor) -> Tensor:
        """Class scores at the images' resolution (whole image or sliding windows)."""
        if self.inference == "whole":
            out = model(images)
            self.check_logits(out)
            return resize_logits(out.float(), images.shape[-2:])
        return self.slide_logits(model, images)

    def slide_logits(self, model: nn.Module, images: Tensor) -> Tensor:
        """Logits of windows of ``crop_size`` every ``stride`` pixels, averaged where they
        overlap (B x C x H x W, float32). An image smaller than the window is padded with 0
        (the normalised mean) to the window's size, so that the model sees the window it was
        trained on (HRDA: its context, at context_scale, stays above the encoder's minimum)."""
        b, _, h, w = images.shape
        ch, cw = self.crop_size  # type: ignore[misc]
        sh, sw = self.stride  # type: ignore[misc]
        rows = max(h - ch + sh - 1, 0) // sh + 1
        cols = max(w - cw + sw - 1, 0) // sw + 1
        total = images.new_zeros((b, self.num_classes, h, w), dtype=torch.float32)
        count = images.new_zeros((1, 1, h, w), dtype=torch.float32)
        for r in range(rows):
            for c in range(cols):
                y1, x1 = min(r * sh, max(h - ch, 0)), min(c * sw, max(w - cw, 0))
                y2, x2 = min(y1 + ch, h), min(x1 + cw, w)
                window = images[:, :, y1:y2, x1:x2]
                pad_h, pad_w = max(ch - (y2 - y1), 0), max(cw - (x2 - x1), 0)
                if pad_h or pad_w:
                    window = F.pad(window, (0, pad_w, 0, pad_h))
                out = model(window)
                self.check_logits(out)
                out = resize_logits(out.float(), window.shape[-2:])
                total[:, :, y1:y2, x1:x2] += out[..., : y2 - y1, : x2 - x1]
                count[:, :, y1:y2, x1:x2] += 1
        return total / count

    def predict(self, model: nn.Module, images: Tensor) -> Tensor:
        """Class probabilities, B x C x H x W in float32 (averaged with the mirrored
        image's when ``flip``).

        Args:
            model: the model; one in training mode predicts in eval mode, its modes restored
                after (``predicting``). ``EMATeacher``'s ``norm="batch"`` (its model in eval
                mode, its BatchNorm layers in train mode, as published) is left as it is.
            images: (B, C, H, W) float32, normalised as the training images.

        Raises:
            DatasetError: images that are no (B, C, H, W) float tensor, or of another float
                dtype than the model's (outside autocast; ``check_image_dtype``).
        """
        _require_batch(images)
        check_image_dtype(model, images, "segmentation")
        with predicting(model):
            probs = torch.softmax(self.logits(model, images), dim=1)
            if self.flip:
                flipped = torch.softmax(self.logits(model, images.flip(-1)), dim=1).flip(-1)
                probs = (probs + flipped) / 2
        return probs

    def check_margins(self, target: Any) -> None:
        """Refuse ``pseudo_label_margins`` that cover every pixel of the target's training
        crops (its transform's ``crop_size``) or generated images (``images``, N x C x H x W),
        before training (``mic-train`` calls it where pseudo-labels are made: a method that
        makes them, or a validator that reads them); else they are named at the first
        pseudo-label.

        Raises:
            ConfigError: as ``margin_mask``.
        """
        crop = getattr(getattr(target, "transform", None), "crop_size", None)
        images = getattr(target, "images", None)
        size = crop or (images.shape[-2:] if isinstance(images, Tensor) else None)
        if size and any(self.margins):
            self.margin_mask((1, *size), "cpu")

    def margin_mask(self, shape: Sequence[int], device: Any) -> Tensor | None:
        """B x H x W, False in the margins whose pseudo-labels are never trusted."""
        top, bottom, left, right = self.margins
        if not any(self.margins):
            return None
        b, h, w = shape
        if top + bottom >= h or left + right >= w:
            raise ConfigError(
                f"task.pseudo_label_margins {list(self.margins)} (top, bottom, left, right) "
                f"cover every pixel of the {h} x {w} target images, so every pseudo-label would "
                "weigh 0: set margins that leave part of the image (DAFormer's 15 and 120 rows "
                "are for 512 x 512 Cityscapes crops; [0, 0, 0, 0] for none)"
            )
        valid = torch.ones((b, h, w), dtype=torch.bool, device=device)
        valid[:, :top] = False
        if bottom:
            valid[:, h - bottom :] = False
        valid[:, :, :left] = False
        if right:
            valid[:, :, w - right :] = False
        return valid

    def pseudo_label(self, prediction: Tensor) -> PseudoLabels:
        """The teacher's prediction as pseudo-labels: each pixel's most probable class, its
        probability as the confidence, and the pseudo-label margins as ``valid``.

        Args:
            prediction: (B, C, H, W) float class probabilities (``predict``'s, the teacher's
                ``predict``), C = ``num_classes``.

        Returns:
            ``PseudoLabels``: labels (B, H, W) int64, confidence (B, H, W) in the prediction's
            dtype, valid (B, H, W) bool, False in the margins (None without margins).

        Raises:
            ConfigError: a prediction that is no (B, C, H, W) tensor of ``num_classes``
                classes (e.g. the classes last), or margins that cover every pixel.
        """
        layout, who = "B x C x H x W", "SegmentationTask.pseudo_label"
        check_class_probabilities(prediction, self.num_classes, layout, who)
        confidence, labels = prediction.max(dim=1)
        valid = self.margin_mask(labels.shape, labels.device)
        return PseudoLabels(labels=labels, confidence=confidence, valid=valid)

    def class_probabilities(
        self, prediction: Tensor, samples_per_image: int | None = None, rng: Random = None
    ) -> Tensor:
        """What the label-free validators read (``mic.training.validators``): the class
        probabilities of ``samples_per_image`` pixels per image, drawn uniformly (with
        replacement) from ``rng``, or of every pixel (None).

        Args:
            prediction: B x C x H x W probabilities (``predict``'s).
            samples_per_image: pixels per image; None: all.
            rng: what the pixel positions are drawn from.

        Returns:
            (B * samples_per_image) x C float32, rows in image order.
        """
        b, c, h, w = prediction.shape
        flat = prediction.float().flatten(2)  # B x C x HW
        if samples_per_image is None:
            return flat.transpose(1, 2).reshape(-1, c)
        where = uniform(rng, b, samples_per_image, device=prediction.device) * (h * w)
        where = where.long().clamp_(max=h * w - 1)
        return flat.gather(2, where[:, None].expand(b, c, -1)).transpose(1, 2).reshape(-1, c)

    # ------------------------------------------------------------------------- scoring
    def metric(self) -> Metric:
        """A fresh ``SegmentationMetrics`` (mic.tasks.segmentation.metrics) of the task's
        classes, ignore index and evaluated classes, for its probabilities."""
        from mic.tasks.segmentation.metrics import SegmentationMetrics

        return SegmentationMetrics(
            self.num_classes, self.ignore_index, self.eval_classes, probabilities=True
        )

    def collate(self, samples: list[Any]) -> Any:
        """Batch samples: images, ``(image,)`` 1-tuples (``TensorDataset(x)``: images alone)
        or ``(image, label map)`` pairs; integer label maps of any width (uint8 PNGs, int32)
        become int64, as the loss takes them.

        Args:
            samples: what a DataLoader hands its ``collate_fn``.

        Returns:
            B x C x H x W images, or ``(images, label maps)`` with B x H x W int64 maps.

        Raises:
            DatasetError: a sample that is a dict or has more than 2 items, images that are
                not float32 (uint8, float64) or of different sizes, or bad label maps.

        Warns:
            UserWarning: label maps of another aspect ratio than their images (predictions
                are resized to the labels' size: right for the same view, not for a crop).
        """
        batch = with_int64_labels(super().collate(plain_samples(samples)))
        if isinstance(batch, tuple) and batch[0].dim() == 4:
            warn_of_another_aspect(tuple(batch[0].shape[-2:]), tuple(batch[1].shape[-2:]))
        return batch

    def check_targets(self, targets: Any) -> None:
        if not isinstance(targets, Tensor) or targets.is_floating_point() or targets.ndim != 3:
            raise DatasetError(
                "segmentation targets must be B x H x W integer label maps, got "
                + (
                    f"a {targets.dtype} tensor of shape {tuple(targets.shape)}"
                    if isinstance(targets, Tensor)
                    else type(targets).__name__
                )
            )
        value = label_outside(targets, self.num_classes, self.ignore_index)
        if value is not None:
            raise DatasetError(
                f"label {value} is outside the classes [0, {self.num_classes - 1}] (and "
                f"{self.ignore_index} = ignored): the dataset has more classes than "
                f"task.num_classes={self.num_classes}, or its ids are not mapped to training ids"
            )

    def check_datasets(self, datasets: Mapping[str, Any]) -> None:
        """``check_class_datasets`` with ``classes`` (by default Cityscapes' for 19 classes,
        the ids otherwise: for reports only, no order set); those then named as the test set
        names its classes, else the source (a run without a test set).

        Raises:
            DatasetError: another class count, or the class names in another order.
        """
        self.classes = check_class_datasets(
            datasets,
            self.num_classes,
            self.classes,
            default_class_names(self.num_classes),
            "fix the datasets (a reader's classes and label mapping set theirs)",
        )
        source = datasets.get("source")  # (rare class sampling's wrapper: the reader's)
        crop = getattr(getattr(source, "transform", None), "crop_size", None)
        crop = crop or getattr(source, "image_size", None)  # (uncropped: the bundled scenes)
        window = self.crop_size if self.inference == "slide" else None
        if window and crop and tuple(window) != tuple(crop):
            larger = any(w > c for w, c in zip(window, crop, strict=True))
            h, w = crop
            warnings.warn(
                f"task.crop_size {list(window)}, the sliding window of evaluation and of the "
                f"teacher's pseudo-labels, is {'larger' if larger else 'smaller'} than the "
                f"{h} x {w} training crops: "
                + (
                    "each crop and test image is padded to the window, which costs time and memory"
                    if larger
                    else "the model predicts on windows of less context than it trained on"
                )
                + " (published: the window is the training crop); e.g. "
                f"task.crop_size=[{h},{w}] task.stride=[{max(1, h // 2)},{max(1, w // 2)}]",
                stacklevel=2,
            )

    def report_hooks(self, run_dir: Path | None, test: Any) -> list[Any]:
        """The per-class IoU table in the log and, with a run folder, colour-coded
        predictions of the first ``visualize`` test images at every evaluation."""
        from mic.tasks.segmentation.hooks import ClassIoUTable, PredictionImages

        dataset = getattr(test, "dataset", test)
        named = getattr(dataset, "classes", None) or []  # the test dataset's, unless given
        if self.classes == default_class_names(self.num_classes) and len(named) == len(
            self.classes
        ):
            self.classes = [str(n) for n in named]
        hooks: list[Any] = [ClassIoUTable(self.classes, self.eval_classes)]
        if run_dir is not None and self.visualize > 0 and dataset is not None:
            folder = Path(run_dir) / "predictions"
            hooks.append(PredictionImages(self, dataset, folder, self.visualize))
        return hooks


class HRDASegmentationTask(SegmentationTask):
    """Semantic segmentation with an ``HRDA`` model (Hoyer et al., ECCV 2022).

    ``loss`` draws one detail crop per image from the calling term's random stream
    (``detail_crop_boxes``: offsets on the model's ``crop_divisible`` grid), runs the model on
    the context and the detail crop, and returns the named parts

    - ``fused``: (1 - lambda_d - lambda_c) x cross-entropy of the fused logits against the
      labels;
    - ``detail``: lambda_d x cross-entropy of the detail logits against the labels (and
      weights) cropped like the image (left out when lambda_d = 0);
    - ``context``: lambda_c x cross-entropy of the context logits (left out when lambda_c = 0,
      as published; the published code scores them after multiplying by 1 - attention),

    which loss terms sum (MIC's lambda scales each; see ``SegmentationMIC.unscaled_parts``).
    ``predict`` is the model's multi-resolution inference, whole or in sliding windows of
    ``crop_size`` (published: 1024 x 1024 every 512 px at test time; the 1024 x 1024 training
    crops that the teacher pseudo-labels are one window).

    Args:
        num_classes: classes the model predicts.
        detail_loss_weight: lambda_d (published ``hr_loss_weight=0.1``).
        context_loss_weight: lambda_c (published ``lr_loss_weight=0``).
        **kwargs: ``SegmentationTask``'s (inference, crop_size, stride, margins, ...).

    Raises:
        ConfigError: weights outside [0, 1] or summing to more than 1.
    """

    def __init__(
        self,
        num_classes: int,
        detail_loss_weight: float = 0.1,
        context_loss_weight: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, **kwargs)
        wd, wc = float(detail_loss_weight), float(context_loss_weight)
        if min(wd, wc) < 0 or wd + wc > 1:
            raise ConfigError(
                f"task.detail_loss_weight ({wd}) and task.context_loss_weight ({wc}) must be "
                "non-negative and sum to at most 1 (the fused loss weighs the rest)"
            )
        if wd + wc == 1:
            warnings.warn(
                f"task.detail_loss_weight ({wd:g}) and task.context_loss_weight ({wc:g}) sum to "
                "1: the fused prediction, which inference uses, weighs 0 in the loss, so the "
                "scale-attention head never trains (published: 0.1 and 0)",
                stacklevel=2,
            )
        self.detail_loss_weight, self.context_loss_weight = wd, wc

    def loss(
        self,
        model: nn.Module,
        images: Tensor,
        targets: Tensor,
        weights: Tensor | None = None,
        rng: Random = None,
    ) -> Any:
        """``SegmentationTask.loss``, with labels of the images' size (the detail crop is cut
        from both at one place: torch's stack error before).

        Raises:
            DatasetError: as ``SegmentationTask.loss``; labels of another H x W than the images.
        """
        sizes = [tuple(getattr(x, "shape", ())[-2:]) for x in (targets, images)]
        if isinstance(targets, Tensor) and targets.ndim == 3 and sizes[0] != sizes[1]:
            raise DatasetError(
                f"HRDASegmentationTask.loss got labels of {sizes[0]} for images of {sizes[1]} "
                "(H, W): HRDA cuts its detail crop from both at one place; give labels of the "
                "images' size"
            )
        return super().loss(model, images, targets, weights, rng)

    def forward_train(
        self, model: nn.Module, images: Tensor, rng: Random = None, return_features: bool = False
    ) -> Any:
        """HRDA's training pass with one random detail crop per image, drawn from ``rng``.

        Returns:
            an ``HRDAOutput``, or ``(output, context features)``.

        Raises:
            ConfigError: the model is not an ``HRDA``.
        """
        hrda = unwrap(model)
        if not isinstance(hrda, HRDA):
            raise ConfigError(
                f"HRDASegmentationTask trains HRDA models, got {type(hrda).__name__}; choose an "
                "HRDA model (model=hrda_small_unet: the bundled small one, no pretrained "
                "weights; model=hrda_daformer_mitb5: the published one, ImageNet weights; in "
                "Python wrap the model: HRDA(segmenter)) or use task=segmentation"
            )
        boxes = detail_crop_boxes(
            rng, images.shape[0], images.shape[-2:], hrda.detail_crop, hrda.crop_divisible
        )
        return model(images, crop_box=boxes, return_features=return_features)

    def loss_from_logits(  # type: ignore[override]
        self, logits: HRDAOutput | Tensor, targets: Tensor, weights: Tensor | None = None
    ) -> Tensor | dict[str, Tensor]:
        """The named parts of HRDA's loss for an ``HRDAOutput`` (plain logits: the weighted
        cross-entropy, as ``SegmentationTask``)."""
        if not isinstance(logits, HRDAOutput):
            return super().loss_from_logits(logits, targets, weights)
        out, wd, wc = logits, self.detail_loss_weight, self.context_loss_weight
        parts = {"fused": (1 - wd - wc) * super().loss_from_logits(out.fused, targets, weights)}
        if wd > 0:
            crop = crop_per_image(targets, out.crop_box)
            if weights is not None:
                weights = torch.broadcast_to(weights, targets.shape)
            crop_weights = None if weights is None else crop_per_image(weights, out.crop_box)
            parts["detail"] = wd * super().loss_from_logits(out.detail, crop, crop_weights)
        if wc > 0:
            parts["context"] = wc * super().loss_from_logits(out.context, targets, weights)
        return parts


# SegmentationMetrics on first use (mic.tasks.common.lazy_metrics)
__getattr__, __dir__ = lazy_metrics(
    __name__, "SegmentationMetrics", "mic.tasks.segmentation.metrics"
)
