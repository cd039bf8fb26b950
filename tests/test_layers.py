"""The layers read one way: nothing imports a package later in the flow of data.

ground (canary) → serving, payloads → mesh → loadtest → verifier, with the
commands (the roof) on top. Every import is checked, function-level ones
included, against the table in README.md ("Layout and layers").
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("canary", "serving", "payloads", "mesh", "loadtest", "verifier", "commands")

# package -> the project packages it may import (itself always)
ALLOWED: dict[str, set[str]] = {
    "canary": set(),
    "serving": {"canary"},
    "payloads": {"canary"},
    "mesh": {"canary", "serving"},
    "loadtest": {"canary", "payloads", "mesh"},
    "verifier": {"canary", "mesh"},
    "commands": set(PROJECT),
}
# finer rules: (importer prefix, imported prefix) allowed only there
MESH_FOR_LOADTEST = ("mesh.api", "mesh.routing", "mesh.target")  # the query API, route evaluation, which cluster
MESH_FOR_VERIFIER = ("mesh.routing", "mesh.manifests", "mesh.model",  # reading a VirtualService
                     "mesh.prometheus")  # and the mesh's own counts, from Prometheus
SERVING_IN_MESH = ("mesh/local/", "mesh/api.py")  # only the local backend runs model servers


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def _problems(package: str) -> list[str]:
    problems = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for line, name in _imports(path):
            top = name.split(".")[0]
            if top not in PROJECT or top == package:
                continue
            where = f"{rel}:{line} imports {name}"
            if top not in ALLOWED[package]:
                problems.append(f"{where}: {package} may not import {top}")
            elif package == "loadtest" and top == "mesh" and not name.startswith(MESH_FOR_LOADTEST):
                problems.append(f"{where}: the load test asks the mesh's query API ({', '.join(MESH_FOR_LOADTEST)})")
            elif package == "verifier" and top == "mesh" and not name.startswith(MESH_FOR_VERIFIER):
                problems.append(f"{where}: the verifier reads VirtualServices and Prometheus only ({', '.join(MESH_FOR_VERIFIER)})")
            elif package == "mesh" and top == "serving" and not rel.startswith(SERVING_IN_MESH):
                problems.append(f"{where}: only the local backend may import serving")
    return problems


@pytest.mark.parametrize("package", PROJECT)
def test_imports_follow_the_flow_of_data(package: str) -> None:
    assert _problems(package) == []


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from verifier.verify import verify_run\n    import loadtest.load\n")
    assert [name for _, name in _imports(source)] == ["verifier.verify.verify_run", "loadtest.load"]
