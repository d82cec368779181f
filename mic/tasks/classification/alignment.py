"""Feature-alignment base methods for classification: DANN, CDAN (+E), MCC and SDAT's parts.

Each method is a ``LossTerm`` that owns its modules (a domain discriminator, a fixed random
map). All of them, and ``JointSourceSupervision``, read the student's outputs on the source and
target batches from one ``SharedForward``, chosen by ``forward_pass``: ``"joint"``, one pass
over both batches together (``joint_forward``, the published code: the BatchNorm layers
normalise both domains in one batch), or ``"separate"``, one pass per domain
(``separate_forward``: each domain normalised with its own batch statistics). The terms reading
one pass are back-propagated together. SDAT is CDAN + MCC trained with sharpness-aware
minimisation (``SharpnessAwareMinimization``, in ``sam.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mic.core import ConfigError, DatasetError, IterationContext, LossTerm, SharedForward
from mic.core.teacher import unwrap
from mic.functional import reverse_gradient, weighted_cross_entropy
from mic.methods import SourceSupervision
from mic.tasks.common import check_flag, check_whole, require_features


# ------------------------------------------------------------------------- gradient reversal
class GradientReversalRamp:
    """The gradient-reversal coefficient's schedule of DANN (Ganin et al., 2016):
    ``lo + (hi - lo) * (2 / (1 + exp(-alpha * i / max_iters)) - 1)`` at adaptation
    iteration ``i``: 0 at the start, rising towards ``hi``.

    Ganin et al. use alpha = 10 with ``max_iters`` the length of training; the published
    CDAN, SDAT and MIC code (and TLlib's DANN) use alpha = 1, max_iters = 1000 (the default
    here), which reaches 0.46 after 1000 iterations and 0.99 after 5300.
    """

    def __init__(
        self, alpha: float = 1.0, max_iters: int = 1000, lo: float = 0.0, hi: float = 1.0
    ) -> None:
        check_whole("GradientReversalRamp: max_iters", max_iters, what="the ramp's length")
        number = isinstance(alpha, Real) and not isinstance(alpha, bool)  # (NumPy's too)
        if not (number and math.isfinite(alpha) and alpha >= 0):
            raise ConfigError(
                f"GradientReversalRamp: alpha must be a finite number >= 0 (the ramp's "
                f"steepness; published 1), got {alpha!r}: a negative one reverses the "
                "reversal, and the features would help the discriminator"
            )
        self.alpha, self.max_iters, self.lo, self.hi = float(alpha), int(max_iters), lo, hi

    def __call__(self, i: int) -> float:
        ramp = 2.0 / (1.0 + math.exp(-self.alpha * max(i, 0) / self.max_iters)) - 1.0
        return self.lo + (self.hi - self.lo) * ramp

    def __repr__(self) -> str:
        return (
            f"GradientReversalRamp(alpha={self.alpha}, max_iters={self.max_iters}, "
            f"lo={self.lo}, hi={self.hi})"
        )


# ----------------------------------------------------------------------------- modules
#: what an adversarial term's ``features_dim`` is, for its error message
FEATURES = "the model's feature width: model.bottleneck_dim, or the backbone's without one"


class DomainDiscriminator(nn.Sequential):
    """Two hidden layers (Linear, BatchNorm, ReLU; or Linear, ReLU, Dropout 0.5 without batch
    norm) and one output logit: source (1) or target (0). The published discriminators end in
    a sigmoid; the losses here take the logit (the same loss, computed stably)."""

    def __init__(self, in_features: int, hidden_dim: int = 1024, batch_norm: bool = True):
        def block(cin: int) -> list[nn.Module]:
            if batch_norm:
                return [nn.Linear(cin, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU()]
            return [nn.Linear(cin, hidden_dim), nn.ReLU(), nn.Dropout(0.5)]

        super().__init__(*block(in_features), *block(hidden_dim), nn.Linear(hidden_dim, 1))
        self.in_features = int(in_features)


class MultilinearMap(nn.Module):
    """CDAN's conditioning ``T(f, g) = g (x) f``: the outer product of class probabilities
    (B x C) and features (B x F), flattened to B x (C * F)."""

    def __init__(self, features_dim: int, num_classes: int) -> None:
        super().__init__()
        self.output_dim = int(features_dim) * int(num_classes)

    def forward(self, f: Tensor, g: Tensor) -> Tensor:
        return torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)


class RandomizedMultilinearMap(nn.Module):
    """CDAN's randomised map for many classes: ``(f R_f) * (g R_g) / sqrt(d)`` with Gaussian
    matrices R_f (F x d) and R_g (C x d) drawn once from ``seed`` and kept (in checkpoints
    too) for the whole training."""

    def __init__(
        self, features_dim: int, num_classes: int, output_dim: int = 1024, seed: int = 0
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("rf", torch.randn(features_dim, output_dim, generator=g))
        self.register_buffer("rg", torch.randn(num_classes, output_dim, generator=g))
        self.output_dim = int(output_dim)

    def forward(self, f: Tensor, g: Tensor) -> Tensor:
        return (f @ self.rf.to(f)) * (g @ self.rg.to(g)) / math.sqrt(self.output_dim)


# ----------------------------------------------------------------------- loss functions
def entropy(p: Tensor) -> Tensor:
    """Shannon entropy (nats) of each row of probabilities (0 log 0 = 0)."""
    return torch.special.entr(p).sum(dim=1)


def entropy_weights(p: Tensor) -> Tensor:
    """CDAN+E's and MCC's example weights ``1 + exp(-H(p))``, scaled to sum to the batch
    size (confident predictions count more)."""
    w = 1.0 + torch.exp(-entropy(p))
    return w * (len(w) / w.sum())


def check_temperature(temperature: Any) -> None:
    """Raise ``ConfigError`` unless ``temperature`` is a finite number > 0 (MCC's softmax)."""
    if isinstance(temperature, bool) or not (
        isinstance(temperature, Real) and 0 < temperature < math.inf
    ):
        raise ConfigError(f"MCC's temperature must be a finite number > 0, got {temperature!r}")


def minimum_class_confusion(logits: Tensor, temperature: float = 2.0) -> Tensor:
    """MCC (Jin et al., 2020) on target logits (B x C).

    Probabilities ``P = softmax(logits / T)``; the class confusion matrix
    ``C = P^T diag(w) P`` with ``w = entropy_weights(P)`` (not differentiated); each row of
    C divided by its sum; the loss is the sum of the off-diagonal entries over the number of
    classes.

    Args:
        logits: (B, C) class scores of the target batch, B >= 1.
        temperature: T > 0 (published 2; ``MinimumClassConfusion`` gives the recipes').

    Returns:
        A 0-dim float32 tensor.

    Raises:
        ConfigError: a temperature that is no finite number > 0 (0 divides by zero: NaN), an empty
            batch (the confusion of no image is undefined).
    """
    check_temperature(temperature)
    if logits.shape[0] == 0:
        raise ConfigError("MCC got an empty batch of target logits: give at least one image")
    p = torch.softmax(logits.float() / temperature, dim=1)
    w = entropy_weights(p).detach()
    confusion = (p * w.unsqueeze(1)).t() @ p
    confusion = confusion / confusion.sum(dim=1, keepdim=True)
    return (confusion.sum() - confusion.trace()) / p.shape[1]


def domain_loss(logits: Tensor, source: bool) -> Tensor:
    """Binary cross-entropy of discriminator logits against one domain label, averaged."""
    label = torch.full_like(logits, 1.0 if source else 0.0)
    return F.binary_cross_entropy_with_logits(logits, label)


# ------------------------------------------------------------------- the joint forward
@dataclass
class JointOutputs:
    """The student's logits and bottleneck features on the source and target batches."""

    source_logits: Tensor
    source_features: Tensor
    target_logits: Tensor
    target_features: Tensor


def _check_logits(ctx: IterationContext, logits: Tensor) -> None:
    """The task's checks of the student's logits (``ClassificationTask.check_logits``: the
    class count, a shape check; ``check_not_probabilities``, at the first batch), where the
    task has them."""
    if (check := getattr(ctx.task, "check_logits", None)) is not None:
        check(logits)
    if (check := getattr(ctx.task, "check_not_probabilities", None)) is not None:
        check(logits, ctx.student)


@SharedForward
def joint_forward(ctx: IterationContext) -> JointOutputs:
    """One forward pass of the student over ``cat(source, target)`` (computed once per
    iteration; the terms that read it are back-propagated together): BatchNorm layers
    normalise the two domains with the statistics of the joint batch, as the published
    DANN / CDAN / MCC / SDAT code (TLlib) does."""
    require_features(ctx.student, "the alignment methods' forward pass")
    source, target = tuple(ctx.source_images.shape[1:]), tuple(ctx.target_images.shape[1:])
    if source != target:
        raise DatasetError(
            f"the joint forward pass concatenates the source and target batches, but their "
            f"images differ in shape (C, H, W): source {source}, target {target}; give both "
            "domains the same transforms (one dataset.size), or forward each domain alone: "
            "method.forward_pass=separate (in Python, the terms' forward_pass='separate')"
        )
    n = len(ctx.source_images)
    x = torch.cat([ctx.source_images, ctx.target_images])
    logits, features = ctx.student(x, return_features=True)
    _check_logits(ctx, logits)
    return JointOutputs(logits[:n], features[:n], logits[n:], features[n:])


@SharedForward
def separate_forward(ctx: IterationContext) -> JointOutputs:
    """Two forward passes of the student, one over the source batch and one over the target
    batch (computed once per iteration; the terms that read them are back-propagated
    together): BatchNorm layers normalise each domain with its own batch statistics, as
    pytorch-adapt's adapters do. The running statistics follow the two batches in turn."""
    require_features(ctx.student, "the alignment methods' forward pass")
    source_logits, source_features = ctx.student(ctx.source_images, return_features=True)
    target_logits, target_features = ctx.student(ctx.target_images, return_features=True)
    _check_logits(ctx, source_logits)
    return JointOutputs(source_logits, source_features, target_logits, target_features)


#: ``forward_pass`` -> the shared forward the alignment terms read
FORWARD_PASSES: dict[str, SharedForward] = {"joint": joint_forward, "separate": separate_forward}
ForwardPass = Literal["joint", "separate"]


def forward_pass_of(name: str, term: str) -> SharedForward:
    """The ``SharedForward`` named ``name`` (see ``FORWARD_PASSES``).

    Raises:
        ConfigError: an unknown name.
    """
    if name not in FORWARD_PASSES:
        raise ConfigError(
            f"{term}: forward_pass must be 'joint' (one student pass over source and target "
            f"together) or 'separate' (one per domain), got {name!r}"
        )
    return FORWARD_PASSES[name]


# -------------------------------------------------------------------------- loss terms
class JointSourceSupervision(SourceSupervision):
    """Cross-entropy on the labelled source, read from the forward pass that the alignment
    terms share once they are active (before ``adaptation_start``: ``SourceSupervision``, a
    forward pass over the source alone). The source term of every alignment method here.

    Args:
        weight: the loss weight (published 1).
        part_weights: as ``SourceSupervision`` (before ``adaptation_start``).
        forward_pass: ``"joint"`` (``joint_forward``, published) or ``"separate"``
            (``separate_forward``); the same as the method's other terms.
    """

    shared_forward: SharedForward = joint_forward

    def __init__(
        self,
        weight: float = 1.0,
        part_weights: Mapping[str, float] | None = None,
        forward_pass: ForwardPass = "joint",
    ) -> None:
        super().__init__(weight, part_weights)
        self.shared_forward = forward_pass_of(forward_pass, type(self).__name__)
        self.forward_pass = forward_pass

    def forward(self, ctx: IterationContext) -> Tensor:
        if not ctx.adapting:
            return super().forward(ctx)
        logits = self.shared_forward(ctx).source_logits
        return weighted_cross_entropy(logits, ctx.source_targets)


class _Adversarial(LossTerm):
    """A discriminator trained through gradient reversal, on the shared forward pass."""

    shared_forward: SharedForward = joint_forward

    def __init__(
        self,
        in_features: int,
        hidden_dim: int = 1024,
        batch_norm: bool = True,
        coefficient: GradientReversalRamp | None = None,
        weight: float = 1.0,
        forward_pass: ForwardPass = "joint",
    ) -> None:
        super().__init__(weight)
        name = type(self).__name__
        check_whole(f"{name}: hidden_dim", hidden_dim, what="the discriminator's width")
        self.discriminator = DomainDiscriminator(in_features, hidden_dim, batch_norm)
        self.coefficient = coefficient if coefficient is not None else GradientReversalRamp()
        self.shared_forward = forward_pass_of(forward_pass, type(self).__name__)
        self.forward_pass = forward_pass

    def reversal(self, ctx: IterationContext) -> float:
        """The gradient-reversal coefficient at this iteration (counted from the start of
        adaptation)."""
        return self.coefficient(ctx.step - ctx.adaptation_start)

    def check_width(self, expected: int, width: int, term: str = "") -> None:
        """Refuse features of a ``width`` that is not the term's ``features_dim``
        (``expected``), naming the setting to give (under the term's name in the config,
        ``term``)."""
        if width != expected:
            raise ConfigError(
                f"{type(self).__name__} was built for {expected} features (its features_dim) "
                f"but the model gives {width}; set the term's features_dim to the model's "
                "feature width (model.bottleneck_dim, or the backbone's width without one): "
                f"method.terms.{term or '<term>'}.features_dim={width}"
            )

    def check_student(self, student: nn.Module) -> None:
        """Before training: a model whose forward gives no features (``return_features``),
        or one of mic's ``Classifier``s of another feature width than the term's."""
        from mic.tasks.classification.model import Classifier

        require_features(student, type(self).__name__)
        model = unwrap(student)
        if isinstance(model, Classifier):  # (its num_features: the width it returns)
            expected = getattr(self, "features_dim", self.discriminator.in_features)
            self.check_width(expected, model.num_features)

    def discriminate(self, h: Tensor, ctx: IterationContext) -> Tensor:
        if h.shape[1] != self.discriminator.in_features:
            raise ConfigError(
                f"{type(self).__name__}: the discriminator takes {self.discriminator.in_features}"
                f" inputs but gets {h.shape[1]}"
            )
        return self.discriminator(reverse_gradient(h, self.reversal(ctx)))


class DomainAdversarial(_Adversarial):
    """DANN (Ganin et al., 2016): a domain discriminator on the bottleneck features; the
    gradient reversal makes the features domain-invariant.

    loss = weight x (BCE(D(f_s), source) + BCE(D(f_t), target)) / 2

    Args:
        features_dim: the feature width (the bottleneck's, 256 as published).
        hidden_dim: the discriminator's hidden width (published 1024).
        batch_norm: BatchNorm in the discriminator (published), else dropout.
        coefficient: the gradient-reversal schedule (default ``GradientReversalRamp()``).
        weight: the loss weight (published trade-off 1).
        forward_pass: ``"joint"`` (published) or ``"separate"`` (see ``FORWARD_PASSES``).

    Raises:
        ConfigError: a width that is no positive whole number; an unknown forward pass.
    """

    def __init__(
        self,
        features_dim: int,
        hidden_dim: int = 1024,
        batch_norm: bool = True,
        coefficient: GradientReversalRamp | None = None,
        weight: float = 1.0,
        forward_pass: ForwardPass = "joint",
    ) -> None:
        check_whole("DomainAdversarial: features_dim", features_dim, what=FEATURES)
        super().__init__(features_dim, hidden_dim, batch_norm, coefficient, weight, forward_pass)

    def forward(self, ctx: IterationContext) -> Tensor:
        out = self.shared_forward(ctx)
        f = torch.cat([out.source_features, out.target_features])
        self.check_width(self.discriminator.in_features, f.shape[1], ctx.term)
        d = self.discriminate(f, ctx)
        d_s, d_t = d.float().split([len(out.source_features), len(out.target_features)])
        return 0.5 * (domain_loss(d_s, True) + domain_loss(d_t, False))


class ConditionalDomainAdversarial(_Adversarial):
    """CDAN (Long et al., 2018): the discriminator sees the features conditioned on the class
    prediction, ``T(f, g)`` with ``g = softmax(logits)``, so the alignment is class-aware.
    CDAN+E weights each example by ``entropy_weights(g)``.

    loss = weight x mean over source and target of w_i BCE(D(T(f_i, g_i)), domain_i)

    Args:
        features_dim: the feature width (the bottleneck's, 256 as published).
        num_classes: the number of classes.
        entropy_conditioning: CDAN+E's entropy weighting.
        randomized: use ``RandomizedMultilinearMap`` (of ``randomized_dim`` outputs) instead
            of the full multilinear map of features_dim x num_classes outputs; the CDAN
            paper's choice when that product exceeds 4096. The published SDAT and MIC
            recipes use the full map (False).
        randomized_dim: the randomised map's output width (published 1024).
        seed: draws the randomised map's matrices.
        detach_prediction: True: ``g`` is not differentiated (Transfer-Learning-Library's
            CDAN, which the published SDAT and MIC code build on); False: the reversed
            gradient also reaches the classifier through ``g`` (the CDAN authors' code).
        hidden_dim, batch_norm, coefficient, weight, forward_pass: as ``DomainAdversarial``.

    Raises:
        ConfigError: a width that is no positive whole number, fewer than 2 classes; an
            unknown forward pass.
    """

    def __init__(
        self,
        features_dim: int,
        num_classes: int,
        entropy_conditioning: bool = False,
        randomized: bool = False,
        randomized_dim: int = 1024,
        hidden_dim: int = 1024,
        batch_norm: bool = True,
        coefficient: GradientReversalRamp | None = None,
        weight: float = 1.0,
        seed: int = 0,
        forward_pass: ForwardPass = "joint",
        detach_prediction: bool = True,
    ) -> None:
        check_whole("ConditionalDomainAdversarial: features_dim", features_dim, what=FEATURES)
        check_whole("ConditionalDomainAdversarial: num_classes", num_classes, 2)
        randomized = check_flag("ConditionalDomainAdversarial: randomized", randomized)
        if randomized:
            check_whole("ConditionalDomainAdversarial: randomized_dim", randomized_dim)
        conditioning: nn.Module = (
            RandomizedMultilinearMap(features_dim, num_classes, randomized_dim, seed)
            if randomized
            else MultilinearMap(features_dim, num_classes)
        )
        super().__init__(
            conditioning.output_dim, hidden_dim, batch_norm, coefficient, weight, forward_pass
        )
        self.conditioning = conditioning
        self.features_dim = int(features_dim)
        self.entropy_conditioning = bool(entropy_conditioning)
        self.num_classes = int(num_classes)
        self.detach_prediction = bool(detach_prediction)

    def forward(self, ctx: IterationContext) -> Tensor:
        out = self.shared_forward(ctx)
        f = torch.cat([out.source_features, out.target_features])
        logits = torch.cat([out.source_logits, out.target_logits])
        if logits.shape[1] != self.num_classes:
            raise ConfigError(
                f"CDAN was built for {self.num_classes} classes but the model predicts "
                f"{logits.shape[1]}; set its num_classes to the dataset's"
            )
        self.check_width(self.features_dim, f.shape[1], ctx.term)
        g = torch.softmax(logits.float(), dim=1)
        g = (g.detach() if self.detach_prediction else g).to(f.dtype)
        d = self.discriminate(self.conditioning(f, g), ctx).float()
        n_s = len(out.source_features)
        labels = torch.cat([d.new_ones(n_s, 1), d.new_zeros(len(f) - n_s, 1)])
        weights = (
            entropy_weights(g.detach().float()).unsqueeze(1) if self.entropy_conditioning else None
        )
        loss = F.binary_cross_entropy_with_logits(d, labels, weight=weights)
        return loss


class MinimumClassConfusion(LossTerm):
    """MCC (Jin et al., 2020) on the target predictions of the shared forward pass; see
    ``minimum_class_confusion``.

    Args:
        temperature: the softmax temperature (published 2.0; 3.0 for SDAT + MIC with
            ResNet-101 on VisDA-2017).
        weight: the loss weight (published trade-off 1).
        forward_pass: ``"joint"`` (published) or ``"separate"`` (see ``FORWARD_PASSES``).
    """

    shared_forward: SharedForward = joint_forward

    def __init__(
        self, temperature: float = 2.0, weight: float = 1.0, forward_pass: ForwardPass = "joint"
    ) -> None:
        super().__init__(weight)
        check_temperature(temperature)
        self.temperature = float(temperature)
        self.shared_forward = forward_pass_of(forward_pass, type(self).__name__)
        self.forward_pass = forward_pass

    def check_student(self, student: nn.Module) -> None:
        """Before training: a model whose forward gives no features (``return_features``),
        which the shared forward pass reads."""
        require_features(student, type(self).__name__)

    def forward(self, ctx: IterationContext) -> Tensor:
        logits = self.shared_forward(ctx).target_logits
        return minimum_class_confusion(logits, self.temperature)
