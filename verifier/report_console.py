"""The terminal output of ``verify-split`` and ``canary report``: rich tables."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from canary.stats import GroupVerdict, PoolVerdict, RunPlan

from .report_facts import PHASE_COLUMNS, cell_line, phase_row, verdict_facts
from .report_facts import pct as _pct
from .verify import CellResult, Verification

__all__ = ["STYLES", "print_plan", "print_verification"]

STYLES = {
    "verified": "bold green",
    "agree": "bold green",
    "refuted": "bold red",
    "mismatch": "bold red",
    "inconclusive": "bold yellow",
    "unavailable": "yellow",
    "not judged": "yellow",
}


def _ms(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.2f}"


def _badge(status: str) -> str:
    return f"[{STYLES.get(status, 'bold')}]{escape(status.upper())}[/]"


def _share_table(verdict: GroupVerdict, title: str) -> Table:
    conf = f"{100 * verdict.policy.confidence:g}%"
    table = Table(
        "subset", "count", "observed", f"{conf} interval", "expected", "band", "interval inside band",
        title=title, title_justify="left",
    )
    for share in verdict.shares:
        table.add_row(
            escape(share.subset), str(share.count), _pct(share.observed),
            f"{_pct(share.ci_low)} – {_pct(share.ci_high)}", _pct(share.expected, 1),
            f"{_pct(share.band_low, 1)} – {_pct(share.band_high, 1)}", "yes" if share.inside_band else "no",
        )
    for name, n in verdict.counts.items():
        if name not in verdict.expected and name not in ("unknown", "error"):
            table.add_row(escape(name), str(n), "", "", "0% (not expected)", "", "")
    return table


def _pool_section(pool: PoolVerdict, cells: Sequence[CellResult]) -> tuple[Table | str, list[str]]:
    route = f", route {pool.route}" if pool.route else ""
    how = {"pooled": "pooled", "alone": "one cell", "one by one": "cells judged one by one"}[pool.judged]
    title = (
        f"{escape(pool.name)} — {_badge(pool.status)}  "
        f"[dim]({how}; expected {escape(pool.expected.label())}{escape(route)})[/]"
    )
    table = _share_table(pool.verdict, title)
    lines = [f"  {escape('; '.join(verdict_facts(pool.verdict)))}"]
    if len(pool.cells) > 1:
        mine = [c for c in cells if c.pool == pool.name]
        lines.append(f"  cells: {escape(', '.join(cell_line(c) for c in mine))}")
        if pool.homogeneity is not None:
            h = pool.homogeneity
            lines.append(
                f"  homogeneity χ² = {h.statistic:.3g} ({h.dof} dof), p = {h.p_value:.3g}: "
                + ("the cells agree" if h.homogeneous else "the cells differ")
            )
    lines.append(f"  {_badge(pool.status)}: {escape(pool.reason)}")
    return table, lines


def _unjudged(cells: Sequence[CellResult]) -> list[str]:
    out = []
    for cell in cells:
        if cell.verdict is None:
            counts = ", ".join(f"{k} {v}" for k, v in cell.counts.items()) or "no requests"
            out.append(f"{cell.protocol} · {cell.group} — {_badge('not judged')}: no expected split for this group ({escape(counts)})")
    return out


def _confusion(result: Verification) -> Table:
    subsets: list[str] = []
    for matrix in result.confusion.values():
        subsets.extend(s for s in matrix.subsets if s not in subsets)
    table = Table("protocol · group", *map(escape, subsets), "total", title="header group × subset", title_justify="left")
    for protocol, matrix in result.confusion.items():
        for group, total in zip(matrix.groups, matrix.row_totals, strict=True):
            cells = []
            for name in subsets:
                n = matrix.count(group, name)
                cells.append(f"{n} ({_pct(n / total if total else 0.0, 1)})")
            table.add_row(f"{protocol} · {group}", *cells, str(total))
    return table


def _crosscheck(result: Verification) -> tuple[Table | str, list[str]]:
    check = result.crosscheck
    line = f"cross-check {_badge(check.status)}: {escape(check.reason)}"
    if not check.rows:
        return line, []
    mesh = "Envoy's counters" if check.source == "envoy" else "Prometheus"
    table = Table("subset", "fingerprints", mesh, "difference", "allowed", "agrees",
                  title="fingerprint counts vs the mesh's own counters", title_justify="left")
    for row in check.rows:
        table.add_row(
            escape(row.subset or "(no subset)"), str(row.fingerprint), f"{row.mesh:g}",
            f"{row.difference:+g}", f"{max(row.low, 0):g} – {row.high:g}",
            "yes" if row.agrees else "[bold red]NO[/]",
        )
    return table, [f"  {line}"]


def _latency(result: Verification) -> tuple[Table | None, list[str]]:
    report = result.latency
    if not report.stats:
        return None, []
    table = Table("protocol", "subset", "n", "mean ms", "p50", "p90", "p95", "p99", "max",
                  title="latency (successful attributed responses; milliseconds)", title_justify="left")
    for s in report.stats:
        table.add_row(escape(s.stratum), escape(s.subset), str(s.n), _ms(s.mean), _ms(s.p50), _ms(s.p90),
                      _ms(s.p95), _ms(s.p99), _ms(s.max))
    lines = [f"  {escape(c.protocol if c.format == 'all' else f'{c.protocol}/{c.format}')}: [bold]{escape(c.verdict)}[/]"
             f" — {escape(c.line)}" for c in report.comparisons]
    lines += [f"  {escape(a.line)}" for a in report.agreement]
    return table, lines


def _accuracy(result: Verification) -> tuple[Table | None, list[str]]:
    report = result.accuracy
    if not any(a.n for a in report.subsets) and not report.agreement:
        return None, [f"  accuracy: no labelled response; {escape(report.note)}"]
    table = Table("subset", "labelled", "correct", "top-1 accuracy", f"{100 * report.confidence:g}% Wilson",
                  title="accuracy", title_justify="left")
    for a in report.subsets:
        table.add_row(escape(a.subset), str(a.n), str(a.correct), _pct(a.accuracy, 1),
                      f"{_pct(a.ci_low, 1)} – {_pct(a.ci_high, 1)}")
    lines = [
        f"  top-1 agreement {escape(p.first)} vs {escape(p.second)}: {p.agree}/{p.payloads} payloads "
        f"({_pct(p.share, 1)}, Wilson {_pct(p.ci_low, 1)} – {_pct(p.ci_high, 1)})"
        for p in report.agreement
    ]
    return table, [*lines, f"  {escape(report.note)}"]


def print_verification(result: Verification, console: Console) -> None:
    """Where the run was found, every table, then the overall verdict."""
    run = result.run
    if result.newest_under is not None:
        console.print(f"judging the newest run under {escape(str(result.newest_under))}: {escape(str(run.root))}")
    console.print(
        f"run [bold]{escape(str(run.root))}[/] ({escape(str(run.document.status))}, "
        f"{len(run.records)} requests); "
        + (f"expected from {escape(result.source)}; " if result.source else "no expected split; ")
        + f"stable subset {escape(result.stable or '–')}"
    )
    parts: list[tuple[Table | str | None, list[str]]] = []
    if len(result.phases) > 1:
        phases = Table(*PHASE_COLUMNS, title="routing phases (each judged against its own routing)",
                       title_justify="left")
        for phase in result.phases:
            phases.add_row(*map(escape, phase_row(phase)))
        notes = [f"  phase {p.phase}: {escape(p.convergence.reason)}" for p in result.phases if p.convergence]
        parts.append((phases, notes))
    if result.judgement is not None:
        parts += [_pool_section(pool, result.cells) for pool in result.judgement.pools]
    parts += [(None, _unjudged(result.cells))]
    if result.confusion:
        parts.append((_confusion(result), []))
    parts += [_crosscheck(result), _latency(result), _accuracy(result)]
    for table, section_lines in parts:
        if table is not None:
            console.print(table)
        for line in section_lines:
            console.print(line)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    code = f" (exit code {result.exit_code})" if result.judged else ""
    lines: list[str] = []
    if result.judgement is not None and result.status != "verified":
        lines = result.judgement.failing_lines()
        if result.crosscheck.status == "mismatch":
            lines.append(f"cross-check: {result.crosscheck.reason}")
    if not lines:
        console.print(f"overall: {_badge(result.status)}{code} — {escape(result.reason)}")
        return
    console.print(f"overall: {_badge(result.status)}{code}")
    for line in lines:
        console.print(f"  - {escape(line)}")
    if result.next_run:
        console.print(f"  a run of this size would likely decide it: [bold]{escape(result.next_run)}[/]")


def print_plan(plan: RunPlan, console: Console) -> None:
    """``verify-split --plan``: the command first, then each pool and the cells' share."""
    console.print(f"[bold]{escape(plan.command())}[/]")
    console.print(
        f"  verifies the expected split and refutes a deviation beyond it, each with probability "
        f"≥ {100 * plan.policy.power:g}%, at ±{100 * plan.policy.tolerance:g} points and "
        f"{100 * plan.policy.confidence:g}% confidence"
    )
    for pool in plan.pools:
        route = f", route {pool.route}" if pool.route else ""
        console.print(
            f"[bold]{escape(pool.name)}[/] ({_pct(pool.weight, 1)} of requests; expected "
            f"{escape(','.join(f'{k}={100 * v:g}%' for k, v in pool.plan.expected.items()))}{escape(route)}): "
            f"{escape(pool.plan.summary())}; needs --requests {pool.requests:,}"
        )
    cells = ", ".join(f"{escape(c)} {n:,}" for c, n in plan.cell_responses().items())
    console.print(f"  attributed responses per cell at {plan.requests:,} requests: {cells}")
    console.print(
        f"  family-wise: each cell refutes at alpha {plan.alpha_cell:.3g}"
        + (f", each pooled table at {plan.alpha_pool:.3g}" if plan.alpha_pool is not None else "")
        + f" (alpha {plan.policy.alpha:g} for the run)"
    )
