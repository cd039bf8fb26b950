"""The walkthrough on the local mesh with tiny models: routing as Envoy counts it."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
from scipy.stats import binomtest

from canary.errors import ManifestError
from commands.cli import main
from loadtest.predict import run_predict
from mesh.api import default_manifests, mesh_apply, mesh_status
from mesh.local import procs
from payloads import REQUEST_BODY, grpc_request_bytes, load_payloads
from tests.integration.meshkit import PHOTO, ROOT, RunningMesh
from tests.integration.sender import send_grpc, send_rest

pytestmark = pytest.mark.integration

CANARY = {"user-group": "canary"}
_PHOTO = load_payloads().get("grace_hopper")
PHOTO_BODY = _PHOTO.body("b64")  # the GKE walkthrough's body
PHOTO_GRPC = grpc_request_bytes(_PHOTO, "b64")
PREDICT_PATHS = ["/v1/models/image_classifier:predict", "/v1/models/image_classifier/versions/1:predict"]
needs_curl = pytest.mark.skipif(
    shutil.which("curl") is None, reason="curl is not installed, so the walkthroughs' curl steps cannot run as written"
)


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(after) | set(before))}


def _rest(mesh: RunningMesh, n: int, headers: dict[str, str] | None = None) -> dict[str, int]:
    before = mesh.counts()
    result = send_rest(mesh.url, n, PHOTO_BODY, headers=headers, concurrency=4, deadline_s=120)
    assert result.sent == n and result.failures == 0, result.statuses
    return _delta(before, mesh.counts())


def _grpc(mesh: RunningMesh, n: int, metadata: dict[str, str] | None = None) -> dict[str, int]:
    before = mesh.counts()
    result = send_grpc(mesh.url, n, PHOTO_GRPC, metadata=metadata, concurrency=2, deadline_s=120)
    assert result.sent == n and result.failures == 0, result.statuses
    return _delta(before, mesh.counts())


@pytest.fixture(scope="module")
def minikube_body(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The minikube walkthrough's body: the photo, unresized, as a nested list of uint8."""
    photo = load_payloads(size=None).get("grace_hopper")
    assert photo.pixels.shape == (600, 512, 3)
    path = tmp_path_factory.mktemp("body") / "request-body.json"
    path.write_bytes(photo.body("instances"))
    return path


@needs_curl
@pytest.mark.parametrize("path", PREDICT_PATHS)
def test_walkthrough_curl_steps_work_unchanged(mesh: RunningMesh, minikube_body: Path, path: str) -> None:
    out = subprocess.run(
        ["curl", "-s", "-w", "\n%{http_code}", "-d", f"@{minikube_body}", "-X", "POST", mesh.url + path],
        capture_output=True, check=True, timeout=60, cwd=minikube_body.parent,
    ).stdout
    body, _, code = out.rpartition(b"\n")
    assert code == b"200", body[:300]
    [probs] = orjson.loads(body)["predictions"]
    assert len(probs) == 1000
    assert sum(probs) == pytest.approx(1.0, abs=1e-3)


README_CURL = [line.strip() for line in (ROOT / "README.md").read_text().splitlines()
               if line.strip().startswith("curl ") and "127.0.0.1:8080" in line]


def test_the_readme_has_the_walkthrough_curl_steps() -> None:
    assert {urlsplit(shlex.split(line)[-1]).path for line in README_CURL} == set(PREDICT_PATHS)


@needs_curl
@pytest.mark.parametrize("line", README_CURL)
def test_the_readme_curl_step_answers_from_the_repository_root(mesh: RunningMesh, line: str) -> None:
    """The README's curl lines as written, from the repository root (only the ingress's port is the
    test mesh's); `payloads/request-body.json` is the GKE walkthrough's body (tests/payloads checks
    the committed file is it, byte for byte)."""
    assert REQUEST_BODY == ROOT / "payloads" / "request-body.json"
    argv = [arg.replace("http://127.0.0.1:8080", mesh.url) for arg in shlex.split(line)]
    out = subprocess.run(
        [argv[0], "-s", "-w", "\n%{http_code}", *argv[1:]], capture_output=True, check=True, timeout=60, cwd=ROOT,
    ).stdout
    payload, _, code = out.rpartition(b"\n")
    assert code == b"200", payload[:300]
    [probs] = orjson.loads(payload)["predictions"]
    assert len(probs) == 1000 and all(p >= 0 for p in probs)


