"""The examples run, and the example task behaves as a Task must."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import TINY_RUN

EXAMPLES = Path(__file__).parent.parent / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plain_python_example_trains_and_scores():
    accuracy = _load("plain_python").main(iterations=3, device="cpu")
    assert 0.0 <= accuracy <= 1.0


def test_new_task_example_trains_with_the_same_loop():
    module = _load("new_task")
    assert 0.0 <= module.main(iterations=3, device="cpu") <= 1.0


def test_new_task_pseudo_labels_and_weighted_loss():
    module = _load("new_task")
    task = module.DigitAttributes()
    probs = torch.tensor([[0.9, 0.2, 0.6]])
    pseudo = task.pseudo_label(probs)
    assert pseudo.labels.tolist() == [[1.0, 0.0, 1.0]]
    torch.testing.assert_close(pseudo.confidence, torch.tensor([[0.9, 0.8, 0.6]]))
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(2, 4), torch.ones(2, 3)
    assert task.loss(model, x, y, torch.zeros(2, 3)).item() == 0.0
    assert task.loss(model, x, y).item() > 0.0
    # digit 8: even, greater than 4, has a loop
    assert module.attributes(torch.tensor([8, 1])).tolist() == [[1, 1, 1], [0, 0, 0]]


def test_new_task_example_runs_through_mic_train_with_its_config(tmp_path):
    """The example task, in one file, through the console script with the config beside it:
    ``cd examples && mic-train --config-dir . experiment=new_task``."""
    beside = Path(sys.executable).parent  # the venv's, else the one on PATH (pip --target)
    mic_train = shutil.which("mic-train", path=f"{beside}{os.pathsep}{os.environ['PATH']}")
    run = tmp_path / "run"
    out = subprocess.run(
        [
            str(mic_train),
            "--config-dir",
            ".",
            "experiment=new_task",
            *TINY_RUN,
            f"hydra.run.dir={run}",
        ],
        cwd=EXAMPLES,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "new_task.DigitAttributes" in (run / "config.yaml").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert 0.0 <= summary["after_adaptation"]["teacher"] <= 1.0
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/teacher/accuracy" in r for r in records)  # the scalar metric, named


def test_load_config_reads_a_config_folder_of_ones_own(tmp_path):
    from mic import ConfigError
    from mic.experiment import load_config

    cfg = load_config(["experiment=new_task"], config_dir=EXAMPLES)
    assert cfg.task._target_ == "new_task.DigitAttributes"
    with pytest.raises(ConfigError, match="is no folder"):
        load_config(config_dir=tmp_path / "absent")


def test_a_task_option_of_ones_own_replaces_the_task(tmp_path, monkeypatch):
    """docs/new_task.md's second way: ``task/<name>.yaml`` in a config folder of one's own,
    chosen with ``task=<name>`` (``~task +task={...}`` is refused on the command line)."""
    from mic.experiment import load_config, run_experiment

    (tmp_path / "conf" / "task").mkdir(parents=True)
    (tmp_path / "conf" / "task" / "attributes.yaml").write_text(
        "_target_: new_task.DigitAttributes\n"
    )
    monkeypatch.syspath_prepend(str(EXAMPLES))
    weighting = ["method.terms.self_training.weighting=prob", "method.terms.mic.weighting=prob"]
    overrides = ["task=attributes", "model.num_classes=3", *weighting, *TINY_RUN]
    cfg = load_config(overrides, config_dir=tmp_path / "conf")
    assert cfg.task == {"_target_": "new_task.DigitAttributes"}
    summary = run_experiment(cfg, tmp_path / "run")
    assert 0.0 <= summary["after_adaptation"]["teacher"] <= 1.0


def test_a_config_of_ones_own_named_as_one_of_mics_is_refused_from_python_too(tmp_path):
    """load_config(config_dir=) took mic's optimizer/adam.yaml over an edited copy of it in
    silence, where mic-train --config-dir refuses the file."""
    from mic.core import ConfigError
    from mic.experiment import load_config

    (tmp_path / "optimizer").mkdir()
    (tmp_path / "optimizer" / "adam.yaml").write_text("_target_: torch.optim.Adam\nlr: 0.12345\n")
    with pytest.raises(ConfigError) as caught:
        load_config(["iterations=4"], config_dir=tmp_path)
    assert str(caught.value).startswith(
        f"1 config file(s) of your config folder have the name of one of mic's "
        f"({tmp_path / 'optimizer' / 'adam.yaml'}): Hydra reads mic's first, so yours would be "
        "ignored; give yours a name of its own (e.g. optimizer/my_adam.yaml, then "
        "optimizer=my_adam)"
    )
    searched = [f"hydra.searchpath=[file://{tmp_path}]"]  # the other way to add a folder
    with pytest.raises(ConfigError, match="have the name of one of mic's"):
        load_config(searched)
    import importlib.resources

    mics = Path(str(importlib.resources.files("mic.conf")))  # mic's own folder: its own files
    assert load_config(["iterations=4"], config_dir=mics).iterations == 4
