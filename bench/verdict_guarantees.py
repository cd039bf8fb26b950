"""Worst-case error rates of the fixed-sample verdict: exact for two subsets, simulated beyond.

The verdict (:mod:`canary.stats.split`) promises, at every n and for every
true split: a split whose every share lies inside its band is refuted with
probability at most alpha, and a split with a share outside its band is
verified with probability at most (1 − confidence)/2. This prints how close
the rules come to those bounds:

* **exact, two subsets**: for every n = 5…2000 the status of every count
  x = 0…n (``classify_counts``); the refute set is {x ≤ a} ∪ {x ≥ b} and the
  verify set [c, d], so the worst false-refutation rate over true shares in
  the band is at most P(x ≥ b | e + t) + P(x ≤ a | e − t), and the worst
  false-verification rate over true shares outside it is
  max(P(x ≤ d | e + t), P(x ≥ c | e − t)) (binomial tails are monotone in p,
  so the band's edges are the suprema). Deterministic 100/0: verified only
  with no wrong response, so a wrong share above the tolerance is verified
  with probability below (1 − tolerance)^n.
* **simulated, three and four subsets**: seeded multinomial draws with one
  share at an edge of its band (e ± tolerance, the others rescaled), the
  worst case for both errors.
* **pooled four-cell design** (:func:`canary.stats.pooling.judge_run`): REST
  and gRPC x default (40% of the requests each) and canary (10% each) header
  groups, 2000 requests, one ``--expected 90/10`` for every cell.

Nothing here asserts; ``tests/canary/test_stats_guarantees.py`` does.

Run: ``python -m bench.verdict_guarantees [--runs N] [--pooled-runs N] [--seed S] [--n-max N]``
(about two minutes on two cores; judge_run takes ~7 ms a run, so the pooled rows take most).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from canary.stats import Expectation, SplitPolicy, classify_counts, parse_expected
from canary.stats.pooling import CellTable, judge_run
from canary.stats.split import bands, zero_count_n

SUBSETS = ["resnet50", "resnet101"]
TWO_SUBSETS = ["70/30", "90/10", "50/50", "95/5"]
MANY_SUBSETS = [("50/30/20", ["a", "b", "c"]), ("40/30/20/10", ["a", "b", "c", "d"])]
SIM_NS = (300, 1500, 5000)
CELLS = (("rest/default", 800), ("rest/canary", 200), ("grpc/default", 800), ("grpc/canary", 200))
POOLED = [  # (label, first-subset share of each cell in CELLS order, what to compare with)
    ("all cells 90/10", (0.90, 0.90, 0.90, 0.90), "verified ≥ 90%"),
    ("rest/canary at 60/40", (0.90, 0.60, 0.90, 0.90), "refuted ≥ 99%"),
    ("grpc/default at 60/40", (0.90, 0.90, 0.60, 0.90), "refuted ≥ 99%"),
    ("93/7 87/13 87/13 93/7 (edges)", (0.93, 0.87, 0.87, 0.93), "refuted ≤ alpha"),
    ("all cells 93/7 (edge)", (0.93, 0.93, 0.93, 0.93), "refuted ≤ alpha"),
    ("all cells 87/13 (edge)", (0.87, 0.87, 0.87, 0.87), "refuted ≤ alpha, verified ≤ 2.5%"),
    ("all cells 86/14 (outside)", (0.86, 0.86, 0.86, 0.86), "verified ≤ 2.5%"),
    ("88/80/88/80 (pool 86.4%)", (0.88, 0.80, 0.88, 0.80), "verified ≤ 2.5%"),
    ("rest/canary at 80/20 (pool 88%)", (0.90, 0.80, 0.90, 0.90), "none: the claim is the pool's"),
    (
        "rest/canary at 85/15 (pool 89.5%)",
        (0.90, 0.85, 0.90, 0.90),
        "none: the claim is the pool's",
    ),
]


@dataclass(frozen=True)
class Exact:
    """Per n (``ns``): the refute set {x ≤ a} ∪ {x ≥ b}, the verify set [c, d] (c > d: empty),
    whether the sets have those shapes, and the worst-case error rates they imply."""

    ns: NDArray[np.int64]
    a: NDArray[np.int64]
    b: NDArray[np.int64]
    c: NDArray[np.int64]
    d: NDArray[np.int64]
    shapes_ok: NDArray[np.bool_]
    false_refute: NDArray[np.float64]
    false_verify: NDArray[np.float64]


def all_tables(
    ns: NDArray[np.int64],
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """(n, x, start of each n's rows): every x = 0…n for every n, n-major."""
    sizes = ns + 1
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    n = np.repeat(ns, sizes)
    x = np.arange(n.size) - np.repeat(starts, sizes)
    return n, x, starts


def statuses(
    expected: Expectation,
    policy: SplitPolicy,
    n: NDArray[np.int64],
    x: NDArray[np.int64],
    alpha: float | None = None,
    workers: int = 2,
) -> NDArray[np.str_]:
    """classify_counts over the rows [x, n − x], in ``workers`` threads (the Beta quantiles
    release the GIL)."""
    chunks = np.array_split(np.arange(n.size), workers)

    def one(rows: NDArray[np.int64]) -> NDArray[np.str_]:
        return classify_counts(
            np.stack([x[rows], n[rows] - x[rows]], axis=1), expected, policy, alpha=alpha
        )

    with ThreadPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(one, chunks)))


