"""The two validation profiles: the local mesh refuses what it does not implement, a cluster
takes what Kubernetes and Istio define; both refuse unknown fields and what Istio refuses too.

Each case edits one field of a walkthrough manifest. A local-only case must be
refused for the local target exactly where it was before (file, object, field)
and accepted for the cluster target, the field kept in the raw document that
is applied. A refused case must be refused for both, at the same place.
"""

from __future__ import annotations

from typing import Any

import pytest

from canary.errors import ManifestError
from mesh.manifest_fields import CLUSTER, LOCAL, Target
from mesh.manifests import KIND_ORDER, apply, kind_rank, parse_objects, validate_set
from mesh.model import Deployment, DestinationRule, OtherObject, Service, VirtualService
from tests.mesh.docs import edit, manifest

VS_FILE, VS = "routing/virtualservice-weight-70.yaml", "VirtualService/tf-serving/image-classifier"
DR_FILE, DR = "base/destinationrule.yaml", "DestinationRule/tf-serving/image-classifier"
GW_FILE, GW = "base/gateway.yaml", "Gateway/tf-serving/image-classifier-gateway"
SVC_FILE, SVC = "base/service.yaml", "Service/tf-serving/image-classifier"
DEP_FILE, DEP = "base/deployment-resnet50.yaml", "Deployment/tf-serving/image-classifier-resnet50"
CM_FILE, CM = "base/configmaps.yaml", "ConfigMap/tf-serving/resnet50-configs"
CONTAINER = "spec.template.spec.containers[0]"
TO_8500 = {"destination": {"host": "image-classifier", "port": {"number": 8500}}}
SECRET_KEY = {"secretKeyRef": {"name": "model-credentials", "key": "token"}}

