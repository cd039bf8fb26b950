"""The Canary tab in a real headless Chromium, against a real Locust web UI.

Locust runs ``canary_tab_locustfile.py`` (synthetic 70/30 records, no mesh) in
a subprocess; Chromium (Debian's ``chromium``, driven by Playwright, never
Playwright's own browser download) fills Locust's start form, clicks Start,
opens the Canary tab and checks that the counts move and that the expected
shares and p-values are shown. A screenshot lands in the test's tmp dir.

Skipped, saying why, only where no browser can be had: no Chromium binary
(``make browser`` installs it with apt) or no Playwright (the dev extra).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser.locust_web import running_locust_web

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
STEP_TIMEOUT_MS = 15_000
SCREENSHOT = "canary-tab.png"


def chromium_path() -> str | None:
    explicit = os.environ.get("CANARY_CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


@pytest.fixture(scope="module")
def browser() -> Any:
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(
            f"Playwright is not installed ({exc}); install the dev extra: pip install -e '.[dev]'"
        )
    if executable is None:
        pytest.skip(
            f"no Chromium binary (CANARY_CHROMIUM={os.environ.get('CANARY_CHROMIUM')!r}, "
            "chromium not on PATH, no /usr/bin/chromium); "
            "`make browser` installs Debian's chromium with apt (needs root)"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield launched
        finally:
            launched.close()


def cell(row: Any, column: int) -> str:
    return str(row.locator("td").nth(column).inner_text()).strip()


def test_canary_tab_shows_live_counts_shares_and_p_values(browser: Any, tmp_path: Path) -> None:
    with running_locust_web(tmp_path) as web:
        context = browser.new_context(viewport={"width": 1400, "height": 1100})
        page = context.new_page()
        page.set_default_timeout(STEP_TIMEOUT_MS)
        try:
            page.goto(web.url)
            page.get_by_label(re.compile(r"^Number of users")).fill("2")
            page.get_by_label(re.compile(r"^Ramp up")).fill("2")
            page.get_by_role("button", name="Start").click()

            page.get_by_role("tab", name="Canary").click()
            assert "tab=canary" in page.url
            headers = page.locator("table thead th").all_inner_texts()
            assert headers == [
                "Protocol",
                "Group",
                "Subset",
                "Requests",
                "Observed share",
                "Expected share",
                "p-value",
                "Verdict so far",
            ]

            top = page.locator("table tbody tr").first
            top.wait_for()
            assert [cell(top, 0), cell(top, 1)] == ["REST", "no header"]

            stable = (
                page.locator("table tbody tr")
                .filter(has=page.get_by_role("cell", name="REST", exact=True))
                .filter(has=page.get_by_role("cell", name="no header", exact=True))
                .filter(has=page.get_by_role("cell", name="resnet50", exact=True))
            )
            stable.wait_for()
            first = int(cell(stable, 3))
            deadline = time.monotonic() + 15
            second = first
            while second <= first and time.monotonic() < deadline:
                page.wait_for_timeout(500)  # the page polls /stats/requests every 2 s
                second = int(cell(stable, 3))
            assert second > first, f"count did not move from {first}:\n{web.read_log()}"

            assert cell(stable, 5) == "70%"
            assert re.fullmatch(r"\d+\.\d%", cell(stable, 4))
            p_value = float(cell(stable, 6))
            assert 0.0 <= p_value <= 1.0
            assert cell(stable, 7) in {"verified", "refuted", "inconclusive"}

            canary = (
                page.locator("table tbody tr")
                .filter(has=page.get_by_role("cell", name="gRPC", exact=True))
                .filter(has=page.get_by_role("cell", name="canary header", exact=True))
                .filter(has=page.get_by_role("cell", name="resnet101", exact=True))
            )
            assert cell(canary, 5) == "100%"
            assert cell(canary, 4) == "100.0%"
            assert int(cell(canary, 3)) > 0

            page.screenshot(path=str(tmp_path / SCREENSHOT), full_page=True)
        finally:
            context.close()
