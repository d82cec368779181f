"""score_run: a run's saved checkpoints scored after it ended, as its evaluations did."""

import json
import warnings

import pytest

import mic
from mic.core.errors import ConfigError
from mic.experiment import load_config, run_experiment
from mic.training import ModelSelection
from tests.helpers import TINY_RUN, changed_bytes

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
    import torch

    state = torch.get_rng_state()
    records = mic.score_run(run)
    assert torch.equal(torch.get_rng_state(), state)  # (the caller's draws go on as before)
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
    pick = selection.picks("student", "accuracy")["bnm"]
    assert pick["step"] in (2, 4)  # and the pick names the checkpoint it scored
    assert pick["checkpoint"] == str(run / "checkpoints" / f"iter_0000000{pick['step']}.pt")
    # records of another run (the same steps): the picks would mix them up, in silence
    moved = {**records[0], "checkpoint": records[0]["checkpoint"].replace(str(run), "/other/run")}
    again = ModelSelection()
    again.load_state_dict(selection.state_dict())  # (the run folder kept)
    for one in (selection, again):
        with pytest.warns(UserWarning, match=r"ModelSelection: records of two runs .*'/other/run'"):
            one.update(moved)
    # the same run named another way, and a copy outside a run's checkpoints/: no other run
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh = ModelSelection()
        fresh.update(records[0])
        fresh.update({**records[1], "checkpoint": f"{run}/checkpoints/../checkpoints/x.pt"})
        fresh.update({**records[1], "checkpoint": "/somewhere/kept.pt"})
    assert fresh.picks("student", "accuracy")["last"]["checkpoint"] == "/somewhere/kept.pt"
    alone = mic.score_run(run, "best.pt", validators=[], overrides=["eval.models=[student]"])
    assert not any(k.startswith(("validator/", "eval/teacher")) for k in alone[0])


