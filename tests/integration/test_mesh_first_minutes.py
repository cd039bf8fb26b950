"""The first minutes with the local mesh: a second `mesh up` is refused at once, and `mesh status`
counts since the last routing change beside the totals."""

from __future__ import annotations

import orjson
import pytest

from commands.cli import main
from mesh.api import mesh_status
from mesh.local import procs
from payloads import load_payloads
from tests.integration.meshkit import RunningMesh
from tests.integration.sender import send_rest

pytestmark = pytest.mark.integration

PHOTO_BODY = load_payloads().get("grace_hopper").body("b64")


def _send(mesh: RunningMesh, n: int) -> dict[str, int]:
    """Send ``n`` REST predicts; returns what each subset counted meanwhile."""
    before = mesh.counts()
    result = send_rest(mesh.url, n, PHOTO_BODY, concurrency=2, deadline_s=60)
    assert result.sent == n and result.failures == 0, result.statuses
    after = mesh.counts()
    return {k: after.get(k, 0) - before.get(k, 0) for k in after}


def test_a_second_mesh_up_is_refused_before_exporting_anything(
    mesh: RunningMesh, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_export(*_: object, **__: object) -> None:
        raise AssertionError("mesh up exported models although a mesh already runs")

    monkeypatch.setattr("serving.export.ensure_models", no_export)
    monkeypatch.setenv("CANARY_HOME", str(mesh.home))
    assert main(["mesh", "up", "--tiny", "--port", str(procs.free_port())]) != 0
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "already running" in line and "canary mesh down" in line and "CANARY_HOME" in line
    assert mesh_status(home=mesh.home).envoy_running  # the running mesh is left alone


def test_status_counts_since_the_last_routing_change_beside_the_totals(
    mesh: RunningMesh, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mesh.apply("routing", "virtualservice-weight-100.yaml")
    start = mesh.counts()
    assert _send(mesh, 20)["resnet50"] == 20
    mesh.apply("routing", "virtualservice-weight-70.yaml")
    change = mesh_status(home=mesh.home).state.version
    after_change = _send(mesh, 30)
    assert sum(after_change.values()) == 30

    status = mesh_status(home=mesh.home)
    assert status.since_change is not None and status.since_change.version == change
    counts = status.subset_counts()
    assert {s: row["since_change"]["requests"] for s, row in counts.items()} == after_change
    assert sum(row["requests"] for row in counts.values()) - sum(start.values()) == 50

    mesh.apply("routing", "virtualservice-weight-70.yaml")  # the same routing again: no change
    monkeypatch.setenv("CANARY_HOME", str(mesh.home))
    assert main(["mesh", "status", "--json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["routing_change"]["version"] == change < doc["version"]
    since = {s: c["since_change"] for s, c in doc["counters"].items()}
    assert since["resnet50"]["requests"] + since["resnet101"]["requests"] == 30
    assert since["resnet101"]["share"] == pytest.approx(after_change["resnet101"] / 30)
    assert doc["counters"]["resnet50"]["share"] == pytest.approx(
        doc["counters"]["resnet50"]["requests"] / sum(c["requests"] for c in doc["counters"].values())
    )
