"""The segmentation Task: loss, pseudo-labels with margins, inference, mIoU protocols."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from mic import ConfigError, DatasetError, PseudoLabelWeighting
from mic.tasks.segmentation import SegmentationMetrics, SegmentationTask

pytestmark = pytest.mark.usefixtures("one_thread")


class Fixed(nn.Module):
    """Returns given logits (ignores the images)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.logits + self.p


def test_loss_ignores_255_counts_it_in_the_mean_and_weights_pixels():
    task = SegmentationTask(3)
    logits = torch.randn(1, 3, 2, 2)
    targets = torch.tensor([[[0, 1], [2, 255]]])
    per_pixel = torch.nn.functional.cross_entropy(
        logits, targets, ignore_index=255, reduction="none"
    )
    assert torch.allclose(task.loss(Fixed(logits), None, targets), per_pixel.sum() / 4)
    w = torch.tensor([[[1.0, 0.0], [0.5, 1.0]]])
    expected = (per_pixel * w).sum() / 4
    assert torch.allclose(task.loss(Fixed(logits), None, targets, w), expected)


def test_loss_upsamples_low_resolution_logits_and_checks_the_class_count():
    task = SegmentationTask(3)
    logits = torch.randn(2, 3, 4, 4)
    targets = torch.randint(0, 3, (2, 16, 16))
    assert task.loss(Fixed(logits), None, targets).isfinite()
    with pytest.raises(ConfigError, match="the model predicts 5 classes"):
        task.loss(Fixed(torch.randn(2, 5, 4, 4)), None, targets)


def test_pseudo_labels_argmax_confidence_and_zero_weight_margins():
    task = SegmentationTask(3, pseudo_label_margins=(1, 2, 0, 1))
    probs = torch.softmax(torch.randn(2, 3, 6, 5) * 3, dim=1)
    pseudo = task.pseudo_label(probs)
    assert torch.equal(pseudo.labels, probs.argmax(1))
    assert torch.equal(pseudo.confidence, probs.max(1).values)
    valid = pseudo.valid
    assert not valid[:, 0].any() and not valid[:, -2:].any() and not valid[:, :, -1].any()
    assert valid[:, 1:4, :4].all()
    weights = PseudoLabelWeighting("quality", tau=0.0)(pseudo)
    assert torch.equal(weights, valid.float())  # q = 1, margins 0


def test_slide_inference_pads_an_image_smaller_than_its_window_to_the_window():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 1)
    seen = []

    def window_size(module, inputs):  # the model sees whole windows, as in training
        seen.append(tuple(inputs[0].shape[-2:]))

    conv.register_forward_pre_hook(window_size)
    x = torch.randn(2, 3, 10, 20)  # shorter than the 16 px window, wider than it
    task = SegmentationTask(4, inference="slide", crop_size=(16, 16), stride=(8, 8))
    slide = task.predict(conv, x)
    assert set(seen) == {(16, 16)} and slide.shape == (2, 4, 10, 20)
    # a pointwise model: padding adds no information, the image's pixels keep theirs
    assert torch.allclose(slide, SegmentationTask(4).predict(conv, x), atol=1e-6)


