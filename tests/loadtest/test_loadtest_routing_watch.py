"""Watching a routing change show in the traffic (loadtest.routing_watch): probes through a fake
ingress that answers by the old routing for a while, then by the new; attributed by calibration."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from canary.conventions import DEFAULT_HEADER, MODEL_NAME
from canary.errors import RequestFailedError
from loadtest.fingerprint import build_calibration
from loadtest.routing_watch import CELLS, watch_routing
from mesh.routing import expectations_from_manifest
from payloads import load_payloads

ROUTING = Path(__file__).resolve().parents[2] / "manifests" / "routing"
PAYLOADS = load_payloads()
VECTORS = {"resnet50": np.eye(1, 1000, 3, dtype=np.float32)[0], "resnet101": np.eye(1, 1000, 7, dtype=np.float32)[0]}
CALIBRATION = build_calibration({p.id: {fmt: VECTORS for fmt in ("instances", "b64")} for p in PAYLOADS}, 1e-5)


def _routing(name: str) -> Any:
    return expectations_from_manifest([ROUTING / name], list(CELLS), header=DEFAULT_HEADER, model_name=MODEL_NAME,
                                      known_subsets=["resnet50", "resnet101"])


class Ingress:
    """Answers by ``old`` until ``switch_at`` probes were sent, then by ``new``; a clock that moves
    10 ms a probe."""

    def __init__(self, old: dict[str, Any], new: dict[str, Any], switch_at: int, seed: int = 0,
                 fail_every: int = 0) -> None:
        self.old, self.new, self.switch_at, self.fail_every = old, new, switch_at, fail_every
        self.rng = np.random.default_rng(seed)
        self.sent: list[tuple[str, tuple[tuple[str, str], ...]]] = []
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def ask(self, url: str, protocol: str, body: bytes, headers: Sequence[tuple[str, str]]) -> Any:
        self.now += 0.01
        self.sent.append((protocol, tuple(headers)))
        if self.fail_every and len(self.sent) % self.fail_every == 0:
            raise RequestFailedError("503 no healthy upstream")
        group = "canary" if headers else "default"
        routing = self.old if len(self.sent) <= self.switch_at else self.new
        shares = routing[(protocol, group)]
        subset = self.rng.choice(sorted(shares), p=[shares[s] for s in sorted(shares)])
        return VECTORS[subset]


def _shares(routing: Any) -> dict[Any, dict[str, float]]:
    return {cell: dict(routing.expectation(cell).shares) for cell in CELLS}


@pytest.mark.parametrize(("old", "new", "most"), [
    ("virtualservice-weight-100.yaml", "virtualservice-focused-routing.yaml", 50 + 4),  # one canary answer decides
    ("virtualservice-weight-100.yaml", "virtualservice-weight-70.yaml", 50 + 80),
    ("virtualservice-weight-70.yaml", "virtualservice-weight-100.yaml", 50 + 200),
])
def test_a_change_is_observed_soon_after_it_happens(old: str, new: str, most: int) -> None:
    before, after = _routing(old), _routing(new)
    ingress = Ingress(_shares(before), _shares(after), switch_at=50, seed=3)
    seen = watch_routing("http://ingress", before, after, CALIBRATION, PAYLOADS, header=DEFAULT_HEADER,
                         model_name=MODEL_NAME, clock=ingress.clock, ask=ingress.ask)
    assert seen.observed, seen.reason
    assert 50 < seen.probes <= most
    assert seen.after_apply_s == pytest.approx(0.01 * seen.probes)
    # only the groups the change alters are probed, each with its own header
    probed = {(protocol, "canary" if headers else "default") for protocol, headers in ingress.sent}
    assert probed == set(seen_changed(before, after))
    assert all(headers in ((), (DEFAULT_HEADER,)) for _, headers in ingress.sent)


def seen_changed(before: Any, after: Any) -> list[Any]:
    return [c for c in CELLS if _shares(before)[c] != _shares(after)[c]]


def test_no_change_in_the_split_is_observed_at_once_without_a_probe() -> None:
    same = _routing("virtualservice-weight-70.yaml")
    ingress = Ingress(_shares(same), _shares(same), switch_at=0)
    seen = watch_routing("http://ingress", same, same, CALIBRATION, PAYLOADS, header=DEFAULT_HEADER,
                         model_name=MODEL_NAME, clock=ingress.clock, ask=ingress.ask)
    assert seen.observed and ingress.sent == []


def test_a_change_that_never_comes_is_given_up_at_the_budget() -> None:
    before, after = _routing("virtualservice-weight-100.yaml"), _routing("virtualservice-weight-70.yaml")
    ingress = Ingress(_shares(before), _shares(after), switch_at=10**9, fail_every=7)
    seen = watch_routing("http://ingress", before, after, CALIBRATION, PAYLOADS, header=DEFAULT_HEADER,
                         model_name=MODEL_NAME, clock=ingress.clock, ask=ingress.ask, budget=300)
    assert not seen.observed and seen.final
    assert len(ingress.sent) == 300
    assert "not observed" in seen.reason


def test_the_deadline_ends_the_watch() -> None:
    before, after = _routing("virtualservice-weight-100.yaml"), _routing("virtualservice-weight-70.yaml")
    ingress = Ingress(_shares(before), _shares(after), switch_at=10**9)
    seen = watch_routing("http://ingress", before, after, CALIBRATION, PAYLOADS, header=DEFAULT_HEADER,
                         model_name=MODEL_NAME, clock=ingress.clock, ask=ingress.ask, deadline_s=1.0)
    assert not seen.observed
    assert 100 <= len(ingress.sent) <= 102  # 10 ms a probe
