from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from mic.tasks.classification import ClassificationTask, Classifier

NUM_CLASSES = 3


def tiny_model(num_classes: int = NUM_CLASSES, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    return Classifier("tiny_cnn", num_classes=num_classes, bottleneck_dim=8)


def tiny_loaders(n: int = 16, size: int = 8, batch: int = 4, seed: int = 0):
    """A labelled source loader and an unlabelled target loader of random images."""
    g = torch.Generator().manual_seed(seed)
    task = ClassificationTask(NUM_CLASSES)
    xs = torch.randn(n, 3, size, size, generator=g)
    ys = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    xt = torch.randn(n, 3, size, size, generator=g) + 0.5
    source = DataLoader(
        TensorDataset(xs, ys),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        collate_fn=task.collate,
        generator=torch.Generator().manual_seed(seed),
    )
    target = DataLoader(
        list(xt),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        collate_fn=task.collate,
        generator=torch.Generator().manual_seed(seed + 1),
    )
    test = DataLoader(TensorDataset(xt, ys), batch_size=8, collate_fn=task.collate)
    return task, source, target, test


def write_png(path: Path, value: int = 128, size: tuple[int, int] = (10, 10)) -> None:
    """A flat RGB PNG of ``size`` (width, height), its folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def class_folders(root: Path, classes, n: int = 2) -> Path:
    """``root/<class>/<i>.png``: ``n`` images per class, as image-folder datasets read."""
    for c in classes:
        for i in range(n):
            write_png(root / c / f"{i}.png", 30 * i)
    return root