def test_slide_inference_equals_whole_for_a_pointwise_model_and_flip_averages():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 1)
    x = torch.randn(2, 3, 13, 17)
    whole = SegmentationTask(4).predict(conv, x)
    slide = SegmentationTask(4, inference="slide", crop_size=(8, 8), stride=(5, 6)).predict(conv, x)
    assert torch.allclose(whole, slide, atol=1e-6)

    class LeftRight(nn.Module):  # class 1 sure on the left half, undecided on the right
        def forward(self, x):
            out = torch.zeros(x.shape[0], 2, *x.shape[-2:])
            out[:, 1, :, : x.shape[-1] // 2] = 10.0
            return out

    flipped = SegmentationTask(2, flip=True).predict(LeftRight(), torch.zeros(1, 3, 2, 4))
    # every pixel is sure (p = 1) in one view and undecided (p = 0.5) in the other
    assert torch.allclose(flipped[:, 1], torch.full_like(flipped[:, 1], 0.75), atol=1e-4)


def test_metric_confusion_matrix_iou_protocols_and_resize():
    m = SegmentationMetrics(3, eval_classes=None)
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 255]]])
    pred = torch.tensor([[[0, 1, 1, 1], [2, 0, 0, 2]]])
    m.update(pred, target)
    out = m.compute()
    # class 0: tp 1, fp 1 (at (1,1)), fn 1 -> 1/3; class 1: tp 2, fp 1 -> 2/3;
    # class 2: tp 1, fn 1 -> 1/2
    assert torch.allclose(out["per_class_iou"], torch.tensor([1 / 3, 2 / 3, 1 / 2]))
    assert math.isclose(float(out["miou"]), (1 / 3 + 2 / 3 + 1 / 2) / 3, rel_tol=1e-6)
    assert math.isclose(float(out["accuracy"]), 4 / 6, rel_tol=1e-6)

    # class probabilities at half the label resolution are upsampled
    m2 = SegmentationMetrics(2)
    probs = torch.zeros(1, 2, 2, 2)
    probs[:, 1] = 1
    m2.update(probs, torch.ones(1, 4, 4, dtype=torch.long))
    assert float(m2.compute()["miou"]) == 1.0  # class 0 absent everywhere: left out

    m19 = SegmentationMetrics(19, eval_classes=[0, 1])
    t = torch.arange(19).view(1, 1, 19)
    p = t.clone()
    p[..., 9] = 0  # terrain predicted as road: terrain IoU 0, road IoU 1/2
    m19.update(p, t)
    r = m19.compute()
    assert math.isclose(float(r["miou"]), (0.5 + 1) / 2, rel_tol=1e-6)
    assert math.isclose(
        float(r["miou_synthia16"]), (0.5 + 15) / 16, rel_tol=1e-6
    )  # terrain is not among the 16
    assert math.isclose(float(r["miou_synthia13"]), (0.5 + 12) / 13, rel_tol=1e-6)
    assert math.isclose(float(r["miou_cityscapes19"]), (0.5 + 17) / 19, rel_tol=1e-6)


def test_protocol_names_and_errors():
    assert SegmentationTask(19, protocol="synthia13").eval_classes == [
        0,
        1,
        2,
        6,
        7,
        8,
        10,
        11,
        12,
        13,
        15,
        17,
        18,
    ]
    with pytest.raises(ConfigError, match="19 Cityscapes classes"):
        SegmentationTask(8, protocol="synthia16")
    with pytest.raises(ConfigError, match=r"needs task\.crop_size"):
        SegmentationTask(8, inference="slide")
    with pytest.raises(ConfigError, match="leaves pixels no window covers"):
        SegmentationTask(8, inference="slide", crop_size=(4, 4), stride=(8, 4))
    with pytest.raises(ConfigError, match="pseudo_label_margins"):
        SegmentationTask(8, pseudo_label_margins=(1, 2))


def test_collate_rejects_labels_outside_the_classes():
    task = SegmentationTask(3)
    ok = [(torch.zeros(3, 2, 2), torch.tensor([[0, 2], [255, 1]]))] * 2
    _images, labels = task.collate(ok)
    assert labels.shape == (2, 2, 2)
    bad = [(torch.zeros(3, 2, 2), torch.tensor([[0, 3], [255, 1]]))]
    with pytest.raises(DatasetError, match="label 3 is outside the classes"):
        task.collate(bad)
    with pytest.raises(DatasetError, match="integer label maps"):
        task.collate([(torch.zeros(3, 2, 2), torch.zeros(2, 2))])