# (manifest, edited path, new value, field the local mesh names)
LOCAL_ONLY: list[tuple[str, str, object, str]] = [
    # --- VirtualService
    (
        VS_FILE,
        "spec.http[0].corsPolicy",
        {"allowOrigins": [{"exact": "https://example.com"}], "allowMethods": ["POST"]},
        "spec.http[0].corsPolicy",
    ),
    (VS_FILE, "spec.http[0].rewrite", {"uri": "/v1/models"}, "spec.http[0].rewrite"),
    (VS_FILE, "spec.http[1]", {"redirect": {"uri": "/v2"}}, "spec.http[1].redirect"),
    (VS_FILE, "spec.http[1]", {"directResponse": {"status": 503}}, "spec.http[1].directResponse"),
    (VS_FILE, "spec.http[1]", {"delegate": {"name": "rest"}}, "spec.http[1].delegate"),
    (VS_FILE, "spec.http[0].mirrors", [TO_8500], "spec.http[0].mirrors"),
    (VS_FILE, "spec.http[0].mirrorPercent", 5, "spec.http[0].mirrorPercent"),
    (VS_FILE, "spec.tcp", [{"route": [TO_8500]}], "spec.tcp"),
    (
        VS_FILE,
        "spec.tls",
        [{"match": [{"sniHosts": ["a.example.com"]}], "route": [TO_8500]}],
        "spec.tls",
    ),
    (
        VS_FILE,
        "spec.http[0].match[0].queryParams",
        {"v": {"exact": "2"}},
        "spec.http[0].match[0].queryParams",
    ),
    (VS_FILE, "spec.http[0].match[0].headers", {"x-a": {}}, "spec.http[0].match[0].headers['x-a']"),
    (VS_FILE, "spec.http[0].match[0].uri", {"prefix": ""}, "spec.http[0].match[0].uri.prefix"),
    (
        VS_FILE,
        "spec.http[0].retries",
        {"attempts": 2, "backoff": "1s"},
        "spec.http[0].retries.backoff",
    ),
    (
        VS_FILE,
        "spec.http[0].fault",
        {"delay": {"fixedDelay": "1s", "percent": 5}},
        "spec.http[0].fault.delay.percent",
    ),
    (
        VS_FILE,
        "spec.http[0].headers",
        {"request": {"set": {":authority": "models.example.com"}}},
        "spec.http[0].headers.request.set[':authority']",
    ),
    (
        VS_FILE,
        "spec.http[0].headers",
        {"response": {"add": {"authority": "x"}}},
        "spec.http[0].headers.response.add.authority",
    ),
    (VS_FILE, "spec.http[0].route[1].weight", 20, "spec.http[0].route"),  # relative in Istio
    (
        VS_FILE,
        "spec.http[0].route[0].destination.host",
        "*.tf-serving.svc.cluster.local",
        "spec.http[0].route[0].destination.host",
    ),
    (
        VS_FILE,
        "spec.gateways",
        ["image-classifier-gateway.tf-serving.svc.cluster.local"],  # Istio's legacy form
        "spec.gateways[0]",
    ),
    (VS_FILE, "spec.hosts", [], "spec.hosts"),  # a delegate VirtualService
    # --- DestinationRule and Gateway
    (
        DR_FILE,
        "spec.trafficPolicy",
        {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}},
        "spec.trafficPolicy.loadBalancer.consistentHash",
    ),
    (
        DR_FILE,
        "spec.trafficPolicy",
        {"outlierDetection": {"consecutive5xxErrors": 5}},
        "spec.trafficPolicy.outlierDetection",
    ),
    (
        DR_FILE,
        "spec.subsets[0].trafficPolicy",
        {"tls": {"mode": "ISTIO_MUTUAL"}},
        "spec.subsets[0].trafficPolicy.tls",
    ),
    (
        DR_FILE,
        "spec.trafficPolicy",
        {"loadBalancer": {"simple": "PASSTHROUGH"}},
        "spec.trafficPolicy.loadBalancer.simple",
    ),
    (DR_FILE, "spec.host", "*.tf-serving.svc.cluster.local", "spec.host"),
    (DR_FILE, "spec.workloadSelector", {"matchLabels": {"app": "x"}}, "spec.workloadSelector"),
    (
        GW_FILE,
        "spec.servers[0]",
        {
            "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
            "hosts": ["*"],
            "tls": {"mode": "SIMPLE", "credentialName": "ingress-cert"},
        },
        "spec.servers[0].tls",
    ),
    (GW_FILE, "spec.servers[0].port.protocol", "TCP", "spec.servers[0].port.protocol"),
    # --- Service
    (SVC_FILE, "spec.clusterIP", "None", "spec.clusterIP"),  # headless
    (SVC_FILE, "spec.type", "ExternalName", "spec.type"),
    (SVC_FILE, "spec.externalName", "models.example.com", "spec.externalName"),
    (SVC_FILE, "spec.ports[0].protocol", "UDP", "spec.ports[0].protocol"),
    (SVC_FILE, "spec.trafficDistribution", "PreferClose", "spec.trafficDistribution"),
    # --- Deployment
    (
        DEP_FILE,
        f"{CONTAINER}.readinessProbe",
        {"exec": {"command": ["grpc_health_probe", "-addr=:8500"]}, "periodSeconds": 5},
        f"{CONTAINER}.readinessProbe.exec",
    ),
    (
        DEP_FILE,
        f"{CONTAINER}.readinessProbe",
        {"httpGet": {"port": 8501, "path": "/v1/models/image_classifier", "scheme": "HTTPS"}},
        f"{CONTAINER}.readinessProbe.httpGet.scheme",
    ),
    (
        DEP_FILE,
        f"{CONTAINER}.env",
        [{"name": "TOKEN", "valueFrom": SECRET_KEY}],
        f"{CONTAINER}.env[0].valueFrom.secretKeyRef",
    ),
    (
        DEP_FILE,
        f"{CONTAINER}.env",
        [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        f"{CONTAINER}.env[0].valueFrom.fieldRef",
    ),
    (
        DEP_FILE,
        f"{CONTAINER}.envFrom[0]",
        {"secretRef": {"name": "model-credentials"}},
        f"{CONTAINER}.envFrom[0].secretRef",
    ),
    (DEP_FILE, f"{CONTAINER}.workingDir", "/srv", f"{CONTAINER}.workingDir"),
    (
        DEP_FILE,
        f"{CONTAINER}.lifecycle",
        {"preStop": {"exec": {"command": ["sleep", "5"]}}},
        f"{CONTAINER}.lifecycle",
    ),
    (DEP_FILE, f"{CONTAINER}.ports[0].protocol", "SCTP", f"{CONTAINER}.ports[0].protocol"),
    (
        DEP_FILE,
        "spec.template.spec.initContainers",
        [{"name": "fetch", "image": "busybox"}],
        "spec.template.spec.initContainers",
    ),
    (DEP_FILE, "spec.template.spec.hostNetwork", True, "spec.template.spec.hostNetwork"),
    (
        DEP_FILE,
        "spec.template.spec.runtimeClassName",
        "gvisor",
        "spec.template.spec.runtimeClassName",
    ),
    (
        DEP_FILE,
        "spec.selector.matchExpressions",
        [{"key": "app", "operator": "Exists"}],
        "spec.selector.matchExpressions",
    ),
    (
        DEP_FILE,
        "spec.template.spec.volumes[0]",
        {"name": "models", "secret": {"secretName": "models"}},
        "spec.template.spec.volumes[0].secret",
    ),
    # what a local pod may reach (a cluster's containers have their own files and env)
    (DEP_FILE, f"{CONTAINER}.env", [{"name": "PYTHONPATH", "value": "/app"}], f"{CONTAINER}.env[0].name"),
    (DEP_FILE, f"{CONTAINER}.envFrom[0].prefix", "CANARY_", f"{CONTAINER}.envFrom[0].prefix"),
    (
        DEP_FILE,
        "spec.template.spec.volumes[0]",
        {"name": "models", "hostPath": {"path": "models"}},
        "spec.template.spec.volumes[0].hostPath.path",
    ),
    (DEP_FILE, f"{CONTAINER}.volumeMounts[0].mountPath", "models", f"{CONTAINER}.volumeMounts[0].mountPath"),
    # --- ConfigMap, metadata
    (CM_FILE, "binaryData", {"weights": "AAEC"}, "binaryData"),
    (SVC_FILE, "metadata.generateName", "image-classifier-", "metadata.generateName"),
]

