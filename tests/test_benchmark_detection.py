"""The detection benchmark scripts' own logic: which overrides reach a source-only warm-up,
and the ablation's variants and tables (no training)."""

import json
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

import detection
import detection_ablation

from mic import ConfigError
from mic.experiment import load_config

SOURCE_ONLY = ["experiment=det_context", "method=source_only", "mic=none"]


def test_warm_up_takes_the_overrides_a_source_only_run_can_take():
    """A MIC setting on the command line used to reach the warm-up too, where the source-only
    method has no MIC term: the config did not compose and the run stopped."""
    given = [
        "method.terms.mic.weight=0.5",
        "+method.terms.mic.part_weights.rpn_objectness=0.0",
        "mic.masker.ratio=0.3",
        "~method.terms.adversarial",
        "teacher.alpha=0.99",
        "task.score_threshold=0.9",
        "dataset.beta=0.03",
        "model.norm=batch",
        "method.forward_pass=joint",
    ]
    with pytest.raises(ConfigError, match=r"method\.terms\.mic"):
        load_config([*SOURCE_ONLY, *given])
    kept = detection.source_stage_overrides(given)
    # a setting of the method itself (not of its terms) still reaches the warm-up
    assert kept == ["dataset.beta=0.03", "model.norm=batch", "method.forward_pass=joint"]
    cfg = load_config([*SOURCE_ONLY, *kept[:2]])
    assert cfg.dataset.beta == 0.03 and not cfg.method.terms.get("mic")


def test_foreground_only_zeroes_the_background_of_pseudo_labelled_images_and_is_undone():
    import torch

    from mic.tasks.detection import model

    original = model.sample_weights
    target = {"boxes": torch.zeros(2, 4), "weights": torch.tensor([0.5, 0.9])}
    matched, foreground = torch.tensor([0, -1, 1, -1]), torch.tensor([True, False, True, False])
    with detection_ablation.foreground_only():
        weights = model.sample_weights(target, matched, foreground)
        source = model.sample_weights({"boxes": target["boxes"]}, matched, foreground)
    assert weights.tolist() == [0.5, 0.0, 0.8999999761581421, 0.0]
    assert source.tolist() == [1.0] * 4  # source images (no weights) keep weight 1
    assert model.sample_weights is original
    assert original(target, matched, foreground)[1] == pytest.approx(0.7)  # the mean, as before


@pytest.mark.parametrize("variant", sorted(detection_ablation.VARIANTS))
def test_each_ablation_variant_composes_and_builds_its_mic_term(variant):
    method, extra, flags, what = detection_ablation.VARIANTS[variant]
    assert what and set(flags) <= {"running_norm", "foreground_only"}
    cfg = load_config(["experiment=det_context", *detection.METHODS[method], *extra, "device=cpu"])
    for o in extra:  # a change of the teacher reached its config
        if o.startswith("teacher."):
            key, value = o.split("=")
            assert cfg.teacher[key.split(".")[-1]] == pytest.approx(float(value))
    if method in ("sada", "sada_ema"):
        assert not cfg.method.terms.get("mic")
        return
    term = instantiate(cfg.method.terms.mic)
    mic_overrides = [o for o in extra if "method.terms.mic" in o]
    for o in mic_overrides:  # each change reached the term
        key, value = o.lstrip("+").split("=")
        field = key.split(".")[-1]
        if field == "weighting":
            expected = "none" if value == "student" else value
            assert term.weighting.mode == expected and term.student_weighted == (value == "student")
        elif field in ("block_size", "ratio"):
            assert getattr(term.masker, field) == pytest.approx(float(value))
        elif field == "augmentation":
            assert term.masker.augmentation is None
        else:
            assert term.part_weights[field] == pytest.approx(float(value))
    task = instantiate(cfg.task)
    for o in extra:  # and each change of the task reached it
        if o.startswith("task."):
            key, value = o.split("=")
            assert getattr(task, key.split(".")[-1]) == pytest.approx(float(value))


def _row(variant: str, seed: int, student: float, per_class: list[float]) -> dict:
    return {
        "variant": variant,
        "method": detection_ablation.VARIANTS[variant][0],
        "seed": seed,
        "student": student,
        "teacher": None,
        "student_per_class": per_class,
        "seconds_per_iteration": 0.4,
    }


