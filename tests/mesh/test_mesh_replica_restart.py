"""A replica killed under load: its kubelet restarts it on the same ports, and Envoy's health
checks take it out of the load balancing within about a second and put it back once it serves.

The local mesh runs one tiny Deployment of two replicas; a few clients send a bounded REST
load through the ingress; one replica's model server is killed with SIGKILL mid-run. The
mesh itself is started with a PYTHONPATH holding a sitecustomize.py and a stray variable in
its environment: neither may reach a pod.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from canary.conventions import rest_predict_path
from canary.errors import ProcessExitedError
from mesh.api import default_manifests, mesh_down, mesh_status, mesh_up
from mesh.local import pod_processes, procs
from mesh.local.envoy import EnvoyAdmin
from mesh.local.kubelet import KubeletStatus
from mesh.local.state import MeshHome, MeshState, PodState
from payloads import load_payloads

pytestmark = pytest.mark.integration

BODY = load_payloads().get("grace_hopper").body("b64")
REST_CLUSTER = "outbound|8501||image-classifier.tf-serving.svc.cluster.local"
MODEL_STATUS = "/v1/models/image_classifier"
MAX_REQUESTS = 20000  # the load's bounds: requests and seconds (it stops when the test has seen enough)
DEADLINE_S = 180.0
CLIENTS = 4
PAUSE_S = 0.005  # between a client's requests: CPU left for the replica restarting on this machine
LEAK = "CANARY_TEST_MESH_OWN_ONLY"


@dataclass
class Mesh:
    home: Path
    state: MeshState
    hooks_ran: Path

    @property
    def admin(self) -> EnvoyAdmin:
        return EnvoyAdmin(self.state.admin_socket)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny models exported once for the module, linked into each mesh home."""
    from serving.export import ensure_models

    path = tmp_path_factory.mktemp("store") / "tiny"
    ensure_models(path, tiny=True)
    return path


def _home(root: Path, store: Path) -> Path:
    home = root / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / "tiny").symlink_to(store)
    return home


def _resnet50_only(root: Path, replicas: int, model_path: str = "/models/resnet50") -> Path:
    """The base manifests with the ResNet50 Deployment alone, scaled to ``replicas``."""
    manifests = root / "manifests"
    shutil.copytree(default_manifests("base"), manifests)
    (manifests / "deployment-resnet101.yaml").unlink()
    deployment = manifests / "deployment-resnet50.yaml"
    deployment.write_text(deployment.read_text().replace("replicas: 1", f"replicas: {replicas}"))
    configs = manifests / "configmaps.yaml"
    configs.write_text(configs.read_text().replace("MODEL_PATH: /models/resnet50", f"MODEL_PATH: {model_path}"))
    return manifests


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, store: Path) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("replicas")
    manifests = _resnet50_only(root, replicas=2)
    hooks, ran = root / "hooks", root / "hooks-ran"
    hooks.mkdir()
    ran.mkdir()
    (hooks / "sitecustomize.py").write_text(
        "import os\n"
        f"open(os.path.join({str(ran)!r}, str(os.getpid())), 'wb').write(open('/proc/self/cmdline', 'rb').read())\n"
    )
    home = _home(root, store)
    with pytest.MonkeyPatch.context() as patch:  # the mesh's own environment, as a user's shell may have it
        patch.setenv("PYTHONPATH", str(hooks))
        patch.setenv(LEAK, "1")
        state = mesh_up([manifests], tiny=True, port=procs.free_port(), home=home)
    try:
        yield Mesh(home, state, ran)
    finally:
        mesh_down(home=home)


