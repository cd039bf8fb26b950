"""Latency per subset × protocol × payload format, and canary against stable. Pure.

Only successful responses attributed to a subset count (a failed request's
time says nothing about the model that did not answer); how many were left
out is reported.

Where the run sent more than one payload format (a base64 JPEG the server
decodes and resizes, and a raw pixel array, are different work), every
figure is per format, so like is compared with like; with one format the
figures are per protocol ("all").

Per subset × protocol × format: n, mean, p50/p90/p95/p99 each with its exact
order-statistic interval (and the same of the server time, Envoy's
``x-envoy-upstream-service-time``, where the mesh reported it) (:mod:`verifier.percentiles`; a percentile the
sample is too small for says so), min/max, the CDF at every percentile and a
histogram on edges shared by the subsets it is drawn with.

Canary against stable per protocol × format (:mod:`verifier.latency_compare`):
Mann-Whitney U, the Hodges-Lehmann shift with its interval and a verdict
against the margin, the p50 and p99 ratios with bootstrap intervals, one plain
line; then whether REST and gRPC agree for each format.

The latency verdict is reported, not part of the exit code (which is the split's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from canary.errors import UsageError
from canary.jsonable import jsonable
from canary.rundir.records import answered

from .latency_compare import (
    DEFAULT_CONFIDENCE,
    DEFAULT_MARGIN,
    LatencyComparison,
    Margin,
    compare_latency,
    hodges_lehmann,
    kth_difference,
    parse_margin,
)
from .percentiles import Percentile, percentiles

__all__ = [
    "ALL_FORMATS",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_MARGIN",
    "LatencyComparison",
    "LatencyReport",
    "LatencyStats",
    "Margin",
    "ProtocolAgreement",
    "compare_latency",
    "hodges_lehmann",
    "kth_difference",
    "latency_report",
    "parse_margin",
    "strata",
    "stratum_samples",
]

HISTOGRAM_BINS = 40
ALL_FORMATS = "all"
PERCENTILE_CONFIDENCE = 0.95


@dataclass(frozen=True)
class LatencyStats:
    """One subset's latency over one protocol and payload format (milliseconds)."""

    protocol: str
    subset: str
    n: int
    mean: float
    p50: float
    p90: float
    p99: float
    min: float
    max: float
    cdf: tuple[float, ...]  # the 0th, 1st, ..., 100th percentile
    histogram: tuple[int, ...]  # counts on the stratum's edges; the last bin holds the tail
    format: str = ALL_FORMATS
    p95: float = math.nan
    percentiles: tuple[Percentile, ...] = ()  # p50, p90, p95, p99 with their intervals
    server: tuple[Percentile, ...] = ()  # the same from Envoy's upstream time, where the mesh reported it

    @property
    def stratum(self) -> str:
        return stratum_key(self.protocol, self.format)

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(p.note for p in self.percentiles if p.note)


@dataclass(frozen=True)
class ProtocolAgreement:
    """Whether REST and gRPC reach the same latency verdict for one canary and format."""

    canary: str
    format: str
    verdicts: dict[str, str]  # protocol -> verdict
    agree: bool

    @property
    def line(self) -> str:
        shown = ", ".join(f"{p}: {v}" for p, v in self.verdicts.items())
        where = "" if self.format == ALL_FORMATS else f" ({self.format})"
        return f"{self.canary}{where}: REST and gRPC {'agree' if self.agree else 'disagree'} ({shown})"


@dataclass(frozen=True)
class LatencyReport:
    """Every latency figure of a run."""

    stable: str | None
    stats: tuple[LatencyStats, ...]
    comparisons: tuple[LatencyComparison, ...]
    edges: dict[str, tuple[float, ...]]  # stratum ("rest", or "rest/b64") -> histogram edges (ms)
    confidence: float
    margin: str
    excluded: int  # failed or unattributed requests left out
    agreement: tuple[ProtocolAgreement, ...] = ()
    formats: tuple[str, ...] = (ALL_FORMATS,)  # the strata's formats

    def to_dict(self) -> dict[str, Any]:
        document = dict(jsonable(self))
        document["comparisons"] = [c.to_dict() for c in self.comparisons]
        document["agreement"] = [{**dict(jsonable(a)), "line": a.line} for a in self.agreement]
        return document


def stratum_key(protocol: str, fmt: str) -> str:
    return protocol if fmt == ALL_FORMATS else f"{protocol}/{fmt}"


def strata(records: pd.DataFrame) -> list[str]:
    """The payload formats to compare within: each format when the records hold more than one,
    else ``all``."""
    if "format" not in records or not len(records):
        return [ALL_FORMATS]
    formats = sorted({str(f) for f in records["format"].dropna().unique() if str(f)})
    return formats if len(formats) > 1 else [ALL_FORMATS]


