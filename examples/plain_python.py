"""MIC from plain Python, no Hydra: mean teacher + MIC on the bundled digits benchmark.

python examples/plain_python.py --iterations 300
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader

import mic
from mic.datasets import DigitsDomain
from mic.tasks.classification import ClassificationTask, Classifier


def main(iterations: int, device: str) -> float:
    torch.manual_seed(0)
    task = ClassificationTask(num_classes=10)
    norm = {"mean": [0.5] * 3, "std": [0.5] * 3}  # how DigitsDomain normalises
    # each loader shuffles with a generator of its own: with torch's global one, whatever else
    # draws from it (dropout, a term's draws) would change the batches of later epochs
    kw = {"batch_size": 64, "shuffle": True, "drop_last": True, "collate_fn": task.collate}
    order = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    source = DataLoader(DigitsDomain("source", "train"), **kw, generator=order(0))
    target_set = DigitsDomain("target", "train", labelled=False)
    target = DataLoader(target_set, **kw, generator=order(1))
    test = DataLoader(DigitsDomain("target", "test"), 256, collate_fn=task.collate)

    student = Classifier("small_cnn", num_classes=10)
    method = mic.mean_teacher(mic.StrongAugmentation(**norm)).with_terms(
        mic=mic.MaskedImageConsistency(
            mic.BlockMasker(block_size=4, ratio=0.7, augmentation=mic.StrongAugmentation(**norm)),
            weighting="quality",
        )
    )
    teacher = mic.EMATeacher(student, alpha=0.9)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    evaluation = mic.Evaluation(task, test, interval=100, adabn_loader=target, adabn_batches=10)
    loop = mic.AdaptationLoop(
        task,
        student,
        method,
        optimizer,
        source,
        target,
        iterations,
        teacher=teacher,
        hooks=[mic.ProgressBar(), evaluation],
        device=device,
        guard=mic.TrainingGuard(),  # mic-train's NaN / Inf policy and stop signals
    )
    loop.run()
    accuracy = evaluation.history[-1]["eval/teacher/accuracy"]
    print(f"target accuracy of the teacher after {iterations} iterations: {100 * accuracy:.2f}%")
    return accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    main(args.iterations, args.device)
