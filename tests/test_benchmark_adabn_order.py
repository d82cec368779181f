"""benchmarks/adabn_order.py: the run's own AdaBN order gives its logged score again."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import adabn_order  # noqa: E402


def test_the_run_s_own_order_gives_its_score_again_and_others_are_listed(tmp_path, capsys):
    from mic.experiment import load_config, run_experiment
    from tests.helpers import TINY_RUN

    run = tmp_path / "run"
    summary = run_experiment(load_config([*TINY_RUN, "log.tensorboard=false"]), run)
    adabn_order.main([str(run), "--seeds", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 1")]
    own = next(r for r in rows if "the run's order" in r)
    assert own.split("|")[2].strip() == f"{100 * summary['after_adaptation']['student']:.2f}"
    assert any(r.startswith("| 1 |") for r in rows)


def test_a_folder_without_a_run_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        adabn_order.main([str(tmp_path)])
    assert stopped.value.code == 2
    assert "holds no config.yaml" in capsys.readouterr().err
