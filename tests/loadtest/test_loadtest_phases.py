"""The load test's routing phases: which routing each request started under (a fake mesh history)."""

from __future__ import annotations

import datetime as dt

from canary.errors import MeshNotRunningError
from canary.rundir.document import RoutingRecord
from loadtest.phases import PhaseTracker
from mesh.api import AppliedVersion

T0 = 1_800_000_000.0  # epoch seconds


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def version(n: int, start: float, acked: float | None, sha: str, failed: bool = False) -> AppliedVersion:
    return AppliedVersion(n, iso(start), iso(acked) if acked else None, [f"f{n}.yaml"],
                          [{"source": f"f{n}.yaml", "document": {"kind": "VirtualService"}}], sha, failed)


class FakeMesh:
    """Stands in for mesh.api.routing_versions: the history a poll would read."""

    def __init__(self) -> None:
        self.history: list[AppliedVersion] = [version(1, T0 - 60, T0 - 59, "a")]
        self.broken = False

    def __call__(self) -> list[AppliedVersion]:
        if self.broken:
            raise MeshNotRunningError("/nowhere")
        return list(self.history)


def tracker(mesh: FakeMesh) -> PhaseTracker:
    start = RoutingRecord(phase=0, version=1, applied_at=iso(T0 - 59), sha256="a")

    class Snapshot:
        version = 1
        home = "/nowhere"

    return PhaseTracker(start, Snapshot(), poll=mesh)  # type: ignore[arg-type]


def rows(*times: float) -> list[dict]:
    return [{"time": t, "seq": i} for i, t in enumerate(times)]


def test_rows_wait_for_a_poll_that_began_after_they_started() -> None:
    mesh = FakeMesh()
    phases = tracker(mesh)
    assert phases.release(rows(T0 + 1, T0 + 2)) == []  # no poll yet
    phases.poll(now=T0 + 1.5)
    ready = phases.release()
    assert [r["time"] for r in ready] == [T0 + 1] and ready[0]["phase"] == 0 and phases.held == 1
    phases.poll(now=T0 + 3)
    assert [(r["time"], r["phase"]) for r in phases.release()] == [(T0 + 2, 0)]


def test_a_change_opens_a_phase_from_its_push_start() -> None:
    mesh = FakeMesh()
    phases = tracker(mesh)
    mesh.history.append(version(2, T0 + 10, None, "b"))  # pending: the push has started
    opened = phases.poll(now=T0 + 10.2)
    assert [(r.phase, r.version, r.applied_at) for r in opened] == [(1, 2, None)]
    assert opened[0].started_at == iso(T0 + 10) and opened[0].seen_at == iso(T0 + 10.2)
    ready = phases.release(rows(T0 + 9.9, T0 + 10.1))
    assert [r["phase"] for r in ready] == [0, 1]
    mesh.history[-1] = version(2, T0 + 10, T0 + 10.4, "b")  # acknowledged
    mesh.history.append(version(3, T0 + 20, T0 + 20.3, "b"))  # pods only: the same routing
    mesh.history.append(version(4, T0 + 30, T0 + 30.2, "c", failed=True))  # a push that failed
    assert phases.poll(now=T0 + 31) == []
    assert [(r.phase, r.applied_at) for r in phases.records] == [(0, iso(T0 - 59)), (1, iso(T0 + 10.4))]
    assert phases.phase_of(T0 + 25) == 1


def test_arrival_order_is_kept_so_sequence_numbers_stay_in_order() -> None:
    mesh = FakeMesh()
    phases = tracker(mesh)
    phases.poll(now=T0 + 5)
    # a fast request (started late) finished before a slow one: the slow one may not overtake it
    ready = phases.release(rows(T0 + 6, T0 + 1))
    assert ready == [] and phases.held == 2
    assert [r["seq"] for r in phases.release(everything=True)] == [0, 1]


def test_an_unreadable_mesh_is_a_problem_said_once_and_the_rows_flow_on() -> None:
    mesh = FakeMesh()
    phases = tracker(mesh)
    mesh.broken = True
    assert phases.poll(now=T0 + 5) == [] and phases.poll(now=T0 + 6) == []
    assert len(phases.problems) == 1  # said once
    # the rows keep flowing (phased by what was last known), so the run's budget still counts them
    assert [r["phase"] for r in phases.release(rows(T0 + 1))] == [0]


def test_without_a_local_mesh_everything_is_phase_0_and_nothing_waits() -> None:
    phases = PhaseTracker(None, None)
    assert phases.poll() == [] and phases.records == []
    assert [r["phase"] for r in phases.release(rows(T0, T0 + 100))] == [0, 0]
