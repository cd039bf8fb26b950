"""``canary rollout`` on the tiny local mesh: a healthy canary is promoted; a canary that fails
the error gate (it serves another model name: every request it gets fails) or the latency gates
(an injected delay on its own route) is rolled back to 100/0, and the rollback is verified."""

from __future__ import annotations

from pathlib import Path

import pytest

from canary.rundir.steps import StepsDir
from commands.cli import main
from mesh.api import default_manifests, mesh_apply
from tests.integration.meshkit import ROOT, RunningMesh

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent / "manifests"
WEIGHT_70 = ROOT / "manifests" / "routing" / "virtualservice-weight-70.yaml"
FAST = ["--tolerance", "0.1", "--max-requests", "3000", "--max-seconds", "60"]


def _rollout(mesh: RunningMesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, StepsDir]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CANARY_HOME", str(mesh.home))
    code = main(["rollout", *args, *FAST])
    folders = sorted((tmp_path / "reports").glob("*-rollout-*"))
    assert len(folders) == 1, folders
    return code, StepsDir(folders[0])


def test_a_healthy_canary_is_promoted_step_by_step(mesh: RunningMesh, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    code, folder = _rollout(mesh, tmp_path, monkeypatch, "--steps", "50,100", "--from-manifest", str(WEIGHT_70))
    document = folder.read()
    assert code == 0 and document.status == "promoted" and document.exit_code == 0
    assert [s.canary_percent for s in document.steps] == [50, 100]
    assert all(s.status == "verified" and s.requests > 0 for s in document.steps)
    assert all(g.status != "fail" for s in document.steps for g in s.gates)
    assert {g.name for g in document.steps[0].gates} >= {"error rate", "latency shift (rest)", "p99 ratio (grpc)"}
    # every step's weights are a manifest beside the steps, and its run an ordinary run directory
    assert "weight: 50" in folder.manifest(1, "canary-50").read_text()
    assert (folder.run_dir(2, "canary-100") / "report.html").is_file()
    assert folder.report_html.read_text().count("verified") >= 2
    assert document.summary.endswith("resnet50/resnet101 ends at 0/100")


def test_a_canary_failing_the_error_gate_is_rolled_back(mesh: RunningMesh, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    mesh_apply([FIXTURES / "deployment-resnet101-wrong-model-name.yaml"], home=mesh.home)
    try:
        code, folder = _rollout(mesh, tmp_path, monkeypatch, "--steps", "20,100", "--from-manifest", str(WEIGHT_70))
    finally:
        mesh_apply([default_manifests("base", "deployment-resnet101.yaml")], home=mesh.home)
    document = folder.read()
    assert code == 1 and document.status == "rolled back"
    first, rollback = document.steps
    assert first.canary_percent == 20 and first.status == "refuted"
    error_gate = next(g for g in first.gates if g.name == "error rate")
    assert error_gate.status == "fail" and error_gate.low is not None and error_gate.low > 0.01
    assert rollback.name == "rollback" and rollback.canary_percent == 0 and rollback.status == "verified"
    assert "weight: 0" in folder.manifest(2, "rollback").read_text()


def test_a_canary_failing_the_latency_gates_is_rolled_back(mesh: RunningMesh, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    delayed = FIXTURES / "virtualservice-canary-delayed.yaml"
    code, folder = _rollout(mesh, tmp_path, monkeypatch, "--steps", "20,100", "--from-manifest", str(delayed))
    document = folder.read()
    assert code == 1 and document.status == "rolled back"
    first = document.steps[0]
    assert first.status == "verified"  # the split is right: it is the canary's latency that fails
    failed = [g for g in first.gates if g.status == "fail"]
    assert failed and all(g.name.startswith(("latency shift", "p99 ratio")) for g in failed)
    assert all(g.low is not None and g.limit is not None and g.low > g.limit for g in failed)
    assert document.steps[-1].name == "rollback" and document.steps[-1].status == "verified"
    # the header route to the canary keeps its delay and its subset: only weighted routes roll back
    assert "fixedDelay: 150ms" in folder.manifest(2, "rollback").read_text()


def test_rollout_usage_errors_change_nothing(mesh: RunningMesh, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CANARY_HOME", str(mesh.home))
    assert main(["rollout", "--steps", "50,30"]) == 3
    assert main(["rollout", "--max-latency-shift", "soon"]) == 3
    base = ROOT / "manifests" / "base" / "virtualservice.yaml"  # names no subset: no weights to set
    assert main(["rollout", "--from-manifest", str(base)]) == 3
    assert not (tmp_path / "reports").exists()
