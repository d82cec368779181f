"""The config checks made before anything is built: keys that nothing reads, a model or loss
term of another task, every missing value at once, loss weights, the schedule's settings
(mic.schema)."""

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mic import ConfigError
from mic.experiment import load_config
from mic.schema import (
    _missing,
    _options,
    check_config,
    check_eval_models,
    decode_env,
    flag_problems,
    spelled_alike,
    task_mismatches,
    unread_keys,
    unread_section_keys,
)
from tests.cli import run_mic_train
from tests.helpers import TINY_RUN

#: the experiments one runs (those starting with _ are parts the others include)
EXPERIMENTS = sorted(
    p.stem for p in (Path(__file__).parents[1] / "conf" / "experiment").glob("[!_]*.yaml")
)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_bundled_experiment_fits_its_task_and_reads_every_key(experiment):
    cfg = load_config([f"experiment={experiment}"])
    assert task_mismatches(cfg) == [] and unread_keys(cfg) == []
    assert unread_section_keys(cfg, added=[]) == [] and flag_problems(cfg) == []


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_bundled_experiment_resolves_as_cfg_job_resolve_prints_it(experiment):
    """DAFormer's feature-distance classes defaulted to a list that OmegaConf.resolve cannot
    store: mic-train experiment=gta2cs_daformer_mic --cfg job --resolve ended in a traceback."""
    from omegaconf import OmegaConf

    OmegaConf.resolve(load_config([f"experiment={experiment}"]))


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
    # without a test set (docs/own_dataset.md: dataset.test=null) its root is read by nothing
    # and not asked for (it was, while dataset.test=null alone was documented to do)
    given = ["dataset.num_classes=2", "dataset.root_source=s", "dataset.root_target=t"]
    cfg = load_config(["dataset=folders", *given, "dataset.test=null", "checkpoint.best_by=im"])
    check_config(cfg)
    with pytest.raises(ConfigError, match=r"^1 mandatory value is not given: dataset\.root_test"):
        check_config(load_config(["dataset=folders", *given]))


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
    # the ConfigError itself, not Hydra's InstantiationException around it: research code
    # catches mic.ConfigError
    said = r"masker\.ratio: the share of withheld blocks must lie in \[0, 1\)"
    with pytest.raises(ConfigError, match=said) as caught:
        build_experiment(cfg)
    assert not isinstance(caught.value, InstantiationException)


@pytest.mark.parametrize(
    "override,expected",
    [
        (
            "+eval.intervall=1",
            "eval.intervall: mic-train reads no such setting; it would change "
            "nothing. Did you mean: interval?",
        ),
        (
            "+checkpoint.intervall=1",
            "checkpoint.intervall: mic-train reads no such setting; it "
            "would change nothing. Did you mean: interval?",
        ),
        (
            "+log.intervall=1",
            "log.intervall: mic-train reads no such setting; it would change "
            "nothing. Did you mean: interval?",
        ),
        (
            "+eval.validation.batch=2",
            "eval.validation.batch: mic-train reads no such setting; "
            "it would change nothing. Did you mean: batches?",
        ),
        (
            "+loader.pin_memory=true",
            "loader.pin_memory: mic-train reads no such setting; it "
            "would change nothing. The settings of loader are: num_workers, source_batch_size, "
            "target_batch_size, test_batch_size.",
        ),
    ],
)
def test_a_key_that_a_section_mic_train_reads_does_not_have_is_named(override, expected):
    assert unread_section_keys(load_config([override]), added=[]) == [expected]
    with pytest.raises(ConfigError, match=re.escape(expected)):
        check_config(load_config([override]))


def test_a_section_key_of_one_s_own_is_kept_where_an_interpolation_reads_it():
    cfg = load_config(["+eval.my_lr=0.01", "optimizer.lr=${eval.my_lr}"])
    assert unread_section_keys(cfg, added=[]) == []


def test_a_data_set_key_is_judged_only_where_the_command_line_adds_it():
    # keys of the data set's file are never judged (streets' protocol is read by nothing)
    assert unread_section_keys(load_config(["dataset=streets"]), added=[]) == []
    cfg = load_config(["+dataset.mic_block=8"])
    (problem,) = unread_section_keys(cfg, added=["dataset.mic_block"])
    assert problem.startswith("dataset.mic_block: mic-train reads no such setting of the data")
    assert problem.endswith("Did you mean: mic_block_size?")
    # read by an interpolation, or by mic-train itself: fine
    cfg = load_config(["+dataset.my_n=10", "dataset.num_classes=${dataset.my_n}"])
    assert unread_section_keys(cfg, added=["dataset.my_n"]) == []
    cfg = load_config(["dataset=streets", "++dataset.mic_block_size=8"])
    assert unread_section_keys(cfg, added=["dataset.mic_block_size"]) == []


