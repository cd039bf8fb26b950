"""``report.html`` of a sequence of steps (``canary demo``, ``canary rollout``): one self-contained page.

The sequence's outcome, its settings, one row per step (what it applied, the
expectation, the verdict, requests, how long the new routing took to take
effect, its time) linking the step's own report, then each step's failing
cells and gates. The CSS and table helper are the run report's.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from canary.files import write_atomic
from canary.rundir.steps import GateRecord, StepRecord, StepsDir, StepsDocument

from .report_html import REPORT_FILE
from .report_page import css_class, page, table

__all__ = ["steps_html", "write_steps_html"]


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


def _gate_value(gate: GateRecord) -> str:
    if gate.value is None:
        return "–"
    if gate.unit == "fraction":
        text = f"{100 * gate.value:.2f}%"
        span = "" if gate.low is None or gate.high is None else f" ({100 * gate.low:.2f}–{100 * gate.high:.2f}%)"
        return text + span
    if gate.unit == "ratio":
        span = "" if gate.low is None or gate.high is None else f" (×{gate.low:.2f}–×{gate.high:.2f})"
        return f"×{gate.value:.2f}{span}"
    span = "" if gate.low is None or gate.high is None else f" ({gate.low:+.1f} to {gate.high:+.1f} ms)"
    return f"{gate.value:+.1f} ms{span}"


def _gate_limit(gate: GateRecord) -> str:
    if gate.limit is None:
        return "–"
    if gate.unit == "fraction":
        return f"{100 * gate.limit:g}%"
    return f"×{gate.limit:g}" if gate.unit == "ratio" else f"+{gate.limit:g} ms"


def _step_row(step: StepRecord) -> list[str]:
    link = (f'<a href="{escape(step.run)}/{REPORT_FILE}">{escape(step.run)}</a>' if step.run else "–")
    weight = "" if step.canary_percent is None else f" (canary {step.canary_percent}%)"
    return [
        str(step.index),
        escape(step.title) + weight,
        escape(", ".join(Path(p).name for p in step.applied) or "–"),
        escape(step.expected),
        f'<span class="badge {css_class(step.status)}">{escape(step.status)}</span>',
        f"{step.requests:,}",
        _seconds(step.took_effect_s),
        _seconds(step.seconds),
        link,
    ]


def _step_details(step: StepRecord) -> str:
    parts = [f"<h3>{step.index}. {escape(step.name)}</h3><p>{escape(step.verdict)}</p>"]
    if step.details:
        parts.append("<ul>" + "".join(f"<li>{escape(d)}</li>" for d in step.details) + "</ul>")
    if step.gates:
        rows = [[escape(g.name), f'<span class="badge {css_class(g.status)}">{escape(g.status)}</span>',
                 _gate_value(g), _gate_limit(g), escape(g.reason)] for g in step.gates]
        parts.append(table(["gate", "status", "estimate (interval)", "limit", "why"], rows, left=1))
    return "".join(parts)


def steps_html(document: StepsDocument) -> str:
    title = f"canary {document.kind}: {document.status}"
    settings = "".join(f"<li>{escape(str(k))}: {escape(str(v))}</li>" for k, v in sorted(document.settings.items()))
    steps = table(["#", "step", "applied", "expected", "verdict", "requests", "routing live after", "time",
                    "run"], [_step_row(s) for s in document.steps], left=5)
    details = "".join(_step_details(s) for s in document.steps)
    return page(title, (
        f"<h1>canary {escape(document.kind)}: <span class='badge {css_class(document.status)}'>"
        f"{escape(document.status)}</span></h1>"
        f"<p>{escape(document.summary)}. Started {escape(document.started_at)}, ended "
        f"{escape(document.ended_at or '–')}; exit code {document.exit_code if document.exit_code is not None else '–'}."
        f"</p><h2>Steps</h2>{steps}<p class='muted'>“routing live after”: from the start of the "
        "configuration push to the ingress's acknowledgement (the first step: the mesh's start).</p>"
        f"<h2>Each step</h2>{details}<h2>Settings</h2><ul>{settings}</ul>"
    ))


def write_steps_html(folder: StepsDir, document: StepsDocument) -> Path:
    path = folder.report_html
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, steps_html(document).encode())
    return path
