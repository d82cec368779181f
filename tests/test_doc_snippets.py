"""The Python snippets of docs/ that a reader copies into a run, run as written (on tiny data
or for a few iterations)."""

import re
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import mic
from mic.tasks.classification import ClassificationTask, Classifier

pytestmark = pytest.mark.usefixtures("one_thread")

DOCS = Path(__file__).parents[1] / "docs"
PYTHON = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def snippets(page: str, section: str) -> list[str]:
    """The python blocks of ``section`` (a ``## `` heading) of docs/``page``."""
    text = (DOCS / page).read_text()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    return PYTHON.findall(text[start : end if end >= 0 else None])


def test_new_task_pages_loss_terms_train_a_classifier_as_written():
    """docs/new_task.md, "A new method": the terms use only what every task has (a term
    called ``ctx.task.loss_from_logits``, which a ClassificationTask has not)."""
    namespace: dict = {}
    for code in snippets("new_task.md", "A new method"):
        exec(code, namespace)
    task = ClassificationTask(3)
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)
    source = DataLoader(TensorDataset(xs, ys), 4, drop_last=True, collate_fn=task.collate)
    target = DataLoader(list(xs + 1), 4, drop_last=True, collate_fn=task.collate)
    methods = [
        {"source": namespace["SourceLoss"]()},
        {"source": namespace["SharedSourceLoss"](), "norm": namespace["FeatureNorm"]()},
        {"source": namespace["SourceLoss"](), "entropy": namespace["EntropyMinimisation"](0.1)},
    ]
    for terms in methods:
        torch.manual_seed(0)
        student = Classifier("tiny_cnn", 3, bottleneck_dim=8)
        before = [p.clone() for p in student.parameters()]
        optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
        loop = mic.AdaptationLoop(task, student, mic.UDAMethod(terms), optimizer, source, target, 2)
        loop.run()
        assert loop.step == 2
        assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))
    assert 0 < terms["entropy"].statistics["max_probability"] <= 1


def test_model_selection_pages_adabn_loader_serves_adabn_batches_as_written(tmp_path):
    """docs/model_selection.md, "From Python": its unlabelled loader (449 images in batches of
    64) feeds AdaBN 10 batches, passing over the set again: without drop_last the 1-image last
    batch stopped BatchNorm (training mode) with torch's ValueError."""
    from mic.training.evaluation import recalibrated_batchnorm

    code = snippets("model_selection.md", "From Python")[0]
    namespace: dict = {}
    exec(code.replace('"runs/x/checkpoints"', repr(str(tmp_path / "checkpoints"))), namespace)
    evaluation = namespace["evaluation"]
    assert evaluation.adabn_batches == 10
    model = Classifier("small_cnn", num_classes=10).eval()  # BatchNorm1d in its bottleneck
    with recalibrated_batchnorm(model, evaluation.adabn_loader, evaluation.adabn_batches):
        pass


def test_detection_pages_sada_example_trains_on_the_source_labels_as_written():
    """docs/detection.md, "Python": SADA is the shared source loss plus the alignment (the
    example once listed DomainAdversarial alone, which reads the source pass's features but
    gives no detection loss, so nothing learnt from the source labels)."""
    from torch.utils.data import Subset

    code = snippets("detection.md", "Python")[0]
    short = code.replace("iterations=1250", "iterations=2").replace(
        "adaptation_start=1000", "adaptation_start=1"
    )
    short = short.replace(
        'ShapesDetection("target", "test")', 'Subset(ShapesDetection("target", "test"), range(4))'
    )
    assert short.count("iterations=2") == 1 and "Subset(" in short
    namespace: dict = {"Subset": Subset}
    exec(
        short.replace(
            "loop.run()", "before = [p.clone() for p in student.parameters()]\nloop.run()"
        ),
        namespace,
    )
    loop = namespace["loop"]
    assert loop.step == 2
    assert "source" in namespace["method"].terms
    changed = [
        not torch.equal(a, b)
        for a, b in zip(namespace["before"], namespace["student"].parameters())
    ]
    assert any(changed)