def test_a_method_key_is_judged_where_the_command_line_adds_it():
    cfg = load_config(["experiment=streets", "method=daformer", "+method.rare_clas_sampling=false"])
    (problem,) = unread_section_keys(cfg, added=["method.rare_clas_sampling"])
    assert problem.startswith("method.rare_clas_sampling: mic-train reads no such setting of the")
    assert problem.endswith("Did you mean: rare_class_sampling?")
    # read by the data set's interpolation (as docs/segmentation.md adds it): fine
    cfg = load_config(["experiment=streets", "method=source_only", "+method.rare_class_sampling=1"])
    assert unread_section_keys(cfg, added=["method.rare_class_sampling"]) == []


def test_a_mic_option_of_another_task_is_named_with_the_mic_options_that_fit():
    (problem,) = task_mismatches(load_config(["mic=segmentation"]))
    assert problem.startswith("mic: this mic option's term (mic.tasks.segmentation.")
    assert problem.endswith(
        "choose a classification MIC option (mic=block, mic=block_resnet, mic=block_vit, mic=none)"
    )
    assert "method" not in problem
    assert task_mismatches(load_config(["experiment=streets", "mic=segmentation"])) == []


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["method.terms.mic.weight=-1"], "method.terms.mic.weight"),
        (["method.terms.self_training.weight=-5"], "method.terms.self_training.weight"),
        (["method.terms.mic.weight=nan"], "method.terms.mic.weight"),
        (["method.terms.mic.weight=null"], "method.terms.mic.weight"),  # was float(None)'s
        (
            ["experiment=det_shapes", "method.terms.adversarial.image_weight=-0.1"],
            "method.terms.adversarial.image_weight",
        ),
        (
            ["experiment=det_shapes", "method.terms.mic.part_weights.rpn_box=-1"],
            "method.terms.mic.part_weights.rpn_box",
        ),
    ],
)
def test_a_negative_loss_weight_is_refused(overrides, key):
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}: a loss weight must be a finite"):
        check_config(load_config(overrides))


def test_a_loss_weight_of_zero_is_allowed():
    check_config(load_config(["method.terms.mic.weight=0", "method.terms.self_training.weight=0"]))


@pytest.mark.parametrize(
    "override,expected",
    [
        (
            "method.terms.mic.masker.ratio=abc",
            "method.terms.mic.masker.ratio: Input should be a number (got 'abc')",
        ),
        (
            "method.terms.mic.masker.ratio=true",
            "method.terms.mic.masker.ratio: Input should be a number (got True)",
        ),
        (
            "method.terms.mic.masker.block_size=2.5",
            "method.terms.mic.masker.block_size: Input should be a valid integer, got a number "
            "with a fractional part (got 2.5)",
        ),
    ],
)
def test_a_number_argument_given_otherwise_is_named(override, expected):
    assert flag_problems(load_config([override])) == [expected]


def test_a_whole_number_given_as_a_float_is_a_number():
    assert flag_problems(load_config(["method.terms.mic.masker.block_size=16.0"])) == []


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (
            ["scheduler=poly", "scheduler.power=abc"],
            "scheduler.power: must be a number >= 0 (got 'abc')",
        ),
        (
            ["scheduler=poly", "scheduler.warmup_iters=-5"],
            "scheduler.warmup_iters: must be a whole number >= 0 (got -5)",
        ),
        (
            ["scheduler=poly", "scheduler.warmup_ratio=2"],
            "scheduler.warmup_ratio: must be a number >= 0 and <= 1 (got 2)",
        ),
        (
            ["scheduler=inverse", "scheduler.gamma=-1"],
            "scheduler.gamma: must be a number >= 0 (got -1)",
        ),
        (
            ["scheduler=warmup_multistep", "scheduler.gamma=0"],
            "scheduler.gamma: must be a number > 0 (got 0)",
        ),
        (
            ["scheduler=warmup_multistep", "scheduler.steps=[10,2.5]"],
            "scheduler.steps: must be a whole number >= 0 (got 2.5)",
        ),
    ],
)
def test_a_bad_schedule_setting_is_named_with_its_value(overrides, expected):
    with pytest.raises(ConfigError, match=r"^1 config value is not valid: " + re.escape(expected)):
        check_config(load_config(overrides))


def test_the_bundled_schedules_pass_the_check():
    for name in ("constant", "inverse", "poly", "warmup_multistep"):
        check_config(load_config([f"scheduler={name}", "iterations=2000"]))