def _stats(protocol: str, fmt: str, subset: str, values: NDArray[np.float64],
           edges: NDArray[np.float64], server: NDArray[np.float64]) -> LatencyStats:
    found = percentiles(values, confidence=PERCENTILE_CONFIDENCE)
    q = {p.q: p.value for p in found}
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    return LatencyStats(
        protocol=protocol,
        subset=subset,
        n=int(values.size),
        mean=float(values.mean()),
        p50=q[0.5],
        p90=q[0.9],
        p99=q[0.99],
        min=float(values.min()),
        max=float(values.max()),
        cdf=tuple(float(v) for v in np.quantile(values, np.linspace(0, 1, 101))),
        histogram=tuple(int(c) for c in counts),
        format=fmt,
        p95=q[0.95],
        percentiles=found,
        server=percentiles(server, confidence=PERCENTILE_CONFIDENCE) if server.size else (),
    )


def stratum_samples(rows: pd.DataFrame, subset: str, protocol: str, fmt: str = ALL_FORMATS,
                    column: str = "latency_ms") -> NDArray[np.float64]:
    """The sorted ``column`` of one subset × protocol (× format) among answered ``rows``
    (:func:`canary.rundir.records.answered`); absent values left out."""
    mine = rows[(rows["subset"] == subset) & (rows["protocol"] == protocol)]
    if fmt != ALL_FORMATS:
        mine = mine[mine["format"] == fmt]
    if column not in mine:
        return np.empty(0)
    values = mine[column].to_numpy(dtype=np.float64)
    return np.sort(values[np.isfinite(values)])


def _answered(records: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    if not len(records):
        return pd.DataFrame({"protocol": [], "subset": [], "latency_ms": [], "format": []}), 0
    found = answered(records)
    return found, len(records) - len(found)


def _agreement(comparisons: Sequence[LatencyComparison]) -> tuple[ProtocolAgreement, ...]:
    by_key: dict[tuple[str, str], dict[str, str]] = {}
    for c in comparisons:
        by_key.setdefault((c.canary, c.format), {})[c.protocol] = c.verdict
    return tuple(ProtocolAgreement(canary, fmt, verdicts, len(set(verdicts.values())) == 1)
                 for (canary, fmt), verdicts in by_key.items() if len(verdicts) > 1)


def latency_report(
    records: pd.DataFrame,
    *,
    subsets: Sequence[str],
    stable: str | None,
    protocols: Sequence[str] = ("rest", "grpc"),
    confidence: float = DEFAULT_CONFIDENCE,
    margin: Margin | str = DEFAULT_MARGIN,
) -> LatencyReport:
    """Latency figures from the records' ``protocol``, ``format``, ``subset``, ``ok``, ``latency_ms``."""
    if not 0.5 < confidence < 1:
        raise UsageError(f"latency confidence must be in (0.5, 1), e.g. 0.98; got {confidence!r}")
    chosen = parse_margin(margin) if isinstance(margin, str) else margin
    used, excluded = _answered(records)
    formats = strata(used)
    names = list(dict.fromkeys([*subsets, *sorted(set(used["subset"].astype(str)))]))
    seen_protocols = [p for p in protocols if (used["protocol"] == p).any()]
    seen_protocols += sorted(set(used["protocol"].astype(str)) - set(seen_protocols))
    all_stats: list[LatencyStats] = []
    comparisons: list[LatencyComparison] = []
    edges_by_stratum: dict[str, tuple[float, ...]] = {}
    for protocol in seen_protocols:
        for fmt in formats:
            samples = {s: stratum_samples(used, s, protocol, fmt) for s in names}
            if not any(v.size for v in samples.values()):
                continue
            pooled = np.concatenate(list(samples.values()))
            low, high = float(pooled.min()), float(np.quantile(pooled, 0.995))
            edges = np.linspace(low, high if high > low else low + 1.0, HISTOGRAM_BINS + 1)
            edges_by_stratum[stratum_key(protocol, fmt)] = tuple(float(e) for e in edges)
            all_stats.extend(_stats(protocol, fmt, s, samples[s], edges,
                                    stratum_samples(used, s, protocol, fmt, "server_ms"))
                             for s in names if samples[s].size)
            if stable is None or stable not in samples:
                continue
            for canary in names:
                if canary == stable or samples[canary].size == 0:
                    continue
                comparisons.append(compare_latency(
                    samples[canary], samples[stable], protocol=protocol, fmt=fmt, canary_name=canary,
                    stable_name=stable, confidence=confidence, margin=chosen,
                ))
    return LatencyReport(
        stable=stable,
        stats=tuple(all_stats),
        comparisons=tuple(comparisons),
        edges=edges_by_stratum,
        confidence=confidence,
        margin=chosen.label(),
        excluded=excluded,
        agreement=_agreement(comparisons),
        formats=tuple(formats),
    )