def test_prediction_images_undo_the_normalisation_of_the_dataset_transform(tmp_path):
    """A reader has no mean/std of its own: they are read from its transform."""
    from mic.datasets.segmentation.transforms import SegmentationTransform
    from mic.tasks.segmentation.hooks import PredictionImages, to_rgb

    transform = SegmentationTransform(mean=(0.5, 0.4, 0.3), std=(0.1, 0.2, 0.25))

    class Reader(list):
        pass

    dataset = Reader()
    dataset.transform = transform
    hook = PredictionImages(SegmentationTask(3), dataset, tmp_path, count=0)
    grey = torch.full((3, 2, 2), 0.6)  # in [0, 1]
    normalised = (grey - transform.mean) / transform.std
    assert (to_rgb(normalised, hook.normalization) == round(0.6 * 255)).all()


def _drawn_evaluation(tmp_path, models, adabn_batches=0, model=None):
    """A PredictionImages hook registered with an Evaluation of ``models`` (a loop of that
    hook list), its test set: one image whose left half is 2, its right half -2."""
    from types import SimpleNamespace

    from mic.tasks.segmentation.hooks import PredictionImages
    from mic.training.hooks import Evaluation

    image = torch.full((3, 4, 8), 2.0)
    image[..., 4:] = -2.0
    label = torch.zeros(4, 8, dtype=torch.long)
    label[:, 4:] = 1
    task = SegmentationTask(2)
    adabn = [image[None]] if adabn_batches else None
    evaluation = Evaluation(
        task, [(image[None], label[None])], models=models, adabn_loader=adabn,
        adabn_batches=adabn_batches,
    )  # fmt: skip
    hook = PredictionImages(task, [(image, label)], tmp_path, count=1)
    hook.before_run(SimpleNamespace(hooks=[evaluation, hook]))
    return evaluation, hook


def test_prediction_images_are_drawn_for_the_models_the_evaluation_scored(tmp_path):
    """eval.models=[student] still drew every teacher's pictures."""
    evaluation, _ = _drawn_evaluation(tmp_path, ["student"])
    model = nn.Conv2d(3, 2, 1)
    evaluation.score_models(1, model, nn.Conv2d(3, 2, 1))
    assert [p.name for p in (tmp_path / "iter_00000001").iterdir()] == ["00_student.png"]
    evaluation.models = ("student", "teacher")
    evaluation.score_models(2, model, nn.Conv2d(3, 2, 1))
    drawn = sorted(p.name for p in (tmp_path / "iter_00000002").iterdir())
    assert drawn == ["00_student.png", "00_teacher.png"]


def test_a_picture_that_cannot_be_written_costs_no_scores_and_a_later_loop_draws_none(tmp_path):
    """A failed image write (here a file where the iteration's folder goes) took the
    evaluation's record with it; and a second loop that reused the Evaluation hook without
    PredictionImages still drew its pictures."""
    from types import SimpleNamespace

    evaluation, hook = _drawn_evaluation(tmp_path, ["student"])
    (tmp_path / "iter_00000001").write_text("in the way")
    with pytest.warns(UserWarning, match=r"PredictionImages could not write .* the student at "):
        record = evaluation.score_models(1, nn.Conv2d(3, 2, 1))
    assert "eval/student/miou" in record
    hook.teardown(SimpleNamespace(hooks=[evaluation, hook]))
    assert evaluation.viewers == []
    evaluation.score_models(2, nn.Conv2d(3, 2, 1))
    assert not (tmp_path / "iter_00000002").exists()


