"""Settings that were taken silently, or failed deep inside, each refused (or warned of) where
it is given."""

import warnings

import pytest

from mic import BlockMasker, ConfigError
from mic.datasets.detection.context_shapes import ContextShapes
from mic.datasets.segmentation.streets import StreetScenes
from mic.experiment import _warn_of_schedule
from mic.tasks.detection.adversarial import DomainAdversarial
from mic.tasks.detection.terms import DetectionMIC
from mic.tasks.segmentation.task import SegmentationTask
from mic.tasks.segmentation.terms import SegmentationMIC
from mic.training.optim import Constant, WarmupMultiStep, WarmupPoly


@pytest.mark.parametrize(
    "build, message",
    [
        # told only at the first batch with pseudo-boxes, or never in a short run
        (
            lambda: DetectionMIC(BlockMasker(8), part_weights={"roi_boxes": 1.0}),
            "part_weights name ['roi_boxes'], which the detection loss does not have",
        ),
        # 0 fell back to the default width without a word
        (
            lambda: DomainAdversarial(16, 32, image_hidden=0),
            "method.terms.adversarial.image_hidden must be a positive whole number",
        ),
        # a text was read letter by letter as part names
        (
            lambda: SegmentationMIC(BlockMasker(8), unscaled_parts="fd"),
            "unscaled_parts is a list of part names, got the text 'fd'",
        ),
        # 'high - low < 0' from NumPy, for some draws
        (lambda: StreetScenes(size=7, count=2), "drawn at least 16 px wide"),
        # "'<=' not supported between instances of 'float' and 'str'"
        (lambda: ContextShapes(source_lookalike="abc", length=2), "source_lookalike must lie"),
        # no drawings, without a word
        (lambda: SegmentationTask(8, visualize=-1), "task.visualize must be a whole number >= 0"),
    ],
)
def test_a_setting_that_went_unnoticed_is_refused(build, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        build()


def test_a_schedule_that_ends_before_the_run_or_grows_is_warned_of():
    with pytest.warns(UserWarning, match="max_iters=1 is below iterations=4: the last 3"):
        _warn_of_schedule(WarmupPoly(max_iters=1, warmup_iters=0), 4)
    with pytest.warns(UserWarning, match="gamma=2 is above 1"):
        _warn_of_schedule(WarmupMultiStep(steps=[1, 3], gamma=2.0, warmup_iters=0), 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_of_schedule(WarmupPoly(max_iters=4, warmup_iters=0), 4)
        _warn_of_schedule(WarmupMultiStep(steps=[1, 3], warmup_iters=0), 4)
        _warn_of_schedule(Constant(), 4)


def test_a_palette_of_too_few_colours_is_refused_and_the_default_serves_any_class_count():
    with pytest.raises(ConfigError, match="gives 1 colours for 8 classes"):
        SegmentationTask(8, palette=[[1, 2, 3]])
    with pytest.raises(ConfigError, match=r"each in 0\.\.255"):
        SegmentationTask(2, palette=[[1, 2, 3], [1, 2, 300]])
    assert len(SegmentationTask(30).palette) == 19  # the Cityscapes colours; the rest black


def test_learning_rate_multipliers_that_freeze_the_whole_model_are_refused():
    from torch import nn

    from mic.training.optim import param_groups

    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    modules = {"model": model, "method": nn.Linear(2, 1)}
    with pytest.raises(ConfigError, match="every parameter of the model the multiplier 0"):
        param_groups(modules, 0.1, {"model": 0})  # 11 % accuracy, as before training
    frozen_part = param_groups(modules, 0.1, {"model.0": 0})  # one part frozen: fine
    assert sorted(g["lr"] for g in frozen_part) == [0.0, 0.1]


def test_whole_numbers_of_other_kinds_are_taken_where_counts_are_checked():
    """YAML's 16.0 and NumPy's integers pass the whole-number checks, and are used as ints
    (they failed deep inside: a float head count in the attention, a float width)."""
    import numpy as np
    import torch

    from mic.datasets.segmentation.sampling import rare_class_sampling
    from mic.tasks.detection.model import check_detector_settings
    from mic.tasks.segmentation.models.context_unet import ContextUNet
    from mic.tasks.segmentation.models.small_unet import SmallUNet

    x = torch.zeros(1, 3, 32, 32)
    assert SmallUNet(3, widths=[8.0, 16, 32]).eval()(x).shape == (1, 3, 32, 32)
    assert SmallUNet(3, widths=np.array([8, 16, 32])).eval()(x).shape == (1, 3, 32, 32)
    net = ContextUNet(3, widths=[8, 16, 32.0], heads=4.0, grid=np.int64(4)).eval()
    assert net(x).shape == (1, 3, 32, 32)
    assert DomainAdversarial(16, 32, image_hidden=16.0).image_classifier is not None
    assert len(StreetScenes(size=16.0, count=1)) == 1
    data = [0, 1]
    assert rare_class_sampling(data, enabled=np.bool_(False)) is data
    for values in (np.array([0.5, 0.5, 0.5]), torch.tensor([0.5, 0.5, 0.5]), [np.float32(1)] * 3):
        check_detector_settings({"image_mean": values, "image_std": values})
