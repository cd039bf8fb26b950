"""Routing phases during a load test: which routing each request started under.

A load test may span several ``canary mesh apply`` calls. :class:`PhaseTracker`
starts from the routing live at the test's start (phase 0) and polls the
mesh's version history (:func:`mesh.api.routing_versions`, the state file
only). Every version whose routing differs from the current phase's opens a
new phase, recorded with the time its push started and the time the ingress
acknowledged it. The mesh saves a version the moment its push starts, so a
row is phased only once a poll that began after the row's request started has
been made: :meth:`PhaseTracker.release` hands back the rows that are safe to
phase, each with its ``phase``, and holds the rest until the next poll.
Without a local mesh (a cluster, or no mesh at all) everything is phase 0 and
nothing is held.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from canary.conventions import utc_iso
from canary.errors import CanaryError
from canary.rundir.document import RoutingRecord, epoch_seconds
from mesh.api import AppliedVersion, MeshSnapshot, routing_versions

__all__ = ["PhaseTracker"]

Poll = Callable[[], Sequence[AppliedVersion]]


class PhaseTracker:
    """The run's routing phases, and the phase of each row (see the module docstring)."""

    def __init__(self, start: RoutingRecord | None, mesh: MeshSnapshot | None, poll: Poll | None = None) -> None:
        self.records: list[RoutingRecord] = [start] if start is not None else []
        self._seen_version = mesh.version if mesh is not None else 0
        self._poll = poll if poll is not None else (
            (lambda: routing_versions(home=Path(mesh.home)))
            if mesh is not None and mesh.kube is None and start is not None else None
        )
        self._starts: list[float] = []  # push start of phases 1.. (epoch seconds)
        self._polled_at = float("inf") if self._poll is None else 0.0
        self._held: list[dict[str, Any]] = []
        self.problems: list[str] = []

    @property
    def phase(self) -> int:
        return max(0, len(self.records) - 1)

    def poll(self, now: float | None = None) -> list[RoutingRecord]:
        """Read the mesh's versions; returns the phases this poll opened."""
        if self._poll is None:
            return []
        began = time.time() if now is None else now
        try:
            versions = list(self._poll())
        except (CanaryError, OSError) as error:
            problem = f"the mesh's routing versions could not be read: {error}"
            if problem not in self.problems:  # once, however many polls fail
                self.problems.append(problem)
            self._polled_at = began  # the rows keep flowing, phased by what was last known
            return []
        opened: list[RoutingRecord] = []
        for version in versions:
            self._update(version)
            if version.version <= self._seen_version:
                continue
            self._seen_version = version.version
            current = self.records[-1] if self.records else None
            if version.failed or (current is not None and version.routing_sha256 == current.sha256):
                continue  # no routing change (pods or Services only), or a push that failed
            record = RoutingRecord.model_validate({
                "phase": len(self.records), "version": version.version, "started_at": version.started_at,
                "applied_at": version.applied_at, "seen_at": utc_iso(began), "sha256": version.routing_sha256,
                "objects": version.routing,
            })
            self.records.append(record)
            self._starts.append(epoch_seconds(version.started_at) or began)
            opened.append(record)
        self._polled_at = began
        return opened

    def _update(self, version: AppliedVersion) -> None:
        """A phase already open learns its acknowledgement (or failure) from a later poll."""
        for i, record in enumerate(self.records):
            if record.version == version.version and record.phase > 0 and record.applied_at != version.applied_at:
                self.records[i] = record.model_copy(update={"applied_at": version.applied_at, "failed": version.failed})

    def phase_of(self, started: float) -> int:
        """The phase a request that started at ``started`` (epoch seconds) belongs to."""
        return sum(1 for start in self._starts if start <= started)

    def release(self, rows: Sequence[dict[str, Any]] = (), *, everything: bool = False) -> list[dict[str, Any]]:
        """Hold ``rows``; give back, phased and in arrival order, the rows up to the first whose
        request started after the last poll (all of them with ``everything``, after a final poll)."""
        self._held.extend(rows)
        if not self._held:
            return []
        if everything or self._poll is None:
            ready, self._held = self._held, []
        else:  # a prefix, in arrival order, so each worker's sequence numbers stay in order
            cut = next(
                (i for i, r in enumerate(self._held) if float(r.get("time") or 0.0) >= self._polled_at),
                len(self._held),
            )
            ready, self._held = self._held[:cut], self._held[cut:]
        for row in ready:
            row["phase"] = self.phase_of(float(row.get("time") or 0.0))
        return ready

    @property
    def held(self) -> int:
        return len(self._held)