def test_prediction_images_show_the_predictions_scored_under_adabn(tmp_path):
    """The pictures were predicted after the evaluation, with the training statistics that
    AdaBN had put back: they showed another model than the one scored. Here the training
    statistics (mean [5, -5]) make every pixel class 1; AdaBN's (mean 0) the left half class 0,
    as scored (mIoU 1.0)."""
    from PIL import Image

    from mic.datasets.segmentation.labels import colorize

    conv = nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0], conv.weight[1, 0] = 1.0, -1.0
    norm = nn.BatchNorm2d(2, affine=False)
    norm.running_mean.copy_(torch.tensor([5.0, -5.0]))
    model = nn.Sequential(conv, norm).train()
    evaluation, hook = _drawn_evaluation(tmp_path, ["student"], adabn_batches=1)
    record = evaluation.score_models(3, model)
    assert record["eval/student/miou"] == 1.0 and model.training
    assert norm.running_mean.tolist() == [5.0, -5.0]  # put back after the evaluation
    picture = np.asarray(Image.open(tmp_path / "iter_00000003" / "00_student.png"))
    scored = torch.zeros(4, 8, dtype=torch.long)
    scored[:, 4:] = 1
    assert (picture[:, 8:16] == colorize(scored.numpy(), hook.task.palette)).all()


def test_a_negative_ignore_index_is_ignored_by_the_checks_the_loss_and_the_metric():
    """ignore_index=-1 (a common convention) was refused by the label check as a label < 0."""
    task = SegmentationTask(3, ignore_index=-1)
    targets = torch.tensor([[[0, 1], [2, -1]]])
    task.check_targets(targets)
    logits = torch.randn(1, 3, 2, 2)
    per_pixel = torch.nn.functional.cross_entropy(
        logits, targets, ignore_index=-1, reduction="none"
    )
    assert torch.allclose(task.loss(Fixed(logits), None, targets), per_pixel.sum() / 4)
    metric = task.metric()
    metric.update(torch.tensor([[[0, 1], [2, 0]]]), targets)
    assert metric.compute()["accuracy"] == 1.0  # the ignored pixel is not scored
    with pytest.raises(DatasetError, match="label -2 is outside the classes"):
        task.check_targets(torch.tensor([[[0, -2]]]))
    with pytest.raises(ConfigError, match=r"task.ignore_index=1 is one of the classes"):
        SegmentationTask(3, ignore_index=1)


def test_a_model_that_returns_a_dict_is_told_to_return_the_class_scores():
    """torchvision's segmentation models return {'out': ...}: said, not an AttributeError."""
    task = SegmentationTask(3)

    class DictModel(nn.Module):
        def forward(self, x):
            return {"out": torch.zeros(x.shape[0], 3, *x.shape[-2:])}

    images, targets = torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ConfigError, match=r"must return B x C x h x w class scores.*got a dict"):
        task.loss(DictModel(), images, targets)
    with pytest.raises(ConfigError, match="got a dict"):
        task.predict(DictModel(), images)


def test_margins_that_cover_the_target_crops_are_refused_before_training():
    """They were named at the first adapting iteration, after any source-only stage."""
    from types import SimpleNamespace

    task = SegmentationTask(3, pseudo_label_margins=(15, 120, 0, 0))
    cropped = SimpleNamespace(transform=SimpleNamespace(crop_size=(128, 96)), classes=None)
    generated = SimpleNamespace(images=torch.zeros(4, 3, 64, 80))
    for target in (cropped, generated):
        with pytest.raises(ConfigError, match=r"cover every pixel of the \d+ x \d+ target"):
            task.check_margins(target)
    task.check_margins(SimpleNamespace(images=torch.zeros(4, 3, 144, 80)))
    task.check_margins([torch.zeros(3, 8, 8)])  # a size it cannot tell: the first iteration


def test_margins_that_cover_the_target_images_are_refused_not_a_zero_weight_run():
    task = SegmentationTask(3, pseudo_label_margins=(15, 120, 0, 0))
    probs = torch.softmax(torch.randn(2, 3, 64, 64), dim=1)
    with pytest.raises(ConfigError, match=r"cover every pixel of the 64 x 64 target images"):
        task.pseudo_label(probs)
    assert (
        SegmentationTask(3, pseudo_label_margins=(15, 120, 0, 0))
        .pseudo_label(torch.softmax(torch.randn(1, 3, 136, 8), dim=1))
        .valid[:, 15:16]
        .all()
    )


