"""The run at a glance, for the report's first section. Pure.

Duration, users per protocol × group, requests and requests per second,
failed requests by status code, the machine, whether each subset's weights
are seeded, and the routing phases with how long each change took.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from canary.rundir.reader import Run

from .timeline import Timeline, timeline
from .verify import PhaseResult, Verification

__all__ = ["RunFacts", "run_facts", "run_timeline"]


@dataclass(frozen=True)
class RunFacts:
    duration_s: float | None
    users: dict[str, dict[str, int]]  # protocol -> group -> users
    requests: int
    rps: float | None
    failed_by_status: dict[str, int]  # "404", "UNAVAILABLE", ... -> failed requests
    machine: str
    weights: dict[str, str]  # subset -> seeded / imagenet
    seeded: bool
    phases: tuple[str, ...]  # one line per routing phase

    @property
    def users_total(self) -> int:
        return sum(n for groups in self.users.values() for n in groups.values())


def _phase_line(phase: PhaseResult) -> str:
    if phase.phase == 0:
        return f"phase 0: the routing live at the start, {phase.requests} requests"
    span = "" if phase.convergence is None else f", took effect {phase.convergence.span}"
    return (f"phase {phase.phase}: configuration v{phase.version} pushed {phase.started_at}, acknowledged "
            f"{phase.applied_at or '–'}{span}; {phase.requests} requests ({phase.settling} settling)")


def run_facts(run: Run, phases: Sequence[PhaseResult] = ()) -> RunFacts:
    records = run.records
    failed = records.loc[~records["ok"].astype(bool), "status"].astype(str) if len(records) else []
    duration = run.duration_s
    versions = run.document.versions
    machine = versions.get("machine") or "not recorded"
    return RunFacts(
        duration_s=duration,
        users={p: dict(g) for p, g in run.document.users.items()},
        requests=len(records),
        rps=len(records) / duration if duration else None,
        failed_by_status=dict(Counter(failed).most_common()),
        machine=f"{machine}; Python {versions.get('python') or '?'}, Locust {versions.get('locust') or '?'}",
        weights=dict(run.weights),
        seeded=any(w == "seeded" for w in run.weights.values()),
        phases=tuple(_phase_line(p) for p in phases),
    )


def run_timeline(result: Verification) -> Timeline:
    """The judged run over time, with a mark at each routing change."""
    changes = [(p.phase, p.version, p.started_at, p.convergence) for p in result.phases if p.phase > 0]
    return timeline(result.run.records, result.subsets, changes=changes)
