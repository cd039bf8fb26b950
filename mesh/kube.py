"""The ``kube`` backend: the same manifests, server-side applied to a real cluster with Istio.

The objects are read for the cluster target (``Target.CLUSTER``): whatever
Kubernetes and Istio define is accepted, not only what the local mesh
implements (CORS policies, rewrites, TLS routes, headless Services, exec
probes, Secrets, ...), and kinds the local mesh does not know (ServiceAccount,
Role, Job, ...) are applied as written. Unknown fields and what Kubernetes or
Istio refuse too are refused here, naming the file, the object and the field.
Then every object is sent once as a server-side-apply dry run; only when the
API server accepts all of them are they applied for real, in dependency order
(:data:`~mesh.manifests.KIND_ORDER`), so a rejected manifest changes nothing.
Deployments are then watched until their rollout completes.

The API is the official ``kubernetes`` client's dynamic client, over HTTP
(tests run it against a fake API server on loopback).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from canary.errors import ManifestError, MeshError
from mesh.manifest_fields import Target
from mesh.manifests import kind_rank, load_manifests, validate_set
from mesh.model import Deployment, ManifestObject, ObjectRef, OtherObject

__all__ = ["FIELD_MANAGER", "KubeApplyResult", "KubeMesh", "connect"]

FIELD_MANAGER = "canary"


class DynamicApi(Protocol):
    """The part of ``kubernetes.dynamic.DynamicClient`` this backend uses."""

    @property
    def resources(self) -> Any: ...

    def server_side_apply(
        self,
        resource: Any,
        body: Any = None,
        name: str | None = None,
        namespace: str | None = None,
        force_conflicts: bool | None = None,
        **kwargs: Any,
    ) -> Any: ...

    def get(
        self, resource: Any, name: str | None = None, namespace: str | None = None, **kwargs: Any
    ) -> Any: ...


@dataclass(frozen=True)
class KubeApplyResult:
    applied: list[str]
    rolled_out: list[str]


def connect(
    context: str | None = None,
    *,
    config_file: str | os.PathLike[str] | None = None,
    discovery_cache: str | os.PathLike[str] | None = None,
) -> DynamicApi:
    """A dynamic client for the cluster of the kubeconfig's current (or the given) context.

    The kubeconfig is ``config_file``, else ``$KUBECONFIG`` as it is now (a
    list of files, as kubectl reads it), else ``~/.kube/config``; when none
    exists, the in-cluster service account. ``discovery_cache`` is the file the
    client keeps the API server's discovery in (default: the client's own, in
    the temporary directory, named after the server's URL).
    """
    from kubernetes import client, config, dynamic
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException
    from urllib3.exceptions import HTTPError

    configuration = client.Configuration()
    if config_file is not None:
        path = os.fspath(config_file)
    else:
        path = os.environ.get("KUBECONFIG") or "~/.kube/config"
    found = [p for p in path.split(os.pathsep) if p and Path(p).expanduser().exists()]
    try:
        if found or config_file is not None:
            config.load_kube_config(
                config_file=path, context=context, client_configuration=configuration
            )
        else:
            config.load_incluster_config(client_configuration=configuration)
    except ConfigException as exc:
        if found or config_file is not None:
            raise MeshError(f"cannot use the kubeconfig {path}: {exc}") from exc
        raise MeshError(
            "no Kubernetes cluster configured: set KUBECONFIG or ~/.kube/config "
            "(and --context), or use the local mesh (the default backend)"
        ) from exc
    cache = os.fspath(discovery_cache) if discovery_cache is not None else None
    try:
        api: DynamicApi = dynamic.DynamicClient(client.ApiClient(configuration), cache_file=cache)
    except (ApiException, HTTPError, OSError) as exc:
        raise MeshError(f"cannot reach the API server {configuration.host}: {exc}") from exc
    return api


def _api_message(exc: Exception) -> str:
    """The API server's own reason, from an ApiException body when there is one."""
    body = getattr(exc, "body", None)
    if body:
        try:
            import orjson

            return str(orjson.loads(body).get("message", body))
        except (ValueError, AttributeError):
            return str(body)
    return str(exc)


