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
(tests run it against a fake API server on loopback), bounded in time
(:mod:`mesh.kube_client`), on a kubeconfig read strictly
(:mod:`mesh.kubeconfig`). Whatever the client raises is caught here and said
in one line (:mod:`mesh.kube_errors`): an unreachable server, a refused
credential (401), a TLS failure or a failing server (5xx) is a MeshError naming
the server and the context; a refusal of an object in the dry run (invalid,
forbidden ...) is a ManifestError naming its file and the object. No
credential of the kubeconfig is ever in a message.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from canary.errors import ManifestError, MeshError
from mesh.kube_errors import Call, ClusterProblem, api_message
from mesh.kubeconfig import ClusterTarget
from mesh.manifest_fields import Target
from mesh.manifests import kind_rank, load_manifests, parse_objects, validate_set
from mesh.model import Deployment, ManifestObject, ObjectRef, OtherObject

__all__ = ["FIELD_MANAGER", "KubeApplyResult", "KubeMesh", "connect"]

FIELD_MANAGER = "canary"


class DynamicApi(Protocol):
    """The part of ``kubernetes.dynamic.DynamicClient`` this backend uses, and what
    :class:`~mesh.kube_client.ClusterClient` adds: the cluster it talks to, and what an
    exception of the client means (:func:`~mesh.kube_errors.cluster_problem`)."""

    @property
    def resources(self) -> Any: ...

    @property
    def client(self) -> Any: ...  # the ``kubernetes.client.ApiClient`` under it (port-forwards)

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any: ...

    @property
    def target(self) -> ClusterTarget: ...

    def problem(self, exc: BaseException, call: Call) -> ClusterProblem | None: ...

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

    def delete(
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
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
) -> DynamicApi:
    """A dynamic client for the cluster of the kubeconfig's current (or the given) context.

    The kubeconfig is ``config_file``, else ``$KUBECONFIG`` as it is now (a
    list of files, as kubectl reads it), else ``~/.kube/config``, read strictly
    (no YAML aliases) by :mod:`mesh.kubeconfig`; when none exists and no context
    is asked for, the in-cluster service account. ``discovery_cache`` is the
    file the client keeps the API server's discovery in (default: the client's
    own, in the temporary directory, named after the server's URL). Requests
    time out (``connect_timeout``, ``read_timeout``; defaults in
    :mod:`mesh.kube_client`). MeshError, one line naming the context and the
    server, when the kubeconfig or the context is missing or unusable or the API
    server cannot be reached, refuses the credentials or fails.
    """
    from mesh.kube_client import open_cluster

    return open_cluster(
        context,
        config_file=config_file,
        discovery_cache=discovery_cache,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )


def _is_missing_namespace(exc: Exception) -> bool:
    return getattr(exc, "status", None) == 404 and "namespaces" in api_message(exc)


