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
    recorded = context_longer._recorded(equal, 600)
    assert recorded == {**equal, "schedule": 600, "iterations": 870, "jitter": "torchvision"}
    plain = {"method": "dacs", "overrides": ["method=dacs", "iterations=600"]}
    assert context_longer._recorded(plain, 600)["iterations"] == 600
    cached = json.loads((ROOT / "benchmarks" / "results" / "context_longer.json").read_text())
    assert cached.pop(context_longer.NOTE).startswith("Command:")  # the reading, kept
    assert {r["iterations"] for r in cached.values() if r["method"] == "dacs_equal_time"} == {870}
    assert {r["schedule"] for r in cached.values()} == {600}


def test_the_published_operations_are_pinned_and_keyed_apart_from_torchvisions():
    """``--jitter published`` pins mic's default for every arm, and its runs' cache keys
    differ from torchvision's (the first made, whose keys name no operations)."""
    s = context_longer.settings(600, "published")
    assert s["overrides"][-1] == "augmentation_jitter=published"
    assert context_longer._key("dacs", 3, 600, "torchvision") == "dacs 3 600"
    assert context_longer._key("dacs", 3, 600, "published") == "dacs 3 600 published"
    assert context_longer._recorded({"overrides": []}, 600, "published")["jitter"] == "published"


def test_the_reference_rows_take_the_suites_runs_made_with_the_same_operations(tmp_path):
    """A suite cache holding runs of both operations (seed 0 torchvision's, seed 1 the
    published ones) gives each ``--jitter`` its own."""
    full = context_longer.suite.schedules("full")["context"]
    key = "method.terms.mix.augmentation.jitter"
    runs, configs = {}, {"a": {key: "torchvision"}, "b": {key: "published"}}
    for seed, config, miou in ((0, "a", 0.5), (1, "b", 0.7)):
        k = context_longer.suite.run_key("context", "dacs", seed, full)
        runs[k] = {"method": "dacs", "seed": seed, "config": config, "teacher_miou": miou}
    path = tmp_path / "suite.json"
    path.write_text(json.dumps({"runs": runs, "configs": configs}))
    for jitter, seed, miou in (("torchvision", 0, 0.5), ("published", 1, 0.7)):
        (found,) = context_longer.reference_runs(path, jitter)["dacs"].items()
        assert found[0] == seed and found[1]["teacher"] == miou


def test_the_table_gives_each_class_paired_difference_where_the_runs_hold_them():
    iou = {"dacs": [(0.50, 0.80), (0.40, 0.90)], "dacs_mic": [(0.55, 0.70), (0.43, 0.80)]}
    runs = {
        f"{m} {seed} 600": {
            "method": m,
            "seed": seed,
            "teacher_miou": sum(v) / 2,
            "teacher_iou": {"road": v[0], "person": v[1]},
        }
        for m, values in iou.items()
        for seed, v in enumerate(values)
    }
    text = context_longer.table(runs, {}, 600, "")
    # road: +5, +3; person: -10, -10
    assert "| road | 4.0 ± 1.4 | [-8.7, 16.7] | 2 / 2 |" in text
    assert "| person | -10.0 ± 0.0 | [-10.0, -10.0] | 0 / 2 |" in text
    bare = {k: {x: y for x, y in r.items() if x != "teacher_iou"} for k, r in runs.items()}
    assert "Per class" not in context_longer.table(bare, {}, 600, "")


def test_a_table_made_again_keeps_the_reading_given_once(tmp_path):
    """``--note`` is kept in OUT.json, so ``--table-only`` without one keeps the reading (it
    rewrote OUT.md without it); a new ``--note`` replaces it."""
    reference = tmp_path / "suite.json"
    reference.write_text(json.dumps({"runs": {}, "configs": {}}))
    out = tmp_path / "longer"
    run = {"method": "dacs", "seed": 0, "teacher_miou": 0.6, "iterations": 600, "schedule": 600}
    out.with_suffix(".json").write_text(json.dumps({"dacs 0 600": run}))
    common = ["--table-only", "--out", str(out), "--reference", str(reference)]
    context_longer.main([*common, "--note", "Reading: first."])
    context_longer.main(common)
    assert "Reading: first." in out.with_suffix(".md").read_text()
    context_longer.main([*common, "--note", "Reading: second."])
    text = out.with_suffix(".md").read_text()
    assert "Reading: second." in text and "Reading: first." not in text
    assert json.loads(out.with_suffix(".json").read_text()) == {
        "dacs 0 600": run,
        "note": "Reading: second.",
    }
