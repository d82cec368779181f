"""Accuracy and speed of UDA methods on the bundled digits benchmark, over seeds.

    python benchmarks/digits.py                                  # the core rows, 5 seeds
    python benchmarks/digits.py --methods mean_teacher mean_teacher_mic --seeds 0 1 2 3 4 5 6 7
    python benchmarks/digits.py --device cuda --jobs 8           # parallel runs on one GPU
    python benchmarks/digits.py --methods dann dann_mic cdan cdan_mic mcc mcc_mic sdat sdat_mic \
        --seeds 0 1 2 --out benchmarks/results/digits_alignment.md \
        --include benchmarks/results/digits.json             # the alignment family
    python benchmarks/digits.py --variants dann --seeds 0 1 2 \
        --out benchmarks/results/digits_normalisation.md     # DANN's per-domain normalisation

``--variants`` adds, for each alignment method named, every variant of how BatchNorm sees the
two domains, with and without MIC: ``<method>_<joint|separate>[_<bn|dropout>][_mic]``, the
student's forward pass over source and target together (joint, published) or one per domain
(separate), and the domain discriminator with BatchNorm (published) or without (dropout 0.5).
Each variant is compared, paired by seed, with the method's published choice.

Every run is ``mic-train`` at its defaults (1000 iterations, the first 200 on the source
alone, Adam 1e-3, batch 64 + 64) plus the method's overrides and the seed. Scores: target test
accuracy of the student and of the EMA teacher, each after AdaBN re-estimation of BatchNorm
statistics on 10 target training batches (the evaluation protocol of every method). Results
are cached per (method, seed) in a JSON file beside the markdown table, so runs can be added
in several invocations; the table is rewritten from all cached runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from common import (
    check_options,
    check_overrides,
    config_record,
    device_name,
    interval95,
    mean_std,
    note_text,
    paired_differences,
    refuse_empty_table,
    time_training,
)

from mic.training.checkpoint import write_text_atomically

#: method name -> mic-train overrides
METHODS: dict[str, list[str]] = {
    "source_only": ["method=source_only", "mic=none"],
    "source_only_mic": ["method=source_only", "mic=block"],
    "mean_teacher": ["method=mean_teacher", "mic=none"],
    "mean_teacher_mic": ["method=mean_teacher", "mic=block"],
    "oracle": ["experiment=digits_oracle"],
    # the feature-alignment family (mic/tasks/classification/alignment.py)
    "dann": ["method=dann", "mic=none"],
    "dann_mic": ["method=dann", "mic=block"],
    "cdan": ["method=cdan", "mic=none"],
    "cdan_mic": ["method=cdan", "mic=block"],
    "mcc": ["method=mcc", "mic=none"],
    "mcc_mic": ["method=mcc", "mic=block"],
    "sdat": ["method=sdat", "mic=none"],
    "sdat_mic": ["method=sdat", "mic=block"],
    # CDAN with the reversed gradient also reaching the classifier through the conditioning
    # prediction (the CDAN authors' code; the default detaches it)
    "cdan_undetached": ["method=cdan", "mic=none", "method.terms.cdan.detach_prediction=false"],
    "cdan_undetached_mic": [
        "method=cdan",
        "mic=block",
        "method.terms.cdan.detach_prediction=false",
    ],
    # CDAN+E: each example's discriminator loss weighted by 1 + exp(-entropy) (Long et al.)
    "cdan_e": ["method=cdan_e", "mic=none"],
    "cdan_e_mic": ["method=cdan_e", "mic=block"],
}
#: alignment method -> the name of its adversarial term (None: no discriminator)
ADVERSARIAL = {"dann": "dann", "cdan": "cdan", "mcc": None, "sdat": "cdan"}
#: how the student sees the two domains (``forward_pass`` of the alignment terms)
FORWARD_PASSES = ("joint", "separate")
#: the discriminator's normalisation: BatchNorm (published) or none (dropout 0.5)
DISCRIMINATORS = {"bn": "true", "dropout": "false"}
#: the published choice of each alignment method, the reference of the variant comparison
PUBLISHED_VARIANT = {m: f"{m}_joint" + ("_bn" if ADVERSARIAL[m] else "") for m in ADVERSARIAL}


def _alignment_variants() -> dict[str, list[str]]:
    """``<method>_<forward pass>[_<discriminator>][_mic]`` -> overrides, each setting every
    choice explicitly (independent of the method configs' defaults)."""
    variants = {}
    for m, adversarial in ADVERSARIAL.items():
        for fp in FORWARD_PASSES:
            discriminators = DISCRIMINATORS.items() if adversarial else [(None, None)]
            for disc, batch_norm in discriminators:
                name = f"{m}_{fp}" + (f"_{disc}" if disc else "")
                base = [f"method={m}", f"method.forward_pass={fp}"]
                if adversarial:
                    base.append(f"method.terms.{adversarial}.batch_norm={batch_norm}")
                variants[name] = [*base, "mic=none"]
                variants[f"{name}_mic"] = [*base, "mic=block"]
    return variants


#: a peer term holds the source loss and the method's loss in one term, which trains at weight 1
#: (the loop's multiplier): the method config's weight, that of the method's loss alone (1.0 in
#: conf/method/), is the peer's ``part_weight`` (set it as method.terms.<term>.part_weight)
_PART_WEIGHT = {
    m: [f"~method.terms.{m}.weight", f"+method.terms.{m}.part_weight=1.0"]
    for m in ("dann", "cdan", "mcc")
}

#: digits.py method name -> the mic-train overrides that put a peer term in place of the
#: method's terms (the method config's settings reach the term; the source term is the
#: peer's own before adaptation and pytorch-adapt's ``c_loss`` after)
PEER_OVERRIDES: dict[str, list[str]] = {
    "pa_dann": [
        "method=dann",
        "~method.terms.source",
        "method.terms.dann._target_=peers.PytorchAdaptDANN",
        *_PART_WEIGHT["dann"],
    ],
    "pa_cdan": [
        "method=cdan",
        "~method.terms.source",
        "method.terms.cdan._target_=peers.PytorchAdaptCDAN",
        *_PART_WEIGHT["cdan"],
        "method.terms.cdan.batch_norm=false",
        "method.terms.cdan.detach_prediction=false",
        "+method.terms.cdan.optimizer=${optimizer}",
    ],
    "pa_cdan_bn": [
        "method=cdan",
        "~method.terms.source",
        "method.terms.cdan._target_=peers.PytorchAdaptCDAN",
        *_PART_WEIGHT["cdan"],
        "method.terms.cdan.batch_norm=true",
        "method.terms.cdan.detach_prediction=false",
        "+method.terms.cdan.optimizer=${optimizer}",
    ],
    "pa_mcc": [
        "method=mcc",
        "~method.terms.source",
        "method.terms.mcc._target_=peers.PytorchAdaptMCC",
        *_PART_WEIGHT["mcc"],
    ],
}

#: the alignment family's variants of per-domain normalisation (see ``write_table``)
VARIANTS = _alignment_variants()
METHODS.update(VARIANTS)
# pytorch-adapt's DANN, CDAN and MCC in mic's loop (peers.py), with and without MIC
for _name, _overrides in PEER_OVERRIDES.items():
    METHODS[_name] = [*_overrides, "mic=none"]
    METHODS[f"{_name}_mic"] = [*_overrides, "mic=block"]
#: mic's methods against pytorch-adapt's in the same loop, and the discriminator's effect
#: within pytorch-adapt's CDAN (its own against mic's BatchNorm one)
PEER_PAIRS = [
    ("dann", "pa_dann"),
    ("cdan", "pa_cdan"),
    ("mcc", "pa_mcc"),
    ("cdan", "pa_cdan_bn"),
    ("pa_cdan_bn", "pa_cdan"),
]

#: pairs whose per-seed difference is reported (with MIC minus without)
PAIRS = [
    ("source_only_mic", "source_only"),
    ("mean_teacher_mic", "mean_teacher"),
    *((f"{m}_mic", m) for m in ("dann", "cdan", "mcc", "sdat")),
    *((v, v[: -len("_mic")]) for v in VARIANTS if v.endswith("_mic")),
    ("cdan_undetached_mic", "cdan_undetached"),
    ("cdan_e_mic", "cdan_e"),
    *((f"{n}_mic", n) for n in PEER_OVERRIDES),
]
#: each variant against its method's published choice, with and without MIC
VARIANT_PAIRS = [
    (v + mic, PUBLISHED_VARIANT[v.split("_")[0]] + mic)
    for v in VARIANTS
    if not v.endswith("_mic") and v != PUBLISHED_VARIANT[v.split("_")[0]]
    for mic in ("", "_mic")
] + [
    ("cdan_undetached", "cdan"),
    ("cdan_undetached_mic", "cdan_mic"),
    ("cdan_e", "cdan"),
    ("cdan_e_mic", "cdan_mic"),
    *((a + mic, b + mic) for a, b in PEER_PAIRS for mic in ("", "_mic")),
]
CORE = ["source_only", "source_only_mic", "mean_teacher", "mean_teacher_mic", "oracle"]


def run_one(
    method: str, seed: int, device: str, threads: int, extra: list[str], config_only: bool = False
) -> dict:
    """One run of ``method`` (its row of scores); ``config_only``: the resolved config it
    would train with (``common.config_record``), without training."""
    import torch

    from mic.experiment import build_experiment, load_config

    overrides = [*METHODS[method], f"seed={seed}", f"device={device}", "log.progress=false", *extra]
    if config_only:
        return config_record(overrides)
    torch.set_num_threads(threads)
    exp = build_experiment(load_config(overrides))
    loop = exp.loop
    spent = time_training(loop)
    loop.run()
    final = exp.evaluation.history[-1]
    return {
        "method": method,
        "seed": seed,
        "student": final["eval/student/accuracy"],
        "teacher": final.get("eval/teacher/accuracy"),
        "seconds_per_iteration": spent[0] / loop.iterations,
        "device": device_name(loop),
        "overrides": [*METHODS[method], *extra],
    }


def _fmt(values: list[float]) -> str:
    return mean_std(values, digits=2)


def write_table(
    rows: list[dict], path: Path, command: str, methods: list[str], note: str = ""
) -> None:
    by = {}
    for r in rows:
        by.setdefault(r["method"], {})[r["seed"]] = r
    lines = [
        "# Digits benchmark: scikit-learn digits -> digits on scikit-image photos",
        "",
        "Target test accuracy (%, 450 images), mean ± std over seeds; AdaBN evaluation for",
        "every method; seconds per training iteration (evaluation excluded).",
        "",
        f"Command: `{command}`",
        "",
        *([note, ""] if note else []),
        "| method | seeds | student | student 95 % interval | teacher | teacher 95 % interval "
        "| s / iteration | device |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        runs = list(by.get(m, {}).values())
        if not runs:
            continue
        student = [r["student"] for r in runs]
        teacher = [r["teacher"] for r in runs if r["teacher"] is not None]
        spi = statistics.mean(r["seconds_per_iteration"] for r in runs)
        devices = ", ".join(sorted({r["device"] for r in runs}))
        lines.append(
            f"| {m} | {len(runs)} | {_fmt(student)} | {interval95(student, 2)} | {_fmt(teacher)} "
            f"| {interval95(teacher, 2)} | {spi:.4f} | {devices} |"
        )
    diffs = paired_differences(by, PAIRS, digits=2, interval=True)
    if diffs:
        lines += [
            "",
            "Paired differences (same seed: same initialisation and data order), points, with",
            "the 95 % interval of the mean difference:",
            "",
            "| pair | model | seeds | difference | 95 % interval | seeds where MIC is ahead |",
            "|---|---|---|---|---|---|",
            *diffs,
        ]
    variant_diffs = paired_differences(by, VARIANT_PAIRS, digits=2, interval=True)
    if variant_diffs:
        lines += [
            "",
            "Each variant against its reference, paired by seed, points: a normalisation",
            "variant against its method's published choice (joint forward pass, BatchNorm",
            "discriminator); cdan_undetached against cdan at the method config's defaults, whose",
            "conditioning prediction is detached (as in TLlib, which the published SDAT and MIC",
            "code use; the CDAN authors' code does not detach it); cdan_e (CDAN+E, entropy",
            "conditioning) against cdan; dann, cdan and mcc (mic's terms at the method configs'",
            "defaults) against pa_dann, pa_cdan and pa_mcc, pytorch-adapt's hooks in the same",
            "loop (peers.py), and pytorch-adapt's CDAN with mic's BatchNorm discriminator",
            "(pa_cdan_bn) against mic's CDAN and against pytorch-adapt's own discriminator:",
            "",
            "| pair | model | seeds | difference | 95 % interval | seeds where it is ahead |",
            "|---|---|---|---|---|---|",
            *variant_diffs,
        ]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", nargs="+", default=None, choices=sorted(METHODS))
    parser.add_argument(
        "--variants",
        nargs="+",
        default=[],
        choices=sorted(ADVERSARIAL),
        help="add every normalisation variant of these alignment methods (see above)",
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[0, 1, 2, 3, 4],
        help="each method runs each seed, again where the cache has the run (it is replaced); "
        "the cache's other runs are kept: name only the new seeds to add some",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per run (default: cores / jobs)"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "digits.md"))
    parser.add_argument(
        "--fresh", action="store_true", help="ignore cached runs (the table holds this call's)"
    )
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        help="another run's cache (.json) whose rows are added to the table, not to the cache "
        "(repeatable)",
    )
    parser.add_argument(
        "--note", default="", help="a paragraph written under the command (@file: the file's text)"
    )
    parser.add_argument(
        "--table-only",
        action="store_true",
        help="rewrite the table from the cached runs (and --note) without running any",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="extra mic-train overrides for every run (before the options, or after --)",
    )
    args = parser.parse_args()
    check_options(parser, args)
    args.note = note_text(args.note)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cache = out.with_suffix(".json")
    rows = [] if args.fresh or not cache.exists() else json.loads(cache.read_text())
    if args.table_only and not rows and not args.include:
        refuse_empty_table(parser, cache)
    chosen = list(args.methods or ([] if args.variants else CORE))
    chosen += [v for v in VARIANTS if v.split("_")[0] in args.variants and v not in chosen]
    todo = [(m, s) for s in args.seeds for m in chosen]  # seed by seed: pairs complete early
    todo = [] if args.table_only else todo
    check_overrides(parser, [[*METHODS[m], *args.overrides] for m in {m for m, _ in todo}])
    started = time.perf_counter()
    rows = [r for r in rows if (r["method"], r["seed"]) not in set(todo)]
    threads = args.threads or max(1, (os.cpu_count() or 2) // args.jobs)
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(run_one, m, s, args.device, threads, args.overrides) for m, s in todo
        ]
        for f in futures:
            r = f.result()
            rows.append(r)
            teacher = "-" if r["teacher"] is None else f"{100 * r['teacher']:.2f}"
            print(
                f"{r['method']:<18} seed {r['seed']}: student {100 * r['student']:.2f} "
                f"teacher {teacher} {r['seconds_per_iteration']:.4f} s/it",
                flush=True,
            )
            write_text_atomically(cache, json.dumps(rows, indent=1))
    included = [r for path in args.include for r in json.loads(Path(path).read_text())]
    included = [r for r in included if r["method"] not in {x["method"] for x in rows}]
    table = included + rows
    methods = [m for m in METHODS if any(r["method"] == m for r in table)]
    command = "python benchmarks/" + Path(sys.argv[0]).name + " " + shlex.join(sys.argv[1:])
    wall = (time.perf_counter() - started) / 60
    machine = args.device if args.device != "cpu" else f"{os.cpu_count()} CPU cores"
    timing = (
        f"Wall time: {wall:.0f} min for {len(todo)} runs, {args.jobs} at a time "
        f"({threads} threads each), on {machine}; load average at the end "
        f"{os.getloadavg()[0]:.1f}."
    )
    write_table(
        table,
        out,
        command.strip(),
        methods,
        "\n\n".join(filter(None, [args.note, None if args.table_only else timing])),
    )
    print(out.read_text())


if __name__ == "__main__":
    main()
