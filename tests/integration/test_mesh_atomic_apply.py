"""An apply is all or nothing: interrupted or killed at any moment, Envoy and the state agree,
and an interrupted apply leaves the configuration before it live."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mesh.api import default_manifests, mesh_apply, mesh_status
from mesh.local import procs
from mesh.local.backend import LocalMesh
from mesh.local.state import MeshHome, interrupted_push
from payloads import load_payloads
from tests.integration.meshkit import ROOT, RunningMesh
from tests.integration.sender import send_rest

pytestmark = pytest.mark.integration

BODY = load_payloads().get("grace_hopper").body("b64")
WEIGHT_70 = ("routing", "virtualservice-weight-70.yaml")
WEIGHT_100 = ("routing", "virtualservice-weight-100.yaml")


def _canary_share(mesh: RunningMesh, n: int = 200) -> float:
    before = mesh.counts()
    result = send_rest(mesh.url, n, BODY, concurrency=4, deadline_s=60)
    assert result.sent == n and result.failures == 0, result.statuses
    after = mesh.counts()
    return (after.get("resnet101", 0) - before.get("resnet101", 0)) / n


def _acknowledged_routing(home: Path) -> str:
    state = mesh_status(home=home).state
    live = [v for v in state.history if v.applied_at and not v.failed]
    return live[-1].routing_sha256


def test_an_interrupt_during_the_push_puts_the_previous_configuration_back(
    mesh: RunningMesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh.apply(*WEIGHT_70)
    before = mesh_status(home=mesh.home).state
    local = LocalMesh(MeshHome(mesh.home))
    push = LocalMesh._push

    def push_then_interrupt(self: LocalMesh, state: object, resources: object) -> None:
        push(self, state, resources)  # type: ignore[arg-type]
        if not monkeypatch_done:  # only the apply's own push: the restore pushes undisturbed
            monkeypatch_done.append(True)
            os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of the switch-over

    monkeypatch_done: list[bool] = []
    monkeypatch.setattr(LocalMesh, "_push", push_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        local.apply([default_manifests(*WEIGHT_100)])
    monkeypatch.undo()

    after = mesh_status(home=mesh.home).state
    assert after.objects == before.objects  # the apply left nothing behind in the state
    interrupted, restored = after.history[-2:]
    assert interrupted.applied_at and not interrupted.restored
    assert restored.restored and restored.applied_at and not restored.failed
    assert restored.routing_sha256 == before.history[-1].routing_sha256
    assert interrupted_push(after.history) is None
    assert _canary_share(mesh) > 0.1  # weight-70 serves again, not weight-100


def test_a_failed_push_puts_the_previous_configuration_back(
    mesh: RunningMesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh.apply(*WEIGHT_70)
    before = mesh_status(home=mesh.home).state
    push = LocalMesh._push
    calls: list[int] = []

    def push_half_then_fail(self: LocalMesh, state: object, resources: object) -> None:
        calls.append(1)
        if len(calls) == 1:
            self.xds.write_endpoints(resources, str(state.version))  # type: ignore[arg-type, attr-defined]
            raise RuntimeError("Envoy went away half-way")
        push(self, state, resources)  # type: ignore[arg-type]

    monkeypatch.setattr(LocalMesh, "_push", push_half_then_fail)
    with pytest.raises(RuntimeError):
        LocalMesh(MeshHome(mesh.home)).apply([default_manifests(*WEIGHT_100)])
    monkeypatch.undo()
    after = mesh_status(home=mesh.home).state
    failed, restored = after.history[-2:]
    assert failed.failed and restored.restored and restored.applied_at
    assert restored.routing_sha256 == before.history[-1].routing_sha256
    assert after.objects == before.objects
    assert _canary_share(mesh) > 0.1


_KILL_MID_PUSH = """
import os, sys
from pathlib import Path
from mesh.local.backend import LocalMesh
from mesh.local.state import MeshHome

def die_half_way(self, state, resources):
    self.xds.write_endpoints(resources, str(state.version))
    os._exit(9)  # as SIGKILL: no finally, no save