# (manifest, edited path, new value, field named for both targets, message fragment)
REFUSED: list[tuple[str, str, object, str, str]] = [
    (VS_FILE, "spec.http[0].corsPolicyy", {}, "spec.http[0].corsPolicyy", "unknown"),
    (VS_FILE, "spec.http[0].rewrit", {"uri": "/"}, "spec.http[0].rewrit", "unknown"),
    (VS_FILE, "spec.delegate", {"name": "x"}, "spec.delegate", "not a VirtualService field"),
    (
        VS_FILE,
        "spec.http[0].fault",
        {"delay": {"exponentialDelay": "1s"}},
        "spec.http[0].fault.delay.exponentialDelay",
        "Istio either",
    ),
    (
        VS_FILE,
        "spec.http[0].fault",
        {"abort": {"http2Error": "CANCEL"}},
        "spec.http[0].fault.abort.http2Error",
        "Istio either",
    ),
    (
        VS_FILE,
        "spec.http[0].route",
        [{**TO_8500, "weight": 0}, {**TO_8500, "weight": 0}],
        "spec.http[0].route",
        "add up to 0",
    ),
    (
        VS_FILE,
        "spec.http[0].route[0].destination.host",
        "*",
        "spec.http[0].route[0].destination.host",
        "",
    ),
    (
        VS_FILE,
        "spec.http[0].headers",
        {"response": {"set": {"host": "x"}}},
        "spec.http[0].headers.response.set.host",
        "host",
    ),
    (
        VS_FILE,
        "spec.http[0].headers",
        {"request": {"set": {":path": "/x"}}},
        "spec.http[0].headers.request.set[':path']",
        ":path",
    ),
    (
        VS_FILE,
        "spec.http[0].match[0].uri",
        {"regex": "/a(?=b)"},
        "spec.http[0].match[0].uri.regex",
        "lookahead",
    ),
    (
        VS_FILE,
        "spec.http[0].match[0].method",
        {"prefix": ""},
        "spec.http[0].match[0].method.prefix",
        "must not be empty",
    ),
    (VS_FILE, "spec.http[0].route", None, "spec.http[0].route", "is required"),
    (VS_FILE, "spec.gateways", ["Bad_Gateway"], "spec.gateways[0]", "Gateway reference"),
    (
        DR_FILE,
        "spec.trafficPolicy",
        {"loadBalancer": {"simple": "FASTEST"}},
        "spec.trafficPolicy.loadBalancer.simple",
        "FASTEST",
    ),
    (GW_FILE, "spec.servers[0].port.protocol", "QUIC", "spec.servers[0].port.protocol", "QUIC"),
    (SVC_FILE, "spec.type", "Bogus", "spec.type", "'Bogus'"),
    (SVC_FILE, "spec.ports[0].protocol", "HTTP", "spec.ports[0].protocol", "HTTP"),
    (SVC_FILE, "spec.ports", [], "spec.ports", "at least one port"),
    (DEP_FILE, f"{CONTAINER}.imagee", "x", f"{CONTAINER}.imagee", "unknown"),
    (
        DEP_FILE,
        f"{CONTAINER}.readinessProbe",
        {"tcpSocket": {"port": 8500}, "httpGet": {"port": 8501}},
        f"{CONTAINER}.readinessProbe",
        "exactly one handler",
    ),
    (
        DEP_FILE,
        f"{CONTAINER}.readinessProbe",
        {"httpGet": {"port": 8501, "scheme": "FTP"}},
        f"{CONTAINER}.readinessProbe.httpGet.scheme",
        "HTTP or HTTPS",
    ),
    (
        DEP_FILE,
        "spec.template.spec.volumes[0]",
        {"name": "models", "hostPath": {"path": "/models"}, "emptyDir": {}},
        "spec.template.spec.volumes[0]",
        "exactly one source",
    ),
    (DEP_FILE, "spec.selector.matchLabels", {}, "spec.selector.matchLabels", "at least one"),
    (DEP_FILE, "metadata.name", "Bad_Name", "metadata.name", "invalid name"),
    (CM_FILE, "data.MODEL_NAME", 5, "data.MODEL_NAME", "must be a string"),
]


