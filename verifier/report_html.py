"""``report.html``: one self-contained page (inline CSS and SVG, no script, no network).

Sections: the overall verdict; the run (duration, users, requests per second,
failures by status, the machine, seeded weights, routing phases); the run over
time (requests per second, share and median latency per subset, a mark at
each routing change); the routing phases; the split table of every pool of
cells (counts, observed share with its interval, expected share and band, the
cells, the homogeneity test and the verdict); every check made of the run,
newest first; the group x subset confusion matrices; the cross-check against
the mesh's counters; latency per subset x protocol x payload format
(percentiles with intervals, histogram and CDF, canary vs stable with ratios);
accuracy (top-1 and top-5 with class names, disagreements); notes. Charts are
inline SVG drawn by matplotlib (:mod:`verifier.plots`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from canary.files import write_atomic
from canary.stats import GroupVerdict, PoolVerdict

from .plots import colors_for
from .report_facts import PHASE_COLUMNS, cell_line, phase_row, verdict_facts
from .report_facts import pct as _pct
from .report_page import badge, css_class, page, table
from .report_sections import accuracy_section, latency_section, over_time_section, run_section
from .run_facts import run_facts, run_timeline
from .timeline import Timeline
from .verify import CellResult, Verification

__all__ = ["REPORT_FILE", "html_report", "write_html"]

REPORT_FILE = "report.html"



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
    return table(["subset", "count", "observed", f"{conf} interval", "expected", "band", "interval inside band"], rows)


def _pool(pool: PoolVerdict, cells: Sequence[CellResult]) -> str:
    how = {"pooled": "pooled", "alone": "one cell", "one by one": "cells judged one by one"}[pool.judged]
    route = f"; route <code>{escape(pool.route)}</code>" if pool.route else ""
    title = (
        f"<h3>{escape(pool.name)} — {badge(pool.status)}</h3>"
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
        f'<p class="{css_class(pool.status)}">{escape(pool.reason)}</p>'
    )


def _split(result: Verification) -> str:
    parts = [_pool(p, result.cells) for p in result.judgement.pools] if result.judgement else []
    for cell in result.cells:
        if cell.verdict is None:
            counts = ", ".join(f"{escape(k)} {v}" for k, v in cell.counts.items()) or "no requests"
            parts.append(
                f"<h3>{escape(cell.name)} — {badge('not judged')}</h3>"
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
        parts.append(f"<h3>{escape(protocol)}</h3>" + table(["group", *map(escape, matrix.subsets), "total"], rows))
    return "".join(parts)


def _crosscheck(result: Verification) -> str:
    check = result.crosscheck
    head = f'<p class="{css_class(check.status)}">{badge(check.status)} {escape(check.reason)}</p>'
    if not check.rows:
        return head
    rows = [
        (escape(r.subset or "(no subset)"), str(r.fingerprint), f"{r.mesh:g}", f"{r.difference:+g}",
         f"{max(r.low, 0):g} – {r.high:g}", "yes" if r.agrees else '<b class="mismatch">no</b>')
        for r in check.rows
    ]  # fmt: skip
    mesh = "Envoy's counters" if check.source == "envoy" else "Prometheus"
    query = f"<p class='muted'>query: <code>{escape(check.query)}</code></p>" if check.query else ""
    return head + table(["subset", "fingerprints", mesh, "difference", "allowed", "agrees"], rows) + query


def _checks(checks: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        (
            escape(str(c.get("generated_at", ""))), badge(str(c.get("status", "unreadable"))),
            escape(str(c.get("expected_source") or "–")),
            escape(", ".join(f"{k} {v}" for k, v in (c.get("policy") or {}).items() if k in ("alpha", "tolerance", "confidence"))),
            escape(str(c.get("reason") or c.get("problem") or "")),
        )
        for c in checks
    ]
    return table(["time (UTC)", "verdict", "expected from", "options", "reason"], rows, left=5) if rows else ""


def html_report(result: Verification, checks: Sequence[Mapping[str, Any]] = (), line: Timeline | None = None) -> str:
    """The page (see the module docstring); ``checks``: every check made of the run, newest first."""
    run = result.run
    policy = result.policy
    head = (
        f"<h1>canary split verification — {escape(run.run_id)}</h1>"
        f"<p>Overall: {badge(result.status)}"
        + (f" (exit code {result.exit_code})" if result.judged else "")
        + f". {escape(result.reason)}</p>"
        f"<p class='muted'>run directory {escape(str(run.root))}; {len(run.records)} requests; "
        + (f"expected from {escape(result.source)}; " if result.source else "no expected split; ")
        + "stable subset "
        f"{escape(result.stable or '–')}; α = {policy.alpha:g}, tolerance ±{100 * policy.tolerance:g} points, "
        f"confidence {100 * policy.confidence:g}%, max unknown {_pct(policy.max_unknown_rate, 3)}, "
        f"max error {_pct(policy.max_error_rate, 3)}; generated {escape(result.generated_at)}</p>"
    )
    colors = colors_for(result.subsets)
    sections = [
        ("The run", run_section(run_facts(run, result.phases))),
        ("Over time", over_time_section(line or run_timeline(result), colors)),
    ]
    if len(result.phases) > 1:
        rows = [tuple(escape(v) for v in phase_row(p)) for p in result.phases]
        notes = "".join(f"<p>phase {p.phase}: {escape(p.convergence.reason)}</p>" for p in result.phases if p.convergence)
        sections.append(("Routing phases", table(list(PHASE_COLUMNS), rows, left=1) + notes))
    sections += [
        ("Split per pool of cells", _split(result)),
        ("Every check of this run, newest first", _checks(checks)),
        ("Header group × subset", _confusion(result)),
        ("Cross-check against the mesh's counters", _crosscheck(result)),
        ("Latency", latency_section(result.latency, colors)),
        ("Accuracy", accuracy_section(result.accuracy)),
    ]
    if result.notes:
        sections.append(("Notes", "<ul>" + "".join(f"<li>{escape(n)}</li>" for n in result.notes) + "</ul>"))
    body = head + "".join(f"<h2>{title}</h2>{content}" for title, content in sections)
    return page(f"canary — {run.run_id} — {result.status}", body)


def write_html(path: Path, result: Verification, checks: Sequence[Mapping[str, Any]] = (),
               line: Timeline | None = None) -> Path:
    """Write the page; ``line``: the run's timeline when the caller has it already (else made here)."""
    return write_atomic(path, html_report(result, checks, line).encode())
