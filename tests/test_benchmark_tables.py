"""The arithmetic behind the benchmark tables: mean ± std cells, 95 % intervals and paired
differences."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

from common import interval95, mean_std, paired_differences

ROOT = Path(__file__).parents[1]


def test_mean_std_scales_and_drops_missing_values():
    assert mean_std([0.5, 0.7, None, float("nan")]) == "60.0 ± 14.1"
    assert mean_std([0.123], digits=2) == "12.30"
    assert mean_std([None]) == "-"


def test_paired_differences_use_the_seeds_both_methods_scored():
    by = {
        "mic": {0: {"student": 0.9, "teacher": 0.8}, 1: {"student": 0.75, "teacher": None}},
        "base": {0: {"student": 0.8, "teacher": 0.9}, 1: {"student": 0.8, "teacher": 0.5}},
    }
    rows = paired_differences(by, [("mic", "base"), ("mic", "absent")])
    # student: +10 and -5 points over seeds 0 and 1; teacher: seed 0 alone (seed 1 unscored)
    assert rows == [
        "| mic - base | student | 2 | 2.5 ± 10.6 | 1 / 2 |",
        "| mic - base | teacher | 1 | -10.0 | 0 / 1 |",
    ]


def test_interval95_is_students_t_interval_of_the_mean():
    # mean 60, std 10 (n = 3): half-width t(0.975, 2) x 10 / sqrt(3) = 4.303 x 5.774 = 24.84
    assert interval95([0.5, 0.6, 0.7]) == "[35.2, 84.8]"
    assert interval95([0.5, None]) == "-"
    by = {
        "a": {0: {"student": 0.9}, 1: {"student": 0.8}},
        "b": {0: {"student": 0.8}, 1: {"student": 0.8}},
    }
    assert paired_differences(by, [("a", "b")], ("student",), interval=True) == [
        "| a - b | student | 2 | 5.0 ± 7.1 | [-58.5, 68.5] | 1 / 2 |"
    ]


def test_segmentation_table_names_its_experiment_and_keeps_the_streets_cache_keys(tmp_path):
    import segmentation

    assert segmentation._key("dacs", 0, ["a=1"]) == '["dacs", 0, ["a=1"]]'  # cached runs stay
    ctx = segmentation._key("dacs", 0, ["a=1"], "streets_context")
    assert ctx != segmentation._key("dacs", 0, ["a=1"])
    iou = dict.fromkeys(("road", "sidewalk", "person", "pole"), 0.5)
    run = {
        "method": "source_only",
        "seed": 0,
        "experiment": "streets_context",
        "seconds_per_iteration": 0.1,
        "device": "cpu",
        "iterations": 10,
        "overrides": ["method=source_only", "mic=none", "model=context_unet"],
        "student_miou": 0.5,
        "teacher_miou": None,
        "student_iou": iou,
        "teacher_iou": {},
    }
    path = tmp_path / "t.md"
    segmentation.write_table({"runs": {ctx: run}, "memory": {}}, "cpu", path, "", run["experiment"])
    text = path.read_text()
    assert text.startswith("# Segmentation: the context street-scene benchmark")
    assert "on top of `experiment=streets_context`: `model=context_unet`" in text
    assert "| source only | 1 | 50.0 | - | 50.0 |" in text


def test_record_training_logs_iteration_one_and_every_tenth():
    from common import record_training

    from mic.experiment import build_experiment, load_config

    overrides = ["iterations=21", "adaptation_start=0", "eval.interval=0", "device=cpu"]
    cfg = load_config([*overrides, "log.progress=false", "log.tensorboard=false"])
    exp = build_experiment(cfg)
    records = record_training(exp.loop)
    exp.loop.run()
    assert [r["step"] for r in records] == [1, 10, 20]
    assert all(isinstance(v, float) for r in records for k, v in r.items() if k != "step")
    assert {"source", "self_training", "mic"} <= set(records[-1])  # every term's loss


def test_model_selection_refuses_cached_runs_of_other_settings(tmp_path):
    """A second call with another --set took the first call's runs as its own, and recorded
    its settings as if they had been run."""
    import json
    import subprocess

    out = tmp_path / "ms.md"
    other = json.dumps({"iterations": 100}, sort_keys=True)
    run = {"task": "digits", "seed": 0, "setting": "published", "settings": other}
    out.with_suffix(".json").write_text(json.dumps({"runs": [run], "calls": []}))
    script = Path(__file__).parents[1] / "benchmarks" / "model_selection.py"
    command = [sys.executable, str(script), "--tasks", "digits", "--seeds", "0"]
    done = subprocess.run(
        [*command, "--out", str(out), "--work", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "holds digits runs made with other settings" in done.stderr
    assert not (tmp_path / "work").exists() or not list((tmp_path / "work").iterdir())


@pytest.mark.parametrize("script", ["digits", "segmentation", "detection"])
def test_a_benchmark_script_refuses_bad_options_before_any_run(script, tmp_path):
    """--jobs 0 ended in ZeroDivisionError or max_workers' ValueError, --device cuda without a
    GPU in a worker's chained tracebacks."""
    import subprocess

    import torch

    def run(*options: str) -> subprocess.CompletedProcess:
        command = [sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), *options]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    out = run("--jobs", "0", "--out", str(tmp_path / "a.md"))
    assert out.returncode == 2 and "error: --jobs must be at least 1, got 0" in out.stderr
    assert "Traceback" not in out.stderr
    if not torch.cuda.is_available():
        out = run("--device", "cuda", "--out", str(tmp_path / "a.md"))
        assert out.returncode == 2 and "there is no CUDA device here" in out.stderr
    # a seed given twice was run twice
    out = run("--seeds", "0", "0", "--out", str(tmp_path / "a.md"))
    assert out.returncode == 2 and "--seeds must be distinct and at least 0, got 0 0" in out.stderr
    if script == "detection":  # (accepted, after a warm-up of 2,000 iterations)
        out = run("--iterations", "0", "--out", str(tmp_path / "a.md"))
        assert out.returncode == 2 and "--iterations must be at least 1, got 0" in out.stderr


