"""The ``kube`` backend: the same manifests, server-side applied to a real cluster with Istio.

The objects are validated by the same parser as the local mesh (what canary
can verify is exactly what it applies), then every object is sent once as a
server-side-apply dry run; only when the API server accepts all of them are
they applied for real, in dependency order, so a rejected manifest changes
nothing. Deployments are then watched until their rollout completes.

The API is the official ``kubernetes`` client's dynamic client; tests pass a
stand-in with the same three methods (``resources.get``, ``server_side_apply``,
``get``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from canary.errors import ManifestError, MeshError
from mesh.manifests import KIND_ORDER, load_manifests
from mesh.model import Deployment, MeshObject

__all__ = ["FIELD_MANAGER", "KubeApplyResult", "KubeMesh", "connect"]

FIELD_MANAGER = "canary"


class DynamicApi(Protocol):
    """The part of ``kubernetes.dynamic.DynamicClient`` this backend uses."""

    @property
    def resources(self) -> Any: ...

    def server_side_apply(self, resource: Any, body: Any = None, name: str | None = None,
                          namespace: str | None = None, force_conflicts: bool | None = None,
                          **kwargs: Any) -> Any: ...

    def get(self, resource: Any, name: str | None = None, namespace: str | None = None,
            **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class KubeApplyResult:
    applied: list[str]
    rolled_out: list[str]


def connect(context: str | None = None) -> DynamicApi:
    """A dynamic client from the kubeconfig (or the in-cluster service account)."""
    from kubernetes import client, config, dynamic
    from kubernetes.config.config_exception import ConfigException

    try:
        config.load_kube_config(context=context)
    except (ConfigException, FileNotFoundError):
        try:
            config.load_incluster_config()
        except ConfigException as exc:
            raise MeshError(
                "no Kubernetes cluster configured: set KUBECONFIG or ~/.kube/config "
                "(and --context), or use the local mesh (the default backend)"
            ) from exc
    api: DynamicApi = dynamic.DynamicClient(client.ApiClient())
    return api


def _api_message(exc: Exception) -> str:
    """The API server's own reason, from an ApiException body when there is one."""
    body = getattr(exc, "body", None)
    if body:
        try:
            import orjson

            return str(orjson.loads(body).get("message", body))
        except ValueError:
            return str(body)
    return str(exc)


def _is_missing_namespace(exc: Exception) -> bool:
    return getattr(exc, "status", None) == 404 and "namespaces" in _api_message(exc)


class KubeMesh:
    def __init__(self, api: DynamicApi, *, field_manager: str = FIELD_MANAGER,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.api = api
        self.field_manager = field_manager
        self.clock = clock
        self.sleep = sleep

    def _resource(self, obj: MeshObject) -> Any:
        return self.api.resources.get(api_version=obj.raw["apiVersion"], kind=obj.ref.kind)

    def _apply(self, obj: MeshObject, *, dry_run: bool) -> None:
        kwargs: dict[str, Any] = {"field_manager": self.field_manager, "force_conflicts": True}
        if dry_run:
            kwargs["dry_run"] = "All"
        self.api.server_side_apply(self._resource(obj), body=dict(obj.raw),
                                   namespace=obj.ref.namespace or None, **kwargs)

    def apply(self, paths: Sequence[Path], *, rollout_timeout: float = 600.0) -> KubeApplyResult:
        objects = sorted(load_manifests(list(paths)), key=lambda o: (KIND_ORDER.index(type(o)), o.ref))
        new_namespaces = {o.ref.name for o in objects if o.ref.kind == "Namespace"}
        for obj in objects:  # every object is checked by the API server before any is applied
            try:
                self._apply(obj, dry_run=True)
            except Exception as exc:
                if obj.ref.namespace in new_namespaces and _is_missing_namespace(exc):
                    continue  # its namespace is created by this same apply
                raise ManifestError(obj.source, str(obj.ref), "",
                                    f"the API server rejects it: {_api_message(exc)}; nothing was applied") from exc
        applied: list[str] = []
        for obj in objects:
            try:
                self._apply(obj, dry_run=False)
            except Exception as exc:
                raise MeshError(f"applying {obj.ref} failed after {len(applied)} object(s) were applied "
                                f"({', '.join(applied) or 'none'}): {_api_message(exc)}") from exc
            applied.append(str(obj.ref))
        deployments = [o for o in objects if isinstance(o, Deployment)]
        for deployment in deployments:
            self.wait_rolled_out(deployment, rollout_timeout)
        return KubeApplyResult(applied=applied, rolled_out=[str(d.ref) for d in deployments])

    def wait_rolled_out(self, deployment: Deployment, timeout: float) -> None:
        """As ``kubectl rollout status``: the new ReplicaSet's pods are updated and available."""
        resource = self.api.resources.get(api_version="apps/v1", kind="Deployment")
        deadline = self.clock() + timeout
        while True:
            live = self.api.get(resource, name=deployment.ref.name, namespace=deployment.ref.namespace)
            live = live.to_dict() if hasattr(live, "to_dict") else live
            spec, status = live["spec"], live.get("status") or {}
            want = spec.get("replicas", 1)
            if (status.get("observedGeneration", 0) >= live["metadata"].get("generation", 0)
                    and status.get("updatedReplicas", 0) == want
                    and status.get("availableReplicas", 0) == want
                    and status.get("replicas", 0) == want):
                return
            if self.clock() > deadline:
                raise MeshError(f"{deployment.ref} did not roll out within {timeout:.0f}s "
                                f"(updated {status.get('updatedReplicas', 0)}, available "
                                f"{status.get('availableReplicas', 0)} of {want}); "
                                f"see `kubectl -n {deployment.ref.namespace} describe deployment {deployment.ref.name}`")
            self.sleep(2.0)
