"""``summary.json`` (and ``verify-split --json FILE``): the verification as one JSON document.

Format ``canary.verify-split/1``::

    {
      "format": "canary.verify-split/1",
      "generated_at": "2026-01-31T12:00:00Z",
      "status": "verified" | "refuted" | "inconclusive" | "not judged",
      "exit_code": 0 | 1 | 2 | null (not judged: no expected split, `canary report` only),
      "reason": "...",
      "run": {"dir", "id", "status", "started_at", "ended_at", "duration_s",
              "requests", "canary_header", "model_name"},
      "expected_source": "--expected 70/30" | "<file> (VirtualService/ns/name)" | ...,
      "stable": "resnet50",
      "subsets": ["resnet50", "resnet101"],
      "policy": {alpha, tolerance, confidence, max_unknown_rate, max_error_rate, power, interval},
      "groups": [{"protocol", "group", "status", "route", "counts",
                  "expected": {"shares", "label"} | null,
                  "verdict": GroupVerdict.to_dict() | null}],
      "confusion": {"rest": ConfusionMatrix.to_dict(), "grpc": ...},
      "crosscheck": {"status": "agree" | "mismatch" | "unavailable", "source", "reason",
                     "rows": [{"subset", "fingerprint", "mesh", "difference", "low", "high",
                               "agrees"}], "unattributed", "slack", "query"},
      "latency": LatencyReport.to_dict(),
      "accuracy": AccuracyReport.to_dict(),
      "notes": ["..."]
    }

Non-finite numbers are written as null. Files are written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from canary.files import write_atomic
from canary.jsonable import jsonable

from .verify import Verification

__all__ = ["SUMMARY_FILE", "SUMMARY_FORMAT", "summary_document", "write_summary"]

SUMMARY_FORMAT = "canary.verify-split/1"
SUMMARY_FILE = "summary.json"


def summary_document(result: Verification) -> dict[str, Any]:
    """The JSON document of ``result`` (see the module docstring)."""
    run = result.run
    return {
        "format": SUMMARY_FORMAT,
        "generated_at": result.generated_at,
        "status": result.status,
        "exit_code": result.exit_code if result.judged else None,
        "reason": result.reason,
        "run": {
            "dir": str(run.root),
            "id": run.run_id,
            "status": run.document.status,
            "started_at": run.document.started_at,
            "ended_at": run.document.ended_at,
            "duration_s": run.duration_s,
            "requests": len(run.records),
            "canary_header": f"{run.header[0]}: {run.header[1]}",
            "model_name": run.model_name,
        },
        "expected_source": result.source,
        "stable": result.stable,
        "subsets": list(result.subsets),
        "policy": result.policy.to_dict(),
        "groups": [
            {
                "protocol": cell.protocol,
                "group": cell.group,
                "status": cell.status,
                "route": cell.route,
                "counts": dict(cell.counts),
                "expected": cell.expected.to_dict() if cell.expected else None,
                "verdict": cell.verdict.to_dict() if cell.verdict else None,
            }
            for cell in result.cells
        ],
        "confusion": {p: m.to_dict() for p, m in result.confusion.items()},
        "crosscheck": result.crosscheck.to_dict(),
        "latency": result.latency.to_dict(),
        "accuracy": result.accuracy.to_dict(),
        "notes": list(result.notes),
    }


def write_summary(path: Path, document: dict[str, Any]) -> Path:
    """Write a summary (or any JSON document) as indented JSON."""
    data = orjson.dumps(jsonable(document), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    return write_atomic(path, data + b"\n")
