"""A run over time: requests per second, share and latency per subset, and the routing changes. Pure.

The run is cut into equal buckets (1, 2, 5, 10, 15, 30 or 60 s, … the
smallest width that gives at most ``max_buckets``; 0.1–0.5 s for a run of a
few seconds), counted by the request's
start. Per bucket and subset: requests (failed ones under ``error``,
unattributed under ``unknown``), requests per second, the subset's share of
the attributed responses, and its median latency (successful attributed
responses). Each routing change is a mark at its push's start, with how long
it took to take effect (:class:`verifier.phases.Convergence`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from canary.conventions import ERROR, UNKNOWN
from canary.rundir.document import epoch_seconds
from canary.rundir.records import answered

from .phases import Convergence

__all__ = ["RouteMark", "TimeBucket", "Timeline", "bucket_width", "timeline"]

_WIDTHS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)


@dataclass(frozen=True)
class TimeBucket:
    start_s: float  # seconds after the run's first request
    requests: dict[str, int]  # subset (and error, unknown) -> requests started in the bucket
    p50_ms: dict[str, float]  # subset -> median latency of its successful responses

    def rps(self, width_s: float) -> dict[str, float]:
        return {s: n / width_s for s, n in self.requests.items()}

    def shares(self) -> dict[str, float]:
        attributed = {s: n for s, n in self.requests.items() if s not in (ERROR, UNKNOWN)}
        total = sum(attributed.values())
        return {s: n / total for s, n in attributed.items()} if total else {}


@dataclass(frozen=True)
class RouteMark:
    """A routing change during the run: when its push started, and how long it took."""

    phase: int
    at_s: float  # seconds after the run's first request
    version: int | None
    took_effect: str  # "between 0.020 s and 0.050 s", or "unknown"


@dataclass(frozen=True)
class Timeline:
    width_s: float
    buckets: tuple[TimeBucket, ...]
    subsets: tuple[str, ...]  # the subsets that appear, in the report's order
    marks: tuple[RouteMark, ...]

    def rows(self) -> list[dict[str, object]]:
        """One row per bucket × subset, for the CSV."""
        out: list[dict[str, object]] = []
        for bucket in self.buckets:
            shares = bucket.shares()
            for subset, n in sorted(bucket.requests.items()):
                out.append({"start_s": bucket.start_s, "width_s": self.width_s, "subset": subset, "requests": n,
                            "rps": n / self.width_s, "share": shares.get(subset),
                            "p50_ms": bucket.p50_ms.get(subset)})
        return out


def bucket_width(duration_s: float, max_buckets: int = 120) -> float:
    """The smallest of 1, 2, 5, 10, 15, 30, 60, … seconds giving at most ``max_buckets`` buckets
    (0.1, 0.2 or 0.5 s for a run of a few seconds, so it still shows at least ten)."""
    for width in _WIDTHS:
        if duration_s / width <= max_buckets and (width >= 1 or duration_s / width <= 20):
            return float(width)
    return float(_WIDTHS[-1])


def timeline(
    records: pd.DataFrame,
    subsets: Sequence[str],
    *,
    changes: Sequence[tuple[int, int | None, str | None, Convergence | None]] = (),
    max_buckets: int = 120,
) -> Timeline:
    """The run's buckets from its records (``time``, ``subset``, ``ok``, ``latency_ms``); ``changes``:
    (phase, version, push start ISO time, convergence) of each routing change."""
    if not len(records):
        return Timeline(1.0, (), tuple(subsets), ())
    times = pd.to_datetime(records["time"], utc=True)
    origin = times.min()
    offsets = (times - origin).dt.total_seconds().to_numpy(dtype=np.float64)
    width = bucket_width(float(offsets.max()) + 1e-9, max_buckets)
    index = np.floor(offsets / width).astype(np.int64)
    frame = pd.DataFrame({"bucket": index, "subset": records["subset"].astype(str).to_numpy(),
                          "ok": records["ok"].astype(bool).to_numpy(),
                          "latency_ms": records["latency_ms"].to_numpy(dtype=np.float64)})
    counts = frame.groupby(["bucket", "subset"]).size().unstack(fill_value=0)
    found = answered(frame)
    medians = found.groupby(["bucket", "subset"])["latency_ms"].median().unstack()
    buckets = []
    for b in range(int(index.max()) + 1):
        requests = {str(s): int(n) for s, n in counts.loc[b].items() if n} if b in counts.index else {}
        p50 = ({str(s): float(v) for s, v in medians.loc[b].items() if np.isfinite(v)}
               if b in medians.index else {})
        buckets.append(TimeBucket(start_s=b * width, requests=requests, p50_ms=p50))
    seen = set(frame["subset"])
    ordered = tuple(s for s in [*subsets, *sorted(seen)] if s in seen)
    ordered = tuple(dict.fromkeys(ordered))
    origin_s = origin.timestamp()
    marks = []
    for phase, version, started_at, convergence in changes:
        at = epoch_seconds(started_at)
        if at is not None:
            marks.append(RouteMark(phase, round(at - origin_s, 3), version, "unknown" if convergence is None else convergence.span))
    return Timeline(width, tuple(buckets), ordered, tuple(marks))
