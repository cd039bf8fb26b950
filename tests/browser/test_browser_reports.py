"""report.html and compare.html in a real headless Chromium, opened from disk with the network off.

Synthetic runs with known latency (the verifier's test runs): the pages load
without a request leaving the machine, every chart is an SVG that the browser
lays out with drawn paths, the tables carry the numbers, and screenshots are
kept in ``test-artifacts/browser/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from commands.cli import main as canary
from tests.browser.chromium import screenshot
from tests.verifier.synthetic import CELLS, WEIGHT_70, drawn_run

FAST = {"resnet50": (40.0, 0.2), "resnet101": (60.0, 0.2)}
SLOW = {"resnet50": (40.0, 0.2), "resnet101": (120.0, 0.2)}


def _open_offline(browser: Any, path: Path) -> tuple[Any, list[str]]:
    """The page, and every request it made that was not the file itself (there must be none)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    outside: list[str] = []
    page.on("request", lambda request: None if request.url.startswith("file://") else outside.append(request.url))
    page.goto(path.as_uri())
    return page, outside


def _drawn_charts(page: Any) -> int:
    """SVG charts with a laid-out size and at least one drawn path."""
    return int(page.evaluate("""() => [...document.querySelectorAll('svg')].filter(svg => {
        const box = svg.getBoundingClientRect();
        return box.width > 100 && box.height > 100 && svg.querySelectorAll('path').length > 5;
    }).length"""))


def test_the_report_opens_offline_and_draws_every_chart(browser: Any, tmp_path: Path) -> None:
    run = drawn_run(tmp_path / "reports" / "20260131T120000Z-br0001", dict.fromkeys(CELLS, WEIGHT_70), 400,
                    seed=3, latency=FAST)
    assert canary(["report", str(run), "--expected", "70/30"]) == 0
    page, outside = _open_offline(browser, run / "report.html")
    try:
        assert outside == []
        text = page.inner_text("body")
        for needle in ("The run", "Over time", "Latency", "Canary against stable", "resnet101 slower by",
                       "Accuracy", "top-5", "seeded"):
            assert needle in text, needle
        # the timeline, and a histogram + CDF per protocol x format (2 x 2)
        assert _drawn_charts(page) >= 5
        screenshot(page, "report.png")
    finally:
        page.close()


def test_the_compare_page_opens_offline_and_shows_the_regression(browser: Any, tmp_path: Path) -> None:
    before = drawn_run(tmp_path / "a", dict.fromkeys(CELLS, WEIGHT_70), 300, seed=5, latency=FAST)
    after = drawn_run(tmp_path / "b", dict.fromkeys(CELLS, WEIGHT_70), 300, seed=6, latency=SLOW)
    assert canary(["compare", str(before), str(after), "-o", str(tmp_path / "cmp")]) == 1
    page, outside = _open_offline(browser, tmp_path / "cmp" / "compare.html")
    try:
        assert outside == []
        text = page.inner_text("body")
        assert "REGRESSION" in text.upper() and "resnet101 in B slower by" in text
        assert _drawn_charts(page) >= 8  # a CDF pair per subset x protocol x format
        screenshot(page, "compare.png")
    finally:
        page.close()
