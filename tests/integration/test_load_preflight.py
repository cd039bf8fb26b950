"""`canary load`'s first minutes on the tiny local mesh: a target that cannot work is refused before
a run directory exists, a protocol x group without users is warned of, and when requests fail the
terminal says why (a VirtualService that aborts half the requests)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from canary.rundir import read_records
from commands.cli import main as canary
from mesh.api import mesh_apply
from mesh.local import procs
from tests.integration.meshkit import RunningMesh
from tests.load_kit import StubHttp, refused_load

pytestmark = pytest.mark.integration

FAULTS = """\
# Half of the requests of each protocol aborted by the ingress, the rest to the stable model.
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: image-classifier
  namespace: tf-serving
spec:
  hosts: ["*"]
  gateways: [image-classifier-gateway]
  http:
  - name: grpc
    match:
    - uri: {prefix: /tensorflow.serving.PredictionService/}
    - uri: {prefix: /tensorflow.serving.ModelService/}
    fault:
      abort:
        grpcStatus: UNAVAILABLE
        percentage: {value: 50}
    route:
    - destination: {host: image-classifier, subset: resnet50, port: {number: 8500}}
  - name: rest
    fault:
      abort:
        httpStatus: 503
        percentage: {value: 50}
    route:
    - destination: {host: image-classifier, subset: resnet50, port: {number: 8501}}
"""


@pytest.fixture(autouse=True)
def _home(mesh: RunningMesh, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANARY_HOME", str(mesh.home))


@pytest.mark.parametrize(("protocol", "said"), [
    ("both", "over REST (GET /v1/models/image_classifer: 404 Not Found: Could not find any versions of model "
             "image_classifer)"),
    ("grpc", "over gRPC (GetModelStatus: NOT_FOUND: Could not find any versions of model image_classifer)"),
])
def test_a_wrong_model_name_is_refused(mesh: RunningMesh, protocol: str, said: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused_load(["--model-name", "image_classifer", "--protocol", protocol, "--requests", "5"],
                        tmp_path, monkeypatch, capsys)
    assert line == (f"canary: the model server behind {mesh.url} serves no model named 'image_classifer' {said}; "
                    "check --model-name (default image_classifier)")


def test_a_host_that_is_not_the_mesh_is_refused_without_a_calibration(
        mesh: RunningMesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with StubHttp(200, b"<html>not the mesh</html>", "text/html") as plain:
        line = refused_load(["--host", plain.url, "--requests", "5"], tmp_path, monkeypatch, capsys)
    assert line == (f"canary: --host {plain.url} is not the local mesh's ingress ({mesh.url}), so its models "
                    "cannot be calibrated from the local pods: give --calibration FILE "
                    "(`canary calibrate --source endpoints --endpoint ...`)")


def test_nothing_listening_names_the_mesh_ingress(mesh: RunningMesh, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{procs.free_port()}"
    line = refused_load(["--host", url, "--requests", "5"], tmp_path, monkeypatch, capsys)
    assert line == f"canary: nothing is listening at {url} (connection refused); the local mesh's ingress is {mesh.url}"


@pytest.fixture
def faults(mesh: RunningMesh, tmp_path: Path) -> Iterator[None]:
    manifest = tmp_path / "virtualservice-faults.yaml"
    manifest.write_text(FAULTS)
    mesh_apply([manifest], home=mesh.home)
    try:
        yield
    finally:
        mesh.apply("base", "virtualservice.yaml")


def test_failed_requests_are_summed_up_by_reason(faults: None, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """-u 3 with both protocols starts 1 REST user (the canary one) and 2 gRPC users: a warning first.
    Then half of each protocol's requests are aborted, and the end of the output says so, by reason."""
    run_dir = tmp_path / "run"
    code = canary(["load", "--run-dir", str(run_dir), "--protocol", "both", "--canary-share", "0.5", "-u", "3",
                   "--requests", "80"])
    out, err = capsys.readouterr()
    assert code == 1, out + err
    err = " ".join(err.split())
    assert ("warning: -u 3 with --protocol both and --canary-share 0.5: Locust starts 1 REST user and 2 gRPC users, "
            "so rest/default gets no user and sends nothing (verify-split cannot judge it); give -u 4 or more") in err
    records = read_records(run_dir)
    failed = records[~records["ok"]]
    assert 0 < len(failed) < len(records) == 80
    assert set(failed["protocol"]) == {"rest", "grpc"}
    lines = out.splitlines()
    head = lines.index(f"why {len(failed)} requests failed:")
    reasons = {}
    for line in lines[head + 1:head + 3]:
        reason, _, n = line.strip().rpartition(" ×")
        reasons[reason] = int(n)
    assert reasons == {
        "503 Service Unavailable: fault filter abort": int((failed["protocol"] == "rest").sum()),
        "UNAVAILABLE: fault filter abort": int((failed["protocol"] == "grpc").sum()),
    }
    assert list(reasons.values()) == sorted(reasons.values(), reverse=True)  # most common first
    doc = json.loads((run_dir / "run.json").read_text())
    assert doc["requests"]["by_outcome"]["failed"] == len(failed)