def test_training_pages_python_resume_continues_the_same_batches_as_written(tmp_path):
    """docs/training.md, "Resuming from Python": stopped at iteration 4 and resumed to 6, the
    weights are bitwise those of an uninterrupted 6-iteration run."""
    (code,) = snippets("training.md", "Resume")

    def run(folder, iterations):
        namespace: dict = {}
        exec(
            code.replace('"runs/python_resume/checkpoints"', repr(str(folder))).replace(
                "iterations=6", f"iterations={iterations}"
            ),
            namespace,
        )
        return namespace["loop"]

    straight = run(tmp_path / "straight", 6)
    assert run(tmp_path / "stopped", 4).step == 4
    resumed = run(tmp_path / "stopped", 6)
    assert resumed.step == 6
    a, b = straight.student.state_dict(), resumed.student.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_from_python_takes_a_string_path_or_a_run_folder(tmp_path):
    """``resume`` takes what ``mic-train resume=`` takes: a file given as a string, a run
    folder or its checkpoints folder (the newest readable checkpoint); an empty folder is
    named."""
    from mic.core import CheckpointError
    from mic.resume import resume

    (code,) = snippets("training.md", "Resume")
    folder = tmp_path / "run" / "checkpoints"
    namespace: dict = {}
    exec(
        code.replace('"runs/python_resume/checkpoints"', repr(str(folder))).replace(
            "iterations=6", "iterations=4"
        ),
        namespace,
    )
    for given, step in [
        (str(folder / "iter_00000004.pt"), 4),
        (str(folder), 4),
        (folder.parent, 4),
    ]:
        loop, checkpointer = namespace["build"]()
        resume(loop, given, checkpointer=checkpointer, announce=False)
        assert loop.step == step
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        resume(loop, tmp_path / "empty")


def test_classification_pages_recipe_builds_as_written():
    """docs/classification.md, its opening recipe (CDAN + MCC + MIC under SAM): it used a
    ``student`` it never made."""
    text = (DOCS / "classification.md").read_text()
    namespace: dict = {}
    for code in PYTHON.findall(text[: text.index("\n## ")]):
        exec(code, namespace)
    held = {id(p) for g in namespace["optimizer"].param_groups for p in g["params"]}
    assert all(id(p) in held for p in namespace["student"].parameters())
    assert set(namespace["method"].terms) == {"source", "cdan", "mcc", "mic"}


def test_readme_python_usage_trains_and_scores_as_written(capsys):
    """README.md, "Python usage", for 3 iterations: the recipe a reader copies first."""
    text = (DOCS.parent / "README.md").read_text()
    start = text.index("## Python usage\n")
    (code,) = PYTHON.findall(text[start : text.index("\n## ", start + 1)])
    assert "iterations=1000" in code
    namespace: dict = {}
    exec(code.replace("iterations=1000", "iterations=3"), namespace)
    loop = namespace["loop"]
    assert loop.step == 3 and "accuracy" in capsys.readouterr().out
    order = [
        loader.generator.initial_seed() for loader in (namespace["source"], namespace["target"])
    ]
    assert order == [0, 1]  # each loader shuffles with its own generator (the batches stay paired)


def test_method_pages_own_loop_adds_mic_to_a_loop_of_one_s_own_as_written():
    """docs/method.md, "MIC in a training loop of one's own", for 3 iterations."""
    (code,) = snippets("method.md", "MIC in a training loop of one's own")
    assert "range(100)" in code
    namespace: dict = {}
    exec(code.replace("range(100)", "range(3)"), namespace)
    term, teacher, student = namespace["term"], namespace["teacher"], namespace["student"]
    assert namespace["step"] == 2 and set(term.statistics) >= {"q", "confidence"}
    assert all(p.grad is None and not p.requires_grad for p in teacher.model.parameters())
    assert all(p.grad is not None for p in student.parameters())  # MIC's backward reached it
    # the teacher averages the student's states: a copy of its own, behind the last one
    pairs = zip(teacher.model.parameters(), student.parameters(), strict=True)
    assert any(not torch.equal(t, s) for t, s in pairs)
