"""``report.html``: one self-contained page (inline CSS and SVG, no script, no network).

Sections: the overall verdict; the split table of every pool of cells
(counts, observed share with its simultaneous interval, expected share and
band, the cells, the homogeneity test and the verdict); the group x subset confusion matrices; the
cross-check against the mesh's counters; latency per subset x protocol
(p50/p90/p99, histogram and CDF as inline SVG, canary vs stable); accuracy and
agreement; notes; every check made of the run, newest first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from canary.files import write_atomic
from canary.stats import GroupVerdict, PoolVerdict

from .report_facts import PHASE_COLUMNS, cell_line, phase_row, verdict_facts
from .report_facts import pct as _pct
from .report_svg import PALETTE, Series, cdf_svg, histogram_svg
from .verify import CellResult, Verification

__all__ = ["REPORT_FILE", "html_report", "write_html"]

REPORT_FILE = "report.html"

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}h3{margin-bottom:.3em}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}
.verified,.agree{color:#126b12}.refuted,.mismatch{color:#b00020}
.inconclusive,.unavailable,.not-judged{color:#9a6700}
.badge{font-weight:bold;text-transform:uppercase}.muted{color:#666}
.charts{display:flex;flex-wrap:wrap;gap:1em}
"""


def _cls(status: str) -> str:
    return status.replace(" ", "-")


