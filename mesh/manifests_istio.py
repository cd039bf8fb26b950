"""Istio networking objects (Gateway, VirtualService, DestinationRule) from manifests.

Anything that changes routing and is not implemented is rejected by name: this
tool exists to verify routing, so a field it silently ignored would make the
verdict a lie.
"""

from __future__ import annotations

import re
from http import HTTPStatus

from mesh.manifest_fields import Node, re2_problem
from mesh.manifests_k8s import check_dns_label
from mesh.model import (
    Destination,
    DestinationRule,
    Fault,
    Gateway,
    GatewayServer,
    HeaderOperations,
    Headers,
    HTTPMatch,
    HTTPRoute,
    HTTPRouteDestination,
    LoadBalancer,
    Mirror,
    ObjectRef,
    Retries,
    StringMatch,
    Subset,
    VirtualService,
    service_fqdn,
)

__all__ = [
    "GRPC_STATUS_CODES",
    "RETRY_ON_POLICIES",
    "parse_destination_rule",
    "parse_gateway",
    "parse_virtual_service",
    "resolve_host",
]

GRPC_STATUS_CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}

# Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on policies, as Istio validates retryOn.
RETRY_ON_POLICIES = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)

_HOST = re.compile(r"^(\*|(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-z]+$")


def resolve_host(host: str, namespace: str) -> str:
    """Istio's short-name resolution: ``name`` → ``name.namespace.svc.cluster.local``."""
    if host == "*" or "." in host:
        return host
    return service_fqdn(host, namespace)


def _host(node: Node, namespace: str, *, wildcard: bool = True) -> str:
    host = node.as_str().lower()
    if not _HOST.match(host) or len(host) > 253:
        node.fail(f"{host!r} is not a valid host name (DNS name, '*' or '*.suffix')")
    if not wildcard and "*" in host:
        node.fail("wildcard hosts are not supported here: name one Service")
    return resolve_host(host, namespace)


# --- Gateway ---------------------------------------------------------------------------


def parse_gateway(root: Node, ref: ObjectRef, source: str) -> Gateway:
    root.only({"apiVersion", "kind", "metadata", "spec"}, ignored={"status"})
    spec = root.req("spec")
    spec.only({"selector", "servers"})
    selector = spec.get("selector")
    servers = tuple(_gateway_server(node) for node in spec.req("servers").as_list())
    if not servers:
        spec.req("servers").fail("a Gateway needs at least one server")
    return Gateway(
        ref=ref,
        source=source,
        raw=root.as_map(),
        selector=selector.labels() if selector else {},
        servers=servers,
    )


def _gateway_server(node: Node) -> GatewayServer:
    node.only(
        {"port", "hosts", "name"},
        unsupported={
            "tls": "the local ingress serves plain-text HTTP (and h2c) only",
            "bind": "the local ingress listens on its own loopback address",
            "defaultEndpoint": "only ingress gateways are supported",
        },
    )
    port = node.req("port")
    port.only({"number", "name", "protocol"}, unsupported={"targetPort": "not supported"})
    protocol_node = port.req("protocol")
    protocol = protocol_node.as_str().upper()
    if protocol not in ("HTTP", "HTTP2", "GRPC"):
        protocol_node.fail(
            f"protocol {protocol_node.value!r} is not supported by the local ingress "
            "(supported: HTTP, HTTP2, GRPC)"
        )
    hosts_node = node.req("hosts")
    hosts = tuple(_gateway_host(item) for item in hosts_node.as_list())
    if not hosts:
        hosts_node.fail("a server needs at least one host")
    name = port.get("name")
    return GatewayServer(
        port=port.req("number").as_int(1, 65535),
        port_name=name.as_str() if name else "",
        protocol=protocol,
        hosts=hosts,
    )


def _gateway_host(node: Node) -> str:
    """``[namespace/]host``, where namespace may be ``*`` or ``.``; kept as written."""
    namespace, _, host = node.as_str().rpartition("/")
    if namespace not in ("", "*", ".") and check_dns_label(namespace):
        node.fail(f"invalid namespace {namespace!r} in host {node.value!r}")
    if not _HOST.match(host.lower()):
        node.fail(f"{host!r} is not a valid host name (DNS name, '*' or '*.suffix')")
    return node.as_str().lower()


# --- DestinationRule -------------------------------------------------------------------


