"""The end-of-run checks of the collecting side: what was lost, and the exit code it calls for.

Pure: the master (:mod:`loadtest.master`) hands in what it knows (the sink's
tallies, each worker's ``flushed`` report, Locust's own request count, how
the test ended) and gets back the problems, each saying precisely what went
wrong, and the exit code:

* 130 (:attr:`~canary.conventions.ExitCode.INTERRUPTED`) for an interrupted
  run, whatever it found so far: CI must tell it from a finished run;
* Locust's ``--exit-code-on-error`` when a request failed;
* 1 for any other problem (a record lost, Locust's count and the records
  apart, unattributable responses, requests the stop timeout cut short);
* ``--until-verified``'s own code (0 / 1 / 2) once the sequential test ended;
* None: nothing to say (exit 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from canary.conventions import ExitCode
from loadtest.records import SinkStats

__all__ = ["end_checks", "lost_records", "unconfirmed_workers"]


def lost_records(flushed: Mapping[str, Mapping[str, Any]], stats: SinkStats) -> dict[str, int]:
    """Per worker, the records it made (its ``flushed`` report) that never reached the master."""
    lost = {}
    for info in flushed.values():
        worker = str(info.get("worker"))
        received = stats.workers[worker].received if worker in stats.workers else 0
        if int(info.get("produced", 0)) > received:
            lost[worker] = int(info.get("produced", 0)) - received
    return lost


def unconfirmed_workers(stats: SinkStats, asked: Iterable[str], flushed: Iterable[str], timed_out: Iterable[str],
                        bound_s: float) -> list[str]:
    """One line per worker that took part (asked to stop, or sent records) and never confirmed its last
    records: one still connected at the deadline timed out, another left first; what arrived from it
    is known, what it made after is not."""
    lines = []
    waited = set(timed_out)
    for node in sorted((set(asked) | set(stats.workers)) - set(flushed) - {"local"}):
        tally = stats.workers.get(node)
        arrived = (f"{tally.received} of its records arrived (up to seq {tally.next_seq - 1})" if tally
                   else "none of its records arrived")
        why = (f"did not confirm its last records within {bound_s:g} s" if node in waited
               else "left (or lost its connection) without confirming its last records")
        lines.append(f"worker {node} {why}: {arrived}; any it made after are missing from this run "
                     "(Locust's count against the records says how many)")
    return lines


def end_checks(stats: SinkStats, *, notes: Iterable[str], lost: Mapping[str, int], locust_requests: int,
               interrupted: bool, exit_code_on_error: int, sequential_exit: int | None) -> tuple[list[str], int | None]:
    """The problems (``notes`` first) and the exit code they call for (None: all good)."""
    problems = list(notes)
    failed, unknown = stats.by_outcome.get("failed", 0), stats.by_outcome.get("unknown", 0)
    if stats.rows == 0:
        problems.append("no request was sent")
    if total := sum(lost.values()) + stats.missing:
        which = ", ".join(f"worker {w}: {n}" for w, n in sorted(lost.items()))
        gaps = ", ".join(f"worker {w}: {t.missing}" for w, t in sorted(stats.workers.items()) if t.missing)
        problems.append(f"{total} records were lost on the way to the master (made but never received: "
                        f"{which or 'none'}; gaps in the sequence numbers: {gaps or 'none'})")
    if locust_requests != stats.rows:
        problems.append(f"Locust counted {locust_requests} requests but {stats.rows} records arrived")
    if cut := stats.by_outcome.get("interrupted", 0):
        problems.append(f"{cut} requests were still in flight when the stop timeout ran out (status "
                        "'interrupted': counted as failed, never as answered; raise --stop-timeout)")
    if unknown:
        problems.append(f"{unknown} responses could not be attributed to a subset (subset 'unknown'; "
                        "see the records' error and top5 columns, or recalibrate)")
    if failed:
        problems.append(f"{failed} requests failed (subset 'error'; see the records' status and error)")
    if interrupted:
        return problems, int(ExitCode.INTERRUPTED)
    if failed:
        return problems, exit_code_on_error or 1
    if problems:
        return problems, 1
    return problems, sequential_exit or None