def _rbac_name(resource: Any) -> str:
    """``deployments.apps``, ``services``: the resource as RBAC and ``kubectl auth can-i`` name it."""
    plural = str(getattr(resource, "name", "") or "objects")
    group = getattr(resource, "group", "")
    return f"{plural}.{group}" if group else plural


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
        except Exception as exc:  # discovery asked the API server, and failed
            raise self._failure(exc, Call("get", f"the API discovery of {version}")) from exc

    def _call(self, obj: ManifestObject) -> Call:
        """The server-side apply of ``obj``, as RBAC names it (a PATCH)."""
        resource = self._resource(obj)  # discovered already: the client keeps it
        namespaced = getattr(resource, "namespaced", True)
        return Call("patch", _rbac_name(resource), obj.ref.namespace if namespaced else "")

    def _failure(self, exc: BaseException, call: Call, prefix: str = "") -> MeshError:
        """``exc`` as one line: what the cluster's problem is, or the API server's own words."""
        problem = self.api.problem(exc, call)
        said = problem.message if problem else self.api.target.redact(api_message(exc))
        return MeshError(f"{prefix}{said}")

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
        return self.apply_objects(load_manifests(list(paths), target=Target.CLUSTER),
                                  rollout_timeout=rollout_timeout)

    def apply_documents(self, documents: Sequence[Mapping[str, Any]], source: str, *,
                        rollout_timeout: float = 600.0) -> KubeApplyResult:
        """:meth:`apply` of documents built in memory (``source`` names them in messages)."""
        objects = parse_objects([(source, dict(d)) for d in documents], target=Target.CLUSTER)
        return self.apply_objects(objects, rollout_timeout=rollout_timeout)

    def apply_objects(self, objects: Sequence[ManifestObject], *, rollout_timeout: float = 600.0) -> KubeApplyResult:
        """Validate the set, dry-run every object, then apply them in order (see :meth:`apply`)."""
        objects = sorted(objects, key=_apply_order)
        validate_set([o for o in objects if not isinstance(o, OtherObject)], target=Target.CLUSTER)
        new_namespaces = {o.ref.name for o in objects if o.ref.kind == "Namespace"}
        for obj in objects:  # every object is checked by the API server before any is applied
            try:
                self._apply(obj, dry_run=True)
            except ManifestError:
                raise
            except MeshError as error:
                raise MeshError(f"{error}; nothing was applied") from error
            except Exception as exc:
                if obj.ref.namespace in new_namespaces and _is_missing_namespace(exc):
                    continue  # its namespace is created by this same apply
                raise self._dry_run_refusal(obj, exc) from exc
        applied: list[str] = []
        for obj in objects:
            try:
                self._apply(obj, dry_run=False)
            except Exception as exc:
                raise self._failure(
                    exc,
                    self._call(obj),
                    f"applying {obj.ref} failed after {len(applied)} object(s) were applied "
                    f"({', '.join(applied) or 'none'}): ",
                ) from exc
            applied.append(str(obj.ref))
        deployments = [o for o in objects if isinstance(o, Deployment)]
        for deployment in deployments:
            self.wait_rolled_out(deployment, rollout_timeout)
        return KubeApplyResult(applied=applied, rolled_out=[str(d.ref) for d in deployments])

    def _dry_run_refusal(self, obj: ManifestObject, exc: Exception) -> ManifestError | MeshError:
        """The dry run of ``obj`` failed: the object's refusal (or a forbidden apply) names its
        file and object; a cluster that cannot be reached or fails is a MeshError."""
        problem = self.api.problem(exc, self._call(obj))
        if problem is not None and problem.kind != "forbidden":
            return MeshError(f"{problem.message}; nothing was applied")
        said = problem.message if problem else (
            f"the API server rejects it: {self.api.target.redact(api_message(exc))}"
        )
        return ManifestError(obj.source, str(obj.ref), "", f"{said}; nothing was applied")

    def wait_rolled_out(self, deployment: Deployment, timeout: float) -> None:
        """As ``kubectl rollout status``: the new ReplicaSet's pods are updated and available."""
        resource = self._resource(deployment)
        call = Call("get", _rbac_name(resource), deployment.ref.namespace)
        deadline = self.clock() + timeout
        while True:
            try:
                live = self.api.get(
                    resource, name=deployment.ref.name, namespace=deployment.ref.namespace
                )
            except Exception as exc:
                raise self._failure(
                    exc, call, f"applied, but watching {deployment.ref} roll out failed: "
                ) from exc
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

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete one object, its dependents in the background (as ``kubectl delete``); False
        when it did not exist."""
        resource = self.api.resources.get(api_version=api_version, kind=kind)
        try:
            self.api.delete(resource, name=name, namespace=namespace or None,
                            body={"propagationPolicy": "Background"})
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return False
            raise self._failure(exc, Call("delete", _rbac_name(resource), namespace),
                                f"deleting {kind}/{namespace}/{name} failed: ") from exc
        return True

    def pods(self, namespace: str, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        """The pods of ``namespace`` whose labels hold ``selector``, as the API server lists them."""
        resource = self.api.resources.get(api_version="v1", kind="Pod")
        wanted = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        try:
            answer = self.api.get(resource, namespace=namespace, label_selector=wanted)
        except Exception as exc:
            raise self._failure(exc, Call("list", "pods", namespace), "listing pods failed: ") from exc
        data = answer.to_dict() if hasattr(answer, "to_dict") else answer
        items = [dict(item) for item in (data or {}).get("items") or ()]
        return [p for p in items if selector.items() <= ((p.get("metadata") or {}).get("labels") or {}).items()]
