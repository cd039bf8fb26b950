r"""``--until-verified``: stop the load test as soon as the split is decided in every cell.

The master keeps anytime-valid :class:`canary.stats.SequentialSplitTest`\ s
and looks after every batch of records; a cell's first decision (verified or
refuted) is final, so the test's error guarantees hold however often it
looks. Cells are pooled as ``verify-split`` pools them (same expectation and
route): one test per pool on its summed counts, plus one per cell that can
still refute it; the run's alpha is divided over them (Bonferroni), so the
false-refutation guarantee holds for the run as a whole. When every cell
that has users has decided, the runner is stopped; a cell still undecided
when ``--requests`` or ``-t`` ends the test is inconclusive. The outcome goes into run.json (``"sequential"``)
and sets the exit code: 0 all verified, 1 any refuted, 2 any inconclusive —
as ``verify-split``.

:func:`expectations_for` works out each cell's expectation from the options
(``--expected`` or ``--from-manifest``); :class:`SequentialMonitor` is pure
(records in, decisions out).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from canary.conventions import (
    ERROR,
    GRPC_PREDICT_METHOD,
    UNKNOWN,
    Cell,
    ExitCode,
    rest_predict_path,
)
from canary.errors import UsageError
from canary.rundir.document import CanaryOptions, SequentialCellRecord, SequentialRecord
from canary.stats import (
    Expectation,
    SequentialDecision,
    SequentialSplitTest,
    SplitPolicy,
    expectations_by_group,
)
from canary.stats.pooling import allocate_alpha
from mesh.routing import expectations_from_manifest

__all__ = ["SequentialMonitor", "cells_of", "expectations_for", "monitor_for", "paths_of", "summary_rows"]

_EXIT = {"verified": ExitCode.OK, "refuted": ExitCode.FAILED, "inconclusive": ExitCode.INCONCLUSIVE}


def cells_of(options: CanaryOptions) -> list[Cell]:
    """The (protocol, group) cells the options can give users to."""
    protocols = options.protocols
    share = options.canary_share
    groups = [g for g, on in (("default", share < 1), ("canary", share > 0)) if on]
    return [(p, g) for p in protocols for g in groups]


def paths_of(protocol: str, options: CanaryOptions) -> tuple[str, ...]:
    """The request paths a protocol's users send (see :mod:`loadtest.items`)."""
    if protocol == "grpc":
        return (GRPC_PREDICT_METHOD,)
    return (rest_predict_path(options.model_name, options.model_version), rest_predict_path(options.model_name))


def expectations_for(options: CanaryOptions, subsets_in_order: Sequence[str] | None) -> dict[Cell, Expectation]:
    """Each cell's expected split, from ``--expected`` or ``--from-manifest`` (exactly one)."""
    return expectations_and_routes(options, subsets_in_order)[0]


def expectations_and_routes(
    options: CanaryOptions, subsets_in_order: Sequence[str] | None
) -> tuple[dict[Cell, Expectation], dict[Cell, str]]:
    """Each cell's expected split and, with ``--from-manifest``, the route it comes from."""
    cells = cells_of(options)
    if bool(options.expected) == bool(options.from_manifest):
        raise UsageError("--until-verified needs the expected split: --expected 70/30 or "
                         "--from-manifest manifests/routing/virtualservice-weight-70.yaml (one of them)")
    if options.from_manifest:
        derived = expectations_from_manifest(
            [options.from_manifest], {c: paths_of(c[0], options) for c in cells},
            header=options.header, model_name=options.model_name, known_subsets=subsets_in_order or (),
        )
        return ({cell: derived.expectation(cell) for cell in cells},
                {cell: derived.cells[cell].route for cell in cells})
    by_group = expectations_by_group(options.expected or "", subsets_in_order)
    missing = sorted({g for _, g in cells if g not in by_group})
    if missing:
        raise UsageError(f"--until-verified: --expected gives no split for the {' and '.join(missing)} group; "
                         "give one, e.g. 'default: 100/0; canary: 0/100', or set --canary-share")
    return {cell: by_group[cell[1]] for cell in cells}, {}


