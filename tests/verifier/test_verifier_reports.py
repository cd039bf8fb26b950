"""The files: summary.json and report.html in the run directory, --json, --junit, and `canary report`."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from commands.cli import main as canary_main
from commands.verify_split import main
from tests.verifier.synthetic import CELLS, ONLY_50, ONLY_101, WEIGHT_70, drawn_run, make_run
from verifier.report_svg import nice_ticks

FOCUSED = {cell: (ONLY_101 if cell[1] == "canary" else ONLY_50) for cell in CELLS}


@pytest.fixture
def mixed_run(tmp_path: Path) -> Path:
    """rest/default verified, rest/canary refuted (wrong subset), grpc/default inconclusive."""
    counts = {
        ("rest", "default"): {"resnet50": 400},
        ("rest", "canary"): {"resnet101": 390, "resnet50": 10},
        ("grpc", "default"): {"resnet50": 40},
    }
    return make_run(tmp_path / "reports" / "20260131T120000Z-mixed0", counts, seed=2,
                    latency={"resnet50": (40.0, 0.2), "resnet101": (60.0, 0.2)},
                    run_extra={"models": {"resnet50": {"weights": "seeded"}, "resnet101": {"weights": "seeded"}}})


def test_junit_maps_verdicts_to_testcases(mixed_run: Path, tmp_path: Path) -> None:
    junit = tmp_path / "ci" / "junit.xml"
    code = main([str(mixed_run), "--expected", "default: 100/0; canary: 0/100", "--junit", str(junit)])
    assert code == 1
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped"), suite.get("errors")) == ("4", "1", "1", "0")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["status"] == "refuted" and props["exit_code"] == "1" and props["stable"] == "resnet50"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == ["rest/default", "rest/canary", "grpc/default", "crosscheck"]
    assert cases["rest/default"].find("failure") is None and cases["rest/default"].find("skipped") is None
    failure = cases["rest/canary"].find("failure")
    assert failure is not None and failure.get("type") == "refuted"
    assert "came from resnet50" in (failure.get("message") or "")
    assert "expected: resnet50=0%,resnet101=100%" in (failure.text or "")
    skipped = cases["grpc/default"].find("skipped")
    assert skipped is not None and (skipped.get("message") or "").startswith("inconclusive:")
    assert cases["crosscheck"].find("failure") is None  # Envoy's counters agree
    assert all(c.get("classname") == f"verify-split.{mixed_run.name}" for c in cases.values())


def test_summary_and_page_in_the_run_directory(mixed_run: Path) -> None:
    assert main([str(mixed_run), "--expected", "default: 100/0; canary: 0/100"]) == 1
    doc = json.loads((mixed_run / "summary.json").read_text())
    assert doc["format"] == "canary.verify-split/1"
    assert doc["run"]["id"] == mixed_run.name and doc["run"]["requests"] == 840
    assert doc["run"]["canary_header"] == "user-group: canary"
    assert doc["crosscheck"]["status"] == "agree" and doc["crosscheck"]["source"] == "envoy"
    assert doc["confusion"]["rest"]["groups"] == ["default", "canary"]
    assert doc["confusion"]["rest"]["cells"] == [[400, 0], [10, 390]]
    (comparison,) = [c for c in doc["latency"]["comparisons"] if c["protocol"] == "rest"]
    assert comparison["verdict"] == "slower" and comparison["confidence"] == 0.98
    assert doc["accuracy"]["meaningful"] is False
    page = (mixed_run / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    for needle in ("Split per protocol and group", "rest · canary", "refuted", "came from resnet50",
                   "Header group × subset", "Cross-check against the mesh", "Envoy&#x27;s counters",
                   "p50", "p90", "p99", "<svg", "latency histogram", "latency CDF", "polyline",
                   "Accuracy", "seeded", "Wilson"):
        assert needle in page, needle
    assert page.count("<table>") >= 8


def test_canary_report_writes_without_an_expectation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    root = drawn_run(Path("reports/20260131T120000Z-rep001"), {cell: WEIGHT_70 for cell in CELLS}, 200, seed=9)
    assert canary_main(["report"]) == 0  # the newest run; no expectation: counts, latency, accuracy
    doc = json.loads((root / "summary.json").read_text())
    assert doc["status"] == "not judged" and doc["expected_source"] is None and doc["exit_code"] is None
    assert doc["stable"] == "resnet50" and doc["latency"]["comparisons"]  # the conventional stable subset
    assert {g["status"] for g in doc["groups"]} == {"not judged"}
    assert doc["latency"]["stats"] and (root / "report.html").is_file()
    out = capsys.readouterr().out
    assert "NOT JUDGED" in out and "no expected split for this group" in out
    assert canary_main(["report", str(root), "--expected", "50/50"]) == 0  # a report, not a gate
    assert json.loads((root / "summary.json").read_text())["status"] in ("refuted", "inconclusive")
    assert canary_main(["report", str(tmp_path / "nope")]) == 3


def test_canary_report_uses_the_load_tests_expectation(tmp_path: Path) -> None:
    root = drawn_run(tmp_path / "run", FOCUSED, 150, seed=1,
                     expected={"default": {"resnet50": 1.0, "resnet101": 0.0},
                               "canary": {"resnet50": 0.0, "resnet101": 1.0}})
    assert canary_main(["report", str(root)]) == 0
    doc = json.loads((root / "summary.json").read_text())
    assert doc["status"] == "verified" and "run.json" in doc["expected_source"]


def test_unwritable_run_dir_warns_and_keeps_the_verdict(mixed_run: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    (mixed_run / "summary.json").mkdir()  # in the way: the write fails
    assert main([str(mixed_run), "--expected", "100/0"]) == 1
    assert "could not write the reports" in capsys.readouterr().err
    assert main([str(mixed_run), "--expected", "100/0", "--json", str(mixed_run / "summary.json")]) == 3


def test_nice_ticks() -> None:
    assert nice_ticks(0, 100) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(31.2, 58.9, 5) == [35, 40, 45, 50, 55]
    assert nice_ticks(5, 5) == [5]
