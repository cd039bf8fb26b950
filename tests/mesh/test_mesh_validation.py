"""Every malformed or unsupported manifest is rejected, naming the file, the object and the field.

Each case edits one field of a walkthrough manifest and states exactly where
the error must point; the message fragment says why.
"""

from __future__ import annotations

from typing import Any

import pytest

from canary.errors import ManifestError
from tests.mesh.docs import DELETE, edit, manifest, parse

VS_FILE = "routing/virtualservice-weight-70.yaml"
VS = "VirtualService/tf-serving/image-classifier"
DR_FILE, DR = "base/destinationrule.yaml", "DestinationRule/tf-serving/image-classifier"
GW_FILE, GW = "base/gateway.yaml", "Gateway/tf-serving/image-classifier-gateway"
SVC_FILE, SVC = "base/service.yaml", "Service/tf-serving/image-classifier"
DEP_FILE, DEP = "base/deployment-resnet50.yaml", "Deployment/tf-serving/image-classifier-resnet50"
CONTAINER = "spec.template.spec.containers[0]"
ABORT = {"httpStatus": 503, "percentage": {"value": 10}}

# (manifest, edited path, new value, object named, field named, message fragment)
CASES: list[tuple[str, str, object, str, str, str]] = [
    # --- VirtualService: unsupported features are named, never ignored
    (VS_FILE, "spec.tcp", [{"route": []}], VS, "spec.tcp", "HTTP only"),
    (VS_FILE, "spec.tls", [{"route": []}], VS, "spec.tls", "HTTP only"),
    (VS_FILE, "spec.delegate", {"name": "x"}, VS, "spec.delegate", "not supported"),
    (VS_FILE, "spec.http[0].rewrite", {"uri": "/"}, VS, "spec.http[0].rewrite", "rewrites"),
    (VS_FILE, "spec.http[0].redirect", {"uri": "/"}, VS, "spec.http[0].redirect", "redirects"),
    (VS_FILE, "spec.http[1].corsPolicy", {}, VS, "spec.http[1].corsPolicy", "CORS"),
    (
        VS_FILE,
        "spec.http[0].directResponse",
        {"status": 503},
        VS,
        "spec.http[0].directResponse",
        "direct",
    ),
    (VS_FILE, "spec.http[0].mirrors", [], VS, "spec.http[0].mirrors", "mirror"),
    (
        VS_FILE,
        "spec.http[0].match[0].queryParams",
        {"a": {"exact": "b"}},
        VS,
        "spec.http[0].match[0].queryParams",
        "uri, method and headers",
    ),
    (
        VS_FILE,
        "spec.http[0].match[1].authority",
        {"exact": "a"},
        VS,
        "spec.http[0].match[1].authority",
        "not supported",
    ),
    (
        VS_FILE,
        "spec.http[0].retries",
        {"attempts": 1, "backoff": "1s"},
        VS,
        "spec.http[0].retries.backoff",
        "back-off",
    ),
    (
        VS_FILE,
        "spec.http[0].fault",
        {"delay": {"exponentialDelay": "1s"}},
        VS,
        "spec.http[0].fault.delay.exponentialDelay",
        "not supported",
    ),
    (VS_FILE, "spec.http[0].bogus", 1, VS, "spec.http[0].bogus", "unknown or unsupported field"),
    (VS_FILE, "spec.bogus", 1, VS, "spec.bogus", "supported here: gateways, hosts, http"),
    # --- VirtualService: weights
    (
        VS_FILE,
        "spec.http[0].route[1].weight",
        20,
        VS,
        "spec.http[0].route",
        "add up to 90, not 100",
    ),
    (
        VS_FILE,
        "spec.http[1].route[0].weight",
        170,
        VS,
        "spec.http[1].route[0].weight",
        "out of range",
    ),
    (
        VS_FILE,
        "spec.http[0].route[0].weight",
        -1,
        VS,
        "spec.http[0].route[0].weight",
        "out of range",
    ),
    (
        VS_FILE,
        "spec.http[0].route[0].weight",
        "70",
        VS,
        "spec.http[0].route[0].weight",
        "must be an integer",
    ),
    (VS_FILE, "spec.http[0].route[1].weight", DELETE, VS, "spec.http[0].route", "add up to 70"),
    (VS_FILE, "spec.http[0].route", [], VS, "spec.http[0].route", "at least one destination"),
    (
        VS_FILE,
        "spec.http[0].route[0].destination.host",
        "*.example.com",
        VS,
        "spec.http[0].route[0].destination.host",
        "wildcard",
    ),
    (
        VS_FILE,
        "spec.http[0].route[0].destination.port",
        {"name": "grpc"},
        VS,
        "spec.http[0].route[0].destination.port.name",
        "unknown",
    ),
    (
        VS_FILE,
        "spec.http[0].route[0].destination.port.number",
        70000,
        VS,
        "spec.http[0].route[0].destination.port.number",
        "out of range",
    ),
    # --- VirtualService: matches and regexes
    (
        VS_FILE,
        "spec.http[0].match[0].uri",
        {"regex": "/a(?=b)"},
        VS,
        "spec.http[0].match[0].uri.regex",
        "lookahead",
    ),
    (
        VS_FILE,
        "spec.http[0].match[0].uri",
        {"regex": r"(a)\1"},
        VS,
        "spec.http[0].match[0].uri.regex",
        "backreference",
    ),
    (
        VS_FILE,
        "spec.http[0].match[0].uri",
        {"regex": "(unclosed"},
        VS,
        "spec.http[0].match[0].uri.regex",
        "invalid regular expression",
    ),
    (
        VS_FILE,
        "spec.http[0].match[0].uri",
        {},
        VS,
        "spec.http[0].match[0].uri",
        "exactly one of exact, prefix or regex",
    ),
    (
        VS_FILE,
        "spec.http[0].match[0].uri",
        {"exact": "/a", "prefix": "/"},
        VS,
        "spec.http[0].match[0].uri",
        "exactly one",
    ),
    (
        VS_FILE,
        "spec.http[0].match[0].uri",
        {"prefix": ""},
        VS,
        "spec.http[0].match[0].uri.prefix",
        "must not be empty",
    ),
    (
        VS_FILE,
        "spec.http[0].match[0].headers",
        {"x-a": {}},
        VS,
        "spec.http[0].match[0].headers['x-a']",
        "header present",
    ),
    (
        VS_FILE,
        "spec.http[0].match[0].headers",
        {"a b": {"exact": "x"}},
        VS,
        "spec.http[0].match[0].headers['a b']",
        "not a valid header name",
    ),
    (
        VS_FILE,
        "spec.http[0].match[0].headers",
        {"X-A": {"exact": "x"}, "x-a": {"exact": "y"}},
        VS,
        "spec.http[0].match[0].headers['x-a']",
        "matched twice",
    ),
    (VS_FILE, "spec.http[0].match[0].method", {"regex": "GET|"}, VS, "", ""),  # valid: no error
    # --- VirtualService: durations, retries, faults, mirrors, headers
    (VS_FILE, "spec.http[0].timeout", "1.5", VS, "spec.http[0].timeout", "not a duration"),
    (VS_FILE, "spec.http[0].timeout", 10, VS, "spec.http[0].timeout", "must be a string"),
    (VS_FILE, "spec.http[0].timeout", "1.0005s", VS, "spec.http[0].timeout", "milliseconds"),
    (
        VS_FILE,
        "spec.http[0].retries",
        {"attempts": 2, "retryOn": "5xx,bogus"},
        VS,
        "spec.http[0].retries.retryOn",
        "'bogus' is not a retry policy",
    ),
    (
        VS_FILE,
        "spec.http[0].retries",
        {"attempts": 2, "perTryTimeout": "0s"},
        VS,
        "spec.http[0].retries.perTryTimeout",
        "minimum is 1ms",
    ),
    (
        VS_FILE,
        "spec.http[0].retries",
        {"attempts": -1},
        VS,
        "spec.http[0].retries.attempts",
        "out of range",
    ),
    (VS_FILE, "spec.http[0].fault", {}, VS, "spec.http[0].fault", "a delay, an abort, or both"),
    (
        VS_FILE,
        "spec.http[0].fault",
        {"abort": {**ABORT, "percentage": {"value": 150}}},
        VS,
        "spec.http[0].fault.abort.percentage.value",
        "out of range",
    ),
    (
        VS_FILE,
        "spec.http[0].fault",
        {"abort": {**ABORT, "grpcStatus": "UNAVAILABLE"}},
        VS,
        "spec.http[0].fault.abort",
        "exactly one of httpStatus or grpcStatus",
    ),
    (
        VS_FILE,
        "spec.http[0].fault",
        {"abort": {"grpcStatus": "NOPE"}},
        VS,
        "spec.http[0].fault.abort.grpcStatus",
        "unknown gRPC status",
    ),
    (
        VS_FILE,
        "spec.http[0].fault",
        {"abort": {"httpStatus": 99}},
        VS,
        "spec.http[0].fault.abort.httpStatus",
        "out of range",
    ),
    (
        VS_FILE,
        "spec.http[0].fault",
        {"delay": {"percentage": {"value": 5}}},
        VS,
        "spec.http[0].fault.delay.fixedDelay",
        "is required",
    ),
    (
        VS_FILE,
        "spec.http[0].fault",
        {"delay": {"fixedDelay": "5s", "percent": 5}},
        VS,
        "spec.http[0].fault.delay.percent",
        "deprecated",
    ),
    (
        VS_FILE,
        "spec.http[0].mirrorPercentage",
        {"value": 10},
        VS,
        "spec.http[0].mirrorPercentage",
        "needs a mirror",
    ),
    (
        VS_FILE,
        "spec.http[0].headers",
        {"request": {"set": {":authority": "x"}}},
        VS,
        "spec.http[0].headers.request.set[':authority']",
        "not supported",
    ),
    (
        VS_FILE,
        "spec.http[0].headers",
        {"response": {"remove": ["host"]}},
        VS,
        "spec.http[0].headers.response.remove[0]",
        "not supported",
    ),
    # --- VirtualService: hosts, gateways, names
    (VS_FILE, "spec.hosts", [], VS, "spec.hosts", "at least one host"),
    (VS_FILE, "spec.hosts", ["bad host!"], VS, "spec.hosts[0]", "not a valid host name"),
    (VS_FILE, "spec.gateways", ["a.b"], VS, "spec.gateways[0]", "namespace/name"),
    (VS_FILE, "spec.http[1].name", "grpc", VS, "spec.http[1].name", "duplicate http route name"),
    (VS_FILE, "spec.http", [], VS, "spec.http", "at least one http route"),
    (
        VS_FILE,
        "apiVersion",
        "networking.istio.io/v2",
        VS,
        "apiVersion",
        "supported: networking.istio.io/v1,",
    ),
    # --- DestinationRule: traffic policies other than loadBalancer.simple
    (
        DR_FILE,
        "spec.trafficPolicy",
        {"tls": {"mode": "ISTIO_MUTUAL"}},
        DR,
        "spec.trafficPolicy.tls",
        "loadBalancer.simple only",
    ),
    (
        DR_FILE,
        "spec.trafficPolicy",
        {"connectionPool": {}},
        DR,
        "spec.trafficPolicy.connectionPool",
        "not supported",
    ),
    (
        DR_FILE,
        "spec.trafficPolicy",
        {"outlierDetection": {}},
        DR,
        "spec.trafficPolicy.outlierDetection",
        "not supported",
    ),
    (
        DR_FILE,
        "spec.trafficPolicy",
        {"loadBalancer": {"consistentHash": {"httpHeaderName": "x"}}},
        DR,
        "spec.trafficPolicy.loadBalancer.consistentHash",
        "simple only",
    ),
    (
        DR_FILE,
        "spec.trafficPolicy",
        {"loadBalancer": {"simple": "PASSTHROUGH"}},
        DR,
        "spec.trafficPolicy.loadBalancer.simple",
        "PASSTHROUGH",
    ),
    (
        DR_FILE,
        "spec.subsets[0].trafficPolicy",
        {"portLevelSettings": []},
        DR,
        "spec.subsets[0].trafficPolicy.portLevelSettings",
        "not supported",
    ),
    (
        DR_FILE,
        "spec.subsets[1].name",
        "resnet101",
        DR,
        "spec.subsets[1].name",
        "duplicate subset name",
    ),
    (DR_FILE, "spec.subsets[0].name", "Res_101", DR, "spec.subsets[0].name", "invalid subset name"),
    (
        DR_FILE,
        "spec.subsets[0].labels",
        {"version": 101},
        DR,
        "spec.subsets[0].labels.version",
        "must be a string",
    ),
    (DR_FILE, "spec.host", "*.tf-serving.svc.cluster.local", DR, "spec.host", "wildcard"),
    (
        DR_FILE,
        "spec.workloadSelector",
        {"matchLabels": {}},
        DR,
        "spec.workloadSelector",
        "not supported",
    ),
    # --- Gateway
    (GW_FILE, "spec.servers[0].tls", {"mode": "SIMPLE"}, GW, "spec.servers[0].tls", "plain-text"),
    (
        GW_FILE,
        "spec.servers[0].port.protocol",
        "HTTPS",
        GW,
        "spec.servers[0].port.protocol",
        "supported: HTTP, HTTP2, GRPC",
    ),
    (GW_FILE, "spec.servers[0].hosts", [], GW, "spec.servers[0].hosts", "at least one host"),
    (
        GW_FILE,
        "spec.servers[0].hosts",
        ["Bad_NS/*"],
        GW,
        "spec.servers[0].hosts[0]",
        "invalid namespace",
    ),
    (GW_FILE, "spec.servers", [], GW, "spec.servers", "at least one server"),
    # --- Service
    (
        SVC_FILE,
        "spec.ports[0].targetPort",
        "not_a_name!",
        SVC,
        "spec.ports[0].targetPort",
        "invalid port name",
    ),
    (SVC_FILE, "spec.ports[0].name", DELETE, SVC, "spec.ports[0]", "name is required"),
    (SVC_FILE, "spec.ports[1].port", 8500, SVC, "spec.ports[1].port", "duplicate port 8500"),
    (SVC_FILE, "spec.ports[0].protocol", "UDP", SVC, "spec.ports[0].protocol", "TCP only"),
    (SVC_FILE, "spec.type", "ExternalName", SVC, "spec.type", "not supported"),
    (SVC_FILE, "spec.clusterIP", "None", SVC, "spec.clusterIP", "headless"),
    (
        SVC_FILE,
        "spec.publishNotReadyAddresses",
        True,
        SVC,
        "spec.publishNotReadyAddresses",
        "ready pods only",
    ),
    (SVC_FILE, "spec.ports", [], SVC, "spec.ports", "at least one port"),
    (
        SVC_FILE,
        "metadata.name",
        "9lives",
        "Service/tf-serving/9lives",
        "metadata.name",
        "starts with a letter",
    ),
    # --- Deployment
    (
        DEP_FILE,
        "spec.template.metadata.labels.version",
        "resnet101",
        DEP,
        "spec.template.metadata.labels",
        "selector does not match template labels",
    ),
    (
        DEP_FILE,
        "spec.selector.matchExpressions",
        [{"key": "a", "operator": "Exists"}],
        DEP,
        "spec.selector.matchExpressions",
        "matchLabels only",
    ),
    (DEP_FILE, f"{CONTAINER}.workingDir", "/srv", DEP, f"{CONTAINER}.workingDir", "not supported"),
    (DEP_FILE, f"{CONTAINER}.bogus", 1, DEP, f"{CONTAINER}.bogus", "unknown or unsupported field"),
    (
        DEP_FILE,
        f"{CONTAINER}.volumeMounts[0].name",
        "nope",
        DEP,
        f"{CONTAINER}.volumeMounts[0].name",
        "no volume named 'nope'",
    ),
    (
        DEP_FILE,
        f"{CONTAINER}.readinessProbe",
        {"exec": {"command": ["true"]}},
        DEP,
        f"{CONTAINER}.readinessProbe.exec",
        "over the network",
    ),
    (
        DEP_FILE,
        f"{CONTAINER}.readinessProbe.tcpSocket.port",
        "nope",
        DEP,
        f"{CONTAINER}.readinessProbe.tcpSocket.port",
        "no port named 'nope'",
    ),
    (
        DEP_FILE,
        f"{CONTAINER}.envFrom[0]",
        {"secretRef": {"name": "s"}},
        DEP,
        f"{CONTAINER}.envFrom[0].secretRef",
        "Secrets",
    ),
    (
        DEP_FILE,
        f"{CONTAINER}.env",
        [{"name": "A", "valueFrom": {"fieldRef": {}}}],
        DEP,
        f"{CONTAINER}.env[0].valueFrom.fieldRef",
        "downward API",
    ),
    (DEP_FILE, f"{CONTAINER}.args", ["--port", 8500], DEP, f"{CONTAINER}.args[1]", "quote it"),
    # --- Deployment: what a local pod may reach (mesh/pod_confinement.py)
    (
        DEP_FILE,
        f"{CONTAINER}.env",
        [{"name": "PYTHONPATH", "value": "/tmp/site"}],
        DEP,
        f"{CONTAINER}.env[0].name",
        "PYTHONPATH cannot be set on the local mesh: PYTHON* variables",
    ),
    (
        DEP_FILE,
        f"{CONTAINER}.env",
        [{"name": "MODEL_NAME", "value": "m"}, {"name": "CANARY_BIND_HOST", "value": "0.0.0.0"}],
        DEP,
        f"{CONTAINER}.env[1].name",
        "CANARY_BIND_HOST cannot be set on the local mesh: CANARY_* names",
    ),
    (
        DEP_FILE,
        f"{CONTAINER}.env",
        [{"name": "LD_PRELOAD", "value": "/tmp/x.so"}],
        DEP,
        f"{CONTAINER}.env[0].name",
        "dynamic loader",
    ),
    (
        DEP_FILE,
        f"{CONTAINER}.env",
        [{"name": "PYTHONSAFEPATH", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}],
        DEP,
        f"{CONTAINER}.env[0].name",
        "PYTHON* variables",
    ),
    (
        DEP_FILE,
        f"{CONTAINER}.env",
        [{"name": "TF_PLUGGABLE_DEVICE_LIBRARY_PATH", "value": "/tmp"}],
        DEP,
        f"{CONTAINER}.env[0].name",
        "TensorFlow loads shared libraries",
    ),
    (
        DEP_FILE,
        f"{CONTAINER}.env",
        [{"name": "GLIBC_TUNABLES", "value": "glibc.rtld.nns=8"}],
        DEP,
        f"{CONTAINER}.env[0].name",
        "dynamic loader",
    ),
    (
        DEP_FILE,
        f"{CONTAINER}.env",
        [
            {"name": "TF_CPP_MIN_LOG_LEVEL", "value": "1"},
            {"name": "OMP_NUM_THREADS", "value": "2"},
            {"name": "MALLOC_ARENA_MAX", "value": "2"},
            {"name": "MODEL_NAME", "value": "resnet50"},
        ],
        DEP,
        "",
        "",
    ),  # valid: ordinary variables stay allowed
    (
        DEP_FILE,
        f"{CONTAINER}.envFrom[0].prefix",
        "CANARY_",
        DEP,
        f"{CONTAINER}.envFrom[0].prefix",
        "makes every variable it sets a CANARY_* name",
    ),
    (
        DEP_FILE,
        f"{CONTAINER}.envFrom[0].prefix",
        "LD_X",
        DEP,
        f"{CONTAINER}.envFrom[0].prefix",
        "LD_* name",
    ),
    (DEP_FILE, f"{CONTAINER}.envFrom[0].prefix", "APP_", DEP, "", ""),  # valid
    (
        DEP_FILE,
        "spec.template.spec.volumes[0]",
        {"name": "models", "hostPath": {"path": "models"}},
        DEP,
        "spec.template.spec.volumes[0].hostPath.path",
        "the hostPath 'models' is not an absolute path",
    ),
    (
        DEP_FILE,
        "spec.template.spec.volumes[0]",
        {"name": "models", "hostPath": {"path": "/srv/store/../../etc"}},
        DEP,
        "spec.template.spec.volumes[0].hostPath.path",
        "has a '..' segment",
    ),
    (
        DEP_FILE,
        f"{CONTAINER}.volumeMounts[0].mountPath",
        "models",
        DEP,
        f"{CONTAINER}.volumeMounts[0].mountPath",
        "the mount path 'models' is not an absolute path",
    ),
    (
        DEP_FILE,
        f"{CONTAINER}.volumeMounts[0].mountPath",
        "/models/../etc",
        DEP,
        f"{CONTAINER}.volumeMounts[0].mountPath",
        "has a '..' segment",
    ),
    (
        DEP_FILE,
        f"{CONTAINER}.ports[1].containerPort",
        8501,
        DEP,
        f"{CONTAINER}.ports[1].containerPort",
        "duplicate containerPort",
    ),
    (
        DEP_FILE,
        "spec.template.spec.initContainers",
        [],
        DEP,
        "spec.template.spec.initContainers",
        "not supported",
    ),
    (
        DEP_FILE,
        "spec.template.spec.volumes[0]",
        {"name": "models", "secret": {}},
        DEP,
        "spec.template.spec.volumes[0].secret",
        "configMap volumes only",
    ),
    (DEP_FILE, "spec.replicas", "1", DEP, "spec.replicas", "must be an integer"),
    (DEP_FILE, "metadata.labels.version", 2, DEP, "metadata.labels.version", "must be a string"),
    (
        DEP_FILE,
        "metadata.labels",
        {"bad key!": "x"},
        DEP,
        "metadata.labels['bad key!']",
        "invalid label key",
    ),
    (DEP_FILE, "metadata.generateName", "x-", DEP, "metadata.generateName", "fixed metadata.name"),
    (DEP_FILE, "apiVersion", "apps/v1beta1", DEP, "apiVersion", "supported: apps/v1"),
    # --- ConfigMap, Namespace, metadata
    (
        "base/configmaps.yaml",
        "data.MODEL_NAME",
        5,
        "ConfigMap/tf-serving/resnet50-configs",
        "data.MODEL_NAME",
        "must be a string",
    ),
    (
        "base/configmaps.yaml",
        "binaryData",
        {"a": "AA=="},
        "ConfigMap/tf-serving/resnet50-configs",
        "binaryData",
        "as text only",
    ),
    (
        "base/namespace.yaml",
        "metadata.name",
        "Bad_NS",
        "Namespace/Bad_NS",
        "metadata.name",
        "lower-case",
    ),
    (
        SVC_FILE,
        "metadata.namespace",
        "Not!Valid",
        "document 1",
        "metadata.namespace",
        "invalid namespace name",
    ),
    (SVC_FILE, "metadata.name", DELETE, "document 1", "metadata.name", "is required"),
    (
        SVC_FILE,
        "kind",
        "Secret",
        "document 1",
        "kind",
        "kind 'Secret' (v1) is not supported (supported kinds: Namespace,",
    ),
    (SVC_FILE, "kind", DELETE, "document 1", "kind", "is required"),
]