def parse_destination_rule(root: Node, ref: ObjectRef, source: str) -> DestinationRule:
    root.only({"apiVersion", "kind", "metadata", "spec"}, ignored={"status"})
    spec = root.req("spec")
    spec.only(
        {"host", "trafficPolicy", "subsets"},
        ignored={"exportTo"},
        unsupported={"workloadSelector": "DestinationRules apply to the ingress as a whole"},
    )
    subsets: list[Subset] = []
    subsets_node = spec.get("subsets")
    for item in subsets_node.as_list() if subsets_node else ():
        subset = _subset(item)
        if any(s.name == subset.name for s in subsets):
            item.req("name").fail(f"duplicate subset name {subset.name!r}")
        subsets.append(subset)
    return DestinationRule(
        ref=ref,
        source=source,
        raw=root.as_map(),
        host=_host(spec.req("host"), ref.namespace, wildcard=False),
        load_balancer=_traffic_policy(spec.get("trafficPolicy")),
        subsets=tuple(subsets),
    )


def _subset(node: Node) -> Subset:
    node.only({"name", "labels", "trafficPolicy"})
    name_node = node.req("name")
    name = name_node.as_str()
    problem = check_dns_label(name)
    if problem:
        name_node.fail(f"invalid subset name: {problem}")
    labels = node.get("labels")
    return Subset(
        name=name,
        labels=labels.labels() if labels else {},
        load_balancer=_traffic_policy(node.get("trafficPolicy")),
    )


def _traffic_policy(node: Node | None) -> LoadBalancer | None:
    if node is None:
        return None
    node.only(
        {"loadBalancer"},
        unsupported={
            key: "the local mesh implements trafficPolicy.loadBalancer.simple only"
            for key in (
                "connectionPool",
                "outlierDetection",
                "tls",
                "portLevelSettings",
                "tunnel",
                "proxyProtocol",
                "retryBudget",
            )
        },
    )
    balancer = node.get("loadBalancer")
    if balancer is None:
        return None
    balancer.only(
        {"simple"},
        unsupported={
            key: "the local mesh implements loadBalancer.simple only"
            for key in ("consistentHash", "localityLbSetting", "warmupDurationSecs", "warmup")
        },
    )
    simple_node = balancer.get("simple")
    simple = simple_node.as_str() if simple_node else "UNSPECIFIED"
    aliases = {"UNSPECIFIED": "LEAST_REQUEST", "LEAST_CONN": "LEAST_REQUEST"}
    simple = aliases.get(simple, simple)
    if simple not in ("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"):
        (simple_node or balancer).fail(
            f"load balancer {simple!r} is not supported (supported: ROUND_ROBIN, LEAST_REQUEST, RANDOM)"
        )
    return LoadBalancer(simple=simple)  # type: ignore[arg-type]


# --- VirtualService --------------------------------------------------------------------

_HTTP_ROUTE_UNSUPPORTED = {
    "redirect": "redirects are not implemented by the local mesh",
    "directResponse": "direct responses are not implemented by the local mesh",
    "delegate": "delegate VirtualServices are not implemented by the local mesh",
    "rewrite": "URI and authority rewrites are not implemented by the local mesh",
    "corsPolicy": "CORS policies are not implemented by the local mesh",
    "mirrors": "use mirror and mirrorPercentage (one mirror per route)",
    "mirrorPercent": "deprecated; use mirrorPercentage: {value: ...}",
    "mirror_percent": "deprecated; use mirrorPercentage: {value: ...}",
}


def parse_virtual_service(root: Node, ref: ObjectRef, source: str) -> VirtualService:
    root.only({"apiVersion", "kind", "metadata", "spec"}, ignored={"status"})
    spec = root.req("spec")
    spec.only(
        {"hosts", "gateways", "http"},
        ignored={"exportTo"},
        unsupported={
            "tcp": "the local mesh routes HTTP only (spec.http)",
            "tls": "the local mesh routes HTTP only (spec.http)",
            "delegate": "delegate VirtualServices are not implemented by the local mesh",
        },
    )
    hosts_node = spec.req("hosts")
    hosts = tuple(_host(item, ref.namespace) for item in hosts_node.as_list())
    if not hosts:
        hosts_node.fail("a VirtualService needs at least one host")
    gateways_node = spec.get("gateways")
    gateways = (
        tuple(_gateway_ref(item, ref.namespace) for item in gateways_node.as_list())
        if gateways_node
        else ("mesh",)
    )
    http_node = spec.req("http")
    routes = tuple(_http_route(item, ref.namespace) for item in http_node.as_list())
    if not routes:
        http_node.fail("a VirtualService needs at least one http route")
    _check_unique_names(http_node, routes)
    return VirtualService(
        ref=ref, source=source, raw=root.as_map(), hosts=hosts, gateways=gateways, http=routes
    )


def _gateway_ref(node: Node, namespace: str) -> str:
    """``name`` or ``namespace/name``, normalised to ``namespace/name``; ``mesh`` stays."""
    text = node.as_str()
    if text == "mesh":
        return text
    gateway_namespace, _, name = text.rpartition("/")
    if (
        "." in name
        or check_dns_label(name)
        or (gateway_namespace and check_dns_label(gateway_namespace))
    ):
        node.fail(f"{text!r} is not a Gateway reference: write 'name' or 'namespace/name'")
    return f"{gateway_namespace or namespace}/{name}"


