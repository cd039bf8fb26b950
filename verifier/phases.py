"""Routing phases of a run: which requests each phase's verdict rests on, and how fast each
routing change took effect. Pure: a records frame and run.json's ``mesh.routing`` in.

A run that spans ``canary mesh apply`` calls has one phase per routing that
was live (run.json ``mesh.routing``; the records carry their ``phase``, the
routing live when the request started, counting a change from the moment
its push started). For phase i ≥ 1:

* **judged**: the phase's requests that started once the ingress had
  acknowledged the change (``applied_at``): every one of them went through the
  new routing;
* **settling**: the phase's requests that started between the push's start
  and its acknowledgement; either routing may have answered them, so they
  are counted and shown, never judged (nor dropped);
* **convergence**: when the new routing took effect, as an interval in
  seconds after the push started. A response *only the new routing explains*
  comes from a subset its cell expected at 0% before and above 0% after (a
  canary answering once weight-100 became weight-70); one *only the old
  routing explains* is the reverse. The new routing was live by the first
  new-only response (else by the acknowledgement) and not before the last
  old-only response preceding that: ``[low_s, high_s]``. Old-only responses
  after a new-only one mean both routings answered for a while
  (``overlap_until_s``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from canary.conventions import Cell
from canary.jsonable import jsonable
from canary.rundir.document import RoutingRecord, epoch_seconds
from canary.stats import Expectation

__all__ = ["Convergence", "PhaseWindow", "convergence", "phase_rows", "phase_windows", "request_times"]


@dataclass(frozen=True)
class PhaseWindow:
    """One routing phase: its record and when its push started and was acknowledged (epoch s)."""

    phase: int
    record: RoutingRecord | None
    started: float | None  # None for phase 0 (live before the run)
    acknowledged: float | None  # None while pending at the run's end, or a failed push

    @property
    def judgeable(self) -> bool:
        return self.phase == 0 or (self.acknowledged is not None and not (self.record and self.record.failed))


@dataclass(frozen=True)
class Convergence:
    """How long one routing change took to take effect (seconds after its push started)."""

    phase: int
    version: int | None
    started_at: str | None
    applied_at: str | None
    acknowledged_s: float | None  # push start → the ingress acknowledged it
    first_new_s: float | None  # the first response only the new routing explains
    last_old_s: float | None  # the last response only the old routing explains, before first_new_s
    overlap_until_s: float | None  # old-only responses still came this late, after a new-only one
    low_s: float
    high_s: float | None
    settling: int  # requests started between push start and acknowledgement (not judged)
    reason: str

    @property
    def span(self) -> str:
        """How long it took, as people read it: "between 0.020 s and 0.050 s", or "after 0.020 s"."""
        low = f"{self.low_s:.3f} s"
        return f"between {low} and {self.high_s:.3f} s" if self.high_s is not None else f"after {low}"

    def to_dict(self) -> dict[str, Any]:
        return dict(jsonable(self))


def phase_windows(routing: Sequence[RoutingRecord]) -> list[PhaseWindow]:
    """One window per recorded phase (a single phase 0 when nothing was recorded)."""
    if not routing:
        return [PhaseWindow(0, None, None, None)]
    return [
        PhaseWindow(r.phase, r, epoch_seconds(r.started_at) if r.phase else None, epoch_seconds(r.applied_at) if r.phase else None)
        for r in routing
    ]


def request_times(records: pd.DataFrame) -> pd.Series:
    """Each record's request start as epoch seconds."""
    if not len(records):
        return pd.Series([], dtype="float64")
    return (records["time"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds()


def phase_rows(records: pd.DataFrame, window: PhaseWindow) -> tuple[pd.DataFrame, int]:
    """(the phase's judged records, how many of its records were settling)."""
    mine = records[records["phase"] == window.phase] if "phase" in records else records
    if window.phase == 0:
        return mine, 0
    if not window.judgeable or window.acknowledged is None:
        return mine.iloc[0:0], len(mine)
    settled = request_times(mine) >= window.acknowledged
    return mine[settled.to_numpy()], int((~settled).sum())


def _explained(records: pd.DataFrame, expectations: Mapping[Cell, Expectation]) -> np.ndarray:
    """Whether each record's subset has a positive share in its cell's expectation."""
    out = np.zeros(len(records), dtype=bool)
    for i, (protocol, group, subset, ok) in enumerate(
        zip(records["protocol"], records["group"], records["subset"], records["ok"], strict=True)
    ):
        expected = expectations.get((str(protocol), str(group)))
        out[i] = bool(ok) and expected is not None and expected.share(str(subset)) > 0
    return out


def convergence(
    records: pd.DataFrame,
    window: PhaseWindow,
    old: Mapping[Cell, Expectation],
    new: Mapping[Cell, Expectation],
) -> Convergence:
    """How long the change that opened ``window`` took to take effect (see the module docstring).
    ``records``: every record of the run; ``old``/``new``: each cell's expectation before/after."""
    assert window.phase > 0 and window.record is not None and window.started is not None
    record = window.record
    acknowledged_s = window.acknowledged - window.started if window.acknowledged is not None else None
    times = request_times(records).to_numpy()
    after = times >= window.started
    settling = phase_rows(records, window)[1]
    subset = records[after]
    t = times[after] - window.started
    by_old, by_new = _explained(subset, old), _explained(subset, new)
    new_only, old_only = t[by_new & ~by_old], t[by_old & ~by_new]
    first_new = float(new_only.min()) if new_only.size else None
    high = first_new if first_new is not None else acknowledged_s
    before = old_only[old_only <= high] if high is not None else old_only
    last_old = float(before.max()) if before.size else None
    overlap = float(old_only.max()) if first_new is not None and old_only.size and old_only.max() > first_new else None
    low = last_old if last_old is not None else 0.0
    if first_new is not None:
        reason = f"the first response only the new routing explains came {first_new:.3g} s after the push started"
    elif acknowledged_s is not None:
        reason = (
            f"no response only the new routing explains; the ingress acknowledged the change "
            f"{acknowledged_s:.3g} s after the push started"
        )
    else:
        reason = "the change was never acknowledged and no response shows it"
    if last_old is not None:
        reason += f"; the last response only the old routing explains came at {last_old:.3g} s"
    if overlap is not None:
        reason += f"; old-routing responses still came until {overlap:.3g} s (both routings answered)"
    return Convergence(
        phase=window.phase,
        version=record.version,
        started_at=record.started_at,
        applied_at=record.applied_at,
        acknowledged_s=acknowledged_s,
        first_new_s=first_new,
        last_old_s=last_old,
        overlap_until_s=overlap,
        low_s=low,
        high_s=high,
        settling=settling,
        reason=reason,
    )
