"""Sharpness-aware minimisation in the generic loop: SAM against a hand-written two-pass update,
which terms take part in the first pass, the same random draws in both passes, and terms that
share one forward pass (``SharedForward``)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mic import (
    SAM,
    AdaptationLoop,
    BlockMasker,
    ConfigError,
    EMATeacher,
    InverseDecay,
    LossTerm,
    MaskedImageConsistency,
    SharedForward,
    SourceSupervision,
    UDAMethod,
    lr_scheduler,
)
from mic.tasks.classification import SharpnessAwareMinimization

from .helpers import NUM_CLASSES, tiny_loaders


def fixed_batches():
    """The task and one source and one target batch, as loaders that repeat them."""
    task, source, target, _ = tiny_loaders()
    (xs, ys), xt = next(iter(source)), next(iter(target))
    return task, [(xs, ys)], [xt], xs, ys, xt


LR, MOMENTUM, WD, RHO = 0.1, 0.9, 1e-3, 0.05


def _sgd(params):
    return torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WD)


def _sgd_by_hand(w, d, buf):
    """One step of SGD with weight decay and Nesterov momentum, written out."""
    d = d + WD * w
    buf = d if buf is None else MOMENTUM * buf + d
    return w - LR * (d + MOMENTUM * buf), buf


def _sam_by_hand(w, first_loss, second_loss, bufs):
    """The SAM update written out: gradient of the first loss, perturbation along it, gradient
    of the second loss at the perturbed weights, the base step from the original weights."""
    g1 = torch.autograd.grad(first_loss(w), w)
    norm = torch.sqrt(sum((g**2).sum() for g in g1))
    perturbed = [(p + RHO * g / (norm + 1e-12)).detach().requires_grad_() for p, g in zip(w, g1)]
    g2 = torch.autograd.grad(second_loss(perturbed), perturbed)
    out = [_sgd_by_hand(p.detach(), g, b) for p, g, b in zip(w, g2, bufs)]
    return [p.requires_grad_() for p, _ in out], [b for _, b in out]


def test_sam_step_equals_hand_written_two_pass_update():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    w = [p.detach().clone().requires_grad_() for p in model.parameters()]

    def forward(params, inputs):
        h = torch.tanh(F.linear(inputs, params[0], params[1]))
        return F.linear(h, params[2], params[3])

    def first(params):  # e.g. the classification loss
        return F.mse_loss(forward(params, x), y)

    def second(params):  # e.g. classification + transfer losses
        out = forward(params, x)
        return F.mse_loss(out, y) + out.pow(2).mean()

    opt = SAM(_sgd(model.parameters()), rho=RHO)
    bufs = [None] * 4
    for _ in range(3):  # momentum makes later steps depend on earlier ones
        first(list(model.parameters())).backward()
        opt.first_step(zero_grad=True)
        second(list(model.parameters())).backward()
        opt.step()
        opt.zero_grad()
        w, bufs = _sam_by_hand(w, first, second, bufs)
        for a, b in zip(model.parameters(), w):
            torch.testing.assert_close(a, b)


def test_sam_keeps_the_base_optimizer_state_groups_and_schedule():
    w = nn.Parameter(torch.ones(3))
    opt = SAM(_sgd([w]), rho=RHO)
    sched = lr_scheduler(opt, InverseDecay())
    for _ in range(2):
        (w**2).sum().backward()
        opt.first_step()
        (w**2).sum().backward()
        opt.step()
        sched.step()
    assert opt.param_groups is opt.base.param_groups
    assert opt.param_groups[0]["lr"] == pytest.approx(LR * (1 + 0.002) ** -0.75)
    state = opt.state_dict()
    assert "momentum_buffer" in state["state"][0]
    other = SAM(_sgd([nn.Parameter(torch.ones(3))]), rho=RHO)
    other.load_state_dict(state)
    torch.testing.assert_close(
        other.base.state_dict()["state"][0]["momentum_buffer"],
        state["state"][0]["momentum_buffer"],
    )
    with pytest.raises(ConfigError):
        SAM(_sgd([w]), rho=-1)
    (w**2).sum().backward()
    opt.first_step(zero_grad=False)
    with pytest.raises(RuntimeError, match="twice"):
        opt.first_step()


# ---------------------------------------------------------------- SAM in the loop
class Linear(nn.Module):
    """A linear classifier on flattened images (no BatchNorm, so a hand-written functional
    copy computes exactly the same)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, NUM_CLASSES)

    def forward(self, x):
        return self.fc(x.flatten(1))


