"""score_run: a run's saved checkpoints scored after it ended, as its evaluations did."""

import json

import pytest

import mic
from mic.core.errors import ConfigError
from mic.experiment import load_config, run_experiment
from mic.training import ModelSelection
from tests.helpers import TINY_RUN

pytestmark = pytest.mark.usefixtures("one_thread")

#: a mean-teacher + MIC digits run evaluated and saved at iterations 2 and 4, with validators
RUN = [
    *(a for a in TINY_RUN if not a.startswith("eval.interval")),
    "eval.interval=2",
    "checkpoint.interval=2",
    "checkpoint.keep=2",
    "eval.validators=[entropy,im,masked_agreement]",
    "eval.validation.batches=2",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scored") / "run"
    run_experiment(load_config(RUN), folder)
    return folder


def _evaluations(folder):
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return {r["step"]: r for r in records if any(k.startswith("eval/") for k in r)}


def test_every_checkpoint_scores_as_the_run_s_evaluation_of_its_iteration(run):
    records = mic.score_run(run)
    names = [r["checkpoint"].rsplit("/", 1)[-1] for r in records]
    assert names == ["iter_00000002.pt", "best.pt", "iter_00000004.pt"]  # by iteration
    evaluated = _evaluations(run)
    for record in records:
        scores = {k: v for k, v in record.items() if k.startswith(("eval/", "validator/"))}
        assert {"validator/teacher/im", "eval/teacher/accuracy"} <= set(scores)
        assert scores == {k: evaluated[record["step"]][k] for k in scores}  # bitwise alike


def test_the_docs_snippet_runs_as_written(run):
    """docs/model_selection.md, "Scoring a run's checkpoints afterwards", on this run."""
    from tests.test_doc_snippets import snippets

    code = snippets("model_selection.md", "From Python")[1]
    namespace: dict = {}
    exec(code.replace('"runs/x"', repr(str(run))), namespace)
    picks = namespace["selection"].picks("student", "accuracy")
    assert {"snd", "bnm", "accuracy", "last"} <= set(picks)


def test_a_validator_the_run_did_not_compute_is_scored_and_picks(run):
    records = mic.score_run(run, ["iter_00000002.pt", "iter_00000004.pt"], validators=["bnm"])
    assert [r["step"] for r in records] == [2, 4]
    validators = {k for r in records for k in r if k.startswith("validator/")}
    assert validators == {"validator/student/bnm", "validator/teacher/bnm"}
    selection = ModelSelection()
    for record in records:
        selection.update(record)
    assert selection.picks("student", "accuracy")["bnm"]["step"] in (2, 4)
    alone = mic.score_run(run, "best.pt", validators=[], overrides=["eval.models=[student]"])
    assert not any(k.startswith(("validator/", "eval/teacher")) for k in alone[0])


@pytest.mark.parametrize(
    "kwargs, said",
    [
        ({"overrides": ["model.backbone=resnet18"]}, "the model, the task and the method are"),
        ({"overrides": ["eval.adabn"]}, r"give key=value of a setting of the data"),
        ({"overrides": ["eval.adabn_batch=2"]}, "the run's config has no eval.adabn_batch"),
        ({"overrides": ["dataset.test=null", "eval.validators=[]"]}, "nothing to score"),
        ({"validators": ["IM"]}, "unknown"),
        ({"checkpoints": ["iter_00000003.pt"]}, "'iter_00000003.pt' is no file"),
        ({"checkpoints": ["student.pt"]}, "no mic checkpoint"),
        ({"checkpoints": []}, r"checkpoints=\[\]\): name the checkpoints"),
        ({"overrides": ["device=cuda"]}, "the model, the task and the method are"),
    ],
)
def test_what_score_run_cannot_do_is_named(run, kwargs, said):
    with pytest.raises(ConfigError, match=said):
        mic.score_run(run, **kwargs)


def test_a_resolved_value_that_others_took_is_named_with_them(run):
    """config.yaml is resolved: an override of a value that other settings read through an
    interpolation would change it alone, and leave the data where it was."""
    from omegaconf import OmegaConf

    config = run / "config.yaml"
    text = config.read_text()
    cfg = OmegaConf.load(config)  # (the bundled digits have no root: a folders config's)
    cfg.dataset.root_target = "/data/night"
    cfg.dataset.test_root = "/data/night/test"  # as ${dataset.root_target}/test resolved
    try:
        config.write_text(OmegaConf.to_yaml(cfg))
        with pytest.raises(ConfigError, match=r"stands in dataset\.test_root too.*override"):
            mic.score_run(run, overrides=["dataset.root_target=/mnt/night"])
    finally:
        config.write_text(text)


def test_a_folder_that_is_no_run_is_named_as_load_run_names_it(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        mic.score_run(tmp_path / "nothing")
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match=r"holds no config\.yaml"):
        mic.score_run(tmp_path / "run")
