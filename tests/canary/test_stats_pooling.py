"""Pooling a run's cells: which cells pool, the alpha each test gets, the homogeneity gate,
the pool's verdict and its reason, the gates on pooled counts, deterministic pools, and the
lines a failing run prints (``canary/stats/pooling.py``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import Table

from canary.stats import SplitPolicy, parse_expected, verify_group
from canary.stats.pooling import CellTable, allocate_alpha, homogeneity, judge_run, pool_cells

SUBSETS = ["resnet50", "resnet101"]
E90 = parse_expected("90/10", SUBSETS)
E70 = parse_expected("70/30", SUBSETS)
CANARY = parse_expected("0/100", SUBSETS)  # a header route: every response from resnet101
POLICY = SplitPolicy()  # alpha 0.01
NAMES = ("rest/default", "rest/canary", "grpc/default", "grpc/canary")
SIZES = (800, 200, 800, 200)
EVERY = ", ".join(NAMES)


def cell(name, first, total, expected=E90, route=None, **extra):
    """A cell with ``first`` of ``total`` attributed responses from resnet50."""
    return CellTable(name, {SUBSETS[0]: first, SUBSETS[1]: total - first, **extra}, expected, route)


def design(firsts, expected=E90, extras=None):
    """The four-cell design (800/200/800/200), ``firsts`` responses from resnet50 per cell."""
    extras = extras or [{}] * 4
    return [
        cell(name, x, size, expected, **extra)
        for name, x, size, extra in zip(NAMES, firsts, SIZES, extras, strict=True)
    ]


# -- which cells pool -----------------------------------------------------------


@pytest.mark.parametrize(
    ("cells", "pools"),
    [
        # one --expected split for every cell: one pool, in the cells' order
        ([cell(n, 90, 100) for n in NAMES], [NAMES]),
        # the same split written another way is the same expectation
        (
            [
                cell("rest/default", 90, 100),
                cell("grpc/default", 90, 100, parse_expected("resnet50=90,resnet101=10", SUBSETS)),
            ],
            [("rest/default", "grpc/default")],
        ),
        # a per-group split ("default: 90/10; canary: 0/100"): two pools, first seen first
        (
            [
                cell("rest/default", 90, 100),
                cell("rest/canary", 0, 100, CANARY),
                cell("grpc/default", 90, 100),
                cell("grpc/canary", 0, 100, CANARY),
            ],
            [("rest/default", "grpc/default"), ("rest/canary", "grpc/canary")],
        ),
        # different expectations never pool
        (
            [cell("rest/default", 90, 100), cell("grpc/default", 70, 100, E70)],
            [("rest/default",), ("grpc/default",)],
        ),
        # the same expectation on different routes never pools
        (
            [
                cell("rest/default", 90, 100, route="vs/a"),
                cell("grpc/default", 90, 100, route="vs/b"),
                cell("rest/canary", 90, 100, route="vs/a"),
                cell("grpc/canary", 90, 100),
            ],
            [("rest/default", "rest/canary"), ("grpc/default",), ("grpc/canary",)],
        ),
    ],
)
def test_pool_cells_groups_by_expectation_and_route(cells, pools):
    assert [tuple(c.name for c in p) for p in pool_cells(cells)] == pools
    judged = judge_run(cells, POLICY)
    assert [p.cells for p in judged.pools] == pools
    for pool in judged.pools:
        assert pool.judged == ("alone" if len(pool.cells) == 1 else pool.judged)
        assert (pool.pooled is None) == (len(pool.cells) == 1)
        for name in pool.cells:
            assert judged.pool_of(name) is pool


# -- the false-refutation budget ------------------------------------------------


@pytest.mark.parametrize(
    ("alpha", "cells", "pools", "per_cell", "per_pool"),
    [
        (0.01, 4, 1, 0.01 / 8, 0.01 / 2),  # the four-cell design, one pool
        (0.01, 4, 2, 0.01 / 8, 0.01 / 4),  # default and canary pools
        (0.01, 4, 0, 0.01 / 4, None),  # nothing pooled: Bonferroni over the cells
        (0.01, 2, 1, 0.01 / 4, 0.01 / 2),
        (0.01, 1, 0, 0.01, None),
        (0.01, 0, 0, 0.01, None),  # only deterministic cells
        (0.05, 3, 1, 0.05 / 6, 0.05 / 2),
    ],
)
def test_allocate_alpha(alpha, cells, pools, per_cell, per_pool):
    got_cell, got_pool = allocate_alpha(SplitPolicy(alpha=alpha), cells, pools)
    assert got_cell == pytest.approx(per_cell)
    assert got_pool == (None if per_pool is None else pytest.approx(per_pool))
    # every test that can refute, at its share: the run's total is alpha
    assert cells * got_cell + pools * (got_pool or 0) <= alpha * (1 + 1e-12)


@pytest.mark.parametrize(
    ("cells", "alpha_cell", "alpha_pool"),
    [
        (design((720, 180, 720, 180)), 0.01 / 8, 0.01 / 2),
        # the canary cells are deterministic: two weighted cells in one pool
        (
            [
                cell("rest/default", 720, 800),
                cell("rest/canary", 0, 200, CANARY),
                cell("grpc/default", 720, 800),
                cell("grpc/canary", 0, 200, CANARY),
            ],
            0.01 / 4,
            0.01 / 2,
        ),
        # every cell on its own route: nothing pooled
        ([cell(n, 90, 100, route=n) for n in NAMES], 0.01 / 4, None),
    ],
)
def test_judge_run_gives_each_table_its_alpha(cells, alpha_cell, alpha_pool):
    judged = judge_run(cells, POLICY)
    assert judged.alpha_cell == pytest.approx(alpha_cell)
    assert judged.alpha_pool == (None if alpha_pool is None else pytest.approx(alpha_pool))
    for pool in judged.pools:
        if pool.expected.deterministic:
            continue
        assert all(v.alpha == pytest.approx(alpha_cell) for v in pool.cell_verdicts)
        if pool.pooled is not None:
            assert pool.pooled.alpha == pytest.approx(alpha_pool)


# -- the homogeneity gate -------------------------------------------------------


@pytest.mark.parametrize(
    "rows",
    [
        [[720, 80], [180, 20], [720, 80], [180, 20]],
        [[744, 56], [174, 26], [696, 104], [186, 14]],
        [[700, 100], [150, 50]],
        [[60, 30, 10], [50, 35, 15], [70, 20, 10]],
        [[90, 10], [0, 0], [80, 20]],  # an empty cell is left out
    ],
)
def test_homogeneity_is_pearsons_chi_square(rows):
    names = ["a", "b", "c"][: len(rows[0])]
    result = homogeneity([dict(zip(names, r, strict=True)) for r in rows], names, 0.01)
    table = np.array([r for r in rows if sum(r)])
    scipy_result = stats.chi2_contingency(table, correction=False)
    assert result.statistic == pytest.approx(scipy_result.statistic)
    assert result.p_value == pytest.approx(scipy_result.pvalue)
    assert result.dof == scipy_result.dof == (table.shape[0] - 1) * (table.shape[1] - 1)
    # statsmodels' Pearson test of independence (no continuity correction either)
    assert result.p_value == pytest.approx(Table(table).test_nominal_association().pvalue)
    assert result.homogeneous == (result.p_value >= 0.01)


@pytest.mark.parametrize(
    "rows",
    [
        [[90, 10]],  # one cell: nothing to compare
        [[90, 0], [80, 0]],  # one subset answered
        [[90, 10], [0, 0]],
    ],
)
def test_homogeneity_with_nothing_to_compare(rows):
    result = homogeneity([dict(zip(SUBSETS, r, strict=True)) for r in rows], SUBSETS, 0.01)
    assert (result.statistic, result.dof, result.p_value, result.homogeneous) == (0.0, 0, 1.0, True)


def test_homogeneity_ignores_unknown_and_error():
    cells = design((720, 180, 720, 180), extras=[{"unknown": 1, "error": 0}, {}, {"error": 1}, {}])
    pool = judge_run(cells, POLICY).pools[0]
    assert pool.homogeneity is not None and pool.homogeneity.p_value == pytest.approx(1.0)


# -- the pool's verdict and its reason -----------------------------------------


@pytest.mark.parametrize(
    ("firsts", "status", "judged", "reason"),
    [
        # 90/10 everywhere: 2000 pooled responses verify what no 200-request cell could
        (
            (720, 180, 720, 180),
            "verified",
            "pooled",
            f"verified, pooled over {EVERY} (homogeneity χ² p=1)",
        ),
        # rest/canary at 60/40: its own 1 − alpha/8 interval is wholly below 87%
        (
            (720, 120, 720, 180),
            "refuted",
            "one by one",
            "rest/canary refuted on its own: resnet50 off by 30 points",
        ),
        # 93% and 87% default cells: no cell is beyond its band, but they differ
        ((744, 180, 696, 180), "inconclusive", "one by one", "the cells differ (homogeneity χ² p="),
        # 84% everywhere: each cell's interval reaches 87%, the pooled one (at 1 − alpha/2) not
        (
            (672, 168, 672, 168),
            "refuted",
            "pooled",
            f"refuted, pooled over {EVERY}: resnet50 off by 6 points",
        ),
        # 92% everywhere: pooled, inside the band, but its interval reaches 93%
        ((736, 184, 736, 184), "inconclusive", "pooled", f"inconclusive, pooled over {EVERY}"),
    ],
)
def test_pool_verdicts_and_reasons(firsts, status, judged, reason):
    judgement = judge_run(design(firsts), POLICY)
    pool = judgement.pools[0]
    assert (judgement.status, pool.status, pool.judged) == (status, status, judged), pool.reason
    assert pool.reason.startswith(reason), pool.reason
    assert pool.pooled is not None and pool.verdict is pool.pooled
    assert pool.pooled.counts == {SUBSETS[0]: sum(firsts), SUBSETS[1]: 2000 - sum(firsts)}
    assert pool.pooled.n == 2000 and pool.pooled.group == " + ".join(NAMES)
    if judged == "one by one":
        assert "so each is judged alone" in pool.reason or "on its own" in pool.reason
        assert pool.homogeneity is not None and not pool.homogeneity.homogeneous
    json.dumps(pool.to_dict(), allow_nan=False)


def test_cells_that_differ_list_each_cells_status():
    pool = judge_run(design((744, 180, 696, 180)), POLICY).pools[0]
    table = np.array([[744, 56], [180, 20], [696, 104], [180, 20]])
    p = stats.chi2_contingency(table, correction=False).pvalue
    assert p < 0.01
    own = "; ".join(f"{v.group} {v.status}" for v in pool.cell_verdicts)
    assert pool.reason == (
        f"the cells differ (homogeneity χ² p={p:.3g} < 0.01), so each is judged alone: {own}"
    )
    # judged alone, each cell shows its own status
    assert [pool.cell_status(n) for n in NAMES] == [v.status for v in pool.cell_verdicts]


def test_a_single_cell_is_judged_alone_with_its_gates():
    only = cell("rest/default", 720, 800, unknown=10)  # 10 of 810: 1.2% unknown
    pool = judge_run([only], POLICY).pools[0]
    direct = verify_group(only.counts, E90, POLICY, group="rest/default", alpha=POLICY.alpha)
    assert (pool.judged, pool.pooled, pool.homogeneity) == ("alone", None, None)
    assert pool.status == direct.status == "refuted"
    assert pool.reason == direct.reason and "unattributable" in pool.reason


# -- gates on pooled counts -----------------------------------------------------


@pytest.mark.parametrize(
    ("extras", "status", "failures"),
    [
        # 2 unknown in rest/canary: 1% of that cell but 0.1% of the pool's 2002 requests
        ([{}, {"unknown": 2}, {}, {}], "verified", ()),
        # 14 unknown over 2014 requests: 0.7% of the pool, above the 0.5% gate
        (
            [{"unknown": 5}, {"unknown": 2}, {"unknown": 5}, {"unknown": 2}],
            "refuted",
            ("unknown_rate",),
        ),
        # 2 failed in 2002: 0.1% is not above the 0.1% gate; 3 is
        ([{"error": 1}, {}, {"error": 1}, {}], "verified", ()),
        ([{"error": 1}, {"error": 1}, {"error": 1}, {}], "refuted", ("error_rate",)),
    ],
)
def test_gates_apply_to_the_pooled_counts(extras, status, failures):
    pool = judge_run(design((720, 180, 720, 180), extras=extras), POLICY).pools[0]
    assert pool.status == status, pool.reason
    assert pool.pooled is not None and pool.pooled.failures == failures
    # a cell in a pool is not gated alone
    assert all(v.failures == () and v.status != "refuted" for v in pool.cell_verdicts)
    if failures:
        assert pool.reason.startswith(f"refuted, pooled over {EVERY}: ")


# -- deterministic pools --------------------------------------------------------


def _canary_cells(rest, grpc):
    """Two canary cells expecting 0/100; each ``(resnet50, resnet101)``."""
    return [
        CellTable("rest/canary", {SUBSETS[0]: rest[0], SUBSETS[1]: rest[1]}, CANARY),
        CellTable("grpc/canary", {SUBSETS[0]: grpc[0], SUBSETS[1]: grpc[1]}, CANARY),
    ]


@pytest.mark.parametrize(
    ("rest", "grpc", "status", "refuted_alone"),
    [
        ((0, 61), (0, 61), "verified", ()),  # 122 pooled responses, none wrong
        ((0, 61), (0, 60), "inconclusive", ()),  # 121: the bound is 3.003%, above 3%
        ((0, 2000), (1, 1999), "refuted", ("grpc/canary",)),  # one wrong in 4000
        ((1, 60), (0, 61), "refuted", ("rest/canary",)),
        ((1, 60), (2, 59), "refuted", ("rest/canary", "grpc/canary")),
    ],
)
def test_deterministic_pools(rest, grpc, status, refuted_alone):
    judgement = judge_run(_canary_cells(rest, grpc), POLICY)
    (pool,) = judgement.pools
    assert pool.status == status and pool.homogeneity is None and pool.judged == "pooled"
    assert judgement.alpha_pool is None  # nothing weighted: no budget spent here
    assert tuple(v.group for v in pool.cell_verdicts if v.status == "refuted") == refuted_alone
    for name in refuted_alone:
        assert f"{name} refuted on its own" in pool.reason
    if status != "refuted":
        # each cell alone has at most 61 responses and cannot verify; the pool's bound covers both
        assert all(v.status == "inconclusive" for v in pool.cell_verdicts)
        assert pool.pooled is not None and pool.pooled.wrong.upper_bound == pytest.approx(
            1 - 0.025 ** (1 / (rest[1] + grpc[1]))
        )
        assert [pool.cell_status(n) for n in pool.cells] == [status, status]


# -- what a failing run prints --------------------------------------------------


def test_failing_lines_one_per_cell_refuted_first():
    cells = [
        cell("rest/default", 27, 30),
        CellTable("rest/canary", {SUBSETS[1]: 31}, CANARY),
        cell("grpc/default", 27, 30),
        CellTable("grpc/canary", {SUBSETS[1]: 30, SUBSETS[0]: 1}, CANARY),
    ]
    judgement = judge_run(cells, POLICY)
    assert judgement.status == "refuted"
    lines = judgement.failing_lines()
    # the canary pool is refuted (a wrong response in grpc/canary), the default pool is
    # inconclusive (60 responses); refuted lines come first though their pool comes second
    assert [line.split(":")[0] for line in lines] == [
        "grpc/canary refuted",
        "rest/default inconclusive",
        "grpc/default inconclusive",
        # a clean cell is not shown refuted for its neighbour's wrong response: its own verdict
        "rest/canary inconclusive",
    ]
    assert "1 of 31 attributed responses came from resnet50" in lines[0]
    assert "all 31 attributed responses came from resnet101" in lines[3]
    assert lines[1].startswith(
        "rest/default inconclusive: inconclusive, pooled over rest/default, grpc/default"
    )


def test_failing_lines_skip_verified_cells():
    assert judge_run(design((720, 180, 720, 180)), POLICY).failing_lines() == []
    # judged one by one, the 800-request default cells verify alone; only the others print
    judgement = judge_run(design((720, 120, 720, 180)), POLICY)
    lines = judgement.failing_lines()
    assert [line.split(":")[0] for line in lines] == [
        "rest/canary refuted",
        "grpc/canary inconclusive",
    ]
    assert {v.group: v.status for v in judgement.pools[0].cell_verdicts}[
        "rest/default"
    ] == "verified"
