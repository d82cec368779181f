"""The detection Task: pseudo-box filtering, dropping of images without pseudo-boxes, per-box
weighting through MIC, the masked branch's loss switches, colour jitter on [0, 1] images,
metrics, and clear errors for bad targets."""

import math
import re
import warnings

import pytest
import torch

import mic
from mic import DatasetError, PseudoLabels
from mic.datasets.detection import ShapesDetection
from mic.tasks.detection import BOX_REGRESSION_PARTS, DetectionMIC, make_target
from mic.tasks.detection.model import IMAGENET_MEAN
from tests.det_helpers import BACKENDS, NUM_CLASSES, head_weights, need, tiny_batch, tiny_detector
from tests.det_helpers import task as det_task

backends = pytest.mark.parametrize("backend", BACKENDS)


def _prediction(scores, labels=None):
    n = len(scores)
    boxes = torch.tensor([[2.0 + i, 2, 20 + i, 20] for i in range(n)]).reshape(-1, 4)
    return {
        "boxes": boxes,
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels if labels is not None else [0] * n),
    }


def test_pseudo_boxes_keep_scores_at_or_above_the_threshold():
    task = det_task()
    pseudo = task.pseudo_label([_prediction([0.95, 0.8, 0.79, 0.3], [2, 1, 0, 0])])
    assert pseudo.labels[0]["labels"].tolist() == [2, 1]
    assert torch.allclose(pseudo.confidence[0], torch.tensor([0.95, 0.8]))
    assert pseudo.labels[0]["boxes"].shape == (2, 4)
    assert pseudo.keep == [True]
    lenient = mic.tasks.detection.DetectionTask(NUM_CLASSES, score_threshold=0.5)
    assert len(lenient.pseudo_label([_prediction([0.95, 0.8, 0.79, 0.3])]).confidence[0]) == 3


def test_images_without_pseudo_boxes_are_dropped_with_their_sizes():
    task = det_task()
    pseudo = task.pseudo_label([_prediction([0.9]), _prediction([0.5]), _prediction([])])
    assert pseudo.keep == [True, False, False]
    images = [torch.rand(3, 40, 64), torch.rand(3, 64, 48), torch.rand(3, 32, 32)]
    kept_images, kept = pseudo.kept(images)
    assert [tuple(x.shape[-2:]) for x in kept_images] == [(40, 64)]
    assert len(kept.labels) == len(kept.confidence) == 1