def test_weight_100_sends_nothing_to_the_canary(mesh: RunningMesh) -> None:
    mesh.apply("routing", "virtualservice-weight-100.yaml")
    delta = _rest(mesh, 200)
    assert delta.get("resnet101", 0) == 0
    assert delta["resnet50"] == 200
    delta = _grpc(mesh, 50)
    assert delta.get("resnet101", 0) == 0
    assert delta["resnet50"] == 50


def test_weight_70_splits_70_30_over_1000_requests(mesh: RunningMesh) -> None:
    mesh.apply("routing", "virtualservice-weight-70.yaml")
    delta = _rest(mesh, 1000)
    assert delta["resnet50"] + delta["resnet101"] == 1000
    # Envoy draws each request independently: the canary's count is Binomial(1000, 0.3).
    assert binomtest(delta["resnet101"], 1000, 0.3).pvalue > 1e-4, delta
    delta = _grpc(mesh, 200)
    assert delta["resnet50"] + delta["resnet101"] == 200
    assert binomtest(delta["resnet101"], 200, 0.3).pvalue > 1e-4, delta


def test_focused_routing_sends_every_canary_request_to_resnet101(mesh: RunningMesh) -> None:
    mesh.apply("routing", "virtualservice-focused-routing.yaml")
    assert _rest(mesh, 150, CANARY) == {"": 0, "resnet101": 150, "resnet50": 0}
    assert _rest(mesh, 150) == {"": 0, "resnet101": 0, "resnet50": 150}
    assert _grpc(mesh, 60, CANARY) == {"": 0, "resnet101": 60, "resnet50": 0}
    assert _grpc(mesh, 60) == {"": 0, "resnet101": 0, "resnet50": 60}


@pytest.mark.parametrize("grpc", [False, True], ids=["rest", "grpc"])
def test_canary_predict_names_the_subset_the_header_chose(mesh: RunningMesh, grpc: bool) -> None:
    """One request through the ingress; the subset is told by fingerprint (its pods asked directly)."""
    mesh.apply("routing", "virtualservice-focused-routing.yaml")
    for headers, subset in [((), "resnet50"), (tuple(CANARY.items()), "resnet101")]:
        before = mesh.counts()
        result = run_predict(grpc=grpc, headers=headers, home=mesh.home)
        assert _delta(before, mesh.counts()) == {"": 0, "resnet50": 0, "resnet101": 0, subset: 1}
        assert (result.identity.subset, result.identity.match) == (subset, "exact"), result.identity
        assert result.status == ("OK" if grpc else "200") and len(result.top) == 5
        assert all(a.probability >= b.probability for a, b in zip(result.top, result.top[1:], strict=False))
        assert result.weights == {"resnet50": "seeded", "resnet101": "seeded"}
        assert "mean nothing" in (result.labels_note or "")


def test_canary_predict_command_on_the_local_mesh(
    mesh: RunningMesh, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh.apply("routing", "virtualservice-focused-routing.yaml")
    monkeypatch.setenv("CANARY_HOME", str(mesh.home))
    assert main(["predict", "--grpc", "--header", "user-group: canary", str(PHOTO)]) == 0
    out = capsys.readouterr().out
    assert f"on {mesh.url.removeprefix('http://')} (user-group: canary) -> OK" in out
    assert "answered by: resnet101 (the answer is bit-identical to resnet101's own answer" in out
    assert "these class names mean nothing" in out


def test_grpc_model_service_is_routed_like_predict(mesh: RunningMesh) -> None:
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    mesh.apply("routing", "virtualservice-focused-routing.yaml")
    before = mesh.counts()
    with grpc.insecure_channel(mesh.url.removeprefix("http://")) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "image_classifier"
        reply = stub.GetModelStatus(request, timeout=10, metadata=(("user-group", "canary"),))
    assert reply.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert _delta(before, mesh.counts())["resnet101"] == 1


def test_apply_under_load_drops_no_request(mesh: RunningMesh) -> None:
    """Routes are reloaded by Envoy with no restart: traffic flows through every switch."""
    envoy_pid = mesh.state.envoy_pid
    results = []
    done = threading.Event()

    def traffic() -> None:
        body = PHOTO_BODY
        for _ in range(60):  # bounded: at most 60 rounds of 20 requests
            results.append(send_rest(mesh.url, 20, body, concurrency=2, deadline_s=30))
            if done.is_set():
                return

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        for name in ["weight-70", "weight-100", "focused-routing", "weight-70", "weight-100", "weight-70"]:
            mesh.apply("routing", f"virtualservice-{name}.yaml")
    finally:
        done.set()
        thread.join(timeout=120)
    sent = sum(r.sent for r in results)
    failures = sum(r.failures for r in results)
    assert sent >= 20 and failures == 0, [r.statuses for r in results if r.failures]
    assert mesh_status(home=mesh.home).state.envoy_pid == envoy_pid  # no restart


def test_invalid_manifest_changes_nothing(mesh: RunningMesh, tmp_path: Path) -> None:
    before = mesh_status(home=mesh.home).state
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        default_manifests("routing", "virtualservice-weight-70.yaml").read_text()
        .replace("weight: 30", "weight: 40")
    )
    with pytest.raises(ManifestError) as info:
        mesh_apply([bad], home=mesh.home)
    assert info.value.file == str(bad)
    assert "weight" in info.value.field or "weight" in info.value.message
    after = mesh_status(home=mesh.home).state
    assert after.version == before.version
    assert after.objects == before.objects


