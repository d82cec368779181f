"""DANN, CDAN (+E), MCC and SDAT's parts: the pieces against hand computations, and every
method with and without MIC through the loop."""

import math
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from mic import AdaptationLoop, ConfigError, EMATeacher
from mic.core import IterationContext
from mic.experiment import build_method, load_config
from mic.tasks.classification import (
    Classifier,
    ConditionalDomainAdversarial,
    DomainAdversarial,
    GradientReversalRamp,
    JointSourceSupervision,
    MinimumClassConfusion,
    MultilinearMap,
    RandomizedMultilinearMap,
    SharpnessAwareMinimization,
    entropy_weights,
    minimum_class_confusion,
    reverse_gradient,
)
from mic.tasks.classification.alignment import JointOutputs, joint_forward, separate_forward

from .helpers import NUM_CLASSES, tiny_loaders, tiny_model


class Ctx(IterationContext):
    """An IterationContext whose joint forward pass gave ``outputs``."""

    def __init__(self, outputs=None, step=0, adaptation_start=0, student=None, task=None):
        super().__init__(step, task, student, None, None, adaptation_start=adaptation_start)
        if outputs is not None:
            self._shared[joint_forward] = outputs


def _outputs(b=4, f=5, c=3, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    t = [torch.randn(b, n, generator=g, requires_grad=grad) for n in (c, f, c, f)]
    return JointOutputs(*t)


# --------------------------------------------------------------------- gradient reversal
@pytest.mark.parametrize("coefficient", [0.0, 0.3, 1.0])
def test_gradient_reversal_is_identity_forward_and_minus_coefficient_backward(coefficient):
    x = torch.randn(4, 6, requires_grad=True)
    y = reverse_gradient(x, coefficient)
    torch.testing.assert_close(y, x)
    upstream = torch.randn(4, 6)
    y.backward(upstream)
    torch.testing.assert_close(x.grad, -coefficient * upstream)


def test_warm_start_coefficient_schedule():
    c = GradientReversalRamp()  # published: alpha 1, max_iters 1000
    assert c(0) == 0.0
    assert c(1000) == pytest.approx(2 / (1 + math.exp(-1)) - 1)
    assert c(10**6) == pytest.approx(1.0)
    ganin = GradientReversalRamp(alpha=10, max_iters=100)
    assert ganin(50) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    scaled = GradientReversalRamp(alpha=10, max_iters=100, lo=0.1, hi=0.5)
    assert scaled(0) == pytest.approx(0.1)
    assert scaled(10**6) == pytest.approx(0.5)
    assert [c(i) for i in (1, 10, 100)] == sorted(c(i) for i in (1, 10, 100))


def test_dann_discriminator_descends_and_features_ascend_scaled_by_the_coefficient():
    term = DomainAdversarial(features_dim=5, hidden_dim=16).train()
    out = _outputs()
    step = 700
    coefficient = term.coefficient(step)
    loss = term(Ctx(out, step=step))
    loss.backward()
    got_fs, got_ft = out.source_features.grad.clone(), out.target_features.grad.clone()
    got_disc = [p.grad.clone() for p in term.discriminator.parameters()]

    # the same loss without reversal: the discriminator's gradient is the same, the
    # features' is -1 / coefficient times the reversed one
    fs = out.source_features.detach().requires_grad_()
    ft = out.target_features.detach().requires_grad_()
    term.zero_grad()
    d = term.discriminator(torch.cat([fs, ft]))
    plain = 0.5 * (
        F.binary_cross_entropy_with_logits(d[:4], torch.ones(4, 1))
        + F.binary_cross_entropy_with_logits(d[4:], torch.zeros(4, 1))
    )
    torch.testing.assert_close(loss, plain)
    plain.backward()
    torch.testing.assert_close(got_fs, -coefficient * fs.grad)
    torch.testing.assert_close(got_ft, -coefficient * ft.grad)
    for a, p in zip(got_disc, term.discriminator.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_reversal_counts_iterations_from_the_start_of_adaptation():
    term = DomainAdversarial(features_dim=5, hidden_dim=8)
    assert term.reversal(Ctx(step=200, adaptation_start=200)) == 0.0
    assert term.reversal(Ctx(step=700, adaptation_start=200)) == term.coefficient(500)


# -------------------------------------------------------------------------------- CDAN
def test_multilinear_map_is_the_flattened_outer_product():
    f, g = torch.randn(4, 5), torch.softmax(torch.randn(4, 3), 1)
    m = MultilinearMap(5, 3)
    h = m(f, g)
    assert h.shape == (4, 15) and m.output_dim == 15
    for b in range(4):
        for c in range(3):
            torch.testing.assert_close(h[b, c * 5 : (c + 1) * 5], g[b, c] * f[b])


def test_randomized_map_shape_formula_and_fixed_matrices():
    f, g = torch.randn(4, 5), torch.softmax(torch.randn(4, 3), 1)
    m = RandomizedMultilinearMap(5, 3, output_dim=32, seed=1)
    h = m(f, g)
    assert h.shape == (4, 32)
    torch.testing.assert_close(h, (f @ m.rf) * (g @ m.rg) / math.sqrt(32))
    assert {"rf", "rg"} <= set(m.state_dict())  # kept in checkpoints
    torch.testing.assert_close(RandomizedMultilinearMap(5, 3, 32, seed=1).rf, m.rf)


@pytest.mark.parametrize("randomized", [False, True])
def test_cdan_conditioning_shapes(randomized):
    term = ConditionalDomainAdversarial(
        features_dim=5, num_classes=3, randomized=randomized, randomized_dim=64, hidden_dim=16
    )
    width = 64 if randomized else 15
    assert term.discriminator.in_features == width
    assert term.discriminator[0].in_features == width
    seen = {}
    term.discriminator.register_forward_hook(lambda m, i, o: seen.update(i=i[0], o=o))
    loss = term(Ctx(_outputs(b=4, f=5, c=3), step=50))
    assert loss.shape == () and torch.isfinite(loss)
    assert seen["i"].shape == (8, width) and seen["o"].shape == (8, 1)


def test_cdan_undetached_prediction_sends_the_reversed_gradient_to_the_logits():
    """``detach_prediction=False`` (the CDAN authors' code): the same loss, and the logits get
    the gradient of ``T(f, g)`` through ``g``, reversed like the features'."""
    out, again = _outputs(b=3, f=4, c=3), _outputs(b=3, f=4, c=3)
    detached = ConditionalDomainAdversarial(4, 3, hidden_dim=8).eval()
    undetached = ConditionalDomainAdversarial(4, 3, hidden_dim=8, detach_prediction=False).eval()
    undetached.load_state_dict(detached.state_dict())
    a, b = detached(Ctx(out, step=1000)), undetached(Ctx(again, step=1000))
    torch.testing.assert_close(a, b)
    a.backward()
    b.backward()
    assert out.source_logits.grad is None
    torch.testing.assert_close(again.source_features.grad, out.source_features.grad)
    # by hand: the loss's gradient with respect to the logits, times -coefficient
    logits = torch.cat([again.source_logits, again.target_logits]).detach().requires_grad_()
    f = torch.cat([again.source_features, again.target_features]).detach()
    g = torch.softmax(logits, 1)
    d = undetached.discriminator(torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1))
    y = torch.tensor([1.0, 1, 1, 0, 0, 0]).unsqueeze(1)
    F.binary_cross_entropy_with_logits(d, y).backward()
    coefficient = undetached.coefficient(1000)
    want = -coefficient * logits.grad
    got = torch.cat([again.source_logits.grad, again.target_logits.grad])
    torch.testing.assert_close(got, want)


def test_cdan_conditions_on_detached_predictions_and_cdan_e_weights_by_entropy():
    out = _outputs(b=3, f=4, c=3)
    plain = ConditionalDomainAdversarial(4, 3, hidden_dim=8).eval()
    weighted = ConditionalDomainAdversarial(4, 3, entropy_conditioning=True, hidden_dim=8).eval()
    weighted.load_state_dict(plain.state_dict())
    loss = plain(Ctx(out, step=10))
    loss.backward()
    assert out.source_logits.grad is None and out.target_logits.grad is None
    assert out.source_features.grad is not None

    # CDAN+E by hand: weights 1 + exp(-H(p)) normalised to sum to the batch
    f = torch.cat([out.source_features, out.target_features]).detach()
    p = torch.softmax(torch.cat([out.source_logits, out.target_logits]).detach(), 1)
    h = -(p * p.log()).sum(1)
    w = 1 + torch.exp(-h)
    w = w / w.sum() * 6
    d = weighted.discriminator(torch.bmm(p.unsqueeze(2), f.unsqueeze(1)).flatten(1))
    y = torch.tensor([1.0, 1, 1, 0, 0, 0]).unsqueeze(1)
    want = (w.unsqueeze(1) * F.binary_cross_entropy_with_logits(d, y, reduction="none")).mean()
    torch.testing.assert_close(weighted(Ctx(out, step=10)), want)
    torch.testing.assert_close(entropy_weights(p), w)


def test_discriminator_width_mismatch_is_a_clear_error():
    term = DomainAdversarial(features_dim=7, hidden_dim=8)
    with pytest.raises(ConfigError, match=r"built for 7 features .* but the model gives 5"):
        term(Ctx(_outputs(f=5)))
    ctx = Ctx(_outputs(f=5))  # in the loop: the setting to give, by the term's name
    ctx.term = "dann"
    with pytest.raises(ConfigError, match=r"method\.terms\.dann\.features_dim=5$"):
        term(ctx)
    # CDAN's discriminator takes features x classes: the width to give is the features'
    ctx = Ctx(_outputs(f=5))
    ctx.term = "cdan"
    with pytest.raises(ConfigError, match=r"method\.terms\.cdan\.features_dim=5$"):
        ConditionalDomainAdversarial(features_dim=16, num_classes=3, hidden_dim=8)(ctx)


# --------------------------------------------------------------------------------- MCC
def _mcc_by_hand(logits, t):
    b, c = len(logits), len(logits[0])
    p = [[math.exp(logits[i][j] / t) for j in range(c)] for i in range(b)]
    p = [[v / sum(row) for v in row] for row in p]
    h = [-sum(v * math.log(v) for v in row) for row in p]
    w = [1 + math.exp(-x) for x in h]
    w = [b * x / sum(w) for x in w]
    conf = [[sum(w[i] * p[i][j] * p[i][k] for i in range(b)) for k in range(c)] for j in range(c)]
    conf = [[v / sum(row) for v in row] for row in conf]
    return sum(conf[j][k] for j in range(c) for k in range(c) if j != k) / c


@pytest.mark.parametrize("temperature", [1.0, 2.0, 3.0])
def test_mcc_equals_hand_computation(temperature):
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(3)) * 2
    got = minimum_class_confusion(logits, temperature)
    want = _mcc_by_hand(logits.double().tolist(), temperature)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_mcc_is_zero_for_one_hot_confident_predictions_and_default_temperature_is_2():
    logits = torch.eye(3).repeat(2, 1) * 200
    assert minimum_class_confusion(logits, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    term = MinimumClassConfusion()
    assert term.temperature == 2.0
    out = _outputs(c=3)
    torch.testing.assert_close(term(Ctx(out)), minimum_class_confusion(out.target_logits, 2.0))
    with pytest.raises(ConfigError):
        MinimumClassConfusion(temperature=0)


# ------------------------------------------------------------------- the joint forward
def test_joint_source_supervision_uses_one_forward_once_adapting():
    task, source, target, _ = tiny_loaders()
    model = tiny_model().eval()
    xs, ys = next(iter(source))
    xt = next(iter(target))
    term = JointSourceSupervision()
    ctx = Ctx(student=model, task=task, step=0, adaptation_start=1)
    ctx.source_images, ctx.source_targets, ctx.target_images = xs, ys, xt
    torch.testing.assert_close(term(ctx), F.cross_entropy(model(xs), ys))
    assert joint_forward not in ctx._shared  # before adaptation: the source alone
    ctx.adapting = True
    loss = term(ctx)
    out = joint_forward(ctx)
    assert out.target_logits.shape == (len(xt), NUM_CLASSES)
    torch.testing.assert_close(loss, F.cross_entropy(out.source_logits, ys))
    assert ctx._shared[joint_forward] is out  # computed once, later terms reuse it


def _batches():
    task, source, target, _ = tiny_loaders()
    xs, ys = next(iter(source))
    return task, xs, ys, next(iter(target)) * 3 + 1  # a target far from the source


def test_separate_forward_normalises_each_domain_with_its_own_batch_statistics():
    task, xs, ys, xt = _batches()
    model = tiny_model().train()
    calls = []
    model.register_forward_hook(lambda m, args, out: calls.append(len(args[0])))
    ctx = Ctx(student=model, task=task)
    ctx.source_images, ctx.source_targets, ctx._target_images = xs, ys, xt
    out = separate_forward(ctx)
    assert separate_forward(ctx) is out and calls == [len(xs), len(xt)]  # once per iteration
    with torch.no_grad():
        for x, logits, features in (
            (xs, out.source_logits, out.source_features),
            (xt, out.target_logits, out.target_features),
        ):
            want_logits, want_features = model(x, return_features=True)
            torch.testing.assert_close(logits, want_logits)
            torch.testing.assert_close(features, want_features)
        joint = joint_forward(ctx)  # one batch of both domains: other statistics
    assert not torch.allclose(joint.target_logits, out.target_logits, atol=1e-3)


@pytest.mark.parametrize("forward_pass", ["joint", "separate"])
def test_every_term_reads_the_forward_pass_it_is_given(forward_pass):
    shared = {"joint": joint_forward, "separate": separate_forward}[forward_pass]
    terms = [
        JointSourceSupervision(forward_pass=forward_pass),
        DomainAdversarial(features_dim=8, hidden_dim=16, forward_pass=forward_pass),
        ConditionalDomainAdversarial(8, NUM_CLASSES, hidden_dim=16, forward_pass=forward_pass),
        MinimumClassConfusion(forward_pass=forward_pass),
    ]
    task, xs, ys, xt = _batches()
    ctx = Ctx(student=tiny_model().train(), task=task)
    ctx.source_images, ctx.source_targets, ctx._target_images = xs, ys, xt
    for term in terms:
        assert term.shared_forward is shared and term.forward_pass == forward_pass
        assert torch.isfinite(term(ctx))
    assert list(ctx._shared) == [shared]  # one pass (or pair of passes) for all of them
    mcc = MinimumClassConfusion(forward_pass=forward_pass)(ctx)
    torch.testing.assert_close(mcc, minimum_class_confusion(shared(ctx).target_logits))


def test_an_unknown_forward_pass_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError, match=r"DomainAdversarial: forward_pass must be 'joint'"):
        DomainAdversarial(features_dim=8, forward_pass="split")
    with pytest.raises(ConfigError, match="or 'separate'"):
        MinimumClassConfusion(forward_pass="per_domain")


