"""The error rates and tolerances a split verdict is held to."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from canary.errors import UsageError
from canary.jsonable import jsonable

__all__ = ["SplitPolicy"]


@dataclass(frozen=True)
class SplitPolicy:
    """What "verified" and "refuted" promise, for a whole run.

    alpha
        Type-I error of "refuted": when every true share lies inside its band
        (the expected split included), the run is refuted with probability at
        most ``alpha``. The verifier divides it over the run's tables
        (:mod:`canary.stats.pooling`), so it holds for the run as a whole.
    tolerance
        Half-width of the band ``[expected − tolerance, expected + tolerance]``
        (a fraction: 0.03 is ±3 percentage points) every share must be shown
        to lie in to be "verified", and beyond which an interval must lie to
        be "refuted".
    confidence
        Coverage of the reported intervals (simultaneous across subsets). When
        some true share lies outside its band, "verified" happens with
        probability at most ``(1 − confidence)/2`` (only the interval's side
        facing the band can be wrong).
    max_unknown_rate, max_error_rate
        Data-quality gates on the fraction of all requests that were
        unattributable or failed. The default error gate tolerates one failed
        request in a thousand (a transient reset should not fail a routing
        verdict); set it to 0 to make every failure fatal.
    power
        Target probability, used by planning, that a mesh routing exactly as
        expected is verified (and that a clear deviation is refuted).

    Intervals are exact (Clopper–Pearson): their coverage holds for every true
    share and n, which the guarantees above need.
    """

    alpha: float = 0.01
    tolerance: float = 0.03
    confidence: float = 0.95
    max_unknown_rate: float = 0.005
    max_error_rate: float = 0.001
    power: float = 0.95

    def __post_init__(self) -> None:
        _open_unit("alpha", self.alpha, upper=0.5)
        _open_unit("tolerance", self.tolerance, upper=0.5)
        _open_unit("confidence", self.confidence, lower=0.5)
        _open_unit("power", self.power, lower=0.5)
        for name in ("max_unknown_rate", "max_error_rate"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value < 1:
                raise UsageError(f"{name} must be a fraction in [0, 1), e.g. 0.005; got {value!r}")

    @property
    def wrong_bound_level(self) -> float:
        """The one-sided level of the wrong-subset bound: the upper end of the two-sided
        interval at ``confidence`` (97.5% at 95%), so a false verification stays ≤ (1 − confidence)/2."""
        return 1.0 - (1.0 - self.confidence) / 2.0

    def table_alpha(self, alpha: float | None) -> float:
        """One table's share of the run's false-refutation budget (default: all of it)."""
        if alpha is None:
            return self.alpha
        if not 0 < alpha <= self.alpha:
            raise UsageError(f"a table's alpha must be in (0, {self.alpha:g}], got {alpha!r}")
        return float(alpha)

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
