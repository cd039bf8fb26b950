"""The routing-change detector: table of changes, seeded simulations of its error rate and delay."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from canary.errors import UsageError
from canary.stats import Expectation
from loadtest.propagation import (
    DEFAULT_EPS,
    PropagationWatch,
    first_alarms,
    group_changes,
    probes_to_observe,
)
from mesh.routing import expectations_from_manifest

ROUTING = Path(__file__).resolve().parents[2] / "manifests" / "routing"
CELLS = [("rest", "default"), ("rest", "canary"), ("grpc", "default"), ("grpc", "canary")]
DEFAULT, CANARY = ("rest", "default"), ("rest", "canary")
STABLE, NEW = "resnet50", "resnet101"


def split(stable: float) -> Expectation:
    return Expectation({STABLE: stable, NEW: 1 - stable})


def manifest(name: str):
    return expectations_from_manifest([ROUTING / name], CELLS, header=("user-group", "canary"),
                                      model_name="image_classifier", known_subsets=[STABLE, NEW])


def feed(watch: PropagationWatch, cell, answers, start: float = 0.0, step: float = 0.1):
    """Answers one by one (``step`` s apart); the first final observation, or None."""
    for i, subset in enumerate(answers):
        found = watch.observe(cell, subset, start + i * step)
        if found is not None:
            return found
    return None


def seventy_to_hundred_exact() -> int:
    """Independently of the module: the first n at which the mixture over starts reaches 1/alpha
    when every answer from the first is stable and the new routing is 100/0."""
    r = (1 - DEFAULT_EPS) / 0.7
    for n in range(1, 100):
        m = sum(r ** (n - k + 1) / (k * (k + 1)) for k in range(1, n + 1)) + 1 / (n + 1)
        if m >= 100:
            return n
    raise AssertionError("never")


# ---- the table -----------------------------------------------------------------------------------


def test_header_route_flip_one_canary_answer_decides() -> None:
    watch = PropagationWatch(manifest("virtualservice-weight-100.yaml"),
                             manifest("virtualservice-focused-routing.yaml"), applied_at=100.0)
    assert watch.changed == (("rest", "canary"), ("grpc", "canary"))
    assert feed(watch, DEFAULT, [STABLE] * 10, start=100.0) is None  # unchanged group: no evidence
    assert feed(watch, CANARY, [STABLE] * 20, start=101.0) is None  # the old routing still live
    found = watch.observe(CANARY, NEW, 103.5)
    assert found is not None and found.observed
    assert (found.deciding_probe, found.change_probe, found.probes, found.informative) == (31, 31, 31, 21)
    assert found.after_apply_s == pytest.approx(3.5) and found.change_after_apply_s == pytest.approx(3.5)
    assert found.log_evidence >= found.log_threshold == pytest.approx(math.log(100))
    assert "3.50 s after the apply" in found.reason
    assert watch.observe(CANARY, STABLE, 104.0) is found  # final: later probes no longer count
    json.dumps(found.to_dict())


def test_hundred_to_seventy_decides_at_the_first_canary_answer() -> None:
    watch = PropagationWatch(manifest("virtualservice-weight-100.yaml"),
                             manifest("virtualservice-weight-70.yaml"))
    assert len(watch.changed) == 4
    assert feed(watch, DEFAULT, [STABLE] * 30) is None
    found = feed(watch, DEFAULT, [STABLE, STABLE, NEW], start=3.0)
    assert found is not None and found.observed and found.deciding_probe == 33
    assert found.change_probe == 33  # stable answers never point at 70/30 over 100/0


def test_seventy_to_hundred_needs_a_run_of_stable_answers() -> None:
    needed = seventy_to_hundred_exact()
    assert needed == 14  # the plain SPRT's 13 (log 100 / log(1/0.7) = 12.9) plus the unknown start
    watch = PropagationWatch({DEFAULT: split(0.7)}, {DEFAULT: split(1.0)})
    assert feed(watch, DEFAULT, [STABLE] * (needed - 1)) is None
    found = watch.observe(DEFAULT, STABLE, 9.0)
    assert found is not None and found.observed and found.deciding_probe == needed
    # one canary answer (impossible under 100/0) pushes the evidence back: the run starts again
    watch = PropagationWatch({DEFAULT: split(0.7)}, {DEFAULT: split(1.0)})
    found = feed(watch, DEFAULT, [STABLE] * 10 + [NEW] + [STABLE] * 30)
    assert found is not None and found.deciding_probe > 11 + 13 and found.change_probe == 12


def test_seventy_to_fifty_is_not_seen_in_old_traffic_and_is_seen_in_new() -> None:
    watch = PropagationWatch({DEFAULT: split(0.7)}, {DEFAULT: split(0.5)})
    old = ([STABLE] * 7 + [NEW] * 3) * 30
    assert feed(watch, DEFAULT, old) is None
    assert watch.result().status == "watching" and watch.result().log_evidence < 0
    found = feed(watch, DEFAULT, [STABLE, NEW] * 200, start=30.0)
    assert found is not None and found.observed and 290 < found.change_probe <= found.deciding_probe  # the last 3 old answers were canary


def test_no_group_changes_is_observed_at_once() -> None:
    watch = PropagationWatch(manifest("virtualservice-weight-70.yaml"),
                             manifest("virtualservice-weight-70.yaml"), applied_at=5.0)
    assert watch.changed == ()
    found = watch.result()
    assert found.observed and found.after_apply_s == 0 and found.deciding_probe is None
    assert "nothing to wait for" in found.reason
    assert watch.observe(DEFAULT, NEW, 6.0) is found


def test_evidence_per_answer() -> None:
    flip = group_changes({CANARY: split(1.0)}, {CANARY: split(0.0)})[CANARY].log_factor
    assert flip[NEW] == pytest.approx(math.log((1 - DEFAULT_EPS) / DEFAULT_EPS))
    assert flip[STABLE] == pytest.approx(math.log(DEFAULT_EPS))
    down = group_changes({DEFAULT: split(1.0)}, {DEFAULT: split(0.7)})[DEFAULT].log_factor
    assert down == pytest.approx({STABLE: math.log(0.7), NEW: math.log(0.3 / DEFAULT_EPS)})
    assert not group_changes({DEFAULT: split(0.7)}, {DEFAULT: split(0.7)})[DEFAULT].changed


# ---- edge cases ----------------------------------------------------------------------------------


def test_unknown_failed_and_foreign_answers_carry_no_evidence() -> None:
    watch = PropagationWatch({DEFAULT: split(1.0)}, {DEFAULT: split(0.7)})
    assert feed(watch, DEFAULT, [None, "unknown", "error", "resnet152"] * 50) is None
    now = watch.result(at=20.0)
    assert (now.probes, now.informative, now.log_evidence) == (200, 0, 0.0)
    (group,) = now.groups
    assert group.probes == 200 and group.attributed == 50 and group.counts == {"resnet152": 50}
    found = watch.observe(DEFAULT, NEW, 21.0)
    assert found is not None and found.observed and found.change_probe == 201


def test_changed_groups_without_probes_are_named() -> None:
    watch = PropagationWatch(manifest("virtualservice-weight-100.yaml"),
                             manifest("virtualservice-focused-routing.yaml"), budget=50)
    found = feed(watch, DEFAULT, [STABLE] * 60)
    assert found is not None and found.status == "not_observed" and found.probes == 50
    assert "no probe went to a route group whose split changes (rest/canary, grpc/canary)" in found.reason
    by_group = {(g.protocol, g.group): g for g in found.groups}
    assert by_group[CANARY].probes == 0 and by_group[DEFAULT].probes == 50


def test_budget_deadline_and_give_up() -> None:
    old, new = {DEFAULT: split(0.7)}, {DEFAULT: split(1.0)}
    budget = PropagationWatch(old, new, budget=400)
    found = feed(budget, DEFAULT, ([STABLE] * 7 + [NEW] * 3) * 50)
    assert found is not None and found.status == "not_observed" and found.probes == 400
    assert "not observed after 39.9 s / 400 probes" in found.reason and "resnet50 280" in found.reason

    late = PropagationWatch(old, new, applied_at=10.0, deadline_s=60.0)
    assert late.observe(DEFAULT, NEW, 20.0) is None
    assert late.result(at=30.0).status == "watching"
    found = late.result(at=70.0)  # no probe came back before the deadline: still ends it
    assert found.status == "not_observed" and found.after_apply_s == 60.0
    assert late.observe(DEFAULT, STABLE, 71.0) is found

    stopped = PropagationWatch(old, new, applied_at=0.0, deadline_s=60.0)
    assert stopped.observe(DEFAULT, STABLE, 61.0) is not None  # a probe past the deadline ends it
    given = PropagationWatch(old, new).give_up(12.0)
    assert given.status == "not_observed" and not given.observed and given.final


def test_usage_errors() -> None:
    old, new = {DEFAULT: split(0.7)}, {DEFAULT: split(1.0)}
    for kwargs in ({"alpha": 0.0}, {"alpha": 1.0}, {"eps": 0.0}, {"eps": 0.5}, {"budget": 0},
                   {"deadline_s": 0.0}):
        with pytest.raises(UsageError):
            PropagationWatch(old, new, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="neither routing describes"):
        PropagationWatch(old, new).observe(("grpc", "canary"), STABLE, 1.0)


# ---- simulations ---------------------------------------------------------------------------------


def false_alarms(old, new, cell, truth: dict[str, float], runs: int = 2000, probes: int = 300,
                 seed: int = 7, **kwargs) -> int:
    """Runs (of ``probes`` probes answered by ``truth``) in which the watch says "observed"."""
    rng = np.random.default_rng(seed)
    subsets, shares = list(truth), list(truth.values())
    alarms = 0
    for _ in range(runs):
        watch = PropagationWatch(old, new, **kwargs)
        picks = rng.choice(len(subsets), size=probes, p=shares)
        alarms += feed(watch, cell, [subsets[k] for k in picks]) is not None
    return alarms


def margin(runs: int, alpha: float) -> float:
    return runs * alpha + 3 * math.sqrt(runs * alpha * (1 - alpha))


@pytest.mark.parametrize(("old", "new", "truth", "eps"), [
    (0.7, 1.0, {STABLE: 0.7, NEW: 0.3}, DEFAULT_EPS),  # long runs of stable answers under the old
    (0.7, 0.5, {STABLE: 0.7, NEW: 0.3}, DEFAULT_EPS),  # small steps: Ville's bound nearly tight
    (1.0, 0.7, {STABLE: 0.99, NEW: 0.01}, 0.01),  # the old routing misrouting eps of its answers
])
def test_false_alarm_rate_under_the_old_routing_is_at_most_alpha(old, new, truth, eps) -> None:
    alarms = false_alarms({DEFAULT: split(old)}, {DEFAULT: split(new)}, DEFAULT, truth, eps=eps)
    assert alarms <= margin(2000, 0.01)


def delays(old: float, new: float, before: int, runs: int = 400, seed: int = 3) -> np.ndarray:
    """Probes after the change until the watch observes it (``before`` old probes first)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(runs):
        watch = PropagationWatch({DEFAULT: split(old)}, {DEFAULT: split(new)})
        answers = [STABLE if u < old else NEW for u in rng.random(before)]
        answers += [STABLE if u < new else NEW for u in rng.random(2000)]
        found = feed(watch, DEFAULT, answers)
        assert found is not None and found.observed
        out.append(found.deciding_probe - before)
    return np.array(out)