def test_class_names_of_another_count_name_both_settings():
    with pytest.raises(
        ConfigError, match=r"task.classes names 2 classes but task.num_classes is 3"
    ):
        SegmentationTask(3, classes=["road", "sky"])


@pytest.mark.parametrize("kind", ["segmentation", "detection", "classification"])
def test_a_task_takes_its_class_names_from_the_source_when_there_is_no_test_set(kind):
    """A label-free run (dataset.test=null) wrote the ids ('0', '1', '2') as the class names
    to config.yaml, and load_run's task named them so: the test set alone named them."""
    from types import SimpleNamespace

    from mic.tasks.classification import ClassificationTask
    from mic.tasks.detection import DetectionTask
    from mic.training.sampling import DatasetWrapper

    make = {"segmentation": SegmentationTask, "detection": DetectionTask}
    task = make.get(kind, ClassificationTask)(3)
    reader = SimpleNamespace(classes=["road", "car", "sky"], num_classes=3)
    wrapped = DatasetWrapper.__new__(DatasetWrapper)  # (rare class sampling's: the reader's)
    wrapped.dataset = reader
    task.check_datasets({"source": wrapped, "target": None, "test": None})
    names = getattr(task, "classes", None) if kind == "segmentation" else task.class_names
    assert names == ["road", "car", "sky"]
    attribute = "classes" if kind == "segmentation" else "class_names"
    given = make.get(kind, ClassificationTask)(3)  # names given are kept (and judged)
    setattr(given, attribute, ["a", "b", "c"])
    with pytest.warns(UserWarning, match="names 3 of its classes otherwise than the task"):
        given.check_datasets({"source": reader, "test": None})
    assert getattr(given, attribute) == ["a", "b", "c"]
    setattr(given, attribute, ["car", "road", "sky"])
    with pytest.raises(DatasetError, match="order"):
        given.check_datasets({"source": reader, "test": None})
    if kind != "classification":  # a test set that names them otherwise: its names, which its
        test = SimpleNamespace(classes=["a", "b", "c"], num_classes=3)  # per-class table shows
        task = make[kind](3)
        with pytest.warns(UserWarning, match="names 3 of its classes otherwise"):
            task.check_datasets({"source": reader, "target": None, "test": test})
        assert getattr(task, attribute) == ["a", "b", "c"]


