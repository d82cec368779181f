"""The benchmark suite (``python -m benchmarks``): its table and plot from cached runs, its
options and the settings of each mode; no training."""

import concurrent.futures
import json
import shlex
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import suite  # noqa: E402
from common import config_changes  # noqa: E402

QUICK = suite.schedules("quick")


def _state() -> dict:
    """Cached rows in each script's own format: digits (3 seeds, no per-class scores), street
    scenes (2 seeds, per-class IoU dicts), fog shapes (2 seeds, AP per class, SADA without a
    teacher)."""
    runs = {}

    def add(task, method, seed, row):
        base = {"method": method, "seed": seed, "seconds_per_iteration": 0.1, "device": "cpu"}
        runs[suite.run_key(task, method, seed, QUICK[task])] = {"task": task, **base, **row}

    for seed, (mt, mic) in enumerate([(0.90, 0.93), (0.92, 0.91), (0.91, 0.95)]):
        add("classification", "mean_teacher", seed, {"student": mt - 0.01, "teacher": mt})
        add("classification", "mean_teacher_mic", seed, {"student": mic, "teacher": mic})
    seg = {
        "dacs": [(0.60, {"road": 0.80, "pole": 0.10}), (0.50, {"road": 0.70, "pole": 0.20})],
        "dacs_mic": [(0.62, {"road": 0.85, "pole": 0.05}), (0.49, {"road": 0.75, "pole": 0.30})],
    }
    for method, rows in seg.items():
        for seed, (miou, iou) in enumerate(rows):
            row = {"student_miou": miou, "teacher_miou": miou, "student_iou": iou}
            add("segmentation", method, seed, {**row, "teacher_iou": iou})
    for seed in (0, 1):
        add(
            "detection",
            "sada",
            seed,
            {"student": 0.80, "teacher": None, "student_per_class": [0.9, 0.8, 0.7, 0.6]},
        )
        add(
            "detection",
            "sada_mic",
            seed,
            {
                "student": 0.79 + 0.02 * seed,
                "teacher": 0.8,
                "student_per_class": [1.0, 0.8, 0.7, 0.5],
            },
        )
    # a run of another schedule (the full one) must stay out of the quick table
    runs[
        suite.run_key(
            "classification", "mean_teacher", 7, suite.schedules("full")["classification"]
        )
    ] = {
        "task": "classification",
        "method": "mean_teacher",
        "seed": 7,
        "student": 0.1,
        "teacher": 0.1,
        "seconds_per_iteration": 0.1,
        "device": "cpu",
    }
    return {"runs": runs, "warmups": {}, "calls": []}


def test_paired_differences_intervals_and_wins_from_cached_rows():
    table = suite.summarise(_state(), QUICK, "quick")
    digits = table["tasks"]["classification"]
    assert digits["methods"]["mean_teacher"]["seeds"] == [0, 1, 2]  # seed 7 is the full schedule
    assert digits["methods"]["mean_teacher"]["teacher"]["mean"] == pytest.approx(91.0)
    d = digits["pair"]["models"]["teacher"]
    # per seed +3, -1, +4 points: mean 2, std sqrt(7); t(0.975, 2) = 4.303: half-width 6.57
    assert d["per_seed"] == pytest.approx([3.0, -1.0, 4.0])
    assert d["mean"] == pytest.approx(2.0)
    assert d["std"] == pytest.approx(7**0.5)
    assert d["ci95"] == pytest.approx([2 - 6.5724, 2 + 6.5724], abs=1e-3)
    assert (d["mic_ahead"], d["n"]) == (2, 3)
    assert digits["pair"]["per_class"] == {}  # digits report no per-class scores

    seg = table["tasks"]["segmentation"]["pair"]
    assert seg["per_class"]["road"]["per_seed"] == pytest.approx([5.0, 5.0])
    assert seg["per_class"]["road"]["mic_ahead"] == 2
    assert seg["per_class"]["pole"]["per_seed"] == pytest.approx([-5.0, 10.0])
    assert seg["per_class"]["pole"]["mic_ahead"] == 1

    det = table["tasks"]["detection"]["pair"]
    assert list(det["models"]) == ["student"]  # SADA has no teacher: no teacher pair
    assert det["models"]["student"]["per_seed"] == pytest.approx([-1.0, 1.0])
    assert list(det["per_class"]) == ["disc", "square", "triangle", "cross"]
    assert det["per_class"]["disc"]["mean"] == pytest.approx(10.0)
    assert det["per_class"]["cross"]["mic_ahead"] == 0


def test_markdown_rows_carry_intervals_wins_per_class_and_rerun_commands():
    state = _state()
    md = suite.markdown(suite.summarise(state, QUICK, "quick"), state)
    assert (
        "| classification | target test accuracy (%), teacher | mean_teacher | 91.00 ± 1.00" in md
    )
    assert "| +2.00 ± 2.65 | [-4.57, +8.57] | 2 / 3 |" in md
    assert (
        "| mean_teacher_mic - mean_teacher | teacher | 3 | 2.00 ± 2.65 | [-4.57, 8.57] | 2 / 3 |"
        in md
    )
    assert "| dacs_mic - dacs | road | 2 | 5.0 ± 0.0 | [5.0, 5.0] | 2 / 2 |" in md
    assert "| sada_mic - sada | cross | 2 |" in md
    assert (
        "`python -m benchmarks --quick --tasks detection --methods sada --seeds 0 1 --fresh`" in md
    )
    assert (
        "Rerun the pair: `python -m benchmarks --quick --tasks segmentation --methods dacs dacs_mic"
        in md
    )


def test_from_cache_writes_table_json_and_plot_without_training(tmp_path, monkeypatch):
    out = tmp_path / "suite"
    out.with_suffix(".json").write_text(json.dumps(_state()))
    monkeypatch.setattr(suite, "train", lambda *a: pytest.fail("--from-cache must not train"))
    suite.main(["--from-cache", "--out", str(out)])
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(out.with_suffix(".json").read_text())
    assert set(saved["tables"]["quick"]["tasks"]) == {"classification", "segmentation", "detection"}
    assert len(saved["runs"]) == len(_state()["runs"])  # the cache is kept beside the table
    md = out.with_suffix(".md").read_text()
    assert "## segmentation" in md
    # the one full-schedule run has a table of its own, after which comes the quick one
    assert md.index("(full mode)") < md.index("(quick mode)")
    assert set(saved["tables"]["full"]["tasks"]) == {"classification"}
    quick_only = _state()
    quick_only["runs"] = {k: r for k, r in quick_only["runs"].items() if r["seed"] != 7}
    out.with_suffix(".json").write_text(json.dumps(quick_only))
    with pytest.raises(SystemExit, match="holds no runs of --full"):
        suite.main(["--from-cache", "--full", "--out", str(out)])


