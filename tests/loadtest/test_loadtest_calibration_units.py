"""Calibration edges without servers: files, payload checks, arguments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from canary.errors import CalibrationError, UsageError
from loadtest.calibration import (
    check_payloads,
    default_calibration_path,
    load_calibration,
    parse_endpoint,
    save_calibration,
)
from loadtest.fingerprint import build_calibration
from payloads import FORMATS, load_payloads


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