LocalMesh._push = die_half_way
LocalMesh(MeshHome(Path(sys.argv[1]))).apply([Path(sys.argv[2])])
"""


def test_a_command_killed_mid_push_is_recovered_by_the_next_apply(mesh: RunningMesh) -> None:
    mesh.apply(*WEIGHT_70)
    live = _acknowledged_routing(mesh.home)
    killed = subprocess.run(
        [sys.executable, "-c", _KILL_MID_PUSH, str(mesh.home), str(default_manifests(*WEIGHT_100))],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert killed.returncode == 9, killed.stderr
    status = mesh_status(home=mesh.home)
    pending = interrupted_push(status.state.history)
    assert pending is not None  # the state says a push never finished, and status tells
    assert status.interrupted_push == pending.version == status.to_dict()["interrupted_push"]
    assert _acknowledged_routing(mesh.home) == live

    mesh.apply(*WEIGHT_100)  # the next apply first restores, then applies
    history = mesh_status(home=mesh.home).state.history
    assert history[-3].version == pending.version and history[-3].failed
    assert history[-2].restored and history[-2].routing_sha256 == live
    assert history[-1].applied_at and not history[-1].restored
    assert mesh_status(home=mesh.home).interrupted_push is None
    assert _canary_share(mesh, 100) == 0.0


def _carries(proc: Path, markers: list[str]) -> bool:
    """Whether a live process has one of the pods' markers in its command line or environment."""
    try:
        if proc.joinpath("stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
            return False
        seen = proc.joinpath("cmdline").read_bytes() + proc.joinpath("environ").read_bytes()
    except OSError:
        return False
    return any(m.encode() in seen for m in markers)


def test_sigterm_while_new_pods_start_stops_them_and_changes_nothing(mesh: RunningMesh, tmp_path: Path) -> None:
    mesh.apply(*WEIGHT_70)
    before = mesh_status(home=mesh.home).state
    changed = tmp_path / "deployment-resnet50.yaml"
    changed.write_text(
        default_manifests("base", "deployment-resnet50.yaml").read_text().replace('cpu: "1"', "cpu: 700m")
    )
    env = {**os.environ, "CANARY_HOME": str(mesh.home)}
    apply = subprocess.Popen(
        [str(Path(sys.executable).parent / "canary"), "mesh", "apply", "-f", str(changed)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    logs = MeshHome(mesh.home).logs
    known = {p.name for p in before.pods}
    deadline = time.monotonic() + 60
    new_logs: list[Path] = []
    while time.monotonic() < deadline and not new_logs and apply.poll() is None:
        new_logs = [p for p in logs.glob("*.log") if p.stem.split("_", 1)[-1] not in known and p.stem != "envoy"]
        time.sleep(0.02)
    assert new_logs, f"the apply never started a new pod: {apply.poll()} {apply.stderr.read() if apply.poll() is not None else ''}"
    apply.send_signal(signal.SIGTERM)
    _, err = apply.communicate(timeout=60)
    assert apply.returncode == 130, err
    after = mesh_status(home=mesh.home)
    assert after.state.version == before.version and after.state.objects == before.objects
    assert [p.pid for p in after.state.pods] == [p.pid for p in before.pods]
    assert all(after.pods_running.values())
    markers = [f"{MeshHome(mesh.home).root}#{p.stem.replace('_', '/', 1)}" for p in new_logs]
    assert _processes_with(markers) == []
    assert _canary_share(mesh) > 0.1
    mesh_apply([default_manifests(*WEIGHT_100)], home=mesh.home)


_KILL_WHILE_PODS_START = """
import os, sys
from pathlib import Path
from mesh.local import pod_processes
from mesh.local.backend import LocalMesh
from mesh.local.state import MeshHome

def die(pod, plan):
    print(pod.marker, flush=True)
    os._exit(9)  # as SIGKILL, with the new pod's kubelet started and nothing made live

pod_processes.wait_ready = die
LocalMesh(MeshHome(Path(sys.argv[1]))).apply([Path(sys.argv[2])])
"""


def test_pods_of_an_apply_killed_while_they_start_are_stopped_by_the_next_command(
    mesh: RunningMesh, tmp_path: Path
) -> None:
    mesh.apply(*WEIGHT_70)
    before = mesh_status(home=mesh.home).state
    changed = tmp_path / "deployment-resnet50.yaml"
    changed.write_text(
        default_manifests("base", "deployment-resnet50.yaml").read_text().replace('cpu: "1"', "cpu: 600m")
    )
    killed = subprocess.run(
        [sys.executable, "-c", _KILL_WHILE_PODS_START, str(mesh.home), str(changed)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert killed.returncode == 9, killed.stderr
    marker = killed.stdout.strip()
    state = mesh_status(home=mesh.home).state
    assert [p.marker for p in state.starting] == [marker]  # the state knows the orphan
    assert state.objects == before.objects and state.version == before.version
    assert _processes_with([marker])  # still running: nothing else would stop it

    mesh.apply(*WEIGHT_70)  # the next command stops it first
    assert mesh_status(home=mesh.home).state.starting == []
    deadline = time.monotonic() + 15
    while _processes_with([marker]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_with([marker]) == []
    assert _canary_share(mesh) > 0.1


def _processes_with(markers: list[str]) -> list[str]:
    return [pid.name for pid in Path("/proc").iterdir() if pid.name.isdigit() and _carries(pid, markers)]


def test_when_putting_the_previous_configuration_back_fails_the_live_one_keeps_its_pods(
    mesh: RunningMesh, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from canary.errors import MeshError

    mesh.apply(*WEIGHT_70)
    before = mesh_status(home=mesh.home).state
    changed = tmp_path / "deployment-resnet50.yaml"
    changed.write_text(
        default_manifests("base", "deployment-resnet50.yaml").read_text().replace('cpu: "1"', "cpu: 800m")
    )
    push = LocalMesh._push
    calls: list[int] = []

    def interrupt_then_fail_the_restore(self: LocalMesh, state: object, resources: object) -> None:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("Envoy stopped answering")
        push(self, state, resources)  # type: ignore[arg-type]
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(LocalMesh, "_push", interrupt_then_fail_the_restore)
    with pytest.raises(MeshError, match="interrupted during the switch-over; putting the configuration"):
        LocalMesh(MeshHome(mesh.home)).apply([changed])
    monkeypatch.undo()
    status = mesh_status(home=mesh.home)
    assert status.state.history[-1].restored and status.state.history[-1].failed
    assert all(status.pods_running.values())  # the pods the state calls live were not stopped
    replaced = [(p.pid, p.marker) for p in before.pods if p.labels["version"] == "resnet50"]
    assert [(p.pid, p.marker) for p in status.state.starting] == replaced  # still tracked, to be stopped
    assert _canary_share(mesh) > 0.1
    mesh_apply([default_manifests("base", "deployment-resnet50.yaml"), default_manifests(*WEIGHT_100)], home=mesh.home)
    assert mesh_status(home=mesh.home).state.starting == []
    # the next apply stopped them (a new pod of the base template has their name, not their pid)
    assert not any(procs.is_running(pid, marker) for pid, marker in replaced)
