"""Requests needed to decide: the anytime-valid sequential test against the fixed plan.

For each scenario (expected 70/30 or 90/10 at ±3 points, alpha 1%, confidence
95%, power 95%) a load test is simulated that looks after every batch of
requests and stops at the first decision. The peer is the fixed-sample plan
(:func:`canary.stats.plan_requests`): ``n`` is what ``verify-split --plan``
asks for (both claims: verify the expected split, refute the tolerance + 2
points), ``n_verify`` what verifying alone needs. Both tests are held to the
same guarantees (false "refuted" ≤ alpha whenever every share is inside its
band; false "verified" ≤ 2.5% whenever one is outside); the measured rates
are printed beside the sample sizes. Where a target is missed, the table says so.

Last, ``--until-verified`` as the load test runs it (:class:`loadtest.sequential.SequentialMonitor`):
a correct 70/30 at ±5 points over the default mix of cells (REST/gRPC × default/canary
at 40/10/40/10%), requests until every cell has decided with the four cells pooled,
against each cell judged alone (seeded streams 100, 101, ...).

Run: ``python -m bench.sequential_vs_fixed [--runs N] [--batch B] [--seed S] [--pooled-runs N]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from canary.stats import SequentialSplitTest, SplitPolicy, classify_counts, parse_expected
from canary.stats import plan_requests as plan_fixed
from loadtest.sequential import SequentialMonitor

SUBSETS = ["resnet50", "resnet101"]
SCENARIOS = [  # (label, expected, true first share, the right decision, target ratio to the plan)
    ("true 70/30, expect 70/30", "70/30", 0.70, "verified", 0.5),
    ("true 90/10, expect 90/10", "90/10", 0.90, "verified", 0.5),
    ("true 75/25, expect 70/30", "70/30", 0.75, "refuted", 1.0),
    ("true 65/35, expect 70/30", "70/30", 0.65, "refuted", 1.0),
    ("true 95/5, expect 90/10", "90/10", 0.95, "refuted", 1.0),
    ("true 50/50, expect 70/30", "70/30", 0.50, "refuted", 1.0),
    ("header route, no leak", "100/0", 1.00, "verified", 1.0),
    ("header route, 5% leak", "100/0", 0.95, "refuted", 1.0),
]
EDGES = [  # (label, expected, true first share, the wrong decision, its bound)
    ("true 73/27 (band edge), expect 70/30", "70/30", 0.73, "refuted", "alpha"),
    ("true 67/33 (band edge), expect 70/30", "70/30", 0.67, "refuted", "alpha"),
    ("true 73.5/26.5 (outside), expect 70/30", "70/30", 0.735, "verified", "2.5%"),
    ("true 86.5/13.5 (outside), expect 90/10", "90/10", 0.865, "verified", "2.5%"),
]


def sequential_run(
    test: SequentialSplitTest, truth: float, runs: int, batch: int, looks: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(first decision, attributed n at it) of each simulated stream; "continue" if none."""
    cumulative = np.cumsum(rng.multinomial(batch, [truth, 1 - truth], size=(runs, looks)), axis=1)
    statuses = test.statuses(cumulative, time_axis=1)
    decided = statuses != "continue"
    first = np.where(decided.any(axis=1), decided.argmax(axis=1), looks - 1)
    rows = np.arange(runs)
    outcome = np.where(decided.any(axis=1), statuses[rows, first], "continue")
    return outcome, cumulative[rows, first].sum(axis=-1)


def fixed_rate(text: str, truth: float, n: int, runs: int, policy: SplitPolicy, status: str,
               rng: np.random.Generator) -> float:
    expected = parse_expected(text, SUBSETS)
    statuses = classify_counts(rng.multinomial(n, [truth, 1 - truth], size=runs), expected, policy)
    return float(np.mean(statuses == status))


def naive_peeking(policy: SplitPolicy, runs: int, batch: int, looks: int, rng: np.random.Generator) -> float:
    """False "refuted" rate of the fixed verdict re-checked after every batch (true 73/27, a band edge)."""
    expected = parse_expected("70/30", SUBSETS)
    cumulative = np.cumsum(rng.multinomial(batch, [0.73, 0.27], size=(runs, looks)), axis=1)
    statuses = classify_counts(cumulative.reshape(-1, 2), expected, policy).reshape(runs, looks)
    return float(np.mean((statuses == "refuted").any(axis=1)))


MIX = {("rest", "default"): 0.4, ("rest", "canary"): 0.1, ("grpc", "default"): 0.4, ("grpc", "canary"): 0.1}


def _monitor_requests(monitor: SequentialMonitor, rows: list[dict[str, object]], batch: int) -> int | None:
    for start in range(0, len(rows), batch):
        if monitor.add(rows[start:start + batch]):
            return monitor.requests
    return None


