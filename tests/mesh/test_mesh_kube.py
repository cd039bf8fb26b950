"""The kube backend through the official client, against a fake API server over HTTP.

Dry run first, dependency order, nothing half-applied, rollouts watched; the
kubeconfig is read as kubectl reads it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from canary.errors import ManifestError, MeshError
from mesh.api import default_manifests
from mesh.kube import KubeMesh, connect
from tests.mesh.fake_apiserver import FakeApiServer

BASE_OBJECTS = 10  # objects in manifests/base


def test_everything_is_dry_run_before_anything_is_applied(
    api_server: FakeApiServer, kube_mesh: KubeMesh
) -> None:
    result = kube_mesh.apply([default_manifests("base")])
    applies = [r for r in api_server.requests if r.is_apply]
    dry, real = api_server.applies(dry_run=True), api_server.applies(dry_run=False)
    assert applies == dry + real  # all dry runs first
    assert len(dry) == len(real) == len(result.applied) == BASE_OBJECTS
    kinds = [r.object_name.split("/")[0] for r in real]
    assert kinds[0] == "Namespace" and kinds[-1] == "VirtualService"
    assert kinds.index("ConfigMap") < kinds.index("Deployment") < kinds.index("Gateway")
    for request in applies:
        assert request.content_type == "application/apply-patch+yaml"
        assert request.query["fieldManager"] == ["canary"] and request.query["force"] == ["true"]
    assert sorted(result.rolled_out) == [
        "Deployment/tf-serving/image-classifier-resnet101",
        "Deployment/tf-serving/image-classifier-resnet50",
    ]
    stored = api_server.stored("VirtualService", "tf-serving", "image-classifier")
    assert stored is not None and stored["spec"]["http"][0]["route"]


def test_a_dry_run_in_an_existing_namespace_is_checked_too(
    api_server: FakeApiServer, kube_mesh: KubeMesh
) -> None:
    api_server.add_namespace("tf-serving")
    kube_mesh.apply([default_manifests("base")])
    paths = {r.path for r in api_server.applies(dry_run=True)}
    assert "/apis/apps/v1/namespaces/tf-serving/deployments/image-classifier-resnet50" in paths


def test_a_rejected_object_applies_nothing(api_server: FakeApiServer, kube_mesh: KubeMesh) -> None:
    api_server.add_namespace("tf-serving")
    api_server.reject("Gateway", "image-classifier-gateway", "admission webhook denied it")
    with pytest.raises(ManifestError) as info:
        kube_mesh.apply([default_manifests("base")])
    assert "admission webhook denied it" in str(info.value)
    assert "nothing was applied" in info.value.message
    assert info.value.file.endswith("gateway.yaml")
    assert info.value.obj == "Gateway/tf-serving/image-classifier-gateway"
    assert api_server.applies(dry_run=True) and not api_server.applies(dry_run=False)


def test_invalid_manifest_never_reaches_the_server(
    api_server: FakeApiServer, kube_mesh: KubeMesh, tmp_path: Path
) -> None:
    bad = tmp_path / "vs.yaml"
    routing = default_manifests("routing", "virtualservice-weight-70.yaml").read_text()
    bad.write_text(routing.replace("hosts:", "hostz:", 1))
    with pytest.raises(ManifestError) as info:
        kube_mesh.apply([default_manifests("base"), bad])
    assert (info.value.file, info.value.field) == (str(bad), "spec.hostz")
    assert not [r for r in api_server.requests if r.is_apply]


def test_rollout_timeout_is_a_clear_error(api_server: FakeApiServer, kube_mesh: KubeMesh) -> None:
    api_server.rolled_out = False
    with pytest.raises(MeshError, match="did not roll out within 10s"):
        kube_mesh.apply([default_manifests("base")], rollout_timeout=10)
    assert len(api_server.applies(dry_run=False)) == BASE_OBJECTS


def test_connect_reads_kubeconfig_from_the_environment(
    api_server: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = api_server.write_kubeconfig(tmp_path / "config", "canary-test")
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}:{config}")
    cache = tmp_path / "discovery.json"
    api = connect("canary-test", discovery_cache=cache)
    resource = api.resources.get(api_version="apps/v1", kind="Deployment")
    assert resource.namespaced and cache.exists()
    assert [r.path for r in api_server.requests][:2] == ["/version", "/apis"]


def test_connect_names_a_bad_kubeconfig_or_context(
    api_server: FakeApiServer, tmp_path: Path
) -> None:
    config = api_server.write_kubeconfig(tmp_path / "config", "canary-test")
    with pytest.raises(MeshError) as info:
        connect("no-such-context", config_file=config, discovery_cache=tmp_path / "d.json")
    assert str(info.value) == (
        f'the kubeconfig {config} has no context "no-such-context": its contexts are '
        "canary-test (current: canary-test)"
    )
    with pytest.raises(MeshError, match=r"no kubeconfig at .*missing: no such file"):
        connect(config_file=tmp_path / "missing", discovery_cache=tmp_path / "d.json")
    assert not api_server.requests


def test_an_unreachable_api_server_is_a_clear_error(
    api_server: FakeApiServer, tmp_path: Path
) -> None:
    config = api_server.write_kubeconfig(tmp_path / "config")
    api_server.stop()
    with pytest.raises(MeshError) as info:
        connect(config_file=config, discovery_cache=tmp_path / "d.json")
    assert str(info.value).startswith(
        f'cannot reach the API server {api_server.url} of context "fake": connection refused;'
    )


def test_a_namespace_neither_on_the_cluster_nor_in_the_manifests_is_refused(
    api_server: FakeApiServer, kube_mesh: KubeMesh
) -> None:
    routing = default_manifests("routing", "virtualservice-weight-70.yaml")
    with pytest.raises(ManifestError) as info:
        kube_mesh.apply([routing])
    assert (info.value.file, info.value.obj) == (
        str(routing),
        "VirtualService/tf-serving/image-classifier",
    )
    assert 'namespaces "tf-serving" not found' in info.value.message
    assert not api_server.applies(dry_run=False)
    api_server.add_namespace("tf-serving")  # applied alone: the cluster holds the rest
    assert kube_mesh.apply([routing]).applied == ["VirtualService/tf-serving/image-classifier"]


def test_a_failure_part_way_names_what_was_applied_and_the_cluster_problem(
    api_server: FakeApiServer, kube_mesh: KubeMesh
) -> None:
    api_server.fail("PATCH", 403, "Forbidden", "no", dry_run=False)
    with pytest.raises(MeshError) as info:
        kube_mesh.apply([default_manifests("base")])
    assert str(info.value) == (
        "applying Namespace/tf-serving failed after 0 object(s) were applied (none): forbidden: "
        'user "fake-user" of context "fake" may not patch namespaces (the API server '
        f"{api_server.url} says: no); ask for that permission or use another context (check "
        "with `kubectl --context fake auth can-i patch namespaces`)"
    )
    assert len(api_server.applies(dry_run=True)) == BASE_OBJECTS


def test_a_failing_rollout_watch_is_named(api_server: FakeApiServer, kube_mesh: KubeMesh) -> None:
    kube_mesh.apply([default_manifests("base")])  # the client keeps the discovery from now on
    api_server.fail("GET", 503, "ServiceUnavailable", "etcd is down")
    with pytest.raises(MeshError) as info:
        kube_mesh.apply([default_manifests("base")])
    assert str(info.value).startswith(
        "applied, but watching Deployment/tf-serving/image-classifier-resnet101 roll out failed: "
        f'the API server {api_server.url} of context "fake" failed with 503 Service Unavailable '
        'while trying to get deployments.apps in namespace "tf-serving": etcd is down;'
    )
    assert len(api_server.applies(dry_run=False)) == 2 * BASE_OBJECTS


def test_a_failing_discovery_is_named(api_server: FakeApiServer, kube_mesh: KubeMesh) -> None:
    api_server.fail("GET", 503, "ServiceUnavailable", "etcd is down")
    with pytest.raises(MeshError) as info:
        kube_mesh.apply([default_manifests("base")])
    assert str(info.value) == (
        f'the API server {api_server.url} of context "fake" failed with 503 Service Unavailable '
        "while trying to get the API discovery of v1: etcd is down; retry, or check the "
        "cluster's control plane (`kubectl --context fake get --raw /readyz`); nothing was applied"
    )
    assert not api_server.applies(dry_run=False)
