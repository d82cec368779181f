from __future__ import annotations

import os
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

import mic
from mic.tasks.classification import ClassificationTask, Classifier

NUM_CLASSES = 3
#: a default mic-train run cut to a few CPU seconds (the digits benchmark, 4 iterations)
TINY_RUN = [
    "iterations=4",
    "adaptation_start=0",
    "eval.interval=0",
    "eval.adabn_batches=1",
    "loader.source_batch_size=16",
    "loader.target_batch_size=16",
    "log.progress=false",
    "device=cpu",
]


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
            write_png(root / c / f"{i}.png", 30 * i % 256)
    return root


def folder_overrides(
    tmp: Path, source=None, target=None, test=None, num_classes: int = 3
) -> list[str]:
    """``dataset=folders`` overrides on tiny class folders written under ``tmp`` (classes
    a, b, c), any of the three roots replaced by the one given."""
    source = source or class_folders(tmp / "src", ["a", "b", "c"])
    target = target or class_folders(tmp / "tgt", ["x"])
    test = test or class_folders(tmp / "tst", ["a", "b", "c"])
    return [
        "dataset=folders",
        f"dataset.num_classes={num_classes}",
        f"dataset.root_source={source}",
        f"dataset.root_target={target}",
        f"dataset.root_test={test}",
        "dataset.size=8",
        "model=small_cnn",
        "loader.source_batch_size=2",
        "loader.target_batch_size=2",
    ]


def user_error_of(overrides: list[str]) -> str:
    """The one-paragraph message that ``mic-train`` would print for this run's failure;
    fails the test if the run succeeds or fails with something that is not a user error."""
    import pytest

    from mic.experiment import load_config, run_experiment
    from mic.train import user_error

    with pytest.raises(Exception) as info:
        run_experiment(load_config(overrides))
    message = user_error(info.value)
    assert message is not None, f"not a user error: {info.value!r}"
    return message


def write_label(path: Path, array) -> Path:
    """A single-channel 8-bit label PNG of ``array`` (H x W class ids), its folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8), mode="L").save(path)
    return path


def two_class_label(size: tuple[int, int] = (16, 12), right: int = 1) -> np.ndarray:
    """A H x W label: class 0 on the left half, ``right`` on the right half."""
    label = np.zeros((size[1], size[0]), np.uint8)
    label[:, size[0] // 2 :] = right
    return label


def seg_tree(root: Path, n: int = 4, labels: bool = True, size=(16, 12), right: int = 1) -> Path:
    """``root/img/<i>.png`` (random RGB) and, with ``labels``, ``root/lbl/<i>.png`` (two
    classes, the right half ``right``): images and labels in separate folders."""
    rng = np.random.default_rng(len(str(root)))
    for i in range(n):
        path = root / "img" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        if labels:
            write_label(root / "lbl" / f"{i}.png", two_class_label(size, right))
    return root


def seg_folder_overrides(tmp: Path, num_classes: int = 2, right: int = 1, **roots) -> list[str]:
    """A few-iteration ``mic-train experiment=streets dataset=seg_folders`` run on trees
    written under ``tmp`` (``source``, ``target``, ``test``: any replaced by the one given)."""
    src = roots.get("source") or seg_tree(tmp / "src", right=right)
    tgt = roots.get("target") or seg_tree(tmp / "tgt", labels=False)
    tst = roots.get("test") or seg_tree(tmp / "tst", n=2, right=right)
    return [
        "experiment=streets",
        "dataset=seg_folders",
        f"dataset.num_classes={num_classes}",
        f"dataset.source_images={src / 'img'}",
        f"dataset.source_labels={src / 'lbl'}",
        f"dataset.target_images={tgt / 'img'}",
        f"dataset.test_images={tst / 'img'}",
        f"dataset.test_labels={tst / 'lbl'}",
        "dataset.crop_size=[8,8]",
        "method.terms.mic.masker.block_size=4",
        "iterations=2",
        "loader.source_batch_size=2",
        "loader.target_batch_size=2",
        "loader.test_batch_size=2",
        "eval.interval=0",
        "eval.adabn_batches=0",
    ]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``mic-train *args`` in a process of its own, as a user runs it (Hydra's short errors),
    its output captured: tests/cli.py's ``run_mic_train`` (forked from a server that imported
    torch and mic once), in ``cwd`` (default: the current folder)."""
    from tests.cli import run_mic_train

    return run_mic_train(list(args), cwd=Path(cwd or os.getcwd()), timeout=300)


class Regression(mic.Task):
    """One number per image; its metric is the mean squared error (lower is better)."""

    num_classes = 1
    primary_metric = "mse"
    higher_is_better = False

    def loss(self, model, images, targets, weights=None, rng=None):
        return ((model(images).squeeze(1) - targets.float()) ** 2).mean()

    def predict(self, model, images):
        return model(images).squeeze(1)

    def pseudo_label(self, prediction):
        return mic.PseudoLabels(prediction, torch.ones_like(prediction))

    def metric(self):
        from torchmetrics import MeanSquaredError

        return MeanSquaredError()


def changed_bytes(path: Path) -> bytes:
    """The bytes of ``path`` (a file ``torch.save`` wrote, a zip archive) with 8 bits flipped
    in the middle of its largest part, as a disk or a copy may change them: torch.load still
    reads it, with wrong values; the CRC-32 the archive stores for that part no longer
    matches."""
    with zipfile.ZipFile(path) as archive:
        part = max(archive.infolist(), key=lambda info: info.file_size)
    data = bytearray(Path(path).read_bytes())
    header = part.header_offset  # the local header: 30 bytes, then the name and the extra field
    name_length, extra_length = struct.unpack("<HH", data[header + 26 : header + 30])
    middle = header + 30 + name_length + extra_length + part.file_size // 2
    for i in range(8):
        data[middle + i] ^= 1
    return bytes(data)
