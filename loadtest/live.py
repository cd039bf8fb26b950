"""The live view behind the web UI's Canary tab: one row per protocol × group, and their history.

The Locust master feeds :meth:`LiveCounts.add` every batch of records it
accepts (thousands of rows a second); the web UI asks for a
:meth:`LiveCounts.snapshot` every couple of seconds. ``add`` only counts:
requests per (protocol, group, subset), and each subset's latency in a
bounded histogram (:mod:`loadtest.latency`); every ``sample_interval_s`` it
also appends a point to a bounded history (the shares so far, and the
latency percentiles since the previous point), thinning it to every other
point, at twice the interval, when it grows past ``max_points``.

The rows are pure functions of the counts and the :class:`LiveSettings`
(:func:`cell_rows`): the statistics are :mod:`canary.stats`' own, so the
verdict shown live is :func:`canary.stats.verify_group`'s for the same counts
(as ``verify-split`` judges one cell), the intervals are the exact
Clopper–Pearson ones it rests on (:func:`canary.stats.intervals.share_intervals`,
simultaneous over the subsets as the verdict takes them), and the planned
requests are ``verify-split --plan``'s (:func:`canary.stats.plan_run`, cells
pooled as the verifier pools them) unless ``--requests`` gives a budget.
:func:`settings_from_options` reads the settings off the canary options, so
the tab can re-read them at each test start (Locust's start form changes them).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from canary.conventions import (
    DEFAULT_HEADER_TEXT,
    GROUPS,
    PROTOCOLS,
    RESERVED_SUBSETS,
    Cell,
    order_cells,
)
from canary.errors import UsageError
from canary.rundir.document import DEFAULT_CANARY_SHARE, CanaryOptions
from canary.stats import (
    Expectation,
    SplitPolicy,
    cell_weights,
    expectations_by_group,
    plan_run,
    verify_group,
)
from canary.stats.intervals import bonferroni_factor, share_intervals

from .latency import LatencyHistogram, LatencySummary, summarize
from .sequential import cells_of, expectations_and_routes

__all__ = [
    "CellRow",
    "HistoryPoint",
    "LiveCounts",
    "LiveSettings",
    "LiveSnapshot",
    "Progress",
    "ShareView",
    "cell_name",
    "cell_rows",
    "planned_requests",
    "settings_from_options",
    "snapshot_json",
    "subset_order",
]

_DEFAULT_PROTOCOL = "unknown"
_DEFAULT_GROUP = "default"
_UNKNOWN, _ERROR = RESERVED_SUBSETS


def cell_name(cell: Cell) -> str:
    """``rest/default``: a cell as ``verify-split`` and :func:`canary.stats.cell_weights` name it."""
    return f"{cell[0]}/{cell[1]}"


# --- settings -------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveSettings:
    """What the rows are judged against, read off the canary options at each test start."""

    expected: Mapping[Cell, Expectation] = field(default_factory=dict)
    routes: Mapping[Cell, str] = field(default_factory=dict)  # with --from-manifest: each cell's route
    policy: SplitPolicy = field(default_factory=SplitPolicy)
    cells: tuple[Cell, ...] = ()  # the cells the options give users to (shown before any record)
    protocols: tuple[str, ...] = PROTOCOLS
    canary_share: float = DEFAULT_CANARY_SHARE
    requests: int | None = None  # the --requests budget
    header: str = DEFAULT_HEADER_TEXT
    subsets: tuple[str, ...] = ()  # the mesh's subsets, stable first, when known

    def run_target(self) -> int | None:
        """The requests the run is heading for: ``--requests``, else what ``verify-split --plan``
        says the expected split needs at the tolerance (None without either)."""
        if self.requests:
            return self.requests
        return planned_requests(self)

    def cell_targets(self) -> dict[Cell, int]:
        """Each cell's part of :meth:`run_target`, by its share of the users."""
        target = self.run_target()
        if target is None:
            return {}
        weights = cell_weights(self.protocols, self.canary_share)
        return {cell: round(target * weights[cell_name(cell)]) for cell in self.cells
                if cell_name(cell) in weights}


def planned_requests(settings: LiveSettings) -> int | None:
    """``verify-split --plan``'s requests for the settings' expectations and mix (None when no
    cell with users has an expectation, or the plan cannot be made)."""
    cells = tuple(
        (cell_name(c), settings.expected[c], settings.routes.get(c))
        for c in settings.cells if c in settings.expected
    )
    return _plan(cells, settings.policy, settings.protocols, settings.canary_share)


