"""DACS ClassMix, the ImageNet feature distance, MIC's masked images, and the loop with them."""

import pytest
import torch
from torch.utils.data import DataLoader

import mic
from mic import (
    AdaptationLoop,
    EMATeacher,
    IterationContext,
    MaskedImageConsistency,
    PseudoLabels,
    StrongAugmentation,
    UDAMethod,
)
from mic.datasets.segmentation import StreetScenes
from mic.tasks.segmentation import (
    ClassMix,
    FeatureDistance,
    SegmentationMIC,
    SegmentationTask,
    SharedSourceSupervision,
    SmallUNet,
    class_mix_masks,
    majority_labels,
)

pytestmark = pytest.mark.usefixtures("one_thread")


WIDTHS = (4, 8, 8)


def test_class_mix_pastes_half_of_each_images_classes_rounded_up():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([[[0, 1, 2], [3, 4, 255]], [[5, 5, 5], [6, 6, 255]]])
    for _ in range(20):
        mask = class_mix_masks(labels, 8, g)
        assert not mask[labels == 255].any()
        pasted0 = labels[0][mask[0]].unique()
        assert len(pasted0) == 3  # ceil(5 / 2) of {0..4}
        assert len(labels[1][mask[1]].unique()) == 1  # ceil(2 / 2) of {5, 6}
        for b in range(2):  # whole classes are pasted
            for c in labels[b][mask[b]].unique():
                assert mask[b][labels[b] == c].all()
    batch = class_mix_masks(labels, 8, torch.Generator().manual_seed(1), "batch")
    assert batch.shape == labels.shape


def _context(task, source, target, labels, teacher_logits, student=None, seed=0):
    ctx = IterationContext(0, task, student, (source, labels), target, seed=seed)
    probs = torch.softmax(teacher_logits, 1)
    ctx._pseudo = task.pseudo_label(probs)
    return ctx


def test_class_mix_labels_and_weights_follow_the_mask():
    task = SegmentationTask(3, pseudo_label_margins=(1, 0, 0, 0))
    source, target = torch.ones(2, 3, 4, 4), -torch.ones(2, 3, 4, 4)
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    labels[:, 2:] = 1
    teacher = torch.zeros(2, 3, 4, 4)
    teacher[:, 2] = 10.0  # confident class 2 everywhere: q = 1
    ctx = _context(task, source, target, labels, teacher)
    images, mixed, weights = ClassMix(augmentation=None).mix(ctx)
    inside = images[:, 0] > 0
    assert inside.any()
    assert torch.equal(mixed[inside], labels[inside]) and (mixed[~inside] == 2).all()
    assert (weights[inside] == 1).all()
    assert (weights[:, 0][~inside[:, 0]] == 0).all()  # the top margin
    assert (weights[:, 1:][~inside[:, 1:]] == 1).all()


def test_class_mix_of_labels_at_half_the_images_size_asks_for_full_size_labels():
    """It advised removing ClassMix from the method, as for a classification task."""
    task = SegmentationTask(3)
    source, target = torch.ones(2, 3, 8, 8), -torch.ones(2, 3, 8, 8)
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    ctx = _context(task, source, target, labels, torch.zeros(2, 3, 8, 8))
    with pytest.raises(mic.DatasetError, match=r"\(4, 4\) labels for \(8, 8\) images") as info:
        ClassMix(augmentation=None).mix(ctx)
    assert "remove it" not in str(info.value)


def test_class_mix_names_target_batches_of_one_item_and_images_channels_last():
    """A target DataLoader without collate_fn (TensorDataset(x): 1-item batches) ended in
    "'list' object has no attribute 'shape'"; channels-last images in a batch-size message."""
    task = SegmentationTask(3)
    source, labels = torch.ones(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long)
    ctx = _context(task, source, [-torch.ones(2, 3, 8, 8)], labels, torch.zeros(2, 3, 8, 8))
    with pytest.raises(mic.DatasetError, match=r"collate_fn=task\.collate"):
        ClassMix(augmentation=None).mix(ctx)
    ctx = _context(task, source, torch.ones(2, 8, 8, 3), labels, torch.zeros(2, 3, 8, 8))
    with pytest.raises(mic.DatasetError, match="channels last"):
        ClassMix(augmentation=None).mix(ctx)


def test_class_mix_of_a_short_target_batch_names_the_loader_s_last_batch():
    """A one-image target set in a loader without drop_last was told to "set equal batch
    sizes", which were equal."""
    task = SegmentationTask(3)
    source, labels = torch.ones(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long)
    ctx = _context(task, source, -torch.ones(1, 3, 8, 8), labels, torch.zeros(1, 3, 8, 8))
    with pytest.raises(mic.ConfigError, match=r"; or a loader's last batch is short, .*drop_last"):
        ClassMix(augmentation=None).mix(ctx)
    ctx = _context(task, source, -torch.ones(2, 3, 6, 6), labels, torch.zeros(2, 3, 6, 6))
    with pytest.raises(mic.ConfigError, match=r"\(set equal batch sizes and crop sizes\)$"):
        ClassMix(augmentation=None).mix(ctx)


