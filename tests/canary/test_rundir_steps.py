"""steps.json of a demo or rollout: written after every step, read back, shown on one page."""

from __future__ import annotations

from pathlib import Path

import pytest

from canary.errors import UsageError
from canary.rundir.steps import GateRecord, StepRecord, StepsDir, StepsDocument, default_steps_dir
from commands.demo import sequence_status
from verifier.report_steps import steps_html, write_steps_html


def _step(index: int, status: str, **extra: object) -> StepRecord:
    return StepRecord(index=index, name=f"s{index}", title=f"step <{index}>", status=status, requests=100 * index,
                      **extra)


def test_round_trip_and_layout(tmp_path: Path) -> None:
    folder = StepsDir(default_steps_dir("rollout", tmp_path))
    assert folder.root.name.split("-")[1] == "rollout"
    document = StepsDocument(kind="rollout", started_at="2026-11-30T00:00:00Z")
    document.steps.append(_step(1, "verified", canary_percent=10, gates=[
        GateRecord(name="error rate", status="pass", value=0.0, low=0.0, high=0.01, limit=0.01, unit="fraction")]))
    folder.write(document)
    again = folder.read()
    assert again == document and again.steps[0].gates[0].name == "error rate"
    assert folder.run_dir(1, "canary-10").name == "01-canary-10"
    assert folder.manifest(12, "rollback").name == "12-rollback.yaml"


def test_an_unreadable_steps_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "steps.json").write_text("{")
    with pytest.raises(UsageError, match="not valid JSON"):
        StepsDir(tmp_path).read()


@pytest.mark.parametrize(("statuses", "expected"), [
    (["verified", "verified"], ("passed", 0)),
    (["verified", "inconclusive"], ("inconclusive", 2)),
    (["inconclusive", "refuted"], ("failed", 1)),
    (["failed"], ("failed", 1)),
    ([], ("failed", 1)),
])
def test_sequence_status(statuses: list[str], expected: tuple[str, int]) -> None:
    assert sequence_status([_step(i, s) for i, s in enumerate(statuses, 1)]) == expected


def test_the_page_escapes_and_links_each_step(tmp_path: Path) -> None:
    document = StepsDocument(kind="demo", started_at="t0", status="failed", summary="1 of 2 steps verified",
                             steps=[_step(1, "verified", run="01-s1", took_effect_s=0.05),
                                    _step(2, "refuted", details=["rest/default refuted: <b>"], gates=[
                                        GateRecord(name="p99 ratio (rest)", status="fail", value=2.0, low=1.7,
                                                   high=2.4, limit=1.5, unit="ratio", reason="shown beyond")])])
    page = steps_html(document)
    assert 'href="01-s1/report.html"' in page and "step &lt;1&gt;" in page and "<b>" not in page.split("<body>")[1]
    assert "×2.00 (×1.70–×2.40)" in page and "×1.5" in page and "0.05 s" in page
    path = write_steps_html(StepsDir(tmp_path / "x"), document)
    assert path.read_text() == page