def test_from_cache_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="holds no runs"):
        suite.main(["--from-cache", "--out", str(tmp_path / "suite")])


def test_missing_matplotlib_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    table = suite.summarise(_state(), QUICK, "quick")
    with pytest.raises(SystemExit, match=r"pip install -e '\.\[bench\]'"):
        suite.plot(table, tmp_path / "suite.png")


def test_modes_map_to_settings_and_options_override_them(tmp_path):
    args = suite.parse_args([])
    assert args.mode == "quick" and args.tasks == list(suite.TASKS)
    assert args.settings["classification"]["seeds"] == [0, 1, 2]
    assert "iterations=150" in args.settings["classification"]["overrides"]
    assert args.out == ROOT / "benchmarks" / "results" / "suite"

    full = suite.parse_args(["--full", "--tasks", "classification", "detection"])
    assert list(full.settings) == ["classification", "detection"]
    assert full.settings["classification"]["seeds"] == list(range(10))
    # at least 10 paired seeds per task in the full mode
    assert all(s["seeds"] == list(range(10)) for s in suite.schedules("full").values())
    assert full.settings["classification"]["overrides"] == []
    assert full.settings["detection"]["warmup"] > QUICK["detection"]["warmup"]
    assert suite.settings_key(full.settings["detection"]) != suite.settings_key(QUICK["detection"])

    args = suite.parse_args(["--seeds", "4", "5", "--out", str(tmp_path / "x.md")])
    assert all(s["seeds"] == [4, 5] for s in args.settings.values())
    assert args.out == tmp_path / "x"
    with pytest.raises(SystemExit):
        suite.parse_args(["--quick", "--full"])


def test_runs_at_a_time_default_to_one_per_cpu_core(monkeypatch):
    monkeypatch.setattr(suite.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert suite.parse_args([]).jobs == 3
    assert suite.parse_args(["--jobs", "1"]).jobs == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert suite.parse_args(["--device", "auto"]).jobs == 3  # auto is the CPU here
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert suite.parse_args(["--device", "cuda"]).jobs == 1  # --jobs N shares a GPU out
    assert suite.parse_args(["--device", "cuda", "--jobs", "4"]).jobs == 4
    with pytest.raises(SystemExit):
        suite.parse_args(["--jobs", "0"])


def test_more_jobs_than_cores_is_a_warning(monkeypatch, capsys):
    monkeypatch.setattr(suite.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert suite.parse_args(["--jobs", "2"]).jobs == 2
    assert capsys.readouterr().err == ""
    assert suite.parse_args(["--jobs", "5"]).jobs == 5
    err = capsys.readouterr().err
    assert err.startswith("warning: --jobs 5 is more than the 2 CPU cores") and err.count("\n") == 1


def test_cached_runs_are_not_run_again():
    state = _state()
    args = suite.parse_args(["--tasks", "classification", "--seeds", "0", "1", "2", "3"])
    todo = suite.missing_runs(args, state)
    # the digits' equal-time base has no cached run yet: every seed of it is to do
    assert [(t, m, s) for t, m, s, _ in todo] == [
        ("classification", "mean_teacher_equal_time", 0),
        ("classification", "mean_teacher_equal_time", 1),
        ("classification", "mean_teacher_equal_time", 2),
        ("classification", "mean_teacher", 3),
        ("classification", "mean_teacher_mic", 3),
        ("classification", "mean_teacher_equal_time", 3),
    ]
    args = suite.parse_args(["--tasks", "classification", "--methods", "mean_teacher", "--fresh"])
    assert [(m, s) for _, m, s, _ in suite.missing_runs(args, state)] == [
        ("mean_teacher", 0),
        ("mean_teacher", 1),
        ("mean_teacher", 2),
    ]


def _suite(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """``python -m benchmarks`` with ``args``, as a user runs it."""
    command = [sys.executable, "-m", "benchmarks", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, **kwargs)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "-1"], "--seeds must be distinct and at least 0, got -1"),
        (["--seeds", "0", "1", "0"], "--seeds must be distinct and at least 0, got 0 1 0"),
        (["--threads", "-1"], "--threads must be at least 0"),
        (["--device", "nonsense"], "--device nonsense: choose cpu, cuda, cuda:N or auto"),
        (["--note", "@{tmp}/missing.md"], "--note @{tmp}/missing.md: No such file"),
        (["--out", "{tmp}/a_file/suite"], "--out: cannot write in {tmp}/a_file"),
        (["--work", "{tmp}/a_file/work"], "--work: cannot write in {tmp}/a_file/work"),
        (
            ["--from-cache", "--tasks", "classification", "--seeds", "0"],
            "--tasks and --seeds choose the runs to train",
        ),
        (["--from-cache", "--fresh"], "--fresh trains the runs again and --from-cache trains"),
    ],
)
def test_bad_options_are_one_message_before_any_training(args, message, tmp_path, capsys):
    (tmp_path / "a_file").write_text("a file, not a folder")
    good = ["--out", str(tmp_path / "suite"), "--work", str(tmp_path / "w")]
    # the bad option last: argparse keeps the last of a repeated one
    with pytest.raises(SystemExit) as info:
        suite.parse_args([*good, *[a.format(tmp=tmp_path) for a in args]])
    assert info.value.code == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err