def test_predict_names_a_numpy_array_and_a_single_image():
    import numpy as np

    from mic import DatasetError
    from mic.tasks.segmentation import SegmentationTask, SmallUNet

    model = SmallUNet(4, (4, 8, 8)).eval()
    with pytest.raises(DatasetError, match="got ndarray: convert it"):  # torch's conv2d error
        SegmentationTask(4).predict(model, np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(
        DatasetError, match=r"shape \(3, 16, 16\): for one image give image\[None\]"
    ):
        SegmentationTask(4).predict(model, torch.rand(3, 16, 16))  # torch's BatchNorm error


@pytest.mark.parametrize(
    ("crop", "stride", "said"),
    [
        ([0, 0], [0, 0], r"task.crop_size must be two positive pixel counts .* got \[0, 0\]"),
        ([32], [16, 16], r"task.crop_size must be two positive"),
        ([32, 32], [0, 16], r"task.stride \[0, 16\] must be between 1 and task.crop_size"),
        ([32, 32], [48, 16], r"a larger stride leaves pixels no window covers"),
    ],
)
def test_sliding_windows_of_no_size_or_a_stride_out_of_range_are_named(crop, stride, said):
    with pytest.raises(ConfigError, match=said):
        SegmentationTask(3, inference="slide", crop_size=crop, stride=stride)


def test_datasets_naming_the_classes_in_another_order_are_refused():
    from types import SimpleNamespace

    from mic.datasets.segmentation.labels import CITYSCAPES_CLASSES

    def dataset(names):
        return SimpleNamespace(classes=list(names), num_classes=len(names))

    reverse = list(CITYSCAPES_CLASSES)[::-1]
    # the default names are for reports only: a data set of its own order is fine
    SegmentationTask(19).check_datasets({"source": dataset(reverse), "test": dataset(reverse)})
    with pytest.raises(DatasetError, match="'road' is its class 0, source's class 18"):
        SegmentationTask(19).check_datasets(
            {"source": dataset(reverse), "test": dataset(CITYSCAPES_CLASSES)}
        )
    with pytest.raises(DatasetError, match="the classes of the task in another order"):
        SegmentationTask(3, classes=["a", "b", "c"]).check_datasets({"test": dataset("bac")})


def test_a_class_count_mismatch_names_what_sets_a_readers_classes():
    from types import SimpleNamespace

    with pytest.raises(DatasetError, match="class counts disagree") as info:
        SegmentationTask(19).check_datasets({"source": SimpleNamespace(classes=list("abc"))})
    message = str(info.value)
    assert "a reader's classes and label mapping" in message
    assert "folder that is no class" not in message  # image folders' advice


def test_collate_warns_of_label_maps_of_another_aspect_ratio_than_their_images():
    """Predictions are resized to the labels' size: an image cropped alone was scored against
    a misaligned label without a word."""
    import warnings

    task = SegmentationTask(4)
    sample = (torch.zeros(3, 16, 16), torch.zeros(16, 8, dtype=torch.long))
    with pytest.warns(UserWarning, match=r"label maps of 16 x 8 against images of 16 x 16"):
        task.collate([sample])
    with warnings.catch_warnings():  # the same view at another scale, rounded, is fine
        warnings.simplefilter("error")
        for image, label in [((16, 16), (16, 16)), ((356, 634), (1080, 1920))]:
            task.collate([(torch.zeros(3, *image), torch.zeros(*label, dtype=torch.long))])


def test_a_test_set_of_ignored_pixels_alone_scores_nan_with_a_warning():
    """Every label ignore_index gave NaN mIoU without a word."""
    metric = SegmentationMetrics(3)
    metric.update(torch.zeros(2, 4, 4, dtype=torch.long), torch.full((2, 4, 4), 255))
    with pytest.warns(UserWarning, match="no scored pixel holds a class label"):
        scores = metric.compute()
    assert math.isnan(float(scores["miou"])) and math.isnan(float(scores["accuracy"]))


def test_class_scores_with_the_classes_last_are_named_as_such():
    """B x h x w x C scores were told 'the model predicts 64 classes; set model.num_classes'."""
    task = SegmentationTask(4)
    with pytest.raises(ConfigError, match=r"the classes last \(B x h x w x C\).*permute"):
        task.check_logits(torch.zeros(2, 16, 16, 4))
    with pytest.raises(ConfigError, match="the model predicts 5 classes"):
        task.check_logits(torch.zeros(2, 5, 16, 16))


def test_a_cityscapes_protocol_on_another_class_count_names_the_setting_that_exists():
    """The message said 'use protocol=all', which mic-train refuses as no setting."""
    with pytest.raises(ConfigError) as info:
        SegmentationTask(4, protocol="cityscapes19")
    assert "the task has 4; use protocol='all' (mic-train: dataset.protocol=all)" in str(info.value)


def test_probabilities_at_another_size_than_the_labels_are_scored_as_their_resized_logits():
    """The published evaluation (mmseg) resizes the logits to the label's size, then takes
    the softmax; the task's metric takes predict's probabilities and resized those, which
    gave other classes at boundary pixels (here about a fifth of them)."""
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6, 6) * 4
    labels = torch.randint(0, 5, (2, 24, 24))
    published = SegmentationMetrics(5)
    published.update(logits, labels)  # class scores resized as given
    task_metric = SegmentationTask(5).metric()
    task_metric.update(logits.softmax(1), labels)
    assert torch.equal(task_metric.confmat, published.confmat)
    as_given = SegmentationMetrics(5)
    as_given.update(logits.softmax(1), labels)
    assert not torch.equal(as_given.confmat, published.confmat)
    same_size = SegmentationTask(5).metric()  # nothing resized: the probabilities' argmax
    same_size.update(logits.softmax(1), labels[:, :6, :6])
    reference = SegmentationMetrics(5)
    reference.update(logits.argmax(1), labels[:, :6, :6])
    assert torch.equal(same_size.confmat, reference.confmat)


