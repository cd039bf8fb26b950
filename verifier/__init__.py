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

Around them, for ``verify-split`` and ``canary report`` (imported on demand,
not re-exported here, so ``import verifier`` stays light):

* :mod:`verifier.run` — a run directory read into the inputs (the only reader of files)
* :mod:`verifier.manifest` — the expected outcome per protocol x group from a VirtualService
* :mod:`verifier.resolve` — which expectation per cell, and which subset is stable
* :mod:`verifier.crosscheck` — fingerprint counts against Envoy's / Prometheus' counters
* :mod:`verifier.latency`, :mod:`verifier.accuracy` — the Kayenta-style latency judge, accuracy
* :mod:`verifier.verify` — :func:`~verifier.verify.verify_run`, the one function behind the CLI
* :mod:`verifier.report_json`, :mod:`verifier.report_junit`, :mod:`verifier.report_html`,
  :mod:`verifier.report_console`, :mod:`verifier.report_files` — the writers
* :mod:`verifier.cli` — the ``verify-split`` command
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
