"""How far label-free validators can be trusted to choose checkpoints and hyperparameters.

    OMP_NUM_THREADS=1 python benchmarks/model_selection.py            # all three tasks
    python benchmarks/model_selection.py --tasks digits --seeds 0 1 2  # one task, more seeds
    python benchmarks/model_selection.py --table-only                  # table and plot again

For each task on its bundled benchmark (digits: ``mic-train``, mean teacher + MIC; street
scenes: ``experiment=streets``, DACS + MIC, on the reduced CPU schedule of
benchmarks/segmentation.py; fog shapes: ``experiment=det_shapes``, SADA + MIC), a source-only
warm-up per seed is followed by a small sweep of MIC's hyperparameters, each run from the
warm-up model (same seed: same weights and data order): lambda in {0.3, 1, 3} at the
published mask ratio, and the other mask ratios of {0.3, 0.5, 0.7, 0.9} at lambda 1 (for
the street scenes and detection, slower on a CPU, only 0.9; detection is scored on 100 of
its 200 test images). Every
run is evaluated every few hundred iterations (or fewer, see SETTINGS): the student's
labelled target metric (AdaBN protocol) and every label-free validator on 4 unlabelled target
training batches (10 for detection, whose batches hold 2 images), the same at every
evaluation. Each evaluation is a candidate checkpoint.

Figures, per task and validator:

- Spearman's rank correlation between the validator and the target metric over every
  checkpoint of every run, with a 95 % interval from a bootstrap over runs (checkpoints of a
  run are not independent, so whole runs are resampled);
- checkpoint selection within a run: the target metric of the checkpoint the validator picks,
  minus that of the best checkpoint of the run (the best possible) and minus that of the
  last checkpoint, mean over runs;
- hyperparameter and checkpoint selection across the sweep of one seed: the target metric of
  the checkpoint the validator picks among all runs of the seed, against the best of all and
  the last checkpoint of the published setting (lambda 1, published ratio), mean over seeds.

Finished runs and the figures are kept in benchmarks/results/model_selection.json (runs
found there are not run again); the markdown table and the PNG plot beside it are written
from it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import check_options, refuse_empty_table
from segmentation import CPU_BUDGET

from mic.training.checkpoint import write_text_atomically

RESULTS = Path(__file__).parent / "results"
VALIDATORS = ["entropy", "im", "snd", "bnm", "masked_agreement"]
LAM = "method.terms.mic.weight"
RATIO = "method.terms.mic.masker.ratio"
#: per task: the base overrides, the published mask ratio, the warm-up and run lengths
SETTINGS: dict[str, dict[str, Any]] = {
    "digits": {
        "overrides": ["loader.source_batch_size=32", "loader.target_batch_size=32"],
        "ratio": 0.7,
        "warmup": 150,
        "iterations": 400,
        "interval": 50,
        "validation": ["eval.validation.batches=4"],
    },
    "streets": {
        # the reduced CPU schedule of benchmarks/segmentation.py, at our own length
        "overrides": [
            "experiment=streets",
            *(o for o in CPU_BUDGET if not o.startswith("iterations=")),
        ],
        "ratio": 0.7,
        "other_ratios": [0.9],
        "warmup": 500,
        "iterations": 500,
        "interval": 100,
        "validation": ["eval.validation.batches=4", "eval.validation.samples_per_image=128"],
    },
    "det_shapes": {
        "overrides": ["experiment=det_shapes", "dataset.test.length=100"],
        "ratio": 0.5,
        "other_ratios": [0.9],
        "warmup": 500,
        "iterations": 100,
        "interval": 25,
        "validation": ["eval.validation.batches=10"],
    },
}
METRIC = {"digits": "accuracy", "streets": "miou", "det_shapes": "map_50"}


def sweep(task: str) -> dict[str, list[str]]:
    """Setting name -> overrides: lambda varied at the published ratio, then the ratio at 1."""
    published = SETTINGS[task]["ratio"]
    out = {f"lambda={w}": [f"{LAM}={w}", f"{RATIO}={published}"] for w in (0.3, 1, 3)}
    others = [r for r in (0.3, 0.5, 0.7, 0.9) if r != published]
    for r in SETTINGS[task].get("other_ratios", others):
        out[f"ratio={r}"] = [f"{LAM}=1", f"{RATIO}={r}"]
    return out


def default_setting(task: str) -> str:
    return "lambda=1"


def common(task: str, seed: int) -> list[str]:
    return [
        *SETTINGS[task]["overrides"],
        f"seed={seed}",
        "device=cpu",
        "log.progress=false",
        "eval.models=[student]",
        "adaptation_start=0",
    ]


def warm_up(task: str, seed: int, path: Path) -> dict:
    """Source-only training; saves the student's weights, returns its target metric."""
    import torch

    from mic.experiment import build_experiment, load_config

    s = SETTINGS[task]
    overrides = [
        *common(task, seed),
        "method=source_only",
        "mic=none",
        f"iterations={s['warmup']}",
        "eval.interval=0",
        "eval.validators=[]",
    ]
    exp = build_experiment(load_config(overrides))
    t0 = time.perf_counter()
    exp.loop.run()
    torch.save(exp.student.state_dict(), path)
    record = exp.evaluation.history[-1]
    return {"metric": record[f"eval/student/{METRIC[task]}"], "seconds": time.perf_counter() - t0}


