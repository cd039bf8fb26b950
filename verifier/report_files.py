"""Writing a verification's files: the one entry point ``verify-split`` and ``canary report`` call.

:func:`verify_and_report` judges a run (:func:`verifier.verify.verify_run`)
keeps the check in the run directory (``checks/``, every check ever made of
the run: a later one never replaces an earlier one), and writes
``summary.json``, ``report.html`` (which list them all, newest first) and
the CSVs of :mod:`verifier.report_csv` into the run directory, plus
the ``--json`` and ``--junit`` files where asked. A run directory that cannot
be written (read-only copy) gives a warning, not a failure: the verdict
stands; an explicitly asked ``--json``/``--junit`` file that cannot be
written is a :class:`UsageError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canary.errors import UsageError
from canary.rundir import read_checks, record_check

from .report_csv import write_csvs
from .report_html import REPORT_FILE, write_html
from .report_json import SUMMARY_FILE, check_record, summary_document, write_summary
from .report_junit import write_junit
from .run_facts import run_timeline
from .verify import Verification, VerifyRequest, verify_run

__all__ = ["Written", "verify_and_report", "write_reports"]


@dataclass(frozen=True)
class Written:
    """What was written, and what could not be."""

    paths: tuple[Path, ...]
    warnings: tuple[str, ...]
    checks: tuple[dict[str, Any], ...] = ()  # every check kept in the run directory, newest first


def write_reports(
    result: Verification,
    *,
    into_run_dir: bool = True,
    json_path: Path | None = None,
    junit_path: Path | None = None,
) -> Written:
    """Write the summary and the page into the run directory, and the asked extra files."""
    paths: list[Path] = []
    warnings: list[str] = []
    root = result.run.root
    checks: list[dict[str, Any]] = []
    if into_run_dir:
        try:
            if result.judged:
                record_check(root, check_record(result))
            checks = read_checks(root)
        except OSError as error:
            warnings.append(f"could not keep this check in {root} ({error.strerror or error})")
    document = summary_document(result, checks)
    if into_run_dir:
        try:
            paths.append(write_summary(root / SUMMARY_FILE, document))
            line = run_timeline(result)
            paths.append(write_html(root / REPORT_FILE, result, document["checks"], line))
            paths.extend(write_csvs(root, result.latency, line, result.accuracy))
        except OSError as error:
            warnings.append(f"could not write the reports into {root} ({error.strerror or error}); use --json FILE")
    for path, write in (
        (json_path, lambda p: write_summary(p, document)),
        (junit_path, lambda p: write_junit(p, result)),
    ):
        if path is None:
            continue
        try:
            paths.append(write(Path(path)))
        except OSError as error:
            raise UsageError(f"cannot write {path}: {error.strerror or error}; choose a writable path") from None
    return Written(tuple(paths), tuple(warnings), tuple(checks))


def verify_and_report(
    request: VerifyRequest,
    *,
    into_run_dir: bool = True,
    json_path: Path | None = None,
    junit_path: Path | None = None,
) -> tuple[Verification, Written]:
    """Verify one run and write its files (see the module docstring)."""
    result = verify_run(request)
    return result, write_reports(result, into_run_dir=into_run_dir, json_path=json_path, junit_path=junit_path)