def _parse(doc: dict[str, Any], file: str, target: Target) -> list[Any]:
    return list(parse_objects([(f"manifests/{file}", doc)], target=target))


def _raw_at(doc: dict[str, Any], path: str) -> object:
    value: Any = doc
    for part in path.replace("[", ".[").split("."):
        value = value[int(part[1:-1])] if part.startswith("[") else value[part]
    return value


@pytest.mark.parametrize(
    ("file", "path", "value", "field"), LOCAL_ONLY, ids=[f"{c[0]}:{c[1]}" for c in LOCAL_ONLY]
)
def test_local_only_fields_are_refused_locally_and_kept_for_a_cluster(
    file: str, path: str, value: object, field: str
) -> None:
    doc = edit(manifest(file), path, value)
    original = next(o for o in parse_objects([("x", manifest(file))]))
    with pytest.raises(ManifestError) as caught:
        _parse(doc, file, LOCAL)
    error = caught.value
    assert (error.file, error.obj, error.field) == (f"manifests/{file}", str(original.ref), field)
    (obj,) = _parse(doc, file, CLUSTER)
    assert type(obj) is type(original) and obj.ref == original.ref
    assert _raw_at(obj.raw, path) == value  # left in the document the cluster gets


@pytest.mark.parametrize(
    ("file", "path", "value", "field", "fragment"),
    REFUSED,
    ids=[f"{c[0]}:{c[1]}={c[2]!r}"[:80] for c in REFUSED],
)
@pytest.mark.parametrize("target", [LOCAL, CLUSTER], ids=["local", "cluster"])
def test_what_kubernetes_or_istio_refuse_is_refused_for_both(
    file: str, path: str, value: object, field: str, fragment: str, target: Target
) -> None:
    doc = edit(manifest(file), path, value)
    with pytest.raises(ManifestError) as caught:
        _parse(doc, file, target)
    error = caught.value
    named = error.obj.split("/")[0] == manifest(file)["kind"]
    assert (error.file, named, error.field) == (f"manifests/{file}", True, field), error
    assert fragment in error.message, error.message


