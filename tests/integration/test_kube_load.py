"""``canary load --kube`` end to end, with a cluster made of parts that run here.

The API server is the fake one (tests/mesh/fake_apiserver.py) holding the
same manifests as the tiny local mesh and one pod per Deployment; its pods'
port-forwards (tests/mesh/fake_portforward.py, the websocket protocol the
official client speaks) reach the local mesh's model servers of the same
version, and the ingress is the local mesh's Envoy, given as ``--host``
(a cluster whose ingress gateway Service has no address reachable from here
takes the same flag). So everything ``--kube`` adds is exercised through the
official client: reading the namespace, calibrating each subset through a
port-forward to one of its pods, recording the cluster in run.json; and the
verdict is the same as on the local mesh.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from canary.rundir import read_run
from commands import cli
from commands.verify_split import main as verify_split
from mesh.api import default_manifests, mesh_status
from mesh.kube import KubeMesh, connect
from tests.integration.meshkit import RunningMesh
from tests.mesh.fake_apiserver import FakeApiServer
from tests.mesh.fake_cluster import CLUSTER_RESOURCES, populate
from tests.mesh.fake_portforward import FakePortForward

pytestmark = pytest.mark.integration
WEIGHT_70 = ("routing", "virtualservice-weight-70.yaml")


@pytest.fixture
def cluster(mesh: RunningMesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePortForward]:
    mesh.apply(*WEIGHT_70)
    server = FakeApiServer(CLUSTER_RESOURCES)
    forwards = FakePortForward(server)
    forwards.server = server  # type: ignore[attr-defined]  # the tests change the cluster through it
    server.start()
    try:
        config = server.write_kubeconfig(tmp_path / "kubeconfig", "fake")
        monkeypatch.setenv("KUBECONFIG", str(config))
        monkeypatch.setenv("CANARY_HOME", str(tmp_path / "no-local-mesh"))  # --kube never reads the local mesh
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the client's discovery cache
        populate(server, KubeMesh(connect("fake", config_file=config, discovery_cache=tmp_path / "d.json")),
                 [default_manifests("base"), default_manifests(*WEIGHT_70)])
        local = mesh_status(home=mesh.home).state.pods
        for (_, plural, namespace, name), pod in server.objects.items():
            if plural == "pods":
                same = next(p for p in local if p.labels.get("version") == pod["metadata"]["labels"]["version"])
                forwards.add_pod(namespace, name, {c: ("127.0.0.1", h) for c, h in same.ports.items()})
        yield forwards
    finally:
        server.stop()


def test_canary_load_on_a_cluster_calibrates_through_port_forwards(
    mesh: RunningMesh, cluster: FakePortForward, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    code = cli.main(["load", "--kube", "--context", "fake", "--host", mesh.url, "--requests", "300", "-u", "4",
                     "-t", "90s", "--run-dir", str(run)])
    assert code == 0, capsys.readouterr()
    document = read_run(run).document
    assert document.mesh.backend == "kube" and document.mesh.context == "fake"
    assert document.mesh.namespace == "tf-serving" and document.mesh.ingress_url == mesh.url
    assert [o.document["kind"] for o in document.mesh.routing[0].objects] == [
        "DestinationRule", "Gateway", "VirtualService"]  # the routing live on the cluster, read back
    calibration = document.calibration
    assert calibration.given is None and calibration.model_extra and calibration.model_extra["through"] == "port-forward"
    assert calibration.endpoints == {  # the pods' own addresses, as the cluster lists them
        "resnet101": {"rest": "http://10.8.0.11:8501", "grpc": "10.8.0.11:8500"},
        "resnet50": {"rest": "http://10.8.0.12:8501", "grpc": "10.8.0.12:8500"},
    }
    assert cluster.streams >= 4  # each subset's REST and gRPC port, at least once
    assert document.requests.total == 300 and document.requests.by_outcome.get("attributed") == 300
    assert verify_split([str(run), "--expected", "70/30", "--tolerance", "0.1", "--no-write"]) == 0


def test_a_subset_with_no_ready_pod_is_left_out_of_the_calibration_and_said(
    mesh: RunningMesh, cluster: FakePortForward, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    run = tmp_path / "run"
    for key, pod in cluster.server.objects.items():  # the fake API server the port-forwards hang on
        if key[1] == "pods" and pod["metadata"]["labels"]["version"] == "resnet101":
            pod["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    code = cli.main(["load", "--kube", "--host", mesh.url, "--requests", "60", "-u", "2", "-t", "60s",
                     "--run-dir", str(run)])
    assert code == 1  # resnet101's answers (30% of the default group) cannot be attributed
    document = json.loads((run / "run.json").read_text())
    assert set(document["calibration"]["endpoints"]) == {"resnet50"}
    assert document["calibration"]["skipped"]["resnet101"].startswith("no ready pod serves it")
    assert document["requests"]["by_outcome"]["attributed"] + document["requests"]["by_outcome"]["unknown"] == 60
