"""A run's verdict over all its tables: cells that share an expectation are pooled.

A run has up to four cells (REST/gRPC x default/canary header group), each
with an expected split. Judged alone, a small cell can never be verified (a
200-request cell's interval is wider than ±3 points), so :func:`judge_run`
pools the cells that share one expectation and one route:

* **pools**: cells with the same :class:`~canary.stats.expectations.Expectation`
  and the same route are one pool (the route is the VirtualService route the
  cell's requests take, when the expectation came from a VirtualService; with
  ``--expected`` the user states one split for the cells and the route is
  None). Cells that resolve to different routes are never pooled.
* **homogeneity gate**: a pool of two or more cells with a weighted split is
  judged on its pooled counts only when Pearson's χ² test of homogeneity
  (``scipy.stats.chi2_contingency``, cells x subsets) finds no difference at
  ``alpha``; otherwise each cell is judged alone ("one by one").
* **family-wise error**: the run's false-refutation budget ``policy.alpha`` is
  divided by Bonferroni over every test that can refute a weighted split:
  with P pools of two or more weighted cells and C weighted cells, each pooled
  table gets ``alpha / (2P)`` and each cell ``alpha / (2C)`` (``alpha / C``
  when nothing is pooled). Every cell can still refute on its own. So when
  every true share of every cell lies inside its band, the run is refuted
  with probability at most ``alpha``. (A pooled table's responses come from
  cells whose shares may differ a little: its count is then Poisson-binomial,
  which is more concentrated than the binomial with the same mean (Hoeffding,
  1956), so the exact interval keeps its coverage.)
* **verification**: a pool is verified when its pooled table is verified (every
  share's interval inside its band), the cells are homogeneous and no cell is
  refuted; a one-by-one pool when every cell is verified. The claim is about
  the pool's share: when it lies outside its band, verification happens with
  probability at most ``(1 − confidence)/2``. A single cell off its band
  inside a pool is caught by the homogeneity test or by its own refutation
  (tested: one cell at 60/40 among four at 90/10 is refuted in ≥ 99% of runs).
* **gates** (unknown and error rates) apply to each pool's pooled counts.

Deterministic expectations (one subset at 100%) are pooled without a
homogeneity test: any wrong-subset response in any cell refutes, and the
pool's zero-count bound covers the pool's wrong-subset share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import stats

from canary.jsonable import jsonable

from .expectations import ERROR, UNKNOWN, Expectation
from .policy import SplitPolicy
from .split import overall, verify_group
from .verdicts import GroupVerdict, Status

__all__ = [
    "CellTable",
    "Homogeneity",
    "PoolVerdict",
    "RunJudgement",
    "allocate_alpha",
    "homogeneity",
    "judge_run",
    "pool_cells",
]

Judged = Literal["pooled", "alone", "one by one"]


@dataclass(frozen=True)
class CellTable:
    """One cell to judge: its name (``rest/default``), counts, expectation and route."""

    name: str
    counts: Mapping[str, int]
    expected: Expectation
    route: str | None = None  # None: the expectation was given, not read off a route
    scope: str | None = None  # cells of different scopes (a run's routing phases) are never pooled


@dataclass(frozen=True)
class Homogeneity:
    """Pearson's χ² test that the pool's cells share one split."""

    statistic: float
    dof: int
    p_value: float
    alpha: float
    homogeneous: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(jsonable(self))


@dataclass(frozen=True)
class PoolVerdict:
    """The verdict on one pool of cells, and each cell's own verdict."""

    name: str  # "rest/default + rest/canary"
    cells: tuple[str, ...]
    route: str | None
    expected: Expectation
    status: Status
    reason: str
    judged: Judged  # pooled, alone (one cell), one by one (cells differ)
    pooled: GroupVerdict | None  # the pooled table; None for a single cell
    homogeneity: Homogeneity | None
    cell_verdicts: tuple[GroupVerdict, ...]

    @property
    def verdict(self) -> GroupVerdict:
        """The table the pool's status rests on: the pooled one, or the only cell's."""
        return self.pooled if self.pooled is not None else self.cell_verdicts[0]

    def _speaks_for_itself(self, own: GroupVerdict) -> bool:
        """Whether a cell's own verdict is what to show for it: when it refutes alone, when the
        cells were judged one by one, or when another cell refuted alone (the pool's status is
        then that cell's, not this one's)."""
        return (
            own.status == "refuted"
            or self.judged != "pooled"
            or any(v.status == "refuted" for v in self.cell_verdicts)
        )

    def cell_status(self, cell: str) -> str:
        """What to show for one cell: its own status where it speaks for itself, else the pool's."""
        own = next(v for v in self.cell_verdicts if v.group == cell)
        return own.status if self._speaks_for_itself(own) else self.status

    def cell_reason(self, cell: str) -> str:
        """The reason to show for one cell (its own, or the pool's; as :meth:`cell_status`)."""
        own = next(v for v in self.cell_verdicts if v.group == cell)
        return own.reason if self._speaks_for_itself(own) else self.reason

    def to_dict(self) -> dict[str, Any]:
        data = dict(jsonable(self))
        data["expected"] = self.expected.to_dict()
        return data


@dataclass(frozen=True)
class RunJudgement:
    """Every pool's verdict and the run's status."""

    pools: tuple[PoolVerdict, ...]
    status: Status
    alpha_cell: float
    alpha_pool: float | None  # None when nothing is pooled
    policy: SplitPolicy = field(repr=False)

    def pool_of(self, cell: str) -> PoolVerdict:
        return next(p for p in self.pools if cell in p.cells)

    def failing_lines(self) -> list[str]:
        """One line per cell that is not verified (refuted cells first), naming its pool."""
        lines: list[tuple[int, str]] = []
        for pool in self.pools:
            for verdict in pool.cell_verdicts:
                status = pool.cell_status(verdict.group)
                if status == "verified":
                    continue
                lines.append((0 if status == "refuted" else 1, f"{verdict.group} {status}: {pool.cell_reason(verdict.group)}"))
        return [text for _, text in sorted(lines, key=lambda item: item[0])]