def test_a_model_in_training_mode_predicts_in_eval_mode_and_keeps_its_modes():
    """predict on a model in training mode normalised with the batch's statistics, overwrote
    the running ones and agreed with the eval-mode prediction on about half of the pixels."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 3, 1))
    model[1].running_mean.fill_(2.0)  # statistics the batch's differ from
    images = torch.randn(2, 3, 8, 8)
    task = SegmentationTask(3)
    expected = task.predict(model.eval(), images)
    model.train()
    model[2].eval()  # a module's own mode is restored as it was
    before = model[1].running_mean.clone()
    assert torch.equal(task.predict(model, images), expected)
    assert torch.equal(model[1].running_mean, before)
    assert model.training and model[1].training and not model[2].training
    # EMATeacher's norm="batch": the model in eval mode, its BatchNorm in train mode, left so
    model.eval()
    model[1].train()
    assert not torch.equal(task.predict(model, images), expected)
    assert model[1].training and not model.training


def test_the_task_metric_resizes_logits_of_a_predict_of_one_s_own_as_given():
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 5, 5) * 3
    labels = torch.randint(0, 4, (2, 15, 15))
    reference = SegmentationMetrics(4)
    reference.update(logits, labels)
    metric = SegmentationTask(4).metric()
    metric.update(logits, labels)  # not probabilities: their logarithm would be NaN
    assert torch.equal(metric.confmat, reference.confmat)


def test_the_loss_takes_uint8_label_maps_and_names_float_ones():
    """Called directly (as docs/segmentation.md does), float label maps ended in torch's
    'expected target dtype to be Long', uint8 ones in 'expected scalar type Long'."""
    torch.manual_seed(0)
    model = nn.Conv2d(3, 3, 1)
    images, labels = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    task = SegmentationTask(3)
    expected = task.loss(model, images, labels)
    assert torch.equal(task.loss(model, images, labels.to(torch.uint8)), expected)
    with pytest.raises(DatasetError, match=r"B x H x W integer label maps, got a torch\.float32"):
        task.loss(model, images, labels.float())


def test_float64_images_are_named_for_a_float32_model_and_taken_by_a_float64_one():
    """torch's 'expected scalar type Double but found Float' for a float32 model."""
    images = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    with pytest.raises(DatasetError, match=r"images of the model's dtype \(torch\.float32\)"):
        SegmentationTask(3).predict(nn.Conv2d(3, 3, 1).eval(), images)
    probs = SegmentationTask(3).predict(nn.Conv2d(3, 3, 1).double().eval(), images)
    assert probs.shape == (1, 3, 4, 4)
    # float16 images for a float32 model: torch's "Input type (c10::Half) and bias type ..."
    with pytest.raises(DatasetError, match=r"got torch\.float16: give images.to\(torch\.float32\)"):
        SegmentationTask(3).predict(nn.Conv2d(3, 3, 1).eval(), images.half())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # under autocast: cast by it
        probs = SegmentationTask(3).predict(nn.Conv2d(3, 3, 1).eval(), images.bfloat16())
    assert probs.shape == (1, 3, 4, 4)


