"""A new task in one file: multi-label digit attributes, adapted with the same loop and MIC.

Each digit has three binary attributes (even? greater than 4? has a closed loop?). The Task
says how to compute a weighted multi-label loss, predict, pseudo-label (confidence per
attribute) and score; the loop, the EMA teacher, the masker and MIC are mic's, unchanged.

From plain Python:

    python examples/new_task.py --iterations 300

From the command line, with the config beside this file (examples/experiment/new_task.yaml;
``--config-dir`` puts the folder on Hydra's search path, and ``mic-train`` imports the
``_target_`` module from the folder it runs in):

    cd examples && mic-train --config-dir . experiment=new_task
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchmetrics.classification import MultilabelAccuracy

import mic
from mic.core.streams import uniform
from mic.datasets import DigitsDomain
from mic.tasks.classification import Classifier

LOOPS = torch.tensor([1, 0, 0, 0, 0, 0, 1, 0, 1, 1])  # 0, 6, 8, 9 have a closed loop


def attributes(digit: Tensor) -> Tensor:
    return torch.stack([digit % 2 == 0, digit > 4, LOOPS[digit].bool()], -1).float()


class DigitAttributes(mic.Task):
    """Three binary attributes per digit image: weighted binary cross-entropy, sigmoid
    predictions, pseudo-labels thresholded at 0.5 with a confidence per attribute."""

    num_classes = 3
    primary_metric = "accuracy"

    def loss(
        self,
        model: nn.Module,
        images: Tensor,
        targets: Tensor,
        weights: Tensor | None = None,
        rng: mic.Random = None,
    ) -> Tensor:
        loss = F.binary_cross_entropy_with_logits(model(images).float(), targets, reduction="none")
        return (loss if weights is None else loss * weights).mean()

    def predict(self, model: nn.Module, images: Tensor) -> Tensor:
        return torch.sigmoid(model(images).float())

    def pseudo_label(self, prediction: Tensor) -> mic.PseudoLabels:
        labels = (prediction > 0.5).float()
        return mic.PseudoLabels(
            labels, confidence=torch.where(labels > 0, prediction, 1 - prediction)
        )

    def metric(self) -> MultilabelAccuracy:
        return MultilabelAccuracy(num_labels=3)  # one scalar: recorded as "accuracy"

    def class_probabilities(self, prediction: Tensor, samples_per_image=None, rng=None) -> Tensor:
        """For mic's label-free validators (docs/model_selection.md): each attribute of each
        image as a two-class distribution [1 - p, p], (B * 3) x 2; where samples_per_image is
        a number below 3, that many attributes of each image, drawn from rng."""
        if samples_per_image is not None and samples_per_image < prediction.shape[1]:
            draws = uniform(rng, len(prediction), prediction.shape[1], device=prediction.device)
            prediction = prediction.gather(1, draws.argsort(dim=1)[:, :samples_per_image])
        p = prediction.reshape(-1, 1)
        return torch.cat([1 - p, p], dim=1)

    def collate(self, samples: list) -> object:
        batch = super().collate(samples)
        return (batch[0], attributes(batch[1])) if isinstance(batch, tuple) else batch

    def check_datasets(self, datasets: dict) -> None:
        # the datasets hold digits (10 classes); collate derives the three attributes
        mic.check_num_classes(10, datasets)


def main(iterations: int, device: str) -> float:
    torch.manual_seed(0)
    task = DigitAttributes()
    norm = {"mean": [0.5] * 3, "std": [0.5] * 3}
    kw = {"batch_size": 64, "shuffle": True, "drop_last": True, "collate_fn": task.collate}
    source = DataLoader(DigitsDomain("source", "train"), **kw)
    target = DataLoader(DigitsDomain("target", "train", labelled=False), **kw)
    test = DataLoader(DigitsDomain("target", "test"), batch_size=256, collate_fn=task.collate)

    student = Classifier("small_cnn", num_classes=3)
    masker = mic.BlockMasker(block_size=4, ratio=0.7, augmentation=mic.StrongAugmentation(**norm))
    method = mic.mean_teacher(mic.StrongAugmentation(**norm), weighting="prob").with_terms(
        mic=mic.MaskedImageConsistency(masker, weighting="prob")
    )
    evaluation = mic.Evaluation(task, test, interval=100, adabn_loader=target, adabn_batches=10)
    loop = mic.AdaptationLoop(
        task,
        student,
        method,
        torch.optim.Adam(student.parameters(), lr=1e-3),
        source,
        target,
        iterations,
        teacher=mic.EMATeacher(student, alpha=0.9),
        hooks=[evaluation],
        device=device,
        guard=mic.TrainingGuard(),  # skip NaN / Inf iterations, stop cleanly on SIGTERM
    )
    loop.run()
    accuracy = evaluation.history[-1]["eval/teacher/accuracy"]
    print(f"target attribute accuracy of the teacher: {100 * accuracy:.2f}%")
    return accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    main(args.iterations, args.device)
