"""Calibration edges without servers: mesh endpoints from state, files, payload checks, arguments."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from canary.errors import CalibrationError, UsageError
from loadtest.calibration import (
    check_payloads,
    default_calibration_path,
    load_calibration,
    mesh_endpoints,
    parse_endpoint,
    save_calibration,
)
from loadtest.fingerprint import build_calibration
from mesh.api import default_manifests
from mesh.local.state import PodState
from mesh.manifests import load_manifests
from payloads import FORMATS, load_payloads


def pod(name: str, version: str, rest: int, grpc: int, **changes) -> PodState:
    base = PodState(
        namespace="tf-serving",
        name=name,
        deployment=f"image-classifier-{version}",
        labels={"app": "image-classifier", "version": version},
        template_hash="h",
        pid=1,
        marker="m",
        ports={8501: rest, 8500: grpc},
        port_names={"http": 8501, "grpc": 8500},
        log="/dev/null",
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def objects():
    return load_manifests([default_manifests("base")])


def test_each_subset_gets_its_first_pod_by_the_destination_rule_labels(objects) -> None:
    pods = [
        pod("rn101-b", "resnet101", 9003, 9004),
        pod("rn50-a", "resnet50", 9001, 9002),
        pod("rn101-a", "resnet101", 9005, 9006),
        pod("other", "resnet50", 9007, 9008, namespace="default"),
        pod("stray", "resnet50", 9009, 9010, labels={"app": "else", "version": "resnet50"}),
    ]
    assert mesh_endpoints(objects, pods) == {
        "resnet101": {"rest": "http://127.0.0.1:9005", "grpc": "127.0.0.1:9006"},
        "resnet50": {"rest": "http://127.0.0.1:9001", "grpc": "127.0.0.1:9002"},
    }


@pytest.mark.parametrize(
    ("pods", "host", "error"),
    [
        (
            [pod("rn50", "resnet50", 1, 2)],
            None,
            r"subset resnet101 of image-classifier\.tf-serving\.svc\.cluster\.local "
            r"\(pods labelled app=image-classifier,version=resnet101\) has no running pod",
        ),
        ([], "nothing", "exactly one DestinationRule host matching 'nothing'"),
        (
            [pod("a", "resnet50", 1, 2, ports={}), pod("b", "resnet101", 3, 4)],
            None,
            "exposes neither port 8501 nor 8500",
        ),
    ],
)
def test_missing_pods_and_hosts_say_what_to_do(objects, pods, host, error) -> None:
    with pytest.raises(CalibrationError, match=error):
        mesh_endpoints(objects, pods, host=host)


def test_the_host_can_be_named_short_or_in_full(objects) -> None:
    pods = [pod("a", "resnet50", 1, 2), pod("b", "resnet101", 3, 4, ports={8501: 3})]
    for host in ("image-classifier", "image-classifier.tf-serving.svc.cluster.local"):
        found = mesh_endpoints(objects, pods, host=host)
        assert found["resnet101"] == {"rest": "http://127.0.0.1:3"}  # no gRPC port: REST only


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "resnet50=http://127.0.0.1:8501,127.0.0.1:8500",
            ("resnet50", {"rest": "http://127.0.0.1:8501", "grpc": "127.0.0.1:8500"}),
        ),
        ("a=127.0.0.1:8500", ("a", {"grpc": "127.0.0.1:8500"})),
        ("a= http://h:1 ", ("a", {"rest": "http://h:1"})),
    ],
)
def test_endpoint_arguments(text: str, expected) -> None:
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize("text", ["resnet50", "=http://h:1", "a=", "a=h:1,h:2"])
def test_bad_endpoint_arguments(text: str) -> None:
    with pytest.raises(UsageError, match="must be SUBSET="):
        parse_endpoint(text)


@pytest.fixture(scope="module")
def payloads():
    return load_payloads()


@pytest.fixture(scope="module")
def calibration(payloads):
    rng = np.random.default_rng(9)
    outputs = {
        p.id: {
            fmt: {
                s: rng.dirichlet(np.ones(1000)).astype(np.float32)
                for s in ("resnet50", "resnet101")
            }
            for fmt in FORMATS
        }
        for p in payloads
    }
    digests = {p.id: dict(p.digests) for p in payloads}
    return build_calibration(outputs, payload_digests=digests)


def test_save_and_load(tmp_path: Path, calibration) -> None:
    path = save_calibration(calibration, tmp_path / "deep" / "calibration.json")
    assert path.read_bytes() == calibration.to_json()
    assert [p.name for p in path.parent.iterdir()] == ["calibration.json"]  # no temporary left
    loaded = load_calibration(path)
    assert loaded.source == "file" and loaded.pairs == calibration.pairs
    with pytest.raises(CalibrationError, match="create it with `canary calibrate`"):
        load_calibration(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(CalibrationError, match=r"bad\.json has format None"):
        load_calibration(tmp_path / "bad.json")


def test_the_load_test_payloads_must_be_the_calibrated_ones(calibration, payloads) -> None:
    check_payloads(calibration, payloads)
    with pytest.raises(
        CalibrationError, match=r"grace_hopper \(instances\) is not the body that was calibrated"
    ):
        check_payloads(calibration, load_payloads(size=None))
    other = load_payloads(Path(__file__).resolve().parents[2] / "payloads" / "images", size=64)
    with pytest.raises(CalibrationError, match="recalibrate with the same images and --size"):
        check_payloads(calibration, other)


def test_missing_payloads_are_reported(calibration, payloads, tmp_path: Path) -> None:
    (tmp_path / "new.jpg").write_bytes(payloads.items[0].jpeg)
    with pytest.raises(
        CalibrationError,
        match=r"new \(instances\) is not calibrated; new \(b64\) is not calibrated",
    ):
        check_payloads(calibration, load_payloads(tmp_path))


def test_default_path_follows_canary_home(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CANARY_HOME", str(tmp_path))
    assert default_calibration_path() == tmp_path / "calibration.json"
    assert default_calibration_path(tmp_path / "x") == tmp_path / "x" / "calibration.json"
