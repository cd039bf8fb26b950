"""The terminal output of ``verify-split`` and ``canary report``: rich tables."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .verify import CellResult, PlanRow, Verification

__all__ = ["STYLES", "print_plans", "print_verification"]

STYLES = {
    "verified": "bold green",
    "agree": "bold green",
    "refuted": "bold red",
    "mismatch": "bold red",
    "inconclusive": "bold yellow",
    "unavailable": "yellow",
    "not judged": "yellow",
}


def _pct(value: float | None, digits: int = 2) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{100 * value:.{digits}f}%"


def _ms(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.2f}"


def _badge(status: str) -> str:
    return f"[{STYLES.get(status, 'bold')}]{escape(status.upper())}[/]"


def _cell_table(cell: CellResult) -> tuple[Table | str, list[str]]:
    verdict = cell.verdict
    title = f"{cell.protocol} · {cell.group} — {_badge(cell.status)}"
    if verdict is None:
        counts = ", ".join(f"{k} {v}" for k, v in cell.counts.items()) or "no requests"
        return f"{title}: no expected split for this group ({escape(counts)})", []
    expected = cell.expected.label() if cell.expected else ""
    route = f", route {cell.route}" if cell.route else ""
    conf = f"{100 * verdict.policy.confidence:g}%"
    table = Table(
        "subset", "count", "observed", f"{conf} interval (simultaneous)", "expected", "band", "in band",
        title=f"{title}  [dim](expected {escape(expected)}{escape(route)})[/]", title_justify="left",
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
    if verdict.p_value is not None and verdict.chi2 is not None:
        test = f"{verdict.test}: χ² = {verdict.chi2:.3g}, p = {verdict.p_value:.3g} ({verdict.dof} dof)"
    else:
        test = verdict.test
    lines = [
        f"  {escape(test)}; n = {verdict.n} attributed of {verdict.n_total}; "
        f"wrong-subset share below {_pct(verdict.wrong.upper_bound, 3)} at {conf} "
        f"({verdict.wrong.count} wrong); unknown {verdict.unknown} ({_pct(verdict.unknown_rate)}), "
        f"error {verdict.error} ({_pct(verdict.error_rate)})",
        f"  {_badge(verdict.status)}: {escape(verdict.reason)}",
    ]
    return table, lines


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
    table = Table("protocol", "subset", "n", "mean ms", "p50", "p90", "p99", "max",
                  title="latency (successful attributed responses)", title_justify="left")
    for s in report.stats:
        table.add_row(s.protocol, escape(s.subset), str(s.n), _ms(s.mean), _ms(s.p50), _ms(s.p90), _ms(s.p99), _ms(s.max))
    lines = [f"  {c.protocol}: [bold]{escape(c.verdict)}[/] — {escape(c.reason)}" for c in report.comparisons]
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
    """Every table, then the overall verdict."""
    run = result.run
    console.print(
        f"run [bold]{escape(str(run.root))}[/] ({escape(str(run.document.status))}, "
        f"{len(run.records)} requests); expected from {escape(result.source or 'nowhere')}; "
        f"stable subset {escape(result.stable or '–')}"
    )
    parts: list[tuple[Table | str | None, list[str]]] = [_cell_table(cell) for cell in result.cells]
    if result.confusion:
        parts.append((_confusion(result), []))
    parts += [_crosscheck(result), _latency(result), _accuracy(result)]
    for table, lines in parts:
        if table is not None:
            console.print(table)
        for line in lines:
            console.print(line)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    code = f" (exit code {result.exit_code})" if result.judged else ""
    console.print(f"overall: {_badge(result.status)}{code} — {escape(result.reason)}")


def print_plans(rows: Sequence[PlanRow], console: Console) -> None:
    for row in rows:
        console.print(f"[bold]{escape(row.applies_to)}[/] — {escape(row.plan.summary())}")