# --- kinds the local mesh does not know ------------------------------------------------

OTHER_KINDS: list[tuple[dict[str, Any], str]] = [
    ({"apiVersion": "v1", "kind": "ServiceAccount"}, "ServiceAccount/tf-serving/model-server"),
    (
        {"apiVersion": "v1", "kind": "Secret", "stringData": {"token": "t"}},
        "Secret/tf-serving/model-server",
    ),
    (
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "rules": []},
        "Role/tf-serving/model-server",
    ),
    (
        {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {}}}},
        "Job/tf-serving/model-server",
    ),
    (
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "spec": {}},
        "HTTPRoute/tf-serving/model-server",
    ),
    (
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "spec": {}},
        "Gateway/tf-serving/model-server",
    ),
    (
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole"},
        "ClusterRole/model-server",
    ),
]


@pytest.mark.parametrize(("doc", "ref"), OTHER_KINDS, ids=[r for _, r in OTHER_KINDS])
def test_other_kinds_are_applied_as_written_on_a_cluster_only(
    doc: dict[str, Any], ref: str
) -> None:
    doc = {**doc, "metadata": {"name": "model-server", "namespace": "tf-serving"}}
    (obj,) = parse_objects([("extra.yaml", doc)], target=CLUSTER)
    assert isinstance(obj, OtherObject) and str(obj.ref) == ref
    assert obj.raw == doc and obj.api_version == doc["apiVersion"]
    with pytest.raises(ManifestError) as caught:
        parse_objects([("extra.yaml", doc)])
    assert caught.value.file == "extra.yaml"
    assert caught.value.field in ("kind", "apiVersion")  # as before: not a local-mesh kind
    if doc["apiVersion"].startswith("gateway.networking.k8s.io/") and doc["kind"] != "Gateway":
        assert "Gateway API" in caught.value.message


@pytest.mark.parametrize(
    ("metadata", "field", "fragment"),
    [
        ({"namespace": "tf-serving"}, "metadata.name", "is required"),
        ({"name": "a/b"}, "metadata.name", "without '/'"),
        ({"name": "x", "namespace": "Bad_NS"}, "metadata.namespace", "invalid namespace"),
        ({"name": "x", "labels": {"a": 1}}, "metadata.labels.a", "must be a string"),
        ({"name": "x", "uid2": "u"}, "metadata.uid2", "unknown"),
    ],
)
def test_other_kinds_need_a_valid_identity(
    metadata: dict[str, Any], field: str, fragment: str
) -> None:
    doc = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata}
    with pytest.raises(ManifestError) as caught:
        parse_objects([("sa.yaml", doc)], target=CLUSTER)
    assert (caught.value.file, caught.value.field) == ("sa.yaml", field)
    assert fragment in caught.value.message


def test_other_kinds_need_a_valid_api_version_and_kind() -> None:
    for doc, field in (
        ({"apiVersion": "rbac/v1/x", "kind": "Role"}, "apiVersion"),
        ({"apiVersion": "v1", "kind": "Service Account"}, "kind"),
        ({"apiVersion": "networking.istio.io/v2", "kind": "VirtualService"}, "apiVersion"),
        ({"apiVersion": "apps/v1beta1", "kind": "Deployment"}, "apiVersion"),
    ):
        with pytest.raises(ManifestError) as caught:
            parse_objects([("o.yaml", {**doc, "metadata": {"name": "x"}})], target=CLUSTER)
        assert caught.value.field == field


