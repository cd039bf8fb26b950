"""Split statistics for ``verify-split``: pure functions, objects in, objects out.

* :mod:`verifier.expectations` — :class:`Expectation`, :func:`parse_expected`
* :mod:`verifier.policy` — :class:`SplitPolicy` (alpha, tolerance, confidence, gates)
* :mod:`verifier.split` — fixed-sample :func:`verify_group`, :func:`overall`
* :mod:`verifier.intervals` — simultaneous share intervals, exact upper bounds
* :mod:`verifier.planning` — :func:`plan_requests` and power
* :mod:`verifier.sequential` — anytime-valid :class:`SequentialSplitTest`
* :mod:`verifier.sequences` — the Bayes factor and confidence sequences it uses
* :mod:`verifier.verdicts` — the result objects (:class:`GroupVerdict`, ...)
* :mod:`verifier.confusion` — :func:`confusion_matrix`
"""

from .confusion import ConfusionMatrix, confusion_matrix
from .expectations import ERROR, UNKNOWN, Expectation, parse_expected
from .planning import Plan, plan_requests, refute_power, verify_power
from .policy import SplitPolicy
from .sequential import SequentialSplitTest
from .split import classify_counts, overall, verify_group
from .verdicts import (
    STATUS_CODES,
    Deviation,
    GroupVerdict,
    SequentialDecision,
    SequentialShare,
    ShareEstimate,
    WrongSubset,
)

__all__ = [
    "ERROR",
    "STATUS_CODES",
    "UNKNOWN",
    "ConfusionMatrix",
    "Deviation",
    "Expectation",
    "GroupVerdict",
    "Plan",
    "SequentialDecision",
    "SequentialShare",
    "SequentialSplitTest",
    "ShareEstimate",
    "SplitPolicy",
    "WrongSubset",
    "classify_counts",
    "confusion_matrix",
    "overall",
    "parse_expected",
    "plan_requests",
    "refute_power",
    "verify_group",
    "verify_power",
]