@lru_cache(maxsize=32)
def _plan(
    cells: tuple[tuple[str, Expectation, str | None], ...],
    policy: SplitPolicy,
    protocols: tuple[str, ...],
    canary_share: float,
) -> int | None:
    if not cells:
        return None
    try:
        plan = plan_run({name: (e, route) for name, e, route in cells}, cell_weights(protocols, canary_share),
                        policy, protocols=protocols, canary_share=canary_share)
    except UsageError:
        return None
    return plan.requests


def settings_from_options(options: CanaryOptions, subsets_in_order: Sequence[str] | None = None) -> LiveSettings:
    """The settings the canary options give (``--expected``, else ``--from-manifest``; the
    protocol, canary share and header, ``--requests``, ``--tolerance``). Bad values raise
    :class:`~canary.errors.UsageError` saying which."""
    expected: dict[Cell, Expectation] = {}
    routes: dict[Cell, str] = {}
    if options.expected:
        by_group = expectations_by_group(options.expected, subsets_in_order)
        expected = {(p, g): by_group[g] for p in PROTOCOLS for g in GROUPS if g in by_group}
    elif options.from_manifest:
        expected, routes = expectations_and_routes(options, subsets_in_order)
    return LiveSettings(
        expected=expected,
        routes=routes,
        policy=SplitPolicy(tolerance=options.tolerance),
        cells=tuple(cells_of(options)),
        protocols=options.protocols,
        canary_share=options.canary_share,
        requests=options.requests,
        header=options.canary_header,
        subsets=tuple(subsets_in_order or ()),
    )


# --- rows -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ShareView:
    """One subset of a cell: its responses, share of the attributed ones, and interval."""

    subset: str
    count: int
    share: float | None  # None while the cell has no attributed response
    low: float | None  # exact (Clopper–Pearson) interval at the policy's confidence,
    high: float | None  # simultaneous over the subsets as the verdict takes them
    expected: float | None  # None: the cell has no expectation


@dataclass(frozen=True)
class Progress:
    """Requests so far against the requests planned (``target`` None: nothing planned)."""

    done: int
    target: int | None

    @property
    def fraction(self) -> float | None:
        return self.done / self.target if self.target else None


@dataclass(frozen=True)
class CellRow:
    """One protocol × group: what the tab shows on one line."""

    protocol: str
    group: str
    shares: tuple[ShareView, ...]  # the expected subsets (stable first), then any other seen
    attributed: int
    unknown: int
    error: int
    expected: Expectation | None
    verdict: str | None  # verify_group's status; None without expectation or responses
    reason: str | None
    progress: Progress
    latency: Mapping[str, LatencySummary]  # subset -> latency of its responses in this cell

    @property
    def total(self) -> int:
        return self.attributed + self.unknown + self.error


def subset_order(seen: Iterable[str], expectation: Expectation | None, known: Sequence[str] = ()) -> list[str]:
    """The subsets a row lists: the expectation's (stable first), then the others seen, in the
    mesh's order (``known``) and then by name; never ``unknown`` or ``error``."""
    first = list(expectation.subsets) if expectation else []
    rest = {s for s in seen if s not in first and s not in RESERVED_SUBSETS}
    rank = {s: i for i, s in enumerate(known)}
    return first + sorted(rest, key=lambda s: (rank.get(s, len(rank)), s))


def _cell_row(
    cell: Cell,
    table: Mapping[str, int],
    latency: Mapping[str, LatencySummary],
    settings: LiveSettings,
    target: int | None,
) -> CellRow:
    expectation = settings.expected.get(cell)
    names = subset_order((s for s, n in table.items() if n > 0), expectation, settings.subsets)
    counts = np.array([table.get(s, 0) for s in names], dtype=np.int64)
    attributed = int(counts.sum())
    unknown, error = int(table.get(_UNKNOWN, 0)), int(table.get(_ERROR, 0))
    k = len(expectation.positive) if expectation else len(names)
    low, high = share_intervals(counts, attributed, settings.policy.confidence, simultaneous=bonferroni_factor(k))
    verdict = reason = None
    if expectation is not None and attributed + unknown + error > 0:
        result = verify_group(dict(table), expectation, settings.policy, group=cell[1])
        verdict, reason = result.status, result.reason
    shares = tuple(
        ShareView(
            subset=name,
            count=int(counts[i]),
            share=float(counts[i] / attributed) if attributed else None,
            low=float(low[i]) if attributed else None,
            high=float(high[i]) if attributed else None,
            expected=expectation.share(name) if expectation else None,
        )
        for i, name in enumerate(names)
    )
    return CellRow(
        protocol=cell[0],
        group=cell[1],
        shares=shares,
        attributed=attributed,
        unknown=unknown,
        error=error,
        expected=expectation,
        verdict=verdict,
        reason=reason,
        progress=Progress(attributed + unknown + error, target),
        latency={s: latency[s] for s in names if s in latency},
    )


