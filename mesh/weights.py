"""A VirtualService with the canary's weight set, for progressive delivery. Pure.

:func:`with_canary_weight` takes the VirtualService under test as a document
(the YAML mapping) and returns a copy in which every HTTP route that serves the
stable subset (alone, or split with the canary) sends ``percent``% to the canary
and the rest to the stable subset, REST and gRPC routes alike. Everything else
of a route (matches, timeouts, retries, faults, headers) is kept; routes that
send only to the canary (a header-matched canary route) or elsewhere are left
as they are. The destinations keep their host and port.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from canary.errors import UsageError

__all__ = ["canary_routes", "with_canary_weight"]


def _destinations(route: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [d for d in route.get("route") or [] if isinstance(d, Mapping)]


def _subset(destination: Mapping[str, Any]) -> str | None:
    target = destination.get("destination") or {}
    return target.get("subset") if isinstance(target, Mapping) else None


def canary_routes(document: Mapping[str, Any], stable: str, canary: str) -> list[int]:
    """Indices of the ``http`` routes a rollout sets weights on: each sends to ``stable``
    and to nothing but ``stable`` and ``canary``."""
    found = []
    for index, route in enumerate((document.get("spec") or {}).get("http") or []):
        subsets = {_subset(d) for d in _destinations(route)}
        if stable in subsets and subsets <= {stable, canary}:
            found.append(index)
    return found


def with_canary_weight(document: Mapping[str, Any], stable: str, canary: str, percent: int) -> dict[str, Any]:
    """The VirtualService ``document`` with ``percent``% of each stable route's traffic to
    ``canary`` (see the module docstring); :class:`UsageError` when no route serves ``stable``."""
    if not 0 <= percent <= 100 or int(percent) != percent:
        raise UsageError(f"a rollout step is a whole percentage from 0 to 100, got {percent}")
    if document.get("kind") != "VirtualService":
        raise UsageError(f"the rollout needs a VirtualService, got a {document.get('kind') or 'document'}")
    indices = canary_routes(document, stable, canary)
    name = (document.get("metadata") or {}).get("name", "?")
    if not indices:
        raise UsageError(
            f"VirtualService {name} has no http route that sends to subset {stable!r} (and only to "
            f"{stable!r} and {canary!r}); give the VirtualService under test with --from-manifest"
        )
    out = copy.deepcopy(dict(document))
    for index in indices:
        route = out["spec"]["http"][index]
        by_subset = {_subset(d): d for d in _destinations(route)}
        template = by_subset[stable]
        pair = []
        for subset, weight in ((stable, 100 - percent), (canary, percent)):
            entry = copy.deepcopy(dict(by_subset.get(subset) or template))
            entry["destination"] = {**entry["destination"], "subset": subset}
            entry["weight"] = int(weight)
            pair.append(entry)
        route["route"] = pair
    return out