class SequentialMonitor:
    """Anytime-valid split tests fed with the run's records, pooled as ``verify-split`` pools.

    Cells with the same expectation and route (``routes``; with ``--expected`` all cells of one
    expectation) form a pool with one test on the pool's summed counts, which verifies or
    refutes every cell of the pool; each cell keeps a test of its own, which can still refute
    it (or verify it alone). The run's alpha is split as for the fixed-sample verdict
    (:func:`canary.stats.pooling.allocate_alpha`): α/(2P) per pool and α/(2C) per cell, α/C
    when nothing is pooled. A cell's first decision is final.
    """

    def __init__(self, expectations: Mapping[Cell, Expectation], policy: SplitPolicy | None = None,
                 source: str = "", routes: Mapping[Cell, str] | None = None) -> None:
        if not expectations:
            raise UsageError("--until-verified: no protocol and group to verify")
        self.policy = policy or SplitPolicy()
        self.source = source
        by_key: dict[tuple[Expectation, str | None], list[Cell]] = {}
        for cell, expectation in expectations.items():
            by_key.setdefault((expectation, (routes or {}).get(cell)), []).append(cell)
        self.pools: list[tuple[Cell, ...]] = [tuple(cells) for cells in by_key.values() if len(cells) > 1]
        weighted_cells = sum(1 for e in expectations.values() if not e.deterministic)
        weighted_pools = sum(1 for pool in self.pools if not expectations[pool[0]].deterministic)
        self.alpha_per_cell, alpha_pool = allocate_alpha(self.policy, weighted_cells, weighted_pools)
        self.alpha_per_pool = alpha_pool
        self.tests = {cell: SequentialSplitTest(e, self.policy, alpha=self.alpha_per_cell)
                      for cell, e in expectations.items()}
        self.pool_tests = [SequentialSplitTest(expectations[pool[0]], self.policy, alpha=alpha_pool)
                           for pool in self.pools]
        self.pool_of: dict[Cell, int] = {cell: i for i, pool in enumerate(self.pools) for cell in pool}
        self.counts: dict[Cell, Counter[str]] = {cell: Counter() for cell in expectations}
        self.final: dict[Cell, SequentialDecision] = {}  # each cell's first decision
        self.pooled: set[Cell] = set()  # cells whose decision is their pool's
        self.at_request: dict[Cell, int] = {}  # the run's request count when the cell decided
        self.requests = 0
        self.ended = ""  # why undecided cells stopped: "" while running

    def add(self, rows: Iterable[Mapping[str, Any]]) -> bool:
        """Count a batch of records and look at every cell and pool it changed; True when all are decided."""
        changed: set[Cell] = set()
        for row in rows:
            self.requests += 1
            cell = (str(row.get("protocol") or ""), str(row.get("group") or "default"))
            if cell not in self.counts or cell in self.final:
                continue
            subset = str(row.get("subset") or UNKNOWN) if row.get("ok", True) else ERROR
            self.counts[cell][subset] += 1
            changed.add(cell)
        for cell in changed:
            self._settle(cell, self.tests[cell].decide(self.counts[cell]), pooled=False)
        for index in sorted({self.pool_of[c] for c in changed if c in self.pool_of}):
            open_cells = [c for c in self.pools[index] if c not in self.final]
            if not open_cells:
                continue
            total: Counter[str] = Counter()
            for cell in self.pools[index]:
                total.update(self.counts[cell])
            decision = self.pool_tests[index].decide(total)
            for cell in open_cells:
                self._settle(cell, decision, pooled=True)
        return self.decided(self.tests)

    def _settle(self, cell: Cell, decision: SequentialDecision, *, pooled: bool) -> None:
        if cell in self.final or decision.status not in ("verified", "refuted"):
            return
        self.final[cell] = decision
        self.at_request[cell] = self.requests
        if pooled:
            self.pooled.add(cell)

    def decided(self, cells: Iterable[Cell]) -> bool:
        """Whether every one of ``cells`` (those with users) has its final decision."""
        wanted = [c for c in cells if c in self.tests]
        return bool(wanted) and all(c in self.final for c in wanted)

    def stop(self, why: str, active: Iterable[Cell] = ()) -> None:
        """The test ended: cells still undecided are inconclusive. Cells neither in ``active``
        (those that had users) nor with any response are dropped (e.g. too few users for a canary)."""
        if self.ended:
            return
        self.ended = why
        keep = set(active)
        for cell in [c for c in self.tests if c not in keep and not self.counts[c]]:
            del self.tests[cell], self.counts[cell]

    def status(self, cell: Cell) -> str:
        if cell in self.final:
            return self.final[cell].status
        return "inconclusive" if self.ended else "continue"

    @property
    def overall(self) -> str:
        statuses = {self.status(c) for c in self.tests}
        if not statuses:
            return "inconclusive" if self.ended else "continue"
        if "refuted" in statuses:
            return "refuted"
        if statuses <= {"verified"}:
            return "verified"
        return "inconclusive" if self.ended else "continue"

    @property
    def exit_code(self) -> int | None:
        return _EXIT.get(self.overall)

    def _pool_label(self, cell: Cell) -> str:
        if cell not in self.pool_of:
            return ""
        return ", ".join(f"{p}/{g}" for p, g in self.pools[self.pool_of[cell]] if (p, g) in self.tests)

    def record(self) -> SequentialRecord:
        """The ``"sequential"`` section of run.json."""
        cells = []
        for cell, test in self.tests.items():
            decision = self.final.get(cell) or test.decision
            reason = decision.reason if decision else "no response in this cell"
            if cell in self.pooled:
                reason = f"pooled over {self._pool_label(cell)}: {reason}"
            cells.append(SequentialCellRecord(
                protocol=cell[0],
                group=cell[1],
                expected=test.expected.label(),
                status=self.status(cell),
                n=decision.n if decision else 0,
                n_total=decision.n_total if decision else 0,
                looks=decision.looks if decision else 0,
                counts=dict(sorted(decision.counts.items())) if decision else {},
                decided_at_request=self.at_request.get(cell),
                reason=reason,
                pool=self._pool_label(cell),
            ))
        decided = [self.at_request[c] for c in self.tests if c in self.at_request]
        policy = {"alpha": self.policy.alpha, "alpha_per_cell": self.alpha_per_cell,
                  "tolerance": self.policy.tolerance, "confidence": self.policy.confidence}
        if self.alpha_per_pool is not None:
            policy["alpha_per_pool"] = self.alpha_per_pool
        return SequentialRecord(
            test="anytime-valid sequential, pooled as verify-split pools (one-sided beta-binomial mixture "
                 "claims; Lindon & Malek 2022 Bayes factor reported as a sample-ratio finding)",
            expected_from=self.source,
            policy=policy,
            status=self.overall,
            exit_code=self.exit_code,
            ended=self.ended or None,
            requests_to_decide=max(decided) if len(decided) == len(self.tests) else None,
            cells=cells,
        )


def monitor_for(options: CanaryOptions, subsets_in_order: Sequence[str] | None) -> SequentialMonitor | None:
    """The monitor ``--until-verified`` asks for (None without it); usage errors raise."""
    if not options.until_verified:
        return None
    source = f"--from-manifest {options.from_manifest}" if options.from_manifest else f"--expected {options.expected}"
    policy = SplitPolicy(tolerance=options.tolerance)
    expectations, routes = expectations_and_routes(options, subsets_in_order)
    return SequentialMonitor(expectations, policy, source=source, routes=routes)


def summary_rows(section: SequentialRecord) -> list[tuple[str, ...]]:
    """run.json's ``"sequential"`` section as table rows (protocol, group, expected, status, n, at request)."""
    return [(c.protocol, c.group, c.expected, c.status, str(c.n),
             "" if c.decided_at_request is None else str(c.decided_at_request))
            for c in section.cells]
