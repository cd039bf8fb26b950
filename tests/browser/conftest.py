"""One headless Chromium per browser test module (tests/browser/chromium.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.chromium import launched_browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launched_browser()