def test_delay_after_hundred_to_seventy_is_the_first_canary_answer() -> None:
    waited = delays(1.0, 0.7, before=20)
    assert waited.min() >= 1
    assert waited.mean() == pytest.approx(1 / 0.3, abs=0.5)  # geometric(0.3)
    assert np.mean(waited == 1) == pytest.approx(0.3, abs=0.07)


@pytest.mark.parametrize(("old", "new", "before"), [(0.7, 1.0, 20), (0.7, 0.5, 0), (0.7, 0.5, 20)])
def test_delay_matches_probes_to_observe(old: float, new: float, before: int) -> None:
    waited = delays(old, new, before=before)
    need = probes_to_observe({DEFAULT: split(old)}, {DEFAULT: split(new)}, old_probes=before)
    assert need.undecided == 0 and waited.mean() == pytest.approx(need.mean, rel=0.12)
    assert np.median(waited) == pytest.approx(need.median, rel=0.15)
    assert need.wald == pytest.approx(need.mean, rel=0.25)  # Wald (no overshoot): about right


def test_probes_to_observe_table() -> None:
    old70, old100 = {DEFAULT: split(0.7)}, {DEFAULT: split(1.0)}
    assert probes_to_observe(old70, {DEFAULT: split(1.0)}).median == seventy_to_hundred_exact()
    flip = probes_to_observe({CANARY: split(1.0)}, {CANARY: split(0.0)}, old_probes=50)
    assert (flip.median, flip.at_quantile) == (1, 1)
    down = probes_to_observe(old100, {DEFAULT: split(0.7)}, old_probes=20)
    assert down.at_quantile == math.ceil(math.log(0.05) / math.log(0.7))  # 95% see a canary by 9
    none = probes_to_observe(old70, old70)
    assert none.median == 0 and none.nats_per_probe == 0
    # probes in an unchanged group dilute the evidence: twice the probes when half go there
    both = {DEFAULT: split(0.7), CANARY: split(1.0)}
    half = probes_to_observe(both, {DEFAULT: split(1.0), CANARY: split(1.0)})
    assert half.nats_per_probe == pytest.approx(0.5 * math.log(1 / 0.7), rel=1e-5)


