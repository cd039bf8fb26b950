"""Istio VirtualServices from manifests: routes, matches, retries, faults, mirrors, headers.

For the local target anything that changes routing and is not implemented is
rejected by name: this tool exists to verify routing, so a field it silently
ignored would make the verdict a lie. For the cluster target (see
:class:`~mesh.manifest_fields.Target`) what Istio defines is accepted and left
in the raw document for Istio (TCP/TLS routes, rewrites, CORS, redirects,
...); what Istio's own validation refuses is refused here too.
"""

from __future__ import annotations

from http import HTTPStatus

from mesh.manifest_fields import Node, re2_problem
from mesh.manifests_istio import GRPC_STATUS_CODES, HEADER_NAME, RETRY_ON_POLICIES, check_host
from mesh.manifests_k8s import check_dns_label
from mesh.model import (
    Destination,
    Fault,
    HeaderOperations,
    Headers,
    HTTPMatch,
    HTTPRoute,
    HTTPRouteDestination,
    Mirror,
    ObjectRef,
    Retries,
    StringMatch,
    VirtualService,
)

__all__ = ["parse_virtual_service"]

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
# What an http route may have instead of ``route`` (Istio: route, redirect or direct_response).
_ROUTE_ALTERNATIVES = ("redirect", "directResponse", "delegate")


def parse_virtual_service(root: Node, ref: ObjectRef, source: str) -> VirtualService:
    root.only({"apiVersion", "kind", "metadata", "spec"}, ignored={"status"})
    spec = root.req("spec")
    spec.only(
        {"hosts", "gateways", "http"},
        ignored={"exportTo"},
        unsupported={
            "tcp": "the local mesh routes HTTP only (spec.http)",
            "tls": "the local mesh routes HTTP only (spec.http)",
        },
        refused={
            "delegate": "not a VirtualService field in Istio either: delegation is "
            "set per route (spec.http[].delegate), which the local mesh does not implement",
        },
    )
    # A VirtualService without hosts is a delegate, which only a cluster resolves.
    hosts_node = spec.req("hosts") if spec.local else spec.get("hosts")
    hosts = (
        tuple(check_host(item, ref.namespace) for item in hosts_node.as_list())
        if hosts_node
        else ()
    )
    if not hosts and hosts_node is not None:
        hosts_node.refuse_locally("a VirtualService needs at least one host")
    gateways_node = spec.get("gateways")
    gateways = (
        tuple(_gateway_ref(item, ref.namespace) for item in gateways_node.as_list())
        if gateways_node
        else ("mesh",)
    )
    other_routes = not spec.local and any(spec.get(key) is not None for key in ("tcp", "tls"))
    http_node = spec.get("http") if other_routes else spec.req("http")
    routes = (
        tuple(_http_route(item, ref.namespace) for item in http_node.as_list()) if http_node else ()
    )
    if not routes and http_node is not None and not other_routes:
        http_node.fail("a VirtualService needs at least one http route")
    if http_node is not None:
        _check_unique_names(http_node, routes)
    return VirtualService(
        ref=ref, source=source, raw=root.as_map(), hosts=hosts, gateways=gateways, http=routes
    )


def _gateway_ref(node: Node, namespace: str) -> str:
    """``name`` or ``namespace/name``, normalised to ``namespace/name``; ``mesh`` stays.

    A cluster also takes Istio's legacy form, the Gateway's FQDN
    (``name.namespace.svc.cluster.local``), kept as written.
    """
    text = node.as_str()
    if text == "mesh":
        return text
    gateway_namespace, _, name = text.rpartition("/")
    legacy = not gateway_namespace and "." in name and len(text) <= 253
    if legacy and not node.local and not any(check_dns_label(part) for part in text.split(".")):
        return text
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
    instead = not node.local and any(key in node.as_map() for key in _ROUTE_ALTERNATIVES)
    route_node = node.get("route") if instead else node.req("route")
    destinations = _route_destinations(route_node, namespace) if route_node else ()
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
        if not HEADER_NAME.match(lowered):
            child.fail(f"{header!r} is not a valid header name")
        if lowered in headers:
            child.fail(f"header {lowered!r} is matched twice (header names are case-insensitive)")
        match = _string_match(child)
        if match is not None:
            headers[lowered] = match
    ignore_case = node.get("ignoreUriCase")
    return HTTPMatch(
        name=name.as_str(empty=True) if name else "",
        uri=_string_match(uri, uri=True) if uri else None,
        method=_string_match(method) if method else None,
        headers=tuple(sorted(headers.items())),
        ignore_uri_case=ignore_case.as_bool() if ignore_case else False,
    )


