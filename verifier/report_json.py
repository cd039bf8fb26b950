"""``summary.json`` (and ``verify-split --json FILE``): the verification as one JSON document.

Format ``canary.verify-split/1``::

    {
      "format": "canary.verify-split/1",
      "generated_at": "2026-01-31T12:00:00Z",
      "status": "verified" | "refuted" | "inconclusive" | "not judged",
      "exit_code": 0 | 1 | 2 | null (not judged: no expected split, `canary report` only),
      "reason": "...",
      "next_run": "canary load --requests N ..." | null,  # inconclusive: what would likely decide it
      "run": {"dir", "id", "status", "started_at", "ended_at", "duration_s",
              "requests", "canary_header", "model_name"},
      "expected_source": "--expected 70/30" | "<file> (VirtualService/ns/name)" | ...,
      "stable": "resnet50",
      "subsets": ["resnet50", "resnet101"],
      "policy": {alpha, tolerance, confidence, max_unknown_rate, max_error_rate, power},
      "alpha": {"cell": 0.0025, "pool": 0.005 | null},  # the run's alpha divided over its tests
      "pools": [PoolVerdict.to_dict()],  # name, cells, route, expected, status, reason, judged,
                                         # pooled, homogeneity, cell_verdicts
      "phases": [{"phase", "version", "started_at", "applied_at", "source", "requests",
                  "settling", "convergence": Convergence.to_dict() | null, "note"}],
      "groups": [{"label", "phase", "protocol", "group", "status", "pool", "reason", "route", "counts",
                  "expected": {"shares", "label"} | null,
                  "verdict": GroupVerdict.to_dict() | null}],  # the cell's own verdict
      "confusion": {"rest": ConfusionMatrix.to_dict(), "grpc": ...},
      "crosscheck": {"status": "agree" | "mismatch" | "unavailable", "source", "reason",
                     "rows": [{"subset", "fingerprint", "mesh", "difference", "low", "high",
                               "agrees"}], "unattributed", "slack", "query"},
      "latency": LatencyReport.to_dict(),
      "accuracy": AccuracyReport.to_dict(),
      "notes": ["..."],
      "checks": [check, ...]  # every check made of this run, newest first (this one included)
    }

A check (``checks/<time>-<key>.json`` in the run directory, :mod:`canary.rundir.checks`)::

    {"format": "canary.check/1", "generated_at", "status", "exit_code", "reason",
     "expected_source", "stable", "policy",
     "pools": [{"name", "status", "judged", "expected", "n", "reason"}], "key"}

Non-finite numbers are written as null. Files are written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from canary.files import write_atomic
from canary.jsonable import jsonable

from .run_facts import run_facts
from .verify import Verification

__all__ = ["SUMMARY_FILE", "SUMMARY_FORMAT", "check_record", "summary_document", "write_summary"]

SUMMARY_FORMAT = "canary.verify-split/1"
SUMMARY_FILE = "summary.json"


def check_record(result: Verification) -> dict[str, Any]:
    """The record of this check, as the run directory keeps it."""
    pools = result.judgement.pools if result.judgement else ()
    return {
        "generated_at": result.generated_at,
        "status": result.status,
        "exit_code": result.exit_code if result.judged else None,
        "reason": result.reason,
        "expected_source": result.source,
        "stable": result.stable,
        "policy": result.policy.to_dict(),
        "pools": [
            {"name": p.name, "status": p.status, "judged": p.judged, "expected": p.expected.label(),
             "n": p.verdict.n, "reason": p.reason}
            for p in pools
        ],
    }


def summary_document(result: Verification, checks: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The JSON document of ``result`` (see the module docstring); ``checks``: every check kept."""
    run = result.run
    judgement = result.judgement
    return {
        "format": SUMMARY_FORMAT,
        "generated_at": result.generated_at,
        "status": result.status,
        "exit_code": result.exit_code if result.judged else None,
        "reason": result.reason,
        "next_run": result.next_run,
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
            "facts": jsonable(run_facts(run, result.phases)),
        },
        "expected_source": result.source,
        "stable": result.stable,
        "subsets": list(result.subsets),
        "policy": result.policy.to_dict(),
        "alpha": {"cell": judgement.alpha_cell, "pool": judgement.alpha_pool} if judgement else None,
        "pools": [p.to_dict() for p in judgement.pools] if judgement else [],
        "phases": [p.to_dict() for p in result.phases],
        "groups": [
            {
                "label": cell.name,
                "phase": cell.phase,
                "protocol": cell.protocol,
                "group": cell.group,
                "status": cell.status,
                "pool": cell.pool,
                "reason": cell.reason,
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
        "checks": list(checks) or [check_record(result)],
    }


def write_summary(path: Path, document: dict[str, Any]) -> Path:
    """Write a summary (or any JSON document) as indented JSON."""
    data = orjson.dumps(jsonable(document), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    return write_atomic(path, data + b"\n")
