"""``canary load``: the load test, then the run's report, as ``canary report`` writes it.

The load test (:func:`loadtest.load.run_load`) cannot import the verifier (it is
a layer below it), so the roof strings them together: once Locust has written
``run.json``, the run is judged against whatever expectation it carries (none:
counts, latency and accuracy only) and ``summary.json``, ``report.html`` and the
CSVs are written into the run directory. A report that cannot be written is a
warning, never a change of the load test's exit code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from canary.errors import CanaryError
from loadtest.incluster_load import InClusterLoad, run_in_cluster
from loadtest.load import (
    LoadRequest,
    LoadResult,
    ProgressCallback,
    WarnCallback,
    run_load,
    startup_error,
)
from verifier.report_files import verify_and_report
from verifier.report_html import REPORT_FILE
from verifier.verify import VerifyRequest

__all__ = ["LoadOutcome", "load_and_report"]


@dataclass(frozen=True)
class LoadOutcome:
    result: LoadResult
    report: Path | None  # report.html, when it was written
    problem: str | None = None  # why it was not


def load_and_report(request: LoadRequest, *, progress: ProgressCallback | None = None,
                    warn: WarnCallback | None = None, in_cluster: InClusterLoad | None = None) -> LoadOutcome:
    """Run the load (here, or with ``in_cluster`` as Jobs in the cluster), then write its report."""
    if in_cluster is not None:
        result = run_in_cluster(in_cluster, progress=progress, warn=warn)
    else:
        result = run_load(request, progress=progress, warn=warn)
    if result.run is None:
        why = startup_error(result.log)
        return LoadOutcome(result, None, f"Locust wrote no run.json{f': {why}' if why else ''} (its log: {result.log})")
    try:
        _, written = verify_and_report(VerifyRequest(run_dir=result.run_dir, require_expectation=False))
    except CanaryError as error:
        return LoadOutcome(result, None, f"the report could not be written: {error}")
    report = next((p for p in written.paths if p.name == REPORT_FILE), None)
    return LoadOutcome(result, report, "; ".join(written.warnings) or None)