def test_the_preflight_benchmark_refuses_bad_options_and_writes_where_told(tmp_path):
    """--pairs 0 and --repeats 0 ended in tracebacks; it could only write into the repo."""
    import subprocess

    def run(*options: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "benchmarks.preflight", *options]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)

    for options, said in (
        (["--pairs", "0"], "--pairs must be at least 1, got 0"),
        (["--repeats", "0"], "--repeats must be at least 1, got 0"),
    ):
        out = run(*options)
        assert out.returncode == 2 and said in out.stderr
    (tmp_path / "file").write_text("x")
    out = run("--root", str(tmp_path / "file"))
    assert out.returncode == 2 and "is a file, not a folder" in out.stderr
    options = ["--pairs", "3", "--repeats", "1", "--root", str(tmp_path / "gta")]
    out = run(*options, "--out", str(tmp_path / "results" / "p.md"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "GTA5(root).preflight()" in (tmp_path / "results" / "p.md").read_text()


def test_the_digits_benchmark_refuses_bad_overrides_before_any_run(tmp_path):
    """A typo in an override ended in an 88-line traceback of a worker, after the runs
    before it."""
    import subprocess

    for override, said in (
        ("foo.bar=1", "the overrides: mic-train has no setting 'foo'"),
        ("iterations=abc", "iterations: Input should be a valid integer, not text (got 'abc')"),
    ):
        script = str(ROOT / "benchmarks" / "digits.py")
        options = ["--methods", "mean_teacher", "--seeds", "0", "--out", str(tmp_path / "a.md")]
        command = [sys.executable, script, *options, override]
        out = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and said in out.stderr and "Traceback" not in out.stderr
        assert not (tmp_path / "a.json").exists()  # no run


def test_the_folder_of_a_benchmark_s_out_is_made_before_its_runs(tmp_path):
    """segmentation.py, hrda.py and context_ablation.py wrote into a missing folder only
    after their runs, and lost them to FileNotFoundError."""
    import argparse

    from common import check_options

    check_options(argparse.ArgumentParser(), argparse.Namespace(out=tmp_path / "new" / "a.md"))
    assert (tmp_path / "new").is_dir()


def test_a_source_stage_is_saved_into_a_work_folder_not_made_yet(tmp_path, monkeypatch):
    """context_ablation.py and detection_ablation.py trained a source stage into a --work
    folder that did not exist yet, then lost it to torch.save's "Parent directory ... does
    not exist"."""
    import segmentation
    import suite
    import torch

    def warmup(seed, steps, device, threads, extra, path, experiment, config_only=False):
        if not config_only:
            torch.save({"seed": seed}, path)
        return {"miou": 0.5}

    monkeypatch.setattr(segmentation, "warmup", warmup)
    path = tmp_path / "work" / "context_warmup_seed0.pt"
    settings = {"warmup": 2, "overrides": []}
    suite.warm_up("context", 0, settings, "cpu", 1, str(path))
    assert torch.load(path) == {"seed": 0}