class _Recording(torch.nn.Module):
    """Wraps a detector and records what the masked branch hands it."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = []

    def forward(self, images, targets=None):
        self.calls.append((images, targets))
        return self.inner(images, targets)


def _mic(**kwargs):
    masker = mic.BlockMasker(16, 0.5, mic.StrongAugmentation(), fill=list(IMAGENET_MEAN))
    kwargs.setdefault("part_weights", dict.fromkeys(BOX_REGRESSION_PARTS, 0.0))
    return mic.MaskedImageConsistency(masker, weighting=kwargs.pop("weighting", "none"), **kwargs)


def _pseudo(scores_per_image):
    return det_task().pseudo_label([_prediction(s, [1] * len(s)) for s in scores_per_image])


@backends
def test_masked_branch_sees_only_images_with_pseudo_boxes_and_their_confidence(backend):
    model = _Recording(tiny_detector(backend=backend))
    images, _ = tiny_batch()
    term = _mic(weighting="prob")
    term.loss(model, det_task(), images, _pseudo([[0.9, 0.85], [0.1]]))
    seen_images, seen_targets = model.calls[-1]
    assert seen_images.shape[0] == 1  # the second image has no pseudo-box
    assert torch.allclose(seen_targets[0]["weights"], torch.tensor([0.9, 0.85]))
    # weighting "none": every pseudo-box weighs 1 (lambda alone)
    _mic().loss(model, det_task(), images, _pseudo([[0.9, 0.85], [0.1]]))
    assert torch.equal(model.calls[-1][1][0]["weights"], torch.ones(2))
    # no image with a pseudo-box: no forward pass and a zero loss
    model.calls.clear()
    assert _mic().loss(model, det_task(), images, _pseudo([[0.1], []])).item() == 0.0
    assert not model.calls


def _grads_after(term, backend, seed=0):
    model = tiny_detector(seed, backend=backend)
    images, _ = tiny_batch()
    torch.manual_seed(seed)
    loss = term.loss(model, det_task(), images, _pseudo([[0.9, 0.85], [0.95]]))
    loss = term.weight * loss  # lambda, which the loop applies
    loss.backward()
    grads = {k: w.grad for k, w in head_weights(model).items()}
    return grads["rpn_box"], grads["roi_box"], grads["roi_classifier"], loss


@backends
def test_box_regression_of_the_masked_branch_is_off_by_default_and_can_be_switched_on(backend):
    rpn_box, roi_box, cls, _ = _grads_after(_mic(), backend)
    assert rpn_box is None and roi_box is None  # not even in the graph
    assert cls is not None and cls.abs().sum() > 0
    assert DetectionMIC(mic.BlockMasker(8)).part_weights == {"rpn_box": 0.0, "roi_box": 0.0}
    rpn_box, roi_box, cls, _ = _grads_after(_mic(part_weights={}), backend)
    assert rpn_box is not None and rpn_box.abs().sum() > 0
    assert roi_box is not None


@backends
def test_lambda_scales_every_part_of_the_masked_loss(backend):
    _, _, _, one = _grads_after(_mic(weight=1.0), backend)
    _, _, _, half = _grads_after(_mic(weight=0.5), backend)
    assert torch.allclose(half, 0.5 * one, atol=1e-6)


@pytest.mark.parametrize("jitter,clipped", [("published", 0.1), ("torchvision", 0.02)])
def test_colour_jitter_acts_on_unit_images_and_keeps_them_recognisable(jitter, clipped):
    # a detection image in [0, 1] (no normalisation): jitter must neither clamp it to black /
    # white (what jittering a 0-255 image as if it were [0, 1] does) nor move it far. The
    # published operations add the brightness shift and scale contrast about 0, so more bright
    # pixels clip than with torchvision's (5.5 % against 2.4 % of these, 0.8 % before)
    g = torch.Generator().manual_seed(0)
    scenes = ShapesDetection("source", "test", size=64)
    images = torch.stack([scenes[i][0] for i in range(8)])
    # mean / std None: [0, 1] input
    aug = mic.StrongAugmentation(jitter_p=1.0, blur_p=0.0, jitter=jitter)
    out = aug(images, g)
    assert out.min() >= 0 and out.max() <= 1

    def saturated(x):
        return ((x <= 0.0) | (x >= 1.0)).float().mean()

    assert saturated(out) < saturated(images) + clipped
    # strength 0.2 moves a pixel by a fraction of the range, and keeps its structure
    assert (out - images).abs().mean() < 0.2
    for a, b in zip(out, images, strict=True):
        corr = torch.corrcoef(torch.stack([a.mean(0).flatten(), b.mean(0).flatten()]))[0, 1]
        assert corr > 0.8
    # the same jitter applied to a 0-255 image as if it were [0, 1] clamps it flat
    broken = aug(images * 255, g)
    assert broken.flatten(1).std(1).max() < 0.25 * images.flatten(1).std(1).min()


def test_metrics_perfect_and_per_class():
    task = det_task()
    metric = task.metric()
    target = make_target([[0, 0, 10, 10], [20, 20, 40, 40]], [0, 2])
    perfect = {**target, "scores": torch.tensor([0.9, 0.8])}
    metric.update([perfect], [target])
    out = metric.compute()
    assert out["map_50"] == pytest.approx(1.0) and out["map"] == pytest.approx(1.0)
    assert out["ap50_per_class"][0] == pytest.approx(1.0)
    assert math.isnan(out["ap50_per_class"][1])  # no ground truth of class 1
    wrong = task.metric()
    wrong.update([{**perfect, "labels": torch.tensor([1, 1])}], [target])
    assert wrong.compute()["map_50"] == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (make_target([[10, 10, 10, 20]], [0]), "degenerate box"),
        (make_target([[10, 30, 20, 20]], [0]), "degenerate box"),
        (make_target([[10, 10, 80, 20]], [0]), "outside the 64 x 64"),
        (make_target([[-5, 10, 20, 20]], [0]), "outside the 64 x 64"),
        (make_target([[1, 1, 20, 20]], [3]), "class id 3, outside [0, 2]"),
        (make_target([[1, 1, 20, 20]], [-1]), "class id -1"),
        ({"boxes": torch.zeros(2, 4), "labels": torch.zeros(1, dtype=torch.long)}, "2 boxes"),
        ({"boxes": [[1, 1, 2, 2]], "labels": torch.zeros(1, dtype=torch.long)}, "N x 4 tensor"),
        ({"labels": torch.zeros(1)}, "must be a dict with 'boxes'"),
    ],
)
def test_bad_targets_are_clear_errors(target, message):
    with pytest.raises(DatasetError, match=re.escape(message)):
        det_task().collate([(torch.rand(3, 64, 64), target)])


def test_box_faults_give_each_bad_box_its_first_fault_and_name_the_bad_box():
    from mic.datasets.detection.targets import box_faults

    boxes = torch.tensor(
        [[1, 1, 9, 9], [5, 5, 5, 9], [float("nan"), 1, 9, 9], [-5, 1, 9, 9], [60, 1, 50, 70]]
    )
    faults = box_faults(boxes, (64, 64))
    assert {k: v.tolist() for k, v in faults.items()} == {
        "non-finite": [False, False, True, False, False],
        "degenerate": [False, True, False, False, True],  # the last is outside too: not twice
        "outside": [False, False, False, True, False],
    }
    assert not box_faults(boxes[3:4])["outside"].any()  # no size: nothing is outside
    # the message shows the box at fault (not the first box of the image)
    with pytest.raises(
        DatasetError, match=re.escape("non-finite coordinate: [nan, 1.0, 9.0, 9.0]")
    ):
        det_task().collate([(torch.rand(3, 64, 64), make_target(boxes, [0] * 5))])


def test_an_image_without_objects_is_valid_and_sizes_may_differ():
    images, targets = det_task().collate(
        [(torch.rand(3, 64, 64), make_target([], [])), (torch.rand(3, 32, 48), targets_one())]
    )
    assert isinstance(images, list) and len(targets) == 2
    same, targets = det_task().collate([torch.rand(3, 8, 8), torch.rand(3, 8, 8)])
    assert isinstance(same, torch.Tensor) and same.shape == (2, 3, 8, 8) and targets is None


def targets_one():
    return make_target([[1, 1, 20, 20]], [1])


def test_mismatched_class_names_are_an_error():
    with pytest.raises(DatasetError, match=r"list 2 classes but task\.num_classes is 3"):
        mic.tasks.detection.DetectionTask(3, class_names=["a", "b"])
    assert isinstance(PseudoLabels, type)


def test_reports_name_the_classes_as_the_test_dataset_does():
    from mic.tasks.detection import DetectionTask

    class Named(list):
        classes = ("cat", "dog")

    task = DetectionTask(2)
    task.report_hooks(None, Named())
    assert task.class_names == ["cat", "dog"]
    given = DetectionTask(2, class_names=["a", "b"])
    given.report_hooks(None, Named())
    assert given.class_names == ["a", "b"]  # names given in the config win


def test_one_batch_gives_the_same_pseudo_boxes_whichever_backend_predicted():
    """The teacher's raw detections, in each backend's own form (torchvision: dicts in the
    resized image with background class 0; detectron2: ``Instances`` in the resized image with
    0-based classes), go through the model's post-processing, the teacher and the Task's
    pseudo-labelling: the same pseudo-boxes either way."""
    need("detectron2")
    from detectron2.structures import Boxes, Instances

    from mic.tasks.detection import Detectron2RCNN, FasterRCNN

    # two 64 x 96 images; both models resize them to 128 x 192
    boxes = [torch.tensor([[2.0, 4, 20, 30], [30, 10, 60, 50], [5, 5, 9, 9]]), torch.zeros(0, 4)]
    scores = [torch.tensor([0.95, 0.8, 0.5]), torch.zeros(0)]
    labels = [torch.tensor([2, 0, 1]), torch.zeros(0, dtype=torch.int64)]
    raw = {
        "torchvision": [
            {"boxes": 2 * b, "labels": c + 1, "scores": s}
            for b, c, s in zip(boxes, labels, scores, strict=True)
        ],
        "detectron2": [
            Instances((128, 192), pred_boxes=Boxes(2 * b), scores=s, pred_classes=c)
            for b, c, s in zip(boxes, labels, scores, strict=True)
        ],
    }
    sizes = dict(min_size=128, max_size=192, fpn_channels=16, representation_size=32)
    anchors = [8, 16, 32, 64, 128]
    models = {
        "torchvision": FasterRCNN("test_efficientnet", 3, anchor_sizes=anchors, **sizes),
        "detectron2": Detectron2RCNN(
            num_classes=3, backbone="test_efficientnet", anchor_sizes=anchors, **sizes
        ),
    }
    # the ROI heads of each backend answer with the raw detections above
    models["torchvision"].roi_heads.forward = lambda *a, **k: (raw["torchvision"], {})
    models["detectron2"].rcnn.roi_heads.forward = lambda *a, **k: (raw["detectron2"], {})
    images = torch.rand(2, 3, 64, 96)
    pseudo = {}
    for backend, model in models.items():
        teacher = mic.EMATeacher(model, alpha=0.9)
        pseudo[backend] = det_task().pseudo_label(teacher.predict(det_task(), images))
    tv, d2 = pseudo["torchvision"], pseudo["detectron2"]
    assert tv.keep == d2.keep == [True, False]
    for a, b in zip(tv.labels, d2.labels, strict=True):
        assert torch.equal(a["labels"], b["labels"])
        assert torch.allclose(a["boxes"], b["boxes"])
    for a, b in zip(tv.confidence, d2.confidence, strict=True):
        assert torch.equal(a, b)
    # scores >= 0.8, boxes back in the input's pixels, classes 0-based
    assert torch.allclose(d2.labels[0]["boxes"], boxes[0][:2])
    assert d2.labels[0]["labels"].tolist() == [2, 0]


def test_boxes_between_the_two_thresholds_become_ignore_boxes():
    task = mic.tasks.detection.DetectionTask(NUM_CLASSES, ignore_threshold=0.5)
    pseudo = task.pseudo_label([_prediction([0.95, 0.79, 0.5, 0.49], [2, 1, 0, 0])])
    label = pseudo.labels[0]
    assert label["labels"].tolist() == [2]
    assert torch.equal(label["ignore_boxes"], _prediction([0.95, 0.79, 0.5])["boxes"][1:])
    assert "ignore_boxes" not in det_task().pseudo_label([_prediction([0.9])]).labels[0]
    for bad in (0.8, 0.9, -0.1, False, "0.5"):  # False is no "off": that is None
        with pytest.raises(mic.ConfigError, match="ignore_threshold"):
            mic.tasks.detection.DetectionTask(NUM_CLASSES, ignore_threshold=bad)
    for bad in (None, True, "0.8"):
        with pytest.raises(mic.ConfigError, match="score_threshold must be a number"):
            mic.tasks.detection.DetectionTask(NUM_CLASSES, score_threshold=bad)


def _classification_losses(backend, targets):
    from mic.core import RandomStream
    from mic.tasks.detection.model import sampling_from

    model = tiny_detector(backend=backend)
    model.train()
    images, _ = tiny_batch()
    with sampling_from(RandomStream(4), "cpu"):  # the same samples each time
        return model(images, targets)


@backends
def test_samples_near_an_ignore_box_are_not_taught_as_background(backend):
    _, targets = tiny_batch()
    plain = _classification_losses(backend, targets)
    # an empty list of ignore boxes changes nothing, bit for bit
    empty = [{**t, "ignore_boxes": torch.zeros(0, 4)} for t in targets]
    assert all(torch.equal(plain[k], v) for k, v in _classification_losses(backend, empty).items())
    # boxes the teacher was unsure of, all over the image (so that some of an untrained
    # detector's proposals lie on one): the anchors and proposals near them that would be
    # background weigh 0
    unsure = torch.tensor(
        [
            [x, y, x + size, y + size]
            for size in (8, 16, 32)
            for x in range(0, 64 - size + 1, 4)
            for y in range(0, 64 - size + 1, 4)
        ],
        dtype=torch.float32,
    )
    ignoring = [{**t, "ignore_boxes": unsure} for t in targets]
    ignored = _classification_losses(backend, ignoring)
    for part in ("rpn_objectness", "roi_classifier"):
        assert 0 < ignored[part] < plain[part], part
    for part in ("rpn_box", "roi_box"):  # foreground samples only: unchanged
        assert torch.equal(ignored[part], plain[part]), part


@backends
def test_the_masked_branch_hands_the_ignore_boxes_to_the_detector(backend):
    model = _Recording(tiny_detector(backend=backend))
    images, _ = tiny_batch()
    task = mic.tasks.detection.DetectionTask(NUM_CLASSES, ignore_threshold=0.3)
    pseudo = task.pseudo_label([_prediction([0.9, 0.5], [1, 1]), _prediction([0.4], [1])])
    loss = _mic().loss(model, task, images, pseudo)
    _, seen_targets = model.calls[-1]
    assert len(seen_targets) == 1  # the second image has an ignore box but no pseudo-box
    assert torch.equal(seen_targets[0]["ignore_boxes"], _prediction([0.9, 0.5])["boxes"][1:])
    assert torch.isfinite(loss) and loss > 0


@backends
def test_ignore_boxes_follow_the_detectors_resizing_as_the_pseudo_boxes_do(backend, monkeypatch):
    """Images smaller than the detector's input size are resized inside it: ignore boxes must
    be scaled with them, as the pseudo-boxes are (here both boxes are the same box)."""
    model = tiny_detector(backend=backend)
    model.train()
    images = torch.rand(2, 3, 32, 24)  # the tiny detector resizes to 64 px
    box = torch.tensor([[4.0, 6.0, 20.0, 30.0]])
    targets = [{**make_target(box.tolist(), [1]), "ignore_boxes": box.clone()} for _ in range(2)]
    seen = []
    if backend == "torchvision":
        import mic.tasks.detection.model as tv

        original = tv.ignore_near

        def spy(weights, background, target, near, candidates):
            seen.append((target["ignore_boxes"], target["boxes"]))
            return original(weights, background, target, near, candidates)

        monkeypatch.setattr(tv, "ignore_near", spy)
        model(images, targets)
    else:
        for image in images:
            resized = model.resize(image)
            instances = model._instances(targets[0], tuple(image.shape[-2:]), resized)
            seen.append((instances._ignore_boxes, instances.gt_boxes.tensor))
    assert seen
    for ignore, pseudo in seen:
        assert not torch.allclose(pseudo, box)  # resized
        assert torch.allclose(ignore, pseudo)


@backends
def test_thresholds_below_the_detector_s_lowest_score_are_warned_of(backend):
    """task.score_threshold=0 acted as the detector's box_score_thresh (0.05) without a word:
    post-processing drops every box under it before pseudo_label sees the predictions."""
    images, _ = tiny_batch()
    model = tiny_detector(backend=backend).eval()
    assert model.box_score_thresh == 0.05  # (both backends' default)
    task = mic.tasks.detection.DetectionTask(NUM_CLASSES, score_threshold=0.02)
    with pytest.warns(UserWarning, match=r"task.score_threshold=0.02 lies below the model's "):
        task.predict(model, images)
    with warnings.catch_warnings():  # once per task; none at or above the floor
        warnings.simplefilter("error")
        task.predict(model, images)
        mic.tasks.detection.DetectionTask(NUM_CLASSES, 0.05).predict(model, images)
    both = mic.tasks.detection.DetectionTask(NUM_CLASSES, 0.03, ignore_threshold=0.01)
    with pytest.warns(UserWarning, match=r"score_threshold=0.03 and task.ignore_threshold=0.01"):
        both.predict(model, images)


@backends
def test_predict_and_loss_refuse_what_the_detectors_took_silently(backend):
    images, targets = tiny_batch()
    model = tiny_detector(backend=backend)
    # a model in training mode returned {} from predict: no detections, no error
    with pytest.raises(mic.ConfigError, match=r"call model.eval\(\) before predicting"):
        det_task().predict(model, images)
    model.eval()
    assert len(det_task().predict(model, images)) == 2
    # one C x H x W image was read as C grey images by detectron2
    with pytest.raises(DatasetError, match=re.escape("got a tensor of shape (3, 64, 64)")):
        det_task().predict(model, images[0])
    with pytest.raises(DatasetError, match=r"got torch\.uint8 tensors"):
        det_task().predict(model, (images * 255).to(torch.uint8))
    # a model of another class count trained and scored without a word
    other = tiny_detector(num_classes=NUM_CLASSES + 2, backend=backend)
    for call in (lambda: det_task().predict(other.eval(), images),
                 lambda: det_task().loss(other.train(), images, targets)):  # fmt: skip
        with pytest.raises(mic.ConfigError, match="predicts 5 classes but the task has 3"):
            call()
    # targets or weights of another count than the images: torchvision's IndexError, zip's
    model.train()
    with pytest.raises(DatasetError, match=r"got 1 targets for 2 images: one per image"):
        det_task().loss(model, images, targets[:1])
    with pytest.raises(DatasetError, match=r"got 3 weights for 2 images"):
        det_task().loss(model, images, targets, weights=[torch.ones(1)] * 3)
    # a class id out of range from a loader's own collate_fn: detectron2 trained the id
    # num_classes as its background, torchvision named id + 1 in an IndexError
    for bad in (NUM_CLASSES, -1):
        wrong = [targets[0], {**targets[1], "labels": torch.full_like(targets[1]["labels"], bad)}]
        with pytest.raises(DatasetError, match=f"batch item 1 has class id {bad}, outside"):
            det_task().loss(model, images, wrong)
    model.eval()
    # images in 0..255: warned of once per task
    task = det_task()
    with pytest.warns(UserWarning, match="divide images in 0..255 by 255"):
        task.predict(model, images * 255)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task.predict(model, images * 255)


def test_collate_warns_of_images_outside_0_1_in_any_batch_and_of_normalised_ones():
    """The range was checked on the first batch the task saw: a target loader in 0..255 after
    a source one in [0, 1] trained silently, and ImageNet-normalised images (normalised again
    by the detector) were never told of."""
    task = det_task()
    sample = (
        torch.rand(3, 32, 32),
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task.collate([sample])  # [0, 1]: nothing to say
    with pytest.warns(UserWarning, match="divide images in 0..255 by 255"):
        task.collate([(sample[0] * 255, sample[1])])
    normalised = (sample[0] - 0.45) / 0.225
    with pytest.warns(UserWarning, match=r"go down to -2\.\d\d: give them unnormalised"):
        task.collate([(normalised, sample[1])])
    with warnings.catch_warnings():  # once per kind
        warnings.simplefilter("error")
        task.collate([(normalised, sample[1])])


@pytest.mark.parametrize("backend", BACKENDS)
def test_domain_classifier_widths_that_are_not_the_detector_s_are_named(backend):
    from mic.core.context import IterationContext
    from mic.tasks.detection import DomainAdversarial

    model = tiny_detector(backend=backend)  # fpn_channels 16, representation_size 32
    images, targets = tiny_batch()
    ctx = IterationContext(0, det_task(), model, (images, targets), images)
    for wrong, message in (
        ({"channels": 256, "roi_features": 32}, "DomainAdversarial(channels=256) but the "
         "detector's fpn_channels is 16: give channels=16"),
        ({"channels": 16, "roi_features": 1024}, "roi_features=1024) but the detector's "
         "representation_size is 32"),
    ):  # fmt: skip
        with pytest.raises(mic.ConfigError, match=re.escape(message)):
            DomainAdversarial(**wrong)(ctx)
    assert set(DomainAdversarial(channels=16, roi_features=32)(ctx)) >= {"adv_image"}


def test_images_channels_last_are_named_before_their_boxes():
    """Their boxes were checked first, against a '3 x 64 (W x H)' image."""
    from mic import DatasetError
    from mic.tasks.detection import DetectionTask

    target = {"boxes": torch.tensor([[32.0, 36.0, 43.0, 47.0]]), "labels": torch.tensor([0])}
    with pytest.raises(DatasetError, match=r"channels last \(H x W x C\)"):
        DetectionTask(3).collate([(torch.rand(64, 64, 3), target)] * 2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_detections_are_float32_under_bf16_autocast(backend):
    """Under precision=bf16 the teacher's pseudo-boxes were bf16 (torchvision decoded its
    boxes in the deltas' dtype: 0.25 px steps at 64 px, 4 px at 1024; detectron2's scores)."""
    images, _ = tiny_batch()
    model = tiny_detector(backend=backend).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        detections = det_task().predict(model, images)
    for d in detections:
        assert d["boxes"].dtype == d["scores"].dtype == torch.float32
        assert d["labels"].dtype == torch.int64
    if backend == "torchvision":  # decoded in float32: not on bf16's grid (0.25 px here)
        boxes = torch.cat([d["boxes"] for d in detections])
        assert len(boxes) and not torch.equal(boxes, boxes.bfloat16().float())


def test_the_per_class_ap_table_names_the_classes_without_a_box_left_out_of_the_mean():
    """A Foggy Cityscapes split without a train showed '-' in its row and a mean over the
    other classes, without a word."""
    import math

    from mic.tasks.detection.report import per_class_table

    record = {
        "eval/student/ap50_per_class": [0.5, math.nan, 0.25],
        "eval/teacher/ap50_per_class": [0.4, math.nan, 0.0],
        "eval/student/map_50": 0.375,
        "eval/teacher/map_50": 0.2,
    }
    table = per_class_table(record, ["car", "train", "bus"])
    assert "| train | - | - | - | - |" in table
    assert table.endswith(
        "`-`: no box of train in the test set, left out of the mean (as COCO's mAP does)"
    )
    record["eval/teacher/ap50_per_class"][1] = 0.0  # scored by one model: a box is there
    assert "no box of" not in per_class_table(record, ["car", "train", "bus"])
    # a model whose weights went non-finite scores NaN throughout: no word of the test set
    record["eval/student/ap50_per_class"] = [math.nan] * 3
    record["eval/teacher/ap50_per_class"] = [math.nan] * 3
    assert "no box of" not in per_class_table(record, ["car", "train", "bus"])
    record["eval/teacher/ap50_per_class"] = [0.4, math.nan, 0.1]  # the other one tells
    assert "no box of train in" in per_class_table(record, ["car", "train", "bus"])
