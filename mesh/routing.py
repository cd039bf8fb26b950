"""The expected outcome of each request group, read off a VirtualService.

For every ``(protocol, group)`` of a run the VirtualService's ``http`` routes
are evaluated in order, as Envoy does, for the requests that group sent: a
REST ``POST /v1/models/<model>:predict`` (and every other REST path the run's
records show), a gRPC ``POST /tensorflow.serving.PredictionService/Predict``;
the canary group carries the run's canary header (``user-group: canary``),
the default group no header. The first route with a matching ``match`` entry
(or no ``match`` at all) decides, and its destinations' weights, summed per
DestinationRule subset, are the expectation; the other known subsets are
expected at 0 (any response from them is a wrong-subset response).

Matching follows Istio: a ``match`` entry holds when all its conditions hold
(``uri`` exact / prefix / regex — a regex must match the whole path, as RE2
``FullMatch`` does in Envoy —, ``method``, ``headers`` by lower-cased name;
``ignoreUriCase`` folds the path's case); entries of one route are OR-ed.
Requests also carry ``content-type`` (``application/json`` for REST,
``application/grpc`` for gRPC) for a header match on it.

Refused, with a message saying why:

* a matched route whose destination names no subset (the base VirtualService):
  the split between versions is then whatever the Service's endpoints are,
  so there is no expected subset split to verify;
* a request group no route matches (Envoy answers 404);
* paths of one protocol and group that different routes decide differently
  (one verdict per protocol and group needs one expectation).

The objects come from :func:`mesh.manifests.load_manifests`, the same
validating parser the mesh uses (pure but for reading the files), so the
verifier and the load test's sequential stop read a VirtualService exactly
as the local mesh applies it. Evaluation is pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from canary.conventions import GRPC_PREDICT_METHOD, Cell, order_cells, rest_predict_path
from canary.errors import ManifestError, UsageError
from canary.stats.expectations import Expectation
from mesh.manifests import Target, load_manifests, parse_objects
from mesh.model import HTTPMatch, HTTPRoute, StringMatch, VirtualService

__all__ = [
    "CONTENT_TYPES",
    "CellExpectation",
    "ManifestExpectations",
    "RequestShape",
    "expectations_from_manifest",
    "expectations_from_virtual_service",
    "load_virtual_service",
    "matches",
    "recorded_virtual_service",
    "representative_path",
    "route_for",
]

CONTENT_TYPES = {"rest": "application/json", "grpc": "application/grpc"}


@dataclass(frozen=True)
class RequestShape:
    """What the route matching sees of one request."""

    protocol: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    method: str = "POST"


@dataclass(frozen=True)
class CellExpectation:
    """The expectation of one protocol x group, and the route it comes from."""

    cell: Cell
    expectation: Expectation
    route: str  # the route's name, or "http[i]"
    paths: tuple[str, ...]


@dataclass(frozen=True)
class ManifestExpectations:
    """Expectations per cell from one VirtualService."""

    source: str  # file of the VirtualService
    name: str  # Kind/namespace/name
    cells: Mapping[Cell, CellExpectation]
    stable: str  # first destination of the route the default group's requests take

    def expectation(self, cell: Cell) -> Expectation:
        return self.cells[cell].expectation


def representative_path(protocol: str, model_name: str) -> str:
    """The predict path a request of ``protocol`` uses (unversioned)."""
    if protocol == "grpc":
        return GRPC_PREDICT_METHOD
    if protocol == "rest":
        return rest_predict_path(model_name)
    raise UsageError(f"unknown protocol {protocol!r} in the run; expected rest or grpc")


def _string_matches(match: StringMatch, value: str, *, ignore_case: bool = False) -> bool:
    if match.kind == "regex":
        return re.fullmatch(match.value, value, flags=re.IGNORECASE if ignore_case else 0) is not None
    wanted, seen = (match.value.lower(), value.lower()) if ignore_case else (match.value, value)
    return seen == wanted if match.kind == "exact" else seen.startswith(wanted)


def matches(match: HTTPMatch, request: RequestShape) -> bool:
    """Whether one ``http[].match[]`` entry holds for ``request`` (all conditions)."""
    if match.uri is not None and not _string_matches(
        match.uri, request.path, ignore_case=match.ignore_uri_case
    ):
        return False
    if match.method is not None and not _string_matches(match.method, request.method):
        return False
    for name, condition in match.headers:
        value = request.headers.get(name)
        if value is None or not _string_matches(condition, value):
            return False
    return True


def route_for(service: VirtualService, request: RequestShape) -> tuple[int, HTTPRoute] | None:
    """The first route of ``service`` that ``request`` matches (index, route), or None."""
    for index, route in enumerate(service.http):
        if not route.match or any(matches(m, request) for m in route.match):
            return index, route
    return None


def _route_label(index: int, route: HTTPRoute) -> str:
    return route.name or f"http[{index}]"


def _expectation(
    service: VirtualService, index: int, route: HTTPRoute, known_subsets: Sequence[str]
) -> Expectation:
    weights: dict[str, float] = {}
    for target in route.route:
        if not target.destination.subset:
            raise UsageError(
                f"{service.source}: {service.ref}: route {_route_label(index, route)} sends traffic to "
                f"host {target.destination.host} without a subset, so which version answers is up to "
                "the Service's endpoints and there is no subset split to verify; give a VirtualService "
                "whose destinations name DestinationRule subsets (e.g. "
                "manifests/routing/virtualservice-weight-70.yaml), or --expected"
            )
        subset = target.destination.subset
        weights[subset] = weights.get(subset, 0.0) + float(target.weight)
    total = sum(weights.values())
    if total <= 0:
        raise UsageError(
            f"{service.source}: {service.ref}: route {_route_label(index, route)} gives every "
            "destination weight 0, so it routes nothing"
        )
    for subset in known_subsets:
        weights.setdefault(subset, 0.0)
    # stable first: destinations in the manifest's order, positive weights ahead of zero ones
    ordered = sorted(weights, key=lambda s: weights[s] == 0)
    return Expectation({s: weights[s] / total for s in ordered})


def _request(protocol: str, group: str, path: str, header: tuple[str, str]) -> RequestShape:
    headers = {"content-type": CONTENT_TYPES.get(protocol, "application/json")}
    if group == "canary":
        headers[header[0].lower()] = header[1]
    elif group != "default":
        raise UsageError(f"unknown request group {group!r}; the groups are default and canary")
    return RequestShape(protocol=protocol, path=path, headers=headers)


def expectations_from_virtual_service(
    service: VirtualService,
    cells: Mapping[Cell, Sequence[str]] | Sequence[Cell],
    *,
    header: tuple[str, str],
    model_name: str,
    known_subsets: Sequence[str] = (),
) -> ManifestExpectations:
    """The expectation of every cell (pure).

    ``cells`` maps each ``(protocol, group)`` to the request paths it sent
    (empty: the representative path), or just lists the cells. ``header`` is
    the canary group's ``(name, value)``; ``known_subsets`` are added at
    share 0 (so the tables show them).
    """
    given: Mapping[Cell, Sequence[str]] = (
        cells if isinstance(cells, Mapping) else {cell: () for cell in cells}
    )
    if not given:
        raise UsageError("no request group to derive an expectation for (the run has no requests)")
    out: dict[Cell, CellExpectation] = {}
    for cell in order_cells(set(given)):
        protocol, group = cell
        paths = tuple(given[cell]) or (representative_path(protocol, model_name),)
        decided: dict[str, tuple[int, HTTPRoute]] = {}
        for path in paths:
            found = route_for(service, _request(protocol, group, path, header))
            if found is None:
                raise UsageError(
                    f"{service.source}: {service.ref}: no http route matches {protocol} requests of the "
                    f"{group} group ({path}); Envoy would answer 404, so there is nothing to verify"
                )
            decided[path] = found
        routes = {index for index, _ in decided.values()}
        if len(routes) > 1:
            described = "; ".join(
                f"{path} → {_route_label(i, r)}" for path, (i, r) in sorted(decided.items())
            )
            raise UsageError(
                f"{service.source}: {service.ref}: {protocol} requests of the {group} group take "
                f"different routes ({described}); verify-split judges one expectation per protocol "
                "and group: verify those paths in separate runs"
            )
        index, route = next(iter(decided.values()))
        out[cell] = CellExpectation(
            cell=cell,
            expectation=_expectation(service, index, route, known_subsets),
            route=_route_label(index, route),
            paths=paths,
        )
    stable = _stable(service, out, header, model_name, known_subsets)
    return ManifestExpectations(
        source=service.source, name=str(service.ref), cells=out, stable=stable
    )


def _stable(
    service: VirtualService,
    cells: Mapping[Cell, CellExpectation],
    header: tuple[str, str],
    model_name: str,
    known_subsets: Sequence[str],
) -> str:
    """The first destination of the route the default group takes: its cell's, or, when the
    default group sent nothing, the route its request would take, so the stable subset does not
    become the canary's because only the canary group had traffic."""
    for cell, found in cells.items():
        if cell[1] == "default":
            return found.expectation.positive[0]
    for protocol in dict.fromkeys(cell[0] for cell in cells):
        path = representative_path(protocol, model_name)
        routed = route_for(service, _request(protocol, "default", path, header))
        if routed is not None:
            try:
                return _expectation(service, *routed, known_subsets).positive[0]
            except UsageError:  # a route without subsets: no stable subset there
                continue
    return next(iter(cells.values())).expectation.positive[0]


