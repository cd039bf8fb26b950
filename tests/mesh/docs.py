"""Manifest documents for tests: the walkthrough's own files, edited field by field."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from mesh.manifests import parse_objects
from mesh.model import MeshObject
from tests.mesh.scenarios import MANIFESTS

DELETE = object()
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def manifest(name: str) -> dict[str, Any]:
    """The first document of ``manifests/<name>``, as a plain dict."""
    return dict(next(yaml.safe_load_all((MANIFESTS / name).read_text())))


def edit(doc: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """A copy of ``doc`` with ``path`` (``spec.http[0].route[1].weight``) set, or deleted."""
    out = copy.deepcopy(doc)
    steps: list[str | int] = [key if key else int(index) for key, index in _STEP.findall(path)]
    parent: Any = out
    for step in steps[:-1]:
        if isinstance(step, str) and step not in parent:
            parent[step] = {}
        parent = parent[step]
    if value is DELETE:
        del parent[steps[-1]]
    else:
        parent[steps[-1]] = value
    return out


def parse(*docs: dict[str, Any], source: str = "case.yaml") -> list[MeshObject]:
    return parse_objects((source, doc) for doc in docs)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
