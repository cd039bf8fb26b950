"""The kube backend against a stand-in API server: dry run first, order, nothing half-applied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from canary.errors import ManifestError, MeshError
from mesh.api import default_manifests
from mesh.kube import KubeMesh


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = orjson.dumps({"message": message}).decode()


class FakeResources:
    def get(self, api_version: str, kind: str) -> tuple[str, str]:
        return (api_version, kind)


class FakeApi:
    """Records calls; ``reject`` names objects the server refuses, ``rollout`` scripts Deployment status."""

    def __init__(self, reject: dict[str, ApiError] | None = None, existing_namespaces: set[str] | None = None,
                 rollout_after: int = 1) -> None:
        self.resources = FakeResources()
        self.calls: list[tuple[str, str, bool]] = []
        self.reject = reject or {}
        self.namespaces = set(existing_namespaces or ())
        self.rollout_after = rollout_after
        self.polls: dict[str, int] = {}

    def server_side_apply(self, resource: Any, body: Any = None, name: str | None = None,
                          namespace: str | None = None, force_conflicts: bool | None = None, **kw: Any) -> Any:
        ref = f"{resource[1]}/{body['metadata']['name']}"
        dry = kw.get("dry_run") == "All"
        assert kw["field_manager"] == "canary" and force_conflicts
        self.calls.append(("apply", ref, dry))
        if ref in self.reject:
            raise self.reject[ref]
        if namespace and namespace not in self.namespaces:
            raise ApiError(404, f'namespaces "{namespace}" not found')
        if resource[1] == "Namespace" and not dry:
            self.namespaces.add(body["metadata"]["name"])
        return body

    def get(self, resource: Any, name: str | None = None, namespace: str | None = None, **kw: Any) -> Any:
        n = self.polls[name or ""] = self.polls.get(name or "", 0) + 1
        ready = 1 if n >= self.rollout_after else 0
        return {"metadata": {"generation": 2}, "spec": {"replicas": 1},
                "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": ready}}


def _mesh(api: FakeApi) -> KubeMesh:
    t = [0.0]

    def sleep(s: float) -> None:
        t[0] += s

    return KubeMesh(api, clock=lambda: t[0], sleep=sleep)


def test_everything_is_dry_run_before_anything_is_applied() -> None:
    api = FakeApi()
    result = _mesh(api).apply([default_manifests("base")])
    dry = [c for c in api.calls if c[2]]
    real = [c for c in api.calls if not c[2]]
    assert api.calls.index(real[0]) == len(dry)  # all dry runs first
    kinds = [ref.split("/")[0] for _, ref, _ in real]
    assert kinds[0] == "Namespace" and kinds[-1] == "VirtualService"
    assert kinds.index("ConfigMap") < kinds.index("Deployment") < kinds.index("Gateway")
    assert len(result.applied) == len(real) == 10
    assert sorted(result.rolled_out) == ["Deployment/tf-serving/image-classifier-resnet101",
                                         "Deployment/tf-serving/image-classifier-resnet50"]


def test_a_rejected_object_applies_nothing() -> None:
    api = FakeApi(reject={"Gateway/image-classifier-gateway": ApiError(422, "admission webhook denied it")},
                  existing_namespaces={"tf-serving"})
    with pytest.raises(ManifestError) as info:
        _mesh(api).apply([default_manifests("base")])
    assert "admission webhook denied it" in str(info.value)
    assert info.value.file.endswith("gateway.yaml")
    assert not [c for c in api.calls if not c[2]]


def test_invalid_manifest_never_reaches_the_server(tmp_path: Path) -> None:
    bad = tmp_path / "vs.yaml"
    bad.write_text(default_manifests("routing", "virtualservice-weight-70.yaml").read_text().replace("weight: 30", "weight: 31"))
    api = FakeApi()
    with pytest.raises(ManifestError):
        _mesh(api).apply([default_manifests("base"), bad])
    assert api.calls == []


def test_rollout_timeout_is_a_clear_error() -> None:
    api = FakeApi(existing_namespaces={"tf-serving"}, rollout_after=10**6)
    with pytest.raises(MeshError, match="did not roll out"):
        _mesh(api).apply([default_manifests("base")], rollout_timeout=10)
