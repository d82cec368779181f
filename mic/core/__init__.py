"""mic.core: the task-agnostic heart of the library (no task knowledge at all)."""

from mic.core.augment import Normalization, StrongAugmentation
from mic.core.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, save_weights
from mic.core.data import DatasetWrapper, Forever, check_num_classes, collate_pairs, move_to
from mic.core.errors import CheckpointError, ConfigError, DatasetError, MicError
from mic.core.evaluation import evaluate, recalibrated_batchnorm
from mic.core.functional import weighted_cross_entropy
from mic.core.hooks import Checkpointer, Evaluation, MetricsLogger, ProgressBar
from mic.core.loop import (
    AdaptationLoop,
    Hook,
    IterationContext,
    NumericalError,
    TrainingInterrupted,
)
from mic.core.masking import BlockMasker, Masker
from mic.core.method import UDAMethod, mean_teacher, source_only
from mic.core.optim import (
    SAM,
    Constant,
    InverseDecay,
    WarmupMultiStep,
    WarmupPoly,
    lr_scheduler,
    param_groups,
)
from mic.core.sampling import ResumableSampler, SeededDataset
from mic.core.task import Metric, PseudoLabels, Task
from mic.core.teacher import EMATeacher, Teacher
from mic.core.terms import (
    ConsistencyLoss,
    LossTerm,
    MaskedImageConsistency,
    SelfTraining,
    SourceSupervision,
)
from mic.core.weighting import PseudoLabelWeighting

__all__ = [
    "SAM",
    "AdaptationLoop",
    "BlockMasker",
    "CheckpointError",
    "Checkpointer",
    "ConfigError",
    "ConsistencyLoss",
    "Constant",
    "DatasetError",
    "DatasetWrapper",
    "EMATeacher",
    "Evaluation",
    "Forever",
    "Hook",
    "InverseDecay",
    "IterationContext",
    "LossTerm",
    "MaskedImageConsistency",
    "Masker",
    "Metric",
    "MetricsLogger",
    "MicError",
    "Normalization",
    "NumericalError",
    "ProgressBar",
    "PseudoLabelWeighting",
    "PseudoLabels",
    "ResumableSampler",
    "SeededDataset",
    "SelfTraining",
    "SourceSupervision",
    "StrongAugmentation",
    "Task",
    "Teacher",
    "TrainingInterrupted",
    "UDAMethod",
    "WarmupMultiStep",
    "WarmupPoly",
    "check_num_classes",
    "collate_pairs",
    "evaluate",
    "latest_checkpoint",
    "load_checkpoint",
    "lr_scheduler",
    "mean_teacher",
    "move_to",
    "param_groups",
    "recalibrated_batchnorm",
    "save_checkpoint",
    "save_weights",
    "source_only",
    "weighted_cross_entropy",
]
