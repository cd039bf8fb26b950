"""Waiting until a routing change shows in the traffic through the ingress (on a cluster).

After ``canary demo --kube`` or ``canary rollout --kube`` applies a
VirtualService, Istio takes seconds to push it to the ingress gateway. The
watch sends probes through the ingress, in turn to each route group whose
split the change alters (protocol x header group), attributes each answer
with the calibration the previous step made, and feeds it to the change
detector (:class:`~loadtest.propagation.PropagationWatch`: a false
"observed" at most ``alpha`` however long it watches), until the new routing
is observed, or the deadline or the probe budget runs out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from canary.conventions import GROUPS, Cell
from canary.errors import FingerprintError, RequestFailedError, UsageError
from loadtest.fingerprint import Calibration, attribute
from loadtest.predict import ask_ingress
from loadtest.propagation import DEFAULT_ALPHA, Observation, PropagationWatch, Routing
from mesh.routing import ManifestExpectations, VirtualService, expectations_from_virtual_service
from payloads import PayloadSet, grpc_request_bytes

__all__ = ["CELLS", "Ask", "routing_of", "watch_routing"]

CELLS: tuple[Cell, ...] = tuple((protocol, group) for protocol in ("rest", "grpc") for group in GROUPS)
Ask = Callable[[str, Any, bytes, Sequence[tuple[str, str]]], npt.NDArray[np.float32]]


def routing_of(service: VirtualService, *, header: tuple[str, str], model_name: str,
               subsets: Sequence[str]) -> ManifestExpectations:
    """Each route group's split under ``service``."""
    return expectations_from_virtual_service(service, list(CELLS), header=header, model_name=model_name,
                                             known_subsets=subsets)


def watch_routing(
    ingress_url: str,
    old: Routing,
    new: Routing,
    calibration: Calibration,
    payloads: PayloadSet,
    *,
    header: tuple[str, str],
    model_name: str,
    deadline_s: float = 120.0,
    budget: int = 2000,
    alpha: float = DEFAULT_ALPHA,
    timeout: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    ask: Ask | None = None,
) -> Observation:
    """Probe ``ingress_url`` until ``new`` routing is observed (see the module docstring).

    Each probe is the first payload and format the calibration tells the
    subsets apart by, over the group's protocol, with the header for the
    canary group. A failed request, or an answer no calibrated subset
    explains, carries no evidence."""
    started = clock()
    watch = PropagationWatch(old, new, alpha=alpha, applied_at=started, budget=budget, deadline_s=deadline_s)
    if not watch.changed:
        return watch.result(started)
    payload_id, fmt = _probe_pair(calibration, payloads)
    payload = next(p for p in payloads if p.id == payload_id)
    bodies = {"rest": payload.body(fmt), "grpc": grpc_request_bytes(payload, fmt, model_name)}
    send = ask or (lambda url, protocol, body, headers: ask_ingress(
        url, protocol, body, headers, model_name=model_name, timeout=timeout))
    cells = watch.changed
    for sent in range(budget):
        protocol, group = cells[sent % len(cells)]
        headers = [header] if group == "canary" else []
        try:
            vector = send(ingress_url, protocol, bodies[protocol], headers)
            found = attribute(calibration, payload_id, fmt, vector)
            subset: str | None = found.subset if found.subset in calibration.subsets else None
        except (RequestFailedError, FingerprintError, UsageError):  # refused, failed, unreadable: no evidence
            subset = None
        observation = watch.observe((protocol, group), subset, clock())
        if observation is not None and observation.final:
            return observation
        if clock() - started > deadline_s:
            break
    return watch.give_up(clock())


def _probe_pair(calibration: Calibration, payloads: PayloadSet) -> tuple[str, str]:
    ids = {p.id for p in payloads}
    for payload_id, fmt in calibration.usable:
        if payload_id in ids:
            return payload_id, fmt
    raise FingerprintError("the calibration tells the subsets apart by no payload of this run; calibrate again")