# ------------------------------------------------------- every method through the loop
METHODS = ["dann", "cdan", "cdan_e", "mcc", "sdat"]


def _method(name, mic, forward_pass="joint"):
    cfg = load_config(
        [
            f"method={name}",
            f"mic={mic}",
            f"method.forward_pass={forward_pass}",
            "model.bottleneck_dim=8",
            f"dataset.num_classes={NUM_CLASSES}",
            *(["method.terms.mic.masker.block_size=2"] if mic == "block" else []),
        ]
    )
    return cfg, build_method(cfg)


@pytest.mark.parametrize("forward_pass", ["joint", "separate"])
@pytest.mark.parametrize("mic", ["block", "none"])
@pytest.mark.parametrize("name", METHODS)
def test_every_method_with_and_without_mic_runs_loop_steps(name, mic, forward_pass):
    cfg, method = _method(name, mic, forward_pass)
    shared = {t.shared_forward for _, t in method if t.shared_forward is not None}
    assert shared == {separate_forward if forward_pass == "separate" else joint_forward}
    task, source, target, _ = tiny_loaders()
    student = tiny_model()
    teacher = EMATeacher(student, alpha=0.9) if method.uses_pseudo_labels else None
    params = list(student.parameters()) + list(method.parameters())
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    strategy = instantiate(cfg.method.step) if cfg.method.get("step") else None
    if strategy is not None:
        assert isinstance(strategy, SharpnessAwareMinimization) and strategy.rho == 0.02
    loop = AdaptationLoop(
        task,
        student,
        method,
        optimizer,
        source,
        target,
        3,
        teacher=teacher,
        adaptation_start=1,
        step_strategy=strategy,
    )
    before = [p.clone() for p in loop.student.parameters()]
    seen = []
    while loop.step < loop.iterations:
        seen.append(loop.train_step())
        loop.step += 1
    assert set(seen[0]) == {"source"}
    assert set(seen[-1]) == set(dict(method.terms.items()))
    assert ("mic" in seen[-1]) == (mic == "block")
    assert all(torch.isfinite(v) for v in seen[-1].values())
    assert any(not torch.equal(a, b) for a, b in zip(before, loop.student.parameters()))
    for name_, term in method:
        if hasattr(term, "discriminator"):  # the discriminator is trained too
            assert all(p.grad is not None for p in term.discriminator.parameters()), name_


