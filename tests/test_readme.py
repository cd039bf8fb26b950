"""The README's quick start and command lines, as a newcomer would type them.

The quick start is exactly two commands, and CI runs the README's test command; every
``canary`` and ``verify-split`` line in the README's code blocks parses with the real
parsers (the options exist and the values are accepted). The curl lines run against a
mesh in tests/integration/test_local_mesh.py, ``canary demo --tiny`` in test_demo.py.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from commands.cli import build_parser
from commands.verify_split import build_parser as verify_split_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _code_lines() -> list[str]:
    """Lines of the README's indented code blocks, comments cut."""
    lines = []
    for line in README.splitlines():
        if line.startswith("    ") and not line.startswith("     "):
            lines.append(line.strip().split("  #")[0].strip())
    return [line for line in lines if line]


def test_the_quick_start_is_two_commands() -> None:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [line.strip().split("#")[0].strip() for line in section.splitlines() if line.startswith("    ")]
    assert commands == ["make demo", "make test"]


def test_make_demo_runs_the_demo_and_ci_runs_the_readme_test_command() -> None:
    makefile = (ROOT / "Makefile").read_text()
    demo = re.search(r"^demo:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert demo is not None and "$(BIN)/canary demo" in demo.group(1)
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == "make test"


COMMAND_LINES = [line for line in _code_lines() if line.startswith((".venv/bin/canary ", ".venv/bin/verify-split"))]


def test_the_readme_shows_the_main_commands() -> None:
    shown = {shlex.split(line)[0].rsplit("/", 1)[1] + " " + " ".join(shlex.split(line)[1:2]) for line in COMMAND_LINES}
    for wanted in ("canary mesh", "canary load", "canary predict", "canary rollout", "canary demo"):
        assert any(s.startswith(wanted) for s in shown), wanted


@pytest.mark.parametrize("line", COMMAND_LINES)
def test_every_readme_command_line_parses(line: str) -> None:
    argv = shlex.split(line)
    parser = verify_split_parser() if argv[0].endswith("verify-split") else build_parser()
    parser.parse_args(argv[1:])