def _check_unique_names(node: Node, routes: tuple[HTTPRoute, ...]) -> None:
    seen: set[str] = set()
    for item, route in zip(node.as_list(), routes, strict=True):
        if route.name and route.name in seen:
            item.req("name").fail(f"duplicate http route name {route.name!r}")
        seen.add(route.name)


def _http_route(node: Node, namespace: str) -> HTTPRoute:
    node.only(
        {
            "name",
            "match",
            "route",
            "timeout",
            "retries",
            "fault",
            "mirror",
            "mirrorPercentage",
            "headers",
        },
        unsupported=_HTTP_ROUTE_UNSUPPORTED,
    )
    name = node.get("name")
    match_node = node.get("match")
    matches = tuple(_match(item) for item in match_node.as_list()) if match_node else ()
    route_node = node.req("route")
    destinations = _route_destinations(route_node, namespace)
    timeout, retries, fault = node.get("timeout"), node.get("retries"), node.get("fault")
    mirror, headers = node.get("mirror"), node.get("headers")
    mirror_percentage = node.get("mirrorPercentage")
    if mirror_percentage is not None and mirror is None:
        mirror_percentage.fail("mirrorPercentage needs a mirror")
    return HTTPRoute(
        name=name.as_str(empty=True) if name else "",
        match=matches,
        route=destinations,
        timeout_ms=timeout.duration_ms() if timeout else None,
        retries=_retries(retries) if retries else None,
        fault=_fault(fault) if fault else None,
        mirror=Mirror(
            destination=_destination(mirror, namespace),
            percent=mirror_percentage.percentage() if mirror_percentage else 100.0,
        )
        if mirror
        else None,
        headers=_headers(headers) if headers else None,
    )


def _match(node: Node) -> HTTPMatch:
    unsupported = {
        key: "the local mesh matches on uri, method and headers only"
        for key in (
            "scheme",
            "authority",
            "port",
            "queryParams",
            "withoutHeaders",
            "sourceLabels",
            "sourceNamespace",
            "gateways",
            "statPrefix",
        )
    }
    node.only({"name", "uri", "method", "headers", "ignoreUriCase"}, unsupported=unsupported)
    name, uri, method = node.get("name"), node.get("uri"), node.get("method")
    headers: dict[str, StringMatch] = {}
    headers_node = node.get("headers")
    for header, child in headers_node.items() if headers_node else ():
        lowered = header.lower()
        if not _HEADER_NAME.match(lowered):
            child.fail(f"{header!r} is not a valid header name")
        if lowered in headers:
            child.fail(f"header {lowered!r} is matched twice (header names are case-insensitive)")
        headers[lowered] = _string_match(child)
    ignore_case = node.get("ignoreUriCase")
    return HTTPMatch(
        name=name.as_str(empty=True) if name else "",
        uri=_string_match(uri) if uri else None,
        method=_string_match(method) if method else None,
        headers=tuple(sorted(headers.items())),
        ignore_uri_case=ignore_case.as_bool() if ignore_case else False,
    )


def _string_match(node: Node) -> StringMatch:
    node.only({"exact", "prefix", "regex"})
    present = [key for key in ("exact", "prefix", "regex") if key in node.as_map()]
    if len(present) != 1:
        node.fail(
            "needs exactly one of exact, prefix or regex "
            "(an empty match, meaning 'header present', is not supported: use regex: '.+')"
        )
    kind = present[0]
    value_node = node.req(kind)
    value = value_node.as_str(empty=kind == "exact")  # Envoy: prefixes and regexes non-empty
    if kind == "regex":
        problem = re2_problem(value)
        if problem:
            value_node.fail(problem)
    return StringMatch(kind=kind, value=value)


def _route_destinations(node: Node, namespace: str) -> tuple[HTTPRouteDestination, ...]:
    items = node.as_list()
    if not items:
        node.fail("a route needs at least one destination")
    out: list[HTTPRouteDestination] = []
    for item in items:
        item.only({"destination", "weight", "headers"})
        weight = item.get("weight")
        headers = item.get("headers")
        out.append(
            HTTPRouteDestination(
                destination=_destination(item.req("destination"), namespace),
                weight=weight.as_int(0, 100) if weight else 0,
                headers=_headers(headers) if headers else None,
            )
        )
    if len(out) == 1:
        return (HTTPRouteDestination(out[0].destination, 100, out[0].headers),)
    total = sum(d.weight for d in out)
    if total != 100:
        node.fail(f"the weights of the destinations add up to {total}, not 100")
    return tuple(out)


