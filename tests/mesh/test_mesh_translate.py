"""Translation semantics, one Istio behaviour per test (the golden files hold the rest)."""

from __future__ import annotations

from typing import Any

import pytest

from canary.errors import ManifestError
from mesh.manifests import apply
from mesh.model import ServicePort
from mesh.translate import MAX_REQUEST_BYTES, ClusterKey, IngressSettings, XdsPaths, translate
from tests.mesh.docs import edit, manifest, parse
from tests.mesh.scenarios import Scenario, base_objects, classifier_pods, scenarios

FQDN = "image-classifier.tf-serving.svc.cluster.local"


def _routes(scenario: Scenario, port: int = 80) -> dict[str, list[dict[str, Any]]]:
    """Virtual host name → its routes, for one Gateway port."""
    config = next(
        c for c in scenario.translate().route_configurations if c["name"] == f"http.{port}"
    )
    return {vh["name"]: vh["routes"] for vh in config["virtual_hosts"]}


def _only_routes(scenario: Scenario) -> list[dict[str, Any]]:
    (routes,) = _routes(scenario).values()
    return routes


def test_clusters_are_named_as_istio_names_them() -> None:
    resources = scenarios()["base"].translate()
    names = [c["name"] for c in resources.clusters]
    assert names == [
        f"outbound|8500|resnet101|{FQDN}",
        f"outbound|8500|resnet50|{FQDN}",
        f"outbound|8500||{FQDN}",
        f"outbound|8501|resnet101|{FQDN}",
        f"outbound|8501|resnet50|{FQDN}",
        f"outbound|8501||{FQDN}",
    ]
    stat = "outbound|8501|resnet50|image-classifier_tf-serving_svc_cluster_local"
    assert resources.clusters[4]["alt_stat_name"] == stat
    assert resources.cluster_index[stat] == ClusterKey(FQDN, 8501, "resnet50", "tf-serving")
    assert all("." not in name for name in resources.cluster_index)


