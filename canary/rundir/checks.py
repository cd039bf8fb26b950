"""Every check made of a run, kept: ``<run>/checks/<time>-<key>.json``, one file per check.

A check is one judgement of the run (``verify-split`` or ``canary report``):
its expectation, options, time and result. A later check never replaces an
earlier one; re-making the very same check (same expectation, options and
result: the same ``key``) keeps the one file already there. The verifier
builds the record; this module owns where it lives and how it is read back.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson

from canary.errors import UsageError

from .layout import read_json, write_json_atomic

__all__ = ["CHECKS_DIR", "CHECK_FORMAT", "check_key", "read_checks", "record_check"]

CHECKS_DIR = "checks"
CHECK_FORMAT = "canary.check/1"
_KEYED = ("expected_source", "policy", "status", "pools")


def check_key(record: dict[str, Any]) -> str:
    """What makes two checks the same check: a hash of their expectation, options and result."""
    keyed = {name: record.get(name) for name in _KEYED}
    return hashlib.sha256(orjson.dumps(keyed, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)).hexdigest()[:12]


def read_checks(root: Path) -> list[dict[str, Any]]:
    """Every check kept in the run directory ``root``, newest first (unreadable files are skipped
    with a ``problem`` entry, never dropped silently)."""
    folder = Path(root) / CHECKS_DIR
    if not folder.is_dir():
        return []
    out: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.json"), reverse=True):
        try:
            record = read_json(path)
        except UsageError as error:
            out.append({"file": path.name, "problem": str(error)})
            continue
        out.append({**record, "file": path.name})
    return out


def record_check(root: Path, record: dict[str, Any]) -> Path:
    """Keep ``record`` (with its ``generated_at``) in the run directory ``root``; returns its
    file. The same check as the newest one kept is not written twice."""
    key = check_key(record)
    newest = next((c for c in read_checks(root) if "problem" not in c), None)
    if newest is not None and newest.get("key") == key:
        return Path(root) / CHECKS_DIR / str(newest["file"])
    stamp = "".join(ch for ch in str(record.get("generated_at", "")) if ch.isalnum())
    path = Path(root) / CHECKS_DIR / f"{stamp}-{key}.json"
    path.parent.mkdir(exist_ok=True)
    write_json_atomic(path, {"format": CHECK_FORMAT, **record, "key": key})
    return path