def test_ablation_table_pairs_each_variant_with_sada_by_seed(tmp_path):
    runs = {}
    for seed, (base, mic, prob) in enumerate([(0.70, 0.65, 0.72), (0.68, 0.60, 0.69)]):
        for variant, score in (("sada", base), ("sada_mic", mic), ("prob", prob)):
            row = _row(variant, seed, score, [score] * 5)
            if variant != "sada":
                row["train"] = [{"step": 10, "mic": 0.5, "mic/boxes": 2.0, "mic/images": 1.0}]
                row["pseudo_boxes"] = {
                    "precision": 0.8,
                    "precision_any_class": 0.9,
                    "recall": 0.5,
                    "boxes_per_image": 1.5,
                }
            runs[json.dumps([variant, seed])] = row
    # a run without a score (its evaluation failed) is left out of every difference
    unscored = _row("tau09", 0, None, None)
    runs[json.dumps(["tau09", 0])] = unscored
    start = {"precision": 0.7, "precision_any_class": 0.95, "recall": 0.4, "boxes_per_image": 2.0}
    runs[json.dumps(["source", 0])] = {"variant": "source", "seed": 0, "pseudo_boxes": start}
    out = tmp_path / "ablation.md"
    detection_ablation.write_table({"runs": runs, "commands": ["a command"]}, out)
    md = out.read_text()
    # prob - sada: +2 and +1 points; sada_mic - sada: -5 and -8; prob - sada_mic: +7, +9
    assert "| prob − sada | 2 | 1.5 ± 0.7 |" in md and "| 2 / 2 | +2.0, +1.0 |" in md
    assert "| sada_mic − sada | 2 | -6.5 ± 2.1 |" in md and "| 0 / 2 | -5.0, -8.0 |" in md
    assert "| prob − sada_mic | 2 | 8.0 ± 1.4 |" in md
    assert "| prob | 2 | 0.500 | 0.500 | 2.00 | 100.0 | - | 80.0 ± 0.0 | 90.0 ± 0.0 |" in md
    # the teacher at the start, on the same scenes, with no training statistics
    assert "| source | 1 | - | - | - | - | - | 70.0 | 95.0 | 40.0 | 2.00 |" in md
    assert md.index("| source | 1 |") < md.index("| prob | 2 | 0.500")
    assert "| tau09 | pseudo-boxes at teacher score >= 0.9 (published 0.8) | 1 | - |" in md
    assert "| tau09 − sada |" not in md
    assert "- a command" in md
    assert json.loads(out.with_suffix(".json").read_text())["runs"] == runs


def test_a_run_without_a_teacher_has_no_pseudo_box_probe(tmp_path):
    """SADA alone builds no teacher: its run's probe is None (it once raised after training,
    losing the runs queued behind it), and the table leaves it out of the pseudo-box rows."""
    from types import SimpleNamespace

    exp = SimpleNamespace(loop=SimpleNamespace(teacher=None))
    assert detection_ablation.teacher_quality(exp, 4) is None
    row = _row("sada", 0, 0.7, [0.7] * 5)
    row["pseudo_boxes"] = None
    out = tmp_path / "ablation.md"
    detection_ablation.write_table({"runs": {json.dumps(["sada", 0]): row}}, out)
    md = out.read_text()
    assert "| sada | the base | 1 | 70.0 |" in md
    assert "## The masked branch" not in md


def test_runs_that_differ_in_the_adaptation_alone_share_one_warm_up_file(tmp_path):
    mic_setting = detection.warmup_path(
        tmp_path, "det_context", "torchvision", 3, 2000, ["method.terms.mic.weighting=student"]
    )
    plain = detection.warmup_path(tmp_path, "det_context", "torchvision", 3, 2000, [])
    assert mic_setting == plain == tmp_path / "warmup_det_context_torchvision_seed3_w2000_.pt"
    assert detection_ablation.warmup_file(tmp_path, 3, 2000) == plain
    # a setting of the data does make another warm-up
    other = detection.warmup_path(
        tmp_path, "det_shapes", "torchvision", 3, 2000, ["dataset.beta=0.03"]
    )
    assert other.name == "warmup_torchvision_seed3_w2000_dataset.beta-0.03.pt"


def test_only_unweighted_mic_rows_of_detection_py_stand_in_for_the_ablations_base(tmp_path):
    """The ablation's changes are made to the unweighted masked losses; a SADA + MIC row of
    detection.py at the current default (the student weighting) is another run."""
    detection_rows = []
    for seed in (2, 3):
        for method, overrides in (
            ("sada", ["method=sada", "mic=none"]),
            ("sada_mic", ["method=sada", "mic=block", detection_ablation.UNWEIGHTED]),
            ("sada_mic", ["method=sada", "mic=block"]),  # the default weighting, after it
        ):
            row = {**_row("sada", seed, 0.7, [0.7] * 5), "method": method, "overrides": overrides}
            detection_rows.append(row)
    cache = tmp_path / "detection_context.json"
    cache.write_text(json.dumps({"rows": detection_rows}))
    taken = detection_ablation.base_rows(cache, [2])
    assert sorted(taken) == [json.dumps(["sada", 2]), json.dumps(["sada_mic", 2])]
    assert detection_ablation.UNWEIGHTED in taken[json.dumps(["sada_mic", 2])]["overrides"]
    # and the ablation's own sada_mic variant is the unweighted one
    assert detection_ablation.UNWEIGHTED in detection_ablation.VARIANTS["sada_mic"][1]
