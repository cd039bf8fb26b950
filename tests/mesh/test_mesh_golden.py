"""Golden translations: the whole Envoy configuration for each walkthrough manifest.

Run with ``CANARY_UPDATE_GOLDEN=1`` to rewrite tests/golden/*.json after an
intended change, then review the diff like code.
"""

from __future__ import annotations

import difflib
import json
import os

import pytest

from tests.mesh.scenarios import GOLDEN, scenarios

UPDATE = os.environ.get("CANARY_UPDATE_GOLDEN") == "1"


def _render(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("name", ["base", "weight-100", "weight-70", "focused-routing", "features"])
def test_translation_matches_golden_file(name: str) -> None:
    scenario = scenarios()[name]
    actual = _render(scenario.translate().as_dict())
    path = GOLDEN / f"translate-{name}.json"
    if UPDATE:
        path.write_text(actual, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing: run CANARY_UPDATE_GOLDEN=1 pytest {__file__}"
    expected = path.read_text(encoding="utf-8")
    if actual != expected:
        diff = difflib.unified_diff(
            expected.splitlines(),
            actual.splitlines(),
            f"{path.name} (golden)",
            "translated",
            lineterm="",
            n=3,
        )
        lines = list(diff)
        shown = "\n".join(lines[:200]) + (
            f"\n... {len(lines) - 200} more lines" if len(lines) > 200 else ""
        )
        pytest.fail(f"translation differs from {path} (CANARY_UPDATE_GOLDEN=1 to accept):\n{shown}")


def test_translation_is_deterministic() -> None:
    first = {name: _render(s.translate().as_dict()) for name, s in scenarios().items()}
    again = {name: _render(s.translate().as_dict()) for name, s in scenarios().items()}
    assert first == again