def test_eval_models_led_by_a_teacher_the_method_does_not_have_is_refused():
    cfg = load_config(["mic=none", "method=source_only", "eval.models=[teacher]"])
    with pytest.raises(
        ConfigError,
        match=r"^eval\.models=\[teacher\] starts with teacher, but "
        r"method=source_only \(terms: source\) has no teacher",
    ):
        check_eval_models(cfg, uses_pseudo_labels=False)
    check_eval_models(cfg, uses_pseudo_labels=True)
    # the default [student, teacher] evaluates the student alone
    check_eval_models(load_config(["mic=none", "method=source_only"]), uses_pseudo_labels=False)


def test_resume_and_init_from_of_true_or_false_say_that_null_is_off():
    with pytest.raises(ConfigError) as e:
        check_config(load_config(["resume=false", "init_from=true"]))
    off = "null (or leaving it out) turns it off; the other values are"
    assert f"resume: {off} auto" in str(e.value) and f"init_from: {off} a mic" in str(e.value)


def test_a_warm_up_that_never_ends_is_logged(tmp_path):
    out = run_mic_train([*TINY_RUN, "scheduler=poly", f"hydra.run.dir={tmp_path}"])
    assert out.returncode == 0, out.stderr[-3000:]
    logged = out.stdout + out.stderr  # Hydra's console log handler writes to stdout
    assert (
        "scheduler.warmup_iters=1500 is not below scheduler.max_iters=4 (in mic-train: "
        "iterations)" in logged
    )


