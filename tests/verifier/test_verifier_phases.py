"""Route changes during one run: each phase judged against its own routing, settling requests
kept apart, and how long each change took to take effect."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from commands.verify_split import main
from tests.verifier.synthetic import START, make_run

ROOT = Path(__file__).resolve().parents[2]
RULE = "manifests/base/destinationrule.yaml"


def _objects(*files: str) -> list[dict]:
    return [{"source": f, "document": d} for f in files for d in yaml.safe_load_all((ROOT / f).read_text()) if d]


def _at(ms: float) -> str:
    return (START + dt.timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _routing(phase: int, manifest: str, started_ms: float | None, acked_ms: float | None) -> dict:
    return {"phase": phase, "version": phase + 2, "sha256": f"s{phase}",
            "started_at": _at(started_ms) if started_ms is not None else None,
            "applied_at": _at(acked_ms) if acked_ms is not None else _at(-1000),
            "objects": _objects(RULE, f"manifests/routing/{manifest}")}


@pytest.fixture
def three_phases(tmp_path: Path) -> Path:
    """weight-100 → weight-70 → focused routing in one run (request i starts at START + i ms)."""
    counts = {
        (0, "rest", "default"): {"resnet50": 300},
        (0, "rest", "canary"): {"resnet50": 150},
        # the change to weight-70 starts at 450 ms and is acknowledged at 460 ms: the first
        # 10 requests of phase 1 are settling (answered by resnet50, as either routing may)
        (1, "rest", "default"): {"resnet50": 700, "resnet101": 300},
        (1, "rest", "canary"): {"resnet50": 350, "resnet101": 150},
        # focused routing starts at 1950 ms, acknowledged at 1960 ms; 5 settling requests of
        # the default group still reach resnet101 (only the old routing explains them)
        (2, "rest", "default"): {"resnet101": 5, "resnet50": 200},
        (2, "rest", "canary"): {"resnet101": 200},
    }
    routing = [
        _routing(0, "virtualservice-weight-100.yaml", None, None),
        _routing(1, "virtualservice-weight-70.yaml", 450, 460),
        _routing(2, "virtualservice-focused-routing.yaml", 1950, 1960),
    ]
    return make_run(tmp_path / "run", counts, mesh={"routing": routing}, run_extra={})


def test_each_phase_is_judged_against_its_own_routing(three_phases: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    assert main([str(three_phases), "--tolerance", "0.1", "--json", str(out), "--no-write"]) == 0
    doc = json.loads(out.read_text())
    assert doc["expected_source"] == "the routing recorded as applied in each of the 3 phases"
    pools = {p["name"]: p for p in doc["pools"]}
    assert set(pools) == {
        "phase 0: rest/default + phase 0: rest/canary",  # weight-100: one route, one expectation
        "phase 1: rest/default + phase 1: rest/canary",  # weight-70
        "phase 2: rest/default", "phase 2: rest/canary",  # focused: two routes, never pooled
    }
    assert all(p["status"] == "verified" for p in pools.values())
    phase1 = pools["phase 1: rest/default + phase 1: rest/canary"]
    assert phase1["expected"]["label"] == "resnet50=70%,resnet101=30%" and phase1["pooled"]["n"] == 1490
    phases = doc["phases"]
    assert [(p["phase"], p["requests"], p["settling"]) for p in phases] == [(0, 450, 0), (1, 1500, 10), (2, 405, 10)]
    to_70, to_focused = phases[1]["convergence"], phases[2]["convergence"]
    # weight-100 → 70: the first canary response is the first only the new routing explains
    assert to_70["first_new_s"] == pytest.approx(0.700, abs=1e-6) and to_70["low_s"] == 0.0
    assert to_70["high_s"] == pytest.approx(0.700, abs=1e-6) and to_70["acknowledged_s"] == pytest.approx(0.010)
    # 70 → focused: no response only the new routing explains; the last old-only one bounds it below
    assert to_focused["first_new_s"] is None and to_focused["last_old_s"] == pytest.approx(0.004, abs=1e-6)
    assert (to_focused["low_s"], to_focused["high_s"]) == (pytest.approx(0.004, abs=1e-6), pytest.approx(0.010))


def test_an_expectation_given_applies_to_every_phase(three_phases: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    assert main([str(three_phases), "--expected", "70/30", "--tolerance", "0.1", "--json", str(out),
                 "--no-write"]) == 1
    doc = json.loads(out.read_text())
    assert doc["status"] == "refuted" and "phase 0: rest/default refuted" in doc["reason"]
    assert {g["status"] for g in doc["groups"] if g["phase"] == 1} == {"verified"}
    assert all(p["source"] == "--expected 70/30" for p in doc["phases"])


def test_settling_requests_are_never_judged(three_phases: Path, tmp_path: Path) -> None:
    # had the 5 settling resnet101 responses of phase 2 been judged, focused routing would be refuted
    out = tmp_path / "s.json"
    assert main([str(three_phases), "--tolerance", "0.1", "--json", str(out), "--no-write"]) == 0
    groups = {(g["phase"], g["protocol"], g["group"]): g for g in json.loads(out.read_text())["groups"]}
    # the 10 ms before the acknowledgement hold the 5 resnet101 and the first 5 resnet50 responses
    assert groups[(2, "rest", "default")]["counts"] == {"resnet50": 195}


def test_a_change_never_acknowledged_is_not_judged(tmp_path: Path) -> None:
    counts = {(0, "rest", "default"): {"resnet50": 300}, (1, "rest", "default"): {"resnet101": 50}}
    routing = [_routing(0, "virtualservice-weight-100.yaml", None, None),
               {**_routing(1, "virtualservice-weight-70.yaml", 300, None), "applied_at": None}]
    root = make_run(tmp_path / "run", counts, mesh={"routing": routing})
    out = tmp_path / "s.json"
    assert main([str(root), "--tolerance", "0.1", "--json", str(out), "--no-write"]) == 0
    phases = json.loads(out.read_text())["phases"]
    assert phases[1]["settling"] == 50 and "not acknowledged" in phases[1]["note"]


def test_a_phase_whose_routing_names_no_split_is_not_judged(tmp_path: Path) -> None:
    """The base VirtualService (no subsets) then weight-70: the second phase is still judged."""
    counts = {(0, "rest", "default"): {"resnet50": 100, "resnet101": 100},
              (1, "rest", "default"): {"resnet50": 700, "resnet101": 300}}
    base = {**_routing(0, "virtualservice-weight-70.yaml", None, None),
            "objects": _objects(RULE, "manifests/base/virtualservice.yaml")}
    root = make_run(tmp_path / "run", counts,
                    mesh={"routing": [base, _routing(1, "virtualservice-weight-70.yaml", 200, 200)]})
    out = tmp_path / "s.json"
    assert main([str(root), "--tolerance", "0.1", "--json", str(out), "--no-write"]) == 0
    doc = json.loads(out.read_text())
    assert [p["source"] is None for p in doc["phases"]] == [True, False]
    assert {(g["phase"], g["status"]) for g in doc["groups"]} == {(0, "not judged"), (1, "verified")}
