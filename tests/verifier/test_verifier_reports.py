"""The files: summary.json and report.html in the run directory, --json, --junit, and `canary report`."""

from __future__ import annotations

import csv
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from commands.cli import main as canary_main
from commands.verify_split import main
from tests.verifier.synthetic import CELLS, ONLY_50, ONLY_101, WEIGHT_70, drawn_run, make_run

ROOT = Path(__file__).resolve().parents[2]
FOCUSED = {cell: (ONLY_101 if cell[1] == "canary" else ONLY_50) for cell in CELLS}


@pytest.fixture
def mixed_run(tmp_path: Path) -> Path:
    """rest/canary refuted (wrong subset); rest/default and grpc/default verified, pooled (one --expected)."""
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
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped"), suite.get("errors")) == ("4", "1", "0", "0")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["status"] == "refuted" and props["exit_code"] == "1" and props["stable"] == "resnet50"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == ["rest/default", "rest/canary", "grpc/default", "crosscheck"]
    assert cases["rest/default"].find("failure") is None and cases["rest/default"].find("skipped") is None
    failure = cases["rest/canary"].find("failure")
    assert failure is not None and failure.get("type") == "refuted"
    assert "came from resnet50" in (failure.get("message") or "")
    assert "expected: resnet50=0%,resnet101=100%" in (failure.text or "")
    assert cases["grpc/default"].find("skipped") is None and cases["grpc/default"].find("failure") is None
    assert "judged in pool: rest/default + grpc/default" in (cases["grpc/default"].find("system-out").text or "")
    assert cases["crosscheck"].find("failure") is None  # Envoy's counters agree
    assert all(c.get("classname") == f"verify-split.{mixed_run.name}" for c in cases.values())
    # too few responses to verify a header route (40 < 122): inconclusive is "skipped"
    small = make_run(tmp_path / "small", {("rest", "default"): {"resnet50": 40}})
    assert main([str(small), "--expected", "100/0", "--junit", str(junit), "--no-write"]) == 2
    skipped = ET.parse(junit).getroot().find("testsuite/testcase/skipped")
    assert skipped is not None and (skipped.get("message") or "").startswith("inconclusive:")
    assert "122 attributed responses would decide it" in (skipped.get("message") or "")


