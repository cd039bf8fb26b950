"""Live per-subset counts for the web UI's Canary tab: a thread-safe aggregator.

The Locust master feeds :meth:`LiveCounts.add` every batch of per-request
records it receives (thousands of rows a second); the web UI asks for a
:meth:`LiveCounts.snapshot` every couple of seconds. ``add`` only counts
``(protocol, group, subset)`` keys; the statistics run in ``snapshot``, once
per change, with :func:`verifier.verify_group` so that the p-value and verdict
shown live are the ones ``verify-split`` would give for the same counts.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

from canary.conventions import ERROR, UNKNOWN
from canary.stats import Expectation, SplitPolicy, verify_group

__all__ = ["LiveCounts", "LiveRow"]

_DEFAULT_PROTOCOL = "unknown"
_DEFAULT_GROUP = "default"


class LiveRow(TypedDict):
    """One line of the snapshot: a subset's count in one (protocol, group)."""

    protocol: str
    group: str
    subset: str
    count: int
    observed_share: float | None  # of the group's attributed responses; None for unknown/error
    expected_share: float | None  # None when the group has no expectation (or for unknown/error)
    p_value: float | None  # the group's split test; None without expectation or test
    verdict: str | None  # the group's verify_group status; None without expectation
    attributed: int  # the group's responses attributed to some subset
    unknown: int  # the group's unattributable responses
    error: int  # the group's failed requests
    total: int  # attributed + unknown + error


_Key = tuple[str, str, str]


class LiveCounts:
    """Request counts per (protocol, group, subset), with the group's split test.

    Safe to share between threads (and greenlets): ``add`` holds the lock only
    to merge a pre-counted batch; ``snapshot`` recomputes only when something
    changed since the previous snapshot.
    """

    def __init__(self, policy: SplitPolicy | None = None) -> None:
        self._policy = policy or SplitPolicy()
        self._lock = threading.Lock()
        self._counts: Counter[_Key] = Counter()
        self._expected: dict[str, Expectation] = {}
        self._version = 0
        self._cached: tuple[int, list[LiveRow]] | None = None

    @property
    def policy(self) -> SplitPolicy:
        return self._policy

    def add(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Count a batch of records (``protocol``, ``group``, ``subset`` keys).

        A missing or empty subset counts as ``"unknown"``; a missing group as
        ``"default"``. Other keys are ignored.
        """
        batch = Counter(
            (
                str(row.get("protocol") or _DEFAULT_PROTOCOL),
                str(row.get("group") or _DEFAULT_GROUP),
                str(row.get("subset") or UNKNOWN),
            )
            for row in rows
        )
        if not batch:
            return
        with self._lock:
            self._counts.update(batch)
            self._version += 1

    def set_expected(self, per_group: Mapping[str, Expectation] | None) -> None:
        """Set the expected split of each group (``None`` or ``{}``: none known)."""
        expected = dict(per_group or {})
        with self._lock:
            if expected != self._expected:
                self._expected = expected
                self._version += 1

    def reset(self) -> None:
        """Forget every count (a new test started); expectations are kept."""
        with self._lock:
            self._counts.clear()
            self._version += 1

    def total(self) -> int:
        """Every request counted so far."""
        with self._lock:
            return sum(self._counts.values())

    def snapshot(self) -> list[LiveRow]:
        """The rows, sorted by (protocol, group, subset).

        Each (protocol, group) seen gets one row per subset seen or expected,
        plus ``unknown`` and ``error`` rows (counts, no share). The returned
        list is shared with later callers until the counts change: do not
        modify it.
        """
        with self._lock:
            version = self._version
            if self._cached is not None and self._cached[0] == version:
                return self._cached[1]
            counts = dict(self._counts)
            expected = dict(self._expected)
        rows = _rows(counts, expected, self._policy)
        with self._lock:
            if self._version == version:
                self._cached = (version, rows)
        return rows


def _rows(
    counts: Mapping[_Key, int], expected: Mapping[str, Expectation], policy: SplitPolicy
) -> list[LiveRow]:
    per_table: dict[tuple[str, str], dict[str, int]] = {}
    for (protocol, group, subset), count in counts.items():
        per_table.setdefault((protocol, group), {})[subset] = count
    rows: list[LiveRow] = []
    for (protocol, group), table in per_table.items():
        expectation = expected.get(group)
        unknown, error = table.get(UNKNOWN, 0), table.get(ERROR, 0)
        attributed = sum(v for k, v in table.items() if k not in (UNKNOWN, ERROR))
        total = attributed + unknown + error
        p_value: float | None = None
        verdict: str | None = None
        if expectation is not None and total > 0:
            result = verify_group(table, expectation, policy, group=group)
            srm = result.sample_ratio
            p_value, verdict = (srm.p_value if srm else None), result.status
        subsets = set(table) | set(expectation.subsets if expectation else ()) | {UNKNOWN, ERROR}
        for subset in subsets:
            count = table.get(subset, 0)
            reserved = subset in (UNKNOWN, ERROR)
            rows.append(
                LiveRow(
                    protocol=protocol,
                    group=group,
                    subset=subset,
                    count=count,
                    observed_share=None if reserved or not attributed else count / attributed,
                    expected_share=None
                    if reserved or expectation is None
                    else expectation.share(subset),
                    p_value=p_value,
                    verdict=verdict,
                    attributed=attributed,
                    unknown=unknown,
                    error=error,
                    total=total,
                )
            )
    rows.sort(key=lambda r: (r["protocol"], r["group"], r["subset"]))
    return rows
