"""The config checks made before anything is built: keys that nothing reads, a model or loss
term of another task, every missing value at once (mic.schema)."""

from pathlib import Path

import pytest

from mic import ConfigError
from mic.experiment import load_config
from mic.schema import _missing, _options, check_config, task_mismatches, unread_keys

#: the experiments one runs (those starting with _ are parts the others include)
EXPERIMENTS = sorted(
    p.stem for p in (Path(__file__).parents[1] / "conf" / "experiment").glob("[!_]*.yaml")
)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_bundled_experiment_fits_its_task_and_reads_every_key(experiment):
    cfg = load_config([f"experiment={experiment}"])
    assert task_mismatches(cfg) == [] and unread_keys(cfg) == []


@pytest.mark.parametrize("task", ["classification", "segmentation", "detection"])
def test_the_methods_offered_for_a_task_fit_it(task):
    methods = _options("method", task)
    assert "source_only" in methods and "mean_teacher" in methods
    assert ("dacs" in methods) == (task == "segmentation")
    assert ("sada" in methods) == (task == "detection")
    assert ("dann" in methods) == (task == "classification")
    experiment = {"classification": [], "segmentation": ["experiment=streets"]}
    base = experiment.get(task, ["experiment=det_shapes"])
    for method in methods:
        assert task_mismatches(load_config([*base, f"method={method}"])) == [], method


def test_a_key_of_one_s_own_is_kept_under_user_or_where_an_interpolation_reads_it():
    assert unread_keys(load_config(["+user.tag=baseline"])) == []
    cfg = load_config(["+my_lr=0.01", "optimizer.lr=${my_lr}"])
    assert unread_keys(cfg) == []
    (problem,) = unread_keys(load_config(["+iteration=4"]))
    assert problem.startswith("iteration: mic-train reads no such setting")
    assert "Did you mean: iterations?" in problem and "+user.iteration=..." in problem


def test_a_model_and_a_method_of_another_task_are_named_with_what_fits():
    problems = task_mismatches(load_config(["model=small_unet", "method=dacs"]))
    assert problems[0].startswith("model: mic.tasks.segmentation.SmallUNet is a segmentation")
    assert "model=small_cnn" in problems[0] and "model=small_unet" not in problems[0]
    assert problems[1].startswith("method: loss terms of another task than classification")
    assert "mix (mic.tasks.segmentation.ClassMix, segmentation)" in problems[1]
    assert "method=mean_teacher" in problems[1] and "method=dacs" not in problems[1]


@pytest.mark.parametrize(
    "task,expected",
    [
        ("classification", "digits folders office31 officehome visda2017"),
        ("segmentation", "cityscapes2acdc cityscapes2darkzurich gta2cityscapes seg_folders"),
        ("detection", "cityscapes_foggy det_coco det_context det_shapes det_voc"),
    ],
)
def test_the_data_sets_offered_for_a_task_are_those_of_its_readers(task, expected):
    # cityscapes2darkzurich takes its source from the config it extends (cityscapes2acdc)
    assert _options("dataset", task)[: len(expected.split())] == expected.split()


def test_a_data_set_of_another_task_is_named_with_what_fits():
    (problem,) = task_mismatches(load_config(["experiment=det_shapes", "dataset=streets"]))
    assert problem.startswith(
        "dataset: streets is a segmentation data set but the task is detection; choose a "
        "detection data set (dataset=cityscapes_foggy, "
    )
    assert problem.endswith("or experiment, or set task=segmentation")
    # a reader of one's own, outside mic.datasets, is not judged
    own = ["dataset.source._target_=my_project.Reader"]
    assert task_mismatches(load_config(["experiment=det_shapes", *own])) == []


def test_every_missing_value_is_named_where_it_is_set():
    cfg = load_config(["dataset=folders"])
    assert _missing(cfg) == [
        "dataset.num_classes",
        "dataset.root_source",
        "dataset.root_target",
        "dataset.root_test",
    ]  # not task.num_classes, which reads dataset.num_classes
    with pytest.raises(ConfigError, match=r"^4 mandatory values are not given: dataset\.num"):
        check_config(cfg)


def test_a_bad_method_setting_is_found_before_any_data_is_read(tmp_path):
    from hydra.errors import InstantiationException

    from mic.experiment import build_experiment

    missing = tmp_path / "nowhere"  # a data set that cannot be built: its error would come first
    cfg = load_config(
        [
            "dataset=folders",
            "dataset.num_classes=3",
            *(f"dataset.root_{s}={missing}" for s in ("source", "target", "test")),
            "method.terms.mic.masker.ratio=1.5",
        ]
    )
    # (mic-train gives the ConfigError inside hydra's InstantiationException)
    with pytest.raises(InstantiationException, match=r"masker ratio must be a probability in"):
        build_experiment(cfg)
