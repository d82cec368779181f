"""Label-free validators: scores of a model on unlabelled target images that stand in for the
target metric when choosing checkpoints and hyperparameters without target labels, and the
record of which evaluation each score would pick.

Every validator's score is "higher is better". The probability validators (``entropy``,
``im``, ``snd``, ``bnm``) read N x K class probabilities through the task's
``class_probabilities(prediction, samples_per_image, rng)`` (one row per image for
classification, per sampled pixel for segmentation, per detected box for detection);
``masked_agreement`` reads nothing beyond the ``Task`` contract. docs/model_selection.md says
how far each can be trusted.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import RandomSampler

from mic.core.batch import count_images, move_to, split_sample
from mic.core.checks import check_loader, note_loader
from mic.core.errors import ConfigError, DatasetError, is_whole
from mic.core.masking import BlockMasker, Masker
from mic.core.streams import RandomStream, stream_seed
from mic.core.task import PseudoLabels, Task
from mic.core.teacher import unwrap
from mic.training.evaluation import batch_of_one_named, fresh_metric, primary_score, restored
from mic.training.guard import all_finite
from mic.training.rng import rng_state, set_rng_state


def entropy(p: Tensor) -> Tensor:
    """Shannon entropy in nats of each row of probabilities (..., K): -sum_k p_k log p_k,
    with 0 log 0 = 0."""
    return -torch.special.xlogy(p, p).sum(-1)


@dataclass
class TargetOutputs:
    """What validators read about one batch of target images.

    Attributes:
        task: the task the model is scored through.
        probabilities: N x K float32 class probabilities, rows summing to 1 (None when no
            validator reads them).
        masked: the model's prediction on the masked images (``Task.predict``'s form), or None.
        reference: the reference model's pseudo-labels of the unmasked images, or None.
        checked: ``probabilities`` were found to be probabilities already (so validators do
            not check them again; ``LabelFreeValidation.score`` sets it).
    """

    task: Task
    probabilities: Tensor | None = None
    masked: Any = None
    reference: PseudoLabels | None = None
    checked: bool = False


class Validator(ABC):
    """A label-free score of a model on unlabelled target batches; higher is better.

    At each evaluation: ``start(task, device)``, ``update(outputs)`` for every batch, then
    ``compute()``.
    """

    #: the name in configs (``eval.validators``, ``checkpoint.best_by``) and records
    name: ClassVar[str]
    #: whether ``update`` reads ``TargetOutputs.probabilities``
    needs_probabilities: ClassVar[bool] = False
    #: whether ``update`` reads ``TargetOutputs.masked`` and ``reference``
    needs_masked: ClassVar[bool] = False

    def start(self, task: Task, device: torch.device) -> None:  # noqa: B027 (optional)
        """Forget the previous evaluation."""

    @abstractmethod
    def update(self, outputs: TargetOutputs) -> None:
        """Take one batch's outputs."""

    @abstractmethod
    def compute(self) -> float:
        """The score of the batches seen since ``start`` (NaN when it is undefined, e.g. a
        detector that found no box)."""


class ProbabilityValidator(Validator):
    """A validator whose score is one formula of the class probabilities of every scored
    element at once (``score``)."""

    needs_probabilities = True

    def __init__(self) -> None:
        self._rows: list[Tensor] = []

    def start(self, task: Task, device: torch.device) -> None:
        self._rows = []

    def update(self, outputs: TargetOutputs) -> None:
        """Keep ``outputs.probabilities`` (N x K float, rows non-negative summing to 1).

        Raises:
            ConfigError: they are no such tensor (logits, a (N,) vector, integer percentages).
        """
        p = outputs.probabilities
        if p is not None:
            said = f"validator {self.name!r} was given"
            self._rows.append((p if outputs.checked else _probabilities(p, said)).float())

    def compute(self) -> float:
        """The score, NaN for fewer than 2 rows or probabilities that are not all finite (a
        model with NaN weights: the formula would be undefined, or fail, as an SVD does)."""
        rows = torch.cat(self._rows) if self._rows else torch.zeros(0, 1)
        defined = len(rows) > 1 and bool(torch.isfinite(rows).all())
        return float(self.score(rows)) if defined else math.nan

    @abstractmethod
    def score(self, p: Tensor) -> Tensor:
        """The formula on N x K probabilities (N >= 2); a 0-d tensor."""


