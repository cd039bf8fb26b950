"""The verdict's guarantees, proved by exact enumeration and checked by seeded simulation.

``canary/stats/split.py`` promises, at every n and for every true split:

* false refuted ≤ alpha: a split with every true share inside its band
  [e − t, e + t] (and no zero-share subset answering) is refuted with
  probability at most the table's alpha;
* false verified ≤ (1 − confidence)/2: a split with some true share outside
  its band is verified with probability at most 2.5% at the defaults.

For two subsets both are proved here exactly: every count x = 0…n at every
n = 5…2000 goes through ``classify_counts``; the sets it refutes and verifies
turn out to be {x ≤ a} ∪ {x ≥ b} and [c, d] (checked), and binomial tails at
the band's edges then bound the error rates for every true share (see
:func:`_bounds`). For three and four subsets and for pooled runs
(``judge_run``) the rates are simulated, seeded, with exact binomial bounds on
the simulated counts. ``python -m bench.verdict_guarantees`` prints the same
figures.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import stats

from canary.stats import Expectation, SplitPolicy, classify_counts, parse_expected
from canary.stats.deciding import zero_count_n
from canary.stats.pooling import CellTable, RunJudgement, judge_run

SUBSETS = ["resnet50", "resnet101"]
POLICY = SplitPolicy()  # alpha 0.01, tolerance 0.03, confidence 0.95
ALPHA, TOL = POLICY.alpha, POLICY.tolerance
FALSE_VERIFY = (1 - POLICY.confidence) / 2  # 0.025
NS = np.arange(5, 2001)


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    """Two real OS threads: the Beta quantiles behind ``classify_counts`` release the GIL, so
    the enumeration uses both cores. The suite's process is gevent-patched (tests/conftest.py),
    where ``threading.Thread`` is a greenlet that never runs beside another; gevent's own
    pool of native threads is used there."""
    try:
        from gevent import monkey

        if monkey.is_module_patched("threading"):
            from gevent.threadpool import ThreadPoolExecutor

            return ThreadPoolExecutor(2)
    except ImportError:
        pass
    return concurrent.futures.ThreadPoolExecutor(2)


def _status_of_every_count(
    expected: Expectation, alpha: float | None
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.str_]]:
    """(n, x, first row of each n, status) for the tables [x, n − x], x = 0…n, n in NS."""
    sizes = NS + 1
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    n = np.repeat(NS, sizes)
    x = np.arange(n.size) - np.repeat(starts, sizes)
    halves = np.array_split(np.arange(n.size), 2)

    def classify(rows: NDArray[np.int64]) -> NDArray[np.str_]:
        table = np.stack([x[rows], n[rows] - x[rows]], axis=1)
        return classify_counts(table, expected, POLICY, alpha=alpha)

    with _executor() as pool:
        status = np.concatenate(list(pool.map(classify, halves)))
    return n, x, starts, status


@dataclass(frozen=True)
class Bounds:
    a: NDArray[np.int64]  # refuted: x ≤ a or x ≥ b
    b: NDArray[np.int64]
    c: NDArray[np.int64]  # verified: c ≤ x ≤ d (empty when c > d)
    d: NDArray[np.int64]
    refute_high: NDArray[np.float64]  # P(x ≥ b | p = e + t)
    refute_low: NDArray[np.float64]  # P(x ≤ a | p = e − t)
    false_refute: NDArray[np.float64]
    false_verify: NDArray[np.float64]


def _bounds(expected: Expectation, alpha: float | None = None) -> Bounds:
    """Enumerate, check the shapes of the refute and verify sets, and bound the error rates.

    x counts the first subset, x ~ Binomial(n, p). Its band is [lo, hi] = [e − t, e + t]
    (the second subset's band is its mirror image). Binomial tails are monotone in p:
    P(x ≤ k | p) falls and P(x ≥ k | p) rises as p grows. Hence

    * for p in the band, P(refuted) = P(x ≤ a | p) + P(x ≥ b | p)
      ≤ P(x ≤ a | lo) + P(x ≥ b | hi): the worst case over the band, at its edges;
    * for p > hi, P(verified) = P(c ≤ x ≤ d | p) ≤ P(x ≤ d | p) < P(x ≤ d | hi), and for
      p < lo it is below P(x ≥ c | lo): the supremum over the outside is approached as p
      tends to an edge (P(verified) is continuous in p), so these are the worst cases.
    """
    n, x, starts, status = _status_of_every_count(expected, alpha)
    refuted, verified = status == "refuted", status == "verified"
    first_kept = np.minimum.reduceat(np.where(refuted, n + 1, x), starts)
    last_kept = np.maximum.reduceat(np.where(refuted, -1, x), starts)
    kept = np.add.reduceat((~refuted).astype(np.int64), starts)
    bad = NS[kept != np.maximum(last_kept - first_kept + 1, 0)]
    assert bad.size == 0, f"refute set is not {{x ≤ a}} ∪ {{x ≥ b}} at n = {bad[:10]}"
    c = np.minimum.reduceat(np.where(verified, x, n + 1), starts)
    d = np.maximum.reduceat(np.where(verified, x, -1), starts)
    bad = NS[np.add.reduceat(verified.astype(np.int64), starts) != np.maximum(d - c + 1, 0)]
    assert bad.size == 0, f"verify set is not an interval at n = {bad[:10]}"
    a, b = first_kept - 1, last_kept + 1
    e = expected.shares[SUBSETS[0]]
    lo, hi = e - TOL, e + TOL  # inside [0, 1] for every expectation tested here
    refute_high = stats.binom.sf(b - 1, NS, hi)  # b = n + 1 (nothing refuted above): 0
    refute_low = stats.binom.cdf(a, NS, lo)  # a = −1: 0
    some = c <= d
    false_verify = np.where(
        some, np.maximum(stats.binom.cdf(d, NS, hi), stats.binom.sf(c - 1, NS, lo)), 0.0
    )
    return Bounds(a, b, c, d, refute_high, refute_low, refute_high + refute_low, false_verify)


def _worst(rates: NDArray[np.float64]) -> str:
    i = int(np.argmax(rates))
    return f"worst {rates[i]:.5f} at n = {NS[i]}"


@pytest.mark.parametrize(
    ("text", "alpha"),
    [("70/30", None), ("90/10", None), ("50/50", None), ("95/5", None), ("90/10", ALPHA / 4)],
)
def test_two_subsets_exact_error_rates_at_every_n(text, alpha):
    expected = parse_expected(text, SUBSETS)
    table_alpha = alpha or ALPHA
    bounds = _bounds(expected, alpha)
    # false refuted ≤ the table's alpha, each side of the band ≤ alpha/2 (two-sided exact interval)
    assert np.all(bounds.false_refute <= table_alpha), _worst(bounds.false_refute)
    assert np.all(bounds.refute_high <= table_alpha / 2), _worst(bounds.refute_high)
    assert np.all(bounds.refute_low <= table_alpha / 2), _worst(bounds.refute_low)
    # false verified ≤ (1 − confidence)/2
    assert np.all(bounds.false_verify <= FALSE_VERIFY), _worst(bounds.false_verify)
    # not vacuous: the sets exist, refuting needs x away from e·n, the expectation itself is
    # verified at n = 2000, and the worst cases come near the bounds (the rules spend them)
    e = expected.shares[SUBSETS[0]]
    assert np.all((bounds.a < e * NS) & (bounds.b > e * NS))
    assert bounds.b[-1] <= NS[-1] and bounds.a[-1] >= 0
    assert bounds.c[-1] <= round(e * 2000) <= bounds.d[-1]
    assert bounds.false_refute.max() > 0.5 * table_alpha
    assert bounds.false_verify.max() > 0.5 * FALSE_VERIFY


def test_deterministic_route_exact_error_rates_at_every_n():
    """100/0: verified only with no wrong response and n ≥ 122; any wrong response refutes.

    A true wrong share q > t is verified only when none of n responses is wrong:
    (1 − q)^n < (1 − t)^n, which must be ≤ 2.5% wherever that is verified. The exact route
    (q = 0) never answers wrong, so it is never refuted. Every count of wrong responses is
    enumerated for n ≤ 400, and 0, 1, 2 and n of them up to 2000 (beyond one wrong response
    the rule has nothing more to look at)."""
    expected = parse_expected("100/0", SUBSETS)
    small = NS[NS <= 400]
    rows = [np.stack([n - np.arange(n + 1), np.arange(n + 1)], axis=1) for n in small]
    large = NS[NS > 400]
    rows += [np.stack([large - w, np.full_like(large, w)], axis=1) for w in (0, 1, 2)]
    rows.append(np.stack([0 * large, large], axis=1))
    table = np.concatenate(rows)
    n, wrong = table.sum(axis=1), table[:, 1]
    status = classify_counts(table, expected, POLICY)
    assert np.all(status[wrong > 0] == "refuted")
    clean = wrong == 0
    verified_n = n[clean & (status == "verified")]
    assert np.all(status[clean] != "refuted")  # false refuted: 0
    assert verified_n.min() == zero_count_n(POLICY) == 122
    assert np.array_equal(np.sort(verified_n), NS[NS >= 122])
    assert np.all(status[clean & (n < 122)] == "inconclusive")
    false_verify = (1 - TOL) ** verified_n
    assert false_verify.max() <= FALSE_VERIFY
    assert false_verify.max() > 0.9 * FALSE_VERIFY  # 122 is the smallest n that keeps it


# -- three and four subsets: seeded simulation --------------------------------

ROWS = 20_000


def _edge_truths(expected: Expectation) -> list[tuple[str, NDArray[np.float64]]]:
    """One share at each edge of its band (e ± t), the others rescaled to sum to one: still
    inside their bands. At an edge the truth is inside the band (a refutation is false), and
    P(verified) there is the limit of P(verified) just outside it (it is continuous in p), so
    one simulation bounds both errors."""
    e = np.array([expected.shares[s] for s in expected.subsets])
    out = []
    for i, name in enumerate(expected.subsets):
        for sign in (+1, -1):
            p = e * (1 - (e[i] + sign * TOL)) / (1 - e[i])
            p[i] = e[i] + sign * TOL
            assert np.all(np.abs(np.delete(p - e, i)) < TOL)
            out.append((f"{name}{'+' if sign > 0 else '-'}{TOL:g}", p))
    return out


def _upper(count: int, runs: int) -> float:
    """One-sided 99.9% exact (Clopper–Pearson) upper bound on a simulated rate."""
    return float(stats.beta.ppf(0.999, count + 1, runs - count)) if count < runs else 1.0


def _lower(count: int, runs: int) -> float:
    """One-sided 99.9% exact lower bound on a simulated rate."""
    return float(stats.beta.ppf(0.001, count, runs - count + 1)) if count > 0 else 0.0


@pytest.mark.parametrize(
    ("text", "names", "seed"),
    [("50/30/20", ["a", "b", "c"], 31), ("40/30/20/10", ["a", "b", "c", "d"], 41)],
)
def test_many_subsets_simulated_error_rates(text, names, seed):
    expected = parse_expected(text, names)
    k = len(names)
    rng = np.random.default_rng(seed)
    for n in (300, 1500, 5000):
        for label, truth in _edge_truths(expected):
            status = classify_counts(rng.multinomial(n, truth, size=ROWS), expected, POLICY)
            refuted, verified = int(np.sum(status == "refuted")), int(np.sum(status == "verified"))
            where = f"{text} n={n} truth {label}: refuted {refuted}, verified {verified} of {ROWS}"
            assert _upper(refuted, ROWS) <= ALPHA, where
            assert _upper(verified, ROWS) <= FALSE_VERIFY, where
            # the mechanism: verifying at an edge needs that share's interval, at
            # 1 − (1 − confidence)/k, to miss on its one side: ≤ 2.5%/k (Bonferroni over k)
            assert _lower(verified, ROWS) <= FALSE_VERIFY / k, where
    # not vacuous: the expectation itself is verified once the intervals fit the bands (at
    # n = 5000 a 50% share's interval at 1 − 0.05/3 is ±1.7 points, so its estimate must
    # fall within 1.3 points, 1.85 standard errors: about 94% per share, 91% for all)
    exact = [expected.shares[s] for s in names]
    status = classify_counts(rng.multinomial(5000, exact, size=2000), expected, POLICY)
    assert np.mean(status == "verified") > 0.85


# -- pooled runs: four cells, one expectation ---------------------------------

CELLS = (("rest/default", 800), ("rest/canary", 200), ("grpc/default", 800), ("grpc/canary", 200))
E90 = parse_expected("90/10", SUBSETS)


def _pooled(shares: tuple[float, ...], runs: int, seed: int) -> list[RunJudgement]:
    """``runs`` seeded 2000-request runs judged by ``judge_run``; cell i's first-subset share
    is shares[i]; every cell expects 90/10 (``--expected``: route None)."""
    rng = np.random.default_rng(seed)
    first = [rng.binomial(size, p, size=runs) for (_, size), p in zip(CELLS, shares, strict=True)]
    out = []
    for run in range(runs):
        cells = [
            CellTable(name, {SUBSETS[0]: int(x[run]), SUBSETS[1]: size - int(x[run])}, E90)
            for (name, size), x in zip(CELLS, first, strict=True)
        ]
        out.append(judge_run(cells, POLICY))
    return out


def test_pooled_correct_split_is_verified():
    runs = _pooled((0.9, 0.9, 0.9, 0.9), 600, seed=1)
    assert all(len(r.pools) == 1 and r.pools[0].cells == tuple(n for n, _ in CELLS) for r in runs)
    assert runs[0].alpha_pool == ALPHA / 2 and runs[0].alpha_cell == ALPHA / 8
    verified = sum(r.status == "verified" for r in runs)
    # a 200-request cell alone is never verified (its interval is wider than ±3 points):
    # only pooling makes 2000 requests verify, and it does in at least 90% of runs (shown by
    # the 99.9% lower bound; judge_run takes ~7 ms a run, hence 600 runs, not thousands)
    assert _lower(verified, len(runs)) >= 0.90, verified
    assert sum(r.status == "refuted" for r in runs) <= ALPHA * len(runs)


@pytest.mark.parametrize(("cell", "seed"), [(1, 2), (2, 3)])
def test_pooled_one_cell_at_60_40_is_refuted(cell, seed):
    shares = [0.9] * 4
    shares[cell] = 0.6
    runs = _pooled(tuple(shares), 200, seed=seed)
    refuted = [r for r in runs if r.status == "refuted"]
    assert len(refuted) >= 0.99 * len(runs)
    name = CELLS[cell][0]
    for r in refuted:
        lines = r.failing_lines()
        assert lines[0].startswith(f"{name} refuted"), lines
        assert r.pools[0].cell_status(name) == "refuted"


@pytest.mark.parametrize(
    ("shares", "seed"),
    [((0.93, 0.87, 0.87, 0.93), 4), ((0.93, 0.93, 0.93, 0.93), 6)],
)
def test_pooled_band_edge_truths_are_rarely_refuted(shares, seed):
    # every cell's true share at an edge of its band: inside, so any refutation is false; the
    # run's budget is alpha/2 for the pooled table plus alpha/8 for each of the four cells
    runs = _pooled(shares, 300, seed=seed)
    refuted = sum(r.status == "refuted" for r in runs)
    assert refuted <= ALPHA * len(runs), refuted
    assert _lower(refuted, len(runs)) <= ALPHA


@pytest.mark.parametrize(
    ("shares", "seed"), [((0.86, 0.86, 0.86, 0.86), 7), ((0.88, 0.80, 0.88, 0.80), 8)]
)
def test_pooled_share_outside_the_band_is_rarely_verified(shares, seed):
    pooled = sum(p * size for p, (_, size) in zip(shares, CELLS, strict=True)) / 2000
    assert pooled < 0.9 - TOL  # 86% and 86.4%: the pooled share is outside [87, 93]
    runs = _pooled(shares, 200, seed=seed)
    verified = sum(r.status == "verified" for r in runs)
    assert verified <= FALSE_VERIFY * len(runs), verified
    assert _lower(verified, len(runs)) <= FALSE_VERIFY


def test_cells_on_different_routes_are_never_pooled():
    rng = np.random.default_rng(9)
    routes = ["vs/primary", "vs/primary", "vs/header-canary", None]
    for _ in range(20):
        cells = [
            CellTable(name, {SUBSETS[0]: int(x), SUBSETS[1]: size - int(x)}, E90, route)
            for (name, size), route, x in zip(
                CELLS, routes, rng.binomial([s for _, s in CELLS], 0.9), strict=True
            )
        ]
        judged = judge_run(cells, POLICY)
        assert [(p.cells, p.route) for p in judged.pools] == [
            (("rest/default", "rest/canary"), "vs/primary"),
            (("grpc/default",), "vs/header-canary"),
            (("grpc/canary",), None),
        ]
        assert [p.judged for p in judged.pools][1:] == ["alone", "alone"]
        assert judged.pools[0].judged in ("pooled", "one by one")
        # one pooled table and four weighted cells: alpha/2 and alpha/8
        assert (judged.alpha_pool, judged.alpha_cell) == (ALPHA / 2, ALPHA / 8)
    distinct = [CellTable(n, {SUBSETS[0]: 90, SUBSETS[1]: 10}, E90, f"route-{n}") for n, _ in CELLS]
    judged = judge_run(distinct, POLICY)
    assert len(judged.pools) == 4 and all(p.judged == "alone" for p in judged.pools)
    assert (judged.alpha_cell, judged.alpha_pool) == (ALPHA / 4, None)
