"""The in-cluster load generator (loadtest.incluster, _args, _client) as its pods run it, on a tiny local mesh.

The master wrapper runs as a real subprocess (``python -m loadtest.incluster master``) with its
ConfigMap, emptyDir and results port pointed at temporary folders and a free port; one worker
joins as ``python -m loadtest.incluster worker`` (``LOCUST_MASTER_NODE_HOST=127.0.0.1``; the
master's port travels as ``--master-bind-port P`` in the run's Locust arguments, which the worker
turns into ``--master-port P``). The client follows it, fetches the run and ends the wrapper.
The calibration is made once against the tiny mesh (``loadtest.calibration.run_calibrate``), as
``canary calibrate`` does. Without a mesh: the settings, the command lines, and the refusals of
an unsafe archive and of a fetch before the run finished.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from canary.errors import CanaryError, MeshError, UsageError
from canary.rundir import read_run
from loadtest.incluster import fetch_run, results_progress, results_status, results_stop
from loadtest.incluster_args import (
    RunSettings,
    locust_master_argv,
    locust_worker_argv,
    read_settings,
)
from mesh.api import default_manifests, mesh_apply, mesh_down, mesh_status, mesh_up
from mesh.local import procs
from tests.load_kit import StubHttp

FOCUSED = ("routing", "virtualservice-focused-routing.yaml")


@dataclass
class Mesh:
    home: Path
    url: str
    calibration: Path

    def counts(self) -> dict[str, int]:
        return {k: v.requests for k, v in mesh_status(home=self.home).counters.items()}


@dataclass
class Pod:
    """The processes a test started (each in its own session), ended at teardown if still running."""

    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, role: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            child = subprocess.Popen([sys.executable, "-m", "loadtest.incluster", role], env={**os.environ, **env},
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=log.parent)
        self.started.append(child)
        return child


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    from loadtest.calibration import run_calibrate
    from serving.export import ensure_models

    home = tmp_path_factory.mktemp("incluster-home")
    ensure_models(home / "models" / "tiny", tiny=True)
    state = mesh_up([default_manifests("base")], tiny=True, port=procs.free_port(), home=home)
    try:
        mesh_apply([default_manifests(*FOCUSED)], home=home)
        calibration = run_calibrate(home / "calibration.json", source="mesh", home=home).path
        yield Mesh(home, state.ingress_url, calibration)
    finally:
        mesh_down(home=home)


@pytest.fixture
def pods() -> Iterator[Pod]:
    pod = Pod()
    yield pod
    for child in pod.started:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=30)


def _config(tmp_path: Path, mesh: Mesh, run_id: str, locust_args: list[str], **more: Any) -> dict[str, str]:
    """A run's ConfigMap, emptyDir and results port, as the pods' environment names them."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "calibration.json").write_bytes(mesh.calibration.read_bytes())
    settings = {"run_id": run_id, "locust_args": locust_args, "workers": 1, **more}
    (config / "settings.json").write_text(json.dumps(settings))
    return {"CANARY_RUN_CONFIG": str(config), "CANARY_RUNS": str(tmp_path / "runs"),
            "CANARY_RESULTS_PORT": str(procs.free_port()), "CANARY_HOME": str(mesh.home)}


