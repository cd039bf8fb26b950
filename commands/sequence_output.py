"""The terminal side of ``canary demo`` and ``canary rollout``: one line per step, one screen at the end."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.markup import escape
from rich.table import Table

from canary.rundir.steps import StepRecord
from commands.console import Consoles
from commands.steps import LoadPlan, LoadProgress, SequenceResult
from loadtest.load import LoadRequest, RichProgress

__all__ = ["load_bar", "print_sequence_end", "step_line"]

_STYLE = {"verified": "green", "refuted": "red", "failed": "red", "inconclusive": "yellow", "passed": "green",
          "promoted": "green", "rolled back": "red"}


def _seconds(value: float | None) -> str:
    return "–" if value is None else (f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s")


def step_line(step: StepRecord, total: int) -> str:
    """``[3/4] weight-70  VERIFIED  1,234 requests  routing live in 82 ms  12.3 s``, as rich markup."""
    style = _STYLE.get(step.status, "yellow")
    weight = "" if step.canary_percent is None else f" (canary {step.canary_percent}%)"
    failed_gates = [g.name for g in step.gates if g.status == "fail"]
    gates = f"  gates failed: {', '.join(failed_gates)}" if failed_gates else (
        "  gates passed" if step.gates else "")
    return (f"[{step.index}/{total}] {escape(step.name)}{weight}  [bold {style}]{step.status.upper()}[/]  "
            f"{step.requests:,} requests  routing live in {_seconds(step.took_effect_s)}  "
            f"{_seconds(step.seconds)}{escape(gates)}")


def load_bar(io: Consoles) -> LoadProgress:
    """Each step's load test as a progress bar on stderr that disappears when the step ends."""

    @contextlib.contextmanager
    def bar(request: LoadRequest) -> Iterator[RichProgress]:
        with RichProgress(request, console=io.err, transient=True) as progress:
            yield progress

    return bar


def print_sequence_end(io: Consoles, result: SequenceResult, plan: LoadPlan) -> None:
    """The one-screen summary: the steps, what failed and why, where the report is, what to run next."""
    document, folder, report, results = result.document, result.steps_dir, result.report, result.results
    table = Table("#", "step", "expected", "verdict", "requests", "routing live in", "time",
                  title=f"canary {document.kind}: {document.status} ({document.summary})")
    for step in document.steps:
        style = _STYLE.get(step.status, "yellow")
        table.add_row(str(step.index), escape(step.title), escape(step.expected), f"[{style}]{step.status}[/]",
                      f"{step.requests:,}", _seconds(step.took_effect_s), _seconds(step.seconds))
    io.out.print(table)
    for step in document.steps:
        if step.status != "verified":
            io.out.print(f"step {step.index} ({escape(step.name)}) {step.status}:")
            for line in step.details[:6] or [step.verdict]:
                io.out.print(f"  - {escape(line)}")
        for gate in step.gates:
            if gate.status == "fail":
                io.out.print(f"step {step.index} gate {escape(gate.name)} FAILED: {escape(gate.reason)}")
    io.out.print(f"verdicts at {escape(plan.describe())}")
    io.out.print(f"report: {report}   (steps: {folder / 'steps.json'}; each step's run and report beside it)")
    commands = [r for r in results if r.run_dir is not None]
    if commands:
        io.out.print("look further:")
        for done in commands[-2:]:
            io.out.print(f"  {escape(done.record.verify_command)}")
        io.out.print(f"  canary report {commands[-1].run_dir}")