def test_first_alarms_is_the_watch() -> None:
    """The vectorised statistic (used to size budgets) decides where the watch does."""
    old = {DEFAULT: split(0.7), CANARY: split(1.0), ("grpc", "default"): split(0.7)}
    new = {DEFAULT: split(0.5), CANARY: split(0.0), ("grpc", "default"): split(0.7)}
    changes = group_changes(old, new)
    rng = np.random.default_rng(11)
    cells = list(old)
    answers = [STABLE, NEW, None]
    for _ in range(60):
        stream = [(cells[rng.integers(3)], answers[rng.choice(3, p=[0.6, 0.3, 0.1])])
                  for _ in range(rng.integers(2, 80))]
        watch = PropagationWatch(old, new)
        found = next((i for i, (c, s) in enumerate(stream) if watch.observe(c, s, float(i))), -1)
        x = np.array([[changes[c].log_factor.get(s, 0.0) if s else 0.0 for c, s in stream]])
        info = np.array([[s is not None and s in changes[c].log_factor for c, s in stream]])
        alarms, _ = first_alarms(x, info, 0.01)
        assert alarms[0] == found
        split_at = len(stream) // 2  # in two blocks, carrying the state, it is the same
        head, state = first_alarms(x[:, :split_at], info[:, :split_at], 0.01)
        tail, _ = first_alarms(x[:, split_at:], info[:, split_at:], 0.01, state)
        joined = head[0] if head[0] >= 0 else (split_at + tail[0] if tail[0] >= 0 else -1)
        assert joined == found