def exact_two_subsets(
    expected: Expectation, policy: SplitPolicy, ns: NDArray[np.int64], alpha: float | None = None
) -> Exact:
    n, x, starts = all_tables(ns)
    status = statuses(expected, policy, n, x, alpha)
    refuted, verified = status == "refuted", status == "verified"
    # first and last count that is not refuted; refuted everywhere between them is a bad shape
    first_kept = np.minimum.reduceat(np.where(refuted, n + 1, x), starts)
    last_kept = np.maximum.reduceat(np.where(refuted, -1, x), starts)
    kept = np.add.reduceat(~refuted, starts)
    c = np.minimum.reduceat(np.where(verified, x, n + 1), starts)
    d = np.maximum.reduceat(np.where(verified, x, -1), starts)
    shapes_ok = (kept == np.maximum(last_kept - first_kept + 1, 0)) & (
        np.add.reduceat(verified, starts) == np.maximum(d - c + 1, 0)
    )
    a, b = first_kept - 1, last_kept + 1
    lo, hi = true_range(expected, policy.tolerance)
    false_refute = stats.binom.sf(b - 1, ns, hi) + stats.binom.cdf(a, ns, lo)
    above = stats.binom.cdf(d, ns, hi) if hi < 1 else np.zeros(ns.size)
    below = stats.binom.sf(c - 1, ns, lo) if lo > 0 else np.zeros(ns.size)
    empty = c > d
    false_verify = np.where(empty, 0.0, np.maximum(above, below))
    return Exact(ns, a, b, c, d, shapes_ok, false_refute, false_verify)


def true_range(expected: Expectation, tolerance: float) -> tuple[float, float]:
    """The first subset's true shares p for which both shares (p, 1 − p) lie in their bands."""
    low, high = bands(expected, tolerance)
    return float(max(low[0], 1 - high[1])), float(min(high[0], 1 - low[1]))


@dataclass(frozen=True)
class Deterministic:
    first_verified: int | None  # smallest n verified with no wrong response
    false_refute: float  # share of the n where no wrong response at all is refuted
    false_verify: float  # (1 − tolerance)^n at the first verified n: the worst case
    one_wrong_refuted: bool  # a single wrong response refutes at every n


def exact_deterministic(policy: SplitPolicy, ns: NDArray[np.int64]) -> Deterministic:
    """100/0: the status with no wrong response and with one, and the false-verification bound."""
    expected = parse_expected("100/0", SUBSETS)
    rows = np.concatenate([np.stack([ns, 0 * ns], 1), np.stack([ns - 1, 0 * ns + 1], 1)])
    clean, one_wrong = classify_counts(rows, expected, policy).reshape(2, -1)
    verified_at = ns[clean == "verified"]
    first = int(verified_at.min()) if verified_at.size else None
    return Deterministic(
        first_verified=first,
        false_refute=float(np.mean(clean == "refuted")),
        false_verify=float((1 - policy.tolerance) ** first) if first else 0.0,
        one_wrong_refuted=bool(np.all(one_wrong == "refuted")),
    )


def edge_truths(expected: Expectation, tolerance: float) -> list[tuple[str, NDArray[np.float64]]]:
    """One share at each edge of its band, the others rescaled to sum to one."""
    e = np.array([expected.shares[s] for s in expected.subsets])
    out = []
    for i, name in enumerate(expected.subsets):
        for sign in (+1, -1):
            p = e * (1 - (e[i] + sign * tolerance)) / (1 - e[i])
            p[i] = e[i] + sign * tolerance
            out.append((f"{name} {'+' if sign > 0 else '−'}{100 * tolerance:g}", p))
    return out


def simulate(
    expected: Expectation,
    policy: SplitPolicy,
    truth: NDArray[np.float64],
    n: int,
    runs: int,
    rng: np.random.Generator,
) -> dict[str, int]:
    status = classify_counts(rng.multinomial(n, truth, size=runs), expected, policy)
    return {s: int(np.sum(status == s)) for s in ("verified", "refuted", "inconclusive")}


def pooled_run(
    shares: tuple[float, ...],
    expected: Expectation,
    policy: SplitPolicy,
    runs: int,
    rng: np.random.Generator,
) -> dict[str, int]:
    first = [rng.binomial(size, p, size=runs) for (_, size), p in zip(CELLS, shares, strict=True)]
    out = {"verified": 0, "refuted": 0, "inconclusive": 0}
    for run in range(runs):
        cells = [
            CellTable(name, {SUBSETS[0]: int(x[run]), SUBSETS[1]: size - int(x[run])}, expected)
            for (name, size), x in zip(CELLS, first, strict=True)
        ]
        out[judge_run(cells, policy).status] += 1
    return out


