"""The segmentation scores: a confusion matrix over the evaluated pixels and the mIoU of
each protocol (torchmetrics, imported when a task first builds its metric: ``mic-train``'s
checks before a run do not wait for it)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import multiclass_confusion_matrix

from mic.core import DatasetError
from mic.datasets.segmentation.labels import PROTOCOLS
from mic.tasks.segmentation.task import label_outside, resize_logits


class SegmentationMetrics(Metric):
    """Confusion matrix over all evaluated pixels (255 ignored), summed over the data set.

    ``compute()`` gives ``miou`` (the mean IoU over ``eval_classes``, classes that never
    occur in labels or predictions left out, as mmseg does), ``per_class_iou`` (all
    classes, NaN where undefined), ``accuracy`` (pixel accuracy) and, for 19-class label
    spaces, ``miou_cityscapes19``, ``miou_synthia16`` and ``miou_synthia13``. With no scored
    pixel (every label ``ignore_index``) ``miou`` and ``accuracy`` are NaN, not 0.
    Predictions (class scores or labels) at another size than the labels are resized to it.

    Args:
        num_classes: the classes of the label space.
        ignore_index: the label of pixels without a class (not scored).
        eval_classes: the classes ``miou`` averages (None: all).
        probabilities: the class scores are probabilities (``SegmentationTask.predict``'s
            softmax): resized, they are resized as their logarithm, which ranks the classes as
            the resized logits do (softmax's normaliser is the same for every class of a
            pixel), as the published code (mmseg) resizes the logits before the softmax;
            resizing the probabilities themselves gave other classes at some boundary pixels.
            Exact for float32 probabilities whose logits lie less than about 87 apart (beyond,
            float32 rounds the smaller probability to 0); scores outside [0, 1] (logits) are
            resized as given.

    Raises:
        DatasetError: (``update``) a label outside [0, num_classes) that is not
            ``ignore_index``.
    """

    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        eval_classes: Sequence[int] | None = None,
        probabilities: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes, self.probabilities = int(num_classes), probabilities
        self.ignore_index = ignore_index
        self.eval_classes = list(eval_classes) if eval_classes is not None else None
        self.add_state(
            "confmat", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, prediction: Tensor, targets: Tensor) -> None:
        if prediction.ndim == targets.ndim + 1:
            scores = prediction.float()
            resized = scores.shape[-2:] != targets.shape[-2:]
            if self.probabilities and resized and scores.min() >= 0 and scores.max() <= 1:
                # (scores outside [0, 1] are logits of a predict of one's own: as given)
                scores = scores.clamp_min(torch.finfo(torch.float32).tiny).log()
            prediction = resize_logits(scores, targets.shape[-2:]).argmax(1)
        elif prediction.shape[-2:] != targets.shape[-2:]:
            prediction = F.interpolate(
                prediction[:, None].float(), size=targets.shape[-2:], mode="nearest"
            )[:, 0].long()
        try:
            self.confmat += multiclass_confusion_matrix(
                prediction.reshape(-1),
                targets.reshape(-1),
                self.num_classes,
                ignore_index=self.ignore_index,
                validate_args=False,
            )
        except RuntimeError:  # (torch's reshape error for an id out of range: named)
            value = label_outside(targets, self.num_classes, self.ignore_index)
            if value is None:
                raise
            raise DatasetError(
                f"label {value} is outside the classes [0, "
                f"{self.num_classes - 1}] (and {self.ignore_index} = ignored): the labels have "
                "more classes than the metric's num_classes, or their ids are not mapped to "
                "training ids"
            ) from None

    def compute(self) -> dict[str, Tensor]:
        cm = self.confmat.double()
        if cm.sum() == 0:
            warnings.warn(
                f"no scored pixel holds a class label (every one is ignore_index="
                f"{self.ignore_index}, or nothing was scored): mIoU and accuracy are undefined "
                "(NaN); check the test labels' ids",
                stacklevel=2,
            )
        tp = cm.diag()
        union = cm.sum(0) + cm.sum(1) - tp
        iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
        out = {
            "miou": _nanmean(iou, self.eval_classes),
            "per_class_iou": iou.float(),
            # no scored pixel (every one ignore_index): undefined, NaN (never a best score)
            "accuracy": (tp.sum() / cm.sum()).float(),
        }
        if self.num_classes == 19:
            out.update({f"miou_{name}": _nanmean(iou, idx) for name, idx in PROTOCOLS.items()})
        return out


def _nanmean(values: Tensor, index: Sequence[int] | None) -> Tensor:
    v = values if index is None else values[list(index)]
    return v.nanmean().float()  # NaN when no class is defined (e.g. every pixel ignored)
