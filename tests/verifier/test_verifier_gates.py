"""The rollout's gates over seeded samples: each fails only when its interval lies beyond the limit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from canary.errors import UsageError
from canary.rundir.document import MeshRecord, RunDocument, SubsetCounts
from verifier.gates import (
    GateLimits,
    evaluate_gates,
    gates_passed,
    mesh_error_counts,
    parse_duration_ms,
)


def _records(rng: np.random.Generator, *, n: int = 600, canary_share: float = 0.3, canary_delay: float = 0.0,
             canary_fails: float = 0.0) -> pd.DataFrame:
    rows = []
    for i in range(n):
        canary = rng.random() < canary_share
        failed = canary and rng.random() < canary_fails
        latency = rng.gamma(4.0, 2.5) + (canary_delay if canary else 0.0)
        rows.append({"protocol": "rest" if i % 2 else "grpc", "ok": not failed,
                     "subset": "error" if failed else ("resnet101" if canary else "resnet50"),
                     "latency_ms": latency})
    return pd.DataFrame(rows)


def _by_name(records: pd.DataFrame, **limits: float) -> dict[str, object]:
    gates = evaluate_gates(records, stable="resnet50", canary="resnet101", limits=GateLimits(**limits))
    return {g.name: g for g in gates}


def test_a_healthy_canary_passes_every_gate() -> None:
    gates = _by_name(_records(np.random.default_rng(1)))
    assert set(gates) == {"error rate", "latency shift (rest)", "p99 ratio (rest)", "latency shift (grpc)",
                          "p99 ratio (grpc)"}
    assert all(g.status == "pass" for g in gates.values())  # type: ignore[attr-defined]
    assert gates_passed(list(gates.values()))  # type: ignore[arg-type]


def test_an_erroring_canary_fails_the_error_gate_with_its_interval() -> None:
    gate = _by_name(_records(np.random.default_rng(2), canary_fails=1.0))["error rate"]
    assert gate.status == "fail" and gate.low > 0.2 and gate.high < 0.4  # type: ignore[attr-defined]
    assert "shown beyond the limit" in gate.reason  # type: ignore[attr-defined]


def test_a_few_errors_are_not_shown_beyond_one_percent() -> None:
    records = _records(np.random.default_rng(3), n=200)
    records.loc[:1, ["ok", "subset"]] = [False, "error"]  # 2 of 200: 1%, interval 0.1–3.6%
    gate = _by_name(records)["error rate"]
    assert gate.status == "pass" and "too few responses to tell" in gate.reason  # type: ignore[attr-defined]


def test_a_slow_canary_fails_the_latency_gates() -> None:
    gates = _by_name(_records(np.random.default_rng(4), canary_delay=60.0))
    for protocol in ("rest", "grpc"):
        shift, ratio = gates[f"latency shift ({protocol})"], gates[f"p99 ratio ({protocol})"]
        assert shift.status == "fail" and shift.low > 20  # type: ignore[attr-defined]
        assert ratio.status == "fail" and ratio.low > 1.5  # type: ignore[attr-defined]


def test_a_shift_inside_the_limit_passes() -> None:
    gates = _by_name(_records(np.random.default_rng(5), n=2000, canary_delay=5.0), max_latency_shift_ms=20)
    shift = gates["latency shift (rest)"]
    assert shift.status == "pass" and shift.high < 20 and "within the limit" in shift.reason  # type: ignore[attr-defined]


def test_no_stable_responses_is_not_judged_not_failed() -> None:
    gates = _by_name(_records(np.random.default_rng(6), canary_share=1.0))
    assert gates["latency shift (rest)"].status == "not judged"  # type: ignore[attr-defined]
    assert gates_passed(list(gates.values()))  # type: ignore[arg-type]


def test_small_samples_say_the_p99_is_about_the_maximum() -> None:
    gate = _by_name(_records(np.random.default_rng(7), n=120))["p99 ratio (rest)"]
    assert "about their maximum" in gate.reason  # type: ignore[attr-defined]


def test_the_bootstrap_is_seeded() -> None:
    records = _records(np.random.default_rng(8))
    assert _by_name(records)["p99 ratio (grpc)"] == _by_name(records)["p99 ratio (grpc)"]


@pytest.mark.parametrize(("text", "ms"), [("20ms", 20.0), ("0.5s", 500.0), ("15", 15.0), (" 2.5 ms", 2.5)])
def test_durations(text: str, ms: float) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["soon", "-3ms", "nan", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration_ms(text)


@pytest.mark.parametrize("limits", [{"max_error_rate": 1.5}, {"max_p99_ratio": 0}, {"confidence": 0.4},
                                    {"max_latency_shift_ms": -1}])
def test_bad_limits(limits: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        GateLimits(**limits)


def test_mesh_error_counts_from_the_run_counters() -> None:
    before = {"resnet101": SubsetCounts(subset="resnet101", requests=10, by_class={"2xx": 10})}
    after = {"resnet101": SubsetCounts(subset="resnet101", requests=40, by_class={"2xx": 12, "4xx": 28}),
             "resnet50": SubsetCounts(subset="resnet50", requests=70, by_class={"2xx": 70}),
             "": SubsetCounts(subset="", requests=0)}
    document = RunDocument.model_construct(mesh=MeshRecord(counters_before=before, counters_after=after))
    assert mesh_error_counts(document) == {"resnet101": (28, 30), "resnet50": (0, 70)}
    reset = MeshRecord(counters_before=before, counters_after=after, counters_reset=True)
    assert mesh_error_counts(RunDocument.model_construct(mesh=reset)) == {}  # a reset: after − before means nothing