def cell_rows(
    counts: Mapping[Cell, Mapping[str, int]],
    latency: Mapping[Cell, Mapping[str, LatencySummary]],
    settings: LiveSettings,
) -> list[CellRow]:
    """One row per cell seen or given users by the options, REST before gRPC, the group
    without header first (:func:`canary.conventions.order_cells`)."""
    targets = settings.cell_targets()
    return [
        _cell_row(cell, counts.get(cell, {}), latency.get(cell, {}), settings, targets.get(cell))
        for cell in order_cells(set(counts) | set(settings.cells))
    ]


# --- history --------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryPoint:
    """The view at ``t`` seconds into the test."""

    t: float
    shares: Mapping[Cell, Mapping[str, float]]  # each cell's shares of attributed responses so far
    latency: Mapping[str, Mapping[str, LatencySummary]]  # protocol -> subset -> since the last point


@dataclass(frozen=True)
class LiveSnapshot:
    settings: LiveSettings
    rows: tuple[CellRow, ...]
    run: Progress  # every request so far against the run's target
    history: tuple[HistoryPoint, ...]


def _shares(table: Mapping[str, int]) -> dict[str, float]:
    attributed = sum(n for s, n in table.items() if s not in RESERVED_SUBSETS)
    if not attributed:
        return {}
    return {s: n / attributed for s, n in table.items() if s not in RESERVED_SUBSETS}


_Key = tuple[str, str, str]  # protocol, group, subset


