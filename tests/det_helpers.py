"""Tiny detectors and data for the detection tests (64 px images, an 82k-parameter backbone)."""

from __future__ import annotations

import torch

from mic.tasks.detection import DetectionTask, FasterRCNN, make_target

NUM_CLASSES = 3
SIZE = 64

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


def tiny_detector(seed: int = 0, num_classes: int = NUM_CLASSES) -> FasterRCNN:
    torch.manual_seed(seed)
    return FasterRCNN(
        "test_efficientnet",
        num_classes=num_classes,
        norm="batch",
        fpn_channels=16,
        representation_size=32,
        min_size=SIZE,
        max_size=SIZE,
        anchor_sizes=[8, 16, 32, 64, 128],
        rpn_pre_nms_top_n_train=50,
        rpn_post_nms_top_n_train=20,
        rpn_pre_nms_top_n_test=50,
        rpn_post_nms_top_n_test=20,
        box_batch_size_per_image=16,
    )


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
