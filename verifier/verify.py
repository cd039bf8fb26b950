"""``verify-split`` and ``canary report`` as library functions: a run directory in, verdicts out.

:func:`verify_run` reads one run directory (:mod:`verifier.run`), works out
the expectation per protocol x group (:mod:`verifier.resolve`), judges each
with :func:`canary.stats.judge_run` (cells that share an expectation and a
route are pooled behind a homogeneity test; the false-refutation budget is
divided over the run's tests), cross-checks the fingerprint counts
against the mesh's counters (:mod:`verifier.crosscheck`), and adds the
latency (:mod:`verifier.latency`) and accuracy (:mod:`verifier.accuracy`)
figures. :func:`write_reports` writes ``summary.json`` and ``report.html``
into the run directory (and ``--json`` / ``--junit`` files where asked).

Overall status: refuted if any pool or cell is refuted or the cross-check
finds a mismatch; else inconclusive if any pool is inconclusive (or none was
judged); else verified. Exit codes: 0 verified, 1 refuted,
2 inconclusive, 3 bad usage or unreadable input (:class:`UsageError`).
Latency and accuracy are reported and never change the exit code. The
protocol x group cells the run asked for (its protocols, the groups its canary
share gives users, any group an ``--expected`` names) that sent no request are
listed in a note (``silent``); whichever group sent requests, the stable subset
is the expectation's first, or the VirtualService's default route.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from canary.conventions import (
    ERROR,
    PROTOCOLS,
    UNKNOWN,
    Cell,
    order_cells,
    utc_now,
)
from canary.errors import UsageError
from canary.jsonable import jsonable
from canary.rundir import REPORTS_DIR, Run, cell_counts, read_run, resolve_run_dir
from canary.stats import (
    STATUS_CODES,
    CellTable,
    ConfusionMatrix,
    Expectation,
    GroupVerdict,
    RunJudgement,
    SplitPolicy,
    confusion_matrix,
    judge_run,
    parse_group_spec,
)
from mesh.prometheus import DEFAULT_SERVICE
from mesh.routing import (
    expectations_from_manifest,
    expectations_from_virtual_service,
    recorded_virtual_service,
)

from .accuracy import AccuracyReport, accuracy_report
from .crosscheck import (
    PROMETHEUS_SLACK,
    CrossCheck,
    crosscheck,
    mesh_counts_from_run,
    prometheus_crosscheck,
    unavailable,
)
from .latency import DEFAULT_CONFIDENCE, DEFAULT_MARGIN, LatencyReport, latency_report, parse_margin
from .phases import Convergence, PhaseWindow, convergence, phase_rows, phase_windows
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
    "PhaseResult",
    "Verification",
    "VerifyRequest",
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
    prometheus: str | None = None
    prometheus_service: str = DEFAULT_SERVICE
    prometheus_timeout: float = 10.0
    crosscheck_slack: float | None = None  # None: 0 for Envoy's counters, 5% for Prometheus
    latency_confidence: float = DEFAULT_CONFIDENCE
    latency_margin: str = DEFAULT_MARGIN
    require_expectation: bool = True  # verify-split: an expected split is needed


@dataclass(frozen=True)
class CellResult:
    """One protocol x group: its counts, expectation, its own verdict (None: not judged), the
    status shown for it (its pool's, unless it refutes alone) and the pool it was judged in."""

    protocol: str
    group: str
    counts: Mapping[str, int]
    expected: Expectation | None
    route: str | None
    verdict: GroupVerdict | None
    status: str = "not judged"
    pool: str | None = None
    reason: str = "no expected split for this group"
    label: str = ""  # "rest/default", or "phase 1: rest/default" when the routing changed
    phase: int = 0

    @property
    def name(self) -> str:
        return self.label or f"{self.protocol}/{self.group}"


@dataclass(frozen=True)
class PhaseResult:
    """One routing phase: its routing, what was judged in it, and how fast it took effect."""

    phase: int
    version: int | None
    started_at: str | None  # the push's start (None: live before the run)
    applied_at: str | None
    source: str | None  # where this phase's expectation came from
    requests: int  # the phase's requests
    settling: int  # started before the change was acknowledged: shown, not judged
    convergence: Convergence | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(jsonable(self))


@dataclass(frozen=True)
class Verification:
    """Everything ``verify-split`` concludes about one run."""

    run: Run
    source: str | None  # where the expectation came from
    stable: str | None
    subsets: tuple[str, ...]
    policy: SplitPolicy
    cells: tuple[CellResult, ...]
    judgement: RunJudgement | None  # the pools and their verdicts; None when nothing was judged
    phases: tuple[PhaseResult, ...]  # one per routing phase (one phase 0 when the routing never changed)
    confusion: Mapping[str, ConfusionMatrix]  # per protocol
    crosscheck: CrossCheck
    latency: LatencyReport
    accuracy: AccuracyReport
    status: str  # verified / refuted / inconclusive / "not judged" (no expectation at all)
    reason: str
    next_run: str | None  # inconclusive: the canary load that would likely decide it
    notes: tuple[str, ...]
    generated_at: str
    silent: tuple[Cell, ...] = ()  # cells the run asked for that sent no request (see the notes)
    newest_under: Path | None = None  # the run was picked as the newest under this folder (absolute)

    @property
    def exit_code(self) -> int:
        """0 verified, 1 refuted, 2 inconclusive (and 2 for "not judged", which only
        ``canary report`` produces and does not exit with)."""
        return STATUS_CODES.get(self.status, 2)

    @property
    def judged(self) -> bool:
        return self.status in STATUS_CODES


def _given(request: VerifyRequest, run: Run) -> Resolved | None:
    """The expectation the user gave (--from-manifest, --expected) or the load test was given."""
    if request.expected and request.manifests:
        raise UsageError(
            "give either --expected or --from-manifest, not both (the manifest already says "
            "what each group should see)"
        )
    if request.manifests:
        found = expectations_from_manifest(
            request.manifests, _cell_paths(run), header=run.header, model_name=run.model_name,
            known_subsets=run.subsets,
        )
        return from_manifest(found, run.subsets, stable=request.stable)
    recorded = run_expected(run.document)
    if request.expected:
        return from_spec(request.expected, run.cells, run.subsets, stable=request.stable, recorded=recorded)
    if recorded:
        return from_run(recorded, run.cells, run.subsets, stable=request.stable)
    return None


def _cell_paths(run: Run) -> dict[Cell, tuple[str, ...]]:
    return {cell: tuple(run.paths.get(cell, ())) for cell in run.cells}


def _recorded(request: VerifyRequest, run: Run, window: PhaseWindow) -> Resolved | None:
    """The expectation of one phase from the routing the run recorded as live in it (None for
    ``canary report`` when that routing names no subset split)."""
    assert window.record is not None
    where = f"{run.root}/run.json (mesh.routing, phase {window.phase})"
    try:
        service = recorded_virtual_service([(o.source, o.document) for o in window.record.objects], where,
                                           cluster=run.document.mesh.backend == "kube")
        found = expectations_from_virtual_service(
            service, _cell_paths(run), header=run.header, model_name=run.model_name, known_subsets=run.subsets,
        )
    except UsageError:
        if request.require_expectation:
            raise
        return None  # canary report: counts only, as the routing gives no split
    resolved = from_manifest(found, run.subsets, stable=request.stable)
    return replace(resolved, source=f"the routing recorded as applied ({found.source}, {found.name})")


def _expectations(request: VerifyRequest, run: Run, windows: Sequence[PhaseWindow]) -> dict[int, Resolved | None]:
    """Each phase's expectation: the one given, for every phase; else each phase's recorded routing."""
    given = _given(request, run)
    if given is not None:
        return {w.phase: given for w in windows}
    if run.cells and any(w.record is not None for w in windows):
        out: dict[int, Resolved | None] = {}
        errors: list[UsageError] = []
        for w in windows:
            try:
                out[w.phase] = _recorded(request, run, w) if w.record is not None else None
            except UsageError as error:  # this phase's routing names no split: not judged
                errors.append(error)
                out[w.phase] = None
        if errors and not any(r is not None for r in out.values()):
            raise errors[0]
        return out
    if request.require_expectation:
        raise UsageError(
            "no expected split: give --expected (e.g. 70/30, stable subset first) or "
            "--from-manifest manifests/routing/virtualservice-weight-70.yaml (the run recorded no routing)"
        )
    return {w.phase: None for w in windows}


def _crosscheck(request: VerifyRequest, run: Run, subsets: Sequence[str]) -> CrossCheck:
    fingerprint: dict[str, int] = {}
    unattributed = 0
    for counts in cell_counts(run.records).values():
        for name, n in counts.items():
            if name in (UNKNOWN, ERROR):
                unattributed += n
            else:
                fingerprint[name] = fingerprint.get(name, 0) + n
    mesh = run.document.mesh
    if request.prometheus or mesh.backend == "kube":
        window = run.duration_s
        end = run.ended_at or (
            run.started_at + dt.timedelta(seconds=window) if run.started_at and window else None
        )
        if window is None or end is None:
            if request.prometheus:
                raise UsageError(
                    f"{run.root}/run.json records no start and end time, so the run's window for "
                    "--prometheus is unknown"
                )
            return unavailable("run.json records no start and end time, so the run's window is unknown")
        slack = PROMETHEUS_SLACK if request.crosscheck_slack is None else request.crosscheck_slack
        return prometheus_crosscheck(
            fingerprint, run.document, request.prometheus, window_s=window, end=end, unattributed=unattributed,
            slack=slack, subsets=subsets, service=request.prometheus_service, timeout=request.prometheus_timeout,
        )
    envoy, why = mesh_counts_from_run(run.document)
    if envoy is None:
        return unavailable(why)
    return crosscheck(
        fingerprint, {k: float(v) for k, v in envoy.items()}, unattributed=unattributed,
        source="envoy", slack=request.crosscheck_slack or 0.0, subsets=subsets,
    )


def _silent_cells(request: VerifyRequest, run: Run) -> tuple[Cell, ...]:
    """The protocol x group cells the run asked for that sent no request: its protocols times the
    groups its canary share gives users (the canary group when above 0, the default group when
    below 1) and any group an ``--expected`` names on its own."""
    options = run.document.options
    groups = set(options.groups)
    for text in (request.expected, options.expected):
        if text:
            groups.update(g for g in parse_group_spec(text) if g is not None)
    sent = set(cell_counts(run.records))
    return order_cells({(p, g) for p in options.protocols for g in groups} - sent)


def _silent_note(silent: Sequence[Cell], run: Run) -> str:
    """One note naming the silent cells, and whether each got no user or sent nothing."""
    options, users = run.document.options, run.document.users
    without = [c for c in silent if not users.get(c[0], {}).get(c[1])]
    idle = [c for c in silent if c not in without]
    why = [f"{_cell_names(without)} got no user (-u too small for --protocol {options.protocol} and "
           f"--canary-share {options.canary_share:g})"] if without else []
    why += [f"{_cell_names(idle)} had users but sent no request"] if idle else []
    return f"no traffic from {_cell_names(silent)}, so nothing was judged for {'it' if len(silent) == 1 else 'them'}: " + (
        "; ".join(why))


def _cell_names(cells: Sequence[Cell]) -> str:
    return ", ".join(f"{protocol}/{group}" for protocol, group in cells)


def _overall(judgement: RunJudgement | None, check: CrossCheck, judged_required: bool) -> tuple[str, str]:
    if judgement is None:
        if not judged_required:
            return "not judged", "no expected split was given, so no verdict (counts only)"
        return "inconclusive", "no protocol and group could be judged (no requests)"
    status: str = judgement.status
    parts = judgement.failing_lines()
    if check.status == "mismatch":
        status = "refuted"
        parts.append(f"cross-check: {check.reason}")
    if status == "verified":
        pools = "; ".join(
            f"{p.name} {p.judged}" if len(p.cells) > 1 else f"{p.name} alone" for p in judgement.pools
        )
        tail = "; the mesh's counters agree" if check.status == "agree" else ""
        return status, f"every cell verified ({pools}){tail}"
    return status, "; ".join(parts)


def _next_run(judgement: RunJudgement | None, run: Run) -> str | None:
    """For an inconclusive run: the ``canary load`` of the size that would likely decide every
    undecided table, scaling each table's likely-deciding n by its share of this run's requests."""
    if judgement is None or judgement.status != "inconclusive" or not len(run.records):
        return None
    total = len(run.records)
    needed = []
    for pool in judgement.pools:
        tables = [pool.pooled] if pool.judged == "pooled" and pool.pooled is not None else list(pool.cell_verdicts)
        for table in tables:
            if table.status == "inconclusive" and table.decide_n and table.n_total:
                needed.append(math.ceil(table.decide_n * total / table.n_total))
    if not needed:
        return None
    options = run.document.options
    return f"canary load --requests {max(needed)} --protocol {options.protocol} --canary-share {options.canary_share:g}"


def _phase_tables(
    run: Run, windows: Sequence[PhaseWindow], expectations: Mapping[int, Resolved | None]
) -> tuple[list[CellTable], list[tuple[str, int, Cell, Mapping[str, int], Resolved | None]], dict[int, int]]:
    """The tables to judge, every cell of every phase (label, phase, cell, counts, expectation),
    and each phase's settling requests."""
    multi = len(windows) > 1
    tables: list[CellTable] = []
    rows: list[tuple[str, int, Cell, Mapping[str, int], Resolved | None]] = []
    settling: dict[int, int] = {}
    for window in windows:
        judged, settling[window.phase] = phase_rows(run.records, window)
        counts = cell_counts(judged)
        resolved = expectations.get(window.phase)
        if not window.judgeable:
            resolved = None
        # one phase: every cell the run had; several: the cells each phase has requests in
        cells = order_cells(set(counts) if multi else set(run.cells) | set(resolved.cells if resolved else ()))
        for cell in cells:
            label = f"phase {window.phase}: {cell[0]}/{cell[1]}" if multi else f"{cell[0]}/{cell[1]}"
            rows.append((label, window.phase, cell, counts.get(cell, {}), resolved))
            if resolved is not None and cell in resolved.cells:
                scope = f"phase {window.phase}" if multi else None
                tables.append(CellTable(label, counts.get(cell, {}), resolved.cells[cell], resolved.routes.get(cell), scope))
    return tables, rows, settling


def _convergences(
    run: Run, windows: Sequence[PhaseWindow], expectations: Mapping[int, Resolved | None]
) -> dict[int, Convergence]:
    out: dict[int, Convergence] = {}
    for before, window in itertools.pairwise(windows):
        old, new = expectations.get(before.phase), expectations.get(window.phase)
        if old is not None and new is not None and window.started is not None:
            out[window.phase] = convergence(run.records, window, old.cells, new.cells)
    return out


def _phase_results(
    run: Run,
    windows: Sequence[PhaseWindow],
    expectations: Mapping[int, Resolved | None],
    settling: Mapping[int, int],
    converged: Mapping[int, Convergence],
) -> tuple[PhaseResult, ...]:
    phases = run.records["phase"] if len(run.records) else None
    out = []
    for w in windows:
        resolved = expectations.get(w.phase)
        note = ""
        if w.record is not None and w.record.failed:
            note = "the push failed: which routing answered is unknown, so nothing was judged"
        elif w.phase and w.acknowledged is None:
            note = "the change was not acknowledged before the run ended, so nothing was judged"
        out.append(PhaseResult(
            phase=w.phase,
            version=w.record.version if w.record else None,
            started_at=w.record.started_at if w.record else None,
            applied_at=w.record.applied_at if w.record else None,
            source=resolved.source if resolved else None,
            requests=int((phases == w.phase).sum()) if phases is not None else 0,
            settling=settling.get(w.phase, 0),
            convergence=converged.get(w.phase),
            note=note,
        ))
    return tuple(out)


def _source(expectations: Mapping[int, Resolved | None]) -> str | None:
    sources = list(dict.fromkeys(r.source for r in expectations.values() if r is not None))
    if not sources:
        return None
    if len(expectations) > 1 and sources[0].startswith("the routing recorded"):
        return f"the routing recorded as applied in each of the {len(expectations)} phases"
    return sources[0]


def verify_run(request: VerifyRequest) -> Verification:
    """Judge one run directory (see the module docstring). Reads files; writes nothing."""
    run = read_run(resolve_run_dir(request.run_dir, request.reports))
    newest_under = Path(request.reports).resolve() if request.run_dir is None else None
    windows = phase_windows(run.document.mesh.routing)
    expectations = _expectations(request, run, windows)
    known = [r for r in expectations.values() if r is not None]
    resolved = known[-1] if known else None  # the latest phase's names the stable subset
    notes = list(run.notes)
    stable: str | None
    if resolved is not None:
        notes.extend(dict.fromkeys(n for r in known for n in r.notes))
        stable = resolved.stable
        subsets = subset_order([s for r in known for s in r.subsets], stable)
    else:  # no expectation (canary report): name a stable subset only where the rules can
        try:
            stable = choose_stable(run.subsets, flag=request.stable) if run.subsets else None
        except UsageError:
            stable = None
        subsets = subset_order(run.subsets, stable)
    tables, cell_rows, settling = _phase_tables(run, windows, expectations)
    judgement = judge_run(tables, request.policy) if tables else None
    results: list[CellResult] = []
    for label, phase, cell, counts, source in cell_rows:
        expected = source.cells.get(cell) if source else None
        route = source.routes.get(cell) if source else None
        if judgement is None or expected is None:
            results.append(CellResult(cell[0], cell[1], counts, expected, route, None, label=label, phase=phase))
            continue
        pool = judgement.pool_of(label)
        own = next(v for v in pool.cell_verdicts if v.group == label)
        results.append(CellResult(
            cell[0], cell[1], counts, expected, route, own, pool.cell_status(label), pool.name,
            pool.cell_reason(label), label=label, phase=phase,
        ))
    all_counts = cell_counts(run.records)
    cells = order_cells(set(all_counts) | set(run.cells))
    phases = _phase_results(run, windows, expectations, settling, _convergences(run, windows, expectations))
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
    status, reason = _overall(judgement, check, request.require_expectation)
    silent = _silent_cells(request, run)
    if silent:
        notes.append(_silent_note(silent, run))
    next_run = _next_run(judgement, run)
    if next_run is not None:
        reason += f"; a run of this size would likely decide it: {next_run}"
    return Verification(
        run=run,
        source=_source(expectations),
        stable=stable,
        subsets=tuple(columns),
        policy=request.policy,
        cells=tuple(results),
        judgement=judgement,
        phases=phases,
        confusion=confusion,
        crosscheck=check,
        latency=latency,
        accuracy=accuracy,
        status=status,
        reason=reason,
        next_run=next_run,
        notes=tuple(notes),
        generated_at=utc_now(),
        silent=silent,
        newest_under=newest_under,
    )