class Entropy(ProbabilityValidator):
    """Prediction entropy: score = -(1/N) sum_i H(p_i), H(p) = -sum_k p_k log p_k (nats).

    Confident predictions score high. Source: Morerio, Cavazza and Murino, "Minimal-entropy
    correlation alignment for unsupervised deep domain adaptation", ICLR 2018 (the target
    entropy as the criterion for choosing hyperparameters); pytorch-adapt's
    ``EntropyValidator`` computes the same.
    """

    name = "entropy"

    def score(self, p: Tensor) -> Tensor:
        return -entropy(p).mean()


class InformationMaximization(ProbabilityValidator):
    """Information maximisation (IM): score = H(p_mean) - (1/N) sum_i H(p_i), with p_mean
    the mean of the N rows: confident elements (low entropy each) whose classes are spread
    evenly (high entropy of the mean prediction) score high.

    Source: Gomes, Krause and Perona, "Discriminative clustering by regularized information
    maximization", NeurIPS 2010 (the objective); as a validator, Musgrave, Belongie and Lim,
    "Benchmarking validation methods for unsupervised domain adaptation", 2022
    (pytorch-adapt's ``IMValidator``, the sum of its entropy and diversity validators).
    """

    name = "im"

    def score(self, p: Tensor) -> Tensor:
        return entropy(p.mean(0)) - entropy(p).mean()


class SoftNeighborhoodDensity(ProbabilityValidator):
    """Soft neighbourhood density (SND): with q_i = p_i / ||p_i|| and the cosine similarities
    s_ij = q_i . q_j to every other element j != i, a_i = softmax_j(s_ij / T) and
    score = (1/N) sum_i H(a_i): elements whose predictions have many close neighbours (dense
    clusters) score high. Its maximum, log(N - 1), is reached whenever all predictions are
    alike: uniform ones (an untrained model) and one class everywhere (a collapsed model)
    score it alike, so it only compares models that are neither (docs/model_selection.md).

    The N x N similarities are computed ``chunk`` rows at a time. Source: Saito, Kim,
    Teterwak, Sclaroff, Darrell and Saenko, "Tune it the right way: unsupervised validation
    of domain adaptation via soft neighborhood density", ICCV 2021 (on softmax outputs, as
    pytorch-adapt's ``SNDValidator``).

    Args:
        temperature: T (published 0.05).
        chunk: rows of the similarity matrix computed at once (memory: chunk x N floats).

    Raises:
        ConfigError: a temperature <= 0.

    Warns:
        UserWarning: (once) more than ``large`` elements, whose N^2 pairs take minutes.
    """

    name = "snd"
    #: elements (2^16: 4.3e9 pairs) above which the cost is warned of
    large = 65536

    def __init__(self, temperature: float = 0.05, chunk: int = 1024) -> None:
        super().__init__()
        try:  # (a NumPy number or a 0-d tensor too; not text, not a bool)
            value = math.nan if isinstance(temperature, (str, bool)) else float(temperature)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"the SND temperature must be a positive number, got {temperature!r}")
        if not is_whole(chunk, 1):  # (0 and 2.5 were taken as 1 and 2)
            raise ConfigError(f"SND's chunk must be a whole number >= 1, got {chunk!r}")
        self.temperature = value
        self.chunk = int(chunk)
        self._told = False  # of the cost

    def score(self, p: Tensor) -> Tensor:
        if len(p) > self.large and not self._told:  # a typo's zeros, or every pixel
            self._told = True
            warnings.warn(
                f"snd compares every pair of its {len(p)} scored elements ({len(p) ** 2:.2g} "
                "pairs per model at every evaluation; its time grows with the square): lower "
                "eval.validation.batches or eval.validation.samples_per_image",
                stacklevel=2,
            )
        q = torch.nn.functional.normalize(p.float(), dim=1)
        total = q.new_zeros(())
        for first in range(0, len(q), self.chunk):
            sim = q[first : first + self.chunk] @ q.T
            rows = torch.arange(len(sim), device=q.device)
            sim[rows, rows + first] = -math.inf  # no element is its own neighbour
            total = total + entropy(torch.softmax(sim / self.temperature, dim=1)).sum()
        return total / len(q)


