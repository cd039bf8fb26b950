"""``verify-split --junit FILE``: the verdicts as JUnit XML, for CI test reports.

One ``<testsuite>`` per run, one ``<testcase>`` per protocol x group
(``name="rest/default"``) plus one for the cross-check (``name="crosscheck"``),
``classname="verify-split.<run id>"``. The mapping:

=====================  ======================================================
verdict                JUnit
=====================  ======================================================
verified / agree       a passing testcase (details in ``<system-out>``)
refuted / mismatch     ``<failure type="refuted" message="<reason>">``
inconclusive           ``<skipped message="inconclusive: <reason>">`` — not
                       evidence of a fault, but not a pass either: CI still
                       fails on the exit code 2
not judged /           ``<skipped message="not judged: ...">`` /
unavailable            ``<skipped message="unavailable: ...">``
=====================  ======================================================

``<testsuite>`` carries ``<properties>``: the overall status, exit code,
expectation source, stable subset and run directory. Usage errors (exit 3)
write no JUnit file: there is no verdict to report.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from canary.files import write_atomic

from .crosscheck import CrossCheck
from .verify import CellResult, Verification

__all__ = ["junit_xml", "write_junit"]


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _cell_details(cell: CellResult) -> str:
    lines = [f"counts: {', '.join(f'{k}={v}' for k, v in cell.counts.items()) or 'none'}"]
    if cell.expected is not None:
        lines.append(f"expected: {cell.expected.label()}" + (f" (route {cell.route})" if cell.route else ""))
    verdict = cell.verdict
    if verdict is not None:
        for share in verdict.shares:
            lines.append(
                f"{share.subset}: {share.count} = {_pct(share.observed)} "
                f"[{_pct(share.ci_low)}, {_pct(share.ci_high)}] expected {_pct(share.expected)}"
            )
        if verdict.deviation is not None:
            d = verdict.deviation
            lines.append(f"largest deviation {100 * d.signed:+.2f} points ({d.subset}), "
                         f"{100 * d.confidence:.4g}% interval {100 * d.ci_low:.2f}-{100 * d.ci_high:.2f}")
        if verdict.kind == "deterministic" or verdict.wrong.count:
            lines.append(
                f"wrong-subset share below {_pct(verdict.wrong.upper_bound)} at "
                f"{100 * verdict.wrong.confidence:g}% ({verdict.wrong.count} wrong)"
            )
        if cell.pool and cell.pool != cell.name:
            lines.append(f"judged in pool: {cell.pool}")
        lines.append(f"unknown {verdict.unknown}, error {verdict.error}")
        lines.append(f"this cell alone: {verdict.status}: {verdict.reason}")
    return "\n".join(lines)


def _outcome(case: ET.Element, status: str, reason: str, detail: str) -> str:
    """Add the child for ``status``; returns "failure", "skipped" or "passed"."""
    if status in ("refuted", "mismatch"):
        failure = ET.SubElement(case, "failure", {"type": "refuted", "message": reason})
        failure.text = detail
        return "failure"
    if status in ("verified", "agree"):
        ET.SubElement(case, "system-out").text = detail
        return "passed"
    ET.SubElement(case, "skipped", {"message": f"{status}: {reason}"})
    ET.SubElement(case, "system-out").text = detail
    return "skipped"


def _crosscheck_details(check: CrossCheck) -> str:
    rows = [
        f"{r.subset or '(no subset)'}: fingerprints {r.fingerprint}, mesh {r.mesh:g}, "
        f"difference {r.difference:+g}{'' if r.agrees else ' MISMATCH'}"
        for r in check.rows
    ]
    return "\n".join([f"source: {check.source or 'none'}", *rows, check.reason])


def junit_xml(result: Verification) -> str:
    """The JUnit XML document of ``result`` (see the module docstring)."""
    run_id = result.run.run_id
    suites = ET.Element("testsuites", {"name": "verify-split"})
    suite = ET.SubElement(suites, "testsuite", {"name": f"verify-split {run_id}", "timestamp": result.generated_at})
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("status", result.status),
        ("exit_code", str(result.exit_code)),
        ("expected_source", result.source or ""),
        ("stable", result.stable or ""),
        ("run_dir", str(result.run.root)),
        ("reason", result.reason),
    ):
        ET.SubElement(properties, "property", {"name": name, "value": value})
    tally = {"failure": 0, "skipped": 0, "passed": 0}
    classname = f"verify-split.{run_id}"
    for cell in result.cells:
        case = ET.SubElement(suite, "testcase", {"classname": classname, "name": cell.name, "time": "0"})
        tally[_outcome(case, cell.status, cell.reason, _cell_details(cell))] += 1
    check = result.crosscheck
    case = ET.SubElement(suite, "testcase", {"classname": classname, "name": "crosscheck", "time": "0"})
    tally[_outcome(case, check.status, check.reason, _crosscheck_details(check))] += 1
    counts = {
        "tests": str(sum(tally.values())),
        "failures": str(tally["failure"]),
        "errors": "0",
        "skipped": str(tally["skipped"]),
        "time": "0",
    }
    suite.attrib.update(counts)
    suites.attrib.update(counts)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def write_junit(path: Path, result: Verification) -> Path:
    return write_atomic(path, junit_xml(result).encode())