def test_checking_the_options_creates_and_leaves_nothing(tmp_path):
    out, work = tmp_path / "new" / "suite", tmp_path / "work"
    suite.parse_args(["--out", str(out), "--work", str(work)])
    assert list(tmp_path.iterdir()) == []  # made when the suite writes there, not before
    with pytest.raises(SystemExit):  # a call that fails after the folders were looked at
        suite.parse_args(["--out", str(out), "--work", str(work), "--seeds", "0", "0"])
    assert list(tmp_path.iterdir()) == []
    # --from-cache writes nothing in --work: not looked at
    (tmp_path / "a_file").write_text("a file")
    args = suite.parse_args(["--from-cache", "--out", str(out), "--work", str(tmp_path / "a_file")])
    assert args.from_cache
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_a_folder_as_out_holds_suite_files(tmp_path):
    new = tmp_path / "new"
    assert suite.parse_args(["--out", f"{new}/"]).out == new / "suite"  # trailing slash
    assert suite.parse_args(["--out", str(tmp_path)]).out == tmp_path / "suite"  # a folder
    assert suite.parse_args(["--out", str(new)]).out == new  # a name: new.md, new.json


def test_help_gives_the_out_default_and_every_device_choice(capsys):
    with pytest.raises(SystemExit) as info:
        suite.parse_args(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default: {ROOT / 'benchmarks' / 'results' / 'suite'})" in text
    assert "cpu (default), cuda, cuda:N, or auto" in text


def test_a_bad_option_reaches_the_user_as_one_message(tmp_path):
    # as a user meets it: --from-cache, so that a check letting the value through would end
    # in "holds no runs" (status 1), not train
    out = _suite("--from-cache", "--out", str(tmp_path / "suite"), "--seeds", "0", "0")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "--seeds must be distinct and at least 0, got 0 0" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"runs": [1]}'])
def test_a_file_that_is_no_suite_cache_is_a_clear_error_and_is_kept(text, tmp_path):
    cache = tmp_path / "suite.json"
    cache.write_text(text)
    with pytest.raises(SystemExit, match=f"{cache} is not a cache of the suite"):
        suite.main(["--from-cache", "--out", str(tmp_path / "suite")])
    assert cache.read_text() == text
    if text == "{not json":  # as a user meets it
        out = _suite("--from-cache", "--out", str(tmp_path / "suite"))
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert f"{cache} is not a cache of the suite" in out.stderr


def test_a_dot_in_out_is_part_of_the_name(tmp_path):
    args = suite.parse_args(["--out", str(tmp_path / "suite_v1.5")])
    assert suite.out_file(args.out, ".json") == tmp_path / "suite_v1.5.json"
    args = suite.parse_args(["--out", str(tmp_path / "suite_v1.5.md")])
    assert suite.out_file(args.out, ".png") == tmp_path / "suite_v1.5.png"


