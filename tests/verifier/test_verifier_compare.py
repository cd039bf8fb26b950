"""`canary compare RUN_A RUN_B` on synthetic runs with known latency: a regression shown with
confidence exits 1, the same distributions exit 0, and the page and JSON carry the numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from canary.rundir.reader import read_run
from commands.cli import main
from tests.verifier.synthetic import CELLS, WEIGHT_70, drawn_run
from verifier.compare import compare_runs
from verifier.gates import GateLimits

FAST = {"resnet50": (40.0, 0.2), "resnet101": (60.0, 0.2)}
SLOWER_101 = {"resnet50": (40.0, 0.2), "resnet101": (120.0, 0.2)}  # the canary twice as slow after the change


def _run(root: Path, latency: dict[str, tuple[float, float]], seed: int) -> Path:
    return drawn_run(root, dict.fromkeys(CELLS, WEIGHT_70), 400, seed=seed, latency=latency)


def test_a_slower_canary_is_a_regression_shown_with_confidence(tmp_path: Path) -> None:
    a, b = _run(tmp_path / "a", FAST, 1), _run(tmp_path / "b", SLOWER_101, 2)
    result = compare_runs(read_run(a), read_run(b), GateLimits(max_latency_shift_ms=20, max_p99_ratio=1.5))
    assert result.regression and result.exit_code == 1
    by = {(s.subset, s.protocol, s.format): s for s in result.strata}
    assert {f for _, _, f in by} == {"b64", "instances"}  # like with like
    slow = by[("resnet101", "rest", "b64")]
    assert slow.regression and slow.comparison.verdict == "slower"
    assert slow.comparison.ci_low is not None and 40 < slow.comparison.ci_low < 60 < slow.comparison.ci_high  # type: ignore[operator]
    assert slow.comparison.p50_ratio is not None and slow.comparison.p50_ratio.low < 2.0 < slow.comparison.p50_ratio.high
    steady = by[("resnet50", "rest", "b64")]
    assert not steady.regression and steady.comparison.verdict in ("no difference", "inconclusive")
    shares = {(r.cell, r.subset): r for r in result.shares}
    assert shares[("rest/default", "resnet50")].share("a") == pytest.approx(0.7, abs=0.1)


def test_the_same_distributions_show_no_regression_and_the_cli_writes_both_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _run(tmp_path / "a", FAST, 3), _run(tmp_path / "b", FAST, 4)
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "-o", str(out)]) == 0
    doc = json.loads((out / "compare.json").read_text())
    assert doc["status"] == "no regression shown" and doc["exit_code"] == 0
    assert all(not s["regression"] for s in doc["strata"]) and len(doc["strata"]) == 8
    page = (out / "compare.html").read_text()
    assert "<script" not in page and "<svg" in page and "Latency, like with like" in page
    assert "no regression shown" in capsys.readouterr().out


def test_compare_exits_1_on_a_regression_and_3_on_a_missing_run(tmp_path: Path) -> None:
    a, b = _run(tmp_path / "a", FAST, 5), _run(tmp_path / "b", SLOWER_101, 6)
    assert main(["compare", str(a), str(b), "-o", str(tmp_path / "out")]) == 1
    assert main(["compare", str(a), str(b), "--max-latency-shift", "200ms", "--max-p99-ratio", "5",
                 "-o", str(tmp_path / "lenient")]) == 0
    assert main(["compare", str(a), str(tmp_path / "nothing")]) == 3