class BatchNuclearNorm(ProbabilityValidator):
    """Batch nuclear-norm (BNM): score = ||P||_* / N, the sum of the singular values of the
    N x K matrix P of probabilities, divided by N. It grows when predictions are confident
    and spread over many classes (the rank of P approaches K).

    Source: Cui, Wang, Zhuo, Li, Huang and Tian, "Towards discriminability and diversity:
    batch nuclear-norm maximization under label insufficient situations", CVPR 2020; as a
    validator over all scored target data at once, pytorch-adapt's ``BNMValidator``.
    """

    name = "bnm"

    def score(self, p: Tensor) -> Tensor:
        return torch.linalg.matrix_norm(p.double(), ord="nuc") / len(p)


class MaskedAgreement(Validator):
    """Teacher-student agreement on the masked target (MIC's criterion): the task's primary
    metric of the model's prediction on the masked target images, scored against the
    reference's pseudo-labels of the unmasked images as if they were the ground truth.

    Classification: the share of images whose masked prediction has the pseudo-label's class
    (accuracy; mean class accuracy for a task ranked by it). Segmentation: the mIoU of the
    masked prediction against the pseudo-label map. Detection: the mAP@0.5 of the boxes
    predicted on the masked image against the pseudo-boxes (score >= the task's
    ``score_threshold``); images without a pseudo-box are left out (``PseudoLabels.keep``).
    For a task whose primary metric is lower-is-better (``Task.higher_is_better`` False, e.g.
    an error), the score is that metric negated, so that, as for every validator, higher is
    better. The reference is the run's EMA teacher, whose pseudo-labels MIC trains on; without one,
    the scored model itself (then it is the model's consistency under masking). BatchNorm
    layers normalise the masked batch with its own statistics, as MIC's training forward
    does (statistics of unmasked images would misjudge a batch that is mostly fill).

    Source: the consistency loss of Hoyer, Dai, Wang and Van Gool, "MIC: Masked image
    consistency for context-enhanced domain adaptation", CVPR 2023, turned into a score;
    this library's criterion, not a published validator.
    """

    name = "masked_agreement"
    needs_masked = True

    def __init__(self) -> None:
        self._task: Task | None = None
        self._metric: Any = None
        self._count = 0

    def start(self, task: Task, device: torch.device) -> None:
        self._task, self._metric, self._count = task, fresh_metric(task, device), 0

    def update(self, outputs: TargetOutputs) -> None:
        if outputs.reference is None or self._task is None:
            return
        masked, reference = outputs.reference.kept(outputs.masked)
        n = self._task.count(masked)
        if not n:
            return
        try:
            self._metric.update(masked, reference.labels)
        except (ValueError, TypeError, RuntimeError) as e:  # soft pseudo-labels: no targets
            if isinstance(e, torch.OutOfMemoryError):
                raise
            task, said = type(self._task).__name__, str(e).split("\n")[0]  # (tensors dumped)
            said = said if len(said) <= 200 else f"{said[:200]}..."
            raise ConfigError(
                f"the masked_agreement validator scores a prediction against the pseudo-labels "
                f"with {task}.metric(), which refused them ({type(e).__name__}: {said}): it needs "
                "pseudo-labels that are targets the metric takes (hard labels); leave it out "
                "(mic-train: eval.validators=[...] without masked_agreement)"
            ) from e
        self._count += n

    def compute(self) -> float:
        if not self._count or self._task is None:
            return math.nan
        score = primary_score(self._task, self._metric.compute())
        return score if getattr(self._task, "higher_is_better", True) else -score


#: every validator by its config name
VALIDATORS: dict[str, type[Validator]] = {
    v.name: v
    for v in (
        Entropy,
        InformationMaximization,
        SoftNeighborhoodDensity,
        BatchNuclearNorm,
        MaskedAgreement,
    )
}


