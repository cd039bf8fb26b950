"""Manifests → validated mesh objects, and ``kubectl apply`` over sets of them.

``load_manifests`` reads files and directories as ``kubectl apply -f`` does;
``parse_objects`` turns already-parsed documents into typed objects. Both
check every object before returning anything, so a caller never applies half
a batch. ``apply`` merges a batch into the current set (create or replace, by
identity) and ``validate_set`` checks the cross-references of a whole set.
Everything here is pure but for reading the files.

YAML is read strictly by :func:`~mesh.manifest_yaml.load_yaml_documents`
(re-exported here, and meant for any other YAML the tool reads): duplicate
keys are errors, dates stay strings, anchors and aliases are refused, and a
file holds at most :data:`MAX_MANIFEST_BYTES` bytes and
:data:`MAX_MANIFEST_DOCUMENTS` documents.

Both readers take a ``target`` (:class:`~mesh.manifest_fields.Target`): the
local mesh (the default, refusing whatever it does not implement) or a
cluster (accepting whatever Kubernetes and Istio define, and any other kind as
an :class:`~mesh.model.OtherObject`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal, overload

from canary.errors import ManifestError
from mesh.manifest_fields import Node, Target, Where
from mesh.manifest_refs import validate_set
from mesh.manifest_yaml import (
    MAX_MANIFEST_BYTES,
    MAX_MANIFEST_DOCUMENTS,
    load_yaml_documents,
    read_yaml_file,
)
from mesh.manifests_istio import parse_destination_rule, parse_gateway
from mesh.manifests_k8s import (
    check_dns_label,
    parse_config_map,
    parse_namespace,
    parse_pvc,
    parse_service,
)
from mesh.manifests_pods import parse_deployment
from mesh.manifests_routes import parse_virtual_service
from mesh.model import ManifestObject, MeshObject, ObjectRef, OtherObject

__all__ = [
    "CLUSTER_SCOPED_KINDS",
    "KIND_ORDER",
    "MANIFEST_SUFFIXES",
    "MAX_MANIFEST_BYTES",
    "MAX_MANIFEST_DOCUMENTS",
    "SUPPORTED_KINDS",
    "Target",
    "apply",
    "kind_rank",
    "load_manifests",
    "load_yaml_documents",
    "manifest_files",
    "parse_objects",
    "read_documents",
    "validate_set",
]

Parser = Callable[[Node, ObjectRef, str], MeshObject]

_ISTIO = ("networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3")

# kind → (accepted apiVersions, parser, namespaced)
SUPPORTED_KINDS: dict[str, tuple[tuple[str, ...], Parser, bool]] = {
    "Namespace": (("v1",), parse_namespace, False),
    "ConfigMap": (("v1",), parse_config_map, True),
    "PersistentVolumeClaim": (("v1",), parse_pvc, True),
    "Service": (("v1",), parse_service, True),
    "Deployment": (("apps/v1",), parse_deployment, True),
    "Gateway": (_ISTIO, parse_gateway, True),
    "DestinationRule": (_ISTIO, parse_destination_rule, True),
    "VirtualService": (_ISTIO, parse_virtual_service, True),
}

# The order a cluster needs them in: what others refer to comes first (namespaces,
# definitions, identities and config, storage, access rules, Services, workloads), Istio's
# routing last. "*" stands for every kind not named.
KIND_ORDER: tuple[str, ...] = (
    "Namespace",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
    "ResourceQuota",
    "LimitRange",
    "NetworkPolicy",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "PodDisruptionBudget",
    "DaemonSet",
    "Pod",
    "ReplicaSet",
    "Deployment",
    "StatefulSet",
    "HorizontalPodAutoscaler",
    "Job",
    "CronJob",
    "Ingress",
    "*",
    "ServiceEntry",
    "WorkloadEntry",
    "Sidecar",
    "PeerAuthentication",
    "RequestAuthentication",
    "AuthorizationPolicy",
    "EnvoyFilter",
    "Telemetry",
    "Gateway",
    "DestinationRule",
    "VirtualService",
)

# Kinds Kubernetes serves cluster-scoped: an OtherObject of one has no namespace. (Any
# other unknown kind is taken as namespaced; the API server's discovery decides when
# applying, so a wrong guess only shows in the object's name in messages.)
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "APIService",
        "CSIDriver",
        "CSINode",
        "CertificateSigningRequest",
        "ClusterIssuer",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "FlowSchema",
        "GatewayClass",
        "IngressClass",
        "MutatingWebhookConfiguration",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PriorityClass",
        "PriorityLevelConfiguration",
        "RuntimeClass",
        "StorageClass",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
        "VolumeAttachment",
    }
)


def kind_rank(kind: str) -> int:
    """Where objects of ``kind`` go in :data:`KIND_ORDER` (unnamed kinds at ``"*"``)."""
    return KIND_ORDER.index(kind if kind in KIND_ORDER else "*")


MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")

_METADATA_IGNORED = {
    "annotations",
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generation",
    "managedFields",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
}
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_API_VERSION = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[a-z0-9]+$"
)
_KIND = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


# --- reading files ---------------------------------------------------------------------


@overload
def load_manifests(
    paths: Sequence[Path], *, target: Literal[Target.LOCAL] = ...
) -> list[MeshObject]: ...
@overload
def load_manifests(paths: Sequence[Path], *, target: Target) -> list[ManifestObject]: ...
def load_manifests(
    paths: Sequence[Path], *, target: Target = Target.LOCAL
) -> list[MeshObject] | list[ManifestObject]:
    """Every object in ``paths`` (files, or directories read non-recursively in name order).

    Raises ManifestError for the first problem found; nothing is returned
    unless every object is valid on its own (cross-references are checked by
    :func:`apply` against the whole resulting set). ``target`` is the
    validation profile: the local mesh (the default) or a cluster.
    """
    docs: list[tuple[str, object]] = []
    for path in manifest_files(paths):
        docs.extend((str(path), doc) for doc in read_yaml_file(path))
    return parse_objects(docs, target=target)


def manifest_files(paths: Sequence[Path]) -> list[Path]:
    """The files ``kubectl apply -f`` reads: files as given, directories' manifests in name order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix in MANIFEST_SUFFIXES
            )
            if not found:
                raise ManifestError(
                    str(path), "", "", "no manifests (*.yaml, *.yml, *.json) in this directory"
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ManifestError(str(path), "", "", "no such file or directory")
    return files


def read_documents(path: Path) -> list[object]:
    """Every YAML document of a manifest file, read as :func:`load_manifests` reads it (strict:
    no duplicate keys, no anchors or aliases, bounded size); :class:`ManifestError` naming the
    file otherwise."""
    return read_yaml_file(Path(path))


# --- documents → objects ---------------------------------------------------------------


@overload
def parse_objects(
    docs: Iterable[tuple[str, object]], *, target: Literal[Target.LOCAL] = ...
) -> list[MeshObject]: ...
@overload
def parse_objects(
    docs: Iterable[tuple[str, object]], *, target: Target
) -> list[ManifestObject]: ...
def parse_objects(
    docs: Iterable[tuple[str, object]], *, target: Target = Target.LOCAL
) -> list[MeshObject] | list[ManifestObject]:
    """Typed objects from ``(source name, document)`` pairs, in document order.

    ``kind: List`` documents contribute their items. Raises ManifestError for
    any invalid object, or for an object given twice. For the local target
    every object is a :data:`~mesh.model.MeshObject`; for a cluster, kinds the
    local mesh does not know are :class:`~mesh.model.OtherObject`.
    """
    objects: list[ManifestObject] = []
    seen: dict[ObjectRef, ManifestObject] = {}
    counts: dict[str, int] = {}
    for source, doc in docs:
        counts[source] = counts.get(source, 0) + 1
        if doc is None:  # an empty YAML document, as between two "---"
            continue
        for label, item in _expand_lists(source, doc, f"document {counts[source]}", target):
            obj = _parse_object(source, label, item, target)
            first = seen.get(obj.ref)
            if first is not None:
                raise ManifestError(
                    source,
                    str(obj.ref),
                    "metadata.name",
                    f"the same object is also defined in {first.source}",
                )
            seen[obj.ref] = obj
            objects.append(obj)
    return objects


def _expand_lists(source: str, doc: object, label: str, target: Target) -> list[tuple[str, object]]:
    if isinstance(doc, dict) and doc.get("kind") == "List":
        root = Node(Where(source, f"{label} (List)", target), "", doc)
        root.only({"apiVersion", "kind", "items"}, ignored={"metadata"})
        items = root.get("items")
        listed = items.as_list() if items else []
        return [(f"{label}, item {i}", item.value) for i, item in enumerate(listed)]
    return [(label, doc)]


def _parse_object(source: str, label: str, doc: object, target: Target) -> ManifestObject:
    """One object; before its identity is known, errors name it by ``label``."""
    root = Node(Where(source, label, target), "", doc)
    root.as_map()
    kind_node, version_node = root.req("kind"), root.req("apiVersion")
    kind, version = kind_node.as_str(), version_node.as_str()
    known = SUPPORTED_KINDS.get(kind)
    if target is Target.CLUSTER and (
        known is None or _group(version) not in {_group(v) for v in known[0]}
    ):
        return _other_object(root, kind, version)
    if known is None:
        kind_node.fail(_unsupported_kind(kind, version))
    versions, parser, namespaced = known
    metadata = root.req("metadata")
    name = metadata.req("name").as_str()
    namespace = _namespace(metadata) if namespaced else ""
    ref = ObjectRef(kind, namespace, name)
    root = Node(Where(source, str(ref), target), "", doc)
    if version not in versions:
        root.req("apiVersion").fail(
            f"apiVersion {version!r} is not supported for {kind} (supported: {', '.join(versions)})"
        )
    _check_metadata(root.req("metadata"), kind)
    return parser(root, ref, source)


def _group(api_version: str) -> str:
    """The API group of ``group/version`` ("" for the core group's ``v1``)."""
    return api_version.rpartition("/")[0]


def _other_object(root: Node, kind: str, version: str) -> OtherObject:
    """A kind the local mesh does not know, for a cluster: its identity is checked, the
    content is the API server's to judge (its dry run runs before anything is applied)."""
    if not _KIND.match(kind):
        root.req("kind").fail(f"{kind!r} is not a kind (a CamelCase name, e.g. ServiceAccount)")
    if not _API_VERSION.match(version):
        root.req("apiVersion").fail(
            f"{version!r} is not an apiVersion (group/version, e.g. rbac.authorization.k8s.io/v1, "
            "or v1 for the core group)"
        )
    metadata = root.req("metadata")
    name = metadata.req("name").as_str()
    namespace = "" if kind in CLUSTER_SCOPED_KINDS else _namespace(metadata)
    ref = ObjectRef(kind, namespace, name)
    root = Node(Where(root.where.file, str(ref), root.where.target), "", root.value)
    _check_metadata(root.req("metadata"), kind, generic=True)
    return OtherObject(ref=ref, source=root.where.file, raw=root.as_map(), api_version=version)


def _unsupported_kind(kind: str, version: str) -> str:
    supported = ", ".join(SUPPORTED_KINDS)
    if version.startswith("gateway.networking.k8s.io/"):
        return (
            f"the Kubernetes Gateway API ({version} {kind}) is not supported; "
            f"use Istio's networking.istio.io Gateway and VirtualService (supported kinds: {supported})"
        )
    return f"kind {kind!r} ({version}) is not supported (supported kinds: {supported})"


def _namespace(metadata: Node) -> str:
    node = metadata.get("namespace")
    if node is None:
        return "default"
    namespace = node.as_str()
    problem = check_dns_label(namespace)
    if problem:
        node.fail(f"invalid namespace name: {problem}")
    return namespace


def _check_metadata(metadata: Node, kind: str, *, generic: bool = False) -> None:
    """Names, labels and annotations as Kubernetes checks them. A ``generic`` kind's
    name is held to the rule every kind obeys (a path segment: RBAC names may hold
    ':'); its kind's own rule is the API server's."""
    metadata.only(
        {"name", "namespace", "labels"},
        ignored=_METADATA_IGNORED,
        unsupported={"generateName": "give the object a fixed metadata.name"},
    )
    name_node = metadata.req("name")
    name = name_node.as_str()
    if generic:
        problem = (
            "at most 253 characters, without '/' or '%', and not '.' or '..'"
            if len(name) > 253 or "/" in name or "%" in name or name in (".", "..")
            else ""
        )
    elif kind == "Namespace":
        problem = check_dns_label(name)
    elif kind == "Service":
        problem = check_dns_label(name) or (
            "" if name[0].isalpha() else "a Service name starts with a letter"
        )
    elif len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        problem = "lower-case alphanumerics, '-' or '.', starting and ending with an alphanumeric"
    else:
        problem = ""
    if problem:
        name_node.fail(f"invalid name {name!r}: {problem}")
    labels = metadata.get("labels")
    if labels is not None:
        labels.labels()
    annotations = metadata.get("annotations")
    if annotations is not None:
        annotations.str_map()


# --- apply -----------------------------------------------------------------------------


def _order(obj: MeshObject) -> tuple[int, ObjectRef]:
    return kind_rank(obj.ref.kind), obj.ref


def apply(current: Sequence[MeshObject], new: Sequence[MeshObject]) -> list[MeshObject]:
    """``kubectl apply`` semantics: ``new`` creates or replaces objects of ``current``.

    Returns the resulting set, sorted so that what others refer to comes first
    (namespaces, then config, then workloads, then routing), after checking it
    with :func:`validate_set`; raises ManifestError and changes nothing
    otherwise.
    """
    merged = {obj.ref: obj for obj in current}
    batch: dict[ObjectRef, MeshObject] = {}
    for obj in new:
        if obj.ref in batch:
            raise ManifestError(
                obj.source,
                str(obj.ref),
                "metadata.name",
                f"the same object is also defined in {batch[obj.ref].source}",
            )
        batch[obj.ref] = obj
    merged.update(batch)
    result = sorted(merged.values(), key=_order)
    validate_set(result)
    return result