class LiveCounts:
    """The live view's state: counts, latency histograms and history, behind one lock.

    Safe to share between threads (and greenlets): ``add`` holds the lock only to
    merge a pre-counted batch (and, every ``sample_interval_s``, to take a history
    point); ``snapshot`` recomputes only when something changed.
    """

    def __init__(
        self,
        settings: LiveSettings | None = None,
        *,
        sample_interval_s: float = 2.0,
        max_points: int = 300,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if sample_interval_s <= 0 or max_points < 2:
            raise ValueError("sample_interval_s must be positive and max_points at least 2")
        self._lock = threading.Lock()
        self._settings = settings or LiveSettings()
        self._sample_interval = sample_interval_s
        self._max_points = max_points
        self._clock = clock
        self._version = 0
        self._cached: tuple[int, LiveSnapshot] | None = None
        self._clear()

    def _clear(self) -> None:
        self._counts: dict[Cell, Counter[str]] = {}
        self._latency: dict[_Key, LatencyHistogram] = {}
        self._points: list[HistoryPoint] = []
        self._interval = self._sample_interval
        self._started: float | None = None
        self._last_sample = 0.0
        self._last_latency: dict[tuple[str, str], LatencyHistogram] = {}
        self._version += 1

    @property
    def settings(self) -> LiveSettings:
        return self._settings

    def add(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Count a batch of records (``protocol``, ``group``, ``subset``, ``latency_ms``).

        A missing or empty subset counts as ``unknown``, a missing group as ``default``;
        only the latencies of attributed responses are kept. Other keys are ignored.
        """
        batch: Counter[_Key] = Counter()
        latencies: dict[_Key, list[float]] = {}
        for row in rows:
            key = (
                str(row.get("protocol") or _DEFAULT_PROTOCOL),
                str(row.get("group") or _DEFAULT_GROUP),
                str(row.get("subset") or _UNKNOWN),
            )
            batch[key] += 1
            latency = row.get("latency_ms")
            if key[2] not in RESERVED_SUBSETS and isinstance(latency, int | float):
                latencies.setdefault(key, []).append(float(latency))
        if not batch:
            return
        with self._lock:
            for (protocol, group, subset), n in batch.items():
                self._counts.setdefault((protocol, group), Counter())[subset] += n
            for key, values in latencies.items():
                self._latency.setdefault(key, LatencyHistogram()).add(values)
            self._version += 1
            self._sample()

    def _sample(self) -> None:
        """Append a history point when the interval has passed (the lock is held)."""
        now = self._clock()
        if self._started is None:
            self._started = self._last_sample = now
            return
        if now - self._last_sample < self._interval:
            return
        self._last_sample = now
        per_protocol: dict[tuple[str, str], LatencyHistogram] = {}
        for (protocol, _, subset), histogram in self._latency.items():
            key = (protocol, subset)
            per_protocol[key] = per_protocol[key] + histogram if key in per_protocol else histogram.copy()
        latency: dict[str, dict[str, LatencySummary]] = {}
        for (protocol, subset), histogram in per_protocol.items():
            window = histogram - self._last_latency.get((protocol, subset), LatencyHistogram())
            if window.count:
                latency.setdefault(protocol, {})[subset] = summarize(window)
        self._last_latency = per_protocol
        shares = {cell: _shares(table) for cell, table in self._counts.items()}
        self._points.append(HistoryPoint(now - self._started, shares, latency))
        if len(self._points) > self._max_points:
            self._points = self._points[1::2]
            self._interval *= 2

    def configure(self, settings: LiveSettings) -> None:
        """Judge against these settings from now on (counts are kept)."""
        with self._lock:
            if settings != self._settings:
                self._settings = settings
                self._version += 1

    def reset(self) -> None:
        """Forget every count, latency and history point (a new test started); settings are kept."""
        with self._lock:
            self._clear()

    def total(self) -> int:
        """Every request counted so far."""
        with self._lock:
            return sum(sum(table.values()) for table in self._counts.values())

    def snapshot(self) -> LiveSnapshot:
        """The rows and history now. Shared with later callers until something changes."""
        with self._lock:
            version = self._version
            if self._cached is not None and self._cached[0] == version:
                return self._cached[1]
            counts = {cell: dict(table) for cell, table in self._counts.items()}
            histograms = {key: h.copy() for key, h in self._latency.items()}
            settings = self._settings
            history = tuple(self._points)
        latency: dict[Cell, dict[str, LatencySummary]] = {}
        for (protocol, group, subset), histogram in histograms.items():
            latency.setdefault((protocol, group), {})[subset] = summarize(histogram)
        rows = tuple(cell_rows(counts, latency, settings))
        done = sum(sum(table.values()) for table in counts.values())
        snapshot = LiveSnapshot(settings, rows, Progress(done, settings.run_target()), history)
        with self._lock:
            if self._version == version:
                self._cached = (version, snapshot)
        return snapshot


# --- JSON -----------------------------------------------------------------------------


def _latency_json(summary: LatencySummary) -> dict[str, Any]:
    return {"n": summary.n, "p50": summary.p50, "p95": summary.p95, "p99": summary.p99}


def snapshot_json(snapshot: LiveSnapshot) -> dict[str, Any]:
    """The snapshot as plain JSON values (cells named ``rest/default``)."""
    settings = snapshot.settings
    return {
        "settings": {
            "expected": {cell_name(c): e.label() for c, e in sorted(settings.expected.items())},
            "tolerance": settings.policy.tolerance,
            "confidence": settings.policy.confidence,
            "requests": settings.requests,
            "protocols": list(settings.protocols),
            "canary_share": settings.canary_share,
            "header": settings.header,
        },
        "run": {"done": snapshot.run.done, "target": snapshot.run.target},
        "rows": [
            {
                "cell": cell_name((row.protocol, row.group)),
                "protocol": row.protocol,
                "group": row.group,
                "attributed": row.attributed,
                "unknown": row.unknown,
                "error": row.error,
                "total": row.total,
                "expected": row.expected.label() if row.expected else None,
                "verdict": row.verdict,
                "reason": row.reason,
                "progress": {"done": row.progress.done, "target": row.progress.target},
                "shares": [vars(share) for share in row.shares],
                "latency_ms": {s: _latency_json(v) for s, v in row.latency.items()},
            }
            for row in snapshot.rows
        ],
        "history": [
            {
                "t": round(point.t, 3),
                "shares": {cell_name(c): dict(v) for c, v in point.shares.items()},
                "latency_ms": {p: {s: _latency_json(v) for s, v in by.items()} for p, by in point.latency.items()},
            }
            for point in snapshot.history
        ],
    }