def _until(what: str, check: Callable[[], Any], within_s: float = 90.0) -> Any:
    """``check()`` once it is truthy (polled every 0.1 s, at most ``within_s``)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if found := check():
                return found
        except CanaryError:  # the results server is not listening yet
            pass
        time.sleep(0.1)
    pytest.fail(f"{what} within {within_s:g} s")


def _locust_args(mesh: Mesh, tmp_path: Path, *more: str) -> list[str]:
    return ["--headless", "--host", mesh.url, "-u", "4", "-r", "4", "--master-bind-host", "127.0.0.1",
            "--master-bind-port", str(procs.free_port()), "--json-file", str(tmp_path / "stats"), *more]


def _locust_count(tmp_path: Path) -> int:
    return sum(entry["num_requests"] for entry in json.loads((tmp_path / "stats.json").read_text()))


def _worker_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {**env, "LOCUST_MASTER_NODE_HOST": "127.0.0.1", "CANARY_HOME": str(tmp_path / "not-the-mesh")}


@pytest.mark.integration
def test_master_wrapper_runs_serves_and_hands_the_run_home(mesh: Mesh, tmp_path: Path, pods: Pod) -> None:
    env = _config(tmp_path, mesh, "in-cluster-1", _locust_args(mesh, tmp_path, "--requests", "200", "-t", "60s"))
    url = f"http://127.0.0.1:{env['CANARY_RESULTS_PORT']}"
    before = mesh.counts()
    started = time.monotonic()
    master = pods.start("master", env, tmp_path / "master.log")
    # no worker yet: Locust's master waits for it, and nothing can be fetched or ended
    assert _until("the results server answered", lambda: results_status(url))["state"] == "starting"
    assert results_progress(url) == {"state": "starting"}
    with pytest.raises(CanaryError, match=r"not at that point yet.*wait until its /status says finished"):
        fetch_run(url, tmp_path / "home" / "early")
    assert not (tmp_path / "home").exists() or list((tmp_path / "home").iterdir()) == []
    worker = pods.start("worker", _worker_env(env, tmp_path), tmp_path / "worker.log")
    seen: set[str] = set()

    def finished() -> dict[str, Any] | None:
        status = results_status(url)
        seen.add(status["state"])
        return status if status["state"] == "finished" else None

    status = _until("the run finished", finished)
    took = time.monotonic() - started
    assert status == {"state": "finished", "exit_code": 0, "run_id": "in-cluster-1"}, (tmp_path / "master.log").read_text()[-3000:]
    assert "running" in seen and results_progress(url)["requests"] == 200
    assert worker.wait(timeout=60) == 0  # the master's quit ends the worker

    run_dir = fetch_run(url, tmp_path / "home" / "run")
    assert master.wait(timeout=30) == 0  # /done: the wrapper exits with Locust's exit code
    assert run_dir == tmp_path / "home" / "run" and [p.name for p in (tmp_path / "home").iterdir()] == ["run"]
    run = read_run(run_dir)
    doc = json.loads((run_dir / "run.json").read_text())
    records = run.records
    print(f"in-cluster run: {len(records)} records, {took:.1f} s from the wrapper's start to finished")
    assert len(records) == 200 == doc["requests"]["total"] == doc["requests"]["locust"]["requests"] == _locust_count(tmp_path)
    assert doc["records"]["lost"] == {} and doc["records"]["missing"] == 0 and doc["problems"] == []
    assert doc["status"] == "finished" and doc["runner"] == "master"
    assert sum(doc["mesh"]["delta"].values()) == 200 == sum(mesh.counts().values()) - sum(before.values())
    assert set(records["worker"]) != {"local"} and len(set(records["worker"])) == 1
    wanted = {"canary": "resnet101", "default": "resnet50"}
    assert (records["subset"] == records["group"].map(wanted)).all()
    assert "Locust" in (run_dir / "locust.log").read_text()  # Locust's output, also in the pod's log
    with pytest.raises(UsageError, match="already holds"):
        fetch_run(url, run_dir)


@pytest.mark.integration
def test_sigterm_reaches_locust_once_and_the_run_is_still_served(mesh: Mesh, tmp_path: Path, pods: Pod) -> None:
    """The pod's SIGTERM stops the run (Locust keeps every record, exits 130); the wrapper keeps serving."""
    env = _config(tmp_path, mesh, "in-cluster-2", _locust_args(mesh, tmp_path, "-t", "60s"))
    url = f"http://127.0.0.1:{env['CANARY_RESULTS_PORT']}"
    master = pods.start("master", env, tmp_path / "master.log")
    pods.start("worker", _worker_env(env, tmp_path), tmp_path / "worker.log")
    _until("60 requests were made", lambda: results_progress(url).get("requests", 0) >= 60)
    master.send_signal(signal.SIGTERM)
    _until("the wrapper passed SIGTERM on", lambda: "SIGTERM to Locust's master" in (tmp_path / "master.log").read_text())
    assert results_stop(url)["stopping"]  # the local command's Ctrl-C as well: Locust is still signalled once
    status = _until("the run finished", lambda: (s := results_status(url))["state"] == "finished" and s)
    assert status["exit_code"] == 130, (tmp_path / "master.log").read_text()[-3000:]
    assert master.poll() is None  # still serving the run
    run_dir = fetch_run(url, tmp_path / "home" / "run")
    assert master.wait(timeout=30) == 130
    doc = json.loads((run_dir / "run.json").read_text())
    assert doc["status"] == "interrupted" and doc["interrupted"]["signal"] == "SIGTERM"
    records = read_run(run_dir).records
    assert len(records) >= 60 and len(records) == doc["requests"]["total"] == _locust_count(tmp_path)
    assert doc["records"]["lost"] == {} and doc["records"]["missing"] == 0
    told = [line for line in (tmp_path / "master.log").read_text().splitlines() if "to Locust's master" in line]
    assert told == ["canary-loadgen: SIGTERM to Locust's master"]
    print(f"SIGTERM after >= 60 requests: {len(records)} records, all kept")