@dataclass
class Load:
    """A bounded REST load from a few clients; each request's start time and outcome."""

    url: str
    records: list[tuple[float, str]] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)  # start and Envoy's words
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        host, port = self.url.removeprefix("http://").split(":")
        budget = itertools.count()
        stop_at = time.monotonic() + DEADLINE_S

        def client() -> None:
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            while not self.stop.is_set() and next(budget) < MAX_REQUESTS and time.monotonic() < stop_at:
                began = time.monotonic()
                try:
                    conn.request("POST", rest_predict_path(), body=BODY, headers={"Content-Type": "application/json"})
                    response = conn.getresponse()
                    said = response.read()[:160].decode(errors="replace")
                    outcome = str(response.status)
                except (OSError, http.client.HTTPException) as error:
                    outcome, said = type(error).__name__, str(error)
                    conn.close()
                    conn = http.client.HTTPConnection(host, int(port), timeout=30)
                with self.lock:
                    self.records.append((began, outcome))
                    if outcome != "200":
                        self.failures.append((began, f"{outcome} {said}"))
                time.sleep(PAUSE_S)  # pacing, not waiting for an event (a timed Event.wait can hang under gevent)
            conn.close()

        with ThreadPoolExecutor(CLIENTS) as pool:
            for future in [pool.submit(client) for _ in range(CLIENTS)]:
                future.result()

    def count(self) -> int:
        with self.lock:
            return len(self.records)


def _host(mesh: Mesh, port: int) -> dict[str, Any]:
    """Envoy's view of one endpoint of the subset-less REST cluster."""
    clusters = orjson.loads(mesh.admin.get("/clusters?format=json"))["cluster_statuses"]
    cluster = next(c for c in clusters if c["name"] == REST_CLUSTER)
    return next(h for h in cluster["host_statuses"] if h["address"]["socket_address"]["port_value"] == port)


def _failing(host: dict[str, Any]) -> bool:
    return bool(host["health_status"].get("failed_active_health_check"))


def _requests(host: dict[str, Any]) -> int:
    return next(int(s.get("value", 0)) for s in host["stats"] if s["name"] == "rq_total")


