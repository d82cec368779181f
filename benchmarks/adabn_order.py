"""How much the order of the target batches that AdaBN reads moves a run's score: a finished
run's model scored again with its BatchNorm statistics re-estimated on the first
``eval.adabn_batches`` batches of the target training set in other shuffled orders (loader
seeds), beside the run's own order (loader seed 12345, the one ``mic-train`` uses at every
evaluation), which gives the run's score again exactly. docs/training.md quotes it.

    mic-train iterations=60 adaptation_start=12 hydra.run.dir=runs/adabn60
    python benchmarks/adabn_order.py runs/adabn60       # prints the markdown table
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

#: the loader seed of mic-train's AdaBN batches (mic.experiment.build_experiment)
RUN_ORDER = 12345


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a finished mic-train run folder")
    p.add_argument("--model", choices=("student", "teacher"), default="student")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4], help="other orders")
    args = p.parse_args(argv)
    if not (args.run / "config.yaml").is_file():
        p.error(f"{args.run} holds no config.yaml: give the folder of a finished mic-train run")

    from omegaconf import OmegaConf

    import mic
    from mic.experiment import build_datasets, make_loader
    from mic.training import evaluate, recalibrated_batchnorm

    cfg = OmegaConf.load(args.run / "config.yaml")
    data = build_datasets(cfg)
    task, model = mic.load_run(args.run, model=args.model)
    test = make_loader(data["test"], int(cfg.loader.test_batch_size), task, False, 0, 0, "test")
    rows = []
    for seed in [RUN_ORDER, *args.seeds]:  # (the trained statistics are restored after each)
        batch = int(cfg.loader.target_batch_size)
        adabn = make_loader(data["target"], batch, task, True, 0, seed, "target")
        with recalibrated_batchnorm(model, adabn, int(cfg.eval.adabn_batches)):
            rows.append((seed, evaluate(task, model, test)[task.primary_metric]))
    given = shlex.join(sys.argv[1:] if argv is None else argv)
    print(f"Command: `python benchmarks/adabn_order.py {given}`\n")
    print(f"| loader seed | target {task.primary_metric} of the {args.model} (%) |")
    print("|---|---|")
    for seed, score in rows:
        mark = " (the run's order)" if seed == RUN_ORDER else ""
        print(f"| {seed}{mark} | {100 * score:.2f} |")


if __name__ == "__main__":
    main()
