"""The examples run, and the example task behaves as a Task must."""

import importlib.util
from pathlib import Path

import torch

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