def load_virtual_service(paths: Sequence[Path]) -> VirtualService:
    """The one VirtualService in ``paths`` (files or directories), validated by the mesh's parser."""
    try:
        objects = load_manifests([Path(p) for p in paths])
    except ManifestError as error:
        raise UsageError(f"cannot read the manifest: {error}") from None
    services = [o for o in objects if isinstance(o, VirtualService)]
    names = ", ".join(str(p) for p in paths)
    if not services:
        raise UsageError(
            f"{names} holds no VirtualService; give the VirtualService under test, e.g. "
            "manifests/routing/virtualservice-weight-70.yaml"
        )
    if len(services) > 1:
        raise UsageError(
            f"{names} holds {len(services)} VirtualServices "
            f"({', '.join(str(s.ref) for s in services)}); give the one file under test"
        )
    return services[0]


def recorded_virtual_service(objects: Sequence[tuple[str, object]], where: str, *,
                             cluster: bool = False) -> VirtualService:
    """The one VirtualService among routing objects a run recorded (``(source, document)``
    pairs), validated by the mesh's parser (as a cluster reads it with ``cluster``: fields the
    local mesh does not implement are kept); ``where`` names the record in messages."""
    services_only = [(source, doc) for source, doc in objects
                     if isinstance(doc, dict) and doc.get("kind") == "VirtualService"]
    try:
        parsed = parse_objects(services_only, target=Target.CLUSTER if cluster else Target.LOCAL)
    except ManifestError as error:
        raise UsageError(f"{where}: the recorded routing cannot be read: {error}") from None
    services = [o for o in parsed if isinstance(o, VirtualService)]
    if len(services) != 1:
        raise UsageError(
            f"{where}: the recorded routing holds {len(services)} VirtualServices, so it does not say "
            "which split to expect; give --expected or --from-manifest"
        )
    return services[0]


def expectations_from_manifest(
    paths: Sequence[Path],
    cells: Mapping[Cell, Sequence[str]] | Sequence[Cell],
    *,
    header: tuple[str, str],
    model_name: str,
    known_subsets: Sequence[str] = (),
) -> ManifestExpectations:
    """:func:`load_virtual_service` then :func:`expectations_from_virtual_service`."""
    return expectations_from_virtual_service(
        load_virtual_service(paths),
        cells,
        header=header,
        model_name=model_name,
        known_subsets=known_subsets,
    )
