"""``verify-split`` through ``main(argv)``: every exit code, planning, newest-run discovery, and
simulation: synthetic runs drawn from a known truth must be judged as that truth says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from commands.verify_split import main
from tests.verifier.synthetic import CELLS, ONLY_50, ONLY_101, WEIGHT_70, drawn_run, make_run

ROOT = Path(__file__).resolve().parents[2]
ROUTING = ROOT / "manifests" / "routing"
FOCUSED_TRUTH = {cell: (ONLY_101 if cell[1] == "canary" else ONLY_50) for cell in CELLS}


@pytest.fixture(scope="module")
def weight_70_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A true 70/30 split, n = 4000 per protocol x group (the plan for ±3 points asks 3,621)."""
    reports = tmp_path_factory.mktemp("w70") / "reports"
    return drawn_run(reports / "20260131T120000Z-a70a70", {cell: WEIGHT_70 for cell in CELLS}, 4000, seed=3)


def _summary(path: Path) -> dict:
    return json.loads(path.read_text())


def test_true_70_30_is_verified(weight_70_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.json"
    assert main([str(weight_70_run), "--expected", "70/30", "--json", str(out), "--no-write"]) == 0
    doc = _summary(out)
    assert doc["status"] == "verified" and doc["exit_code"] == 0 and doc["stable"] == "resnet50"
    assert [(g["protocol"], g["group"], g["status"]) for g in doc["groups"]] == [
        (p, g, "verified") for p, g in CELLS]
    assert [p["judged"] for p in doc["pools"]] == ["pooled"]  # one --expected: the four cells pooled
    assert doc["pools"][0]["cells"] == [f"{p}/{g}" for p, g in CELLS]
    assert doc["alpha"] == {"cell": pytest.approx(0.01 / 8), "pool": pytest.approx(0.005)}
    text = capsys.readouterr().out
    assert "rest/default + rest/canary + grpc/default + grpc/canary — VERIFIED" in text
    assert "overall: VERIFIED (exit code 0)" in text
    assert "interval inside band" in text and "homogeneity χ²" in text
    assert "wrong-subset share" not in text  # a weighted route: nothing is expected at zero


def test_true_70_30_against_50_50_is_refuted(weight_70_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    assert main([str(weight_70_run), "--expected", "50/50", "--json", str(out), "--no-write"]) == 1
    doc = _summary(out)
    assert {g["status"] for g in doc["groups"]} == {"refuted"}
    assert "wholly beyond ±3 points" in doc["reason"]
    assert len(doc["reason"].split("; ")) == 4  # one line per failing cell


def test_named_and_reversed_specs(weight_70_run: Path) -> None:
    assert main([str(weight_70_run), "--expected", "resnet101=30,resnet50=70", "--no-write"]) == 0
    assert main([str(weight_70_run), "--expected", "30/70", "--stable", "resnet101", "--no-write"]) == 0
    assert main([str(weight_70_run), "--expected", "30/70", "--no-write"]) == 1  # resnet50 is stable


def test_weight_70_manifest_verifies(weight_70_run: Path) -> None:
    assert main([str(weight_70_run), "--from-manifest", str(ROUTING / "virtualservice-weight-70.yaml"),
                 "--no-write"]) == 0


def test_focused_routing_from_the_manifest(tmp_path: Path) -> None:
    root = drawn_run(tmp_path / "run", FOCUSED_TRUTH, 300, seed=4)
    out = tmp_path / "s.json"
    manifest = str(ROUTING / "virtualservice-focused-routing.yaml")
    assert main([str(root), "--from-manifest", manifest, "--json", str(out), "--no-write"]) == 0
    doc = _summary(out)
    for group in doc["groups"]:
        verdict = group["verdict"]
        target = "resnet101" if group["group"] == "canary" else "resnet50"
        assert verdict["status"] == "verified" and verdict["kind"] == "deterministic"
        assert verdict["counts"] == {target: 300}
        assert verdict["wrong"]["count"] == 0 and verdict["wrong"]["upper_bound"] < 0.013
        assert group["route"] == group["protocol"] + ("-canary" if group["group"] == "canary" else "")
    assert [p["judged"] for p in doc["pools"]] == ["alone"] * 4  # four routes: nothing pooled
    assert main([str(root), "--expected", "default: 100/0; canary: 0/100", "--no-write"]) == 0
    assert main([str(root), "--expected", "70/30", "--no-write"]) == 1


def test_weight_100_verified_with_zero_canary(tmp_path: Path) -> None:
    root = drawn_run(tmp_path / "run", {cell: ONLY_50 for cell in CELLS}, 200, seed=6)
    out = tmp_path / "s.json"
    assert main([str(root), "--from-manifest", str(ROUTING / "virtualservice-weight-100.yaml"),
                 "--json", str(out), "--no-write"]) == 0
    doc = _summary(out)
    assert all(g["counts"].get("resnet101", 0) == 0 for g in doc["groups"])
    assert all(g["expected"]["shares"] == {"resnet50": 1.0, "resnet101": 0.0} for g in doc["groups"])
    assert main([str(root), "--expected", "100/0", "--no-write"]) == 0


def test_too_few_requests_is_inconclusive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = drawn_run(tmp_path / "run", {("rest", "default"): WEIGHT_70}, 60, seed=8)
    out = tmp_path / "s.json"
    assert main([str(root), "--expected", "70/30", "--json", str(out), "--no-write"]) == 2
    text = capsys.readouterr().out
    assert "attributed responses would likely decide it" in text
    doc = json.loads(out.read_text())
    need = doc["groups"][0]["verdict"]["decide_n"]
    # one cell holds every request: the run to copy is that many requests, in the run's own mix
    assert doc["next_run"] == f"canary load --requests {need} --protocol both --canary-share 0.2"
    assert "a run of this size would likely decide it: canary load --requests" in text


def test_a_split_inside_the_tolerance_is_not_refuted(tmp_path: Path) -> None:
    """73.5/26.5 over 1507 requests: the deviation's interval (0.5–6.4 points) straddles ±3."""
    root = make_run(tmp_path / "run", {("rest", "default"): {"resnet50": 1108, "resnet101": 399}})
    out = tmp_path / "s.json"
    assert main([str(root), "--expected", "70/30", "--json", str(out), "--no-write"]) == 2
    verdict = _summary(out)["groups"][0]["verdict"]
    assert verdict["sample_ratio"]["mismatch"] is True  # significant, so shown as a finding
    assert verdict["deviation"]["ci_low"] < 0.03 < verdict["deviation"]["ci_high"]


def test_unknown_responses_beyond_the_gate_refute(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run", {("rest", "default"): {"resnet50": 500, "unknown": 10}})
    assert main([str(root), "--expected", "100/0", "--no-write"]) == 1
    assert main([str(root), "--expected", "100/0", "--max-unknown-rate", "0.05", "--no-write"]) == 0


def test_newest_run_is_verified_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["--expected", "70/30"]) == 3  # no reports/ yet
    make_run(Path("reports/20260131T110000Z-000001"), {("rest", "default"): {"resnet50": 300}})
    make_run(Path("reports/20260131T120000Z-000002"), {("rest", "default"): {"resnet101": 300}})
    capsys.readouterr()
    assert main(["--expected", "100/0"]) == 1  # the newer run: all resnet101
    assert "20260131T120000Z-000002" in capsys.readouterr().out
    assert (tmp_path / "reports/20260131T120000Z-000002/summary.json").is_file()
    assert main(["--expected", "0/100"]) == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["--bogus"],
        ["--alpha", "x", "--expected", "70/30"],
        ["--alpha", "0.9", "--expected", "70/30"],
        ["--expected", "70/40"],
        ["--expected", "70/30", "--from-manifest", "manifests/routing/virtualservice-weight-70.yaml"],
        ["--from-manifest", "manifests/base/virtualservice.yaml"],
        ["--from-manifest", "nowhere.yaml"],
        [],  # no expectation at all
        ["--expected", "70/30", "--stable", "resnet152"],
        ["--expected", "canary: 0/100; vip: 100/0"],
        ["--plan"],
    ],
)
def test_usage_errors_exit_3(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_run(tmp_path / "run", {("rest", "default"): {"resnet50": 10}})
    assert main([str(root), "--no-write", *[a.replace("manifests/", f"{ROOT}/manifests/") for a in argv]]) == 3
    assert "verify-split:" in capsys.readouterr().err


def test_missing_run_dir_exits_3(tmp_path: Path) -> None:
    assert main([str(tmp_path / "nope"), "--expected", "70/30"]) == 3


def test_stable_subset_must_be_known_when_ambiguous(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_run(tmp_path / "run", {("rest", "default"): {"blue": 70, "green": 30}},
                    calibration_subsets=("blue", "green"))
    assert main([str(root), "--expected", "70/30", "--no-write"]) == 3
    assert "give --stable NAME" in capsys.readouterr().err
    assert main([str(root), "--expected", "70/30", "--stable", "blue", "--no-write"]) == 2
    recorded = make_run(tmp_path / "rec", {("rest", "default"): {"blue": 70, "green": 30}},
                        calibration_subsets=("blue", "green"), expected={"default": {"green": 0.3, "blue": 0.7}})
    out = tmp_path / "s.json"
    assert main([str(recorded), "--expected", "30/70", "--json", str(out), "--no-write"]) == 2
    assert _summary(out)["stable"] == "green"  # the load test's own order
    assert main([str(recorded), "--json", str(out), "--no-write"]) == 2  # run.json's expectation
    assert "run.json" in _summary(out)["expected_source"]


def test_groups_left_out_and_the_family_wise_alpha(weight_70_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    assert main([str(weight_70_run), "--expected", "default: 70/30", "--json", str(out), "--no-write"]) == 0
    doc = _summary(out)
    assert doc["policy"]["alpha"] == pytest.approx(0.01)
    assert doc["alpha"] == {"cell": pytest.approx(0.0025), "pool": pytest.approx(0.005)}
    assert [g["status"] for g in doc["groups"]] == ["verified", "not judged", "verified", "not judged"]
    assert any("not judged" in note for note in doc["notes"])


def test_plan_in_load_test_requests(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    assert main(["--plan", "--expected", "70/30", "--tolerance", "0.05", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    plan = json.loads(out.read_text())
    (pool,) = plan["pools"]  # one --expected for every cell: one pool of four
    assert pool["cells"] == ["rest/default", "rest/canary", "grpc/default", "grpc/canary"]
    # the run must give the pool its n, with room for the allowed unknown and error rates
    assert plan["requests"] == pool["requests"] >= pool["plan"]["n"] / (1 - 0.005 - 0.001)
    assert plan["requests"] < pool["plan"]["n"] * 1.01
    assert pool["plan"]["n"] == max(pool["plan"]["n_verify"], pool["plan"]["n_refute"])
    assert pool["plan"]["verify_power"] >= 0.95 and pool["plan"]["detect_power"] >= 0.95
    assert pool["plan"]["detect"] == pytest.approx(0.07)  # the tolerance + 2 points
    assert f"canary load --requests {plan['requests']} --protocol both --canary-share 0.2" in text
    assert plan["cell_responses"]["rest/canary"] == pytest.approx(plan["requests"] * 0.1 * 0.994, abs=1)

    # from a VirtualService: each route is its own pool; the small canary cells set the size
    assert main(["--plan", "--from-manifest", str(ROUTING / "virtualservice-focused-routing.yaml"),
                 "--json", str(out)]) == 0
    plan = json.loads(out.read_text())
    assert [p["cells"] for p in plan["pools"]] == [["rest/default"], ["rest/canary"], ["grpc/default"], ["grpc/canary"]]
    assert all(p["plan"]["n"] == 122 for p in plan["pools"])
    assert plan["requests"] == max(p["requests"] for p in plan["pools"]) == 1228  # 122 / (0.1 * 0.994)
    # REST only, no canary users: one cell
    assert main(["--plan", "--expected", "100/0", "--protocol", "rest", "--canary-share", "0", "--json", str(out)]) == 0
    assert [p["cells"] for p in json.loads(out.read_text())["pools"]] == [["rest/default"]]
    assert main(["--plan", "--expected", "default: 100/0; canary: 50/50"]) == 0


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "exit codes: 0 verified (or done), 1 refuted (or failed), 2 inconclusive" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["no chunk", "truncated chunk", "fewer records than run.json"])
def test_records_that_cannot_be_judged_exit_3(damage: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """An empty, damaged or partial records/ folder is unreadable input, never a refuted run: verify-split
    and `canary report` both exit 3 and say what is missing."""
    from commands.cli import main as canary

    root = make_run(tmp_path / "run", {("rest", "default"): {"resnet50": 70, "resnet101": 30}},
                    run_extra={"records": {"rows": 100, "chunks": 2}})
    parts = sorted((root / "records").glob("part-*.parquet"))
    if damage == "no chunk":
        for part in parts:
            part.unlink()
    elif damage == "truncated chunk":
        parts[1].write_bytes(parts[1].read_bytes()[:100])
    else:
        parts[1].unlink()
    assert main([str(root), "--expected", "70/30", "--no-write"]) == 3
    assert canary(["report", str(root)]) == 3
    err = capsys.readouterr().err
    assert err.count({"no chunk": "holds no record chunk", "truncated chunk": "the chunk is damaged",
                      "fewer records than run.json": "is incomplete"}[damage]) == 2
