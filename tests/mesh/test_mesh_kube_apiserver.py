"""Cluster validation as the cluster does it: manifests the local mesh refuses go to a cluster.

The walkthrough's manifests, plus what a real deployment carries and the local
mesh does not implement (a VirtualService with a CORS policy, one with a
rewrite, a headless Service, an exec readiness probe, a Secret env ref, a
ServiceAccount, a Secret, a Role and RoleBinding, a Job), are validated for the
cluster, dry-run and applied through the official client against the fake API
server. The same files are refused for the local mesh, naming the file, the
object and the field.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from canary.errors import ManifestError
from mesh.api import default_manifests
from mesh.kube import KubeMesh
from mesh.manifest_fields import CLUSTER, LOCAL, Target
from mesh.manifests import load_manifests
from tests.mesh.docs import edit, manifest
from tests.mesh.fake_apiserver import FakeApiServer

CONTAINER = "spec.template.spec.containers[0]"
NS = "tf-serving"


def _rewrite_vs() -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "image-classifier-v1", "namespace": NS},
        "spec": {
            "hosts": ["models.example.com"],
            "gateways": ["image-classifier-gateway"],
            "http": [
                {
                    "name": "legacy",
                    "match": [{"uri": {"prefix": "/legacy/"}}],
                    "rewrite": {"uri": "/v1/models/"},
                    "route": [
                        {
                            "destination": {
                                "host": "image-classifier",
                                "subset": "resnet50",
                                "port": {"number": 8501},
                            }
                        }
                    ],
                }
            ],
        },
    }


def _identity() -> list[dict[str, Any]]:
    meta = {"name": "model-server", "namespace": NS}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "model-credentials", "namespace": NS},
            "stringData": {"token": "s3cr3t"},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "model-server",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "model-server", "namespace": NS}],
        },
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "warm-up", "namespace": NS},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "curl", "image": "curlimages/curl"}],
                    }
                }
            },
        },
    ]


def _headless_service() -> dict[str, Any]:
    service = edit(manifest("base/service.yaml"), "metadata.name", "image-classifier-pods")
    return edit(service, "spec.clusterIP", "None")


def _deployment() -> dict[str, Any]:
    doc = edit(
        manifest("base/deployment-resnet50.yaml"),
        f"{CONTAINER}.readinessProbe",
        {"exec": {"command": ["grpc_health_probe", "-addr=:8500"]}, "periodSeconds": 2},
    )
    doc = edit(
        doc,
        f"{CONTAINER}.env",
        [
            {
                "name": "MODEL_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": "model-credentials", "key": "token"}},
            }
        ],
    )
    return edit(doc, "spec.template.spec.serviceAccountName", "model-server")


def _cors_vs() -> dict[str, Any]:
    return edit(
        manifest("base/virtualservice.yaml"),
        "spec.http[0].corsPolicy",
        {"allowOrigins": [{"exact": "https://app.example.com"}], "allowMethods": ["POST"]},
    )


# file → (documents, what the local mesh names: object, field)
CLUSTER_ONLY: dict[str, tuple[list[dict[str, Any]], str, str]] = {
    "virtualservice.yaml": (
        [_cors_vs()],
        "VirtualService/tf-serving/image-classifier",
        "spec.http[0].corsPolicy",
    ),
    "virtualservice-rewrite.yaml": (
        [_rewrite_vs()],
        "VirtualService/tf-serving/image-classifier-v1",
        "spec.http[0].rewrite",
    ),
    "service-headless.yaml": (
        [_headless_service()],
        "Service/tf-serving/image-classifier-pods",
        "spec.clusterIP",
    ),
    "deployment-resnet50.yaml": (
        [_deployment()],
        "Deployment/tf-serving/image-classifier-resnet50",
        f"{CONTAINER}.env[0].valueFrom.secretKeyRef",
    ),
    "identity.yaml": (_identity(), "document 1", "kind"),
}


def _write(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    """manifests/base with the cluster-only files replacing or joining its own."""
    folder = tmp_path / "manifests"
    shutil.copytree(default_manifests("base"), folder)
    for name, (docs, _, _) in CLUSTER_ONLY.items():
        _write(folder / name, copy.deepcopy(docs))
    return folder


@pytest.mark.parametrize("name", CLUSTER_ONLY)
def test_each_cluster_only_file_is_refused_locally_naming_file_object_and_field(
    manifests: Path, name: str
) -> None:
    _, obj, field = CLUSTER_ONLY[name]
    with pytest.raises(ManifestError) as caught:
        load_manifests([manifests / name])
    assert (caught.value.file, caught.value.obj, caught.value.field) == (
        str(manifests / name),
        obj,
        field,
    )
    assert load_manifests([manifests / name], target=CLUSTER)


def test_cluster_only_manifests_are_dry_run_then_applied_in_order(
    api_server: FakeApiServer, kube_mesh: KubeMesh, manifests: Path
) -> None:
    result = kube_mesh.apply([manifests])
    dry, real = api_server.applies(dry_run=True), api_server.applies(dry_run=False)
    assert [r for r in api_server.requests if r.is_apply] == dry + real
    assert len(real) == len(result.applied) == 10 + 2 + len(_identity())
    order = [r.object_name for r in real]
    kinds = [name.split("/")[0] for name in order]
    assert kinds[0] == "Namespace"
    for first, then in [
        ("ServiceAccount", "Secret"),
        ("Secret", "ConfigMap"),
        ("ConfigMap", "Role"),
        ("Role", "RoleBinding"),
        ("RoleBinding", "Service"),
        ("Service", "Deployment"),
        ("Deployment", "Job"),
        ("Job", "Gateway"),
    ]:
        assert kinds.index(first) < kinds.index(then), order
    assert kinds[-2:] == ["VirtualService", "VirtualService"]
    sent = {r.object_name: r.body for r in real}
    assert sent["VirtualService/image-classifier"]["spec"]["http"][0]["corsPolicy"]
    assert sent["VirtualService/image-classifier-v1"]["spec"]["http"][0]["rewrite"]
    assert sent["Service/image-classifier-pods"]["spec"]["clusterIP"] == "None"
    pod = sent["Deployment/image-classifier-resnet50"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["readinessProbe"]["exec"]
    assert (
        pod["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "model-credentials"
    )
    assert sent["Secret/model-credentials"] == _identity()[1]
    assert api_server.stored("RoleBinding", NS, "model-server") is not None
    assert api_server.stored("Job", NS, "warm-up") is not None


def test_the_same_folder_is_refused_for_the_local_mesh(manifests: Path) -> None:
    with pytest.raises(ManifestError) as caught:
        load_manifests([manifests])
    # files in name order: deployment-resnet50.yaml is the first with a local-only field
    assert (caught.value.file, caught.value.obj, caught.value.field) == (
        str(manifests / "deployment-resnet50.yaml"),
        "Deployment/tf-serving/image-classifier-resnet50",
        f"{CONTAINER}.env[0].valueFrom.secretKeyRef",
    )


def test_a_dry_run_rejection_of_any_kind_applies_nothing(
    api_server: FakeApiServer, kube_mesh: KubeMesh, manifests: Path
) -> None:
    api_server.add_namespace(NS)
    api_server.reject(
        "VirtualService", "image-classifier-v1", "spec.http[0].rewrite: Invalid value"
    )
    with pytest.raises(ManifestError) as caught:
        kube_mesh.apply([manifests])
    assert caught.value.file == str(manifests / "virtualservice-rewrite.yaml")
    assert caught.value.obj == "VirtualService/tf-serving/image-classifier-v1"
    assert "Invalid value" in caught.value.message and "nothing was applied" in caught.value.message
    assert len(api_server.applies(dry_run=True)) == 17  # up to and including the refused one
    assert not api_server.applies(dry_run=False)


def test_a_rejected_service_account_applies_nothing(
    api_server: FakeApiServer, kube_mesh: KubeMesh, manifests: Path
) -> None:
    api_server.add_namespace(NS)
    api_server.reject(
        "ServiceAccount", "model-server", "forbidden by policy", code=403, reason="Forbidden"
    )
    with pytest.raises(ManifestError) as caught:
        kube_mesh.apply([manifests])
    assert caught.value.obj == "ServiceAccount/tf-serving/model-server"
    assert "forbidden by policy" in caught.value.message
    assert not api_server.applies(dry_run=False)


@pytest.mark.parametrize("target", [LOCAL, CLUSTER], ids=["local", "cluster"])
def test_a_typo_is_refused_for_both_targets(manifests: Path, target: Target) -> None:
    _write(
        manifests / "virtualservice.yaml",
        [edit(manifest("base/virtualservice.yaml"), "spec.http[0].corsPolicyy", {})],
    )
    with pytest.raises(ManifestError) as caught:
        load_manifests([manifests / "virtualservice.yaml"], target=target)
    assert (caught.value.obj, caught.value.field) == (
        "VirtualService/tf-serving/image-classifier",
        "spec.http[0].corsPolicyy",
    )
    assert "unknown or unsupported field" in caught.value.message


def test_a_typo_never_reaches_the_api_server(
    api_server: FakeApiServer, kube_mesh: KubeMesh, manifests: Path
) -> None:
    cors = _cors_vs()
    cors["spec"]["http"][0]["corsPolicyy"] = cors["spec"]["http"][0].pop("corsPolicy")
    _write(manifests / "virtualservice.yaml", [cors])
    with pytest.raises(ManifestError) as caught:
        kube_mesh.apply([manifests])
    assert caught.value.file == str(manifests / "virtualservice.yaml")
    assert caught.value.field == "spec.http[0].corsPolicyy"
    assert not [r for r in api_server.requests if r.is_apply]


def test_a_kind_the_cluster_does_not_serve_is_named(
    api_server: FakeApiServer, kube_mesh: KubeMesh, manifests: Path
) -> None:
    certificate = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {"name": "ingress", "namespace": NS},
        "spec": {"secretName": "ingress-cert"},
    }
    _write(manifests / "certificate.yaml", [certificate])
    with pytest.raises(ManifestError) as caught:
        kube_mesh.apply([manifests])
    assert (caught.value.obj, caught.value.field) == ("Certificate/tf-serving/ingress", "kind")
    assert "serves no Certificate in cert-manager.io/v1" in caught.value.message
    assert not api_server.applies(dry_run=False)
