"""The report's sections for people comparing the models: the run, over time, latency, accuracy.

HTML strings out (cells escaped here), charts from :mod:`verifier.plots`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from canary.classes import class_name

from .accuracy import AccuracyReport
from .latency import ALL_FORMATS, LatencyReport, LatencyStats
from .percentiles import Percentile
from .plots import latency_figure, timeline_figure
from .report_facts import pct
from .report_page import badge, ms, table
from .run_facts import RunFacts
from .timeline import Timeline

__all__ = ["accuracy_section", "latency_section", "over_time_section", "run_section"]


def run_section(facts: RunFacts) -> str:
    users = "; ".join(f"{p}: " + ", ".join(f"{g} {n}" for g, n in groups.items())
                      for p, groups in facts.users.items()) or "not recorded"
    failed = ", ".join(f"{escape(s)} ×{n}" for s, n in facts.failed_by_status.items()) or "none"
    weights = ", ".join(f"{escape(s)} {escape(w)}" for s, w in facts.weights.items()) or "not recorded"
    rows = [
        ("duration", "–" if facts.duration_s is None else f"{facts.duration_s:.1f} s"),
        ("users", f"{facts.users_total} ({escape(users)})"),
        ("requests", f"{facts.requests:,}" + ("" if facts.rps is None else f" ({facts.rps:.1f} per second)")),
        ("failed, by status", failed),
        ("machine", escape(facts.machine)),
        ("weights", weights + (" — seeded weights: the accuracy figures say nothing about the models' quality"
                               if facts.seeded else "")),
    ]
    rows += [(f"routing {'phases' if len(facts.phases) > 1 else 'phase'}", escape(line)) for line in facts.phases]
    return "<table>" + "".join(f"<tr><th class='l'>{k}</th><td class='l'>{v}</td></tr>" for k, v in rows) + "</table>"


def over_time_section(line: Timeline, colors: Mapping[str, str]) -> str:
    if not line.buckets:
        return "<p class='muted'>no request to plot</p>"
    marks = "".join(f"<li>configuration v{m.version} pushed at {m.at_s:.1f} s: took effect {escape(m.took_effect)}</li>"
                    for m in line.marks)
    return (f"<div class='chart'>{timeline_figure(line, colors)}</div>"
            + (f"<p>Routing changes (dashed lines):</p><ul>{marks}</ul>" if marks else ""))


def _cell(p: Percentile) -> str:
    low = "…" if p.low is None else ms(p.low)
    high = "…" if p.high is None else ms(p.high)
    return f"{ms(p.value)} <span class='muted'>({low}–{high})</span>"


def _stats_rows(stats: Sequence[LatencyStats]) -> list[list[str]]:
    rows = []
    for s in stats:
        where = s.protocol if s.format == ALL_FORMATS else f"{s.protocol} · {s.format}"
        server = {p.label: p.value for p in s.server}
        upstream = f"{ms(server['p50'])} / {ms(server['p99'])}" if server else "–"
        rows.append([escape(where), escape(s.subset), str(s.n), ms(s.mean), *(_cell(p) for p in s.percentiles),
                     ms(s.max), upstream, escape("; ".join(s.notes))])
    return rows


def latency_section(report: LatencyReport, colors: Mapping[str, str]) -> str:
    if not report.stats:
        return "<p class='muted'>no successful attributed response to time</p>"
    stratified = report.formats != (ALL_FORMATS,)
    parts = []
    if stratified:
        parts.append(f"<p>The run sent {len(report.formats)} payload formats ({escape(', '.join(report.formats))}): "
                     "each is different work for the server, so every figure is per format.</p>")
    parts.append(table(["protocol", "subset", "n", "mean", "p50 (95% interval)", "p90", "p95", "p99", "max",
                        "server p50 / p99", "note"], _stats_rows(report.stats), left=2))
    parts.append("<p class='muted'>Milliseconds, client side (Locust's response time). Percentile intervals are "
                 "exact order-statistic intervals; “…” marks a side too few responses can bound. Server: the "
                 "mesh's own upstream time (Envoy's x-envoy-upstream-service-time, whole milliseconds), where it "
                 "reported one; the difference is the ingress and the network.</p>")
    if report.comparisons:
        level = f"{100 * report.confidence:g}%"
        rows = [[escape(c.protocol), escape(c.format), escape(f"{c.canary} vs {c.stable}"), badge(c.verdict),
                 escape(c.line), "–" if c.p_value is None else f"{c.p_value:.3g}"] for c in report.comparisons]
        parts.append(f"<h3>Canary against stable</h3><p>Mann-Whitney U; Hodges-Lehmann shift with its {level} "
                     f"interval against the margin ({escape(report.margin)}); p50 and p99 ratios with {level} "
                     "bootstrap intervals.</p>"
                     + table(["protocol", "format", "subsets", "verdict", "in short", "Mann-Whitney p"], rows, left=5))
        parts.extend(f"<p>{escape(a.line)}</p>" for a in report.agreement)
    if report.excluded:
        parts.append(f"<p class='muted'>{report.excluded} failed or unattributed request(s) left out.</p>")
    for stratum, edges in report.edges.items():
        mine = [s for s in report.stats if s.stratum == stratum]
        parts.append(f"<h3>{escape(stratum)}</h3><div class='chart'>"
                     f"{latency_figure(stratum, mine, edges, colors)}</div>")
    return "".join(parts)


def _names(classes: Sequence[str]) -> str:
    return escape(", ".join(classes)) or "–"


def accuracy_section(report: AccuracyReport) -> str:
    level = f"{100 * report.confidence:g}%"
    parts = [f"<p class='{'muted' if report.meaningful else 'inconclusive'}'>{escape(report.note)}</p>"]
    rows = [[escape(a.subset), str(a.n), f"{pct(a.accuracy, 1)} ({pct(a.ci_low, 1)}–{pct(a.ci_high, 1)})",
             f"{pct(a.top5_accuracy, 1)} ({pct(a.top5_ci_low, 1)}–{pct(a.top5_ci_high, 1)})", str(a.unlabelled)]
            for a in report.subsets]
    parts.append(table(["subset", "labelled responses", f"top-1 ({level} Wilson)", f"top-5 ({level} Wilson)",
                        "unlabelled"], rows))
    for pair in report.agreement:
        parts.append(f"<p>top-1 agreement {escape(pair.first)} vs {escape(pair.second)}: {pair.agree} of "
                     f"{pair.payloads} payloads ({pct(pair.share, 1)}, {level} Wilson interval "
                     f"{pct(pair.ci_low, 1)}–{pct(pair.ci_high, 1)})</p>")
    names = [a.subset for a in report.subsets]
    payload_rows = [[escape(p.payload_id), escape(p.format), escape(p.label_name or "–"),
                     *(escape(class_name(p.top1[n])) if n in p.top1 else "–" for n in names),
                     escape(", ".join(p.unstable))] for p in report.payloads]
    if payload_rows:
        parts.append(table(["payload", "format", "label", *(f"{escape(n)} top-1" for n in names), "unstable"],
                           payload_rows, left=3 + len(names)))
    disagree = [p for p in report.payloads if len({p.top1.get(n) for n in names if n in p.top1}) > 1]
    if disagree:
        rows = [[escape(p.payload_id), escape(p.format), *(_names(p.names(n)) for n in names)] for p in disagree]
        parts.append("<h3>Payloads on which the models disagree (top-5, most probable first)</h3>"
                     + table(["payload", "format", *(escape(n) for n in names)], rows, left=2 + len(names)))
    return "".join(parts)