def test_scaling_a_deployment_rolls_pods_without_dropping_requests(mesh: RunningMesh, tmp_path: Path) -> None:
    """A changed Deployment gets new pods, ready before Envoy moves traffic; the old ones stop."""
    mesh.apply("routing", "virtualservice-weight-100.yaml")
    deployment = default_manifests("base", "deployment-resnet50.yaml").read_text()
    scaled = tmp_path / "deployment-resnet50.yaml"
    scaled.write_text(deployment.replace("replicas: 1", "replicas: 2").replace(
        "cpu: \"1\"", "cpu: 500m"))  # a template change: new pods, as a rollout would
    old = {p.name: p for p in mesh_status(home=mesh.home).state.pods}
    result = mesh_apply([scaled], home=mesh.home)
    assert len(result.started) == 2 and len(result.stopped) == 1
    status = mesh_status(home=mesh.home)
    resnet50 = [p for p in status.state.pods if p.labels["version"] == "resnet50"]
    assert len(resnet50) == 2 and all(status.pods_running[p.name] for p in resnet50)
    stopped = [old[name] for name in result.stopped]
    assert not any(procs.is_running(p.pid, p.marker) for p in stopped)
    before = mesh.counts()
    traffic = send_rest(mesh.url, 100, PHOTO_BODY, concurrency=4, deadline_s=60)
    assert traffic.failures == 0
    assert _delta(before, mesh.counts())["resnet50"] == 100
    mesh.state = status.state  # later tests check these pids
    # back to one replica, as the base manifests say
    mesh_apply([default_manifests("base", "deployment-resnet50.yaml")], home=mesh.home)
    mesh.state = mesh_status(home=mesh.home).state


def test_a_pod_whose_kubelet_died_is_started_again_by_the_next_apply(mesh: RunningMesh) -> None:
    import os
    import signal

    victim = next(p for p in mesh_status(home=mesh.home).state.pods if p.labels["version"] == "resnet101")
    os.kill(victim.pid, signal.SIGKILL)
    assert not mesh_status(home=mesh.home).pods_running.get(victim.name, False)
    mesh.apply("routing", "virtualservice-focused-routing.yaml")
    status = mesh_status(home=mesh.home)
    assert all(status.pods_running.values())
    assert _rest(mesh, 20, CANARY)["resnet101"] == 20
    # the successor has the dead pod's name: cleaning up after the dead one must not stop it
    container = mesh_status(home=mesh.home).containers[victim.name]
    assert (container.restarts, container.last_exit) == (0, None), container
    mesh.state = status.state


def test_status_json_through_the_cli(mesh: RunningMesh, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANARY_HOME", str(mesh.home))
    assert main(["mesh", "status", "--json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["ingress_url"] == mesh.url
    assert {p["labels"]["version"] for p in doc["pods"]} == {"resnet50", "resnet101"}
    assert all(p["running"] for p in doc["pods"])
    assert "resnet50" in doc["counters"]


def test_mesh_down_leaves_no_process_behind(mesh: RunningMesh, monkeypatch: pytest.MonkeyPatch) -> None:
    pids = mesh.pids()
    assert all(procs.is_running(pid, marker) for pid, marker in pids)
    monkeypatch.setenv("CANARY_HOME", str(mesh.home))
    assert main(["mesh", "down"]) == 0
    assert not any(procs.is_running(pid, marker) for pid, marker in pids)
    assert main(["mesh", "status"]) == 3  # no mesh: a clear error, not a traceback
