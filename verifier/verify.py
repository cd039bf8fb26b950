"""``verify-split`` and ``canary report`` as library functions: a run directory in, verdicts out.

:func:`verify_run` reads one run directory (:mod:`verifier.run`), works out
the expectation per protocol x group (:mod:`verifier.resolve`), judges each
with :func:`verifier.verify_group`, cross-checks the fingerprint counts
against the mesh's counters (:mod:`verifier.crosscheck`), and adds the
latency (:mod:`verifier.latency`) and accuracy (:mod:`verifier.accuracy`)
figures. :func:`write_reports` writes ``summary.json`` and ``report.html``
into the run directory (and ``--json`` / ``--junit`` files where asked).

Overall status: refuted if any judged cell is refuted or the cross-check
finds a mismatch; else inconclusive if any judged cell is inconclusive (or
none was judged); else verified. Exit codes: 0 verified, 1 refuted,
2 inconclusive, 3 bad usage or unreadable input (:class:`UsageError`).
Latency and accuracy are reported and never change the exit code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from canary.conventions import (
    DEFAULT_HEADER,
    ERROR,
    GROUPS,
    MODEL_NAME,
    PROTOCOLS,
    UNKNOWN,
    Cell,
    order_cells,
)
from canary.errors import UsageError
from canary.rundir import REPORTS_DIR, Run, cell_counts, read_run, resolve_run_dir
from canary.stats import (
    STATUS_CODES,
    ConfusionMatrix,
    Expectation,
    GroupVerdict,
    Plan,
    SplitPolicy,
    confusion_matrix,
    overall,
    parse_expected,
    parse_group_spec,
    plan_requests,
    verify_group,
)
from mesh.routing import expectations_from_manifest

from .accuracy import AccuracyReport, accuracy_report
from .crosscheck import (
    DEFAULT_SERVICE,
    PROMETHEUS_SLACK,
    CrossCheck,
    crosscheck,
    mesh_counts_from_run,
    prometheus_counts,
    unavailable,
)
from .latency import DEFAULT_CONFIDENCE, DEFAULT_MARGIN, LatencyReport, latency_report, parse_margin
from .resolve import (
    Resolved,
    choose_stable,
    from_manifest,
    from_run,
    from_spec,
    run_expected,
    subset_order,
)

__all__ = [
    "CellResult",
    "PlanRow",
    "Verification",
    "VerifyRequest",
    "plan_run",
    "verify_run",
]


@dataclass(frozen=True)
class VerifyRequest:
    """What to verify and how (the options of ``verify-split`` / ``canary report``)."""

    run_dir: Path | None = None  # None: the newest run under ``reports``
    reports: Path = REPORTS_DIR
    expected: str | None = None
    manifests: tuple[Path, ...] = ()
    stable: str | None = None
    policy: SplitPolicy = field(default_factory=SplitPolicy)
    bonferroni: bool = False
    prometheus: str | None = None
    prometheus_service: str = DEFAULT_SERVICE
    prometheus_timeout: float = 10.0
    crosscheck_slack: float | None = None  # None: 0 for Envoy's counters, 5% for Prometheus
    latency_confidence: float = DEFAULT_CONFIDENCE
    latency_margin: str = DEFAULT_MARGIN
    require_expectation: bool = True  # verify-split: an expected split is needed


@dataclass(frozen=True)
class CellResult:
    """One protocol x group: its counts, expectation and verdict (None: not judged)."""

    protocol: str
    group: str
    counts: Mapping[str, int]
    expected: Expectation | None
    route: str | None
    verdict: GroupVerdict | None

    @property
    def name(self) -> str:
        return f"{self.protocol}/{self.group}"

    @property
    def status(self) -> str:
        return self.verdict.status if self.verdict is not None else "not judged"


@dataclass(frozen=True)
class Verification:
    """Everything ``verify-split`` concludes about one run."""

    run: Run
    source: str | None  # where the expectation came from
    stable: str | None
    subsets: tuple[str, ...]
    policy: SplitPolicy
    cells: tuple[CellResult, ...]
    confusion: Mapping[str, ConfusionMatrix]  # per protocol
    crosscheck: CrossCheck
    latency: LatencyReport
    accuracy: AccuracyReport
    status: str  # verified / refuted / inconclusive / "not judged" (no expectation at all)
    reason: str
    notes: tuple[str, ...]
    generated_at: str

    @property
    def exit_code(self) -> int:
        """0 verified, 1 refuted, 2 inconclusive (and 2 for "not judged", which only
        ``canary report`` produces and does not exit with)."""
        return STATUS_CODES.get(self.status, 2)

    @property
    def judged(self) -> bool:
        return self.status in STATUS_CODES


def _resolve(request: VerifyRequest, run: Run) -> Resolved | None:
    if request.expected and request.manifests:
        raise UsageError(
            "give either --expected or --from-manifest, not both (the manifest already says "
            "what each group should see)"
        )
    if request.manifests:
        found = expectations_from_manifest(
            request.manifests,
            {cell: run.paths.get(cell, ()) for cell in run.cells},
            header=run.header,
            model_name=run.model_name,
            known_subsets=run.subsets,
        )
        return from_manifest(found, run.subsets, stable=request.stable)
    recorded = run_expected(run.document)
    if request.expected:
        return from_spec(request.expected, run.cells, run.subsets, stable=request.stable, recorded=recorded)
    if recorded:
        return from_run(recorded, run.cells, run.subsets, stable=request.stable)
    if request.require_expectation:
        raise UsageError(
            "no expected split: give --expected (e.g. 70/30, stable subset first) or "
            "--from-manifest manifests/routing/virtualservice-weight-70.yaml"
        )
    return None


def _crosscheck(request: VerifyRequest, run: Run, subsets: Sequence[str]) -> CrossCheck:
    fingerprint: dict[str, int] = {}
    unattributed = 0
    for counts in cell_counts(run.records).values():
        for name, n in counts.items():
            if name in (UNKNOWN, ERROR):
                unattributed += n
            else:
                fingerprint[name] = fingerprint.get(name, 0) + n
    if request.prometheus:
        window = run.duration_s
        end = run.ended_at or (
            run.started_at + dt.timedelta(seconds=window) if run.started_at and window else None
        )
        if window is None or end is None:
            raise UsageError(
                f"{run.root}/run.json records no start and end time, so the run's window for "
                "--prometheus is unknown"
            )
        counts_mesh, query = prometheus_counts(
            request.prometheus, window_s=window, at=end, service=request.prometheus_service,
            timeout=request.prometheus_timeout,
        )
        slack = PROMETHEUS_SLACK if request.crosscheck_slack is None else request.crosscheck_slack
        return crosscheck(
            fingerprint, counts_mesh, unattributed=unattributed, source="prometheus",
            slack=slack, subsets=subsets, query=query,
        )
    envoy, why = mesh_counts_from_run(run.document)
    if envoy is None:
        return unavailable(why)
    return crosscheck(
        fingerprint, {k: float(v) for k, v in envoy.items()}, unattributed=unattributed,
        source="envoy", slack=request.crosscheck_slack or 0.0, subsets=subsets,
    )


def _overall(cells: Sequence[CellResult], check: CrossCheck, judged_required: bool) -> tuple[str, str]:
    judged = [c for c in cells if c.verdict is not None]
    if not judged:
        if not judged_required:
            return "not judged", "no expected split was given, so no verdict (counts only)"
        return "inconclusive", "no protocol and group could be judged (no requests)"
    status = overall([c.verdict for c in judged if c.verdict is not None])
    parts = [f"{c.name} {c.status}: {c.verdict.reason}" for c in judged if c.verdict and c.status != "verified"]
    if check.status == "mismatch":
        status = "refuted"
        parts.append(f"cross-check: {check.reason}")
    if status == "verified":
        tail = "; the mesh's counters agree" if check.status == "agree" else ""
        return status, f"all {len(judged)} protocol/group(s) verified{tail}"
    return status, "; ".join(parts)


def verify_run(request: VerifyRequest) -> Verification:
    """Judge one run directory (see the module docstring). Reads files; writes nothing."""
    run = read_run(resolve_run_dir(request.run_dir, request.reports))
    resolved = _resolve(request, run)
    notes = list(run.notes)
    stable: str | None
    if resolved is not None:
        notes.extend(resolved.notes)
        stable, subsets = resolved.stable, resolved.subsets
    else:  # no expectation (canary report): name a stable subset only where the rules can
        try:
            stable = choose_stable(run.subsets, flag=request.stable) if run.subsets else None
        except UsageError:
            stable = None
        subsets = subset_order(run.subsets, stable)
    all_counts = cell_counts(run.records)
    cells = list(order_cells(set(run.cells) | set(resolved.cells if resolved else ())))
    judged = [c for c in cells if resolved is not None and c in resolved.cells]
    policy = request.policy.for_groups(len(judged)) if request.bonferroni and judged else request.policy
    results: list[CellResult] = []
    for cell in cells:
        counts = all_counts.get(cell, {})
        expected = resolved.cells.get(cell) if resolved else None
        verdict = (
            verify_group(counts, expected, policy, group=f"{cell[0]}/{cell[1]}")
            if expected is not None
            else None
        )
        route = resolved.routes.get(cell) if resolved else None
        results.append(CellResult(cell[0], cell[1], counts, expected, route, verdict))
    answered = [s for cell in all_counts.values() for s in cell if s not in (UNKNOWN, ERROR)]
    columns = list(dict.fromkeys([*subsets, *answered]))
    confusion: dict[str, ConfusionMatrix] = {}
    for protocol in dict.fromkeys(c[0] for c in cells):
        table = {
            (cell[1], name): n
            for cell, counts in all_counts.items() if cell[0] == protocol
            for name, n in counts.items()
        }  # fmt: skip
        groups = [c[1] for c in cells if c[0] == protocol]
        confusion[protocol] = confusion_matrix(table, groups=groups, subsets=columns)
    check = _crosscheck(request, run, columns)
    protocols = [p for p in PROTOCOLS if any(c[0] == p for c in cells)]
    latency = latency_report(
        run.records, subsets=columns, stable=stable, protocols=protocols or PROTOCOLS,
        confidence=request.latency_confidence, margin=parse_margin(request.latency_margin),
    )
    accuracy = accuracy_report(run.records, subsets=columns, stable=stable, weights=run.weights)
    status, reason = _overall(results, check, request.require_expectation)
    if request.bonferroni and judged:
        notes.append(
            f"Bonferroni over {len(judged)} protocol/group(s): each judged at alpha={policy.alpha:.3g}, "
            f"confidence {policy.confidence:.4g}"
        )
    return Verification(
        run=run,
        source=resolved.source if resolved else None,
        stable=stable,
        subsets=tuple(columns),
        policy=policy,
        cells=tuple(results),
        confusion=confusion,
        crosscheck=check,
        latency=latency,
        accuracy=accuracy,
        status=status,
        reason=reason,
        notes=tuple(notes),
        generated_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


# --- planning ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanRow:
    """The plan for one expectation, and the cells it applies to."""

    applies_to: str
    plan: Plan


def _plan_expectation(text: str, stable: str | None) -> Expectation:
    if "=" in text:
        return parse_expected(text)
    count = len([t for t in text.split("/") if t.strip()])
    first = stable or "resnet50"
    others = ["resnet101"] if count == 2 and first != "resnet101" else []
    others = others or [f"canary{i}" for i in range(1, count)]
    return parse_expected(text, [first, *others][:count])


def plan_run(
    *,
    expected: str | None,
    manifests: Sequence[Path] = (),
    policy: SplitPolicy,
    stable: str | None = None,
    header: tuple[str, str] = DEFAULT_HEADER,
    detect: float | None = None,
) -> list[PlanRow]:
    """Requests needed per group for ``expected`` (or each cell of a VirtualService)."""
    if bool(expected) == bool(manifests):
        raise UsageError("--plan needs either --expected (e.g. 70/30) or --from-manifest FILE")
    by_expectation: dict[Expectation, list[str]] = {}
    if manifests:
        cells: list[Cell] = [(p, g) for p in PROTOCOLS for g in GROUPS]
        found = expectations_from_manifest(manifests, cells, header=header, model_name=MODEL_NAME)
        for cell, item in found.cells.items():
            by_expectation.setdefault(item.expectation, []).append(f"{cell[0]}/{cell[1]}")
    else:
        for group, text in parse_group_spec(str(expected)).items():
            by_expectation.setdefault(_plan_expectation(text, stable), []).append(group or "every group")
    return [
        PlanRow(", ".join(names), plan_requests(expectation, policy, detect=detect))
        for expectation, names in by_expectation.items()
    ]