def test_class_mix_on_a_classification_task_says_it_is_a_segmentation_term():
    """It used to fail with a raw size-mismatch RuntimeError of torch.where."""
    from mic.tasks.classification import ClassificationTask, Classifier

    task = ClassificationTask(3)
    images = torch.randn(4, 3, 8, 8)
    student = Classifier("tiny_cnn", 3, bottleneck_dim=8)
    ctx = _context(task, images, images + 1, torch.tensor([0, 1, 2, 0]), torch.randn(4, 3))
    ctx.student, ctx.term = student, "mix"
    with pytest.raises(mic.ConfigError, match=r"ClassMix is a segmentation term.*shape \(4,\)"):
        ClassMix()(ctx)
    ctx.term = "source"
    with pytest.raises(mic.ConfigError, match="SharedSourceSupervision and FeatureDistance"):
        SharedSourceSupervision()(ctx)


def test_majority_labels_and_feature_distance_masks_thing_cells():
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[:, :2, :2] = 5
    labels[:, 2:, 2:] = 255
    labels[:, 0, 2] = 5  # a 1/4 minority in its cell
    cells = majority_labels(labels, (2, 2), 8, 0.75)
    assert cells.tolist() == [[[5, 0], [0, 255]]]
    fd = FeatureDistance(weight=1.0, classes=[5])
    student = SmallUNet(8, WIDTHS).eval()
    images = torch.randn(1, 3, 8, 8)
    labels = labels.repeat_interleave(2, 1).repeat_interleave(2, 2)  # 2 x 2 features of 8 x 8
    features = student.forward_features(images)[-1].detach()
    assert float(fd.distance(student, images, features, labels, 8)) == 0.0  # as the copy
    assert float(fd.distance(student, images, features + 1, labels, 8)) > 0
    assert (
        float(FeatureDistance(classes=[6]).distance(student, images, features + 1, labels, 8))
        == 0.0
    )
    # the frozen copy travels with the state dict
    state = fd.state_dict()
    other = FeatureDistance(weight=1.0, classes=[5])
    other.load_state_dict(state)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    assert float(other.distance(student, images, features, labels, 8)) == 0.0


def test_source_and_target_masking_weights_the_source_image_one():
    task = SegmentationTask(3)
    masker = mic.BlockMasker(block_size=2, ratio=0.0)
    term = SegmentationMIC(masker, images="source+target")
    source, target = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    labels = torch.ones(2, 4, 4, dtype=torch.long)
    teacher = torch.zeros(2, 3, 4, 4)  # undecided: q = 0
    ctx = _context(task, source, target, labels, teacher)
    seen = {}

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            seen["images"] = x
            return torch.zeros(x.shape[0], 3, 4, 4) + self.w

    ctx.student = Spy()
    loss = term(ctx)
    assert torch.equal(seen["images"], torch.cat([source[:1], target[:1]]))
    assert torch.isclose(loss, torch.log(torch.tensor(3.0)) / 2)  # only the source half counts


