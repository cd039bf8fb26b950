"""Debian's Chromium driven by Playwright for the browser tests (never Playwright's own download):
where to find it, how to launch it, where screenshots go.

Skipped, saying why, only where no browser can be had: no Chromium binary
(``make browser`` installs it with apt) or no Playwright (the dev extra).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.locust_web import ROOT

__all__ = ["ARTIFACTS", "CHROMIUM_ARGS", "STEP_TIMEOUT_MS", "chromium_path", "launched_browser", "screenshot"]

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
ARTIFACTS = Path(os.environ.get("CANARY_TEST_ARTIFACTS") or ROOT / "test-artifacts") / "browser"


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


def launched_browser() -> Iterator[Any]:
    """A headless Chromium for a module's tests (skips, saying why, where there is none)."""
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"Playwright is not installed ({exc}); install the dev extra: pip install -e '.[dev]'")
    if executable is None:
        pytest.skip(
            f"no Chromium binary (CANARY_CHROMIUM={os.environ.get('CANARY_CHROMIUM')!r}, "
            "chromium not on PATH, no /usr/bin/chromium); "
            "`make browser` installs Debian's chromium with apt (needs root)"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield launched
        finally:
            launched.close()


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)
