"""`canary load` then `verify-split` on the tiny local mesh, and `canary load --until-verified`.

One mesh for the module (tests/integration/conftest.py). Each load is bounded
by ``--requests``; the weighted check uses one protocol and the default group
only (``--canary-share 0``) at ``--tolerance 0.05`` (the fixed plan then needs
~1,300 attributed responses; 2,000 are sent, so a mesh splitting exactly 70/30
is verified with probability well above the plan's 95%), which keeps it fast
on two cores. Deterministic routes (focused routing, weight-100) need only
~100 responses per protocol x group, so those runs use REST and gRPC with half
of the users in the canary group.
"""

from __future__ import annotations

import json
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


@pytest.fixture(scope="module")
def weight_70(mesh: RunningMesh, tmp_path_factory: pytest.TempPathFactory) -> Path:
    mesh.apply(*WEIGHT_70)
    run_dir = tmp_path_factory.mktemp("w70") / "run"
    code, doc = _load(run_dir, "--protocol", "grpc", "--canary-share", "0", "-u", "8", "--requests", "2000")
    assert code == 0 and doc["requests"]["total"] == 2000, doc["problems"]
    return run_dir


def test_weight_70_is_verified_as_70_30(weight_70: Path) -> None:
    assert verify_split([str(weight_70), "--expected", "70/30", "--tolerance", TOLERANCE]) == 0
    summary = json.loads((weight_70 / "summary.json").read_text())
    assert "verified" in json.dumps(summary)


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