def run(task: str, seed: int, setting: str, start: Path) -> dict:
    """One run of the sweep from the warm-up model; every evaluation's scores."""
    import torch

    from mic.experiment import build_experiment, load_config

    s = SETTINGS[task]
    overrides = [
        *common(task, seed),
        *sweep(task)[setting],
        *s["validation"],
        f"iterations={s['iterations']}",
        f"eval.interval={s['interval']}",
    ]
    exp = build_experiment(load_config(overrides))
    exp.student.load_state_dict(torch.load(start))
    t0 = time.perf_counter()
    exp.loop.run()
    metric = METRIC[task]
    checkpoints = [
        {
            "step": r["step"],
            "metric": r[f"eval/student/{metric}"],
            **{v: r.get(f"validator/student/{v}") for v in VALIDATORS},
        }
        for r in exp.evaluation.history
    ]
    return {
        "task": task,
        "seed": seed,
        "setting": setting,
        "overrides": overrides,
        "checkpoints": checkpoints,
        "seconds": time.perf_counter() - t0,
    }


# ------------------------------------------------------------------------------ statistics
def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def spearman(xs: list[float], ys: list[float]) -> float:
    from scipy.stats import spearmanr

    pairs = [(x, y) for x, y in zip(xs, ys) if _finite(x) and _finite(y)]
    if len(pairs) < 3 or len({p[0] for p in pairs}) < 2 or len({p[1] for p in pairs}) < 2:
        return math.nan
    return float(spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic)


def pooled_spearman(runs: list[dict], v: str) -> float:
    points = [c for r in runs for c in r["checkpoints"]]
    return spearman([c[v] for c in points], [c["metric"] for c in points])


def bootstrap_interval(runs: list[dict], v: str, n: int = 1000) -> tuple[float, float]:
    """95 % percentile interval of the pooled Spearman over runs resampled with replacement."""
    rng = random.Random(0)
    values = []
    for _ in range(n):
        sample = [rng.choice(runs) for _ in runs]
        rho = pooled_spearman(sample, v)
        if _finite(rho):
            values.append(rho)
    if len(values) < n // 2:
        return math.nan, math.nan
    values.sort()
    return values[int(0.025 * len(values))], values[int(0.975 * len(values)) - 1]


def pick(checkpoints: list[dict], v: str) -> dict | None:
    """The checkpoint with the highest finite score ``v`` (the earliest among ties)."""
    scored = [c for c in checkpoints if _finite(c.get(v))]
    return max(scored, key=lambda c: c[v]) if scored else None