def _string_match(node: Node, *, uri: bool = False) -> StringMatch | None:
    """One of exact, prefix or regex; None for what only a cluster takes (not modelled):
    an empty match (Istio: "header present", or any URI), an empty URI prefix or regex."""
    node.only({"exact", "prefix", "regex"})
    present = [key for key in ("exact", "prefix", "regex") if key in node.as_map()]
    message = (
        "needs exactly one of exact, prefix or regex "
        "(an empty match, meaning 'header present', is not supported: use regex: '.+')"
    )
    if len(present) > 1:
        node.fail(message)
    if not present:
        node.refuse_locally(message)
        return None
    kind = present[0]
    value_node = node.req(kind)
    value = value_node.as_str(empty=True)
    if not value and kind != "exact":  # Envoy: prefixes and regexes non-empty
        if kind == "prefix" and not uri:
            value_node.fail("must not be empty")  # Istio: only a URI prefix may be empty
        value_node.refuse_locally("must not be empty")
        return None
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
        # Istio takes weights as relative shares, refusing only a total of 0.
        message = f"the weights of the destinations add up to {total}, not 100"
        if total == 0:
            node.fail(message)
        node.refuse_locally(message)
    return tuple(out)


def _destination(node: Node, namespace: str) -> Destination:
    node.only({"host", "subset", "port"})
    subset, port = node.get("subset"), node.get("port")
    if port is not None:
        port.only({"number"})
    host_node = node.req("host")
    host = check_host(host_node, namespace, wildcard=False)
    if host == "*":
        host_node.fail("'*' is not a destination: name a Service (or a '*.suffix' of hosts)")
    return Destination(
        host=host,
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
            unsupported={"percent": "deprecated; use percentage: {value: ...}"},
            refused={"exponentialDelay": "not implemented by Istio either"},
        )
        percentage = delay.get("percentage")
        fault = Fault(
            delay_ms=delay.req("fixedDelay").duration_ms(minimum_ms=1),
            delay_percent=percentage.percentage() if percentage else 0.0,
        )
    if abort is not None:
        abort.only(
            {"httpStatus", "grpcStatus", "percentage"},
            refused={"http2Error": "not implemented by Istio either"},
        )
        http_status, grpc_status = abort.get("httpStatus"), abort.get("grpcStatus")
        if http_status is not None and grpc_status is not None:
            abort.fail("an abort needs exactly one of httpStatus or grpcStatus")
        if http_status is None and grpc_status is None:  # Istio only warns: the abort does nothing
            abort.refuse_locally("an abort needs exactly one of httpStatus or grpcStatus")
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
        request=_header_operations(request, request=True) if request else HeaderOperations(),
        response=_header_operations(response, request=False) if response else HeaderOperations(),
    )


def _header_operations(node: Node, *, request: bool) -> HeaderOperations:
    node.only({"set", "add", "remove"})

    def names_ok(child: Node, name: str, *, setting: bool) -> str:
        """Istio sets the authority from ``:authority`` or ``host`` (request set/add only)
        and refuses every other pseudo-header and ``host``; the local mesh none of them."""
        lowered = name.lower()
        message = f"rewriting {name!r} is not supported by the local mesh"
        if lowered in (":authority", "host") and request and setting:
            child.refuse_locally(message)
            return name
        if lowered.startswith(":") or lowered == "host":
            child.fail(message if child.local else f"Istio does not let a route change {name!r}")
        if lowered == "authority":
            child.refuse_locally(message)
        if not HEADER_NAME.match(lowered):
            child.fail(f"{name!r} is not a valid header name")
        return name

    set_node, add_node, remove_node = node.get("set"), node.get("add"), node.get("remove")
    set_ops = (
        [(names_ok(c, k, setting=True), c.as_str(empty=True)) for k, c in set_node.items()]
        if set_node
        else []
    )
    add_ops = (
        [(names_ok(c, k, setting=True), c.as_str(empty=True)) for k, c in add_node.items()]
        if add_node
        else []
    )
    removes = (
        [names_ok(c, c.as_str(), setting=False) for c in remove_node.as_list()]
        if remove_node
        else []
    )
    return HeaderOperations(
        set=tuple(sorted(set_ops)), add=tuple(sorted(add_ops)), remove=tuple(removes)
    )
