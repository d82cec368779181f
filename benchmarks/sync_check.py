"""On a CUDA device: MIC's per-iteration parts run without one host synchronisation, and the
speed of a digits iteration per method, and the cost of the EMA teacher update.

    python benchmarks/sync_check.py            # needs a GPU

Runs the block masker with strong augmentation, the pseudo-label weighting, the MIC loss with
its backward, the EMA teacher update and a whole loop iteration (after warm-up) under
``torch.cuda.set_sync_debug_mode("error")``, which raises on any synchronising call.
"""

from __future__ import annotations

import argparse
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


def ema_cost(device: torch.device) -> None:
    """The teacher update's cost on a GPU, on a ResNet-50 (161 parameter tensors, 25.6 M values):
    mending the student's NaN and Inf over runs of tensors flattened into one (what mic does off
    the CPU), against mending each tensor alone, reading one norm per tensor back to the host
    (mic's CPU way, a synchronisation) and no mending at all."""
    import torchvision

    from mic.core.teacher import _floating_pairs

    student = torchvision.models.resnet50().to(device)
    teacher = mic.EMATeacher(student, alpha=0.999).to(device)
    teacher.update(student, 0)
    t, s = _floating_pairs(teacher.model.parameters(), student.parameters())

    def each_tensor() -> None:
        mended = [torch.where(torch.isfinite(n), n, o) for n, o in zip(s, t)]
        torch._foreach_lerp_(t, mended, 0.001)

    def norm_read_back() -> None:
        ok = torch.stack(torch._foreach_norm(s)).isfinite().tolist()
        mended = [n if o else torch.where(torch.isfinite(n), n, o_) for n, o_, o in zip(s, t, ok)]
        torch._foreach_lerp_(t, mended, 0.001)

    def wait() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    ways = {
        "EMATeacher.update (flattened runs)": lambda: teacher.update(student, 100),
        "each tensor mended alone": each_tensor,
        "one norm per tensor read back": norm_read_back,
        "no mending (plain _foreach_lerp_)": lambda: torch._foreach_lerp_(t, s, 0.001),
    }
    for name, fn in ways.items():
        for _ in range(10):
            fn()
        wait()
        start = time.perf_counter()
        for _ in range(200):
            fn()
        wait()
        ms = 1000 * (time.perf_counter() - start) / 200
        print(f"EMA update, ResNet-50, {name:<40} {ms:.3f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python benchmarks/sync_check.py",
        description="On a CUDA device: MIC's per-iteration parts and a whole loop iteration "
        "run without a host synchronisation; the speed of a digits iteration per method and "
        "the cost of the EMA teacher update (printed).",
    )
    parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("there is no CUDA device here: this check needs one")
    dev = torch.device("cuda")
    check_parts(dev)
    check_iteration(dev)
    ema_cost(dev)
    speed()