def selection(runs: list[dict], v: str, task: str) -> dict[str, Any]:
    within = []  # per run: (picked, best, last)
    for r in runs:
        chosen = pick(r["checkpoints"], v)
        if chosen is not None:
            best = max(c["metric"] for c in r["checkpoints"])
            within.append((chosen["metric"], best, r["checkpoints"][-1]["metric"]))
    across = []  # per seed: (picked, best, last of the published setting)
    for seed in sorted({r["seed"] for r in runs}):
        of_seed = [r for r in runs if r["seed"] == seed]
        everything = [c for r in of_seed for c in r["checkpoints"]]
        chosen = pick(everything, v)
        default = [r for r in of_seed if r["setting"] == default_setting(task)]
        if chosen is not None and default:
            best = max(c["metric"] for c in everything)
            across.append((chosen["metric"], best, default[0]["checkpoints"][-1]["metric"]))
    return {"within": within, "across": across}


def mean(values: list[float]) -> float:
    return statistics.mean(values) if values else math.nan


def ci95(values: list[float]) -> float:
    """Half-width of a 95 % t interval of the mean (NaN for fewer than two values)."""
    from scipy.stats import t

    if len(values) < 2:
        return math.nan
    return float(t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values)))


def figures(runs: list[dict], task: str) -> dict[str, dict[str, Any]]:
    out = {}
    for v in VALIDATORS:
        sel = selection(runs, v, task)
        lo, hi = bootstrap_interval(runs, v)
        within, across = sel["within"], sel["across"]
        out[v] = {
            "spearman": pooled_spearman(runs, v),
            "spearman_ci95": [lo, hi],
            "points": sum(1 for r in runs for c in r["checkpoints"] if _finite(c.get(v))),
            "within_picked": mean([p for p, _, _ in within]),
            "within_minus_best": [p - b for p, b, _ in within],
            "within_minus_last": [p - last for p, _, last in within],
            "across_picked": [p for p, _, _ in across],
            "across_best": [b for _, b, _ in across],
            "across_default_last": [d for _, _, d in across],
        }
    last = [r["checkpoints"][-1]["metric"] for r in runs]
    best = [max(c["metric"] for c in r["checkpoints"]) for r in runs]
    out["_runs"] = {
        "runs": len(runs),
        "checkpoints": sum(len(r["checkpoints"]) for r in runs),
        "last_minus_best": [a - b for a, b in zip(last, best)],
        "metric_range": [
            min(c["metric"] for r in runs for c in r["checkpoints"]),
            max(c["metric"] for r in runs for c in r["checkpoints"]),
        ],
    }
    return out


# ------------------------------------------------------------------------------ reporting
def _pts(values: list[float]) -> str:
    """mean ± 95 % half-width, in points (metric x 100)."""
    if not values:
        return "-"
    m, h = 100 * mean(values), 100 * ci95(values)
    return f"{m:+.1f} ± {h:.1f}" if _finite(h) else f"{m:+.1f}"


def _abs(values: list[float]) -> str:
    return f"{100 * mean(values):.1f}" if values else "-"