@pytest.mark.integration
def test_a_run_that_never_started_is_kept_keep_s_and_says_why(mesh: Mesh, tmp_path: Path, pods: Pod) -> None:
    """No worker joins: Locust's master gives up (its exit code, 1), there is no run to fetch (the error
    quotes Locust's log), and the wrapper exits with Locust's code after keep_s without /done."""
    env = _config(tmp_path, mesh, "in-cluster-3", _locust_args(mesh, tmp_path, "--expect-workers-max-wait", "1"),
                  keep_s=3)
    url = f"http://127.0.0.1:{env['CANARY_RESULTS_PORT']}"
    master = pods.start("master", env, tmp_path / "master.log")
    status = _until("Locust gave up", lambda: (s := results_status(url))["state"] == "finished" and s)
    assert status["exit_code"] == 1, (tmp_path / "master.log").read_text()[-3000:]
    with pytest.raises(UsageError, match=r"wrote no run.*Gave up waiting for workers"):
        fetch_run(url, tmp_path / "home" / "run")
    assert list((tmp_path / "home").iterdir()) == []  # nothing half-written
    assert master.wait(timeout=30) == 1


def _tar(*members: tuple[str, bytes | None, bytes]) -> bytes:
    """A tar of (name, link target or None, content) members."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, target, content in members:
            info = tarfile.TarInfo(name)
            if target is not None:
                info.type, info.linkname = target[:1], target[1:].decode()
            info.size = 0 if target is not None else len(content)
            tar.addfile(info, io.BytesIO(content) if target is None else None)
    return out.getvalue()


@pytest.mark.parametrize(("member", "why"), [
    (("../x", None, b"x"), r"'\.\./x' is a path out of the run"),
    (("/etc/x", None, b"x"), "'/etc/x' is an absolute path"),
    (("records", tarfile.SYMTYPE + b"/etc", b""), "'records' is a link"),
    (("run.json", tarfile.LNKTYPE + b"other.json", b""), "'run.json' is a link"),
    (("fifo", tarfile.FIFOTYPE + b"", b""), "'fifo' is not a plain file or folder"),
])
def test_an_unsafe_archive_is_refused_whole(tmp_path: Path, member: tuple[str, bytes | None, bytes],
                                           why: str) -> None:
    body = _tar(("run.json", None, b"{}"), member)
    with StubHttp(200, body, "application/x-tar") as server:
        with pytest.raises(UsageError, match=f"is not a run directory's archive: {why}.*; nothing was saved"):
            fetch_run(server.url, tmp_path / "home" / "run")
        assert server.asked == ["/run.tar"]  # and never /done
    assert list((tmp_path / "home").iterdir()) == []
    assert not (tmp_path / "x").exists() and not (tmp_path / "home" / "x").exists()


def test_a_fetch_before_the_run_finished_says_to_wait(tmp_path: Path) -> None:
    with (StubHttp(409, b'{"state": "running", "exit_code": null}') as server,
          pytest.raises(CanaryError, match=r"not at that point yet .*running.*wait until its /status says finished")):
        fetch_run(server.url, tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


def test_nothing_listening_says_to_check_the_port_forward(tmp_path: Path) -> None:
    with pytest.raises(CanaryError, match="is the port-forward to the master pod up"):
        results_status(f"http://127.0.0.1:{procs.free_port()}", timeout=2)


def _settings(tmp_path: Path, **values: Any) -> Path:
    (tmp_path / "settings.json").write_text(json.dumps({"run_id": "r1", "workers": 2, **values}))
    return tmp_path


@pytest.mark.parametrize("given", [["--processes", "2"], ["--run-dir=/x"], ["-f", "other.py"], ["--master"]])
def test_settings_refuse_what_the_wrapper_gives(tmp_path: Path, given: list[str]) -> None:
    flag = given[0].split("=")[0]
    with pytest.raises(UsageError, match=f"the Locust arguments hold {flag}, which the in-cluster wrapper gives itself"):
        read_settings(_settings(tmp_path, locust_args=["--headless", *given]))


@pytest.mark.parametrize(("values", "field"), [({"run_id": "../x"}, "run_id"), ({"workers": 0}, "workers"),
                                               ({"keep": 1}, "keep")])
def test_settings_are_checked(tmp_path: Path, values: dict[str, Any], field: str) -> None:
    with pytest.raises(UsageError, match=f"settings.json: {field}"):
        read_settings(_settings(tmp_path, **values))


def test_command_lines_of_master_and_worker(tmp_path: Path) -> None:
    args = ("--headless", "--host", "http://ingress", "-u", "8", "-t", "60s", "--master-bind-port=6000",
            "--csv", "out", "--json", "--from-manifest", "/home/me/vs.yaml", "--kube", "--namespace", "tf-serving")
    settings = RunSettings(run_id="r1", locust_args=args, workers=3)
    (tmp_path / "from-manifest.yaml").write_text("kind: VirtualService\n")
    master = locust_master_argv(settings, tmp_path, Path("/runs/r1"))
    assert master[1:4] == ["-m", "locust", "-f"] and master[5:8] == ["--master", "--expect-workers", "3"]
    assert master[-4:] == ["--calibration", str(tmp_path / "calibration.json"), "--run-dir", "/runs/r1"]
    assert "/home/me/vs.yaml" not in master and master[master.index("--from-manifest") + 1] == str(
        tmp_path / "from-manifest.yaml")
    assert master[master.index("--expect-workers-max-wait") + 1] == "600"
    worker = locust_worker_argv(settings, {"LOCUST_MASTER_NODE_HOST": "10.0.0.7"})
    assert worker[5:8] == ["--worker", "--master-host", "10.0.0.7"]
    assert worker[8:] == ["--headless", "--host", "http://ingress", "-u", "8", "-t", "60s", "--from-manifest",
                          "/home/me/vs.yaml", "--kube", "--namespace", "tf-serving", "--master-port", "6000"]
    default = locust_worker_argv(settings, {"LOCUST_MASTER_NODE_PORT": "5557"})
    assert default[7] == "canary-loadgen-master" and "--master-port" not in default


# --- run_in_cluster: the local command's side, with the cluster's Jobs run here ---------------


class LocalLoadgen:
    """The cluster under :func:`loadtest.incluster_load.run_in_cluster`, run here: the rendered
    ConfigMap written to a folder (its volume), the master Job's pod and one worker's started as
    the kubelet would start them, the master's results port reached as a port-forward would."""

    def __init__(self, tmp_path: Path, pods: Pod, mesh: Mesh) -> None:
        self.tmp, self.pods, self.mesh = tmp_path, pods, mesh
        self.config, self.results_port = tmp_path / "etc-canary-run", procs.free_port()
        self.documents: list[dict[str, Any]] = []
        self.removed = 0

    def replace(self, documents: list[dict[str, Any]]) -> None:
        self.documents = documents
        self.config.mkdir()
        data = next(d for d in documents if d["kind"] == "ConfigMap")["data"]
        for name, text in data.items():
            (self.config / name).write_text(text)

    def master_pod(self, run_id: str, timeout_s: float) -> str:
        env = {"CANARY_RUN_CONFIG": str(self.config), "CANARY_RUNS": str(self.tmp / "runs"),
               "CANARY_RESULTS_PORT": str(self.results_port), "CANARY_HOME": str(self.tmp / "pod-home")}
        self.pods.start("master", env, self.tmp / "master.log")
        self.pods.start("worker", _worker_env(env, self.tmp), self.tmp / "worker.log")
        return f"canary-loadgen-master-{run_id[-6:]}"

    @contextlib.contextmanager
    def forward(self, pod: str, port: int) -> Iterator[str]:
        assert port == 8089  # the master's results port, as manifests/loadgen declares it
        address = f"127.0.0.1:{self.results_port}"
        _until("the results server listens", lambda: results_status(f"http://{address}"))
        yield address

    def remove(self) -> None:
        self.removed += 1


