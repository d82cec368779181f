"""The generic parts of the Task contract that detection needs, checked on a toy task:
images dropped by ``PseudoLabels.keep``, named loss parts scaled by ``part_weights``, maskers
on lists of images of different sizes, and ``IterationContext.adapting``."""

import pytest
import torch
from torch import nn

import mic
from mic.core.terms import sum_parts


class PartsTask(mic.Task):
    """Per-image regression with two named loss parts; records what the model was given."""

    num_classes = 2

    def __init__(self):
        self.seen = []

    def loss(self, model, images, targets, weights=None, rng=None):
        self.seen.append((images, targets, weights))
        out = model(images).mean((1, 2, 3))
        w = 1.0 if weights is None else weights
        return {"a": (w * (out - targets) ** 2).mean(), "b": out.abs().mean()}

    def predict(self, model, images):
        return model(images).mean((1, 2, 3))

    def pseudo_label(self, prediction):
        return mic.PseudoLabels(prediction, torch.ones_like(prediction), keep=prediction > 0)

    def metric(self):
        raise NotImplementedError


class Identity(mic.Masker):
    def forward(self, images, generator=None):
        return images


def test_sum_parts_scales_and_drops_parts_and_names_unknown_ones():
    parts = {"a": torch.tensor(2.0), "b": torch.tensor(3.0)}
    assert sum_parts(parts, None).item() == 5.0
    assert sum_parts(parts, {"b": 0.0}).item() == 2.0
    assert sum_parts(parts, {"a": 0.5}).item() == 4.0
    assert sum_parts(torch.tensor(1.5), None).item() == 1.5
    with pytest.raises(mic.ConfigError, match=r"\['c'\].*parts are \['a', 'b'\]"):
        sum_parts(parts, {"c": 0.0})
    with pytest.raises(mic.ConfigError, match="no named parts"):
        sum_parts(torch.tensor(1.0), {"a": 0.0})


def test_sum_parts_takes_a_plain_number_as_a_part_as_a_term_takes_it():
    # e.g. a box loss of 0.0 for images without objects, as a term's plain 0.0
    grad = torch.tensor(2.0, requires_grad=True)
    total = sum_parts({"a": grad, "b": 0.0, "c": 1}, {"c": 3.0})
    assert total.item() == 5.0 and total.requires_grad
    assert sum_parts({"b": 0.0}, None).item() == 0.0
    half = sum_parts({"a": torch.tensor(2.0, dtype=torch.bfloat16), "b": 0.5}, None)
    assert half.item() == 2.5
    with pytest.raises(mic.ConfigError, match="part 'b' is <class 'bool'>, not a scalar"):
        sum_parts({"a": grad, "b": True}, None)


def test_consistency_drops_images_that_keep_leaves_out():
    task = PartsTask()
    model = nn.Conv2d(3, 1, 1)
    term = mic.MaskedImageConsistency(Identity(), weighting="none", part_weights={"b": 0.0})
    images = torch.randn(4, 3, 5, 5)
    pseudo = mic.PseudoLabels(
        torch.arange(4.0), torch.ones(4), keep=torch.tensor([True, False, True, False])
    )
    loss = term.loss(model, task, images, pseudo)
    seen_images, seen_targets, seen_weights = task.seen[-1]
    assert torch.equal(seen_images, images[[0, 2]])
    assert seen_targets.tolist() == [0.0, 2.0] and seen_weights.tolist() == [1.0, 1.0]
    assert loss.requires_grad
    # no image left: a zero loss without a forward pass
    task.seen.clear()
    none = mic.PseudoLabels(torch.arange(4.0), torch.ones(4), keep=[False] * 4)
    assert term.loss(model, task, images, none).item() == 0.0 and not task.seen


def test_keep_selects_list_labels_and_list_images():
    images = [torch.zeros(3, 4, 6), torch.ones(3, 8, 5), torch.full((3, 2, 2), 2.0)]
    pseudo = mic.PseudoLabels(
        [{"i": 0}, {"i": 1}, {"i": 2}],
        [torch.ones(1), torch.ones(2), torch.ones(3)],
        keep=[True, False, True],
    )
    kept_images, kept = pseudo.kept(images)
    assert [x.shape[1] for x in kept_images] == [4, 2]
    assert [d["i"] for d in kept.labels] == [0, 2]
    assert [len(c) for c in kept.confidence] == [1, 3]


def test_masker_and_augmentation_take_images_of_different_sizes():
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 16, 24, generator=g), torch.rand(3, 32, 8, generator=g)]
    masker = mic.BlockMasker(8, 0.5, mic.StrongAugmentation(), fill=[0.5, 0.5, 0.5])
    out = masker(images, g)
    assert isinstance(out, list) and [x.shape for x in out] == [x.shape for x in images]
    assert all(((x >= -1e-5) & (x <= 1 + 1e-5)).all() for x in out)


def test_iteration_context_says_whether_the_loop_adapts():
    from tests.helpers import tiny_loaders, tiny_model

    task, source, target, _ = tiny_loaders()
    flags = []

    class Probe(mic.LossTerm):
        uses_target = False

        def forward(self, ctx):
            flags.append(ctx.adapting)
            return ctx.task.loss(ctx.student, ctx.source_images, ctx.source_targets)

    model = tiny_model()
    loop = mic.AdaptationLoop(
        task,
        model,
        mic.UDAMethod({"probe": Probe()}),
        torch.optim.SGD(model.parameters(), 0.01),
        source,
        target,
        iterations=3,
        adaptation_start=2,
    )
    loop.run()
    assert flags == [False, False, True]