def test_a_sliding_window_larger_than_the_training_crops_is_warned_of():
    """A tiny HRDA trial kept the published 1024 px window: every 64 px crop the teacher
    pseudo-labels, and every test image, was padded to it (11.7 GB, minutes an iteration)."""
    import warnings
    from types import SimpleNamespace

    from mic.datasets.segmentation import SegmentationTransform
    from mic.training.sampling import DatasetWrapper

    crops = SimpleNamespace(transform=SegmentationTransform(crop_size=(64, 48)))
    wrapped = DatasetWrapper(crops)  # (rare class sampling's)
    task = SegmentationTask(3, inference="slide", crop_size=(1024, 1024), stride=(512, 512))
    with pytest.warns(UserWarning, match=r"larger than the 64 x 48 training crops.*"
                      r"task.crop_size=\[64,48\] task.stride=\[32,24\]"):  # fmt: skip
        task.check_datasets({"source": wrapped})
    with pytest.warns(UserWarning, match=r"with inference=whole each image is predicted whole "
                      r"and they change nothing \(set task.inference=slide"):  # fmt: skip
        whole = SegmentationTask(3, crop_size=(1024, 1024))  # (a window asked for, unused)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SegmentationTask(3, inference="slide", crop_size=(64, 48), stride=(32, 24)).check_datasets(
            {"source": wrapped}
        )
        whole.check_datasets({"source": crops})
        SegmentationTask(3)  # whole, no window
    # the bundled scenes are read uncropped (no transform): their image size is the crop
    from mic.datasets.segmentation import StreetScenes

    scenes = StreetScenes("source", "train", count=2, size=32)
    eight = SegmentationTask(8, inference="slide", crop_size=(64, 64), stride=(32, 32))
    with pytest.warns(UserWarning, match=r"larger than the 32 x 32 training crops"):
        eight.check_datasets({"source": scenes})
    # a window smaller than the crops: pseudo-labels and scores of less context, unsaid
    small = SegmentationTask(8, inference="slide", crop_size=(24, 24), stride=(8, 8))
    with pytest.warns(UserWarning, match=r"\[24, 24\].*smaller than the 32 x 32 training crops: "
                      r"the model predicts on windows of less context"):  # fmt: skip
        small.check_datasets({"source": scenes})


def test_a_stride_of_one_value_is_refused_when_the_task_is_built():
    """A traceback from slide_logits' unpacking at the first evaluation before."""
    with pytest.raises(
        ConfigError, match=r"task.stride must be two positive pixel counts .* \[8\]"
    ):
        SegmentationTask(3, inference="slide", crop_size=(16, 16), stride=(8,))


def test_the_iou_table_says_how_many_classes_its_miou_averages(caplog):
    """A SYNTHIA run's 16-class protocol was named only in metrics.jsonl."""
    from mic.tasks.segmentation.hooks import ClassIoUTable

    names = [f"c{i}" for i in range(5)]
    record = {"step": 7, "eval/student/per_class_iou": [0.5] * 5}
    caplog.set_level("INFO", logger="mic")
    ClassIoUTable(names, [0, 1, 3]).on_record(None, record)
    ClassIoUTable(names, None).on_record(None, record)
    said = caplog.text.split("per-class IoU")
    assert said[1].startswith(" (%) at iteration 7 (mIoU over 3 classes, '-': left out):")
    assert said[2].startswith(" (%) at iteration 7:\n")
    # a protocol class in no label and no prediction is told apart from one outside it
    caplog.clear()
    record["eval/student/per_class_iou"] = [0.5, float("nan"), 0.5, float("nan"), 0.5]
    ClassIoUTable(names, [0, 1, 3]).on_record(None, record)
    rows = {line.split()[0]: line.split()[1] for line in caplog.text.splitlines()[2:]}
    assert rows == {"c0": "50.00", "c1": "none", "c2": "-", "c3": "none", "c4": "-"}
    assert "('none': in no label and no prediction, left out of the mIoU):" in caplog.text
