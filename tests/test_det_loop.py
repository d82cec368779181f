"""Every detection method with and without MIC runs a few loop steps from its config, on both
backends (torchvision, detectron2); the run folder gets box overlays and the per-class AP table;
config-level errors are clear."""

import json

import pytest
import torch

from mic.experiment import build_experiment, load_config, run_experiment
from mic.tasks.detection import Detectron2RCNN, DomainAdversarial, FasterRCNN
from tests.det_helpers import BACKENDS, TINY_DET, tiny_det
from tests.helpers import user_error_of

backends = pytest.mark.parametrize("backend", BACKENDS)
MODEL_CLASS = {"torchvision": FasterRCNN, "detectron2": Detectron2RCNN}

METHODS = {
    "source_only": ["method=source_only"],
    "sada": ["method=sada"],
    "mean_teacher": ["method=mean_teacher"],
}


@backends
@pytest.mark.parametrize("mic", ["block", "none"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_with_and_without_mic_runs(method, mic, backend):
    # threshold 0: the untrained teacher's boxes become pseudo-boxes, so the masked branch runs
    overrides = [
        *METHODS[method],
        f"mic={mic}",
        "eval.models=[student]",
        "task.score_threshold=0.05",
    ]
    exp = build_experiment(load_config([*tiny_det(backend), *overrides]))
    assert type(exp.student) is MODEL_CLASS[backend]
    names = [n for n, _ in exp.method]
    assert ("mic" in names) == (mic == "block")
    for _ in range(2):
        losses = exp.loop.train_step()
        exp.loop.step += 1
        assert all(torch.isfinite(v) for v in losses.values()), losses
        for name in ("mic", "self_training"):
            assert name not in names or losses[name] > 0
    if method == "sada":
        assert {"source", "adv_image", "adv_instance", "adv_consistency"} <= set(losses)
    if mic == "block":
        term = exp.method.terms["mic"]
        assert term.part_weights == {"rpn_box": 0.0, "roi_box": 0.0}
        assert term.student_weighted  # the default: each sample by the student's confidence
        assert term.weighting.mode == "none"  # no per-pseudo-box weight on top
        assert term.masker.ratio == 0.5 and term.masker.block_size == 8
        assert torch.allclose(term.masker.fill.flatten(), torch.tensor([0.485, 0.456, 0.406]))
        assert term.masker.augmentation.normalization.enabled is False  # [0, 1] images


@backends
def test_adversarial_term_trains_the_source_before_adaptation_starts(backend):
    cfg = load_config([*tiny_det(backend), "method=sada", "mic=none", "adaptation_start=1"])
    exp = build_experiment(cfg)
    assert isinstance(exp.method.terms["adversarial"], DomainAdversarial)
    first = exp.loop.train_step()
    exp.loop.step += 1
    second = exp.loop.train_step()
    assert set(first) == {"source"}
    assert {"adv_image", "adv_instance", "adv_consistency"} <= set(second)


@backends
def test_run_folder_has_overlays_and_the_per_class_ap_table(tmp_path, backend):
    cfg = load_config([*tiny_det(backend), "method=mean_teacher", "mic=block"])
    summary = run_experiment(cfg, tmp_path)
    assert summary["metric"] == "map_50"
    assert {"student", "teacher"} <= set(summary["after_adaptation"])
    table = (tmp_path / "ap_per_class.md").read_text()
    for name in ("disc", "square", "triangle", "cross", "student AP50", "teacher AP"):
        assert name in table
    visuals = sorted(p.name for p in (tmp_path / "visuals").iterdir())
    assert visuals == ["iter_00000002_student.png", "iter_00000002_teacher.png"]
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if "eval/teacher/map_50" in r][-1]
    assert len(final["eval/teacher/ap50_per_class"]) == 4


def _error(overrides):
    return user_error_of([*TINY_DET, *overrides])


def test_mismatched_class_counts_are_clear():
    assert "class counts disagree" in _error(["dataset.num_classes=5"])
    msg = _error(["dataset.num_classes=5", "dataset.classes=null"])
    assert "class counts disagree" in msg and "source has 4" in msg
    assert "COCO json's categories" in msg and "folder that is no class" not in msg
    msg = _error(["model.num_classes=7"])
    assert "the model predicts 7 classes" in msg


def test_unknown_loss_part_is_clear():
    overrides = ["method=source_only", "+method.terms.source.part_weights.box=0"]
    assert "part_weights name ['box']" in _error(overrides)


def test_a_resumed_run_keeps_the_per_class_ap_tables_up_to_its_checkpoint(tmp_path):
    """ap_per_class.md held one table per evaluation, latest first; a resume rewrote it with
    the resumed part's alone."""
    from types import SimpleNamespace

    from mic.tasks.detection import DetectionReport, DetectionTask

    report = DetectionReport(DetectionTask(2), None, tmp_path, images=0)
    tables = [f"## iteration {s}\n\n| class | AP |\n| a | {s} |\n" for s in (60, 40, 20)]
    (tmp_path / "ap_per_class.md").write_text("# Per-class AP\n\n" + "\n".join(tables))
    report.before_run(SimpleNamespace(step=40))  # 60 came after the checkpoint
    assert report.tables == tables[1:]
    report.before_run(SimpleNamespace(step=0))  # a new run starts its own
    assert report.tables == []


def test_the_box_drawings_are_made_inside_the_evaluation_and_need_one(tmp_path):
    """The drawings were made after the evaluation, with the training statistics that AdaBN
    had put back (det_shapes evaluates with AdaBN): they showed another model than the one
    scored. They are now an Evaluation's viewer, called under its protocol."""
    from types import SimpleNamespace

    import mic
    from mic.tasks.detection import DetectionReport, DetectionTask

    task = DetectionTask(2)
    report = DetectionReport(task, [], tmp_path, images=1)
    with pytest.raises(mic.ConfigError, match="DetectionReport shows the models that an Eval"):
        report.before_run(SimpleNamespace(step=0, hooks=[report]))
    evaluation = mic.Evaluation(task, [], models="student")
    report.before_run(SimpleNamespace(step=0, hooks=[evaluation, report]))
    report.before_run(SimpleNamespace(step=0, hooks=[evaluation, report]))  # once
    assert evaluation.viewers == [report.draw]
    DetectionReport(task, [], None).before_run(SimpleNamespace(step=0, hooks=[]))  # no folder


def test_an_experiment_trains_the_same_whatever_runs_between_its_build_and_its_run():
    """The detector draws inside the model (SADA's discriminator dropout, box sampling) from
    the global generators: a notebook's draw, or another experiment's build (which seeds
    them), between ``build_experiment`` and ``loop.run()`` must not change the run."""
    from mic.experiment import build_experiment, load_config

    cfg = load_config(tiny_det())

    def trained(between):
        exp = build_experiment(cfg)
        between()
        exp.loop.run()
        return [p.detach().clone() for p in exp.student.parameters()]

    alone = trained(lambda: None)
    for between in (lambda: torch.rand(100), lambda: build_experiment(load_config(TINY_DET))):
        assert all(torch.equal(a, b) for a, b in zip(alone, trained(between)))


def test_a_resume_from_python_after_the_build_keeps_the_checkpoint_s_random_state(tmp_path):
    """``mic.resume.resume(exp.loop, ...)`` after ``build_experiment`` restores the
    checkpoint's random state; the build's, restored before the run, must not replace it."""
    from mic.resume import resume

    cfg = load_config([*tiny_det(), "iterations=4", "checkpoint.interval=2", "checkpoint.keep=3"])
    whole = build_experiment(cfg, tmp_path / "run")
    whole.loop.run()
    exp = build_experiment(cfg)
    resume(exp.loop, tmp_path / "run" / "checkpoints" / "iter_00000002.pt", cfg, announce=False)
    exp.loop.run()
    for a, b in zip(whole.student.parameters(), exp.student.parameters()):
        assert torch.equal(a, b)
