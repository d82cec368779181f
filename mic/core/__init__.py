"""mic.core: the contract and the loop, knowing no task and importing nothing else of mic.

Read in this order: ``task`` (what a task says), ``teacher``, ``streams`` (each term's random
draws), ``masking``, ``weighting``, ``context`` (what the terms of an iteration share),
``terms`` (loss terms, MIC), ``method``, ``batch`` (the endless loaders), ``loop``; ``errors``
are mic's exceptions. ``checks`` holds what they refuse of their inputs, each refusal with
the message that names the fix (a check of a line or two stays where its input arrives);
reading them needs none of it.
"""

from mic.core.batch import EndlessLoader, collate_pairs, move_to, split_sample
from mic.core.checks import check_num_classes, check_task
from mic.core.context import IterationContext, SharedForward
from mic.core.errors import CheckpointError, ConfigError, DatasetError, MicError
from mic.core.loop import AdaptationLoop, Collective, Guard, Hook, StepStrategy
from mic.core.masking import BlockMasker, Masker
from mic.core.method import UDAMethod
from mic.core.streams import Random, RandomStream
from mic.core.task import Metric, PseudoLabels, Task
from mic.core.teacher import EMATeacher, Teacher
from mic.core.terms import ConsistencyLoss, LossTerm, MaskedImageConsistency
from mic.core.weighting import QUALITY_THRESHOLD, PseudoLabelWeighting

__all__ = [
    "QUALITY_THRESHOLD",
    "AdaptationLoop",
    "BlockMasker",
    "CheckpointError",
    "Collective",
    "ConfigError",
    "ConsistencyLoss",
    "DatasetError",
    "EMATeacher",
    "EndlessLoader",
    "Guard",
    "Hook",
    "IterationContext",
    "LossTerm",
    "MaskedImageConsistency",
    "Masker",
    "Metric",
    "MicError",
    "PseudoLabelWeighting",
    "PseudoLabels",
    "Random",
    "RandomStream",
    "SharedForward",
    "StepStrategy",
    "Task",
    "Teacher",
    "UDAMethod",
    "check_num_classes",
    "check_task",
    "collate_pairs",
    "move_to",
    "split_sample",
]