def test_a_value_read_from_the_environment_is_decoded_and_checked(monkeypatch):
    monkeypatch.setenv("MIC_TEST_SEED", "3")
    monkeypatch.setenv("MIC_TEST_LR", "1e-3")
    monkeypatch.setenv("MIC_TEST_DIR", "/data/run_7")
    monkeypatch.setenv("MIC_TEST_TRUE", "true")
    monkeypatch.setenv("MIC_TEST_NUMBER_FOLDER", "1e3")
    cfg = load_config(
        [
            "seed=${oc.env:MIC_TEST_SEED}",
            "optimizer.lr=${oc.env:MIC_TEST_LR}",
            "+user.folder=${oc.env:MIC_TEST_DIR}",
            "+user.count=${oc.env:MIC_TEST_SEED}",  # one's own values stay as given: text
            "max_grad_norm=${oc.env:MIC_TEST_UNSET,null}",
            "+user.name=run_${oc.env:MIC_TEST_SEED}",  # not one interpolation alone: a string
            "log.tensorboard=${oc.env:MIC_TEST_TRUE}",  # only numbers are decoded
            # folders may bear names that read as numbers: they stay text
            "dataset=folders",
            "dataset.root_source=${oc.env:MIC_TEST_NUMBER_FOLDER}",
        ]
    )
    decode_env(cfg)  # check_config's first step (it would refuse tensorboard's text)
    assert cfg.seed == 3 and type(cfg.seed) is int
    assert cfg.optimizer.lr == 0.001 and type(cfg.optimizer.lr) is float
    assert cfg.user.folder == "/data/run_7" and cfg.user.count == "3"
    assert cfg.max_grad_norm is None and cfg.user.name == "run_3"
    assert cfg.log.tensorboard == "true" and cfg.dataset.root_source == "1e3"
    check_config(
        load_config(["seed=${oc.env:MIC_TEST_SEED}", "optimizer.lr=${oc.env:MIC_TEST_LR}"])
    )
    # text that does not read as a number stays text, and is refused where a number is read
    for override, expected in [
        ("seed=${oc.env:MIC_TEST_UNSET,010}", "seed: Input should be a valid integer, not text"),
        ("compile=${oc.env:MIC_TEST_UNSET,off}", "compile: must be true or false, not text"),
        ("seed=${oc.env:MIC_TEST_UNSET}", "reads the environment variable MIC_TEST_UNSET, "),
    ]:
        with pytest.raises(ConfigError, match=re.escape(expected)):
            check_config(load_config([override]))


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["dataset.mean=[0.5,0.5]"], "dataset.mean: gives 2 values (got [0.5, 0.5])"),
        (["dataset.std=[0.5,0.5,0.5,0.5]"], "dataset.std: gives 4 values"),
        (["dataset.std=[0.5,0.5,0]"], "dataset.std: every value must be above 0"),
        (["dataset.std=[0.5,-1,0.5]"], "dataset.std: every value must be above 0"),
        (["dataset.mean=[a,b,c]"], "dataset.mean: must be a list of finite numbers"),
        (["dataset.mean=[0.5,.nan,0.5]"], "dataset.mean: must be a list of finite numbers"),
        (["dataset.std=null"], "dataset.std: null, but dataset.mean is not"),
        # a reader of one's own may give other channels: mean and std of one length
        (
            ["dataset.source._target_=my.Reader", "dataset.mean=[0.5,0.5]"],
            "dataset.mean: gives 2 values but dataset.std 3",
        ),
    ],
)
def test_a_normalisation_that_fits_no_image_is_refused_before_training(overrides, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        check_config(load_config(overrides))


@pytest.mark.parametrize(
    "overrides",
    [
        ["dataset.mean=[0.5]", "dataset.std=[0.5]"],  # one for all channels
        ["experiment=det_shapes"],  # null: images in [0, 1]
        ["dataset.source._target_=my.Reader", "dataset.mean=[0.5,0.5]", "dataset.std=[0.5,0.5]"],
    ],
)
def test_a_normalisation_that_fits_is_accepted(overrides):
    from mic.schema import normalization_problems

    assert normalization_problems(load_config(overrides)) == []


def test_learning_rate_multipliers_are_checked_with_the_other_values():
    with pytest.raises(ConfigError) as e:
        check_config(load_config(["lr_mult={model.backbone: abc, model.head: -0.5}"]))
    assert str(e.value).startswith("2 config values are not valid: lr_mult.model.backbone: ")
    assert (
        "lr_mult.model.head: a learning-rate multiplier must be a finite number >= 0 (got -0.5)"
        in str(e.value)
    )
    check_config(load_config(["lr_mult={model.backbone: 0.1}"]))


def test_an_experiment_file_without_its_package_line_is_named():
    # what a file of one's own without '# @package _global_' composes to
    (problem,) = unread_keys(load_config(["+experiment={iterations: 6, seed: 1}"]))
    assert problem.startswith(
        "experiment: the experiment file's settings (iterations, seed) were placed under "
        "experiment.<key>"
    )
    assert "'# @package _global_'" in problem and "+user." not in problem


@pytest.mark.parametrize(
    "override,expected",
    [
        ("eval.validation.seed=abc", "eval.validation.seed: Input should be a valid integer, not"),
        ("eval.validation.batches=abc", "eval.validation.batches: Input should be a valid integ"),
        ("eval.validation.samples_per_image=abc", "eval.validation.samples_per_image: Input "),
        (
            "eval.validation.batches=2.5",
            "eval.validation.batches: Input should be a valid integer, "
            "got a number with a fractional part (got 2.5)",
        ),
        (
            "eval.validation.seed=-3",
            "eval.validation.seed: Input should be greater than or equal to 0 (got -3)",
        ),
        (
            "eval.validation.samples_per_image=0",
            "eval.validation.samples_per_image: Input should be greater than or equal to 1 (got 0)",
        ),
        ("eval.validation.batches=-1", "eval.validation.batches: Input should be greater than"),
    ],
)
def test_the_label_free_validation_settings_are_checked_with_the_other_values(override, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        check_config(load_config([override]))


@pytest.mark.parametrize(
    "overrides",
    [
        ["eval.validation.samples_per_image=null"],  # every pixel or box
        ["eval.validation=null"],  # every key its default
        ["eval.validators=[]", "eval.validation.batches=0"],  # no validator: nothing to score
        ["~eval.validation.seed"],  # a key left out: its default
        ["experiment=streets"],
    ],
)
def test_label_free_validation_settings_that_fit_are_accepted(overrides):
    check_config(load_config(overrides))


#: dataset=folders, its mandatory values given (roots that are not read by the checks)
_FOLDERS = [
    "dataset=folders",
    "dataset.num_classes=3",
    "dataset.root_source=/nowhere/src",
    "dataset.root_target=/nowhere/tgt",
    "dataset.root_test=/nowhere/tst",
]


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["dataset.mic_block_size=abc"], "Input should be a valid integer (got 'abc')"),
        (["dataset.mic_block_size=2.5"], "with a fractional part (got 2.5)"),
        (["dataset.mic_block_size=0"], "Input should be greater than or equal to 1 (got 0)"),
        (["dataset.mic_block_size=null"], "Input should be a valid integer (got None)"),
        # an interpolation that cannot be resolved
        (
            [*_FOLDERS, "dataset.mic_block_size=${mic.block_for:abc}"],
            "${mic.block_for:abc} gives no block size (",
        ),
    ],
)
def test_a_mic_block_size_that_is_no_whole_number_of_pixels_is_named(overrides, expected):
    with pytest.raises(ConfigError) as e:
        check_config(load_config(overrides))
    assert str(e.value).startswith("1 config value is not valid: dataset.mic_block_size: ")
    assert expected in str(e.value) and "e.g. dataset.mic_block_size=8" in str(e.value)


