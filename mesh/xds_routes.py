"""VirtualService HTTP routes → Envoy route configurations, as Istio's gateway builds them. Pure.

Each ``http[]`` rule becomes one Envoy route per ``match[]`` entry (entries
are OR-ed, the conditions of one entry AND-ed); rules keep their order, and
routes after a catch-all are dropped as Istio drops them. VirtualServices
sharing a host are merged in object order, catch-all routes last.
"""

from __future__ import annotations

from typing import Any

from mesh.hosts import bound_gateway_names, served_hosts
from mesh.manifests_istio import GRPC_STATUS_CODES
from mesh.mesh_index import MeshIndex
from mesh.model import (
    Destination,
    Fault,
    HeaderOperations,
    Headers,
    HTTPMatch,
    HTTPRoute,
    HTTPRouteDestination,
    Retries,
    StringMatch,
    VirtualService,
)
from mesh.xds_clusters import cluster_name

__all__ = [
    "DEFAULT_RETRY_ON",
    "ROUTE_CONFIGURATION_TYPE",
    "duration",
    "http_routes",
    "route_config_name",
    "route_configuration",
]

ROUTE_CONFIGURATION_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
FAULT_FILTER = "envoy.filters.http.fault"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
PREVIOUS_HOSTS_TYPE = (
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
)
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"


def route_config_name(port: int) -> str:
    """Istio's name for the routes of a plain-text Gateway port: ``http.80``."""
    return f"http.{port}"


def duration(ms: int) -> str:
    """Milliseconds as a proto3 JSON Duration: ``1500`` → ``"1.500s"``."""
    seconds, rest = divmod(ms, 1000)
    return f"{seconds}.{rest:03d}s" if rest else f"{seconds}s"


def _fraction(percent: float) -> dict[str, Any]:
    return {"numerator": round(percent * 10_000), "denominator": "MILLION"}


# --- route configuration ---------------------------------------------------------------


def route_configuration(port: int, index: MeshIndex) -> dict[str, Any]:
    """The routes of Gateway port ``port``: one virtual host per host name served there."""
    return {
        "@type": ROUTE_CONFIGURATION_TYPE,
        "name": route_config_name(port),
        "virtual_hosts": _virtual_hosts(port, index) or [_blackhole(port)],
        "ignore_port_in_host_matching": True,
        "validate_clusters": False,
    }


def _virtual_hosts(port: int, index: MeshIndex) -> list[dict[str, Any]]:
    routes_by_host: dict[str, list[dict[str, Any]]] = {}
    for vs in index.virtual_services:
        hosts: list[str] = []
        for name in bound_gateway_names(vs):
            gateway = index.gateways[name]
            servers = [server for server in gateway.servers if server.port == port]
            hosts += [h for h in served_hosts(vs, gateway, servers) if h not in hosts]
        if not hosts:
            continue
        routes = http_routes(vs, index)
        for host in hosts:
            routes_by_host.setdefault(host, []).extend(routes)
    return [
        {
            "name": f"{host}:{port}",
            "domains": [host],
            "routes": _catch_all_last(routes),
            "include_request_attempt_count": True,
        }
        for host, routes in sorted(routes_by_host.items())
    ]


def _blackhole(port: int) -> dict[str, Any]:
    """What Istio serves on a Gateway port no VirtualService binds to: 404 for everything."""
    return {
        "name": f"blackhole:{port}",
        "domains": ["*"],
        "routes": [
            {"name": "default", "match": {"prefix": "/"}, "direct_response": {"status": 404}}
        ],
    }


def _is_catch_all(route: dict[str, Any]) -> bool:
    match = route["match"]
    path_all = match.get("prefix") == "/" or match.get("safe_regex", {}).get("regex") == ".*"
    return path_all and "headers" not in match


def _catch_all_last(routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in routes if not _is_catch_all(r)] + [r for r in routes if _is_catch_all(r)]


# --- one VirtualService ----------------------------------------------------------------


def http_routes(vs: VirtualService, index: MeshIndex) -> list[dict[str, Any]]:
    """The Envoy routes of one VirtualService, in order, up to its first catch-all."""
    out: list[dict[str, Any]] = []
    for rule in vs.http:
        for match in rule.match or (None,):
            route = _route(rule, match, index)
            out.append(route)
            if _is_catch_all(route):
                return out
    return out


def _route(rule: HTTPRoute, match: HTTPMatch | None, index: MeshIndex) -> dict[str, Any]:
    name = f"{rule.name}.{match.name}" if match and match.name else rule.name
    route: dict[str, Any] = {"match": _route_match(match)}
    if name:
        route["name"] = name
    timeout = duration(rule.timeout_ms or 0)
    action: dict[str, Any] = {
        "timeout": timeout,
        "max_stream_duration": {"grpc_timeout_header_max": timeout},
    }
    _add_header_operations(route, rule.headers)
    targets = _effective_destinations(rule.route)
    if len(targets) == 1:
        action["cluster"] = _cluster(targets[0].destination, index)
        _add_header_operations(route, targets[0].headers)
    else:
        action["weighted_clusters"] = {"clusters": [_weighted(t, index) for t in targets]}
    retry_policy = _retry_policy(rule.retries)
    if retry_policy is not None:
        action["retry_policy"] = retry_policy
    if rule.mirror is not None and rule.mirror.percent > 0:
        action["request_mirror_policies"] = [
            {
                "cluster": _cluster(rule.mirror.destination, index),
                "runtime_fraction": {"default_value": _fraction(rule.mirror.percent)},
                "trace_sampled": False,
            }
        ]
    route["route"] = action
    if rule.fault is not None:
        route["typed_per_filter_config"] = {FAULT_FILTER: _fault(rule.fault)}
    return route


