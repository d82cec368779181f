"""benchmarks/load_run_inputs.py: a loaded run's model on the run's normalised test images
scores what the run logged; the same images in [0, 1] are scored apart."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import load_run_inputs  # noqa: E402


def _score(out: str, row: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(f"| {row}")).split("|")[2]


def test_the_normalised_images_give_the_run_s_own_score(tmp_path, capsys):
    from mic.experiment import load_config, run_experiment
    from tests.helpers import TINY_RUN

    run = tmp_path / "run"
    overrides = [*TINY_RUN, "iterations=30", "mic=none", "eval.adabn_batches=0"]
    overrides.append("log.tensorboard=false")  # (4 iterations predict one class alike)
    summary = run_experiment(load_config(overrides), run)
    load_run_inputs.main([str(run)])
    out = capsys.readouterr().out
    logged = f"{100 * summary['after_adaptation']['student']:.2f}"
    assert _score(out, "normalised").strip() == logged
    assert _score(out, "in [0, 1]").strip() != logged
    assert f"load_run_inputs.py {run}`" in out  # the command as called


def test_a_run_on_other_data_is_refused(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("dataset:\n  test:\n    _target_: my.Data\n")
    with pytest.raises(SystemExit) as stopped:
        load_run_inputs.main([str(tmp_path)])
    assert stopped.value.code == 2
    assert "no run on the bundled digits" in capsys.readouterr().err