class Critic(LossTerm):
    """A term that owns a parameter (left out of SAM's first pass, like an adversary)."""

    def __init__(self):
        super().__init__()
        self.v = nn.Parameter(torch.full((NUM_CLASSES,), 0.5))

    def forward(self, ctx):
        return (ctx.student(ctx.target_images) * self.v).pow(2).mean()


def test_loop_with_sam_equals_hand_written_two_passes_and_skips_terms_in_the_first():
    task, source, target, xs, ys, xt = fixed_batches()
    torch.manual_seed(0)
    student, critic = Linear(), Critic()
    method = UDAMethod({"source": SourceSupervision(), "critic": critic})
    params = [*student.parameters(), critic.v]
    w = [p.detach().clone().requires_grad_() for p in params]
    sam = SharpnessAwareMinimization(RHO, first_pass_skips=["critic"])
    loop = AdaptationLoop(task, student, method, _sgd(params), source, target, 2, step_strategy=sam)
    losses = loop.train_step()
    assert set(losses) == {"source", "critic"}

    def source_loss(p):
        return F.cross_entropy(F.linear(xs.flatten(1), p[0], p[1]), ys)

    def critic_loss(p):
        return (F.linear(xt.flatten(1), p[0], p[1]) * p[2]).pow(2).mean()

    # first pass: the source term alone, so only the student is perturbed
    g1 = torch.autograd.grad(source_loss(w), w[:2])
    norm = torch.sqrt(sum((g**2).sum() for g in g1))
    perturbed = [(p + RHO * g / norm).detach().requires_grad_() for p, g in zip(w[:2], g1)]
    perturbed.append(w[2].detach().requires_grad_())
    g2 = torch.autograd.grad(source_loss(perturbed) + critic_loss(perturbed), perturbed)
    for p, want, g in zip(params, w, g2):
        torch.testing.assert_close(p, _sgd_by_hand(want.detach(), g, None)[0])


class CountingMasker(BlockMasker):
    def __init__(self):
        super().__init__(block_size=2, ratio=0.5)
        self.outputs = []

    def forward(self, images, generator=None):
        out = super().forward(images, generator)
        self.outputs.append(out)
        return out


def test_mic_sees_the_same_masked_image_in_both_passes_and_its_second_pass_weighting():
    task, source, target, _ = tiny_loaders()
    student = Linear()
    masker = CountingMasker()
    mic = MaskedImageConsistency(masker, weighting="prob")
    method = UDAMethod({"source": SourceSupervision(), "mic": mic})
    seen = []
    original = task.loss

    def loss(model, images, targets, weights=None, rng=None):
        seen.append(weights)
        return original(model, images, targets, weights)

    task.loss = loss
    sam = SharpnessAwareMinimization(RHO, second_pass_weighting="none")
    loop = AdaptationLoop(
        task,
        student,
        method,
        torch.optim.SGD(student.parameters(), lr=0.1),
        source,
        target,
        2,
        teacher=EMATeacher(student, 0.9),
        step_strategy=sam,
    )
    loop.train_step()
    first, second = masker.outputs
    torch.testing.assert_close(first, second)  # the same draws in both passes
    mic_weights = [w for w in seen if w is not None]
    assert len(mic_weights) == 2
    assert (mic_weights[0] < 1).all()  # the teacher's confidence
    torch.testing.assert_close(mic_weights[1], torch.ones_like(mic_weights[1]))
    assert mic.weighting.mode == "prob"  # the term's own weighting is back
    loop.step = 1
    loop.train_step()
    assert len(masker.outputs) == 4
    assert not torch.equal(masker.outputs[2], first)  # a new draw in the next iteration


def test_sam_refuses_fp16_and_names_it_cannot_skip():
    task, source, target, _ = tiny_loaders()
    student = Linear()
    method = UDAMethod({"source": SourceSupervision()})
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="fp16"):
        AdaptationLoop(
            task, student, method, opt, source, target, 1, precision="fp16",
            step_strategy=SharpnessAwareMinimization(RHO),
        )  # fmt: skip
    with pytest.raises(ConfigError, match="cdan"):
        AdaptationLoop(
            task, student, method, opt, source, target, 1,
            step_strategy=SharpnessAwareMinimization(RHO, first_pass_skips=["cdan"]),
        )  # fmt: skip


def test_one_skipped_name_given_alone_is_one_name_and_a_bad_rho_is_refused():
    assert SharpnessAwareMinimization(RHO, first_pass_skips="cdan").first_pass_skips == ("cdan",)
    for rho in (-0.1, float("nan"), "0.05"):
        with pytest.raises(ConfigError, match="SAM rho must be a finite number >= 0"):
            SharpnessAwareMinimization(rho)
    with pytest.warns(UserWarning, match=r"SAM rho=0 perturbs nothing: .*\(twice the compute\)"):
        SharpnessAwareMinimization(0)  # (trained silently at double cost)