@pytest.mark.parametrize("size", ["abc", "0", "-32", "3.5"])
def test_a_bad_image_size_is_named_alone_not_through_the_block_read_from_it(size):
    with pytest.raises(ConfigError) as e:
        check_config(load_config([*_FOLDERS, f"dataset.size={size}"]))
    assert str(e.value).startswith("1 config value is not valid: dataset.size: the images' side")


def test_a_mic_block_size_interpolated_from_the_image_size_is_accepted():
    from mic.schema import block_size_problems

    cfg = load_config([*_FOLDERS, "dataset.size=32"])
    assert block_size_problems(cfg) == [] and cfg.dataset.mic_block_size == 9
    assert block_size_problems(load_config(["dataset.mic_block_size=4.0"])) == []
    check_config(cfg)


def test_an_adaptation_that_never_starts_is_warned_of(tmp_path):
    tiny = [a for a in TINY_RUN if not a.startswith("adaptation_start=")]
    out = run_mic_train([*tiny, "adaptation_start=4", f"hydra.run.dir={tmp_path}"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert (
        "adaptation_start=4 is not below iterations=4, so the terms that use target data "
        "(self_training, mic) never run" in out.stderr
    )


_SEG_FOLDERS = [
    "experiment=streets",
    "dataset=seg_folders",
    "dataset.num_classes=3",
    *(f"dataset.{k}=/nowhere/{k}" for k in ("source_images", "source_labels", "target_images")),
    *(f"dataset.{k}=/nowhere/{k}" for k in ("test_images", "test_labels")),
]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("dataset.num_classes=abc", "dataset.num_classes: the number of classes must be a whole"),
        ("dataset.num_classes=0", "dataset.num_classes: the number of classes must be a whole"),
        ("dataset.crop_size=32", "dataset.crop_size: a crop is [height, width], two whole"),
        ("dataset.crop_size=[32,abc]", "(got [32, 'abc'])"),
        ("dataset.crop_size=[0,32]", "dataset.crop_size: a crop is [height, width]"),
        ("dataset.label_mapping=255:1", "dataset.label_mapping: must map stored label values"),
    ],
)
def test_a_data_set_value_its_readers_would_fail_on_is_named_with_its_key(override, expected):
    with pytest.raises(ConfigError) as e:
        check_config(load_config([*_SEG_FOLDERS, override]))
    assert expected in str(e.value)


@pytest.mark.parametrize(
    "override",
    ["dataset.crop_size=null", "dataset.label_mapping={255:1}", "dataset.crop_size=[32,48]"],
)
def test_the_data_set_values_that_readers_take_pass(override):
    check_config(load_config([*_SEG_FOLDERS, override]))


@pytest.mark.parametrize("crop", [16, "16", [16.5, 16], [True, 16]])
def test_an_hrda_detail_crop_that_is_not_two_whole_numbers_is_named(crop):
    from mic.tasks.segmentation import HRDA, SmallUNet

    segmenter = SmallUNet(num_classes=2, widths=[4, 8])
    with pytest.raises(
        ConfigError, match=r"model\.detail_crop must be two positive whole pixel counts"
    ):
        HRDA(segmenter, detail_crop=crop)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("SDAT", "sdat"),
        ("cdan-e", "cdan_e"),
        ("Red ", "red"),
        ("traffic-Light", "traffic light"),
        ("sdat", None),  # known as given
        ("sdta", None),  # a typo, not a spelling: did_you_mean's
    ],
)
def test_a_name_spelled_otherwise_is_matched_to_the_known_one(name, expected):
    assert spelled_alike(name, ["sdat", "cdan_e", "red", "traffic light"]) == expected


def test_task_mismatch_check_reads_interpolated_sections_and_inherited_methods():
    """dataset.source=${dataset.target} crashed the check ('str' has no 'get'); cdan_e, whose
    terms come from its defaults list (cdan), was missing from the classification methods."""
    from mic.schema import _options, task_mismatches

    assert task_mismatches(load_config(["dataset.source=${dataset.target}"])) == []
    assert "cdan_e" in _options("method", "classification")
    assert "dacs" not in _options("method", "classification")


