"""The result objects of split verification: frozen, JSON-ready with ``to_dict()``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from canary.conventions import ExitCode
from canary.jsonable import jsonable

from .policy import SplitPolicy

__all__ = [
    "STATUS_CODES",
    "Deviation",
    "GroupVerdict",
    "SampleRatio",
    "SequentialDecision",
    "SequentialShare",
    "SequentialStatus",
    "ShareEstimate",
    "Status",
    "WrongSubset",
]

Status = Literal["verified", "refuted", "inconclusive"]
STATUS_CODES: dict[str, int] = {
    "verified": ExitCode.OK,
    "refuted": ExitCode.FAILED,
    "inconclusive": ExitCode.INCONCLUSIVE,
}
"""Status → exit code of ``verify-split``."""
SequentialStatus = Literal["verified", "refuted", "continue", "inconclusive"]


@dataclass(frozen=True)
class ShareEstimate:
    """One subset's observed share of attributed responses, with its interval."""

    subset: str
    count: int
    observed: float
    ci_low: float
    ci_high: float
    expected: float
    band_low: float
    band_high: float
    inside_band: bool


@dataclass(frozen=True)
class Deviation:
    """The largest |observed − expected| share, where it is, and its interval at the
    refutation level (1 − the table's alpha): refuted when it lies wholly beyond the tolerance."""

    subset: str
    signed: float  # observed − expected at ``subset``
    size: float  # |signed|, the largest over subsets
    ci_low: float
    ci_high: float
    confidence: float


@dataclass(frozen=True)
class SampleRatio:
    """The classic sample-ratio-mismatch test of the observed counts against the expected
    shares: a finding shown beside the verdict, never a refutation (a mismatch can be
    significant and still well inside the tolerance)."""

    test: str  # "exact binomial" (two subsets) or "Pearson χ² (approximate)"
    statistic: float
    p_value: float
    alpha: float
    mismatch: bool  # p_value < alpha


@dataclass(frozen=True)
class WrongSubset:
    """Responses from subsets that should get none, and a one-sided bound on their share."""

    count: int
    subsets: tuple[str, ...]  # the wrong subsets actually seen
    upper_bound: float  # exact one-sided bound at ``confidence`` on their share
    confidence: float


@dataclass(frozen=True)
class GroupVerdict:
    """The verdict on one header group, with every number it rests on."""

    group: str
    status: Status
    reason: str
    failures: tuple[str, ...]  # any of "wrong_subset", "split", "unknown_rate", "error_rate"
    kind: Literal["weighted", "deterministic"]
    test: str  # "exact-intervals" or "exact-zero-count"
    n: int  # attributed responses (including wrong-subset ones)
    n_total: int  # all requests: attributed + unknown + error
    counts: Mapping[str, int]
    expected: Mapping[str, float]
    shares: tuple[ShareEstimate, ...]
    deviation: Deviation | None
    sample_ratio: SampleRatio | None  # a finding; None for a deterministic route
    wrong: WrongSubset
    unknown: int
    unknown_rate: float
    error: int
    error_rate: float
    alpha: float  # this table's share of the false-refutation budget
    decide_n: int | None  # inconclusive: attributed responses that would likely decide it
    policy: SplitPolicy

    @property
    def exit_code(self) -> int:
        return STATUS_CODES[self.status]

    def to_dict(self) -> dict[str, Any]:
        return dict(jsonable(self))


@dataclass(frozen=True)
class SequentialShare:
    """One subset's share with its two time-uniform confidence sequences."""

    subset: str
    count: int
    observed: float
    expected: float
    band_low: float
    band_high: float
    cs_low: float  # verification bounds (one-sided, anytime-valid; prior tight around the expectation)
    cs_high: float
    inside_band: bool
    wide_low: float  # refutation bounds (one-sided at the table's alpha; prior beyond the band)
    wide_high: float
    beyond_band: bool


@dataclass(frozen=True)
class SequentialDecision:
    """The state of a sequential test after one look."""

    status: SequentialStatus
    reason: str
    failures: tuple[str, ...]  # any of "wrong_subset", "split", "unknown_rate", "error_rate"
    n: int  # attributed responses so far
    n_total: int  # all requests so far
    looks: int
    counts: Mapping[str, int]
    log_bayes_factor: float | None  # ln BF_t; None for a deterministic route
    max_log_bayes_factor: float | None  # largest ln BF over the looks so far
    log_threshold: float  # ln(1/alpha)
    shares: tuple[SequentialShare, ...]
    deviation: float | None  # max |p̂ − e|
    wrong: int
    wrong_upper_bound: float
    unknown: int
    unknown_rate: float
    error: int
    error_rate: float
    alpha: float  # this test's share of the run's false-refutation budget
    policy: SplitPolicy

    def to_dict(self) -> dict[str, Any]:
        return dict(jsonable(self))
