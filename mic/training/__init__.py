"""The machinery that runs the adaptation loop: optimiser parameter groups and schedules,
checkpoints, data parallelism, resumable sampling, random-generator state, evaluation,
label-free validators for model selection, the hooks that log, evaluate and checkpoint, and
the guard (stop signals, NaN / Inf policy). It depends on ``mic.core``; the loop reaches it only
through its narrow interfaces (``Hook``, ``Collective``, ``Guard``)."""

from mic.training.checkpoint import (
    initial_weights,
    latest_checkpoint,
    load_checkpoint,
    load_initial_weights,
    save_checkpoint,
    save_weights,
)
from mic.training.distributed import (
    ProcessGroup,
    ProcessInfo,
    init_distributed,
    per_process_batch_size,
    process_info,
)
from mic.training.evaluation import evaluate, recalibrated_batchnorm
from mic.training.guard import NumericalError, StoppedAtOnce, TrainingGuard, TrainingInterrupted
from mic.training.hooks import (
    Checkpointer,
    Evaluation,
    MetricsLogger,
    OwedEvaluation,
    ProgressBar,
)
from mic.training.optim import (
    Constant,
    InverseDecay,
    WarmupMultiStep,
    WarmupPoly,
    lr_scheduler,
    param_groups,
)
from mic.training.rng import rng_state, set_rng_state
from mic.training.sampling import DatasetWrapper, ResumableSampler, SeededDataset
from mic.training.validators import (
    VALIDATORS,
    BatchNuclearNorm,
    Entropy,
    InformationMaximization,
    LabelFreeValidation,
    MaskedAgreement,
    ModelSelection,
    SoftNeighborhoodDensity,
    Validator,
    make_validators,
)

__all__ = [
    "VALIDATORS",
    "BatchNuclearNorm",
    "Checkpointer",
    "Constant",
    "DatasetWrapper",
    "Entropy",
    "Evaluation",
    "InformationMaximization",
    "InverseDecay",
    "LabelFreeValidation",
    "MaskedAgreement",
    "MetricsLogger",
    "ModelSelection",
    "NumericalError",
    "OwedEvaluation",
    "ProcessGroup",
    "ProcessInfo",
    "ProgressBar",
    "ResumableSampler",
    "SeededDataset",
    "SoftNeighborhoodDensity",
    "StoppedAtOnce",
    "TrainingGuard",
    "TrainingInterrupted",
    "Validator",
    "WarmupMultiStep",
    "WarmupPoly",
    "evaluate",
    "init_distributed",
    "initial_weights",
    "latest_checkpoint",
    "load_checkpoint",
    "load_initial_weights",
    "lr_scheduler",
    "make_validators",
    "param_groups",
    "per_process_batch_size",
    "process_info",
    "recalibrated_batchnorm",
    "rng_state",
    "save_checkpoint",
    "save_weights",
    "set_rng_state",
]