def test_misspelt_arguments_in_a_config_file_are_named_at_once_with_the_closest(tmp_path):
    """Typos inside an experiment file (whose keys the command-line check cannot see) ended
    in the build's TypeError, one at a time, and a masker's ratio out of range was named by
    the masker only once built, without its key."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "typos.yaml").write_text(
        "# @package _global_\nmethod:\n  terms:\n    mic:\n"
        "      masker:\n        ration: 0.5\n        block_size: -4\n"
    )
    cfg = load_config(["experiment=typos"], config_dir=tmp_path)
    with pytest.raises(ConfigError) as caught:
        check_config(cfg)
    message = str(caught.value)
    assert message.startswith("2 config values are not valid: ")
    for said in (
        "method.terms.mic.masker.ration: BlockMasker takes no argument 'ration'. Did you mean: "
        "ratio?",
        "method.terms.mic.masker.block_size: a block's side must be a whole number of pixels "
        ">= 1 (got -4)",
    ):
        assert said in message


def test_a_section_given_one_value_is_named_without_the_schema_s_class():
    """'Input should be a valid dictionary or instance of LoaderSchema' named a class of mic's
    code, where the user set loader=8."""
    with pytest.raises(ConfigError) as caught:
        check_config(load_config(["loader=8"]))
    assert str(caught.value) == (
        "1 config value is not valid: loader: Input should be a group of settings "
        "(loader.<name>=value; mic-train --cfg job lists them) (got 8)"
    )


def test_an_hrda_detail_crop_larger_than_the_training_images_is_named_before_the_data():
    """The model refused it at its first forward, after a data check of minutes."""
    from mic.schema import check_config

    cases = {
        "[128, 128] is larger than the training images [64, 64]": [
            "experiment=streets_hrda",
            "model.detail_crop=[128,128]",
        ],
        "[512, 512] is larger than the training images [64, 64]": [
            "experiment=gta2cs_hrda_mic",
            "dataset.crop_size=[64,64]",
        ],
    }
    for said, overrides in cases.items():
        said = re.escape(f"model.detail_crop: the HRDA detail crop {said}")
        with pytest.raises(ConfigError, match=said):
            check_config(load_config(overrides))
    check_config(load_config(["experiment=streets_hrda", "model.detail_crop=[64,32]"]))


@pytest.mark.parametrize(
    "dataset",
    sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "dataset").glob("*.yaml")),
)
def test_every_bundled_data_set_sets_mic_s_block(dataset):
    """masked_agreement of a run without MIC masked det_coco's 64 px images in 64 px blocks
    (each image whole or not at all), where MIC's own detection masker takes 32."""
    cfg = load_config([f"dataset={dataset}"])
    assert int(cfg.dataset.mic_block_size) >= 1


def test_whole_numbers_written_as_floats_reach_the_code_as_ints():
    """``seed=1.0``, ``loader.test_batch_size=8.0`` and a detector's ``1e3`` passed the check
    as numbers but reached torch as floats (manual_seed, DataLoader and slicing refused them
    with tracebacks): the check writes them as ints, also where an interpolation reads them."""
    cfg = load_config(["seed=1.0", "loader.test_batch_size=8.0", "iterations=1e3"])
    check_config(cfg)
    for key, value in (("seed", 1), ("loader.test_batch_size", 8), ("iterations", 1000)):
        got = OmegaConf.select(cfg, key)
        assert got == value and type(got) is int, (key, got)
    cfg = load_config(["experiment=det_shapes", "model.rpn_post_nms_top_n_train=1e3"])
    cfg.dataset.size = 64.0  # read by the three splits' ${dataset.size}
    check_config(cfg)
    assert type(cfg.model.rpn_post_nms_top_n_train) is int
    assert type(cfg.dataset.size) is int and type(cfg.dataset.source.size) is int
    assert type(cfg.optimizer.lr) is float  # a float setting stays one


def test_an_interpolated_argument_is_judged_and_named_where_it_is_set():
    """``dataset.size=64.5`` is read by each split's ``size: ${dataset.size}`` (an int): one
    problem, named at dataset.size, not one per reader nor none (interpolations were skipped)."""
    cfg = load_config(["experiment=det_shapes", "dataset.size=64.5"])
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    said = str(e.value)
    assert "dataset.size: " in said
    assert "dataset.source.size" not in said and "read by" not in said


def test_an_oc_select_of_a_key_not_set_is_named_at_its_reader():
    """The default of ``${oc.select:dataset.nosuch,64.5}`` is the reader's own value: named
    there, not at a key the user never set."""
    cfg = load_config(["experiment=det_shapes", "model.min_size=${oc.select:dataset.nosuch,64.5}"])
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    assert "model.min_size: " in str(e.value) and "dataset.nosuch" not in str(e.value)


def test_the_log_name_is_judged_as_hydra_makes_it_and_what_does_not_resolve_is_left():
    """The job's name gets _mic only with MIC (a 243-byte method name fits without it); an
    interpolation that reads a broken one is the run's to name, not a traceback here."""
    from mic.train import run_name_problem, usage_problem

    for removed in ("~method.name", "~method.name=mean_teacher", "~dataset.name=digits"):
        assert "and cannot be removed" in usage_problem([removed]), removed
    name = "method.name=" + "m" * 243
    assert run_name_problem([name, "mic=none"]) is None
    assert "more than a file name may hold (255)" in run_name_problem([name])
    broken = ["hydra.run.dir=runs/${method.name}", "method.name=${method.name}x"]
    assert "does not resolve: Recursive interpolation" in run_name_problem(broken)
    said = run_name_problem(["hydra.run.dir=runs/${dataset.root_source}", "dataset=folders"])
    assert "a value that must be given and is not: give it (dataset.root_source=...)" in said


