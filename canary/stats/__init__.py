"""The split statistics: pure functions, objects in, objects out.

Shared by ``verify-split`` (the verifier) and by the load test's live view and
sequential stop, so both judge a split with the same code.

* :mod:`canary.stats.expectations` — :class:`Expectation`, the ``--expected`` grammar
* :mod:`canary.stats.policy` — :class:`SplitPolicy` (alpha, tolerance, confidence, gates)
* :mod:`canary.stats.split` — fixed-sample :func:`verify_group` on one table, :func:`overall`
* :mod:`canary.stats.pooling` — :func:`judge_run`: cells pooled by expectation and route,
  homogeneity gate, family-wise alpha
* :mod:`canary.stats.intervals` — simultaneous exact share intervals, exact upper bounds
* :mod:`canary.stats.planning` — :func:`plan_requests` per table, :func:`plan_run` per run
* :mod:`canary.stats.sequential` — anytime-valid :class:`SequentialSplitTest`
* :mod:`canary.stats.sequences` — the Bayes factor and confidence sequences it uses
* :mod:`canary.stats.verdicts` — the result objects (:class:`GroupVerdict`, ...)
* :mod:`canary.stats.confusion` — :func:`confusion_matrix`
"""

from .confusion import ConfusionMatrix, confusion_matrix
from .expectations import (
    ERROR,
    UNKNOWN,
    Expectation,
    expectations_by_group,
    parse_expected,
    parse_group_spec,
)
from .planning import (
    Plan,
    PlannedPool,
    RunPlan,
    cell_weights,
    plan_requests,
    plan_run,
    refute_power,
    verify_power,
)
from .policy import SplitPolicy
from .pooling import CellTable, Homogeneity, PoolVerdict, RunJudgement, judge_run
from .sequential import SequentialSplitTest
from .split import classify_counts, overall, verify_group
from .verdicts import (
    STATUS_CODES,
    Deviation,
    GroupVerdict,
    SampleRatio,
    SequentialDecision,
    SequentialShare,
    ShareEstimate,
    WrongSubset,
)

__all__ = [
    "ERROR",
    "STATUS_CODES",
    "UNKNOWN",
    "CellTable",
    "ConfusionMatrix",
    "Deviation",
    "Expectation",
    "GroupVerdict",
    "Homogeneity",
    "Plan",
    "PlannedPool",
    "PoolVerdict",
    "RunJudgement",
    "RunPlan",
    "SampleRatio",
    "SequentialDecision",
    "SequentialShare",
    "SequentialSplitTest",
    "ShareEstimate",
    "SplitPolicy",
    "WrongSubset",
    "cell_weights",
    "classify_counts",
    "confusion_matrix",
    "expectations_by_group",
    "judge_run",
    "overall",
    "parse_expected",
    "parse_group_spec",
    "plan_requests",
    "plan_run",
    "refute_power",
    "verify_group",
    "verify_power",
]
