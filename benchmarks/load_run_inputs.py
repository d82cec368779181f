"""What a loaded run's model scores on test images prepared as its data were, against the same
images left in [0, 1]: README.md's example of why ``task.predict`` on a loaded model needs the
run's normalisation. The model comes from ``mic.load_run`` (its final weights, no AdaBN) and
is scored with ``mic.training.evaluate`` on the run's digits test set (its ``dataset.test``),
normalised as the run read it (``DigitsDomain(normalize=True)``, mean and std 0.5) and not
(``normalize=False``).

    mic-train mic=none iterations=60 adaptation_start=12 hydra.run.dir=runs/x
    python benchmarks/load_run_inputs.py runs/x          # prints the markdown rows
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a finished mic-train run folder on the digits")
    p.add_argument("--model", choices=("student", "teacher"), default="student")
    args = p.parse_args(argv)
    if not (args.run / "config.yaml").is_file():
        p.error(f"{args.run} holds no config.yaml: give the folder of a finished mic-train run")

    import torch
    from omegaconf import OmegaConf

    import mic
    from mic.experiment import build_datasets, make_loader
    from mic.training import evaluate

    cfg = OmegaConf.load(args.run / "config.yaml")
    if OmegaConf.select(cfg, "dataset.test._target_") != "mic.datasets.DigitsDomain":
        p.error(f"{args.run} is no run on the bundled digits (dataset=digits)")
    task, model = mic.load_run(args.run, model=args.model)
    batch, scores = int(cfg.loader.test_batch_size), {}
    for normalised in (True, False):
        cfg.dataset.test.normalize = normalised
        test = build_datasets(cfg)["test"]
        loader = make_loader(test, batch, task, False, 0, 0, "test")
        scores[normalised] = evaluate(task, model, loader)[task.primary_metric]
    given = shlex.join(sys.argv[1:] if argv is None else argv)
    print(f"Command: `python benchmarks/load_run_inputs.py {given}`")
    print(f"(torch threads: {torch.get_num_threads()})\n")
    print(f"| test images | target {task.primary_metric} of the {args.model} (%) |")
    print("|---|---|")
    print(f"| normalised as the run read them | {100 * scores[True]:.2f} |")
    print(f"| in [0, 1] | {100 * scores[False]:.2f} |")


if __name__ == "__main__":
    main()