# ------------------------------------------------------------------- shared forward passes
FORWARDS = []


@SharedForward
def target_forward(ctx):
    FORWARDS.append(ctx.step)
    return ctx.student(ctx.target_images)


class ReadsTargetForward(LossTerm):
    """A term that reads the shared forward pass of the student on the target."""

    shared_forward = target_forward

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, ctx):
        return self.scale * target_forward(ctx).pow(2).mean()


class ReadsItUndeclared(LossTerm):
    """Reads ``target_forward`` without naming it as its ``shared_forward``."""

    def forward(self, ctx):
        return target_forward(ctx).pow(2).mean()


@SharedForward
def doubled_forward(ctx):
    """A shared pass that reads another one."""
    return 2 * target_forward(ctx)


class ReadsDoubled(LossTerm):
    shared_forward = doubled_forward

    def forward(self, ctx):
        return doubled_forward(ctx).pow(2).mean()


def _one_step(terms):
    task, source, target, *_ = fixed_batches()
    student = Linear()
    loop = AdaptationLoop(
        task,
        student,
        UDAMethod(terms),
        torch.optim.SGD(student.parameters(), 0.0),
        source,
        target,
        1,
        teacher=EMATeacher(student, 0.9),
    )
    return loop.train_step()


class ReadsPseudoLabels(LossTerm):
    uses_pseudo_labels = True

    def forward(self, ctx):
        pseudo = ctx.pseudo_labels
        return ctx.task.loss(ctx.student, ctx.target_images, pseudo.labels)


def test_terms_of_two_branches_reading_one_shared_forward_are_named():
    # it ended in autograd's 'Trying to backward through the graph a second time', naming
    # no term
    with pytest.raises(
        ConfigError,
        match="loss terms 'a' and 'b' read the shared forward pass 'target_forward' in two "
        r"branches .* set shared_forward = target_forward on each term that reads it",
    ):
        _one_step({"a": ReadsTargetForward(1.0), "b": ReadsItUndeclared()})
    # one reader that does not name it, and a pass read inside another pass, train
    assert set(_one_step({"b": ReadsItUndeclared(), "s": SourceSupervision()})) == {"b", "s"}
    assert set(_one_step({"c": ReadsDoubled(), "d": ReadsDoubled()})) == {"c", "d"}
    # a term that reads the pseudo-labels before: their readers are kept apart from the
    # passes' (one name for both ended in an AttributeError of a list)
    assert set(_one_step({"p": ReadsPseudoLabels(), "a": ReadsTargetForward(1.0)})) == {"p", "a"}


def test_terms_of_a_shared_forward_run_together_with_one_forward_and_one_backward():
    task, source, target, xs, ys, xt = fixed_batches()
    student = Linear()
    order = []
    a, b = ReadsTargetForward(1.0), ReadsTargetForward(2.0)
    for name, term in (("a", a), ("b", b)):
        term.register_forward_hook(lambda *_, name=name: order.append(name))
    source_term = SourceSupervision()
    source_term.register_forward_hook(lambda *_: order.append("source"))
    method = UDAMethod({"a": a, "source": source_term, "b": b})
    loop = AdaptationLoop(
        task, student, method, torch.optim.SGD(student.parameters(), 0.0), source, target, 1
    )
    FORWARDS.clear()
    losses = loop.train_step()  # would fail on a second backward through the shared graph
    assert set(losses) == {"a", "source", "b"}
    assert FORWARDS == [0]  # one forward pass for both terms
    assert order == ["a", "b", "source"]  # b runs with a, at a's place
    grads = [p.grad.clone() for p in student.parameters()]
    student.zero_grad()
    (F.cross_entropy(student(xs), ys) + 3.0 * student(xt).pow(2).mean()).backward()
    for g, p in zip(grads, student.parameters()):
        torch.testing.assert_close(g, p.grad)


def test_sdat_s_step_defaults_to_the_published_rho_as_its_config_does():
    """Built from Python without rho, SDAT's step perturbed by 0.05 (SAM's paper) where the
    published SDAT and conf/method/sdat.yaml use 0.02."""
    import importlib.resources
    import inspect

    from omegaconf import OmegaConf

    conf = OmegaConf.create(
        (importlib.resources.files("mic.conf") / "method" / "sdat.yaml").read_text()
    )
    default = inspect.signature(SharpnessAwareMinimization).parameters["rho"].default
    assert default == conf.step.rho == 0.02
