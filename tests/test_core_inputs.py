"""The loop's and the core interfaces' refusals of Python inputs that would train wrongly
without a word (a gradient-ascent clip, a loss without a gradient, logits taken as
confidences, masks of one block)."""

import re
import warnings

import pytest
import torch
from torch import nn

from mic import (
    AdaptationLoop,
    BlockMasker,
    ConfigError,
    EMATeacher,
    Hook,
    LossTerm,
    MaskedImageConsistency,
    PseudoLabels,
    SourceSupervision,
    UDAMethod,
    mean_teacher,
    source_only,
)
from mic.tasks.classification import ClassificationTask

from .helpers import tiny_loaders, tiny_model
from .test_loop import make_loop


def _loop(method, **settings):
    """make_loop's loop with ``settings`` given to AdaptationLoop as they are."""
    task, source, target, _ = tiny_loaders()
    student = tiny_model()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)
    return AdaptationLoop(task, student, method, optimizer, source, target, **settings)


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("max_grad_norm", 0.0, "max_grad_norm must be > 0"),  # no parameter would move
        ("max_grad_norm", -1.0, "max_grad_norm must be > 0"),  # the step would climb the loss
        ("max_grad_norm", float("nan"), "max_grad_norm must be > 0"),
        ("iterations", 2.7, "iterations must be an int (a whole number), got 2.7"),
        ("iterations", "10", "iterations must be an int (a whole number), got '10'"),
        ("accumulate", 2.5, "accumulate must be an int"),
        ("seed", "abc", "seed must be an int"),
        ("adaptation_start", True, "adaptation_start must be an int"),
    ],
)
def test_settings_that_would_train_wrongly_are_refused(setting, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _loop(source_only(), **{"iterations": 3, setting: value})


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA")
def test_a_cuda_device_without_cuda_is_refused_in_mic_s_words():
    with pytest.raises(ConfigError, match="device='cuda', but CUDA is not available here"):
        _loop(source_only(), iterations=2, device="cuda")


@pytest.mark.parametrize(
    "device, message",
    [
        ("nonsense", "device='nonsense', but it is no torch device: use 'cpu', 'cuda'"),
        ("cuda:01", "device='cuda:01', but it is no torch device"),  # (torch: no leading 0)
        ("meta", "device='meta', but the meta device holds no data, nothing trains there"),
    ],
)
def test_a_device_torch_cannot_train_on_is_refused_in_mic_s_words(device, message):
    """They ended in torch's RuntimeErrors: its list of every device type, or for the meta
    device "unsupported scalarType"."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        _loop(source_only(), iterations=2, device=device)


def test_a_cuda_device_this_machine_lacks_is_refused_by_the_loop_and_mic_train(monkeypatch):
    """cuda:3 on a machine of 2 GPUs ended in torch's "invalid device ordinal" when the
    student moved there."""
    from mic.experiment import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    said = "this machine has 2 CUDA devices: use 'cuda' or 'cuda:<0 ... 1>'"
    with pytest.raises(ConfigError, match=re.escape(f"device='cuda:3', but {said}")):
        _loop(source_only(), iterations=2, device="cuda:3")
    with pytest.raises(ConfigError, match=re.escape(f"device=cuda:2, but {said}".replace("'", ""))):
        resolve_device("cuda:2")
    assert resolve_device("cuda:1") == torch.device("cuda:1")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA")
def test_a_cuda_index_alone_is_the_cuda_device_it_names():
    """device=0 is torch's cuda:0; it was taken for "no device" and trained on the CPU."""
    with pytest.raises(ConfigError, match="device='0', but CUDA is not available here"):
        _loop(source_only(), iterations=2, device=0)


def test_a_switched_off_pseudo_label_term_needs_no_teacher():
    """A term of weight 0 runs no computation, so it reads no pseudo-labels; one of weight
    0.5 still needs the teacher."""
    masker = BlockMasker(2)
    off = UDAMethod(
        {"source": SourceSupervision(), "mic": MaskedImageConsistency(masker, weight=0)}
    )
    _loop(off, iterations=2).run()
    on = UDAMethod(
        {"source": SourceSupervision(), "mic": MaskedImageConsistency(masker, weight=0.5)}
    )
    with pytest.raises(ConfigError, match="the method uses pseudo-labels but no teacher"):
        _loop(on, iterations=2)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="a machine without MPS")