@pytest.mark.parametrize("device", ["auto", "cpu", "cpu:0", "cuda", "cuda:0", "cuda:12", "mps:0"])
def test_every_device_name_torch_takes_is_accepted(device):
    """``cpu:0``, a name torch takes, was refused."""
    check_config(load_config([f"device={device}"]))


@pytest.mark.parametrize("device", ["tpu", "cuda:01", "cpu:1", "gpu", "CUDA"])
def test_a_device_name_torch_refuses_or_would_misread_is_refused(device):
    with pytest.raises(ConfigError, match="must be auto, cpu, cuda, cuda:<index> or mps"):
        check_config(load_config([f"device={device}"]))


@pytest.mark.parametrize(
    "experiment",
    sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "experiment").glob("[!_]*.yaml")),
)
def test_no_bundled_experiment_sets_a_dataset_key_that_nothing_reads(experiment):
    """The keys an experiment file adds to dataset are judged as the command line's (a
    misspelt one changed nothing): every bundled experiment passes, as mic-train runs it."""
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from mic.schema import unread_section_keys

    with initialize_config_module("mic.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        try:
            with open_dict(cfg):
                del cfg["hydra"]
            assert unread_section_keys(cfg) == []
        finally:  # (the other tests of this process run outside mic-train)
            HydraConfig.instance().cfg = None


def test_an_experiment_of_one_s_own_on_a_dataset_of_one_s_own_is_judged_by_its_bases(tmp_path):
    """A dataset file of one's own built on a bundled one (by an absolute path too): the
    keys of its bases are its own (thing_classes, read by method=daformer alone), a
    misspelt key an experiment adds is not."""
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from mic.schema import unread_section_keys

    (tmp_path / "dataset").mkdir()
    (tmp_path / "experiment").mkdir()
    base = "defaults:\n  - /dataset/streets@_here_\n  - _self_\nname: mystreets\n"
    (tmp_path / "dataset" / "mystreets.yaml").write_text(base)
    head = "# @package _global_\ndefaults:\n  - streets\n  - override /dataset: mystreets\n"
    for name, key in [("fine", "thing_classes: [5, 6]"), ("typo", "crop_sise: [8, 8]")]:
        (tmp_path / "experiment" / f"{name}.yaml").write_text(f"{head}dataset:\n  {key}\n")
    found = {}
    with initialize_config_module("mic.conf", version_base="1.3"):
        for name in ("fine", "typo"):
            overrides = [f"experiment={name}", f"hydra.searchpath=[file://{tmp_path}]"]
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            try:
                with open_dict(cfg):
                    del cfg["hydra"]
                found[name] = unread_section_keys(cfg)
            finally:
                HydraConfig.instance().cfg = None
    assert found["fine"] == []
    (problem,) = found["typo"]
    assert problem.startswith("dataset.crop_sise (set in experiment/typo.yaml): mic-train reads")


#: the published recipes (conf/experiment/): the colour operations of the published code
PUBLISHED_RECIPES = [
    "cityscapes_foggy", "cityscapes_foggy_d2", "cs2acdc_daformer_mic", "cs2acdc_hrda_mic",
    "cs2darkzurich_daformer_mic", "cs2darkzurich_hrda_mic", "gta2cs_daformer_mic",
    "gta2cs_hrda_mic", "officehome_sdat_mic_vit", "synthia2cs_daformer_mic",
    "synthia2cs_hrda_mic", "visda2017_sdat_mic_resnet101", "visda2017_sdat_mic_vit",
]  # fmt: skip
BUNDLED = ["none", "digits_oracle", "streets", "streets_context", "streets_hrda", "det_shapes",
           "det_context"]  # fmt: skip


def _jitters(overrides: list[str]) -> dict[str, str]:
    """augmentation key -> the colour operations its StrongAugmentation is built with."""
    cfg = load_config(overrides)
    found = {}

    def walk(node, path):
        if OmegaConf.is_dict(node):
            if node.get("_target_") == "mic.StrongAugmentation":
                found[path] = node.jitter
            for key in node:
                walk(node[key], f"{path}.{key}")

    walk(cfg.method, "method")
    return found


@pytest.mark.parametrize("mic_choice", [[], ["mic=none"]])
def test_every_experiment_runs_the_published_colour_operations_unless_told_otherwise(
    mic_choice,
):
    """augmentation_jitter: the recipes set it once for every strong augmentation (MIC's,
    ClassMix's), with MIC switched off too (where no augmentation reads it); the bundled
    experiments take mic-train's default, the same operations (torchvision's formulas before
    0.2), and one root setting switches all of a run's augmentations back."""
    folder = Path(__file__).parents[1] / "conf" / "experiment"
    names = {p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_")}
    assert names == {*PUBLISHED_RECIPES, *BUNDLED}  # (a new experiment: put it in one list)
    for name in PUBLISHED_RECIPES:
        jitters = _jitters([f"experiment={name}", *mic_choice])
        assert jitters or mic_choice, name  # (SDAT and SADA alone have no strong augmentation)
        assert set(jitters.values()) <= {"published"}, (name, jitters)
    for name in BUNDLED:
        jitters = _jitters([f"experiment={name}", *mic_choice])
        assert set(jitters.values()) <= {"published"}, (name, jitters)
        back = _jitters([f"experiment={name}", *mic_choice, "augmentation_jitter=torchvision"])
        assert set(back) == set(jitters) and set(back.values()) <= {"torchvision"}, name
    # one setting for all of a run's augmentations; an augmentation's own setting wins
    both = _jitters(["augmentation_jitter=torchvision"])
    assert set(both) == {
        "method.terms.self_training.augmentation",
        "method.terms.mic.masker.augmentation",
    } and set(both.values()) == {"torchvision"}
    own = _jitters(
        [
            "experiment=gta2cs_daformer_mic",
            "method.terms.mic.masker.augmentation.jitter=torchvision",
        ]
    )
    assert own == {
        "method.terms.mix.augmentation": "published",
        "method.terms.mic.masker.augmentation": "torchvision",
    }


def test_cfg_job_resolve_names_a_mandatory_value_as_the_run_does():
    """--cfg job --resolve of an experiment whose data root is not given printed OmegaConf's
    MissingMandatoryValue words, naming the key that reads the root (dataset.source.root)."""
    from mic.train import resolve_problem

    said = resolve_problem(["experiment=visda2017_sdat_mic_vit", "--cfg", "job", "--resolve"])
    assert said == (
        "1 mandatory value is not given: dataset.root; set it on the command line (e.g. "
        "dataset.root=...)"
    )
    given = ["experiment=visda2017_sdat_mic_vit", "dataset.root=/data", "--cfg", "job"]
    assert resolve_problem([*given, "--resolve"]) is None


def test_a_term_of_ones_own_named_mic_beside_mic_none_is_refused_on_the_command_line():
    """mic=none +method.terms.mic._target_=... trained the term under MIC's name: the run
    folder said _mic and loss/mic was the other term's (a method file is refused alike)."""
    from mic.train import usage_problem

    own = "+method.terms.mic._target_=mine.Entropy"
    said = usage_problem(["mic=none", own])
    assert said.startswith(f"{own}: with mic=none, a term of one's own named 'mic' would be")
    assert said.endswith("give it another name (+method.terms.<name>._target_=mine.Entropy)")
    assert usage_problem(["mic=none", "+method.terms.mine._target_=mine.Entropy"]) is None
    assert usage_problem(["mic='none'", own]).startswith(own)  # the shell's quotes kept
    assert usage_problem(["mic=none", "++method.terms.mic=null"]) is None  # no term: no clash
    assert usage_problem(["method.terms.mic.weight=0.5"]) is None  # MIC's own settings


class _OwnTerm:
    """A loss term of one's own whose config file misspells an argument."""

    def __init__(self, weight: float = 1.0, threshold: float = 0.9) -> None:
        self.weight, self.threshold = weight, threshold


def test_a_misspelt_argument_of_ones_own_class_is_named_with_the_closest():
    """thresold in a method file of one's own was told only of keys left over from a replaced
    class of mic's, the class's arguments buried in the paragraph."""
    from mic.train import _group_hint

    said = (
        "Error in call to target 'tests.test_config_checks._OwnTerm': TypeError(\"_OwnTerm."
        "__init__() got an unexpected keyword argument 'thresold'\") full_key: "
        "method.terms.fixmatch"
    )
    assert _group_hint(said).startswith(
        ". _OwnTerm takes ['threshold', 'weight']. Did you mean: threshold? (misspelt where "
        "method.terms.fixmatch is set?) Otherwise: A _target_ of your own"
    )
    for leftover in ("masker", "weighting"):  # keys of a class of mic's it replaced: no guess
        assert "Did you mean" not in _group_hint(said.replace("thresold", leftover))
