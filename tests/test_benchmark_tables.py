"""The arithmetic behind the benchmark tables: mean ± std cells, 95 % intervals and paired
differences."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

from common import interval95, mean_std, paired_differences


def test_mean_std_scales_and_drops_missing_values():
    assert mean_std([0.5, 0.7, None, float("nan")]) == "60.0 ± 14.1"
    assert mean_std([0.123], digits=2) == "12.30 ± 0.00"
    assert mean_std([None]) == "-"


def test_paired_differences_use_the_seeds_both_methods_scored():
    by = {
        "mic": {0: {"student": 0.9, "teacher": 0.8}, 1: {"student": 0.75, "teacher": None}},
        "base": {0: {"student": 0.8, "teacher": 0.9}, 1: {"student": 0.8, "teacher": 0.5}},
    }
    rows = paired_differences(by, [("mic", "base"), ("mic", "absent")])
    # student: +10 and -5 points over seeds 0 and 1; teacher: seed 0 alone (seed 1 unscored)
    assert rows == [
        "| mic - base | student | 2 | 2.5 ± 10.6 | 1 / 2 |",
        "| mic - base | teacher | 1 | -10.0 ± 0.0 | 0 / 1 |",
    ]


def test_interval95_is_students_t_interval_of_the_mean():
    # mean 60, std 10 (n = 3): half-width t(0.975, 2) x 10 / sqrt(3) = 4.303 x 5.774 = 24.84
    assert interval95([0.5, 0.6, 0.7]) == "[35.2, 84.8]"
    assert interval95([0.5, None]) == "-"
    by = {
        "a": {0: {"student": 0.9}, 1: {"student": 0.8}},
        "b": {0: {"student": 0.8}, 1: {"student": 0.8}},
    }
    assert paired_differences(by, [("a", "b")], ("student",), interval=True) == [
        "| a - b | student | 2 | 5.0 ± 7.1 | [-58.5, 68.5] | 1 / 2 |"
    ]
