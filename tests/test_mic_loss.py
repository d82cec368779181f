"""MaskedImageConsistency against a hand-written reference on small tensors."""

import pytest
import torch
import torch.nn.functional as F

from mic import BlockMasker, MaskedImageConsistency, Masker, PseudoLabels
from mic.tasks.classification import ClassificationTask

from .helpers import tiny_model


def reference_mic(model, images, labels, confidence, *, block, ratio, tau, mode, lam, seed):
    """MIC written out: block mask from the same noise, weighted cross-entropy, times lambda."""
    b, _, h, w = images.shape
    noise = torch.rand(
        b, 1, round(h / block), round(w / block), generator=torch.Generator().manual_seed(seed)
    )
    keep = (noise > ratio).float()
    keep = keep.repeat_interleave(block, 2).repeat_interleave(block, 3)
    logits = model(images * keep)
    log_p = logits.log_softmax(1)
    ce = -log_p[torch.arange(b), labels]
    if mode == "quality":
        weight = (confidence >= tau).float().mean() * torch.ones(b)
    elif mode == "prob":
        weight = confidence
    else:
        weight = torch.ones(b)
    return lam * (ce * weight).sum() / b


@pytest.mark.parametrize("mode", ["quality", "prob", "none"])
@pytest.mark.parametrize("lam", [1.0, 0.5])
def test_mic_loss_equals_reference(mode, lam):
    model = tiny_model().eval()
    images = torch.randn(6, 3, 8, 8)
    probs = torch.softmax(torch.randn(6, 3) * 3, 1)
    confidence, labels = probs.max(1)
    pseudo = PseudoLabels(labels=labels, confidence=confidence)
    mic = MaskedImageConsistency(
        BlockMasker(block_size=2, ratio=0.7), weighting=mode, tau=0.6, weight=lam
    )
    got = mic.loss(model, ClassificationTask(3), images, pseudo, torch.Generator().manual_seed(5))
    got = mic.weight * got  # lambda, which the loop applies to every term's loss
    want = reference_mic(
        model, images, labels, confidence, block=2, ratio=0.7, tau=0.6, mode=mode, lam=lam, seed=5
    )
    torch.testing.assert_close(got, want)


def test_mic_gradient_flows_to_the_student_only_through_the_masked_view():
    model = tiny_model().train()
    images = torch.randn(4, 3, 8, 8)
    pseudo = PseudoLabels(labels=torch.tensor([0, 1, 2, 0]), confidence=torch.ones(4))
    mic = MaskedImageConsistency(BlockMasker(block_size=2, ratio=0.5), weighting="none")
    loss = mic.loss(model, ClassificationTask(3), images, pseudo, torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())

    # the same loss with a fully withheld image sees nothing of the input (a masker of one's
    # own: BlockMasker refuses ratio 1)
    class Blind(Masker):
        def forward(self, images, rng=None):
            return torch.zeros_like(images)

    blind = MaskedImageConsistency(Blind(), weighting="none")
    model.eval()
    a = blind.loss(model, ClassificationTask(3), images, pseudo)
    b = blind.loss(model, ClassificationTask(3), torch.randn(4, 3, 8, 8), pseudo)
    torch.testing.assert_close(a, b)


def test_weighted_cross_entropy_matches_torch_for_unit_weights():
    from mic.functional import weighted_cross_entropy

    logits, targets = torch.randn(5, 4), torch.tensor([0, 3, 1, 1, 2])
    torch.testing.assert_close(
        weighted_cross_entropy(logits, targets), F.cross_entropy(logits, targets)
    )
    w = torch.tensor([1.0, 0.0, 2.0, 0.5, 1.0])
    manual = (F.cross_entropy(logits, targets, reduction="none") * w).mean()
    torch.testing.assert_close(weighted_cross_entropy(logits, targets, w), manual)


def test_weighted_cross_entropy_refuses_weights_that_would_broadcast_the_loss():
    from mic.functional import weighted_cross_entropy

    logits, targets = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    for bad in (torch.ones(4, 1), torch.ones(3)):  # N x N pairs; no fit at all
        with pytest.raises(ValueError, match=r"do not fit targets of shape \(4,\)"):
            weighted_cross_entropy(logits, targets, bad)
    # a scalar and N x 1 x 1 against N x H x W broadcast without enlarging the loss
    plain = weighted_cross_entropy(logits, targets)
    torch.testing.assert_close(
        weighted_cross_entropy(logits, targets, torch.tensor(2.0)), 2 * plain
    )
    maps, labels = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    per_image = torch.tensor([1.0, 0.0]).view(2, 1, 1)
    expected = weighted_cross_entropy(maps, labels, per_image.expand(2, 4, 4))
    torch.testing.assert_close(weighted_cross_entropy(maps, labels, per_image), expected)


def test_weighted_cross_entropy_of_an_empty_batch_is_zero_with_a_gradient():
    from mic.functional import weighted_cross_entropy

    logits = torch.randn(0, 3, requires_grad=True)
    loss = weighted_cross_entropy(logits, torch.zeros(0, dtype=torch.long), torch.ones(0))
    assert loss.item() == 0.0 and loss.requires_grad  # the mean of nothing was NaN
    loss.backward()
    assert logits.grad is not None and logits.grad.shape == (0, 3)


def test_the_loss_on_its_own_weighs_as_the_loop_when_images_are_left_out():
    """``loss()`` took q over the kept images only, the loop over all (3/3 against 3/5)."""
    from mic import EMATeacher
    from mic.core.context import IterationContext

    labels = torch.tensor([0, 1, 2, 0, 1])
    pseudo = PseudoLabels(
        labels, torch.tensor([0.99, 0.2, 0.97, 0.5, 0.999]), keep=[True, False, True, False, True]
    )

    class Kept(ClassificationTask):
        def pseudo_label(self, prediction):
            return pseudo

    model, task, images = tiny_model().eval(), Kept(3), torch.randn(5, 3, 8, 8)
    term = MaskedImageConsistency(BlockMasker(block_size=2, ratio=0.0), tau=0.9)
    ctx = IterationContext(0, task, model, (images, labels), images, EMATeacher(model))
    ctx.term = "mic"
    in_loop = term(ctx)
    assert term.statistics["q"].item() == pytest.approx(0.6)  # 3 of 5 above tau
    term.statistics = {}
    alone = term.loss(model, task, images, pseudo)
    torch.testing.assert_close(alone, in_loop)
    assert term.statistics["q"].item() == pytest.approx(0.6)  # also from a call alone
    keep = torch.tensor([0, 2, 4])
    ce = F.cross_entropy(model(images[keep]), labels[keep], reduction="sum") / 3
    torch.testing.assert_close(alone, 0.6 * ce)