class Spy(torch.nn.Module):
    """A model that records the images it sees and predicts 3 classes from them."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)
        self.seen = []

    def forward(self, x):
        self.seen.append(x)
        return self.conv(x)


def test_segmentation_mic_is_the_core_consistency_loss_in_both_modes():
    task = SegmentationTask(3, pseudo_label_margins=(1, 0, 0, 0))
    g = torch.Generator().manual_seed(0)
    source, target = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    labels = torch.randint(0, 3, (2, 8, 8), generator=g)
    teacher = 4 * torch.randn(2, 3, 8, 8, generator=g)
    aug = StrongAugmentation(mean=[0.5] * 3, std=[0.25] * 3)
    student = Spy()

    def run(term, name="mic"):
        ctx = _context(task, source, target, labels, teacher, student, seed=1)
        ctx.term = name
        return term(ctx), ctx

    # the target mode is MaskedImageConsistency itself
    masker = mic.BlockMasker(2, 0.7, aug)
    seg, _ = run(SegmentationMIC(masker, images="target"))
    core, _ = run(MaskedImageConsistency(masker))
    assert torch.equal(seg, core) and torch.equal(student.seen[0], student.seen[1])
    # the source + target mode builds its inputs and calls ConsistencyLoss.loss
    term = SegmentationMIC(masker, images="source+target", weight=0.5)
    seg, ctx = run(term)
    pseudo = ctx.pseudo_labels
    q = term.weighting(pseudo)
    images = torch.cat([source[:1], target[:1]])
    both = PseudoLabels(torch.cat([labels[:1], pseudo.labels[:1]]), torch.ones(2, 8, 8))
    weights = torch.cat([torch.ones_like(q[:1]), q[:1]])
    ctx.restart()  # the term's stream from its start
    assert torch.equal(seg, term.loss(student, task, images, both, ctx.rng, weights))
    assert (weights[1, 0] == 0).all() and (weights[0] == 1).all()  # the target's top margin


def _streets_loop(method, iterations=2):
    task = SegmentationTask(8, classes=StreetScenes.classes)
    src = StreetScenes("source", "train", count=8, size=32)
    tgt = StreetScenes("target", "train", count=8, size=32, labelled=False)

    def loader(ds):
        return DataLoader(ds, 4, shuffle=True, drop_last=True, collate_fn=task.collate)

    torch.manual_seed(0)
    student = SmallUNet(8, WIDTHS)
    opt = torch.optim.AdamW(list(student.parameters()) + list(method.parameters()), 1e-3)
    teacher = EMATeacher(student, 0.99) if method.uses_pseudo_labels else None
    return AdaptationLoop(
        task, student, method, opt, loader(src), loader(tgt), iterations, teacher=teacher
    )


def test_daformer_with_mic_trains_in_the_generic_loop_and_resumes():
    aug = StrongAugmentation(mean=StreetScenes.mean, std=StreetScenes.std)
    method = UDAMethod(
        {
            "source": SharedSourceSupervision(),
            "mix": ClassMix(aug),
            "mic": SegmentationMIC(mic.BlockMasker(8, 0.7, aug)),
            "feature_distance": FeatureDistance(classes=[5, 6, 7]),
        }
    )
    loop = _streets_loop(method)
    before = [p.clone() for p in loop.student.parameters()]
    losses = loop.train_step()
    loop.step += 1
    assert set(losses) == {"source", "feature_distance", "mix", "mic"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, loop.student.parameters()))
    state = loop.state_dict()
    assert any(k.endswith("_extra_state") for k in state["method"])
    again = _streets_loop(UDAMethod({"feature_distance": FeatureDistance(classes=[5, 6, 7])}))
    again.method.load_state_dict(
        {k: v for k, v in state["method"].items() if k.startswith("terms.feature_distance")}
    )
    frozen = again.method.terms["feature_distance"].initial_encoder(again.student)
    original = loop.method.terms["feature_distance"].initial_encoder(loop.student)
    assert all(
        torch.equal(a, b)
        for a, b in zip(frozen.state_dict().values(), original.state_dict().values())
    )


def test_a_feature_distance_that_counts_no_cell_warns_that_it_does_nothing():
    """On the bundled HRDA scenes the context features are 2 x 2 cells, none of which a thing
    class covers to min_ratio: the term weighed 0 for the whole run, silently."""
    import warnings

    from mic.tasks.segmentation.terms import EMPTY_CELLS_AFTER

    task = SegmentationTask(8)
    student = SmallUNet(8, WIDTHS)
    images = torch.randn(2, 3, 16, 16)
    stripes = torch.zeros(2, 16, 16, dtype=torch.long)
    stripes[:, :, ::2] = 5  # class 5 on every other column: half of any cell, never 0.75

    def run(fd, labels, steps):
        for step in steps:
            fd(IterationContext(step, task, student, (images, labels), images))

    idle = FeatureDistance(classes=[5])
    run(idle, stripes, range(EMPTY_CELLS_AFTER))
    with pytest.warns(UserWarning, match=r"counted no feature cell in the first 50 iterations"):
        run(idle, stripes, [EMPTY_CELLS_AFTER])
    acting = FeatureDistance(classes=[5])
    run(acting, torch.full_like(stripes, 5), [0])
    run(acting, stripes, range(1, EMPTY_CELLS_AFTER))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(acting, stripes, [EMPTY_CELLS_AFTER])
        run(idle, stripes, [EMPTY_CELLS_AFTER])  # once


def test_class_mix_masks_take_integer_labels_of_any_width_and_name_others():
    from mic.core.errors import ConfigError

    labels = torch.randint(0, 3, (2, 4, 4))
    masks = class_mix_masks(labels, 3, torch.Generator().manual_seed(0))
    narrow = class_mix_masks(labels.to(torch.uint8), 3, torch.Generator().manual_seed(0))
    assert torch.equal(masks, narrow)
    assert class_mix_masks(labels[:0], 3).shape == (0, 4, 4)  # an empty batch
    for bad in (labels.float(), labels.bool()):
        with pytest.raises(ConfigError, match="ClassMix takes B x H x W integer label maps"):
            class_mix_masks(bad, 3)
    with pytest.raises(ConfigError, match="num_classes must be an int >= 1, got 0"):
        class_mix_masks(labels, 0)


def test_a_feature_distance_that_could_never_count_a_cell_is_refused():
    """classes=[] or min_ratio above 1 trained with the term at 0 for the whole run; the
    warning of a term that does nothing skipped an empty class list."""
    from mic import ConfigError

    for settings in ({"classes": []}, {"min_ratio": 2.0}, {"min_ratio": -0.1}):
        with pytest.raises(ConfigError, match=r"feature distance: classes must name at least"):
            FeatureDistance(**settings)
    assert FeatureDistance(classes=None, min_ratio=1.0).classes is None