def _destination(node: Node, namespace: str) -> Destination:
    node.only({"host", "subset", "port"})
    subset, port = node.get("subset"), node.get("port")
    if port is not None:
        port.only({"number"})
    return Destination(
        host=_host(node.req("host"), namespace, wildcard=False),
        subset=subset.as_str() if subset else "",
        port=port.req("number").as_int(1, 65535) if port else None,
    )


def _retries(node: Node) -> Retries:
    node.only(
        {"attempts", "perTryTimeout", "retryOn"},
        ignored={"retryRemoteLocalities"},  # one locality locally
        unsupported={
            "retryIgnorePreviousHosts": "the local mesh always prefers hosts not yet tried",
            "backoff": "the local mesh uses Envoy's default retry back-off",
        },
    )
    attempts, per_try, retry_on = (
        node.get("attempts"),
        node.get("perTryTimeout"),
        node.get("retryOn"),
    )
    if retry_on is not None:
        _check_retry_on(retry_on)
    return Retries(
        attempts=attempts.as_int(0) if attempts else 0,
        per_try_timeout_ms=per_try.duration_ms(minimum_ms=1) if per_try else None,
        retry_on=retry_on.as_str() if retry_on else "",
    )


def _check_retry_on(node: Node) -> None:
    for part in node.as_str().split(","):
        policy = part.strip()
        if policy.isdigit() and int(policy) in HTTPStatus._value2member_map_:
            continue
        if policy not in RETRY_ON_POLICIES:
            node.fail(
                f"{policy!r} is not a retry policy (use HTTP status codes or: "
                f"{', '.join(sorted(RETRY_ON_POLICIES))})"
            )


def _fault(node: Node) -> Fault:
    node.only({"delay", "abort"})
    delay, abort = node.get("delay"), node.get("abort")
    if delay is None and abort is None:
        node.fail("a fault needs a delay, an abort, or both")
    fault = Fault()
    if delay is not None:
        delay.only(
            {"fixedDelay", "percentage"},
            unsupported={
                "exponentialDelay": "not implemented by Istio either",
                "percent": "deprecated; use percentage: {value: ...}",
            },
        )
        percentage = delay.get("percentage")
        fault = Fault(
            delay_ms=delay.req("fixedDelay").duration_ms(minimum_ms=1),
            delay_percent=percentage.percentage() if percentage else 0.0,
        )
    if abort is not None:
        abort.only(
            {"httpStatus", "grpcStatus", "percentage"},
            unsupported={"http2Error": "not implemented by Istio either"},
        )
        http_status, grpc_status = abort.get("httpStatus"), abort.get("grpcStatus")
        if (http_status is None) == (grpc_status is None):
            abort.fail("an abort needs exactly one of httpStatus or grpcStatus")
        if grpc_status is not None and grpc_status.as_str() not in GRPC_STATUS_CODES:
            grpc_status.fail(f"unknown gRPC status (one of {', '.join(GRPC_STATUS_CODES)})")
        percentage = abort.get("percentage")
        fault = Fault(
            abort_http_status=http_status.as_int(200, 599) if http_status else None,
            abort_grpc_status=grpc_status.as_str() if grpc_status else None,
            abort_percent=percentage.percentage() if percentage else 0.0,
            delay_ms=fault.delay_ms,
            delay_percent=fault.delay_percent,
        )
    return fault


def _headers(node: Node) -> Headers:
    node.only({"request", "response"})
    request, response = node.get("request"), node.get("response")
    return Headers(
        request=_header_operations(request) if request else HeaderOperations(),
        response=_header_operations(response) if response else HeaderOperations(),
    )


def _header_operations(node: Node) -> HeaderOperations:
    node.only({"set", "add", "remove"})

    def names_ok(child: Node, name: str) -> str:
        lowered = name.lower()
        if lowered.startswith(":") or lowered in ("host", "authority"):
            child.fail(f"rewriting {name!r} is not supported by the local mesh")
        if not _HEADER_NAME.match(lowered):
            child.fail(f"{name!r} is not a valid header name")
        return name

    set_node, add_node, remove_node = node.get("set"), node.get("add"), node.get("remove")
    set_ops = (
        [(names_ok(c, k), c.as_str(empty=True)) for k, c in set_node.items()] if set_node else []
    )
    add_ops = (
        [(names_ok(c, k), c.as_str(empty=True)) for k, c in add_node.items()] if add_node else []
    )
    removes = [names_ok(c, c.as_str()) for c in remove_node.as_list()] if remove_node else []
    return HeaderOperations(
        set=tuple(sorted(set_ops)), add=tuple(sorted(add_ops)), remove=tuple(removes)
    )
