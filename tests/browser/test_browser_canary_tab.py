"""The Canary tab in a real headless Chromium, against a real Locust web UI.

Locust runs ``canary_tab_locustfile.py`` (synthetic 70/30 records with
latencies, no mesh) in a subprocess; Chromium (Debian's ``chromium``, driven by
Playwright, never Playwright's own browser download) fills Locust's start form,
typing an Expected split other than the command line's, clicks Start, opens the
Canary tab and checks one row per protocol × group with shares and their
intervals, the typed expectation, verdicts, progress and latency, then opens the
charts page from "Download Data" and checks that its SVG charts draw lines.
Screenshots land in ``test-artifacts/browser/`` (ignored by git; another folder
with ``CANARY_TEST_ARTIFACTS``).

Skipped, saying why, only where no browser can be had: no Chromium binary
(``make browser`` installs it with apt) or no Playwright (the dev extra).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from tests.browser.chromium import STEP_TIMEOUT_MS, screenshot
from tests.browser.locust_web import running_locust_web

TYPED_EXPECTED = "default: 60/40; canary: 0/100"  # the command line says 70/30
COLUMNS = ["Protocol", "Group", "Requests", "Share (95% interval)", "Expected", "Verdict so far",
           "Progress", "p50 ms", "p95 ms", "p99 ms"]
SHARE = r"resnet50 \d+\.\d% \(\d+\.\d–\d+\.\d\) · resnet101 \d+\.\d% \(\d+\.\d–\d+\.\d\)"
LATENCY = r"resnet50 \d+\.\d · resnet101 \d+\.\d"


def cell(row: Any, column: int) -> str:
    return str(row.locator("td").nth(column).inner_text()).strip()


def table_rows(page: Any) -> list[list[str]]:
    return [[c.strip() for c in r.locator("td").all_inner_texts()] for r in page.locator("table tbody tr").all()]


def requests_of(row: list[str]) -> int:
    return sum(int(n.replace(",", "")) for n in re.findall(r" ([\d,]+)", row[2]))


def wait_for(page: Any, check: Any, what: str, timeout_s: float = 15) -> Any:
    """Poll the page (it polls /stats/requests every 2 s) until ``check()`` is truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        page.wait_for_timeout(250)


def start_test_with_typed_expectation(page: Any, url: str) -> None:
    page.goto(url)
    page.get_by_label(re.compile(r"^Number of users")).fill("2")
    page.get_by_label(re.compile(r"^Ramp up")).fill("2")
    page.get_by_text("Custom parameters").click()
    expected = page.get_by_label(re.compile(r"^Expected"))
    assert expected.input_value() == "default: 70/30; canary: 0/100"  # from the command line
    expected.fill(TYPED_EXPECTED)
    page.get_by_role("button", name="Start").click()


def test_canary_tab_rows_latency_typed_expectation_and_charts(browser: Any, tmp_path: Path) -> None:
    with running_locust_web(tmp_path) as web:
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(STEP_TIMEOUT_MS)
        try:
            start_test_with_typed_expectation(page, web.url)
            page.get_by_role("tab", name="Canary").click()
            assert "tab=canary" in page.url
            assert page.locator("table thead th").all_inner_texts() == COLUMNS

            def filled() -> list[list[str]] | None:
                rows = table_rows(page)
                cells = [r for r in rows if r and r[0] in ("REST", "gRPC")]
                ready = len(cells) == 4 and all(re.fullmatch(SHARE, r[3]) and re.fullmatch(LATENCY, r[7])
                                                for r in cells if r[1] == "no header")
                return rows if ready else None

            rows = wait_for(page, filled, f"four filled rows:\n{web.read_log()}")
            assert [(r[0], r[1]) for r in rows] == [
                ("REST", "no header"),
                ("REST", "user-group: canary"),
                ("gRPC", "no header"),
                ("gRPC", "user-group: canary"),
                ("Aggregated", "all groups"),
            ]
            for row in rows[:4]:
                header = row[1] != "no header"
                assert row[4] == ("resnet50 0% · resnet101 100%" if header else "resnet50 60% · resnet101 40%")
                assert row[5] in {"verified", "refuted", "inconclusive"}
                assert re.fullmatch(r"[\d,]+ / [\d,]+ \(\d+%\)", row[6]), row[6]
                assert re.fullmatch(r"resnet50 0 · resnet101 [\d,]+" if header else r"resnet50 [\d,]+ · resnet101 [\d,]+",
                                    row[2]), row[2]
                for column in (7, 8, 9):
                    assert re.fullmatch(r"resnet101 \d+\.\d" if header else LATENCY, row[column]), row[column]
            first = requests_of(rows[0])
            wait_for(page, lambda: requests_of(table_rows(page)[0]) > first, "the counts to move")
            screenshot(page, "canary-tab.png")

            page.get_by_role("tab", name="Download Data").click()
            page.get_by_role("link", name=re.compile(r"^Canary charts")).click()
            page.wait_for_url(re.compile(r"/canary/charts$"))
            lines = "figure[data-chart] svg polyline.series:not([stroke-dasharray])"
            page.wait_for_function(  # a share line per subset and cell, p50 per subset and protocol
                f"""() => [...document.querySelectorAll('{lines}')]
                       .filter((l) => l.getAttribute('points').split(' ').length >= 3).length >= 4 * 2 + 2 * 2"""
            )
            first_line = 'figure[data-chart="share:rest/default"] polyline[data-series="resnet50"]'
            drawn = len(str(page.locator(first_line).get_attribute("points")).split())
            page.wait_for_function(  # the page fetches its charts again every two seconds
                f"""() => document.querySelector('{first_line}').getAttribute('points').split(' ').length > {drawn}"""
            )
            charts = page.locator("figure[data-chart]")
            assert [charts.nth(i).get_attribute("data-chart") for i in range(charts.count())] == [
                "share:rest/default", "share:rest/canary", "share:grpc/default", "share:grpc/canary",
                "latency:rest", "latency:grpc",
            ]
            expected_line = page.locator('figure[data-chart="share:rest/default"] polyline[data-series="resnet50 expected"]')
            assert expected_line.count() == 1
            assert page.locator("figcaption").first.inner_text() == "Share per subset, REST, no header"
            screenshot(page, "canary-charts.png")
        finally:
            context.close()