@pytest.mark.integration
def test_run_in_cluster_renders_runs_and_brings_the_run_home(mesh: Mesh, tmp_path: Path, pods: Pod,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from canary.rundir.document import CanaryOptions
    from loadtest.incluster_load import InClusterLoad, run_in_cluster
    from loadtest.load import LoadRequest
    from mesh.kube import KubeMesh, connect
    from tests.mesh.fake_apiserver import FakeApiServer
    from tests.mesh.fake_cluster import CLUSTER_RESOURCES, populate

    server = FakeApiServer(CLUSTER_RESOURCES)
    server.start()
    try:  # the cluster the master reads the mesh from: the same manifests as the tiny mesh
        config = server.write_kubeconfig(tmp_path / "kubeconfig", "fake")
        monkeypatch.setenv("KUBECONFIG", str(config))
        populate(server, KubeMesh(connect("fake", config_file=config, discovery_cache=tmp_path / "d.json")),
                 [default_manifests("base"), default_manifests(*FOCUSED)])
        options = CanaryOptions(kube=True, requests=240, calibration=mesh.calibration, run_dir=tmp_path / "run")
        load = LoadRequest(options=options, host=mesh.url, users=4, run_time="60s",
                           extra=("--master-bind-host", "127.0.0.1", "--master-bind-port", str(procs.free_port())))
        cluster = LocalLoadgen(tmp_path, pods, mesh)
        before = mesh.counts()
        result = run_in_cluster(InClusterLoad(load=load, workers=1, image="registry.example/canary-loadgen:1.0"),
                                cluster=cluster, poll_s=0.2)
    finally:
        server.stop()
    assert result.exit_code == 0 and result.run is not None
    assert result.run_dir == tmp_path / "run" and (tmp_path / "run" / "locust.log").is_file()
    run = read_run(result.run_dir)
    assert len(run.records) == run.document.requests.total == 240
    delta = {k: v - before.get(k, 0) for k, v in mesh.counts().items()}
    assert sum(delta.values()) == 240  # every request went through the mesh once
    assert run.document.mesh.backend == "kube" and run.document.mesh.namespace == "tf-serving"
    assert run.document.arguments.canary.kube and run.document.arguments.canary.context is None
    assert run.document.mesh.context == "fake"  # the context this command reached the cluster by, for verify-split
    jobs = {d["metadata"]["name"]: d for d in cluster.documents if d["kind"] == "Job"}
    assert set(jobs) == {"canary-loadgen-master", "canary-loadgen-workers"}
    for job in jobs.values():
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/canary-loadgen:1.0"
    settings = json.loads((cluster.config / "settings.json").read_text())
    assert settings["locust_args"][:3] == ["--headless", "--host", mesh.url] and settings["workers"] == 1
    assert cluster.removed == 1  # the Jobs are deleted afterwards (--keep leaves them)


class BrokenLoadgen:
    """A cluster whose master never starts (``starts=False``) or whose results cannot be reached."""

    def __init__(self, starts: bool) -> None:
        self.starts, self.removed = starts, 0

    def replace(self, documents: list[dict[str, Any]]) -> None:
        pass

    def master_pod(self, run_id: str, timeout_s: float) -> str:
        if not self.starts:
            raise MeshError("the load generator's master did not start within 1s (pod: ErrImagePull)")
        return "canary-loadgen-master-x"

    @contextlib.contextmanager
    def forward(self, pod: str, port: int) -> Iterator[str]:
        yield f"127.0.0.1:{procs.free_port()}"  # nothing listens there

    def remove(self) -> None:
        self.removed += 1


@pytest.mark.parametrize("starts", [False, True])
def test_the_jobs_go_when_nothing_ran_and_stay_with_a_run_that_cannot_be_fetched(
        starts: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from canary.rundir.document import CanaryOptions
    from loadtest import incluster_load
    from loadtest.load import LoadRequest

    monkeypatch.setattr(incluster_load, "_calibration_text", lambda request, kube: "{}")
    load = LoadRequest(options=CanaryOptions(kube=True, run_dir=tmp_path / "run"), users=2, run_time="5s")
    cluster = BrokenLoadgen(starts)
    with pytest.raises(CanaryError) as caught:
        incluster_load.run_in_cluster(incluster_load.InClusterLoad(load=load), cluster=cluster, poll_s=0.05,
                                      grace_s=0.3)
    if starts:  # Locust may hold records: the Jobs stay, and the error says how to fetch the run
        assert cluster.removed == 0 and "Jobs are kept with the run" in str(caught.value)
        assert "port-forward job/canary-loadgen-master 8089" in str(caught.value)
    else:
        assert cluster.removed == 1 and "ErrImagePull" in str(caught.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("flag", "said"), [
    ({"processes": 2}, "--processes goes with a load run here"),
    ({"prometheus": "http://127.0.0.1:9090"}, "--prometheus names a Prometheus reachable from here"),
    ({"extra": ("--expect-workers", "3")}, "--expect-workers, which the in-cluster wrapper gives itself"),
])
def test_what_cannot_travel_to_the_cluster_is_refused_first(flag: dict[str, Any], said: str, tmp_path: Path) -> None:
    from canary.rundir.document import CanaryOptions
    from loadtest.incluster_load import InClusterLoad, run_in_cluster
    from loadtest.load import LoadRequest

    options = CanaryOptions(kube=True, run_dir=tmp_path / "run",
                            **{k: v for k, v in flag.items() if k not in ("processes", "extra")})
    load = LoadRequest(options=options, processes=flag.get("processes"), extra=flag.get("extra", ()))
    with pytest.raises(UsageError, match=said):
        run_in_cluster(InClusterLoad(load=load), cluster=BrokenLoadgen(True))
