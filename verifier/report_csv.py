"""The report's tables as CSV files beside summary.json, for a spreadsheet or a notebook.

* ``latency.csv`` — per protocol × format × subset: n, mean, each percentile
  with its interval, max;
* ``latency_comparisons.csv`` — per protocol × format × canary: the shift and
  its interval, the p50 and p99 ratios with theirs, the verdict;
* ``timeline.csv`` — per time bucket × subset: requests, requests per
  second, share, median latency;
* ``accuracy.csv`` — per subset: top-1 and top-5 accuracy with intervals.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from canary.files import write_atomic

from .accuracy import AccuracyReport
from .latency import LatencyReport
from .timeline import Timeline

__all__ = ["CSV_FILES", "write_csvs"]

CSV_FILES = ("latency.csv", "latency_comparisons.csv", "timeline.csv", "accuracy.csv")


def _write(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_atomic(path, out.getvalue().encode())


def _latency_rows(report: LatencyReport) -> list[dict[str, Any]]:
    rows = []
    for s in report.stats:
        row: dict[str, Any] = {"protocol": s.protocol, "format": s.format, "subset": s.subset, "n": s.n,
                               "mean_ms": s.mean, "max_ms": s.max}
        for p in s.percentiles:
            row |= {p.label: p.value, f"{p.label}_low": p.low, f"{p.label}_high": p.high}
        for p in s.server:
            row[f"server_{p.label}"] = p.value
        rows.append(row)
    return rows


def _comparison_rows(report: LatencyReport) -> list[dict[str, Any]]:
    rows = []
    for c in report.comparisons:
        row: dict[str, Any] = {"protocol": c.protocol, "format": c.format, "canary": c.canary, "stable": c.stable,
                               "n_canary": c.n_canary, "n_stable": c.n_stable, "shift_ms": c.shift_ms,
                               "shift_low": c.ci_low, "shift_high": c.ci_high, "p_value": c.p_value,
                               "verdict": c.verdict, "confidence": c.confidence}
        for name, ratio in (("p50_ratio", c.p50_ratio), ("p99_ratio", c.p99_ratio)):
            if ratio is not None:
                row |= {name: ratio.value, f"{name}_low": ratio.low, f"{name}_high": ratio.high}
        rows.append(row)
    return rows


def write_csvs(folder: Path, latency: LatencyReport, line: Timeline, accuracy: AccuracyReport) -> list[Path]:
    percentile_columns = [f"{label}{suffix}" for label in ("p50", "p90", "p95", "p99") for suffix in ("", "_low", "_high")]
    ratio_columns = [f"{name}{suffix}" for name in ("p50_ratio", "p99_ratio") for suffix in ("", "_low", "_high")]
    return [
        _write(folder / CSV_FILES[0], _latency_rows(latency),
               ["protocol", "format", "subset", "n", "mean_ms", *percentile_columns, "max_ms",
                "server_p50", "server_p90", "server_p95", "server_p99"]),
        _write(folder / CSV_FILES[1], _comparison_rows(latency),
               ["protocol", "format", "canary", "stable", "n_canary", "n_stable", "shift_ms", "shift_low",
                "shift_high", "p_value", "verdict", "confidence", *ratio_columns]),
        _write(folder / CSV_FILES[2], line.rows(), ["start_s", "width_s", "subset", "requests", "rps", "share",
                                                    "p50_ms"]),
        _write(folder / CSV_FILES[3], [
            {"subset": a.subset, "labelled": a.n, "top1_correct": a.correct, "top1": a.accuracy,
             "top1_low": a.ci_low, "top1_high": a.ci_high, "top5_correct": a.top5_correct, "top5": a.top5_accuracy,
             "top5_low": a.top5_ci_low, "top5_high": a.top5_ci_high, "unlabelled": a.unlabelled}
            for a in accuracy.subsets], ["subset", "labelled", "top1_correct", "top1", "top1_low", "top1_high",
                                         "top5_correct", "top5", "top5_low", "top5_high", "unlabelled"]),
    ]
