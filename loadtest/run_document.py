"""run.json as the master writes it: the run's arguments, payloads, calibration, mesh, requests
and records, from the collecting side (:class:`loadtest.master.MasterSide`) as it stands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canary.rundir.document import (
    CalibrationSummary,
    ExpectedSplit,
    PayloadRecord,
    PayloadsRecord,
    RequestsRecord,
    RunArguments,
    RunDocument,
)
from canary.rundir.layout import versions
from loadtest.meshinfo import mesh_record

if TYPE_CHECKING:
    from loadtest.master import MasterSide

__all__ = ["run_document"]


def run_document(side: MasterSide) -> RunDocument:
    """run.json for the master's side of a run, as it stands (see reports/README.md)."""
    assert side.run is not None and side.sink is not None
    stats = side.sink.stats
    env = side.environment
    parsed = env.parsed_options
    users: dict[str, dict[str, int]] = {}
    for (protocol, group), n in sorted(side.groups.items()):
        users.setdefault(protocol, {})[group] = n
    cal = side.calibration
    locust_stats = side.runner.stats.total
    return RunDocument(
        run_id=side.run.root.name,
        status=side.status,
        started_at=side.started_at,
        ended_at=side.ended_at or None,
        host=env.host,
        runner="local" if side.local else "master",
        arguments=RunArguments(
            argv=list(sys.argv),
            canary=side.options,
            locust={name: _plain(getattr(parsed, name, None)) for name in (
                "num_users", "spawn_rate", "run_time", "processes", "expect_workers", "headless",
                "user_classes", "exit_code_on_error")} | {"stop_timeout": env.stop_timeout},
            user_classes=sorted(c.__name__ for c in env.user_classes),
        ),
        payloads=PayloadsRecord(
            dir=str(side.payloads.images_dir),
            size=side.payloads.size,
            digest=side.payloads.digest,
            items=[PayloadRecord(id=p.id, label=p.label, sha256=dict(p.digests)) for p in side.payloads],
        ),
        calibration=CalibrationSummary.model_validate({
            "file": side.run.calibration_json.name,
            **side.calibration_origin,
            "source": cal.meta.get("origin", cal.source),
            "tolerance": cal.tolerance,
            "subsets": list(cal.subsets),
            "pairs": len(cal.pairs),
            "usable": len(cal.usable),
            "excluded": list(cal.warnings),
        }),
        models=side.models,
        expected={group: ExpectedSplit(shares=dict(e.shares), label=e.label())
                  for group, e in sorted(side.expected.items())},
        users=users,
        mesh=mesh_record(env.host, side.mesh_before, side.mesh_after, side.phases.records, side.mesh_problems),
        versions=versions(),
        requests=RequestsRecord(
            total=stats.rows,
            target=side.options.requests,
            by_outcome=dict(sorted(stats.by_outcome.items())),
            by_subset=dict(sorted(stats.by_subset.items())),
            locust={"requests": locust_stats.num_requests, "failures": locust_stats.num_failures},
        ),
        records=stats.record(dir=side.run.records.name, lost=side.lost(),
                             workers_flushed=sorted(side.flushed)),
        sequential=side.sequential.record() if side.sequential is not None else None,
        problems=list(side.problems),
        exit_code=side.exit_code,
        interrupted=side.interruption() if side.status == "interrupted" else None,
    )


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return str(value)