def test_rbac_names_may_hold_colons_and_cluster_scoped_kinds_have_no_namespace() -> None:
    doc = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "system:canary-reader", "namespace": "ignored"},
    }
    (obj,) = parse_objects([("crb.yaml", doc)], target=CLUSTER)
    assert str(obj.ref) == "ClusterRoleBinding/system:canary-reader"


def test_kind_order_puts_identities_and_config_before_workloads_and_routing_last() -> None:
    order = [
        "Namespace",
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "PersistentVolumeClaim",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "Job",
        "Certificate",  # any other kind: after the workloads, before Istio's routing
        "Gateway",
        "DestinationRule",
        "VirtualService",
    ]
    assert [kind_rank(k) for k in order] == sorted(kind_rank(k) for k in order)
    assert kind_rank("ServiceAccount") < kind_rank("Deployment") < kind_rank("Job")
    assert KIND_ORDER[-3:] == ("Gateway", "DestinationRule", "VirtualService")


# --- cross-references: the whole mesh locally, the batch on a cluster ------------------


def test_a_virtual_service_alone_is_checked_against_the_cluster_not_the_batch() -> None:
    vs = manifest(VS_FILE)
    with pytest.raises(ManifestError) as caught:
        apply([], parse_objects([(VS_FILE, vs)]))
    assert caught.value.field == "metadata.namespace"  # no namespace, no Service, ... locally
    (obj,) = parse_objects([(VS_FILE, vs)], target=CLUSTER)
    assert isinstance(obj, VirtualService)
    validate_set([obj], target=CLUSTER)  # the cluster has them; its dry run says if not


def test_a_route_to_a_subset_the_batch_does_not_define_is_refused_on_a_cluster_too() -> None:
    vs = edit(manifest(VS_FILE), "spec.http[1].route[1].destination.subset", "resnet152")
    objects = parse_objects([(DR_FILE, manifest(DR_FILE)), (VS_FILE, vs)], target=CLUSTER)
    with pytest.raises(ManifestError) as caught:
        validate_set([o for o in objects if not isinstance(o, OtherObject)], target=CLUSTER)
    assert (caught.value.file, caught.value.obj, caught.value.field) == (
        VS_FILE,
        VS,
        "spec.http[1].route[1].destination.subset",
    )
    assert "resnet152" in caught.value.message
    merged = edit(manifest(DR_FILE), "metadata.name", "image-classifier-152")
    merged = edit(merged, "spec.subsets", [{"name": "resnet152", "labels": {"version": "x"}}])
    more = parse_objects(
        [(DR_FILE, manifest(DR_FILE)), ("dr.yaml", merged), (VS_FILE, vs)], target=CLUSTER
    )
    validate_set(
        [o for o in more if isinstance(o, DestinationRule | VirtualService)], target=CLUSTER
    )


def test_a_route_to_a_port_the_batch_service_lacks_is_refused_on_a_cluster_too() -> None:
    vs = edit(manifest(VS_FILE), "spec.http[0].route[0].destination.port.number", 9000)
    objects = parse_objects([(SVC_FILE, manifest(SVC_FILE)), (VS_FILE, vs)], target=CLUSTER)
    with pytest.raises(ManifestError) as caught:
        validate_set(
            [o for o in objects if isinstance(o, Service | VirtualService)], target=CLUSTER
        )
    assert caught.value.field == "spec.http[0].route[0].destination.port.number"


def test_a_cluster_model_leaves_out_what_it_does_not_implement() -> None:
    doc = edit(
        manifest(DEP_FILE),
        f"{CONTAINER}.env",
        [{"name": "TOKEN", "valueFrom": SECRET_KEY}, {"name": "A", "value": "1"}],
    )
    doc = edit(doc, f"{CONTAINER}.readinessProbe", {"exec": {"command": ["true"]}})
    (deployment,) = parse_objects([(DEP_FILE, doc)], target=CLUSTER)
    assert isinstance(deployment, Deployment)
    (container,) = deployment.containers
    assert [e.name for e in container.env] == ["A"] and container.readiness_probe is None
