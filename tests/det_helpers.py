"""Tiny detectors and data for the detection tests (64 px images, an 82k-parameter backbone), on
either backend: torchvision's (``FasterRCNN``) or detectron2's (``Detectron2RCNN``)."""

from __future__ import annotations

import os

import pytest
import torch

from mic.tasks.detection import (
    DetectionTask,
    Detectron2RCNN,
    FasterRCNN,
    detectron2_build,
    make_target,
)

NUM_CLASSES = 3
SIZE = 64
BACKENDS = ("torchvision", "detectron2")

#: overrides that make ``experiment=det_shapes`` tiny and fast
TINY_DET = [
    "experiment=det_shapes",
    "dataset.size=64",
    "dataset.source.length=8",
    "dataset.target.length=8",
    "dataset.test.length=4",
    "model.backbone=test_efficientnet",
    "model.fpn_channels=16",
    "model.representation_size=32",
    "model.rpn_pre_nms_top_n_train=50",
    "model.rpn_post_nms_top_n_train=20",
    "model.rpn_pre_nms_top_n_test=50",
    "model.rpn_post_nms_top_n_test=20",
    "model.box_batch_size_per_image=16",
    "iterations=2",
    "adaptation_start=0",
    "eval.interval=0",
    "eval.adabn_batches=1",
    "loader.source_batch_size=2",
    "loader.target_batch_size=2",
    "loader.test_batch_size=4",
    "log.progress=false",
    "log.tensorboard=false",
    "device=cpu",
]

#: the model config of each backend on the bundled benchmark
MODELS = {"torchvision": "faster_rcnn_small", "detectron2": "d2_faster_rcnn_small"}


def need(backend: str) -> None:
    """Skip a detectron2 test where detectron2 is not installed, except in CI (``.ci/run``
    installs it, so there a missing detectron2 fails)."""
    if backend == "detectron2" and detectron2_build() is None:
        if os.environ.get("CI"):
            pytest.fail("detectron2 is missing: .ci/run installs it (install_detectron2_cpu.sh)")
        pytest.skip("detectron2 is not installed: bash scripts/install_detectron2_cpu.sh")


def tiny_det(backend: str = "torchvision") -> list[str]:
    """``TINY_DET`` on the backend's small model."""
    need(backend)
    return [*TINY_DET, f"model={MODELS[backend]}"]


#: a tiny detector's input size, anchors and proposal counts (either backend)
TINY_SIZES = dict(
    min_size=SIZE,
    max_size=SIZE,
    anchor_sizes=[8, 16, 32, 64, 128],
    rpn_pre_nms_top_n_train=50,
    rpn_post_nms_top_n_train=20,
    rpn_pre_nms_top_n_test=50,
    rpn_post_nms_top_n_test=20,
    box_batch_size_per_image=16,
)


def tiny_detector(
    seed: int = 0, num_classes: int = NUM_CLASSES, backend: str = "torchvision"
) -> FasterRCNN | Detectron2RCNN:
    need(backend)
    torch.manual_seed(seed)
    kwargs = dict(
        num_classes=num_classes, norm="batch", fpn_channels=16, representation_size=32, **TINY_SIZES
    )
    if backend == "detectron2":
        return Detectron2RCNN(backbone="test_efficientnet", **kwargs)
    return FasterRCNN("test_efficientnet", **kwargs)


def head_weights(model: FasterRCNN | Detectron2RCNN) -> dict[str, torch.Tensor]:
    """The last layer of each loss part's head: RPN objectness and box deltas, ROI classifier
    and box regression."""
    if isinstance(model, Detectron2RCNN):
        rpn = model.rcnn.proposal_generator.rpn_head
        roi = model.rcnn.roi_heads.box_predictor
        return {
            "rpn_objectness": rpn.objectness_logits.weight,
            "rpn_box": rpn.anchor_deltas.weight,
            "roi_classifier": roi.cls_score.weight,
            "roi_box": roi.bbox_pred.weight,
        }
    return {
        "rpn_objectness": model.rpn.head.cls_logits.weight,
        "rpn_box": model.rpn.head.bbox_pred.weight,
        "roi_classifier": model.roi_heads.box_predictor.cls_score.weight,
        "roi_box": model.roi_heads.box_predictor.bbox_pred.weight,
    }


def tiny_batch(seed: int = 0, n: int = 2) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, SIZE, SIZE, generator=g)
    targets = [
        make_target([[4, 6, 30, 28], [34, 30, 60, 62]], [0, 2]),
        make_target([[10, 10, 40, 50]], [1]),
    ][:n]
    return images, targets


def task() -> DetectionTask:
    return DetectionTask(NUM_CLASSES, class_names=["a", "b", "c"])