def _await(condition: Any, what: str, timeout: float = 60.0) -> float:
    """Poll ``condition`` every 10 ms; the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f}s"
        time.sleep(0.01)
    return time.monotonic()


def test_a_killed_replica_is_restarted_and_envoy_routes_around_it(mesh: Mesh) -> None:
    victim: PodState = mesh_status(home=mesh.home).state.pods[0]
    before = pod_processes.container_status(victim)
    assert before is not None and before.state == "running" and before.restarts == 0
    rest_port = victim.ports[8501]
    load = Load(mesh.state.ingress_url)
    runner = threading.Thread(target=load.run)
    runner.start()
    try:
        _await(lambda: load.count() >= 100, "the load getting going")
        killed = time.monotonic()
        os.kill(before.server_pid, signal.SIGKILL)
        out = _await(lambda: _failing(_host(mesh, rest_port)), "Envoy marking the killed replica unhealthy")

        def restarted() -> KubeletStatus | None:
            status = pod_processes.container_status(victim)
            return status if status and status.state == "running" and status.server_pid != before.server_pid else None

        _await(lambda: restarted() is not None, "the kubelet restarting the model server")
        serving = _await(lambda: procs.probe_http(rest_port, MODEL_STATUS), "the restarted replica serving", 120)
        back = _await(lambda: not _failing(_host(mesh, rest_port)), "Envoy taking the replica back")
        served_before = _requests(_host(mesh, rest_port))
        _await(lambda: _requests(_host(mesh, rest_port)) > served_before + 20, "requests reaching the replica again")
        settled = load.count()
        _await(lambda: load.count() > settled + 200 or not runner.is_alive(), "more requests after it came back")
        assert load.count() > settled + 200, "the load reached its bounds before the replica was back"
    finally:
        load.stop.set()
        runner.join(DEADLINE_S)
    assert not runner.is_alive()

    after = [outcome for began, outcome in load.records if began >= killed]
    failed = [outcome for outcome in after if outcome != "200"]
    print(
        f"\nreplica kill: {len(failed)}/{len(after)} requests after the kill failed "
        f"({sorted(set(failed))}), {len(load.records)} in all; Envoy stopped sending to it after "
        f"{out - killed:.3f}s, it served again after {serving - killed:.2f}s, "
        f"back in Envoy's rotation after {back - killed:.2f}s; failures at "
        f"{[(round(at - killed, 3), said) for at, said in load.failures]}"
    )
    assert len(after) >= 300
    assert len(failed) <= 0.02 * len(after), sorted(failed)
    assert out - killed < 2.0

    now = restarted()
    assert now is not None and now.restarts == 1 and now.last_exit is not None
    assert now.last_exit.signal == "SIGKILL"
    cmdline = Path(f"/proc/{now.server_pid}/cmdline").read_bytes().split(b"\0")
    assert f"--rest_api_port={rest_port}".encode() in cmdline  # the same ports: no push needed
    status = mesh_status(home=mesh.home)
    assert status.pods_running[victim.name] and status.containers[victim.name].restarts == 1
    assert next(p for p in status.state.pods if p.name == victim.name).ports == victim.ports
    pod = next(p for p in status.to_dict()["pods"] if p["name"] == victim.name)
    assert pod["container"]["restarts"] == 1 and pod["container"]["server_pid"] == now.server_pid
    assert pod["container"]["last_exit"]["signal"] == "SIGKILL"


def test_the_pods_environment_is_the_containers(mesh: Mesh) -> None:
    """Nothing of the mesh's own environment but the container's base reaches a model server:
    no PYTHONPATH (its sitecustomize never ran in a pod), no stray variable, loopback only."""
    for pod in mesh_status(home=mesh.home).state.pods:
        status = pod_processes.container_status(pod)
        assert status is not None
        raw = Path(f"/proc/{status.server_pid}/environ").read_bytes()
        env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        assert b"PYTHONPATH" not in env and LEAK.encode() not in env
        assert env[b"CANARY_BIND_HOST"] == b"127.0.0.1" and env[b"CANARY_POD"] == pod.marker.encode()
        assert env[b"HOME"].startswith(str(mesh.home).encode())
    hooked = [p.read_bytes() for p in mesh.hooks_ran.iterdir()]
    assert not [c for c in hooked if b"serving.server" in c or b"mesh.local.kubelet" in c], hooked


def test_mesh_down_stops_a_pod_whose_kubelet_was_killed(mesh: Mesh) -> None:
    pods = mesh_status(home=mesh.home).state.pods
    servers = [(s.server_pid, p.marker) for p in pods if (s := pod_processes.container_status(p))]
    assert len(servers) == len(pods) == 2 and all(procs.is_running(*s) for s in servers)
    pod_marker = f"{MeshHome(mesh.home).root}#"
    assert {p.pid for p in pods} | {pid for pid, _ in servers} <= set(_processes_with(pod_marker))
    os.kill(pods[1].pid, signal.SIGKILL)  # the kubelet: its server gets SIGTERM, and down stops it anyway
    mesh_down(home=mesh.home)
    assert not any(procs.is_running(pid, marker) for pid, marker in servers)
    assert not any(procs.is_running(p.pid, p.marker) for p in pods)
    assert _processes_with(pod_marker) == []


def _processes_with(marker: str) -> list[int]:
    """Pids whose command line or environment carries ``marker`` (looked at, never signalled)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                carries = marker.encode() in (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
                if carries and (proc / "stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z":
                    found.append(int(proc.name))
    return found


def test_a_pod_that_keeps_failing_at_start_fails_mesh_up_with_its_log(tmp_path: Path, store: Path) -> None:
    """The kubelet would restart it for ever; ``mesh up`` gives up after RESTARTS tries, says the
    server's own words, and leaves no process behind."""
    home = _home(tmp_path, store)
    manifests = _resnet50_only(tmp_path, replicas=1, model_path="/models/no-such-model")
    with pytest.raises(ProcessExitedError) as failure:
        mesh_up([manifests], tiny=True, port=procs.free_port(), home=home)
    message = str(failure.value)
    print(f"\n{message}")
    assert "exited before it was ready" in message and "/models/no-such-model" in message
    assert "kubelet] the model server" in message  # the kubelet's own line about the exit
    assert _processes_with(f"{MeshHome(home).root}#") == []