def write_table(state: dict, path: Path) -> dict:
    tasks = [t for t in SETTINGS if any(r["task"] == t for r in state["runs"])]
    summary: dict[str, Any] = {}
    lines = [
        "# Label-free validators: how far they can choose checkpoints and hyperparameters",
        "",
        "Written by `benchmarks/model_selection.py` (its docstring gives the protocol).",
        "",
        *state.get("notes", []),
        "",
        "Columns: Spearman's rank correlation between the validator and the labelled target",
        "metric over every checkpoint of every run (95 % bootstrap interval over runs); the",
        "target metric (points) of the checkpoint the validator picks within each run, minus",
        "the best checkpoint of that run and minus its last checkpoint (mean ± 95 % t interval",
        "over runs); across the sweep of one seed, the metric of the validator's pick, of the",
        "best checkpoint of all, and of the last checkpoint of the published setting",
        "(lambda 1, published ratio), mean over seeds.",
        "",
        "| task (metric) | validator | Spearman ρ [95 % CI] | checkpoints | within run: picked "
        "− best | picked − last | across sweep: picked | best | published, last |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task in tasks:
        runs = [r for r in state["runs"] if r["task"] == task]
        fig = figures(runs, task)
        summary[task] = fig
        for v in VALIDATORS:
            f = fig[v]
            lo, hi = f["spearman_ci95"]
            rho = "-" if not _finite(f["spearman"]) else f"{f['spearman']:+.2f}"
            ci = "" if not _finite(lo) else f" [{lo:+.2f}, {hi:+.2f}]"
            lines.append(
                f"| {task} ({METRIC[task]}) | {v} | {rho}{ci} | {f['points']} "
                f"| {_pts(f['within_minus_best'])} | {_pts(f['within_minus_last'])} "
                f"| {_abs(f['across_picked'])} | {_abs(f['across_best'])} "
                f"| {_abs(f['across_default_last'])} |"
            )
        r = fig["_runs"]
        lo, hi = r["metric_range"]
        lines.append(
            f"| {task} ({METRIC[task]}) | *last checkpoint* | - | {r['checkpoints']} "
            f"| {_pts(r['last_minus_best'])} | 0 | - | - | - |"
        )
        summary[task]["_runs"]["metric_range"] = [lo, hi]
    lines += ["", "Runs (target metric of the student at each evaluation, points):", ""]
    for task in tasks:
        runs = sorted(
            (r for r in state["runs"] if r["task"] == task), key=lambda r: (r["seed"], r["setting"])
        )
        for r in runs:
            trace = " ".join(f"{100 * c['metric']:.1f}" for c in r["checkpoints"])
            lines.append(f"- {task}, seed {r['seed']}, {r['setting']}: {trace}")
    path.write_text("\n".join(lines) + "\n")
    return summary


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / max(1, len(tasks))
    for k, task in enumerate(tasks):
        xs = [i + (k - (len(tasks) - 1) / 2) * width for i in range(len(VALIDATORS))]
        rho = [summary[task][v]["spearman"] for v in VALIDATORS]
        lo = [summary[task][v]["spearman_ci95"][0] for v in VALIDATORS]
        hi = [summary[task][v]["spearman_ci95"][1] for v in VALIDATORS]
        err = [
            [r - a if _finite(a) else 0 for r, a in zip(rho, lo)],
            [b - r if _finite(b) else 0 for r, b in zip(rho, hi)],
        ]
        axes[0].bar(xs, rho, width, yerr=err, capsize=2, label=task)
        regret = [100 * mean(summary[task][v]["within_minus_best"]) for v in VALIDATORS]
        regret.append(100 * mean(summary[task]["_runs"]["last_minus_best"]))
        xs2 = [*xs, len(VALIDATORS) + (k - (len(tasks) - 1) / 2) * width]
        axes[1].bar(xs2, regret, width, label=task)
    axes[0].set_xticks(range(len(VALIDATORS)), VALIDATORS)
    axes[0].axhline(0, color="black", linewidth=0.8)
    axes[0].set_ylabel("Spearman ρ with the target metric")
    axes[0].set_title("rank correlation over all checkpoints (95 % CI)")
    axes[1].set_xticks(range(len(VALIDATORS) + 1), [*VALIDATORS, "last"])
    axes[1].axhline(0, color="black", linewidth=0.8)
    axes[1].set_ylabel("picked − best checkpoint of the run (points)")
    axes[1].set_title("checkpoint selection within a run (mean over runs)")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def apply_setting(parser: argparse.ArgumentParser, item: str) -> None:
    """Set one ``--set TASK.KEY=VALUE`` (VALUE in JSON) in ``SETTINGS``, refusing an unknown
    task or key (a typo ran the whole benchmark at the defaults), a value that is no JSON or
    of another type than the default's."""
    key, sep, value = item.partition("=")
    task, dot, name = key.partition(".")
    if not (sep and dot):
        parser.error(f"--set {item}: give TASK.KEY=VALUE, e.g. det_shapes.iterations=100")
    if task not in SETTINGS:
        parser.error(f"--set {item}: no task {task!r}; one of {', '.join(sorted(SETTINGS))}")
    if name not in SETTINGS[task]:
        keys = ", ".join(sorted(SETTINGS[task]))
        parser.error(f"--set {item}: {task} has no setting {name!r}; one of {keys}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parser.error(f"--set {item}: {value!r} is no JSON value (a number, or a list in [])")
    default = SETTINGS[task][name]
    if type(parsed) is not type(default) and not (
        isinstance(default, float) and type(parsed) is int
    ):
        parser.error(
            f"--set {item}: {task}.{name} takes {type(default).__name__} values (now "
            f"{json.dumps(default)}), got {json.dumps(parsed)}"
        )
    SETTINGS[task][name] = parsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--out", default=str(RESULTS / "model_selection.md"))
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "mic_selection"))
    parser.add_argument("--fresh", action="store_true", help="ignore cached runs")
    parser.add_argument("--table-only", action="store_true", help="rewrite table and plot")
    parser.add_argument("--note", action="append", default=[], help="a paragraph (repeatable)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="TASK.KEY=VALUE",
        help="change a SETTINGS entry for this call, e.g. det_shapes.iterations=100",
    )
    args = parser.parse_args()
    check_options(parser, args)
    for item in args.set:
        apply_setting(parser, item)

    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    cache = out.with_suffix(".json")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"runs": [], "calls": []}
    if cache.exists() and not args.fresh:
        state = json.loads(cache.read_text())
    state.setdefault("calls", [])
    if args.table_only and not state["runs"]:
        refuse_empty_table(parser, cache)
    t0 = time.perf_counter()
    if not args.table_only:
        done = {(r["task"], r["seed"], r["setting"]): r.get("settings") for r in state["runs"]}
        for task in args.tasks:
            made = {done[k] for k in done if k[0] == task and done[k] is not None}
            now = json.dumps(SETTINGS[task], sort_keys=True)
            if made - {now}:  # runs of other --set values
                sys.exit(
                    f"model_selection.py: {cache} holds {task} runs made with other settings "
                    f"({', '.join(sorted(made - {now}))}), not {now}: they would "
                    "be taken as these; rerun them with --fresh, or write elsewhere with --out"
                )
            digest = hashlib.sha1(now.encode()).hexdigest()
            for seed in args.seeds:  # the warm-up model of these settings alone
                start = work / f"{task}_seed{seed}_w{SETTINGS[task]['warmup']}_{digest[:8]}.pt"
                if not start.exists():
                    w = warm_up(task, seed, start)
                    score, seconds = 100 * w["metric"], w["seconds"]
                    print(f"{task} seed {seed}: warm-up {score:.1f} ({seconds:.0f} s)")
                for setting in sweep(task):
                    if (task, seed, setting) in done:
                        continue
                    r = run(task, seed, setting, start)
                    r["settings"] = now
                    state["runs"].append(r)
                    write_text_atomically(cache, json.dumps(state, indent=1))
                    trace = " ".join(f"{100 * c['metric']:.1f}" for c in r["checkpoints"])
                    print(
                        f"{task} seed {seed} {setting}: {trace} ({r['seconds']:.0f} s)", flush=True
                    )
        minutes = (time.perf_counter() - t0) / 60
        command = "python benchmarks/model_selection.py " + shlex.join(sys.argv[1:])
        threads = os.environ.get("OMP_NUM_THREADS", "unset")
        state["calls"].append(
            f"`OMP_NUM_THREADS={threads} {command.strip()}`: {minutes:.0f} min on a shared "
            f"{os.cpu_count()}-core CPU, one thread; settings {json.dumps(SETTINGS)}"
        )
    state["notes"] = [*args.note] or state.get("notes", [])
    notes = ["Commands:", "", *(f"- {c}" for c in state["calls"])]
    for paragraph in state["notes"]:
        notes += ["", paragraph]
    summary = write_table({**state, "notes": notes}, out)
    state["summary"] = summary
    write_text_atomically(cache, json.dumps(state, indent=1))
    plot(summary, out.with_suffix(".png"))
    print(out.read_text())


if __name__ == "__main__":
    main()