def _ms(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.2f}"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], left: int = 1) -> str:
    """A table; cells are HTML already (escape before); the first ``left`` columns align left."""
    head = "".join(f'<th class="l">{h}</th>' if i < left else f"<th>{h}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _status(status: str) -> str:
    return f'<span class="badge {_cls(status)}">{escape(status)}</span>'


def _shares(verdict: GroupVerdict) -> str:
    conf = f"{100 * verdict.policy.confidence:g}%"
    rows = [
        (
            escape(s.subset), str(s.count), _pct(s.observed), f"{_pct(s.ci_low)} – {_pct(s.ci_high)}",
            _pct(s.expected, 1), f"{_pct(s.band_low, 1)} – {_pct(s.band_high, 1)}", "yes" if s.inside_band else "no",
        )
        for s in verdict.shares
    ]
    others = {k: v for k, v in verdict.counts.items() if k not in verdict.expected and k not in ("unknown", "error")}
    rows.extend((escape(k), str(v), "", "", "0% (not expected)", "", "") for k, v in others.items())
    return _table(["subset", "count", "observed", f"{conf} interval", "expected", "band", "interval inside band"], rows)


def _pool(pool: PoolVerdict, cells: Sequence[CellResult]) -> str:
    how = {"pooled": "pooled", "alone": "one cell", "one by one": "cells judged one by one"}[pool.judged]
    route = f"; route <code>{escape(pool.route)}</code>" if pool.route else ""
    title = (
        f"<h3>{escape(pool.name)} — {_status(pool.status)}</h3>"
        f"<p class='muted'>{how}; expected {escape(pool.expected.label())}{route}</p>"
    )
    facts = "; ".join(escape(f) for f in verdict_facts(pool.verdict))
    extra = ""
    if len(pool.cells) > 1:
        mine = [c for c in cells if c.pool == pool.name]
        extra = "<p>cells: " + escape("; ".join(cell_line(c) for c in mine)) + "</p>"
        if pool.homogeneity is not None:
            h = pool.homogeneity
            extra += (
                f"<p>homogeneity χ² = {h.statistic:.3g} ({h.dof} dof), p = {h.p_value:.3g}: "
                + ("the cells agree" if h.homogeneous else "the cells differ") + "</p>"
            )
    return title + _shares(pool.verdict) + f"<p>{facts}</p>" + extra + (
        f'<p class="{_cls(pool.status)}">{escape(pool.reason)}</p>'
    )


def _split(result: Verification) -> str:
    parts = [_pool(p, result.cells) for p in result.judgement.pools] if result.judgement else []
    for cell in result.cells:
        if cell.verdict is None:
            counts = ", ".join(f"{escape(k)} {v}" for k, v in cell.counts.items()) or "no requests"
            parts.append(
                f"<h3>{escape(cell.name)} — {_status('not judged')}</h3>"
                f'<p class="muted">no expected split for this group: {counts}</p>'
            )
    return "".join(parts) or "<p>no requests</p>"


def _confusion(result: Verification) -> str:
    parts = []
    for protocol, matrix in result.confusion.items():
        rows = [
            [escape(group), *(f"{n} ({_pct(share, 1)})" for n, share in zip(cells, shares, strict=True)), str(total)]
            for group, cells, shares, total in zip(
                matrix.groups, matrix.cells, matrix.shares, matrix.row_totals, strict=True
            )
        ]
        parts.append(f"<h3>{escape(protocol)}</h3>" + _table(["group", *map(escape, matrix.subsets), "total"], rows))
    return "".join(parts)


def _crosscheck(result: Verification) -> str:
    check = result.crosscheck
    head = f'<p class="{_cls(check.status)}">{_status(check.status)} {escape(check.reason)}</p>'
    if not check.rows:
        return head
    rows = [
        (escape(r.subset or "(no subset)"), str(r.fingerprint), f"{r.mesh:g}", f"{r.difference:+g}",
         f"{max(r.low, 0):g} – {r.high:g}", "yes" if r.agrees else '<b class="mismatch">no</b>')
        for r in check.rows
    ]  # fmt: skip
    mesh = "Envoy's counters" if check.source == "envoy" else "Prometheus"
    query = f"<p class='muted'>query: <code>{escape(check.query)}</code></p>" if check.query else ""
    return head + _table(["subset", "fingerprints", mesh, "difference", "allowed", "agrees"], rows) + query


def _latency(result: Verification) -> str:
    report = result.latency
    if not report.stats:
        return "<p class='muted'>no successful attributed response to time</p>"
    rows = [
        (escape(s.protocol), escape(s.subset), str(s.n), _ms(s.mean), _ms(s.p50), _ms(s.p90), _ms(s.p99), _ms(s.max))
        for s in report.stats
    ]
    parts = [_table(["protocol", "subset", "n", "mean", "p50", "p90", "p99", "max"], rows, left=2)]
    if report.comparisons:
        level = f"{100 * report.confidence:g}%"
        compared = [
            (escape(c.protocol), f"{escape(c.canary)} vs {escape(c.stable)}", _ms(c.shift_ms),
             f"{_ms(c.ci_low)} – {_ms(c.ci_high)}", "–" if c.p_value is None else f"{c.p_value:.3g}",
             _ms(c.margin_ms), f'<span class="badge">{escape(c.verdict)}</span>')
            for c in report.comparisons
        ]  # fmt: skip
        parts.append(
            f"<p>Canary against stable (Mann-Whitney U, Hodges-Lehmann shift with its {level} interval; "
            f"margin {escape(report.margin)}):</p>"
            + _table(["protocol", "subsets", "shift (ms)", f"{level} interval", "p", "margin (ms)", "verdict"], compared, left=2)
        )
        parts.extend(f"<p class='muted'>{escape(c.reason)}</p>" for c in report.comparisons)
    if report.excluded:
        parts.append(f"<p class='muted'>{report.excluded} failed or unattributed request(s) left out.</p>")
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(result.subsets)}
    for protocol, edges in report.edges.items():
        mine = [s for s in report.stats if s.protocol == protocol]
        hist = [Series(s.subset, s.histogram, colors.get(s.subset, "#888")) for s in mine]
        cdf = [Series(s.subset, s.cdf, colors.get(s.subset, "#888")) for s in mine]
        parts.append(
            f"<h3>{escape(protocol)}</h3><div class='charts'>"
            + histogram_svg(f"{protocol} latency histogram", edges, hist)
            + cdf_svg(f"{protocol} latency CDF", cdf)
            + "</div>"
        )
    return "".join(parts)