@pytest.mark.slow
def test_ctrl_c_stops_at_once_and_keeps_the_finished_runs(tmp_path):
    import os
    import signal
    import time

    command = [sys.executable, "-m", "benchmarks", "--tasks", "classification"]
    command += ["--methods", "mean_teacher", "--seeds", "0", "1", "2", "--jobs", "1"]
    command += ["--out", str(tmp_path / "suite"), "--work", str(tmp_path / "w")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    for line in proc.stdout:  # the first run finished, the second one running
        if "mean_teacher seed 0:" in line:
            break
    time.sleep(2)
    t0 = time.perf_counter()
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole process group
    _, err = proc.communicate(timeout=60)
    assert time.perf_counter() - t0 < 30
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    assert "interrupted: 1 run of 3 finished and kept in" in err
    assert "leaked semaphore" not in err  # the killed worker left no named semaphore
    runs = json.loads((tmp_path / "suite.json").read_text())["runs"]
    assert [json.loads(k)[2] for k in runs] == [0]


def test_unknown_task_or_method_is_a_clear_error(capsys):
    out = _suite("--tasks", "classification", "streets")
    assert out.returncode == 2
    assert "invalid choice: 'streets'" in out.stderr
    assert "classification" in out.stderr and "detection" in out.stderr
    with pytest.raises(SystemExit):
        suite.parse_args(["--tasks", "classification", "--methods", "dacs"])
    err = capsys.readouterr().err
    assert "--methods dacs: not a method of the tasks classification" in err
    assert "mean_teacher mean_teacher_equal_time mean_teacher_mic" in err


def test_identical_arms_are_pointed_out():
    state = _state()
    for key, row in state["runs"].items():
        if row["task"] == "segmentation" and row["method"] == "dacs_mic":
            base = state["runs"][key.replace("dacs_mic", "dacs")]
            row.update({k: base[k] for k in ("student_miou", "teacher_miou", "teacher_iou")})
    md = suite.markdown(suite.summarise(state, QUICK, "quick"), state)
    assert md.count("scored identically in every seed") == 1  # the street scenes alone
    assert "| dacs_mic - dacs | teacher | 2 | 0.0 ± 0.0 | [0.0, 0.0] | 0 / 2 |" in md


def test_warm_started_context_task_reports_its_source_model_and_pairs(tmp_path):
    """The context scenes: both arms of a seed from one source-only model, whose score (mIoU of
    the warm-up row) the table reports beside the paired rows."""
    settings = QUICK["context"]
    assert settings["warmup"] > 0 and settings["iterations"] > 0
    state = {"runs": {}, "warmups": {}, "calls": []}
    for seed, (dacs, mic) in enumerate([(0.70, 0.72), (0.60, 0.61)]):
        for method, miou in (("dacs", dacs), ("dacs_mic", mic)):
            row = {"method": method, "seed": seed, "seconds_per_iteration": 0.2, "device": "cpu"}
            iou = {"road": miou, "person": miou / 2}
            state["runs"][suite.run_key("context", method, seed, settings)] = {
                "task": "context",
                **row,
                "student_miou": miou,
                "teacher_miou": miou,
                "student_iou": iou,
                "teacher_iou": iou,
            }
        warm = {"seed": seed, "steps": settings["warmup"], "miou": 0.5 + 0.1 * seed}
        state["warmups"][suite.run_key("context", "warmup", seed, settings)] = warm
    table = suite.summarise(state, {"context": settings}, "quick")
    context = table["tasks"]["context"]
    assert context["warmup"]["mean"] == pytest.approx(55.0)
    assert context["pair"]["models"]["teacher"]["per_seed"] == pytest.approx([2.0, 1.0])
    assert context["pair"]["per_class"]["person"]["per_seed"] == pytest.approx([1.0, 0.5])
    md = suite.markdown(table, state)
    assert "## context: context street scenes" in md
    assert f"source-only model after {settings['warmup']} warm-up iterations" in md
    assert "Source model after the warm-up: 55.0 ± 7.1 (2 seeds)." in md
    assert "| dacs_mic - dacs | person | 2 |" in md
    # each (task, seed) has its own source model file
    paths = {suite.warmup_path(tmp_path, t, 0, QUICK[t]) for t in ("context", "detection")}
    assert len(paths) == 2


def test_context_runs_wait_for_their_warm_up():
    args = suite.parse_args(["--tasks", "context", "--seeds", "3"])
    todo = suite.missing_runs(args, {"runs": {}, "warmups": {}})
    assert [(t, m, s) for t, m, s, _ in todo] == [
        ("context", "dacs", 3),
        ("context", "dacs_mic", 3),
        ("context", "dacs_equal_time", 3),
    ]
    assert "streets_context" in suite.TASKS["context"].benchmark


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_warm_started_equal_time_base_runs_the_longer_schedule(mode, monkeypatch, tmp_path):
    """The context scenes' equal-time base is DACS from the same source model with the
    schedule's ``iterations`` replaced by the equal-time count (the script sets the iterations
    last, so an override alone would be overwritten)."""
    import segmentation

    settings = suite.schedules(mode)["context"]
    longer = int(settings["equal_time"][0].split("=")[1])
    assert longer > settings["iterations"]
    calls = []

    def fake(method, seed, device, threads, extra, experiment, start=None, config_only=False):
        calls.append((method, extra, start))
        return {"method": method, "seed": seed}

    monkeypatch.setattr(segmentation, "run_one", fake)
    row = suite.run("context", "dacs_equal_time", 0, settings, "cpu", 1, str(tmp_path / "w.pt"))
    assert row["method"] == "dacs_equal_time"
    ((method, extra, start),) = calls
    told = [o for o in extra if o.startswith("iterations=")]
    assert method == "dacs" and told == [f"iterations={longer}"]
    assert start == str(tmp_path / "w.pt")
    # the equal-time run starts from the same source model as the pair
    same = {**settings, "equal_time": None}
    assert suite.warmup_path(tmp_path, "context", 0, settings) == suite.warmup_path(
        tmp_path, "context", 0, same
    )


def test_a_warm_started_arm_s_training_time_counts_its_own_iterations():
    """detection.py's rows do not record their iteration count: the training time of each arm
    is its seconds per iteration times that arm's iterations in the schedule (the equal-time
    arm's own), not a count common to all arms."""
    settings = QUICK["detection"]
    longer = next(int(o[11:]) for o in settings["equal_time"] if o.startswith("iterations="))
    assert longer != settings["iterations"]
    state = {"runs": {}, "warmups": {}}
    for seed in (0, 1):
        for method, spi in (("sada", 0.25), ("sada_mic", 0.4), ("sada_equal_time", 0.25)):
            row = {"student": 0.5, "teacher": None, "seconds_per_iteration": spi, "device": "cpu"}
            key = suite.run_key("detection", method, seed, settings)
            state["runs"][key] = {"task": "detection", "method": method, "seed": seed, **row}
    table = suite.summarise(state, {"detection": settings}, "quick")
    ratio = table["tasks"]["detection"]["pair"]["equal_time"]["time_ratio"]
    assert ratio == pytest.approx([0.25 * longer / (0.4 * settings["iterations"])] * 2)


def test_equal_time_base_is_paired_with_mic_and_its_training_time_reported():
    """The base given MIC's wall time: a third method whose runs are keyed by its overrides,
    paired with MIC like the base, with the ratio of training times (seconds per iteration x
    iterations) in the table."""
    settings = QUICK["classification"]
    assert settings["equal_time"]
    state = _state()
    name = suite.TASKS["classification"].equal_time
    for seed, score in enumerate([0.92, 0.90, 0.93]):
        row = {
            "task": "classification",
            "method": name,
            "seed": seed,
            "student": score,
            "teacher": score,
            "seconds_per_iteration": 0.05,
            "device": "cpu",
            "overrides": [*settings["overrides"], *settings["equal_time"]],
        }
        state["runs"][suite.run_key("classification", name, seed, settings)] = row
    # MIC's runs: 0.1 s per iteration over the quick schedule's iterations
    for row in state["runs"].values():
        if row["method"] == "mean_teacher_mic":
            row["overrides"] = list(settings["overrides"])
    table = suite.summarise(state, QUICK, "quick")
    equal = table["tasks"]["classification"]["pair"]["equal_time"]
    # MIC 93, 91, 95 against 92, 90, 93
    assert equal["models"]["teacher"]["per_seed"] == pytest.approx([1.0, 1.0, 2.0])
    iterations = next(int(o[11:]) for o in settings["equal_time"] if o.startswith("iterations="))
    base = next(int(o[11:]) for o in settings["overrides"] if o.startswith("iterations="))
    assert equal["time_ratio"] == pytest.approx([0.5 * iterations / base] * 3)
    md = suite.markdown(table, state)
    assert f"| classification | target test accuracy (%), teacher | {name} | 91.67" in md
    assert f"| mean_teacher_mic - {name} | teacher | 3 | 1.33 ± 0.58 |" in md
    assert f"`{name}` is `mean_teacher` with `{' '.join(settings['equal_time'])}`" in md
    # other equal-time overrides: other runs, not matched to this schedule
    other = {**settings, "equal_time": ["iterations=999"]}
    assert suite.run_key("classification", name, 0, other) != suite.run_key(
        "classification", name, 0, settings
    )
    changed = {k: r for k, r in state["runs"].items() if r["method"] != name}
    for r in state["runs"].values():
        if r["method"] == name:
            changed[suite.run_key("classification", name, r["seed"], other)] = r
    state["runs"] = changed
    again = suite.summarise(state, QUICK, "quick")["tasks"]["classification"]
    assert "equal_time" not in again["pair"] and name not in again["methods"]


def test_one_seed_shows_no_std_interval_or_range():
    """A std, an interval or a range of one value is shown as ``-`` (or the value alone),
    not as ``± 0.00`` and ``1.18x to 1.18x``."""
    settings = QUICK["classification"]
    state = _state()
    state["runs"] = {
        k: r for k, r in state["runs"].items() if r["task"] == "classification" and r["seed"] == 0
    }
    name = suite.TASKS["classification"].equal_time
    row = {"task": "classification", "method": name, "seed": 0, "student": 0.9, "teacher": 0.9}
    row.update(seconds_per_iteration=0.05, device="cpu")
    row["overrides"] = [*settings["overrides"], *settings["equal_time"]]
    state["runs"][suite.run_key("classification", name, 0, settings)] = row
    for r in state["runs"].values():
        if r["method"] == "mean_teacher_mic":
            r["overrides"] = list(settings["overrides"])
    table = suite.summarise(state, QUICK, "quick")
    md = suite.markdown(table, state)
    assert "| classification | target test accuracy (%), teacher | mean_teacher | 90.00 ± - |" in md
    assert "| +3.00 ± - | - | 1 / 1 |" in md
    assert "± 0.00" not in md and "x to " not in md
    assert "x (1 seed)" in md
    # in the JSON a spread of one value is null, not 0.0
    digits = table["tasks"]["classification"]
    assert digits["methods"]["mean_teacher"]["teacher"]["std"] is None
    assert digits["pair"]["models"]["teacher"]["std"] is None
    assert digits["pair"]["equal_time"]["models"]["teacher"]["std"] is None


def test_one_seed_gets_no_error_bar_in_the_plot(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    state = _state()
    state["runs"] = {k: r for k, r in state["runs"].items() if r["seed"] == 0}
    table = suite.summarise(state, QUICK, "quick")
    spreads = []
    real = Axes.errorbar

    def errorbar(self, x, y, yerr=None, **kwargs):
        spreads.append(yerr)
        return real(self, x, y, yerr=yerr, **kwargs)

    monkeypatch.setattr(Axes, "errorbar", errorbar)
    suite.plot(table, tmp_path / "suite.png")
    assert spreads and all(s is None for s in spreads)


#: every arm the suite runs: each task's base and MIC, and the equal-time base where it has one
ARMS = [
    (task, arm)
    for task, settings in QUICK.items()
    for arm in ("base", "mic", "equal_time")
    if arm != "equal_time" or settings.get("equal_time")
]


@pytest.mark.parametrize(("task", "method_of"), ARMS)
def test_each_run_reaches_its_script_with_the_arguments_it_takes(task, method_of, monkeypatch):
    """``suite.run`` calls every script's ``run_one`` as that function is declared (no
    training: the call is bound to the real signature, then answered)."""
    import importlib
    import inspect

    spec = suite.TASKS[task]
    settings = QUICK[task]
    method = getattr(spec, method_of)
    script = importlib.import_module(spec.script)
    declared = inspect.signature(script.run_one)
    calls = []

    def answer(*args, **kwargs):
        calls.append(declared.bind(*args, **kwargs).arguments)
        return {"method": args[0], "seed": args[1]}

    monkeypatch.setattr(script, "run_one", answer)
    row = suite.run(task, method, 3, settings, "cpu", 1, "/tmp/start.pt")
    assert row["method"] == method and row["seed"] == 3
    assert len(calls) == 1 and calls[0]["seed"] == 3


def test_equal_time_base_without_a_seed_in_common_with_mic_is_reported_not_measured():
    settings = QUICK["classification"]
    state = _state()
    name = suite.TASKS["classification"].equal_time
    row = {
        "task": "classification",
        "method": name,
        "seed": 7,  # MIC ran seeds 0 to 2
        "student": 0.9,
        "teacher": 0.9,
        "seconds_per_iteration": 0.05,
        "device": "cpu",
        "overrides": [*settings["overrides"], *settings["equal_time"]],
    }
    state["runs"][suite.run_key("classification", name, 7, settings)] = row
    table = suite.summarise(state, QUICK, "quick")
    assert table["tasks"]["classification"]["pair"]["equal_time"]["time_ratio"] == []
    md = suite.markdown(table, state)
    assert "its training time over MIC's: not measured: no seed ran both" in md


def _stamped(task: str, method: str, record: dict, state: dict, seed: int = 0) -> str:
    """Adds a cached run of ``method`` (quick schedule) made with the config ``record``;
    returns its key."""
    key = suite.run_key(task, method, seed, QUICK[task])
    row = {"method": method, "seed": seed, "seconds_per_iteration": 0.1, "device": "cpu"}
    state["runs"][key] = {"task": task, **row, "student": 0.9, "teacher": 0.9}
    suite.stamp(state, state["runs"][key], record)
    return key


def _empty() -> dict:
    return {"runs": {}, "warmups": {}, "configs": {}, "calls": []}


def test_a_cached_run_made_with_another_config_is_stale_and_runs_again():
    """A default changed since a run was cached (here MIC's mask ratio) makes the run stale:
    named with the change, run again, and marked in the table; the current run of the same
    method, one whose config gained an option with a null default, and a run without a
    record of its config are told apart."""
    configs = suite.Configs("cpu")
    current = configs.run("classification", "mean_teacher_mic", QUICK["classification"])
    assert current["method.terms.mic.masker.ratio"] == 0.7  # the composed config, flat
    # where it runs, what it logs, its seed and the label-free validators are left out
    left_out = ("device", "log.", "seed", "eval.validators", "eval.validation.")
    assert not any(k.startswith(left_out) for k in current)
    state = _empty()
    changed = {**current, "method.terms.mic.masker.ratio": 0.5}
    old = _stamped("classification", "mean_teacher_mic", changed, state, seed=0)
    fine = _stamped("classification", "mean_teacher_mic", current, state, seed=1)
    # an option added since with a null default is no change, nor one left out since
    added = {**current, "new.option": None, "eval.validators": ["entropy"]}
    fine2 = _stamped("classification", "mean_teacher_mic", added, state, seed=2)
    unrecorded = _stamped("classification", "mean_teacher", current, state, seed=0)
    del state["runs"][unrecorded]["config"]

    stale = suite.mark_stale(state, configs, modes=("quick",))
    assert stale == {
        old: ("quick", "method.terms.mic.masker.ratio: 0.5 -> 0.7"),
        unrecorded: ("quick", "no config recorded"),
    }
    assert "stale" not in state["runs"][fine] and "stale" not in state["runs"][fine2]
    args = suite.parse_args(["--tasks", "classification", "--methods", "mean_teacher_mic"])
    assert [s for _, _, s, _ in suite.missing_runs(args, state)] == [0]  # 1 and 2 are current
    md = suite.markdown(suite.summarise(state, QUICK, "quick"), state)
    assert "**Stale runs**" in md
    assert "- mean_teacher_mic, seeds 0: method.terms.mic.masker.ratio: 0.5 -> 0.7" in md
    # the summary row, whose paired statistics include them, is marked and the mark explained
    assert "| classification † | target test accuracy (%), teacher | mean_teacher |" in md
    assert "† Includes stale runs" in md
    # the mark goes once the run is current again
    suite.stamp(state, state["runs"][old], current)
    assert old not in suite.mark_stale(state, configs, modes=("quick",))


def test_a_setting_added_at_the_default_that_keeps_the_old_behaviour_is_no_change():
    """augmentation.jitter (added at 'torchvision', the formulas used before it existed) and
    task.primary_metric (null for the task's own, accuracy) made every cached run of the suite
    stale, although they train the same (python -m benchmarks.checksums matched the code of
    before the jitter option); the default since, 'published', makes them stale."""
    configs = suite.Configs("cpu")
    current = configs.run("classification", "mean_teacher_mic", QUICK["classification"])
    jitter = [k for k in current if k.endswith("augmentation.jitter")]
    assert jitter and all(current[k] == "published" for k in jitter)
    assert "augmentation_jitter" not in current  # (read only through those: SADA's runs kept)
    assert current["task.primary_metric"] is None
    before = {k: v for k, v in current.items() if k not in jitter}
    before["task.primary_metric"] = "accuracy"
    assert config_changes(before, current) == {k: (None, "published") for k in jitter}
    old = {**current, **dict.fromkeys(jitter, "torchvision")}  # as written after it was added
    assert config_changes(before, old) == {}
    assert config_changes(old, current) == {k: ("torchvision", "published") for k in jitter}
    other = {**current, "task.primary_metric": "mean_class_accuracy"}
    assert config_changes(other, current) == {"task.primary_metric": ("mean_class_accuracy", None)}


def test_the_plot_sets_mic_against_the_equal_time_base_beside_the_base(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    state = _state()
    for seed, score in enumerate([0.94, 0.90, 0.93]):  # the base given MIC's wall time
        key = suite.run_key(
            "classification", "mean_teacher_equal_time", seed, QUICK["classification"]
        )
        row = {"student": score, "teacher": score, "seconds_per_iteration": 0.1, "device": "cpu"}
        state["runs"][key] = {
            "task": "classification",
            "method": "mean_teacher_equal_time",
            "seed": seed,
            **row,
        }
    table = suite.summarise(state, QUICK, "quick")
    ticks = []
    real = Axes.set_xticks

    def set_xticks(self, ticks_, labels=None, **kwargs):
        ticks.append(list(labels or []))
        return real(self, ticks_, labels, **kwargs)

    monkeypatch.setattr(Axes, "set_xticks", set_xticks)
    suite.plot(table, tmp_path / "suite.png")
    with_equal = [t for t in ticks if "overall, vs\nequal time" in t]
    assert with_equal and all(t.index("overall, vs\nequal time") == 1 for t in with_equal)
    assert any("(1 seed)" in "".join(t) or "seeds)" in "".join(t) for t in ticks)


def test_stale_marks_cover_every_mode_whatever_the_call_chooses():
    """The marks are made for the cached runs of both modes, so the table of a mode the call
    did not choose is marked as well."""
    configs = suite.Configs("cpu")
    state = _empty()
    quick = _stamped("classification", "mean_teacher", {"optimizer.lr": 1.0}, state)
    full_key = suite.run_key(
        "classification", "mean_teacher", 0, suite.schedules("full")["classification"]
    )
    state["runs"][full_key] = {**state["runs"][quick], "method": "mean_teacher"}
    stale = suite.mark_stale(state, configs)
    assert {k: mode for k, (mode, _) in stale.items()} == {quick: "quick", full_key: "full"}


def test_from_cache_names_the_stale_runs_and_accept_stale_takes_them_as_current(tmp_path):
    """Through the command line: ``--from-cache`` keeps the stale runs in the table, marked,
    and says on stderr which runs and what changed; ``--accept-stale`` stamps the chosen ones
    with the current config without running them, and the table lists that call."""
    configs = suite.Configs("cpu")
    record = configs.run("classification", "mean_teacher", QUICK["classification"])
    state = _empty()
    lr = record["optimizer.lr"]
    _stamped("classification", "mean_teacher", {**record, "optimizer.lr": 1.0}, state)
    mic = configs.run("classification", "mean_teacher_mic", QUICK["classification"])
    _stamped("classification", "mean_teacher_mic", {**mic, "optimizer.lr": 1.0}, state)
    out = tmp_path / "suite"
    out.with_suffix(".json").write_text(json.dumps(state))

    def cli(*words):
        command = [sys.executable, "-m", "benchmarks", "--from-cache", "--out", str(out), *words]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stderr

    err = cli()
    assert "2 cached runs are stale: made with another config than the current one" in err
    assert f"--quick classification mean_teacher seeds 0: optimizer.lr: 1.0 -> {lr!r}" in err
    assert "**Stale runs**" in out.with_suffix(".md").read_text()

    err = cli("--accept-stale", "--tasks", "classification", "--methods", "mean_teacher")
    assert "1 stale runs taken as made with the current config" in err
    assert "1 cached runs are stale" in err  # mean_teacher_mic was not chosen
    saved = json.loads(out.with_suffix(".json").read_text())
    rows = {r["method"]: r for r in saved["runs"].values()}
    assert saved["configs"][rows["mean_teacher"]["config"]] == record
    assert "stale" not in rows["mean_teacher"] and "stale" in rows["mean_teacher_mic"]
    md = out.with_suffix(".md").read_text()
    assert "1 stale runs taken as made with the current config, not run again" in md


def test_a_warm_up_records_its_config_and_its_runs_are_stale_when_it_changes(tmp_path, monkeypatch):
    """A source model's config is written beside it (without the keys a source stage does
    not use); a model without a readable record, or with another one, is not current (so it
    is trained again); a run records its source model's config and is stale once that is
    not the current one."""
    import segmentation

    settings = QUICK["context"]
    configs = suite.Configs("cpu")
    record = configs.warmup("context", settings)
    # the source stage's own config: source only, rare class sampling, the warm-up length
    assert record["method.name"] == "source_only" and record["method.rare_class_sampling"]
    assert record["iterations"] == settings["warmup"]

    def fake_warmup(seed, steps, device, threads, extra, path, experiment, config_only=False):
        if config_only:
            return real(seed, steps, device, threads, extra, path, experiment, True)
        Path(path).write_bytes(b"weights")
        return {"seed": seed, "miou": 0.5}

    real = segmentation.warmup
    monkeypatch.setattr(segmentation, "warmup", fake_warmup)
    path = suite.warmup_path(tmp_path, "context", 0, settings)
    assert not suite.warmup_current(path, "context", settings, configs)  # missing
    suite.warm_up("context", 0, settings, "cpu", 1, str(path))
    assert json.loads(suite.config_file(path).read_text()) == record
    assert suite.warmup_current(path, "context", settings, configs)
    for unreadable in ("{not json", "[]"):
        suite.config_file(path).write_text(unreadable)
        assert not suite.warmup_current(path, "context", settings, configs)
    # what a source stage does not use (its teacher) is no change of it; its learning rate is
    suite.config_file(path).write_text(json.dumps({**record, "teacher.alpha": 0.5}))
    assert suite.warmup_current(path, "context", settings, configs)
    suite.config_file(path).write_text(json.dumps({**record, "optimizer.lr": 9.0}))
    assert not suite.warmup_current(path, "context", settings, configs)

    # a run records its source model's config, from the file beside the model
    def fake_run(method, seed, device, threads, extra, experiment, start=None, config_only=False):
        if config_only:
            return real_run(method, seed, device, threads, extra, experiment, None, None, True)
        return {"method": method, "seed": seed}

    real_run = segmentation.run_one
    monkeypatch.setattr(segmentation, "run_one", fake_run)
    row, run_record, source = suite.run_stamped("context", "dacs", 0, settings, "cpu", 1, str(path))
    assert run_record == configs.run("context", "dacs", settings)
    assert source == {**record, "optimizer.lr": 9.0}
    state = _empty()
    key = suite.run_key("context", "dacs", 0, settings)
    state["runs"][key] = {"task": "context", **row}
    suite.stamp(state, state["runs"][key], run_record, source)
    _, reason = suite.mark_stale(state, configs, modes=("quick",))[key]
    assert reason.startswith("its source model's config changed: optimizer.lr: 9.0 ->")
    suite.stamp(state, state["runs"][key], run_record, None)  # no source record
    del state["runs"][key]["source_config"]
    assert suite.mark_stale(state, configs, modes=("quick",))[key] == (
        "quick",
        "no config of its source model recorded",
    )


def test_rerun_commands_name_the_gpu_their_rows_ran_on():
    state = _state()
    key = next(k for k, r in state["runs"].items() if r["method"] == "sada")
    state["runs"][key]["device"] = "NVIDIA H200"
    table = suite.summarise(state, QUICK, "quick")
    detection = table["tasks"]["detection"]
    assert detection["methods"]["sada"]["command"].endswith("--fresh --device cuda")
    assert "--device" not in detection["methods"]["sada_mic"]["command"]
    assert "--device cuda" in detection["pair"]["command"]
    assert "--device" not in table["tasks"]["classification"]["pair"]["command"]


def test_rerun_commands_keep_the_warm_up_folder_of_the_call(tmp_path, monkeypatch):
    out, work = tmp_path / "suite", tmp_path / "warm ups"
    out.with_suffix(".json").write_text(json.dumps(_state()))
    monkeypatch.setattr(suite, "train", lambda *a: pytest.fail("--from-cache must not train"))
    suite.main(["--from-cache", "--out", str(out), "--work", str(work)])
    md = out.with_suffix(".md").read_text()
    assert f"--fresh --out {out} --work '{work}'`" in md
    warmed = {t for t, s in suite.schedules("full").items() if "warmup" in s}
    for line in [x for x in md.splitlines() if "python -m benchmarks --" in x]:
        task = line.split("--tasks ")[1].split()[0]  # source models: the call's folder named
        assert ("--work" in line) == (task in warmed), line
    suite.main(["--from-cache", "--out", str(out)])  # the default folder: not named
    assert "--work" not in out.with_suffix(".md").read_text()
    # a cache whose runs were made with another folder: --from-cache names that one
    state = json.loads(out.with_suffix(".json").read_text())
    out.with_suffix(".json").write_text(json.dumps({**state, "work": {"detection": str(work)}}))
    suite.main(["--from-cache", "--out", str(out)])
    assert f"--work '{work}'`" in out.with_suffix(".md").read_text()


class _AnsweringPool:
    """A stand-in for the suite's process pool: every run is answered at once with a row and
    the config it would train with (no training)."""

    configs = suite.Configs("cpu")

    def __init__(self, *args, **kwargs):
        pass

    def submit(self, fn, task, method, seed, settings, *rest):
        row = {"method": method, "seed": seed, "student": 0.9, "teacher": 0.9}
        row.update(seconds_per_iteration=0.1, device="cpu")
        done = Future()
        done.set_result((row, self.configs.run(task, method, settings), None))
        return done

    def shutdown(self, *args, **kwargs):
        pass


def _ctrl_c_after(runs: int):
    """``wait`` that hands back one finished run per call, then raises KeyboardInterrupt."""
    calls = []

    def wait(pending, return_when):
        if len(calls) == runs:
            raise KeyboardInterrupt
        calls.append(1)
        first = next(iter(pending))
        return {first}, set(pending) - {first}

    return wait


@pytest.mark.parametrize("fresh", [False, True])
def test_ctrl_c_names_the_command_that_runs_the_rest_and_exits_130(
    fresh, tmp_path, monkeypatch, capsys
):
    """After Ctrl-C the message's command runs exactly the runs left (with --fresh in the
    call: the call without it); the runs are stamped with this environment."""
    monkeypatch.setattr(suite, "ProcessPoolExecutor", _AnsweringPool)
    monkeypatch.setattr(suite, "wait", _ctrl_c_after(1))
    out = tmp_path / "suite"
    words = ["--tasks", "classification", "--methods", "mean_teacher", "--seeds", "0", "1", "2"]
    words += ["--jobs", "1", "--out", str(out), "--work", str(tmp_path / "w")]
    words += ["--fre"] if fresh else []  # an abbreviation argparse takes
    with pytest.raises(SystemExit) as info:
        suite.main(words)
    assert info.value.code == 130
    err = capsys.readouterr().err
    assert f"interrupted: 1 run of 3 finished and kept in {out}.json; " in err
    state = suite.load(out)
    (row,) = state["runs"].values()
    assert state["environments"][row["environment"]] == suite.environment()
    # the call is listed with the run it finished (it was left out of the table's commands)
    (call,) = state["calls"]
    assert call["runs"] == 1 and call["interrupted"] and call["command"].endswith(shlex.join(words))
    table = suite.markdown(suite.summarise(state, QUICK, "quick"), state)
    assert (
        "for 1 run, 1 at a time" in table
        and "interrupted there, the runs it finished kept" in table
    )
    if fresh:
        rest = f"`python -m benchmarks {shlex.join(words[:-1])}` runs the rest"
        assert f"without --fresh, {rest}" in err
    else:
        assert "the same command runs the rest" in err
        rest = f"`python -m benchmarks {shlex.join(words)}`"
    # what that command runs: the two runs left, not the one kept
    args = suite.parse_args(shlex.split(rest.split("benchmarks ")[1].split("`")[0]))
    assert [s for _, _, s, _ in suite.missing_runs(args, state)] == [1, 2]


def test_ctrl_c_in_a_fresh_call_over_cached_runs_leaves_the_rest_to_run_again(
    tmp_path, monkeypatch, capsys
):
    """The runs a --fresh call had not run again when stopped are run by the command it
    names (the call without --fresh): they were cached, so it found nothing to run and the
    table mixed their old scores with the new one's."""
    monkeypatch.setattr(suite, "ProcessPoolExecutor", _AnsweringPool)
    out = tmp_path / "suite"
    words = ["--tasks", "classification", "--methods", "mean_teacher", "--seeds", "0", "1", "2"]
    words += ["--jobs", "1", "--out", str(out), "--work", str(tmp_path / "w")]
    suite.main(words)  # all three cached
    monkeypatch.setattr(suite, "wait", _ctrl_c_after(1))
    with pytest.raises(SystemExit):
        suite.main([*words, "--fresh"])
    assert f"without --fresh, `python -m benchmarks {shlex.join(words)}` runs the rest" in (
        capsys.readouterr().err
    )
    state = suite.load(out)
    assert [s for _, _, s, _ in suite.missing_runs(suite.parse_args(words), state)] == [1, 2]
    monkeypatch.setattr(suite, "wait", concurrent.futures.wait)
    suite.main(words)  # the rest: run again, the marks gone
    state = suite.load(out)
    assert not suite.missing_runs(suite.parse_args(words), state)
    assert not [r for r in state["runs"].values() if "rerun" in r]


def test_ctrl_c_before_any_run_finished_says_nothing_was_kept(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(suite, "ProcessPoolExecutor", _AnsweringPool)
    monkeypatch.setattr(suite, "wait", _ctrl_c_after(0))
    out = tmp_path / "suite"
    words = ["--tasks", "classification", "--methods", "mean_teacher", "--fresh"]
    with pytest.raises(SystemExit) as info:
        suite.main([*words, "--out", str(out), "--work", str(tmp_path / "w")])
    assert info.value.code == 130
    err = capsys.readouterr().err
    assert "interrupted: none of the 3 runs finished, nothing kept; the same command runs" in err
    assert list(tmp_path.iterdir()) == []  # no cache written, no folder made


def test_runs_from_another_environment_are_named_marked_and_kept(tmp_path, monkeypatch, capsys):
    """A cached run made on another CPU, or cached before the environment was recorded, is
    named on stderr with what differs, marked in its section and in the summary, and kept
    as current (not run again without --fresh)."""
    here = {"cpu": "this cpu", "torch": "2.0"}
    monkeypatch.setattr(suite, "environment", lambda: here)
    configs = suite.Configs("cpu")
    state = _empty()
    for seed in (0, 1):
        for method in ("mean_teacher", "mean_teacher_mic"):
            record = configs.run("classification", method, QUICK["classification"])
            key = _stamped("classification", method, record, state, seed)
            suite.stamp_environment(state, state["runs"][key], here)
    other = next(k for k, r in state["runs"].items() if r["seed"] == 0)
    suite.stamp_environment(state, state["runs"][other], {"cpu": "another cpu", "torch": "2.0"})
    old = next(k for k, r in state["runs"].items() if r["seed"] == 1)
    del state["runs"][old]["environment"]  # cached before the suite recorded it
    out = tmp_path / "suite"
    out.with_suffix(".json").write_text(json.dumps(state))

    suite.main(["--from-cache", "--out", str(out)])
    err = capsys.readouterr().err
    assert "2 of the cached runs were made in another environment than this one" in err
    assert "--quick classification mean_teacher seeds 0: cpu: 'another cpu' -> 'this cpu'" in err
    assert "--quick classification mean_teacher seeds 1: no environment recorded" in err
    md = out.with_suffix(".md").read_text()
    assert "**Runs from another environment**" in md
    assert "- mean_teacher, seeds 0: cpu: 'another cpu' -> 'this cpu'" in md
    assert "| classification ‡ | target test accuracy (%), teacher | mean_teacher |" in md
    assert "‡ Includes runs made in another environment" in md
    assert "†" not in md  # none is stale
    args = suite.parse_args(["--tasks", "classification", "--seeds", "0", "1"])
    saved = suite.load(out)
    assert [m for _, m, _, _ in suite.missing_runs(args, saved)] == [
        "mean_teacher_equal_time",  # never run; the others are kept as current
        "mean_teacher_equal_time",
    ]


def test_a_second_ctrl_c_while_the_runs_are_ended_is_ignored(monkeypatch):
    """GNU timeout signals the suite and then its group: the second SIGINT, met in _stop's
    join, ended the call in a KeyboardInterrupt traceback without its record."""
    import os
    import signal

    class Child:
        def kill(self):
            pass

        def join(self, timeout=None):
            os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, mid-join

    class Pool:
        def shutdown(self, wait=True, cancel_futures=False):
            pass

    monkeypatch.setattr(suite, "active_children", lambda: [Child()])
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # (a shell's background
    try:  # job starts with SIGINT ignored: the second one must still be met)
        suite._stop(Pool())  # no KeyboardInterrupt
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back
    finally:
        signal.signal(signal.SIGINT, before)
