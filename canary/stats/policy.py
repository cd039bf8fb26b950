"""The error rates and tolerances a split verdict is held to."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

from canary.errors import UsageError
from canary.jsonable import jsonable

__all__ = ["IntervalMethod", "SplitPolicy"]

IntervalMethod = Literal["exact", "wilson"]


@dataclass(frozen=True)
class SplitPolicy:
    """What "verified" and "refuted" promise, per header group.

    alpha
        Type-I error of "refuted": when the true split equals the expectation,
        a group is refuted with probability at most ``alpha``.
    tolerance
        Half-width of the band ``[expected − tolerance, expected + tolerance]``
        (a fraction: 0.03 is ±3 percentage points) every share must be shown
        to lie in to be "verified", and the deviation a refutation must exceed.
    confidence
        Coverage of the reported intervals (simultaneous across subsets). When
        some true share lies outside its band, "verified" happens with
        probability at most ``1 − confidence`` (fixed-n intervals: at most half
        of that, since only one side of an interval can be wrong).
    max_unknown_rate, max_error_rate
        Data-quality gates on the fraction of all requests that were
        unattributable or failed. The default error gate tolerates one failed
        request in a thousand (a transient reset should not fail a routing
        verdict); set it to 0 to make every failure fatal.
    power
        Target probability, used by planning, that a mesh routing exactly as
        expected is verified (and that a clear deviation is refuted).
    interval
        ``"exact"`` (Clopper–Pearson, coverage guaranteed for every true share)
        or ``"wilson"`` (score interval, shorter, coverage only on average).

    Every check applies to one group. With G groups judged together the chance
    of at least one false "refuted" is up to G·alpha; :meth:`for_groups` gives
    the Bonferroni-adjusted policy when a family-wise guarantee is wanted.
    """

    alpha: float = 0.01
    tolerance: float = 0.03
    confidence: float = 0.95
    max_unknown_rate: float = 0.005
    max_error_rate: float = 0.001
    power: float = 0.95
    interval: IntervalMethod = "exact"

    def __post_init__(self) -> None:
        _open_unit("alpha", self.alpha, upper=0.5)
        _open_unit("tolerance", self.tolerance, upper=0.5)
        _open_unit("confidence", self.confidence, lower=0.5)
        _open_unit("power", self.power, lower=0.5)
        for name in ("max_unknown_rate", "max_error_rate"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value < 1:
                raise UsageError(f"{name} must be a fraction in [0, 1), e.g. 0.005; got {value!r}")
        if self.interval not in ("exact", "wilson"):
            raise UsageError(f"interval must be 'exact' or 'wilson', got {self.interval!r}")

    def for_groups(self, groups: int) -> SplitPolicy:
        """This policy with alpha and 1 − confidence divided by ``groups``
        (Bonferroni), so the guarantees hold for all groups at once."""
        if groups < 1:
            raise UsageError(f"groups must be at least 1, got {groups}")
        return replace(
            self, alpha=self.alpha / groups, confidence=1 - (1 - self.confidence) / groups
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(jsonable(self))


def _open_unit(name: str, value: float, *, lower: float = 0.0, upper: float = 1.0) -> None:
    if (
        not isinstance(value, int | float)
        or not math.isfinite(value)
        or not lower < value < 1
        or value > upper
    ):
        raise UsageError(
            f"{name} must be a fraction in ({lower:g}, {upper:g}{']' if upper < 1 else ')'}, "
            f"e.g. {SplitPolicy.__dataclass_fields__[name].default}; got {value!r}"
        )
