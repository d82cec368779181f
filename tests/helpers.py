from __future__ import annotations

import torch
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