def test_grpc_ports_get_http2_upstreams_and_rest_ports_do_not() -> None:
    clusters = {c["name"]: c for c in scenarios()["base"].translate().clusters}
    grpc, rest = clusters[f"outbound|8500||{FQDN}"], clusters[f"outbound|8501||{FQDN}"]
    options = grpc["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert options["explicit_http_config"] == {"http2_protocol_options": {}}
    assert "typed_extension_protocol_options" not in rest


def test_load_balancing_follows_the_destination_rule() -> None:
    policies = {
        c["name"].split("|")[2]: c["lb_policy"]
        for c in scenarios()["features"].translate().clusters
        if c["name"].startswith("outbound|80|")
    }
    assert policies == {"": "ROUND_ROBIN", "v1": "ROUND_ROBIN", "v2": "RANDOM"}  # subset overrides
    assert {c["lb_policy"] for c in scenarios()["base"].translate().clusters} == {"LEAST_REQUEST"}


def test_endpoints_are_the_ready_selected_pods_at_their_host_ports() -> None:
    assignments = {
        a["cluster_name"]: a for a in scenarios()["features"].translate().cluster_load_assignments
    }

    def pods(name: str) -> list[tuple[str, int]]:
        return [
            (e["endpoint"]["hostname"], e["endpoint"]["address"]["socket_address"]["port_value"])
            for group in assignments[name]["endpoints"]
            for e in group["lb_endpoints"]
        ]

    # named targetPort "web" → container port 8080 → the host port; not ready and other namespace left out
    assert pods("outbound|80||echo.features.svc.cluster.local") == [
        ("echo-v1-0", 32001),
        ("echo-v2-0", 32002),
    ]
    assert pods("outbound|80|v2|echo.features.svc.cluster.local") == [("echo-v2-0", 32002)]
    assert pods("outbound|8080||shadow.features.svc.cluster.local") == [("shadow-0", 32003)]
    assert (
        pods("outbound|443||external.features.svc.cluster.local") == []
    )  # no selector, no endpoints


def test_a_zero_weight_destination_leaves_a_plain_cluster() -> None:
    grpc, rest = _only_routes(scenarios()["weight-100"])[1:]
    assert rest["route"]["cluster"] == f"outbound|8501|resnet50|{FQDN}"
    assert "weighted_clusters" not in rest["route"]
    assert grpc["route"]["cluster"] == f"outbound|8500|resnet50|{FQDN}"


def test_weights_become_weighted_clusters() -> None:
    rest = _only_routes(scenarios()["weight-70"])[-1]
    assert rest["route"]["weighted_clusters"] == {
        "clusters": [
            {"name": f"outbound|8501|resnet50|{FQDN}", "weight": 70},
            {"name": f"outbound|8501|resnet101|{FQDN}", "weight": 30},
        ]
    }


def test_each_match_entry_is_its_own_route_and_conditions_are_anded() -> None:
    routes = _only_routes(scenarios()["focused-routing"])
    assert [
        (r["name"], r["match"].get("prefix"), [h["name"] for h in r["match"].get("headers", [])])
        for r in routes
    ] == [
        ("grpc-canary", "/tensorflow.serving.PredictionService/", ["user-group"]),
        ("grpc-canary", "/tensorflow.serving.ModelService/", ["user-group"]),
        ("grpc", "/tensorflow.serving.PredictionService/", []),
        ("grpc", "/tensorflow.serving.ModelService/", []),
        ("rest-canary", "/", ["user-group"]),
        ("rest", "/", []),
    ]
    assert routes[0]["match"]["headers"] == [
        {"name": "user-group", "string_match": {"exact": "canary"}}
    ]


def test_istio_defaults_no_timeout_and_its_retry_policy() -> None:
    action = _only_routes(scenarios()["base"])[0]["route"]
    assert action["timeout"] == "0s"
    assert action["retry_policy"]["num_retries"] == 2
    assert (
        action["retry_policy"]["retry_on"]
        == "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    )
    assert action["retry_policy"]["retriable_status_codes"] == [503]
    assert action["retry_policy"]["host_selection_retry_max_attempts"] == 5


def test_features_translate_as_istio_would() -> None:
    routes = _routes(scenarios()["features"])["echo.example.com:80"]
    by_name = {r.get("name"): r for r in routes}
    matches = by_name["matches.models"]
    assert matches["match"]["safe_regex"] == {
        "regex": "(?i)/v[0-9]+/models/.*"
    }  # ignoreUriCase on a regex
    assert by_name["matches"]["match"]["case_sensitive"] is False
    assert matches["route"]["timeout"] == "1.500s"
    retry = matches["route"]["retry_policy"]
    assert (
        retry["num_retries"],
        retry["retry_on"],
        retry["retriable_status_codes"],
        retry["per_try_timeout"],
    ) == (3, "5xx,reset,retriable-status-codes", [503], "0.500s")
    assert "retry_policy" not in by_name["faults"]["route"]  # attempts: 0
    fault = by_name["faults"]["typed_per_filter_config"]["envoy.filters.http.fault"]
    assert fault["delay"] == {
        "fixed_delay": "0.100s",
        "percentage": {"numerator": 125000, "denominator": "MILLION"},
    }
    assert fault["abort"] == {
        "http_status": 503,
        "percentage": {"numerator": 1000, "denominator": "MILLION"},
    }
    grpc_fault = by_name["grpc"]["typed_per_filter_config"]["envoy.filters.http.fault"]
    assert grpc_fault["abort"]["grpc_status"] == 14
    mirror = by_name["default"]["route"]["request_mirror_policies"]
    assert mirror == [
        {
            "cluster": "outbound|8080||shadow.features.svc.cluster.local",
            "runtime_fraction": {"default_value": {"numerator": 250000, "denominator": "MILLION"}},
            "trace_sampled": False,
        }
    ]
    assert "request_mirror_policies" not in by_name["extra"]["route"]  # mirrorPercentage 0
    assert by_name["zero-weight"]["match"]["headers"] == [
        {"name": ":method", "string_match": {"safe_regex": {"regex": "PUT|PATCH"}}}
    ]


def test_header_operations_at_route_and_destination_level() -> None:
    routes = _routes(scenarios()["features"])["echo.example.com:80"]
    matches = next(r for r in routes if r.get("name") == "matches.health")
    assert matches["request_headers_to_add"] == [
        {
            "header": {"key": "x-route", "value": "matches"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        },
        {"header": {"key": "x-trace", "value": "1"}, "append_action": "APPEND_IF_EXISTS_OR_ADD"},
    ]
    assert matches["request_headers_to_remove"] == ["x-internal"]
    assert matches["response_headers_to_remove"] == ["server"]
    v1, v2 = matches["route"]["weighted_clusters"]["clusters"]
    assert v1["request_headers_to_add"][0]["header"] == {"key": "x-subset", "value": "v1"}
    assert v2["response_headers_to_remove"] == ["x-internal-v2"]
    # a single destination's headers join the route's own
    faults = next(r for r in routes if r.get("name") == "faults")
    assert faults["request_headers_to_add"][0]["header"] == {"key": "x-subset", "value": "v1"}


def test_virtual_services_merge_per_host_and_stop_at_a_catch_all() -> None:
    hosts = _routes(scenarios()["features"])
    assert sorted(hosts) == ["*.apps.example.com:80", "echo.example.com:80"]
    names = [r.get("name") for r in hosts["echo.example.com:80"]]
    # the second VirtualService's routes come before the first's catch-all; "unreachable" is dropped
    assert names[-3:] == ["extra", "external", "default"]
    assert "unreachable" not in names
    assert "extra" not in [r.get("name") for r in hosts["*.apps.example.com:80"]]
    port_8080 = _routes(scenarios()["features"], 8080)
    assert sorted(port_8080) == ["*.example.com:8080", "echo.example.com:8080"]


def test_a_gateway_port_without_virtual_services_answers_404() -> None:
    objects = [o for o in base_objects() if o.ref.kind != "VirtualService"]
    resources = translate(objects, classifier_pods(), IngressSettings(), XdsPaths("/x"))
    (host,) = resources.route_configurations[0]["virtual_hosts"]
    assert host["routes"] == [
        {"name": "default", "match": {"prefix": "/"}, "direct_response": {"status": 404}}
    ]


def test_listeners_serve_rest_and_grpc_on_one_port() -> None:
    xds = XdsPaths("/run/xds")
    resources = translate(base_objects(), [], IngressSettings("127.0.0.2", {80: 18080}), xds)
    (listener,) = resources.listeners
    assert listener["address"] == {"socket_address": {"address": "127.0.0.2", "port_value": 18080}}
    assert listener["per_connection_buffer_limit_bytes"] == MAX_REQUEST_BYTES > 5 * 1024 * 1024
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert manager["codec_type"] == "AUTO"
    assert [f["name"] for f in manager["http_filters"]] == [
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]
    assert all("@type" in f["typed_config"] for f in manager["http_filters"])
    assert manager["rds"]["config_source"]["path_config_source"] == {
        "path": "/run/xds/rds_http.80.json",
        "watched_directory": {"path": "/run/xds"},
    }
    cluster = resources.clusters[0]
    assert cluster["eds_cluster_config"]["eds_config"]["path_config_source"]["path"] == str(
        xds.eds(cluster["name"])
    )
    assert cluster["connect_timeout"] == "10s"


def test_a_gateway_port_without_a_local_port_is_an_error() -> None:
    gateway = edit(manifest("base/gateway.yaml"), "spec.servers[0].port.number", 8000)
    objects = apply(base_objects(), parse(gateway, source="gw.yaml"))
    with pytest.raises(ManifestError) as caught:
        translate(objects, [], IngressSettings(), XdsPaths("/x"))
    error = caught.value
    assert (error.file, error.obj, error.field) == (
        "gw.yaml",
        "Gateway/tf-serving/image-classifier-gateway",
        "spec.servers[0].port.number",
    )
    assert "no port for Gateway port 8000" in error.message


def test_output_is_sorted_and_pure() -> None:
    scenario = scenarios()["features"]
    first, second = scenario.translate(), scenario.translate()
    assert first == second
    for resources in (first.clusters, first.listeners, first.route_configurations):
        assert [r["name"] for r in resources] == sorted(r["name"] for r in resources)
    assert [a["cluster_name"] for a in first.cluster_load_assignments] == [
        c["name"] for c in first.clusters
    ]


@pytest.mark.parametrize(
    ("name", "app_protocol", "expected"),
    [
        ("tf-serving-grpc", "grpc", "http2"),  # appProtocol first
        ("grpc-api", "", "http2"),  # then the name's prefix
        ("http2", "", "http2"),
        ("web", "kubernetes.io/h2c", "http2"),
        ("tf-serving-http", "http", "http1"),
        ("http-web", "", "http1"),
        ("tcp-db", "", "http1"),
        ("", "", "downstream"),  # undeclared: Istio sniffs, the client's protocol goes upstream
        ("tf-serving-grpc", "", "downstream"),  # "tf" is no protocol
    ],
)
def test_upstream_protocol_follows_istio_protocol_selection(
    name: str, app_protocol: str, expected: str
) -> None:
    assert (
        ServicePort(port=1, target_port=1, name=name, app_protocol=app_protocol).upstream_protocol
        == expected
    )