def make_validators(names: Iterable[str | Validator]) -> list[Validator]:
    """Validators from their names (``VALIDATORS``' keys; objects pass through).

    Raises:
        ConfigError: an unknown name (the message lists the known ones), one given twice, or
            what is neither a name nor a ``Validator`` instance (a class, a number).
    """
    out: list[Any] = []  # (names left unknown: refused together below)
    for v in [names] if isinstance(names, str) else names:  # (one name: not its letters)
        if not isinstance(v, (str, Validator)):
            got = f"the class {v.__name__}" if isinstance(v, type) else repr(v)
            raise ConfigError(f"a validator is a name or a Validator instance, got {got}")
        out.append(VALIDATORS[v]() if isinstance(v, str) and v in VALIDATORS else v)
    unknown = [v for v in out if isinstance(v, str)]
    if unknown:  # every one at once, each with its likely name
        guesses = []
        for v in unknown:
            alike = difflib.get_close_matches(v.strip().casefold(), list(VALIDATORS), 1, 0.7)
            guesses += [(f"{v} -> " if len(unknown) > 1 else "") + alike[0]] if alike else []
        raise ConfigError(
            f"unknown validator{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))} in "
            f"eval.validators; the known validators are {', '.join(VALIDATORS)}"
            + (f". Did you mean: {', '.join(guesses)}?" if guesses else "")
        )
    seen = [v.name for v in out]
    twice = sorted({n for n in seen if seen.count(n) > 1})
    if twice:
        raise ConfigError(f"eval.validators lists {twice} more than once")
    return out


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Inside the block, draws from Python's, NumPy's and torch's global generators (e.g. a
    seeded dataset that re-seeds them per sample) leave them as they were."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode inside the block, its previous modes restored after."""
    with restored(model):
        model.eval()
        yield model


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, BatchNorm layers normalise with the statistics of the batch they
    see, as in a training forward; their running statistics are left as they were."""
    with restored(model) as norms:
        for m in norms:
            m.train()
        yield model


class LabelFreeValidation:
    """Validators computed on a fixed subset of unlabelled target batches.

    The first ``batches`` batches of ``loader`` are scored at every evaluation: give a loader
    that yields the same batches each time it is iterated (``mic-train`` passes the target
    training set with a fixed sampler seed, the batches AdaBN reads). The masks of
    ``masked_agreement`` and the pixels drawn for segmentation come from
    ``RandomStream(stream_seed(seed, "validation", what, batch))``: the same at every
    evaluation. The global random generators are left as they were, so adding validators
    changes nothing in training.

    Args:
        validators: ``Validator`` objects or names (``VALIDATORS``).
        loader: target batches (images, or ``(images, anything)``; labels are not read).
        batches: how many batches are scored (>= 1).
        samples_per_image: elements per image for tasks that predict many (segmentation:
            pixels drawn uniformly; detection: the top-scoring boxes); None: all.
        masker: what ``masked_agreement`` masks the target with (``mic-train``: the run's MIC
            masker, with its strong augmentation; default ``BlockMasker(64, 0.7)``, MIC's
            published block and ratio, without augmentation).
        seed: the seed of the masks and pixel draws.

    Raises:
        ConfigError: ``batches`` or ``samples_per_image`` below 1, an unknown validator, or
            a loader that is a one-pass iterator or a dataset (``check_loader``).
        DatasetError: a loader of length 0 (one without a length: when scoring) yields no
            batch.

    Warns:
        UserWarning: ``loader`` shuffles (its sampler is a ``RandomSampler``).
    """

    def __init__(
        self,
        validators: Sequence[Validator | str],
        loader: Iterable[Any],
        batches: int = 4,
        samples_per_image: int | None = 256,
        masker: Masker | None = None,
        seed: int = 0,
    ) -> None:
        if not is_whole(batches, 1):  # ("2" and 2.5 were read as 2; None failed in int())
            raise ConfigError(
                f"label-free validation needs at least 1 target batch "
                f"(eval.validation.batches), got {batches!r}; set it to a whole number >= 1, "
                "or switch the validators off with eval.validators=[]"
            )
        if samples_per_image is not None and not is_whole(samples_per_image, 1):
            raise ConfigError(
                "eval.validation.samples_per_image must be a whole number >= 1 (or null: every "
                f"pixel or box), got {samples_per_image!r}"
            )
        if not is_whole(seed, 0):
            raise ConfigError(
                f"LabelFreeValidation's seed must be a whole number >= 0, got {seed!r}"
            )
        self.validators = make_validators(validators)
        again = "every evaluation passes over it again"
        check_loader(loader, "LabelFreeValidation's loader", again, ConfigError)
        self.loader, self.batches = loader, int(batches)
        self._told_short = False  # warned that the loader holds fewer batches
        self._told_rows = False  # warned of a class_probabilities that samples no elements
        with contextlib.suppress(TypeError):  # (a loader without a length: when scored)
            held = len(loader)  # told before training, not at its first evaluation
            if held == 0:
                raise _no_batch(self.names)
            if held < self.batches:
                self._warn_short(held)
        if isinstance(getattr(loader, "sampler", None), RandomSampler):
            warnings.warn(
                "LabelFreeValidation's loader shuffles (a RandomSampler), so each evaluation "
                "scores other target batches and the scores of different checkpoints do not "
                "compare: give a loader that yields the same batches each time (shuffle=False)",
                stacklevel=2,
            )
        self.samples_per_image = None if samples_per_image is None else int(samples_per_image)
        self.masker = masker if masker is not None else BlockMasker(64, 0.7)
        self.seed = int(seed)

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.validators]

    @property
    def needs_reference(self) -> bool:
        """Whether a validator compares with a reference model's pseudo-labels."""
        return any(v.needs_masked for v in self.validators)

    def check(self, task: Task) -> None:
        """Raise ``ConfigError`` when ``task`` cannot give what the validators read."""
        needing = [v.name for v in self.validators if v.needs_probabilities]
        if needing and not callable(getattr(task, "class_probabilities", None)):
            raise ConfigError(
                f"the validators {needing} read class probabilities, which "
                f"{type(task).__name__} does not give: add a method class_probabilities("
                "prediction, samples_per_image, rng) returning N x K probabilities "
                "(docs/model_selection.md), or keep only masked_agreement "
                "(eval.validators=[masked_agreement])"
            )

    def _warn_short(self, held: int) -> None:
        self._told_short = True
        warnings.warn(
            f"the label-free validation scores {held} batch{'es' * (held > 1)}, not the "
            f"{self.batches} asked for (eval.validation.batches): its loader holds no more",
            stacklevel=3,
        )

    def _check_rows(self, task: Task, rows: int, images: int) -> None:
        """Warn (once) when ``class_probabilities`` gave more than ``samples_per_image``
        rows per image: it ignores the argument, and every pixel makes each evaluation slow
        (SND's time grows with the square of the rows)."""
        most = None if self.samples_per_image is None else images * self.samples_per_image
        if most is not None and rows > most and not self._told_rows:
            self._told_rows = True
            warnings.warn(
                f"{type(task).__name__}.class_probabilities returned {rows} rows for {images} "
                f"images, more than eval.validation.samples_per_image={self.samples_per_image} "
                "per image: given a number, it returns at most that many elements of each "
                "image, drawn from its rng (docs/new_task.md); every element makes each "
                "evaluation slow",
                stacklevel=3,
            )

    def _stream(self, what: str, batch: int) -> RandomStream:
        return RandomStream(stream_seed(self.seed, "validation", what, batch))

    def _images(self, device: torch.device | None) -> Iterator[tuple[int, Any]]:
        """The scored batches' images, numbered.

        Raises:
            DatasetError: the loader yields no batch.
        """
        i = -1
        try:
            for i, batch in enumerate(islice(self.loader, self.batches)):
                images, _ = split_sample(batch)
                yield i, move_to(images, device) if device is not None else images
        except DatasetError as e:  # (raised here: the caller's errors do not enter a generator)
            note_loader(e, "the label-free validation's loader: target images")
            raise
        if 0 <= i < self.batches - 1 and not self._told_short:
            self._warn_short(i + 1)
        if i < 0:
            raise _no_batch(self.names)

    @torch.no_grad()
    def check_agreement(
        self, task: Task, reference: nn.Module, device: torch.device | None = None
    ) -> None:
        """Before training, with ``masked_agreement``: score ``reference``'s prediction on the
        first scored batch against its own pseudo-labels with ``task.metric()``, as the
        validator will, so that a metric that refuses the pseudo-labels (soft ones) is named
        now rather than at the first evaluation. Draws nothing; modes restored.

        Raises:
            ConfigError: the metric refuses the pseudo-labels (``MaskedAgreement.update``).
        """
        if not any(isinstance(v, MaskedAgreement) for v in self.validators):
            return
        reference = unwrap(reference)
        with preserved_rng(), eval_mode(reference):
            for _, x in self._images(device):
                prediction = task.predict(reference, x)
                probe = MaskedAgreement()
                probe.start(
                    task, device if device is not None else next(reference.parameters()).device
                )
                pseudo = task.pseudo_label(prediction)
                probe.update(TargetOutputs(task, masked=prediction, reference=pseudo))
                return

    @torch.no_grad()
    def references(
        self, task: Task, model: nn.Module, device: torch.device | None = None
    ) -> list[PseudoLabels]:
        """The pseudo-labels of ``model`` (in eval mode) on each scored batch."""
        model = unwrap(model)  # scored in one process: no data-parallel wrapper
        with preserved_rng(), eval_mode(model):
            return [task.pseudo_label(task.predict(model, x)) for _, x in self._images(device)]

    @torch.no_grad()
    def score(
        self,
        task: Task,
        model: nn.Module,
        device: torch.device | None = None,
        references: Sequence[PseudoLabels] | None = None,
    ) -> dict[str, float]:
        """Every validator's score of ``model`` (in eval mode, BatchNorm as the caller set it).

        Args:
            task: the task the model predicts through.
            model: the scored model.
            device: where the batches go (default: the model's).
            references: pseudo-labels of a reference model per batch (``references``); None:
                ``model``'s own.

        Returns:
            ``{validator name: score}``, floats (NaN where undefined, and for every validator
            of a model whose weights hold NaN or Inf: no score may pick it).

        Raises:
            ConfigError: validators that read class probabilities, which the task does not
                give (``check``).
            DatasetError: the loader yields no batch.
        """
        self.check(task)
        model = unwrap(model)  # scored in one process: no data-parallel wrapper
        if not all_finite(list(model.parameters())):  # a step under nan_policy=ignore
            return dict.fromkeys(self.names, math.nan)
        device = device if device is not None else next(model.parameters()).device
        probabilities = any(v.needs_probabilities for v in self.validators)
        masked = any(v.needs_masked for v in self.validators)
        with preserved_rng(), eval_mode(model):
            for v in self.validators:
                v.start(task, device)
            for i, images in self._images(device):
                prediction = task.predict(model, images)
                out = TargetOutputs(task)
                if probabilities:
                    out.probabilities = _probabilities(
                        task.class_probabilities(  # type: ignore[attr-defined]
                            prediction, self.samples_per_image, self._stream("samples", i)
                        ),
                        f"{type(task).__name__}.class_probabilities returned",
                    )
                    self._check_rows(task, len(out.probabilities), count_images(images))
                    out.checked = True
                if masked:
                    view = self.masker(images, self._stream("mask", i))
                    with batch_statistics(model), batch_of_one_named(ONE_IMAGE):  # (as the
                        out.masked = task.predict(model, view)  # masked batch is in training)
                    out.reference = (
                        references[i] if references is not None else task.pseudo_label(prediction)
                    )
                for v in self.validators:
                    v.update(out)
            return {v.name: _number(v, v.compute()) for v in self.validators}