def _id(case: tuple[str, str, object, str, str, str]) -> str:
    return f"{case[0].split('/')[-1].removesuffix('.yaml')}:{case[1]}={case[2]!r}"[:90]


@pytest.mark.parametrize(
    ("file", "path", "value", "obj", "field", "fragment"), CASES, ids=[_id(c) for c in CASES]
)
def test_each_bad_field_is_named(
    file: str, path: str, value: object, obj: str, field: str, fragment: str
) -> None:
    doc = edit(manifest(file), path, value)
    if not field:  # a valid edit: parsing must succeed
        parse(doc)
        return
    with pytest.raises(ManifestError) as caught:
        parse(doc, source=f"manifests/{file}")
    error = caught.value
    assert (error.file, error.obj, error.field) == (f"manifests/{file}", obj, field), error
    assert fragment in error.message, error.message
    assert str(error).startswith(f"manifests/{file}: {obj}: {field}: ")


def test_a_document_that_is_not_a_mapping() -> None:
    with pytest.raises(ManifestError) as caught:
        parse(["not", "a", "mapping"])  # type: ignore[arg-type]
    assert (caught.value.obj, caught.value.field) == ("document 1", "")
    assert "must be a mapping" in caught.value.message


def test_the_gateway_api_is_pointed_to_istio_objects() -> None:
    route: dict[str, Any] = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r"},
    }
    with pytest.raises(ManifestError) as caught:
        parse(route)
    assert caught.value.field == "kind"
    assert "Gateway API" in caught.value.message and "networking.istio.io" in caught.value.message


def test_an_object_given_twice_names_both_files() -> None:
    service = manifest(SVC_FILE)
    with pytest.raises(ManifestError) as caught:
        list(parse(service, source="a.yaml")) + list(parse(service, service, source="b.yaml"))
    assert (caught.value.file, caught.value.obj, caught.value.field) == (
        "b.yaml",
        SVC,
        "metadata.name",
    )
    assert "also defined in b.yaml" in caught.value.message


def test_list_items_are_named_by_position_until_they_have_a_name() -> None:
    bad = edit(manifest(SVC_FILE), "metadata.name", DELETE)
    listing = {"apiVersion": "v1", "kind": "List", "items": [manifest(GW_FILE), bad]}
    with pytest.raises(ManifestError) as caught:
        parse(listing)
    assert (caught.value.obj, caught.value.field) == ("document 1, item 1", "metadata.name")
