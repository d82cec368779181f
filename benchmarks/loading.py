"""The cost of fetching a training batch: a plain DataLoader against mic's training loader,
whose ``SeededDataset`` seeds the global generators a sample draws from with the seed of its
position (exact resume, the same draws in any worker), on the bundled digits and street scenes.

    python benchmarks/loading.py                # writes benchmarks/results/loading.md

Rows, each the same dataset, batch size, collate function and one process (num_workers=0):
- ``plain``: ``DataLoader(dataset, shuffle=True, drop_last=True)``, no per-sample seeding;
- ``before``: the former ``SeededDataset``, which seeded torch's, NumPy's and Python's
  generators for every sample inside ``torch.random.fork_rng`` (reproduced here);
- ``all three``: today's ``SeededDataset`` told to seed all three generators (what a dataset
  that does not declare ``random_sources`` gets, e.g. a reader with a user's transform);
- ``mic``: today's training loader as ``mic-train`` builds it (``make_loader``), seeding what
  the dataset declares (the digits: nothing; the street scenes: torch's generator, their flip).

The loaders take turns, batch by batch over whole epochs, ``--rounds`` times; a cell is the
median over rounds of the mean milliseconds per batch.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from mic.experiment import make_loader
from mic.training import ResumableSampler, SeededDataset


class SeededDatasetBefore(SeededDataset):
    """``SeededDataset.__getitem__`` as it was: every sample inside ``torch.random.fork_rng``,
    seeding torch's, Python's and NumPy's global generators."""

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            return self.dataset[index]


def loaders(dataset: Any, batch: int, task: Any) -> dict[str, DataLoader]:
    def seeded(wrapped: Any) -> DataLoader:
        sampler = ResumableSampler(len(dataset), True, 0, with_seeds=True)
        return DataLoader(
            wrapped, batch_size=batch, sampler=sampler, drop_last=True, collate_fn=task.collate
        )

    plain = DataLoader(
        dataset, batch_size=batch, shuffle=True, drop_last=True, collate_fn=task.collate
    )
    return {
        "plain": plain,
        "before": seeded(SeededDatasetBefore(dataset)),
        "all three": seeded(SeededDataset(dataset, generators=("torch", "numpy", "python"))),
        "mic": make_loader(dataset, batch, task, True, 0, 0, "source"),
    }


def ms_per_batch(loader: DataLoader, epoch: int) -> float:
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    n, t0 = 0, time.perf_counter()
    for _ in loader:
        n += 1
    return 1e3 * (time.perf_counter() - t0) / n


def measure(dataset: Any, batch: int, task: Any, rounds: int, epochs: int) -> dict[str, float]:
    runs = loaders(dataset, batch, task)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds):
        for name, loader in runs.items():
            times[name].append(statistics.mean(ms_per_batch(loader, r * epochs + e)
                                               for e in range(epochs)))  # fmt: skip
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--note", default="", help="a paragraph written under the table")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "loading.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    from mic.datasets import DigitsDomain
    from mic.datasets.segmentation import StreetScenes
    from mic.tasks.classification import ClassificationTask
    from mic.tasks.segmentation import SegmentationTask

    cases = [
        # name, dataset, batch (mic-train's defaults), task, epochs per round
        ("digits (source, 449 images)", DigitsDomain("source", "train"), 64,
         ClassificationTask(10), 10),
        ("street scenes (source, 512 of 64 x 64 px, flips)",
         StreetScenes("source", "train", count=512, size=64, flip=True), 8,
         SegmentationTask(8), 2),
    ]  # fmt: skip
    rows = []
    for name, dataset, batch, task, epochs in cases:
        ms = measure(dataset, batch, task, args.rounds, epochs)
        rows.append((name, batch, ms))
        print(name, {k: round(v, 3) for k, v in ms.items()}, flush=True)

    shown = ["<the paragraph below>" if a == args.note else a for a in sys.argv[1:]]
    command = "python benchmarks/" + Path(sys.argv[0]).name + " " + shlex.join(shown)
    names = list(rows[0][2])
    lines = [
        "# Fetching a training batch: plain DataLoader against per-sample seeding",
        "",
        f"Command: `OMP_NUM_THREADS=1 {command.strip()}`",
        "",
        f"{os.cpu_count()} CPU cores shared with other work (load average "
        f"{os.getloadavg()[0]:.1f} at the end), one process, one thread; milliseconds per batch "
        f"(median over {args.rounds} rounds, the loaders taking turns); in brackets the ratio "
        "to the plain DataLoader. The rows are explained in `benchmarks/loading.py`.",
        "",
        "| dataset | batch | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for name, batch, ms in rows:
        cells = [f"{ms[n]:.2f} ({ms[n] / ms['plain']:.1f}x)" for n in names]
        lines.append(f"| {name} | {batch} | " + " | ".join(cells) + " |")
    if args.note:
        lines += ["", args.note]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