def _probabilities(p: Any, said: str) -> Tensor:
    """``p`` if it is N x K probabilities (its finite rows, of up to 4,096 evenly spread, are
    non-negative and sum to 1), else a ConfigError that begins with ``said`` ("X returned"):
    logits, sigmoid outputs or a list were scored without a word (or NaN)."""
    if not (isinstance(p, Tensor) and p.dim() == 2 and p.is_floating_point() and p.shape[1]):
        got = f"a {tuple(p.shape)} {p.dtype} tensor" if isinstance(p, Tensor) else type(p)
        raise ConfigError(f"{said} {got}: class probabilities are an N x K float tensor")
    rows = p[:: max(1, len(p) // 4096)].float()  # (every pixel of a batch: 4,096 of its rows)
    rows = rows[torch.isfinite(rows).all(dim=1)]  # (a model gone NaN: scored NaN)
    sums = rows.sum(1)
    if len(rows) and bool((rows < 0).any() | ((sums - 1).abs() > 1e-2).any()):
        raise ConfigError(
            f"{said} rows that are no probabilities (least value {rows.min().item():.3g}, "
            f"row sums {sums.min().item():.3g} to {sums.max().item():.3g}): each row is "
            "non-negative and sums to 1 (a softmax of the logits, not the logits or sigmoids)"
        )
    return p


def _number(validator: Validator, score: Any) -> float:
    """A validator's score as a float (a number of NumPy or a one-element tensor too), else a
    ConfigError: an int was never counted as a best, a tensor failed the log."""
    try:
        if not isinstance(score, (bool, str, bytes)):
            return float(score)
    except (TypeError, ValueError, RuntimeError):
        pass
    raise ConfigError(
        f"validator {validator.name!r}: compute() returned {type(score).__name__} "
        f"{score!r:.60}; a validator returns its score as a number (a float)"
    )


#: masked_agreement's batch of one image (torch's ValueError before)
ONE_IMAGE = (
    "masked_agreement met a batch of 1 image, from which a BatchNorm layer cannot take the "
    "batch statistics it predicts the masked images with: give the LabelFreeValidation loader "
    "drop_last=True (as mic-train does) or batches of 2 or more images"
)


def _no_batch(names: Sequence[str]) -> DatasetError:
    return DatasetError(
        "the loader of the label-free validation (LabelFreeValidation) yields no batch, so "
        f"its validators ({', '.join(names)}) would score nothing and report NaN: give it a "
        "loader of at least one batch of target images (with drop_last=True, a dataset of at "
        "least one batch size)"
    )


def lower_is_better(task: Task) -> set[str]:
    """The labelled metric names of ``task`` ranked lower-is-better: its ``primary_metric``
    when ``Task.higher_is_better`` is False, else none."""
    return set() if getattr(task, "higher_is_better", True) else {task.primary_metric}


def _as_float(value: Any) -> Any:
    """A score of a number's kind other than float (an int, a 0-d tensor, NumPy's) as a
    float; anything else as it is."""
    if isinstance(value, (bool, float)):
        return value
    try:
        return (
            float(value) if isinstance(value, (int, Tensor)) or hasattr(value, "dtype") else value
        )
    except (TypeError, ValueError, RuntimeError):  # (a tensor of several values)
        return value


def _finite(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value)


class ModelSelection:
    """Which evaluation each score would pick.

    For every score of the evaluation records, label-free (``validator/<model>/<name>``) or
    labelled (``eval/<model>/<metric>``), the best so far (the highest, or the lowest for a
    labelled metric named in ``lower_is_better``; NaN never counts), with its step and the
    labelled target metrics of the same model at that step; and each model's last
    evaluation. ``Checkpointer`` keeps one, saves ``best.pt`` when its ``best_metric``
    improves, and carries its state in every checkpoint, so a resumed run keeps the record.

    Args:
        lower_is_better: names of labelled metrics for which a lower value is better (e.g.
            an error), as ``<name>`` or as the record key ``eval/<model>/<name>``; one name
            may be given as text; ``for_task`` sets it from a task.
    """

    def __init__(self, lower_is_better: Iterable[str] | str = ()) -> None:
        self.best: dict[str, dict[str, Any]] = {}
        self.last: dict[str, dict[str, Any]] = {}
        #: every score key met, finite or not, in the order first met (holds ``best``'s
        #: keys), with the step of its first record (None: of a checkpoint that kept no step)
        self.seen: dict[str, int | None] = {}
        names = [lower_is_better] if isinstance(lower_is_better, str) else lower_is_better
        # (eval/student/err as err: it was compared with the name's last part alone)
        self.lower_is_better = {str(n).rsplit("/", 1)[-1] for n in names}
        self._run: str | None = None  # the run folder of the records that name a checkpoint
        self._warned_runs = False

    @classmethod
    def for_task(cls, task: Task) -> ModelSelection:
        """A selection that ranks ``task``'s labelled primary metric as the task says
        (``Task.higher_is_better``).

        Args:
            task: the task whose evaluation records are ranked.

        Returns:
            An empty ``ModelSelection``.
        """
        return cls(lower_is_better(task))

    def better(self, key: str, value: float, than: float) -> bool:
        """Whether ``value`` of the record key ``key`` beats ``than``.

        Args:
            key: ``eval/<model>/<metric>`` or ``validator/<model>/<name>``.
            value, than: two finite scores of that key.

        Returns:
            True when ``value`` is strictly better.
        """
        parts = key.split("/")
        if parts[0] == "eval" and parts[-1] in self.lower_is_better:
            return value < than
        return value > than

    @staticmethod
    def _metrics(record: Mapping[str, Any], model: str) -> dict[str, float]:
        prefix = f"eval/{model}/"
        return {
            k[len(prefix) :]: v for k, v in record.items() if k.startswith(prefix) and _finite(v)
        }

    def update(self, record: Mapping[str, Any]) -> list[str]:
        """Take an evaluation record; returns the keys whose best improved. A record that
        names its checkpoint (``score_run``'s) has it named in the picks too.

        Warns:
            UserWarning: records whose checkpoints lie in two run folders (picks name steps,
                which two runs share: give one run's records).
        """
        step = int(record.get("step", -1))
        named = str(record["checkpoint"]) if record.get("checkpoint") is not None else None
        path = Path(named).resolve() if named is not None else None
        if path is not None and path.parent.name == "checkpoints":  # (<run>/checkpoints/<file>)
            run = str(path.parent.parent)
            first = self._run or run
            if run != first and not self._warned_runs:
                self._warned_runs = True
                warnings.warn(
                    f"ModelSelection: records of two runs ('{first}' and '{run}'): its picks "
                    "name steps, which both runs have; give it one run's records, and compare "
                    "the picks of each run by their scores",
                    stacklevel=2,
                )
            self._run = first
        improved = []
        models = set()
        for key, value in record.items():
            parts = key.split("/")
            if len(parts) != 3 or parts[0] not in ("eval", "validator"):
                continue
            self.seen.setdefault(key, step)
            models.add(parts[1])  # (its last evaluation, also one of NaN scores alone)
            value = _as_float(value)  # (an int, a 0-d tensor, NumPy's: never counted before)
            if not _finite(value):
                continue
            if key not in self.best or self.better(key, value, self.best[key]["score"]):
                metrics = self._metrics(record, parts[1])
                self.best[key] = {"step": step, "score": value, "metrics": metrics}
                if named is not None:
                    self.best[key]["checkpoint"] = named
                improved.append(key)
        for model in models:
            self.last[model] = {"step": step, "metrics": self._metrics(record, model)}
            if named is not None:
                self.last[model]["checkpoint"] = named
        return improved

    def score(self, key: str) -> float | None:
        """The best score of ``key`` so far (None: never finite)."""
        entry = self.best.get(key)
        return None if entry is None else entry["score"]

    def picks(self, model: str, metric: str) -> dict[str, dict[str, Any]]:
        """For ``model``: each validator's pick, the pick of the labelled ``metric`` (the
        best possible) and the last evaluation, each as ``{"step", "score", metric}`` (the
        labelled metric at that step, when it was measured). A score that was never finite
        (NaN at every evaluation) picks nothing: its step and score are None. A score first
        recorded after the model's first evaluation (a validator added on resume) picked
        among the evaluations from then on only: its pick says so, ``"since": <step>``.

        Raises:
            ConfigError: a ``model`` or labelled ``metric`` that no record holds, where the
                records hold others (a misspelt name read as never measured).
        """
        models = sorted({k.split("/")[1] for k in self.seen})
        # (from every record met: a metric NaN throughout is known all the same; the BatchNorm
        # protocol, which a run without labels records too, is none)
        metrics = {k.split("/")[2] for k in self.seen if k.startswith(f"eval/{model}/")}
        metrics = sorted(metrics - {"protocol"})
        for what, name, known in (("model", model, models), ("metric", metric, metrics)):
            if known and name not in known:
                raise ConfigError(
                    f"ModelSelection.picks: no evaluation record scores the {what} {name!r}; "
                    f"the records hold {', '.join(known)}"
                )
        out: dict[str, dict[str, Any]] = {}
        validators = [k for k in self.seen if k.startswith(f"validator/{model}/")]
        mine = [s for k, s in self.seen.items() if k.split("/")[1] == model and s is not None]
        for key in [*validators, f"eval/{model}/{metric}"]:
            name, entry, since = key.split("/")[2], self.best.get(key), self.seen.get(key)
            if entry is not None:
                out[name] = {
                    "step": entry["step"],
                    "score": entry["score"],
                    metric: entry["metrics"].get(metric),
                }
                if "checkpoint" in entry:  # (score_run's records name it)
                    out[name]["checkpoint"] = entry["checkpoint"]
            elif key in self.seen:
                out[name] = {"step": None, "score": None, metric: None}
            if name in out and since is not None and since > min(mine):
                out[name]["since"] = since
        if model in self.last:
            last = self.last[model]
            out["last"] = {"step": last["step"], metric: last["metrics"].get(metric)}
            if "checkpoint" in last:
                out["last"]["checkpoint"] = last["checkpoint"]
        return out

    def state_dict(self) -> dict[str, Any]:
        state = {"best": self.best, "last": self.last, "seen": dict(self.seen)}
        return {**state, "run": self._run} if self._run is not None else state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = dict(state.get("best", {}))
        self.last = dict(state.get("last", {}))
        seen = state.get("seen", {})  # (a list of keys in checkpoints of before the steps)
        self.seen = {**(seen if isinstance(seen, Mapping) else dict.fromkeys(seen))}
        self.seen.update({k: None for k in self.best if k not in self.seen})
        self._run = state.get("run")  # (score_run's records: the run folder of their checkpoints)
