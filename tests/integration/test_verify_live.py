"""`canary load` then `verify-split` on the tiny local mesh, and `canary load --until-verified`.

One mesh for the module (tests/integration/conftest.py). Each load is bounded
by ``--requests``; the weighted check uses one protocol and the default group
only (``--canary-share 0``) at ``--tolerance 0.05`` and plans, at 99.5% power,
to refute a 10-point deviation (``verify-split --plan`` then asks for ~2,500
requests, which verifies an exact 70/30 with probability 99.9%: a test that
fails one run in a thousand by chance, not one in eighty as at 95% power), which
keeps it fast on two cores. Deterministic routes (focused routing, weight-100) need only
~100 responses per protocol x group, so those runs use REST and gRPC with half
of the users in the canary group.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from canary.rundir import read_records
from commands.cli import main as canary
from commands.verify_split import main as verify_split
from tests.integration.meshkit import ROOT, RunningMesh

pytestmark = pytest.mark.integration

ROUTING = ROOT / "manifests" / "routing"
WEIGHT_70 = ("routing", "virtualservice-weight-70.yaml")
WEIGHT_100 = ("routing", "virtualservice-weight-100.yaml")
FOCUSED = ("routing", "virtualservice-focused-routing.yaml")
TOLERANCE = "0.05"  # ±5 points for the weighted split (see the module docstring)
BOTH_GROUPS = ("--protocol", "both", "--canary-share", "0.5", "-u", "8")


@pytest.fixture(scope="module", autouse=True)
def _home(mesh: RunningMesh) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CANARY_HOME", str(mesh.home))
        yield


def _load(run_dir: Path, *args: str) -> tuple[int, dict[str, Any]]:
    code = canary(["load", "--run-dir", str(run_dir), *args])
    return code, json.loads((run_dir / "run.json").read_text())


MIX = ("--protocol", "grpc", "--canary-share", "0")


@pytest.fixture(scope="module")
def weight_70(mesh: RunningMesh, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `canary load` of the size `verify-split --plan` asks for, on weight-70."""
    mesh.apply(*WEIGHT_70)
    folder = tmp_path_factory.mktemp("w70")
    plan_file = folder / "plan.json"
    assert verify_split(["--plan", "--from-manifest", str(ROUTING / WEIGHT_70[1]), "--tolerance", TOLERANCE,
                         "--detect", "0.1", "--power", "0.995", *MIX, "--json", str(plan_file)]) == 0
    requests = json.loads(plan_file.read_text())["requests"]
    assert 2000 < requests < 3000
    code, doc = _load(folder / "run", *MIX, "-u", "8", "--requests", str(requests))
    assert code == 0 and doc["requests"]["total"] == requests, doc["problems"]
    assert (folder / "run" / "report.html").is_file() and (folder / "run" / "latency.csv").is_file()  # by canary load
    return folder / "run"


def test_weight_70_is_verified_against_the_routing_it_recorded(weight_70: Path) -> None:
    doc = json.loads((weight_70 / "run.json").read_text())
    (phase,) = doc["mesh"]["routing"]
    kinds = {o["document"]["kind"] for o in phase["objects"]}
    assert {"VirtualService", "DestinationRule", "Gateway"} <= kinds and phase["version"] >= 1
    assert phase["applied_at"] <= phase["seen_at"]
    # no --expected: the VirtualService live when the load started is the expectation
    assert verify_split([str(weight_70), "--tolerance", TOLERANCE]) == 0
    records = read_records(weight_70)  # the mesh's own upstream time, beside the client's
    answered = records[records["ok"]]
    assert answered["server_ms"].notna().mean() > 0.99
    assert (answered["server_ms"] <= answered["latency_ms"] + 1).all()
    summary = json.loads((weight_70 / "summary.json").read_text())
    assert summary["status"] == "verified" and summary["expected_source"].startswith("the routing recorded")
    assert verify_split([str(weight_70), "--expected", "70/30", "--tolerance", TOLERANCE]) == 0
    # canary load's own report judged it too (at the default ±3 points): three checks kept
    assert len(json.loads((weight_70 / "summary.json").read_text())["checks"]) == 3


def test_weight_70_is_refuted_as_50_50(weight_70: Path) -> None:
    assert verify_split([str(weight_70), "--expected", "50/50", "--tolerance", TOLERANCE, "--no-write"]) == 1