@pytest.mark.parametrize(
    "kwargs, said",
    [
        ({"overrides": ["model.backbone=resnet18"]}, "the model, the task and the method are"),
        ({"overrides": ["eval.adabn"]}, r"Error parsing override 'eval\.adabn'"),
        ({"overrides": ["+eval.adabn_batches=2"]}, r"give key=value of a setting the run's"),
        ({"overrides": ["eval.adabn_batch=2"]}, "the run's config has no eval.adabn_batch"),
        ({"overrides": ["eval.validaton.batches=2"]}, r"\.batches\. Did you mean: validation,"),
        ({"overrides": ["dataset.test=null", "eval.validators=[]"]}, "nothing to score"),
        ({"validators": ["IM"]}, "unknown"),
        ({"checkpoints": ["iter_00000003.pt"]}, "'iter_00000003.pt' is no file"),
        ({"checkpoints": ["student.pt"]}, r"holds plain weights \(no iteration, one model;"),
        ({"checkpoints": []}, r"checkpoints=\[\]\): name the checkpoints"),
        ({"overrides": ["device=cuda"]}, "the model, the task and the method are"),
        ({"overrides": ["eval.validation.batches=1.5"]}, r"overrides=.*\]\): 1 config value is"),
        ({"overrides": ["loader.test_batch_size=0"]}, r"loader.test_batch_size: Input should"),
        ({"overrides": ["dataset.test.split=bogus"]}, "split"),
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
        with pytest.raises(ConfigError, match=r"copied into .* \(dataset\.test_root\): override"):
            mic.score_run(run, overrides=["dataset.root_target=/mnt/night"])
    finally:
        config.write_text(text)


def test_the_checkpoints_folder_of_a_run_is_named_as_inside_it(run):
    with pytest.raises(ConfigError, match=r"inside the run folder .* score_run\('"):
        mic.score_run(run / "checkpoints")


def test_a_checkpoint_of_another_model_is_named_by_score_run_not_load_run(run, tmp_path):
    from mic.training import load_checkpoint, save_checkpoint

    state = load_checkpoint(run / "checkpoints" / "best.pt")
    state["student"] = {f"other.{k}": v for k, v in state["student"].items()}
    other = save_checkpoint(state, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match=r"^score_run: the weights in .*other\.pt' do not fit"):
        mic.score_run(run, [other], validators=[])


def test_a_checkpoint_cut_short_is_named_not_skipped_in_silence(run):
    cut = run / "checkpoints" / "iter_00000003.pt"
    cut.write_bytes((run / "checkpoints" / "iter_00000002.pt").read_bytes()[:1000])
    try:
        with pytest.warns(UserWarning, match=r"iter_00000003\.pt in its checkpoints/ cannot be"):
            assert [r["step"] for r in mic.score_run(run, validators=[])] == [2, 4, 4]
        with pytest.raises(ConfigError, match=r"'iter_00000003\.pt' cannot be scored \(cannot"):
            mic.score_run(run, "iter_00000003.pt")
    finally:
        cut.unlink()


def test_a_checkpoint_whose_bytes_changed_is_left_out_with_a_warning_or_named(run):
    changed = run / "checkpoints" / "iter_00000003.pt"
    changed.write_bytes(changed_bytes(run / "checkpoints" / "iter_00000002.pt"))
    try:
        with pytest.warns(UserWarning, match=r"iter_00000003\.pt in .* bytes changed.* is not"):
            assert [r["step"] for r in mic.score_run(run, validators=[])] == [2, 4, 4]
        with pytest.raises(ConfigError, match=r"no longer matches the checksum stored with it"):
            mic.score_run(run, "iter_00000003.pt")
    finally:
        changed.unlink()


def test_a_checkpoint_named_twice_is_scored_once_and_main_puts_the_warnings_back(run, capsys):
    """best.pt by name and by path: scored twice (minutes of a segmentation run). mic-score's
    main, called from Python, left warnings formatted in its words."""
    import warnings

    records = mic.score_run(run, ["best.pt", run / "checkpoints" / "best.pt"], validators=[])
    assert len(records) == 1
    before = warnings.formatwarning, warnings.showwarning
    from mic.scoring import main

    main([str(run), "best.pt", "--validators", ""])
    assert (warnings.formatwarning, warnings.showwarning) == before
    assert capsys.readouterr().out.startswith("best.pt  [iteration 4]")
    filters = list(warnings.filters)
    # detectron2's torch.meshgrid warning, printed twice by mic-score, is left out, as by
    # mic-train; other warnings still show; the filters are put back
    from mic import scoring

    def command(args, folder):
        warnings.warn("torch.meshgrid: in an upcoming release, it will", UserWarning, stacklevel=1)
        warnings.warn("a warning of its own", UserWarning, stacklevel=1)

    original, scoring._command = scoring._command, command
    try:
        with pytest.warns(UserWarning, match="a warning of its own") as caught:
            main([str(run)])
    finally:
        scoring._command = original
    assert not [w for w in caught if "meshgrid" in str(w.message)]
    assert warnings.filters == filters


def test_a_run_whose_every_checkpoint_is_damaged_is_not_said_to_have_saved_none(run, tmp_path):
    """It warned that the files could not be read, then said the run saved none."""
    import shutil

    copy = shutil.copytree(run, tmp_path / "run")
    for path in (copy / "checkpoints").glob("*.pt"):
        path.write_bytes(changed_bytes(path))
    with pytest.raises(ConfigError, match=r"none of the checkpoints .* can be read .*best\.pt"):
        mic.score_run(copy)


def test_a_folder_that_is_no_run_is_named_as_load_run_names_it(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        mic.score_run(tmp_path / "nothing")
    with pytest.raises(ConfigError, match=r"takes the run folder \(its hydra.run.dir\), got ''"):
        mic.score_run("")
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match=r"holds no config\.yaml"):
        mic.score_run(tmp_path / "run")


def test_a_mic_train_run_whose_data_moved_is_scored_with_its_roots_overridden(tmp_path):
    """mic-train keeps Hydra's record of the config, interpolations kept: one override of
    dataset.root_target moves every path built from it (config.yaml, resolved, would keep
    the old one). The moved data scores as the run did."""
    import shutil

    from tests.cli import run_mic_train
    from tests.helpers import folder_overrides

    data = tmp_path / "data"
    overrides = folder_overrides(data)
    run = tmp_path / "run"
    args = [*RUN, *overrides, "eval.validators=[im]", "eval.validation.batches=1"]
    done = run_mic_train([*args, f"hydra.run.dir={run}"])
    assert done.returncode == 0, done.stderr[-2000:]
    before = mic.score_run(run, "best.pt")
    shutil.move(data, tmp_path / "moved")
    moved = [
        f"dataset.{k}={tmp_path / 'moved' / d}"
        for k, d in [("root_source", "src"), ("root_target", "tgt"), ("root_test", "tst")]
    ]
    after = mic.score_run(run, "best.pt", overrides=moved)
    scores = [
        {k: v for k, v in r.items() if k.startswith(("eval/", "validator/"))}
        for r in (before[0], after[0])
    ]
    assert scores[0] == scores[1] and "validator/student/im" in scores[0]
    with pytest.raises(Exception, match="does not exist"):  # (the old paths are gone)
        mic.score_run(run, "best.pt")
    with pytest.raises(ConfigError, match=r"they change .* \(through an interpolation\)"):
        mic.score_run(run, "best.pt", overrides=[*moved, "dataset.size=16"])


def test_masked_agreement_of_the_student_alone_is_against_the_checkpoint_s_teacher(run):
    """The run scored the student's agreement with the teacher's pseudo-labels also where
    the teacher itself was not scored: without the teacher loaded, its own were used."""
    alone = mic.score_run(run, "iter_00000004.pt", overrides=["eval.models=[student]"])[0]
    key = "validator/student/masked_agreement"
    assert alone[key] == _evaluations(run)[4][key]
    assert not any(k.startswith(("eval/teacher", "validator/teacher")) for k in alone)


def test_arguments_of_another_type_and_run_relative_paths(run):
    with pytest.raises(ConfigError, match=r"got 40 \(the checkpoint of iteration 40 is 'iter_"):
        mic.score_run(run, 40)
    with pytest.raises(ConfigError, match=r"score_run\(run=...\) takes the run folder"):
        mic.score_run(None)
    with pytest.raises(ConfigError, match=r"device=...\) takes 'cpu'"):
        mic.score_run(run, "best.pt", device=None)
    with pytest.raises(ConfigError, match=r"validators= or eval\.validators in overrides, not"):
        mic.score_run(run, validators=["im"], overrides=["eval.validators=[bnm]"])
    with pytest.raises(ConfigError, match=r"is a folder inside the run folder"):
        mic.score_run(run / ".hydra" if (run / ".hydra").is_dir() else run / "checkpoints")
    with pytest.raises(ConfigError, match=r"is a file; give the run folder"):
        mic.score_run(run / "config.yaml")
    (record,) = mic.score_run(run, "checkpoints/best.pt", validators=[], overrides=None)
    assert record["checkpoint"] == str(run / "checkpoints" / "best.pt")


def test_a_checkpoint_removed_while_scoring_is_skipped_with_a_warning(run, monkeypatch):
    """A run still training rotates its checkpoints (checkpoint.keep) under score_run."""
    import mic.scoring

    gone = run / "checkpoints" / "iter_00000099.pt"
    found = mic.scoring._checkpoints
    for order in (lambda f, g: [*found(f, g), gone], lambda f, g: [gone, *found(f, g)]):
        monkeypatch.setattr(mic.scoring, "_checkpoints", order)  # (the first: the oldest)
        with pytest.warns(UserWarning, match=r"iter_00000099\.pt' was removed while scoring"):
            records = mic.score_run(run, "best.pt", validators=[])
        assert len(records) == 1


def test_a_teacher_asked_of_a_run_without_one_and_a_checkpoint_of_another_run(run, tmp_path):
    source_only = tmp_path / "source_only"
    run_experiment(load_config([*RUN, "method=source_only", "mic=none"]), source_only)
    with pytest.raises(
        ConfigError, match=r"eval.models=\[teacher\], but checkpoint best.pt holds no teacher"
    ):
        mic.score_run(source_only, "best.pt", overrides=["eval.models=[teacher]"])
    other = source_only / "checkpoints" / "best.pt"
    with pytest.warns(UserWarning, match=r"written by a run of another config .* \(method"):
        mic.score_run(run, [other], validators=[])
    # among checkpoints with a teacher, one without: said, not scored as '(no labels)'
    with pytest.warns(UserWarning, match=r"checkpoint .*best.pt holds no teacher .* not scored"):
        records = mic.score_run(
            run, ["best.pt", other], validators=[], overrides=["eval.models=[teacher]"]
        )
    assert "eval/teacher/accuracy" in records[0] and "eval/teacher/accuracy" not in records[1]
    # a run resumed with another method setting (resume_allow_changes): its checkpoints of
    # either config are its own
    config = source_only / "config.yaml"
    text = config.read_text()
    (source_only / "config_resumed.yaml").write_text(text)
    config.write_text(text.replace("name: source_only", "name: source_only_before"))
    assert "source_only_before" in config.read_text()  # (the first config: another method)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            mic.score_run(source_only, "best.pt", validators=[])
    finally:
        config.write_text(text)
        (source_only / "config_resumed.yaml").unlink()


def test_mic_score_prints_every_checkpoint_and_the_picks_and_writes_them_as_json(run, tmp_path):
    """score_run on the command line: one line per checkpoint, the picks naming their
    checkpoint, and --json's records those of score_run (as the run's evaluations)."""
    import shutil

    from tests.cli import run_mic_score

    written = tmp_path / "scores.json"
    out = run_mic_score([str(run), "--json", str(written)])
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    names = [line.split()[0] for line in lines[:3]]
    assert names == ["iter_00000002.pt", "best.pt", "iter_00000004.pt"]
    assert "[iteration 2] target student accuracy" in lines[0]
    assert "validators of the student (higher is better): entropy" in lines[0]
    assert "checkpoint picks for the student (target accuracy" in out.stdout
    assert "(best.pt)" in out.stdout or "(iter_00000002.pt)" in out.stdout
    saved = json.loads(written.read_text())
    evaluated = _evaluations(run)
    assert [r["step"] for r in saved["records"]] == [2, 4, 4]
    for record in saved["records"]:
        scores = {k: v for k, v in record.items() if k.startswith(("eval/", "validator/"))}
        assert scores == {k: evaluated[record["step"]][k] for k in scores}
    assert set(saved["selection"]["student"]) == {"entropy", "im", "masked_agreement",
                                                  "accuracy", "last"}  # fmt: skip
    # two checkpoints (one named twice), an option between them, a validator the run did not
    # compute
    out = run_mic_score([str(run), "best.pt", "--validators", "snd", "iter_00000002.pt", "best.pt"])
    assert out.returncode == 0, out.stderr[-2000:]
    shown = [line.split()[0] for line in out.stdout.splitlines()[:2]]
    assert shown == ["best.pt", "iter_00000002.pt"]  # as named; last: the latest iteration
    assert "  last  " in out.stdout and "iteration      4 (best.pt)" in out.stdout
    assert "validators of the student (higher is better): snd " in out.stdout
    assert "  snd " in out.stdout and "  im " not in out.stdout
    assert out.stdout.count("[iteration 4]") == 1  # best.pt scored once
    # no validator: the labelled metric's pick and the last one still said
    out = run_mic_score([str(run), "--validators", ""])
    assert "accuracy (target labels: the best possible)" in out.stdout, out.stderr[-2000:]
    # a damaged config.yaml is named, not a traceback
    damaged = tmp_path / "damaged"
    (damaged / "checkpoints").mkdir(parents=True)
    (damaged / "config.yaml").write_text("{{{: [")
    shutil.copy(run / "checkpoints" / "best.pt", damaged / "checkpoints")
    out = run_mic_score([str(damaged)])
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "config.yaml' cannot be read as the run's config" in out.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["{run}/checkpoints"], "give the run folder, mic-score {run} (CHECKPOINT ... chooses"),
        (["{run}", "eval.adabn_batch=2"], "the setting 'eval.adabn_batch=2': the run's config"),
        (["{run}", "dataset.root_target=/x"], "target? (dataset.target is a section: dataset.t"),
        (["{run}", "seed=3"], "the model, the task and the method are the run's"),
        (["{run}", "--validators", "snf"], "unknown validator 'snf' in --validators"),
        (["{run}", "--device", "gpu"], "--device 'gpu': it is no torch device"),
        (["{run}", "--bogus"], "unrecognized arguments: --bogus (mic-score --help lists"),
        (["{run}", "--json", "{run}/config.yaml"], "is no earlier mic-score output; give a new"),
        (["{run}", "--json", "{run}/checkpoints/x.json"], "it is in the run's checkpoints/"),
        (["{run}", "--json", "{run}"], "it is a folder; give a file"),
        (["{run}", "--json", ""], "--json '': give the file to write the scores into"),
        (["{run}", "dataset.test=null", "--validators", ""], "give --validators NAME,..."),
        (["{run}", "eval.validators=[im]", "--validators", "im"], "give --validators or eval."),
        (["{run}", "iter_00000003.pt"], "mic-score: checkpoint 'iter_00000003.pt' is no file"),
        (["{run}", "3"], "is no file (the checkpoint of iteration 3 is 'iter_00000003.pt')"),
        (["{run}/nothing"], "does not exist"),  # (was named a folder inside the run)
        (["{run}", "--json", "{run}/no/such/folder/x.json"], "--json {run}/no/such/folder/x.json"),
    ],
)
def test_bad_input_to_mic_score_is_one_error_line_in_its_own_words(run, args, said):
    from tests.cli import run_mic_score

    before = (run / "config.yaml").read_text()
    out = run_mic_score([a.format(run=run) for a in args])
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert (run / "config.yaml").read_text() == before
    errors = [line for line in out.stderr.splitlines() if line.startswith("mic: error: ")]
    assert len(errors) == 1 and said.format(run=run) in errors[0], out.stderr[-2000:]
    assert "score_run" not in errors[0]


def test_the_mic_score_console_script_answers_help_and_a_missing_run_before_importing_torch():
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    beside = Path(sys.executable).parent  # the venv's, else the one on PATH (pip --target)
    script = shutil.which("mic-score", path=f"{beside}{os.pathsep}{os.environ['PATH']}")
    assert script is not None, "pip install -e . installs the mic-score console script"
    out = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--validators NAME,..." in out.stdout
    assert "CHECKPOINT | KEY=VALUE" in out.stdout
    out = subprocess.run([script], capture_output=True, text=True, timeout=60)
    said = (
        "mic: error: the following arguments are required: run (mic-score --help lists the "
        "arguments)"
    )
    assert out.returncode == 2 and out.stderr.splitlines()[-1] == said


def test_the_progress_bar_of_mic_score_names_the_checkpoint(run, capsys, monkeypatch):
    """best.pt and the iter_*.pt of its iteration showed the same bar."""
    from mic.scoring import _scored_run
    from mic.training import hooks

    monkeypatch.setattr(hooks, "_on_terminal", lambda: True)
    _scored_run(run, ["best.pt"], [], [], "cpu", progress=True)
    assert "scoring the student (best.pt, iteration 4)" in capsys.readouterr().err