def pool_cells(cells: Sequence[CellTable]) -> list[list[CellTable]]:
    """Cells grouped by (expectation, route, scope), in the order first seen."""
    pools: dict[tuple[Expectation, str | None, str | None], list[CellTable]] = {}
    for cell in cells:
        pools.setdefault((cell.expected, cell.route, cell.scope), []).append(cell)
    return list(pools.values())


def allocate_alpha(policy: SplitPolicy, weighted_cells: int, weighted_pools: int) -> tuple[float, float | None]:
    """(alpha per cell, alpha per pooled table): Bonferroni over every test that can refute."""
    cells = max(1, weighted_cells)
    if weighted_pools == 0:
        return policy.alpha / cells, None
    return policy.alpha / (2 * cells), policy.alpha / (2 * weighted_pools)


def homogeneity(tables: Sequence[Mapping[str, int]], subsets: Sequence[str], alpha: float) -> Homogeneity:
    """χ² test of homogeneity over the cells' counts of ``subsets`` (cells or subsets without a
    single response are left out; with fewer than two of either there is nothing to compare)."""
    table = np.array([[int(t.get(s, 0)) for s in subsets] for t in tables], dtype=np.int64)
    table = table[table.sum(axis=1) > 0]
    table = table[:, table.sum(axis=0) > 0] if table.size else table
    if table.shape[0] < 2 or table.shape[1] < 2:
        return Homogeneity(statistic=0.0, dof=0, p_value=1.0, alpha=alpha, homogeneous=True)
    result = stats.chi2_contingency(table, correction=False)
    p = float(result.pvalue)
    return Homogeneity(
        statistic=float(result.statistic), dof=int(result.dof), p_value=p, alpha=alpha, homogeneous=p >= alpha
    )


def _pooled_counts(cells: Sequence[CellTable]) -> dict[str, int]:
    total: dict[str, int] = {}
    for cell in cells:
        for name, n in cell.counts.items():
            total[name] = total.get(name, 0) + int(n)
    return total


def _strip_unattributed(counts: Mapping[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if k not in (UNKNOWN, ERROR)}


def _judge_pool(
    cells: Sequence[CellTable], policy: SplitPolicy, alpha_cell: float, alpha_pool: float | None
) -> PoolVerdict:
    expected = cells[0].expected
    names = tuple(c.name for c in cells)
    label = " + ".join(names)
    if len(cells) == 1:
        only = verify_group(cells[0].counts, expected, policy, group=names[0], alpha=alpha_cell)
        return PoolVerdict(label, names, cells[0].route, expected, only.status, only.reason, "alone", None, None, (only,))
    own = tuple(
        verify_group(c.counts, expected, policy, group=c.name, alpha=alpha_cell, gates=False, explain=False)
        for c in cells
    )
    pooled = verify_group(
        _pooled_counts(cells), expected, policy, group=label, alpha=alpha_pool or policy.alpha
    )
    refuted_alone = [v for v in own if v.status == "refuted"]
    over = ", ".join(names)
    if expected.deterministic:
        test = None
        homogeneous = True
    else:
        test = homogeneity([_strip_unattributed(c.counts) for c in cells], expected.positive, policy.alpha)
        homogeneous = test.homogeneous
    if refuted_alone:
        status: Status = "refuted"
        reason = "; ".join(f"{v.group} refuted on its own: {v.reason}" for v in refuted_alone)
        if pooled.status == "refuted":
            reason = f"pooled over {over}: {pooled.reason}; {reason}"
    elif pooled.status == "refuted":
        status, reason = "refuted", f"refuted, pooled over {over}: {pooled.reason}"
    elif homogeneous:
        status = pooled.status
        same = f" (homogeneity χ² p={test.p_value:.3g})" if test is not None else ""
        reason = f"{status}, pooled over {over}{same}: {pooled.reason}"
    else:
        assert test is not None
        status = overall(own)  # type: ignore[assignment]
        each = "; ".join(f"{v.group} {v.status}" for v in own)
        reason = (
            f"the cells differ (homogeneity χ² p={test.p_value:.3g} < {test.alpha:g}), so each is "
            f"judged alone: {each}"
        )
    judged: Judged = "pooled" if homogeneous else "one by one"
    if judged == "one by one" or refuted_alone:  # each cell speaks for itself: say what would decide it
        own = tuple(
            verify_group(c.counts, expected, policy, group=c.name, alpha=alpha_cell, gates=False)
            if v.status == "inconclusive" else v
            for c, v in zip(cells, own, strict=True)
        )
    return PoolVerdict(label, names, cells[0].route, expected, status, reason, judged, pooled, test, own)


def judge_run(cells: Sequence[CellTable], policy: SplitPolicy | None = None) -> RunJudgement:
    """Judge every cell, pooled where they share an expectation and a route (see the module
    docstring). The run is refuted if any pool is, else inconclusive if any is, else verified."""
    policy = policy or SplitPolicy()
    pools = pool_cells(cells)
    weighted = [p for p in pools if not p[0].expected.deterministic]
    alpha_cell, alpha_pool = allocate_alpha(
        policy, sum(len(p) for p in weighted), sum(1 for p in weighted if len(p) > 1)
    )
    verdicts = tuple(_judge_pool(p, policy, alpha_cell, alpha_pool) for p in pools)
    status: Status = overall(verdicts)  # type: ignore[assignment]
    return RunJudgement(verdicts, status, alpha_cell, alpha_pool, policy)