def pooled_vs_alone(runs: int, batch: int, cap: int = 30_000) -> tuple[list[int | None], list[int | None]]:
    """Requests to decide a correct 70/30 at ±5 points, cells pooled and cells alone, one seeded
    stream per run (``default_rng(100 + i)``)."""
    expected = parse_expected("70/30", SUBSETS)
    cells = list(MIX)
    pooled: list[int | None] = []
    alone: list[int | None] = []
    for i in range(runs):
        rng = np.random.default_rng(100 + i)
        picks = rng.choice(len(cells), size=cap, p=list(MIX.values()))
        rows = [{"protocol": cells[k][0], "group": cells[k][1], "subset": str(rng.choice(SUBSETS, p=[0.7, 0.3])),
                 "ok": True} for k in picks]
        policy = SplitPolicy(tolerance=0.05)
        pooled.append(_monitor_requests(SequentialMonitor(dict.fromkeys(cells, expected), policy), rows, batch))
        routes = {cell: f"route-{j}" for j, cell in enumerate(cells)}  # one route each: nothing pooled
        alone.append(_monitor_requests(SequentialMonitor(dict.fromkeys(cells, expected), policy, routes=routes),
                                       rows, batch))
    return pooled, alone


def _spread(found: list[int | None]) -> str:
    decided = sorted(n for n in found if n is not None)
    undecided = len(found) - len(decided)
    if not decided:
        return f"none decided ({undecided} undecided)"
    text = f"median {np.median(decided):,.0f} ({decided[0]:,}–{decided[-1]:,})"
    return text + (f", {undecided} undecided within the cap" if undecided else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="simulated load tests per row")
    parser.add_argument("--batch", type=int, default=25, help="requests between looks")
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--pooled-runs", type=int, default=20, help="seeded load tests for the pooled comparison")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    policy = SplitPolicy()
    rng = np.random.default_rng(args.seed)
    print("canary: sequential (anytime-valid) split verification vs the fixed-sample plan")
    print(
        f"alpha {policy.alpha:g}, tolerance ±{100 * policy.tolerance:g} points, confidence "
        f"{100 * policy.confidence:g}%, power {100 * policy.power:g}%; a look every {args.batch} "
        f"requests; {args.runs} simulated load tests per row, each capped at 3× the plan"
    )
    print("plan n: `verify-split --plan` (verify the split and refute tolerance + 2 points, each with "
          "power 95%);\nn_verify: what verifying alone needs at a fixed n\n")
    header = (f"{'scenario':<26} {'decide':<8} {'plan n':>7} {'n_verify':>8} {'fixed rate':>10} "
              f"{'seq median':>10} {'p90':>7} {'rate':>6} {'wrong':>6} {'/plan':>6} {'/n_verify':>9}  target")
    print(header)
    print("-" * len(header))
    for label, text, truth, right, target in SCENARIOS:
        expected = parse_expected(text, SUBSETS)
        plan = plan_fixed(expected, policy)
        fixed = fixed_rate(text, truth, plan.n, args.runs, policy, right, rng)
        looks = int(np.ceil(3 * plan.n / args.batch))
        outcome, n = sequential_run(SequentialSplitTest(expected, policy), truth, args.runs, args.batch, looks, rng)
        good = outcome == right
        wrong = "refuted" if right == "verified" else "verified"
        median = float(np.median(np.where(good, n, np.inf)))
        p90 = float(np.percentile(np.where(good, n, np.inf), 90))
        ratio = median / plan.n
        met = ratio <= target + args.batch / plan.n  # a decision can only come at a look
        print(
            f"{label:<26} {right:<8} {plan.n:>7,} {plan.n_verify:>8,} {100 * fixed:>9.1f}% "
            f"{median:>10,.0f} {p90:>7,.0f} {100 * good.mean():>5.1f}% {100 * np.mean(outcome == wrong):>5.1f}% "
            f"{ratio:>6.2f} {median / plan.n_verify:>9.2f}  ≤ {target:g}× plan: {'yes' if met else 'NO'}"
        )
    print("\nerror rates at the guarantees' edges (sequential: every look until 3× the plan)")
    header = f"{'truth':<42} {'wrong decision':<15} {'fixed at plan n':>15} {'sequential':>10}  bound"
    print(header)
    print("-" * len(header))
    for label, text, truth, wrong, bound in EDGES:
        expected = parse_expected(text, SUBSETS)
        plan = plan_fixed(expected, policy)
        runs = 4 * args.runs
        fixed = fixed_rate(text, truth, plan.n, runs, policy, wrong, rng)
        outcome, _ = sequential_run(SequentialSplitTest(expected, policy), truth, runs, args.batch,
                                    int(np.ceil(3 * plan.n / args.batch)), rng)
        print(f"{label:<42} {wrong:<15} {100 * fixed:>14.2f}% {100 * np.mean(outcome == wrong):>9.2f}%  ≤ {bound}")
    plan = plan_fixed(parse_expected("70/30", SUBSETS), policy)
    peek = naive_peeking(policy, args.runs, args.batch, int(np.ceil(plan.n / args.batch)), rng)
    print(f"\nthe fixed verdict re-checked every {args.batch} requests up to n={plan.n:,} at a band edge (73/27): "
          f"false refuted {100 * peek:.1f}% (why the sequential test exists)")
    print("header routes: the exact zero-count bound is already anytime-valid, so both modes need the "
          "same 122\nresponses to verify, and a leak is refuted at its first wrong response.")
    pooled, alone = pooled_vs_alone(args.pooled_runs, args.batch)
    print(f"\n--until-verified on a correct 70/30 at ±5 points, cells at 40/10/40/10%, {args.pooled_runs} seeded "
          f"runs, a look every {args.batch} requests:")
    print(f"  four cells pooled: {_spread(pooled)} requests")
    print(f"  each cell alone:   {_spread(alone)} requests")
    print(f"\n({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