def test_an_optimizer_without_the_discriminator_or_the_student_is_refused():
    """A discriminator left out of the optimizer would never train (a silently wrong DANN)."""
    _, method = _method("dann", "none")
    task, source, target, _ = tiny_loaders()
    student = tiny_model()
    for params, match in [
        (student.parameters(), r"does not hold 6 of the method's parameters \(terms\.dann\."),
        (method.parameters(), r"holds none of the student's parameters"),
    ]:
        optimizer = torch.optim.SGD(params, lr=0.01)
        with pytest.raises(ConfigError, match=match):
            AdaptationLoop(task, student, method, optimizer, source, target, 3)
    frozen = torch.optim.SGD(student.parameters(), lr=0.01)
    method.requires_grad_(False)  # a frozen discriminator is the user's choice
    AdaptationLoop(task, student, method, frozen, source, target, 3)
    # some of the student's trainable parameters left out: they would never change
    head = [p for n, p in student.named_parameters() if n.startswith("head")]
    assert head and len(head) < len(list(student.parameters()))
    with pytest.warns(UserWarning, match=r"does not hold \d+ trainable parameters of the student"):
        AdaptationLoop(task, student, method, torch.optim.SGD(head, 0.01), source, target, 3)
    for n, p in student.named_parameters():  # the rest frozen: a head trained alone, silently
        p.requires_grad_(n.startswith("head"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AdaptationLoop(task, student, method, torch.optim.SGD(head, 0.01), source, target, 3)


def test_a_model_without_features_is_a_clear_config_error():
    from mic.tasks.common import require_features

    require_features(tiny_model(), "DANN")  # Classifier: forward(x, return_features=...)
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(NUM_CLASSES))
    with pytest.raises(ConfigError, match=r"DANN needs the model.s features.*Sequential"):
        require_features(plain, "DANN")


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda: DomainAdversarial(features_dim=-1), "DomainAdversarial: features_dim must be"),
        (lambda: DomainAdversarial(8, hidden_dim=0), "DomainAdversarial: hidden_dim must be"),
        (lambda: ConditionalDomainAdversarial(0, 3), "features_dim must be a positive"),
        (lambda: ConditionalDomainAdversarial(8, 1), "num_classes must be a whole number >= 2"),
        (
            lambda: ConditionalDomainAdversarial(8, 3, randomized=True, randomized_dim=0),
            "randomized_dim must be",
        ),
        (lambda: GradientReversalRamp(alpha=-5), "alpha must be a finite number >= 0"),
        (lambda: GradientReversalRamp(alpha=float("nan")), "alpha must be a finite number"),
        (lambda: GradientReversalRamp(max_iters=0), "max_iters must be a positive whole"),
        (lambda: Classifier("small_cnn", 10, bottleneck_dim=-1), "model.bottleneck_dim must be"),
        (lambda: Classifier("small_cnn", 1), "num_classes (dataset.num_classes) must be"),
        (lambda: Classifier("small_cnn", 2.5), "num_classes (dataset.num_classes) must be"),
    ],
)
def test_widths_counts_and_ramps_out_of_range_are_config_errors(build, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        build()


def test_a_bottleneck_of_zero_is_no_bottleneck():
    model = Classifier("small_cnn", 10, bottleneck_dim=0)
    assert isinstance(model.bottleneck, nn.Identity)
    assert model.num_features == model.backbone.num_features