def _accuracy(result: Verification) -> str:
    report = result.accuracy
    level = f"{100 * report.confidence:g}%"
    parts = [f"<p class='{'muted' if report.meaningful else 'inconclusive'}'>{escape(report.note)}</p>"]
    rows = [
        (escape(a.subset), str(a.n), str(a.correct), _pct(a.accuracy, 1),
         f"{_pct(a.ci_low, 1)} – {_pct(a.ci_high, 1)}", str(a.unlabelled))
        for a in report.subsets
    ]  # fmt: skip
    parts.append(_table(["subset", "labelled responses", "top-1 correct", "accuracy", f"{level} Wilson interval", "unlabelled"], rows))
    for pair in report.agreement:
        parts.append(
            f"<p>top-1 agreement {escape(pair.first)} vs {escape(pair.second)}: {pair.agree} of "
            f"{pair.payloads} payloads ({_pct(pair.share, 1)}, {level} Wilson interval "
            f"{_pct(pair.ci_low, 1)} – {_pct(pair.ci_high, 1)})</p>"
        )
    names = [a.subset for a in report.subsets]
    per_payload: list[tuple[str, ...]] = [
        (escape(p.payload_id), escape(p.format), "–" if p.label is None else str(p.label),
         *(str(p.top1[n]) if n in p.top1 else "–" for n in names),
         escape(", ".join(p.unstable)) or "")
        for p in report.payloads
    ]  # fmt: skip
    if per_payload:
        parts.append(_table(["payload", "format", "label", *(f"{escape(n)} top-1" for n in names), "unstable"], per_payload, left=2))
    return "".join(parts)


def _checks(checks: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        (
            escape(str(c.get("generated_at", ""))), _status(str(c.get("status", "unreadable"))),
            escape(str(c.get("expected_source") or "–")),
            escape(", ".join(f"{k} {v}" for k, v in (c.get("policy") or {}).items() if k in ("alpha", "tolerance", "confidence"))),
            escape(str(c.get("reason") or c.get("problem") or "")),
        )
        for c in checks
    ]
    return _table(["time (UTC)", "verdict", "expected from", "options", "reason"], rows, left=5) if rows else ""


def html_report(result: Verification, checks: Sequence[Mapping[str, Any]] = ()) -> str:
    """The page (see the module docstring); ``checks``: every check made of the run, newest first."""
    run = result.run
    policy = result.policy
    head = (
        f"<h1>canary split verification — {escape(run.run_id)}</h1>"
        f"<p>Overall: {_status(result.status)}"
        + (f" (exit code {result.exit_code})" if result.judged else "")
        + f". {escape(result.reason)}</p>"
        f"<p class='muted'>run directory {escape(str(run.root))}; {len(run.records)} requests; "
        + (f"expected from {escape(result.source)}; " if result.source else "no expected split; ")
        + "stable subset "
        f"{escape(result.stable or '–')}; α = {policy.alpha:g}, tolerance ±{100 * policy.tolerance:g} points, "
        f"confidence {100 * policy.confidence:g}%, max unknown {_pct(policy.max_unknown_rate, 3)}, "
        f"max error {_pct(policy.max_error_rate, 3)}; generated {escape(result.generated_at)}</p>"
    )
    sections = []
    if len(result.phases) > 1:
        rows = [tuple(escape(v) for v in phase_row(p)) for p in result.phases]
        notes = "".join(f"<p>phase {p.phase}: {escape(p.convergence.reason)}</p>" for p in result.phases if p.convergence)
        sections.append(("Routing phases", _table(list(PHASE_COLUMNS), rows, left=1) + notes))
    sections += [
        ("Split per pool of cells", _split(result)),
        ("Every check of this run, newest first", _checks(checks)),
        ("Header group × subset", _confusion(result)),
        ("Cross-check against the mesh's counters", _crosscheck(result)),
        ("Latency", _latency(result)),
        ("Accuracy", _accuracy(result)),
    ]
    if result.notes:
        sections.append(("Notes", "<ul>" + "".join(f"<li>{escape(n)}</li>" for n in result.notes) + "</ul>"))
    body = head + "".join(f"<h2>{title}</h2>{content}" for title, content in sections)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>canary — {escape(run.run_id)} — {escape(result.status)}</title>"
        f"<style>{_CSS}</style></head><body>{body}</body></html>\n"
    )


def write_html(path: Path, result: Verification, checks: Sequence[Mapping[str, Any]] = ()) -> Path:
    return write_atomic(path, html_report(result, checks).encode())
