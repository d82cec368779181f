"""What a command leaves in a run folder that already holds a run: a refused run or resume
leaves Hydra's record (``.hydra/``) and the log byte for byte; an accepted resume writes its
own record beside the original's; a run resumed into a new folder reports files that exist."""

import json
from pathlib import Path

from tests.cli import run_mic_train
from tests.helpers import TINY_RUN

TINY = [*TINY_RUN, "log.tensorboard=false", "iterations=2", "checkpoint.interval=1"]


def _record(run: Path) -> dict[str, bytes]:
    """Hydra's record and the log files of a run folder, by name."""
    files = [*run.glob(".hydra/*"), *run.glob("*.log")]
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(files)}


def test_a_refused_run_or_resume_leaves_hydra_record_and_log_and_a_resume_keeps_them(tmp_path):
    run = tmp_path / "run"
    first = run_mic_train([*TINY, f"hydra.run.dir={run}"])
    assert first.returncode == 0, first.stderr[-2000:]
    before = _record(run)
    assert {".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml"} <= set(before)
    assert any(name.endswith(".log") for name in before)

    new_run = run_mic_train([*TINY, "seed=3", f"hydra.run.dir={run}"])
    assert new_run.returncode == 2 and "already holds a run" in new_run.stderr
    assert _record(run) == before

    changed = run_mic_train([*TINY, "resume=auto", "optimizer.lr=0.5", f"hydra.run.dir={run}"])
    assert changed.returncode == 2 and "resume_allow_changes=[optimizer.lr]" in changed.stderr
    assert _record(run) == before
    assert not (run / ".hydra_resumed").exists()

    resumed = run_mic_train([*TINY, "resume=auto", "iterations=3", f"hydra.run.dir={run}"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = _record(run)
    assert {k: v for k, v in after.items() if k.startswith(".hydra/")} == {
        k: v for k, v in before.items() if k.startswith(".hydra/")
    }  # the record of how the run was made
    overrides = (run / ".hydra_resumed" / "overrides.yaml").read_text()
    assert "resume=auto" in overrides and "iterations=3" in overrides
    hydra_yaml = (run / ".hydra_resumed" / "hydra.yaml").read_text()
    assert "output_subdir: .hydra_resumed" in hydra_yaml
    assert "hydra.output_subdir=null" not in hydra_yaml
    for name, content in before.items():  # the log goes on after the original's lines
        if name.endswith(".log"):
            assert after[name].startswith(content) and len(after[name]) > len(content)


def test_a_finished_run_resumed_into_a_new_folder_names_the_best_pt_that_exists(tmp_path):
    run = tmp_path / "run"
    first = run_mic_train([*TINY, f"hydra.run.dir={run}"])
    assert first.returncode == 0, first.stderr[-2000:]
    original = run / "checkpoints" / "best.pt"
    assert original.is_file()
    for i, source in enumerate((run, original)):
        new = tmp_path / f"new{i}"  # a folder of its own: resuming another run's here is refused
        out = run_mic_train([*TINY, f"resume={source}", f"hydra.run.dir={new}"])
        assert out.returncode == 0, out.stderr[-2000:]
        assert "at iteration 2 (iterations=2: nothing left to train" in out.stdout
        best = json.loads((new / "summary.json").read_text())["best_checkpoint"]
        assert best["step"] == 2 and best["path"] == str(original)
        assert f"(iteration 2): {original}" in out.stdout
        assert not (new / "checkpoints" / "best.pt").exists()