def test_summary_and_page_in_the_run_directory(mixed_run: Path) -> None:
    assert main([str(mixed_run), "--expected", "default: 100/0; canary: 0/100"]) == 1
    doc = json.loads((mixed_run / "summary.json").read_text())
    assert doc["format"] == "canary.verify-split/1"
    assert doc["run"]["id"] == mixed_run.name and doc["run"]["requests"] == 840
    assert doc["run"]["canary_header"] == "user-group: canary"
    assert doc["crosscheck"]["status"] == "agree" and doc["crosscheck"]["source"] == "envoy"
    assert doc["confusion"]["rest"]["groups"] == ["default", "canary"]
    assert doc["confusion"]["rest"]["cells"] == [[400, 0], [10, 390]]
    rest = [c for c in doc["latency"]["comparisons"] if c["protocol"] == "rest"]
    assert sorted(c["format"] for c in rest) == ["b64", "instances"]  # like with like
    for comparison in rest:
        assert comparison["verdict"] == "slower" and comparison["confidence"] == 0.98
        assert comparison["line"].startswith("resnet101 slower by") and "p99 ×1." in comparison["line"]
    assert doc["accuracy"]["meaningful"] is False
    page = (mixed_run / "report.html").read_text()
    offline = re.sub(r'xmlns(:\w+)?="http[^"]*"', "", page)  # namespace names, never fetched
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "http" not in offline
    for needle in ("Split per pool of cells", "rest/canary", "refuted", "came from resnet50",
                   "Every check of this run", "interval inside band",
                   "Header group × subset", "Cross-check against the mesh", "Envoy&#x27;s counters",
                   "p50", "p90", "p99", "<svg", "histogram", "CDF", "<path",
                   "Accuracy", "seeded", "Wilson"):
        assert needle in page, needle
    assert page.count("<table>") >= 8
    for needle in ("The run", "Over time", "requests per second per subset", "share of attributed responses",
                   "Canary against stable", "resnet101 slower by", "p99 ×", "top-5", "(95% interval)"):
        assert needle in page, needle

    with open(mixed_run / "latency.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["protocol"], r["format"], r["subset"]) for r in rows} >= {("rest", "b64", "resnet50")}
    assert all(float(r["p50_low"]) <= float(r["p50"]) <= float(r["p50_high"]) for r in rows if r["p50_high"])
    # the synthetic server time is 0.8 of the client's, in whole milliseconds (as Envoy reports it)
    assert all(abs(float(r["server_p50"]) - 0.8 * float(r["p50"])) < 2 for r in rows if int(r["n"]) > 20)
    for name in ("latency_comparisons.csv", "timeline.csv", "accuracy.csv"):
        assert (mixed_run / name).is_file(), name
    assert doc["run"]["facts"]["requests"] == 840 and doc["run"]["facts"]["seeded"] is True


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


def _recorded_routing(*files: str) -> dict:
    """run.json's mesh section as the load test writes it on the local mesh: phase 0's routing."""
    objects = [
        {"source": str(ROOT / f), "document": doc}
        for f in files
        for doc in yaml.safe_load_all((ROOT / f).read_text())
        if doc
    ]
    return {"local": True, "routing": [{"phase": 0, "version": 3, "sha256": "x", "objects": objects}]}


def test_judged_against_the_routing_recorded_as_applied(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = drawn_run(tmp_path / "run", {cell: WEIGHT_70 for cell in CELLS}, 1500, seed=5)
    run_json = root / "run.json"
    doc = json.loads(run_json.read_text())
    doc["mesh"] = _recorded_routing("manifests/base/destinationrule.yaml", "manifests/routing/virtualservice-weight-70.yaml")
    run_json.write_text(json.dumps(doc))
    assert canary_main(["report", str(root)]) == 0
    summary = json.loads((root / "summary.json").read_text())
    assert summary["expected_source"].startswith("the routing recorded as applied")
    assert "nowhere" not in capsys.readouterr().out
    # the weight-70 VirtualService has a REST route and a gRPC route: two pools, never one
    assert [p["cells"] for p in summary["pools"]] == [["rest/default", "rest/canary"], ["grpc/default", "grpc/canary"]]
    assert [p["route"] for p in summary["pools"]] == ["rest", "grpc"]
    assert main([str(root), "--no-write"]) in (0, 2)  # verify-split needs no --expected either
    # a base VirtualService (no subsets) says no split: report counts only; verify-split asks for one
    doc["mesh"] = _recorded_routing("manifests/base/destinationrule.yaml", "manifests/base/virtualservice.yaml")
    run_json.write_text(json.dumps(doc))
    assert canary_main(["report", str(root)]) == 0
    assert json.loads((root / "summary.json").read_text())["status"] == "not judged"
    assert main([str(root), "--no-write"]) == 3
    assert "without a subset" in capsys.readouterr().err


def test_every_check_is_kept_newest_first(tmp_path: Path) -> None:
    root = drawn_run(tmp_path / "run", {cell: WEIGHT_70 for cell in CELLS}, 1500, seed=7)
    assert main([str(root), "--expected", "90/10"]) == 1
    assert main([str(root), "--expected", "70/30", "--tolerance", "0.05"]) == 0
    assert main([str(root), "--expected", "70/30", "--tolerance", "0.05"]) == 0  # the same check again
    summary = json.loads((root / "summary.json").read_text())
    checks = summary["checks"]
    assert [c["status"] for c in checks] == ["verified", "refuted"]
    assert checks[0]["expected_source"] == "--expected 70/30" and checks[0]["policy"]["tolerance"] == 0.05
    assert checks[1]["expected_source"] == "--expected 90/10" and checks[1]["exit_code"] == 1
    assert checks[0]["generated_at"] > checks[1]["generated_at"]
    assert len(list((root / "checks").glob("*.json"))) == 2
    page = (root / "report.html").read_text()
    assert page.index("--expected 70/30") < page.index("--expected 90/10")
    assert canary_main(["report", str(root)]) == 0  # no expectation: not a check, the others stay
    assert len(json.loads((root / "summary.json").read_text())["checks"]) == 2