def upper(count: int, runs: int, level: float = 0.999) -> float:
    """One-sided exact upper bound on a rate seen ``count`` times in ``runs``."""
    return float(stats.binomtest(count, runs).proportion_ci(2 * level - 1, method="exact").high)


def pct(value: float) -> str:
    return f"{100 * value:.3f}%"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20000, help="simulated tables per row")
    parser.add_argument(
        "--pooled-runs",
        type=int,
        default=1000,
        help="simulated runs per pooled row (judge_run, ~6 ms each)",
    )
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument(
        "--n-max", type=int, default=2000, help="largest n of the exact enumeration"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    policy = SplitPolicy()
    rng = np.random.default_rng(args.seed)
    ns = np.arange(5, args.n_max + 1)
    level = (1 - policy.confidence) / 2
    print("canary: worst-case error rates of the fixed-sample split verdict")
    print(
        f"alpha {policy.alpha:g}, tolerance ±{100 * policy.tolerance:g} points, confidence "
        f"{100 * policy.confidence:g}%: false refuted ≤ {pct(policy.alpha)} (at the table's alpha), "
        f"false verified ≤ {pct(level)}\n"
    )
    print(
        f"exact, every x at every n = {ns[0]}…{ns[-1]} (worst case over true shares, by monotonicity)"
    )
    header = (
        f"{'expected':<10} {'alpha':>7} {'false refuted':>13} {'at n':>5} {'false verified':>14} "
        f"{'at n':>5} {'verifiable from n':>17} {'shapes':>6}"
    )
    print(header)
    print("-" * len(header))
    for text, alpha in [(t, None) for t in TWO_SUBSETS] + [("90/10", policy.alpha / 4)]:
        exact = exact_two_subsets(parse_expected(text, SUBSETS), policy, ns, alpha)
        r, v = int(np.argmax(exact.false_refute)), int(np.argmax(exact.false_verify))
        verifiable = ns[exact.c <= exact.d]
        print(
            f"{text:<10} {alpha or policy.alpha:>7g} {pct(exact.false_refute[r]):>13} {ns[r]:>5} "
            f"{pct(exact.false_verify[v]):>14} {ns[v]:>5} "
            f"{(str(verifiable.min()) if verifiable.size else '-'):>17} "
            f"{'ok' if exact.shapes_ok.all() else 'BAD':>6}"
        )
    det = exact_deterministic(policy, ns)
    first = str(det.first_verified) if det.first_verified else "-"
    print(
        f"{'100/0':<10} {'-':>7} {pct(det.false_refute):>13} {'-':>5} {pct(det.false_verify):>14} "
        f"{first:>5} {first:>17} {'ok' if det.one_wrong_refuted else 'BAD':>6}"
    )
    print(
        "  100/0: refuted at the first wrong response; with none, verified from "
        f"zero_count_n = {zero_count_n(policy)} on, where a wrong share above the tolerance goes "
        "unseen with probability < (1 − tolerance)^n"
    )
    print(
        f"\nsimulated, one share at an edge of its band (the others rescaled), {args.runs:,} "
        "tables per row;\nthe worst edge of each row, with its one-sided 99.9% upper bound"
    )
    header = (
        f"{'expected':<12} {'n':>5} {'false refuted':>21} {'edge':>7} {'false verified':>21} "
        f"{'edge':>7} {'2.5%/k':>7}"
    )
    print(header)
    print("-" * len(header))
    for text, names in MANY_SUBSETS:
        expected = parse_expected(text, names)
        for n in SIM_NS:
            rows = [
                (label, simulate(expected, policy, p, n, args.runs, rng))
                for label, p in edge_truths(expected, policy.tolerance)
            ]
            ref = max(rows, key=lambda r: r[1]["refuted"])
            ver = max(rows, key=lambda r: r[1]["verified"])
            refuted, verified = ref[1]["refuted"], ver[1]["verified"]
            print(
                f"{text:<12} {n:>5} {pct(refuted / args.runs):>8} (≤ {pct(upper(refuted, args.runs))}) "
                f"{ref[0]:>7} {pct(verified / args.runs):>8} (≤ {pct(upper(verified, args.runs))}) "
                f"{ver[0]:>7} {pct(level / len(names)):>7}"
            )
    runs = args.pooled_runs
    expected = parse_expected("90/10", SUBSETS)
    print(
        f"\npooled: {' '.join(f'{name} {size}' for name, size in CELLS)} requests, "
        f"expected 90/10 in every cell, {runs:,} runs per row (judge_run)"
    )
    header = f"{'cells (first share)':<34} {'verified':>9} {'refuted':>9} {'inconcl.':>9}  target"
    print(header)
    print("-" * len(header))
    for label, shares, target in POOLED:
        out = pooled_run(shares, expected, policy, runs, rng)
        print(
            f"{label:<34} {pct(out['verified'] / runs):>9} {pct(out['refuted'] / runs):>9} "
            f"{pct(out['inconclusive'] / runs):>9}  {target}"
        )
    print(
        "(a cell off its band inside a pool whose share stays in the band is caught only by the\n"
        " homogeneity test or its own refutation: the false-verification bound is about the pool)"
    )
    print(f"\n({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