def test_an_mps_device_without_mps_is_refused_in_mic_s_words():
    with pytest.raises(ConfigError, match="device='mps', but MPS is not available here"):
        _loop(source_only(), iterations=2, device="mps")


def test_numpy_whole_numbers_are_whole_numbers():
    np = pytest.importorskip("numpy")
    loop = _loop(source_only(), iterations=np.int64(2), seed=np.int32(1))
    assert (loop.iterations, loop.seed) == (2, 1)


class Detached(LossTerm):
    uses_target = False

    def forward(self, ctx):
        loss = ctx.task.loss(ctx.student, ctx.source_images, ctx.source_targets)
        return loss.detach()  # a mistake: nothing trains


class NoLoss(LossTerm):
    def forward(self, ctx):
        return 0.0  # "no loss this iteration"


def test_a_loss_without_gradient_is_warned_of_once():
    method = UDAMethod({"source": SourceSupervision(), "detached": Detached()})
    loop, _ = make_loop(method, iterations=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            loop.train_step()
            loop.step += 1
    said = [str(w.message) for w in caught if "without a gradient" in str(w.message)]
    assert len(said) == 1 and "loss term 'detached'" in said[0], said
    assert "returned its loss without a gradient (" in said[0], said  # its value, not its name


class ZeroWithGradient(LossTerm):
    def forward(self, ctx):
        return ctx.student(ctx.target_images).sum() * 0  # e.g. no confident pseudo-label yet


def test_an_iteration_where_no_loss_that_is_not_0_has_a_gradient_is_refused():
    # the only non-zero loss detached (or .item()'d): the optimiser would step for ever on
    # zero gradients (and weight decay alone)
    method = UDAMethod({"source": Detached(), "zero": NoLoss(), "mic": ZeroWithGradient()})
    loop, _ = make_loop(method, iterations=3, adaptation_start=0)
    before = [p.detach().clone() for p in loop.student.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(
            ConfigError, match=r"iteration 1 that is not 0 has a gradient \(\['source'"
        ):
            loop.run()
    assert all(torch.equal(a, b) for a, b in zip(before, loop.student.parameters()))


def test_zero_losses_without_gradient_are_no_mistake():
    loop, _ = make_loop(UDAMethod({"zero": NoLoss()}), iterations=2, adaptation_start=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loop.train_step()


class LogitTask:
    """Wraps a task so that its pseudo-labels carry logits or integers as confidence."""

    def __init__(self, task, confidence):
        self.task, self.confidence = task, confidence

    def __getattr__(self, name):
        return getattr(self.task, name)

    def pseudo_label(self, prediction):
        labels = prediction.argmax(1)
        return PseudoLabels(labels, self.confidence(prediction))


@pytest.mark.parametrize(
    ("confidence", "message"),
    [
        (
            lambda logits: logits.max(1).values * 10,
            r"got torch.float32 in .*; logits\? apply softmax or sigmoid",
        ),
        (lambda logits: torch.ones(len(logits), dtype=torch.long), "got torch.int64"),
    ],
)
def test_confidences_that_are_no_probabilities_are_refused(confidence, message):
    loop, _ = make_loop(mean_teacher(None), iterations=2, adaptation_start=0)
    loop.task = LogitTask(loop.task, confidence)
    with pytest.raises(ConfigError, match=message):
        loop.train_step()


def test_keep_flags_must_count_the_images():
    with pytest.raises(ConfigError, match="keep has 2 flags for 4 images"):
        PseudoLabels(torch.zeros(4, dtype=torch.long), torch.ones(4), keep=[True, False])


def test_keep_counts_and_selects_the_images_of_dict_labels():
    # labels of a task's own kind, a dict of per-image heads (3 keys, 4 images)
    labels = {"cls": torch.arange(4), "box": torch.rand(4, 4), "id": ["a", "b", "c", "d"]}
    with pytest.raises(ConfigError, match="keep has 3 flags for 4 images"):
        PseudoLabels(labels, torch.ones(4), keep=[True, False, True])
    keep = [True, False, True, False]
    images, kept = PseudoLabels(labels, torch.ones(4) / 2, keep=keep).kept(torch.zeros(4, 2))
    assert kept.labels["cls"].tolist() == [0, 2] and kept.labels["id"] == ["a", "c"]
    assert torch.equal(kept.labels["box"], labels["box"][[0, 2]])
    assert images.shape == (2, 2) and kept.confidence.tolist() == [0.5, 0.5]


def test_a_block_as_large_as_the_image_is_warned_of():
    with pytest.warns(UserWarning, match="covers the whole 8 x 8 image"):
        BlockMasker(block_size=8)(torch.zeros(2, 3, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BlockMasker(block_size=8)(torch.zeros(2, 3, 8, 16))  # two blocks


def test_term_names_must_be_text():
    with pytest.raises(ConfigError, match="method term name 1 must be text"):
        UDAMethod({1: NoLoss()})


@pytest.mark.parametrize("module_only", [False, True])
def test_a_term_that_skips_the_module_set_up_is_named(module_only):
    # nn.Module.__init__ alone (no weight) ended in an AttributeError inside the loop
    class Forgetful(LossTerm):
        def __init__(self):  # no super().__init__()
            if module_only:
                torch.nn.Module.__init__(self)
            self.scale = 2.0

        def forward(self, ctx):
            return 0.0

    with pytest.raises(ConfigError, match=r"Forgetful.__init__ must call super\(\).__init__"):
        UDAMethod({"forgetful": Forgetful()})


class InPlaceTask(LogitTask):
    """A task whose loss changes its weights (or targets) in place."""

    def __init__(self, task, change):
        self.task, self.change = task, change

    def pseudo_label(self, prediction):
        return self.task.pseudo_label(prediction)

    def loss(self, model, images, targets, weights=None, rng=None):
        self.change(targets, weights)
        return self.task.loss(model, images, targets, weights, rng)


@pytest.mark.parametrize(
    "change",
    [
        lambda targets, weights: weights is not None and weights.mul_(0.5),  # prob: confidence
        lambda targets, weights: weights is None or targets.mul_(1),  # the pseudo-labels
    ],
    ids=["weights", "targets"],
)
def test_pseudo_labels_changed_in_place_by_one_term_are_refused_to_the_next(change):
    method = mean_teacher(None, weighting="prob").with_terms(
        mic=MaskedImageConsistency(BlockMasker(2, 0.5), weighting="prob")
    )
    loop, _ = make_loop(method, iterations=2, adaptation_start=0)
    loop.task = InPlaceTask(loop.task, change)
    with pytest.raises(
        ConfigError,
        match=r"changed in place after loss term\(s\) 'self_training' read them, and loss term "
        r"'mic' would train on the changed ones",
    ):
        loop.train_step()


def test_pseudo_labels_that_are_only_read_pass_every_term():
    method = mean_teacher(None, weighting="prob").with_terms(
        mic=MaskedImageConsistency(BlockMasker(2, 0.5), weighting="prob")
    )
    loop, _ = make_loop(method, iterations=2, adaptation_start=0)
    loop.task = InPlaceTask(loop.task, lambda targets, weights: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loop.train_step()


def test_pseudo_labels_of_another_layout_than_the_targets_are_warned_of():
    """(B, 1) pseudo-labels against (B,) source targets: a loss would broadcast them."""
    loop, _ = make_loop(mean_teacher(None), iterations=2, adaptation_start=0)
    loop.task = LogitTask(loop.task, lambda logits: logits.softmax(1).max(1, keepdim=True).values)
    loop.task.pseudo_label = lambda prediction: PseudoLabels(
        prediction.argmax(1, keepdim=True), prediction.softmax(1).max(1, keepdim=True).values
    )
    loop.task.check_targets = lambda targets: None  # (a task of one's own that checks none)
    ctx = loop.context(0)
    said = r"labels of shape \((\d+), 1\) \(the teacher's prediction: \(\1, 3\)\) where the so"
    with pytest.warns(UserWarning, match=said) as warned:
        ctx.pseudo_labels  # noqa: B018 (predicted on first use)
    assert "give the model's output and the pseudo-labels the targets' layout" in str(
        warned[0].message
    )


def test_pseudo_labels_the_task_s_loss_does_not_take_name_pseudo_label_not_a_dataset():
    """Float class indices from a Task.pseudo_label of one's own were refused by the loss's
    target check, which told of a dataset's labels."""
    loop, _ = make_loop(mean_teacher(None), iterations=2, adaptation_start=0)
    loop.task = LogitTask(loop.task, lambda logits: logits.softmax(1).max(1).values)
    loop.task.pseudo_label = lambda prediction: PseudoLabels(
        prediction.argmax(1).float(), prediction.softmax(1).max(1).values
    )
    said = "LogitTask.pseudo_label gives labels that its loss does not take as targets: "
    with pytest.raises(ConfigError, match=re.escape(said) + ".*torch.float32"):
        loop.train_step()


def test_a_loader_without_the_task_s_collate_is_warned_of():
    """A task that makes its targets in collate trained on the raw ones without a word."""
    from torch.utils.data import DataLoader, TensorDataset

    class Halved(ClassificationTask):  # its targets: the class index halved, made in collate
        def collate(self, samples):
            images, labels = super().collate(samples)
            return images, labels // 2

    task, source, target, _ = tiny_loaders()
    task = Halved(task.num_classes)
    plain = DataLoader(TensorDataset(torch.randn(8, 3, 8, 8), torch.zeros(8).long()), 4)
    student = tiny_model()
    optimizer = torch.optim.SGD(student.parameters(), 0.1)
    said = "the source loader batches with torch's default_collate, not with Halved.collate"
    with pytest.warns(UserWarning, match=said):
        AdaptationLoop(task, student, source_only(), optimizer, plain, target, 2)
    with warnings.catch_warnings():  # (each loader given collate_fn=task.collate: no word)
        warnings.simplefilter("error")
        AdaptationLoop(task, student, source_only(), optimizer, source, target, 2)


class PairMasker(BlockMasker):
    """A masker of one's own that returns the masked images with their mask."""

    def forward(self, images, rng=None):
        return super().forward(images, rng), self.mask(images, rng)


def test_a_masker_that_returns_a_pair_is_named():
    method = mean_teacher(None).with_terms(mic=MaskedImageConsistency(PairMasker(2)))
    loop, _ = make_loop(method, iterations=2, adaptation_start=0)
    with pytest.raises(
        ConfigError,
        match=r"MaskedImageConsistency.transform returned a tuple for images that are a Tensor",
    ):
        loop.train_step()


@pytest.mark.parametrize("who", ["BlockMasker", "StrongAugmentation"])
@pytest.mark.parametrize(
    ("images", "got"),
    [
        ({"rgb": torch.zeros(2, 3, 8, 8), "depth": torch.zeros(2, 1, 8, 8)}, "got dict"),
        (torch.zeros(3, 8, 8), r"got shape \(3, 8, 8\)"),
    ],
)
def test_images_that_are_no_batch_are_refused_by_the_masker_and_augmentation(who, images, got):
    from mic import StrongAugmentation

    module = BlockMasker(2) if who == "BlockMasker" else StrongAugmentation()
    with pytest.raises(ConfigError, match=f"{who} takes images as a .*{got}: for images of"):
        module(images)


class Recorder(Hook):
    pass


class Duck:
    def after_step(self, loop, losses):
        pass


@pytest.mark.parametrize(
    ("hooks", "message"),
    [
        (Recorder(), "hooks must be a list of mic.Hook instances, got a Recorder"),
        ([Recorder], "hooks must be mic.Hook instances (subclasses of it), got the class Recorder"),
        ([Recorder(), Duck()], "hooks must be mic.Hook instances (subclasses of it), got a Duck"),
    ],
)
def test_hooks_that_are_no_hook_instances_are_refused_when_the_loop_is_built(hooks, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _loop(source_only(), iterations=2, hooks=hooks)


class OldLossTask(LogitTask):
    def __init__(self, task):
        self.task = task

    def loss(self, model, images, targets):
        return self.task.loss(model, images, targets)


def test_a_task_loss_without_weights_and_rng_is_refused_when_the_loop_is_built():
    task, source, target, _ = tiny_loaders()
    student = tiny_model()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)
    with pytest.raises(ConfigError, match=r"OldLossTask.loss does not take weights= and rng="):
        AdaptationLoop(OldLossTask(task), student, source_only(), optimizer, source, target, 2)


class KeywordOnlyLoss:
    """A task whose loss takes ``weights`` and ``rng`` keyword-only: the loop passes both by
    name."""

    def __init__(self, task):
        self.task = task

    def __getattr__(self, name):
        return getattr(self.task, name)

    def loss(self, model, images, targets, *, weights=None, rng=None):
        self.seen = weights
        return self.task.loss(model, images, targets, weights=weights, rng=rng)


class MisnamedWeights(KeywordOnlyLoss):
    def loss(self, model, images, targets, weight=None, rng=None):  # a typo of weights
        return self.task.loss(model, images, targets, weight, rng=rng)


def test_a_task_loss_takes_weights_and_rng_by_name_and_a_misnamed_one_is_refused():
    task, source, target, _ = tiny_loaders()
    student = tiny_model()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)
    own = KeywordOnlyLoss(task)
    teacher = EMATeacher(student, alpha=0.9)
    AdaptationLoop(
        own, student, mean_teacher(), optimizer, source, target, 2, teacher=teacher
    ).run()
    assert isinstance(own.seen, torch.Tensor)  # the pseudo-labels' weights reached it
    with pytest.raises(
        ConfigError,
        match=r"MisnamedWeights.loss does not take weights= \(it takes weight=: a typo\?\): ",
    ):
        AdaptationLoop(MisnamedWeights(task), student, source_only(), optimizer, source, target, 2)
    # beside **kwargs the loop's weights= landed there, ignored: every pseudo-label weighed 1
    with pytest.raises(
        ConfigError, match=r"KwargsTypo.loss does not take weights= \(it takes weight=: a typo"
    ):
        AdaptationLoop(KwargsTypo(task), student, source_only(), optimizer, source, target, 2)
    AdaptationLoop(Wrapper(task), student, source_only(), optimizer, source, target, 2)
    for own in (WeightedFlag(task), RangeArgument(task)):  # names of their own, not typos
        AdaptationLoop(own, student, source_only(), optimizer, source, target, 2)


class WeightedFlag(KeywordOnlyLoss):
    def loss(self, model, images, targets, weighted=False, **kwargs):
        return self.task.loss(model, images, targets, **kwargs)


class RangeArgument(KeywordOnlyLoss):
    def loss(self, model, images, targets, range=None, **kwargs):
        return self.task.loss(model, images, targets, **kwargs)


class KwargsTypo(KeywordOnlyLoss):
    def loss(self, model, images, targets, weight=None, rng=None, **kwargs):
        return self.task.loss(model, images, targets, weight, rng=rng)


class Wrapper(KeywordOnlyLoss):
    def loss(self, *args, **kwargs):  # a task that hands every argument on
        return self.task.loss(*args, **kwargs)


class ShapeBug(LossTerm):
    def forward(self, ctx):
        return (ctx.student(ctx.source_images) @ torch.ones(1000, 2)).mean()


def test_an_error_raised_in_a_term_names_the_term_and_the_iteration():
    loop, _ = make_loop(UDAMethod({"source": SourceSupervision(), "mine": ShapeBug()}))
    with pytest.raises(RuntimeError) as error:
        loop.train_step()
    assert "(raised in loss term 'mine' at iteration 1)" in getattr(error.value, "__notes__", [])


def test_a_masker_that_masks_nothing_or_a_fractional_block_is_refused():
    from mic.augmentation import StrongAugmentation

    # the augmentation given as MIC's masker trained "MIC" with nothing masked
    with pytest.raises(ConfigError, match="which masks nothing"):
        MaskedImageConsistency(StrongAugmentation())
    with pytest.raises(ConfigError, match=r"whole number of pixels >= 1, got 8\.9"):
        BlockMasker(8.9)  # became 8 px
    with pytest.raises(ConfigError, match=r"must be an instance .* got the class Strong"):
        BlockMasker(8, augmentation=StrongAugmentation)  # failed at the first call
    assert BlockMasker(8.0).block_size == 8


def test_a_masker_that_takes_no_random_stream_is_refused_when_built():
    """A function of the images alone, or a Masker whose forward lacks rng, failed with a
    TypeError at the first adapting iteration, possibly hours into a run."""
    from mic import Masker

    class ImagesOnly(Masker):
        def forward(self, images):
            return images

    for masker, said in [(lambda x: x * 0, "<lambda>(x)"), (ImagesOnly(), "ImagesOnly(images)")]:
        with pytest.raises(ConfigError, match=rf"masker {re.escape(said)} must take \(images, rng"):
            MaskedImageConsistency(masker)
    MaskedImageConsistency(lambda images, rng=None: images)  # (what the docstring takes)
    MaskedImageConsistency(lambda *args: args[0])

    class OwnCall(Masker):  # (the loop calls __call__, not forward)
        def __call__(self, images, rng=None):
            return images

        def forward(self, images):
            return images

    MaskedImageConsistency(OwnCall())

    def erase(images):
        return images

    with pytest.raises(ConfigError, match=r"masker erase\(images\) must take"):
        MaskedImageConsistency(erase)


def test_the_teacher_s_decay_is_refused_for_a_negative_step():
    teacher = EMATeacher(nn.Linear(2, 2), alpha=0.9)
    assert (teacher.decay(0), teacher.decay(1), teacher.decay(100)) == (0.0, 0.5, 0.9)
    with pytest.raises(ConfigError, match="steps >= 0, got -1"):
        teacher.decay(-1)  # (was a ZeroDivisionError)


def test_the_loop_s_and_the_teacher_s_objects_of_the_wrong_kind_are_named():
    # a dict of terms and None ended in AttributeErrors ('dict' has no 'named_parameters')
    with pytest.raises(
        ConfigError,
        match=r"method must be a UDAMethod instance, got <class 'dict'> \(mic\.UDAMethod\(terms\)",
    ):
        _loop({"source": SourceSupervision()}, iterations=1)
    task, source, target, _ = tiny_loaders()
    student = tiny_model()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)
    with pytest.raises(ConfigError, match="task must be a Task instance, got the class"):
        AdaptationLoop(type(task), student, source_only(), optimizer, source, target, 1)
    with pytest.raises(ConfigError, match="the teacher follows a student model, got NoneType"):
        EMATeacher(None)


def test_a_batch_of_grey_and_colour_images_is_named_by_its_channels():
    """It said 'images of different sizes' for 1 x 32 x 32 beside 3 x 32 x 32."""
    from mic.core import DatasetError, collate_pairs

    grey, colour = torch.zeros(1, 8, 8), torch.zeros(3, 8, 8)
    with pytest.raises(DatasetError, match=r"images of \[1, 3\] channels .*convert\('RGB'\)"):
        collate_pairs([(grey, 0), (colour, 1)])
    with pytest.raises(DatasetError, match="images of different sizes"):
        collate_pairs([(colour, 0), (torch.zeros(3, 8, 9), 1)])


def test_a_consistency_loss_given_no_pseudo_labels_says_what_it_takes():
    # a tuple of (labels, confidence) ended in AttributeError: 'tuple' object has no
    # attribute 'kept'
    from mic.tasks.classification import ClassificationTask

    images = torch.rand(4, 3, 8, 8)
    term = MaskedImageConsistency(BlockMasker(2, 0.5))
    pseudo = (torch.zeros(4, dtype=torch.long), torch.ones(4))
    with pytest.raises(ConfigError, match=r"loss takes the teacher's PseudoLabels .* tuple"):
        term.loss(tiny_model(), ClassificationTask(3), images, pseudo)


def test_a_loader_that_is_none_or_no_iterable_is_a_config_error():
    """``target=None`` for a source-only run: a TypeError from inside the loop's loader."""
    task, source, target, _ = tiny_loaders()
    student = tiny_model()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    for name, value in (("target", None), ("source", 3)):
        loaders = {"source": source, "target": target, name: value}
        with pytest.raises(ConfigError, match=f"the {name} loader must be a DataLoader or a list"):
            AdaptationLoop(task, student, source_only(), optimizer, iterations=2, **loaders)


def test_a_scheduler_the_loop_cannot_step_is_refused_when_the_loop_is_built():
    """One built on another optimizer left the learning rate unchanged, silently;
    ReduceLROnPlateau failed after the first optimiser step (its step takes a metric)."""
    task, source, target, _ = tiny_loaders()
    student = tiny_model()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)
    other = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    for scheduler, said in [
        (torch.optim.lr_scheduler.StepLR(other, 1), "built on another optimizer than the loop's"),
        (torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer), "ReduceLROnPlateau.step(metrics"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(said)):
            AdaptationLoop(
                task, student, source_only(), optimizer, source, target, 2, scheduler=scheduler
            )


def test_a_state_without_a_teacher_starts_the_teacher_as_the_loaded_student():
    """A source-only loop's state loaded into a mean-teacher loop kept the teacher at the
    fresh student's random weights, which the EMA then averaged in; its missing scheduler
    state restarts the schedule, warned of."""
    task, source, target, _ = tiny_loaders()
    first = tiny_model(seed=0)
    optimizer = torch.optim.SGD(first.parameters(), lr=0.1)
    alone = AdaptationLoop(task, first, source_only(), optimizer, source, target, 3)
    alone.run()
    student = tiny_model(seed=1)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    teacher = EMATeacher(student, 0.9)
    loop = AdaptationLoop(
        task, student, mean_teacher(), optimizer, source, target, 6,
        teacher=teacher, scheduler=scheduler,
    )  # fmt: skip
    with pytest.warns(UserWarning, match="starts from its beginning at iteration 3"):
        loop.load_state_dict(alone.state_dict())
    loaded = first.state_dict()
    for name, value in teacher.model.state_dict().items():
        assert torch.equal(value, loaded[name]), name


def test_collate_pairs_names_labelled_and_unlabelled_samples_mixed():
    """A 1-tuple (TensorDataset(x)'s sample) beside a pair was called an image that is a
    tuple object."""
    from mic import DatasetError, collate_pairs

    image = torch.zeros(3, 4, 4)
    with pytest.raises(DatasetError, match="mixes labelled and unlabelled samples"):
        collate_pairs([(image, 1), (image,)])
    images, targets = collate_pairs([(image,), (image,)])
    assert images.shape == (2, 3, 4, 4) and targets is None


def test_seeds_and_steps_torch_cannot_take_are_refused_in_mic_s_words():
    """A RandomStream seed past 2**64 failed at its first draw with torch's overflow; a step
    of True was taken as 1."""
    from mic import RandomStream

    with pytest.raises(ConfigError, match=re.escape("must lie in [-2**63, 2**64)")):
        RandomStream(2**64 + 5)
    assert RandomStream(2**64 - 1).rand(1).shape == (1,)
    teacher = EMATeacher(tiny_model(), 0.9)
    with pytest.raises(ConfigError, match=r"must be an int >= 0 \(the iteration\), got True"):
        teacher.update(tiny_model(), True)
