"""On a CUDA device: MIC's per-iteration parts run without one host synchronisation, and the
speed of a digits iteration per method.

    python benchmarks/sync_check.py            # needs a GPU

Runs the block masker with strong augmentation, the pseudo-label weighting, the MIC loss with
its backward, the EMA teacher update and a whole loop iteration (after warm-up) under
``torch.cuda.set_sync_debug_mode("error")``, which raises on any synchronising call.
"""

from __future__ import annotations

import time

import torch
from common import train_steps

import mic
from mic.experiment import build_experiment, load_config
from mic.tasks.classification import ClassificationTask, Classifier


def check_parts(device: torch.device) -> None:
    g = torch.Generator(device=device).manual_seed(0)
    norm = {"mean": [0.5] * 3, "std": [0.5] * 3}
    masker = mic.BlockMasker(64, 0.7, augmentation=mic.StrongAugmentation(**norm)).to(device)
    student = Classifier("small_cnn", 10).to(device)
    teacher = mic.EMATeacher(student, alpha=0.9).to(device)
    task = ClassificationTask(10)
    images = torch.randn(8, 3, 224, 224, device=device)
    mic_loss = mic.MaskedImageConsistency(masker, weighting="quality")
    teacher.update(student, 0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        masked = masker(images, g)
        pseudo = task.pseudo_label(teacher.predict(task, images))
        weights = mic.PseudoLabelWeighting("quality")(pseudo)
        loss = mic_loss.loss(student, task, images, pseudo, g)
        loss.backward()
        teacher.update(student, 5)
        assert masked.shape == images.shape and weights.shape == (8,)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    print(
        "no sync: masker, augmentation, pseudo-labels, weighting, MIC loss + backward, EMA update"
    )


def check_iteration(device: torch.device) -> None:
    overrides = ["device=cuda", "log.progress=false", "adaptation_start=0", "nan_policy=ignore"]
    exp = build_experiment(load_config(overrides))
    loop = exp.loop
    train_steps(loop, 3)  # warm-up: lazy initialisations may synchronise once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        train_steps(loop, 3)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    print("a whole mean teacher + MIC iteration (data on the GPU already aside): no sync")


def speed() -> None:
    rows = {
        "source_only": ["method=source_only", "mic=none"],
        "mean_teacher": ["mic=none"],
        "mean_teacher_mic": [],
        # the training guard's checks (losses, gradients, weights after each step) skipped:
        # against the row above, the cost of their host synchronisations
        "mean_teacher_mic, nan_policy=ignore": ["nan_policy=ignore"],
    }
    for name, overrides in rows.items():
        shared = ["device=cuda", "log.progress=false", "adaptation_start=0"]
        exp = build_experiment(load_config([*overrides, *shared]))
        loop = exp.loop
        train_steps(loop, 20)
        torch.cuda.synchronize()
        t = time.perf_counter()
        train_steps(loop, 200)
        torch.cuda.synchronize()
        ms = 1000 * (time.perf_counter() - t) / 200
        print(f"{name:<36} {ms:.2f} ms / iteration on {torch.cuda.get_device_name()}")


if __name__ == "__main__":
    dev = torch.device("cuda")
    check_parts(dev)
    check_iteration(dev)
    speed()
