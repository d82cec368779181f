"""benchmarks/peers.py: pytorch-adapt's DANN, CDAN and MCC as loss terms in mic's loop, the
side-by-side harness of the digits benchmark. Checked against mic's own terms: the same losses
and gradients where the two libraries compute the same thing (DANN with one discriminator,
MCC), the same training up to ``adaptation_start`` (bitwise), and CDAN's discriminator
stepped by its own optimiser only."""

import copy
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("pytorch_adapt.hooks")
sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

from digits import METHODS
from peers import PytorchAdaptCDAN, PytorchAdaptDANN, PytorchAdaptMCC

from mic import ConfigError
from mic.experiment import build_experiment, load_config
from mic.tasks.classification import (
    DomainAdversarial,
    JointSourceSupervision,
    MinimumClassConfusion,
)

START = 3


def _experiment(method, iterations=START, seed=1, extra=()):
    overrides = [*METHODS[method], f"seed={seed}", "device=cpu", "log.progress=false", *extra]
    overrides += [f"iterations={iterations}", f"adaptation_start={START}", "eval.interval=0"]
    return build_experiment(load_config(overrides))


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("dann", []),
        ("cdan", []),
        ("mcc", []),
        # the domain loss's weight leaves the source stage as it is
        ("dann", ["method.terms.dann.weight=0.5"]),
        ("cdan", ["method.terms.cdan.weight=0.5"]),
    ],
)
@pytest.mark.filterwarnings("ignore:adaptation_start=3 is not below iterations")  # on purpose
def test_a_peer_run_equals_mics_run_bitwise_until_adaptation_starts(method, extra):
    peer = [e.replace(".weight=", ".part_weight=") for e in extra]  # (the peer's own term)
    ours, theirs = _experiment(method, extra=extra), _experiment(f"pa_{method}", extra=peer)
    ours.loop.run()
    theirs.loop.run()
    a, b = ours.loop.student.state_dict(), theirs.loop.student.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _losses_and_gradients(loop, terms, step):
    """The summed loss of ``terms`` on the loop's next batches at ``step`` and the student's
    gradients; the loaders are put back, so the next call sees the same batches."""
    positions = loop.source.state_dict(), loop.target.state_dict()
    ctx = loop.context(step)
    loop.source.load_state_dict(positions[0])
    loop.target.load_state_dict(positions[1])
    loop.student.zero_grad(set_to_none=True)
    total = sum(term(ctx) for term in terms)
    total.backward()
    grads = [p.grad.clone() for p in loop.student.parameters()]
    return total.detach(), grads


def _assert_same(ours, theirs):
    assert ours[0] == pytest.approx(theirs[0].item(), rel=1e-5)
    for g_ours, g_theirs in zip(ours[1], theirs[1], strict=True):
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-4, atol=1e-6)


class _Negated(torch.nn.Module):
    def __init__(self, module, in_features):
        super().__init__()
        self.module, self.in_features = module, in_features

    def forward(self, x):
        return -self.module(x).unsqueeze(1)


def test_pytorch_adapt_dann_equals_mics_dann_given_one_discriminator():
    exp = _experiment("pa_dann")
    peer = exp.loop.method.terms["dann"]
    assert isinstance(peer, PytorchAdaptDANN)
    width = exp.loop.student.num_features
    ours = DomainAdversarial(width, batch_norm=False, forward_pass="separate")
    # the same discriminator (no dropout, no BatchNorm), its logit negated: mic labels the
    # source 1 and the target 0, pytorch-adapt the other way round
    ours.discriminator = _Negated(copy.deepcopy(peer.discriminator), width)
    source = JointSourceSupervision(forward_pass="separate")
    step = START + 700  # a reversal coefficient of about 1/3, the same in both
    with_ours = _losses_and_gradients(exp.loop, [source, ours], step)
    with_theirs = _losses_and_gradients(exp.loop, [peer], step)
    _assert_same(with_ours, with_theirs)
    # and the discriminator descends the same domain loss in both
    d_ours = [p.grad for p in ours.discriminator.module.parameters()]
    d_theirs = [p.grad for p in peer.discriminator.parameters()]
    for a, b in zip(d_ours, d_theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_pytorch_adapt_mcc_equals_mics_mcc():
    exp = _experiment("pa_mcc")
    ours = [
        JointSourceSupervision(forward_pass="separate"),
        MinimumClassConfusion(temperature=2.0, forward_pass="separate"),
    ]
    with_ours = _losses_and_gradients(exp.loop, ours, START)
    with_theirs = _losses_and_gradients(exp.loop, [exp.loop.method.terms["mcc"]], START)
    _assert_same(with_ours, with_theirs)


@pytest.mark.parametrize(("method", "batch_norm"), [("pa_cdan", False), ("pa_cdan_bn", True)])
def test_pytorch_adapt_cdan_steps_its_discriminator_with_its_own_optimiser_only(method, batch_norm):
    exp = _experiment(method, iterations=START + 2)
    peer = exp.loop.method.terms["cdan"]
    assert isinstance(peer, PytorchAdaptCDAN)
    norms = [m for m in peer.discriminator.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert bool(norms) == batch_norm
    mics = {id(p) for g in exp.loop.optimizer.param_groups for p in g["params"]}
    assert not mics & {id(p) for p in peer.discriminator.parameters()}
    before = copy.deepcopy(peer.discriminator.state_dict())
    exp.loop.run()
    after = peer.discriminator.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(v).all() for v in exp.loop.student.state_dict().values())


@pytest.mark.parametrize(
    ("term", "kwargs", "match"),
    [
        (PytorchAdaptDANN, {"batch_norm": True}, "batch_norm"),
        (PytorchAdaptDANN, {"forward_pass": "joint"}, "forward_pass"),
        (PytorchAdaptCDAN, {"num_classes": 3, "detach_prediction": True}, "detach_prediction"),
        (PytorchAdaptCDAN, {"num_classes": 3, "randomized": True}, "randomized"),
        (PytorchAdaptCDAN, {"num_classes": 3, "optimizer": None}, "optimizer"),
    ],
)
def test_a_setting_pytorch_adapt_lacks_is_a_config_error(term, kwargs, match):
    kwargs = {"optimizer": torch.optim.Adam, **kwargs} if term is PytorchAdaptCDAN else kwargs
    with pytest.raises(ConfigError, match=match):
        term(features_dim=8, **kwargs)


def test_without_pytorch_adapt_a_peer_term_names_the_install_script(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_adapt", None)  # import pytorch_adapt fails
    monkeypatch.setitem(sys.modules, "pytorch_adapt.hooks", None)
    with pytest.raises(ConfigError, match=r"scripts/install_peers\.sh"):
        PytorchAdaptMCC()