def _effective_destinations(route: tuple[HTTPRouteDestination, ...]) -> list[HTTPRouteDestination]:
    """Istio drops 0-weight destinations when there are several."""
    return list(route) if len(route) == 1 else [d for d in route if d.weight > 0]


def _cluster(destination: Destination, index: MeshIndex) -> str:
    port = index.service_port(destination)
    if port is None:  # validate_set rules this out
        raise ValueError(f"unresolved destination {destination}")
    return cluster_name(port.port, destination.subset, destination.host)


def _weighted(target: HTTPRouteDestination, index: MeshIndex) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": _cluster(target.destination, index), "weight": target.weight}
    _add_header_operations(entry, target.headers)
    return entry


# --- matches ---------------------------------------------------------------------------


def _route_match(match: HTTPMatch | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    uri = match.uri if match else None
    ignore_case = bool(match and match.ignore_uri_case)
    if uri is None:
        out["prefix"] = "/"
    elif uri.kind == "exact":
        out["path"] = uri.value
    elif uri.kind == "prefix":
        out["prefix"] = uri.value
    else:  # case_sensitive does not apply to regexes: fold case in the regex itself
        out["safe_regex"] = {"regex": f"(?i){uri.value}" if ignore_case else uri.value}
    if ignore_case and uri is not None and uri.kind != "regex":
        out["case_sensitive"] = False
    headers = [_header_matcher(name, value) for name, value in match.headers] if match else []
    if match and match.method:
        headers.append(_header_matcher(":method", match.method))
    if headers:
        out["headers"] = headers
    return out


def _header_matcher(name: str, match: StringMatch) -> dict[str, Any]:
    return {"name": name, "string_match": _string_matcher(match)}


def _string_matcher(match: StringMatch) -> dict[str, Any]:
    if match.kind == "regex":
        return {"safe_regex": {"regex": match.value}}
    return {match.kind: match.value}


# --- policies --------------------------------------------------------------------------


def _default_retry_policy() -> dict[str, Any]:
    return {
        "retry_on": DEFAULT_RETRY_ON,
        "num_retries": 2,
        "retriable_status_codes": [503],
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": PREVIOUS_HOSTS_TYPE},
            }
        ],
        "host_selection_retry_max_attempts": 5,
    }


def _retry_policy(retries: Retries | None) -> dict[str, Any] | None:
    """Istio's retry translation: its default policy, overridden field by field."""
    policy = _default_retry_policy()
    if retries is None:
        return policy
    if retries.attempts <= 0:
        return None
    policy["num_retries"] = retries.attempts
    if retries.retry_on:
        parts = [p.strip() for p in retries.retry_on.split(",") if p.strip()]
        codes = [int(p) for p in parts if p.isdigit()]
        policies = [p for p in parts if not p.isdigit()]
        if codes and "retriable-status-codes" not in policies:
            policies.append("retriable-status-codes")
        policy["retry_on"] = ",".join(policies)
        if codes:
            policy["retriable_status_codes"] = codes
        else:
            del policy["retriable_status_codes"]
    if retries.per_try_timeout_ms is not None:
        policy["per_try_timeout"] = duration(retries.per_try_timeout_ms)
    return policy


def _fault(fault: Fault) -> dict[str, Any]:
    out: dict[str, Any] = {"@type": FAULT_TYPE}
    if fault.delay_ms is not None:
        out["delay"] = {
            "fixed_delay": duration(fault.delay_ms),
            "percentage": _fraction(fault.delay_percent),
        }
    if fault.abort_http_status is not None:
        out["abort"] = {
            "http_status": fault.abort_http_status,
            "percentage": _fraction(fault.abort_percent),
        }
    elif fault.abort_grpc_status is not None:
        code = GRPC_STATUS_CODES[fault.abort_grpc_status]
        out["abort"] = {"grpc_status": code, "percentage": _fraction(fault.abort_percent)}
    return out


def _header_values(operations: HeaderOperations) -> list[dict[str, Any]]:
    def option(key: str, value: str, action: str) -> dict[str, Any]:
        return {"header": {"key": key, "value": value}, "append_action": action}

    return [option(k, v, "OVERWRITE_IF_EXISTS_OR_ADD") for k, v in operations.set] + [
        option(k, v, "APPEND_IF_EXISTS_OR_ADD") for k, v in operations.add
    ]


def _add_header_operations(target: dict[str, Any], headers: Headers | None) -> None:
    """Append header operations to a route or a weighted cluster, as Istio orders them."""
    if headers is None:
        return
    for direction, operations in (("request", headers.request), ("response", headers.response)):
        values = _header_values(operations)
        if values:
            target.setdefault(f"{direction}_headers_to_add", []).extend(values)
        if operations.remove:
            target.setdefault(f"{direction}_headers_to_remove", []).extend(operations.remove)