def _is_missing_namespace(exc: Exception) -> bool:
    return getattr(exc, "status", None) == 404 and "namespaces" in _api_message(exc)


def _apply_order(obj: ManifestObject) -> tuple[int, ObjectRef]:
    """The order a cluster needs: by :data:`~mesh.manifests.KIND_ORDER`, then by identity."""
    return kind_rank(obj.ref.kind), obj.ref


class KubeMesh:
    def __init__(
        self,
        api: DynamicApi,
        *,
        field_manager: str = FIELD_MANAGER,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api = api
        self.field_manager = field_manager
        self.clock = clock
        self.sleep = sleep

    def _resource(self, obj: ManifestObject) -> Any:
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        version = obj.raw["apiVersion"]
        try:
            return self.api.resources.get(api_version=version, kind=obj.ref.kind)
        except ResourceNotFoundError as exc:
            raise ManifestError(
                obj.source,
                str(obj.ref),
                "kind",
                f"the cluster serves no {obj.ref.kind} in {version} (is its "
                "CustomResourceDefinition installed? Istio's?); nothing was applied",
            ) from exc

    def _apply(self, obj: ManifestObject, *, dry_run: bool) -> None:
        resource = self._resource(obj)
        kwargs: dict[str, Any] = {"field_manager": self.field_manager, "force_conflicts": True}
        if dry_run:
            kwargs["dry_run"] = "All"
        namespace = obj.ref.namespace if getattr(resource, "namespaced", True) else ""
        self.api.server_side_apply(
            resource, body=dict(obj.raw), namespace=namespace or None, **kwargs
        )

    def apply(self, paths: Sequence[Path], *, rollout_timeout: float = 600.0) -> KubeApplyResult:
        """Validate ``paths`` for a cluster, dry-run every object, then apply them in order.

        Raises ManifestError, naming the file and the object, when a manifest is
        invalid or the API server refuses one in the dry run (nothing is
        applied then); MeshError when applying fails part-way or a Deployment
        does not roll out within ``rollout_timeout`` seconds.
        """
        objects = sorted(load_manifests(list(paths), target=Target.CLUSTER), key=_apply_order)
        validate_set([o for o in objects if not isinstance(o, OtherObject)], target=Target.CLUSTER)
        new_namespaces = {o.ref.name for o in objects if o.ref.kind == "Namespace"}
        for obj in objects:  # every object is checked by the API server before any is applied
            try:
                self._apply(obj, dry_run=True)
            except ManifestError:
                raise
            except Exception as exc:
                if obj.ref.namespace in new_namespaces and _is_missing_namespace(exc):
                    continue  # its namespace is created by this same apply
                raise ManifestError(
                    obj.source,
                    str(obj.ref),
                    "",
                    f"the API server rejects it: {_api_message(exc)}; nothing was applied",
                ) from exc
        applied: list[str] = []
        for obj in objects:
            try:
                self._apply(obj, dry_run=False)
            except Exception as exc:
                raise MeshError(
                    f"applying {obj.ref} failed after {len(applied)} object(s) were applied "
                    f"({', '.join(applied) or 'none'}): {_api_message(exc)}"
                ) from exc
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
            live = self.api.get(
                resource, name=deployment.ref.name, namespace=deployment.ref.namespace
            )
            live = live.to_dict() if hasattr(live, "to_dict") else live
            spec, status = live["spec"], live.get("status") or {}
            want = spec.get("replicas", 1)
            if (
                status.get("observedGeneration", 0) >= live["metadata"].get("generation", 0)
                and status.get("updatedReplicas", 0) == want
                and status.get("availableReplicas", 0) == want
                and status.get("replicas", 0) == want
            ):
                return
            if self.clock() > deadline:
                raise MeshError(
                    f"{deployment.ref} did not roll out within {timeout:.0f}s "
                    f"(updated {status.get('updatedReplicas', 0)}, available "
                    f"{status.get('availableReplicas', 0)} of {want}); see `kubectl -n "
                    f"{deployment.ref.namespace} describe deployment {deployment.ref.name}`"
                )
            self.sleep(2.0)
