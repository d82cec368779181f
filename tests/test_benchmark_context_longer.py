import json
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import context_longer  # noqa: E402


def test_the_longer_arms_keep_the_suites_overrides_and_equal_time_factor():
    s = context_longer.settings(600)
    full = context_longer.suite.schedules("full")["context"]
    assert s["iterations"] == 600 and s["equal_time"] == ["iterations=870"]  # 435 / 300 = 1.45
    assert {k: v for k, v in s.items() if k not in ("iterations", "equal_time", "overrides")} == {
        k: v for k, v in full.items() if k not in ("iterations", "equal_time", "overrides")
    }
    # torchvision's colour operations pinned, as its results were made
    assert s["overrides"] == [*full["overrides"], "augmentation_jitter=torchvision"]
    # the same source model as the suite's, whatever the arms' iterations
    work = Path("/w")
    assert context_longer.source_model(work, 3) == context_longer.suite.warmup_path(
        work, "context", 3, full
    )


def test_the_table_pairs_the_arms_by_seed_beside_the_suites_runs():
    miou = {"dacs": [0.60, 0.50], "dacs_mic": [0.62, 0.51], "dacs_equal_time": [0.63, 0.49]}
    runs = {
        f"{m} {seed} 600": {"method": m, "seed": seed, "teacher_miou": v, "iterations": 600}
        for m, values in miou.items()
        for seed, v in enumerate(values)
    }
    reference = {"dacs": {0: {"teacher": 0.5}}, "dacs_mic": {0: {"teacher": 0.4}}}
    text = context_longer.table(runs, reference, 600, "A note.")
    # MIC - DACS: +2.0, +1.0; MIC - equal time: -1.0, +2.0
    assert (
        "| this script | 600 (870) | 2 | 55.0 ± 7.1 | 56.5 ± 7.8 | 56.0 ± 9.9 | 1.5 ± 0.7 | "
        "[-4.9, 7.9] | 2 / 2 | 0.5 ± 2.1 | [-18.6, 19.6] | 1 / 2 |" in text
    )
    assert (
        "| the suite's | 300 (435) | 1 | 50.0 | 40.0 | - | -10.0 | - | 0 / 1 | - | - | 0 / 0 |"
        in text
    )
    assert "A note." in text and "| 1 | 50.00 | 51.00 | 49.00 |" in text


def test_a_cached_run_records_the_iterations_it_trained_beside_its_schedule():
    """Every run was recorded with the schedule's 600 iterations, the equal-time arm's too,
    which trained 870."""
    equal = {"method": "dacs_equal_time", "overrides": ["method=dacs", "iterations=870"]}
    assert context_longer._recorded(equal, 600) == {**equal, "schedule": 600, "iterations": 870}
    plain = {"method": "dacs", "overrides": ["method=dacs", "iterations=600"]}
    assert context_longer._recorded(plain, 600)["iterations"] == 600
    cached = json.loads((ROOT / "benchmarks" / "results" / "context_longer.json").read_text())
    assert {r["iterations"] for r in cached.values() if r["method"] == "dacs_equal_time"} == {870}
    assert {r["schedule"] for r in cached.values()} == {600}