def test_focused_routing_from_the_manifest(mesh: RunningMesh, tmp_path: Path) -> None:
    mesh.apply(*FOCUSED)
    code, _ = _load(tmp_path / "run", *BOTH_GROUPS, "--requests", "800")
    assert code == 0
    records = read_records(tmp_path / "run")
    by_group = records.groupby("group")["subset"].agg(lambda s: set(s))
    assert by_group["canary"] == {"resnet101"} and by_group["default"] == {"resnet50"}
    assert records.groupby(["protocol", "group"]).size().min() >= 100
    manifest = str(ROUTING / "virtualservice-focused-routing.yaml")
    assert verify_split([str(tmp_path / "run"), "--from-manifest", manifest, "--no-write"]) == 0


def test_weight_100_sends_nothing_to_resnet101(mesh: RunningMesh, tmp_path: Path) -> None:
    mesh.apply(*WEIGHT_100)
    code, doc = _load(tmp_path / "run", *BOTH_GROUPS, "--requests", "800")
    assert code == 0 and doc["requests"]["by_subset"] == {"resnet50": 800}
    assert verify_split([str(tmp_path / "run"), "--expected", "100/0", "--no-write"]) == 0


def test_until_verified_refutes_50_50_early(mesh: RunningMesh, tmp_path: Path) -> None:
    """Weight-70 against 50/50: the sequential test refutes within a few hundred requests and stops."""
    mesh.apply(*WEIGHT_70)
    code, doc = _load(tmp_path / "run", "--protocol", "rest", "--canary-share", "0", "-u", "8",
                      "--requests", "3000", "--until-verified", "--expected", "50/50")
    sequential = doc["sequential"]
    assert code == 1 and sequential["status"] == "refuted" and doc["problems"] == [], sequential
    [cell] = sequential["cells"]
    assert (cell["protocol"], cell["group"], cell["status"]) == ("rest", "default", "refuted")
    assert sequential["requests_to_decide"] <= 1000
    assert doc["requests"]["total"] < 3000  # stopped early (in-flight requests still finish)
    print(f"\nsequential: refuted 50/50 after {sequential['requests_to_decide']} requests "
          f"(n={cell['n']}, {cell['looks']} looks); the run sent {doc['requests']['total']}")


def _wait_for_requests(run_dir: Path, child: subprocess.Popen[bytes], at_least: int, deadline_s: float) -> None:
    """Until the running load test's progress.json counts ``at_least`` requests (bounded)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert child.poll() is None, "the load test ended before the routing changes"
        try:
            if json.loads((run_dir / "progress.json").read_text()).get("requests", 0) >= at_least:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"fewer than {at_least} requests after {deadline_s} s")


def test_routing_changes_during_one_load_are_phases(mesh: RunningMesh, tmp_path: Path) -> None:
    """weight-100 → weight-70 → focused routing applied while one `canary load` runs: each phase
    is judged against the routing live in it, and each change's convergence is reported."""
    mesh.apply(*WEIGHT_100)
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "commands.cli", "load", "--run-dir", str(run_dir), "--protocol", "rest",
            "--canary-share", "0.5", "-u", "8", "--requests", "2400"]
    child = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "CANARY_HOME": str(mesh.home)},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for_requests(run_dir, child, 500, 120)
        mesh.apply(*WEIGHT_70)
        _wait_for_requests(run_dir, child, 1400, 120)
        mesh.apply(*FOCUSED)
        output, _ = child.communicate(timeout=180)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, output.decode(errors="replace")[-3000:]
    doc = json.loads((run_dir / "run.json").read_text())
    routing = doc["mesh"]["routing"]
    assert [r["phase"] for r in routing] == [0, 1, 2]
    assert all(r["applied_at"] and r["started_at"] <= r["applied_at"] for r in routing[1:])
    records = read_records(run_dir)
    assert sorted(records["phase"].unique()) == [0, 1, 2]
    out = tmp_path / "s.json"
    assert verify_split([str(run_dir), "--tolerance", "0.1", "--json", str(out), "--no-write"]) == 0
    summary = json.loads(out.read_text())
    phases = summary["phases"]
    assert [p["source"].split("(")[1].split(",")[0].rsplit("/", 1)[1] for p in phases] == [
        "virtualservice-weight-100.yaml", "virtualservice-weight-70.yaml", "virtualservice-focused-routing.yaml"]
    to_70, to_focused = phases[1]["convergence"], phases[2]["convergence"]
    assert to_70["first_new_s"] is not None and 0 <= to_70["low_s"] <= to_70["high_s"] < 10
    assert to_focused["high_s"] is not None and to_focused["high_s"] < 10
    print(f"\nphases: {[(p['phase'], p['requests'], p['settling']) for p in phases]}; weight-70 took effect "
          f"within [{to_70['low_s']:.3f}, {to_70['high_s']:.3f}] s (acknowledged after {to_70['acknowledged_s']:.3f} s), "
          f"focused within [{to_focused['low_s']:.3f}, {to_focused['high_s']:.3f}] s")
