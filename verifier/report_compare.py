"""``compare.html`` and ``compare.json`` of ``canary compare``: one self-contained page, one document."""

from __future__ import annotations

from html import escape
from pathlib import Path

from canary.files import write_atomic
from canary.rundir.layout import REPORTS_DIR, resolve_run_dir
from canary.rundir.reader import Run, read_run
from canary.rundir.records import answered
from canary.rundir.steps import default_steps_dir

from .compare import RunComparison, ShareRow, compare_runs
from .gates import GateLimits
from .latency import stratum_key, stratum_samples
from .plots import cdf_pair_figure
from .report_facts import pct
from .report_json import write_summary
from .report_page import badge, page, table

__all__ = ["COMPARE_HTML", "COMPARE_JSON", "compare_and_write", "compare_html", "write_comparison"]

COMPARE_HTML = "compare.html"
COMPARE_JSON = "compare.json"


def _share(row: ShareRow, which: str) -> str:
    count, total, low, high = row.a if which == "a" else row.b
    return f"{count}/{total} = {pct(row.share(which), 1)} ({pct(low, 1)}–{pct(high, 1)})" if total else "–"


def compare_html(result: RunComparison, a: Run, b: Run) -> str:
    limits = result.limits
    head = (f"<h1>canary compare: {badge(result.status)}</h1><p>Run B <b>{escape(result.b)}</b> against run A "
            f"<b>{escape(result.a)}</b>. A regression is shown with confidence when an interval lies wholly "
            f"beyond its limit: latency shift above +{limits.max_latency_shift_ms:g} ms, p99 ratio above "
            f"×{limits.max_p99_ratio:g} ({100 * limits.confidence:g}% intervals). Exit code {result.exit_code}.</p>")
    rows = []
    for s in result.strata:
        failed = [g.name.split(" (")[0] for g in s.gates if g.status == "fail"]
        rows.append([escape(s.subset), escape(stratum_key(s.protocol, s.format)), escape(s.comparison.line),
                     badge("regression" if s.regression else "pass"), escape(", ".join(failed) or "–")])
    latency = table(["subset", "protocol / format", "B against A", "", "gates failed"], rows, left=3)
    latency += "".join(f"<p class='muted'>not compared: {escape(m)}</p>" for m in result.not_compared)
    rows_a, rows_b = answered(a.records), answered(b.records)
    charts = "".join(
        "<div class='chart'>" + cdf_pair_figure(
            f"{s.subset} {stratum_key(s.protocol, s.format)}",
            {f"A {result.a}": stratum_samples(rows_a, s.subset, s.protocol, s.format),
             f"B {result.b}": stratum_samples(rows_b, s.subset, s.protocol, s.format)}) + "</div>"
        for s in result.strata)
    shares = table(["protocol / group", "subset", f"A {escape(result.a)}", f"B {escape(result.b)}"],
                   [[escape(r.cell), escape(r.subset), _share(r, "a"), _share(r, "b")] for r in result.shares], left=2)
    accuracy_rows = []
    for first, second in zip(result.accuracy_a.subsets, result.accuracy_b.subsets, strict=False):
        accuracy_rows.append([escape(first.subset), f"{pct(first.accuracy, 1)} / {pct(first.top5_accuracy, 1)}",
                              f"{pct(second.accuracy, 1)} / {pct(second.top5_accuracy, 1)}"])
    accuracy = (f"<p class='muted'>{escape(result.accuracy_b.note)}</p>"
                + table(["subset", "A top-1 / top-5", "B top-1 / top-5"], accuracy_rows))
    body = (head + f"<h2>Latency, like with like</h2>{latency}<div class='charts'>{charts}</div>"
            f"<h2>Splits (95% exact intervals)</h2>{shares}<h2>Accuracy</h2>{accuracy}")
    return page(f"canary compare {result.a} → {result.b}: {result.status}", body)


def write_comparison(folder: Path, result: RunComparison, a: Run, b: Run) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [write_atomic(folder / COMPARE_HTML, compare_html(result, a, b).encode()),
            write_summary(folder / COMPARE_JSON, result.to_dict())]


def compare_and_write(run_a: Path, run_b: Path, limits: GateLimits, out: Path | None = None,
                      reports: Path = REPORTS_DIR) -> tuple[RunComparison, list[Path]]:
    """Read both run directories, compare B against A, write the page and the JSON (into ``out``,
    default ``reports/<time>-compare-<id>/``)."""
    a, b = read_run(resolve_run_dir(run_a)), read_run(resolve_run_dir(run_b))
    result = compare_runs(a, b, limits)
    return result, write_comparison(out or default_steps_dir("compare", reports), result, a, b)
