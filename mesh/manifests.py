"""Manifests → validated mesh objects, and ``kubectl apply`` over sets of them.

``load_manifests`` reads files and directories as ``kubectl apply -f`` does;
``parse_objects`` turns already-parsed documents into typed objects. Both
check every object before returning anything, so a caller never applies half
a batch. ``apply`` merges a batch into the current set (create or replace, by
identity) and ``validate_set`` checks the cross-references of a whole set.
Everything here is pure but for reading the files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import yaml

from canary.errors import ManifestError
from mesh.manifest_fields import Node, Where
from mesh.manifest_refs import validate_set
from mesh.manifests_istio import parse_destination_rule, parse_gateway, parse_virtual_service
from mesh.manifests_k8s import (
    check_dns_label,
    parse_config_map,
    parse_deployment,
    parse_namespace,
    parse_pvc,
    parse_service,
)
from mesh.model import (
    ConfigMap,
    Deployment,
    DestinationRule,
    Gateway,
    MeshObject,
    Namespace,
    ObjectRef,
    PersistentVolumeClaim,
    Service,
    VirtualService,
)

__all__ = [
    "KIND_ORDER",
    "MANIFEST_SUFFIXES",
    "SUPPORTED_KINDS",
    "apply",
    "load_manifests",
    "parse_objects",
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

# The order a cluster needs them in: what others refer to comes first.
KIND_ORDER: tuple[type, ...] = (
    Namespace,
    ConfigMap,
    PersistentVolumeClaim,
    Service,
    Deployment,
    Gateway,
    DestinationRule,
    VirtualService,
)

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


# --- reading files ---------------------------------------------------------------------


def load_manifests(paths: Sequence[Path]) -> list[MeshObject]:
    """Every object in ``paths`` (files, or directories read non-recursively in name order).

    Raises ManifestError for the first problem found; nothing is returned
    unless every object is valid on its own (cross-references are checked by
    :func:`apply` against the whole resulting set).
    """
    docs: list[tuple[str, object]] = []
    for path in _manifest_files(paths):
        docs.extend((str(path), doc) for doc in _read_yaml(path))
    return parse_objects(docs)


def _manifest_files(paths: Sequence[Path]) -> list[Path]:
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


# libyaml's parser when it is there: several times faster than the pure-Python one.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):  # type: ignore[misc, valid-type]
    """YAML as Kubernetes reads it: duplicate keys are errors, dates stay strings."""


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(
    loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[object, object]:
    loader.flatten_mapping(node)
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, str | int | float | bool):
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"mapping key {key!r} appears twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path) -> list[object]:
    """Every document of the file; empty ones as None, so that documents keep their numbers."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(str(path), "", "", f"cannot read: {error}") from error
    try:
        return list(yaml.load_all(text, Loader=_StrictLoader))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ManifestError(str(path), "", "", f"invalid YAML: {where}{problem}") from error


# --- documents → objects ---------------------------------------------------------------


def parse_objects(docs: Iterable[tuple[str, object]]) -> list[MeshObject]:
    """Typed objects from ``(source name, document)`` pairs, in document order.

    ``kind: List`` documents contribute their items. Raises ManifestError for
    any invalid object, or for an object given twice.
    """
    objects: list[MeshObject] = []
    seen: dict[ObjectRef, MeshObject] = {}
    counts: dict[str, int] = {}
    for source, doc in docs:
        counts[source] = counts.get(source, 0) + 1
        if doc is None:  # an empty YAML document, as between two "---"
            continue
        for label, item in _expand_lists(source, doc, f"document {counts[source]}"):
            obj = _parse_object(source, label, item)
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


def _expand_lists(source: str, doc: object, label: str) -> list[tuple[str, object]]:
    if isinstance(doc, dict) and doc.get("kind") == "List":
        root = Node(Where(source, f"{label} (List)"), "", doc)
        root.only({"apiVersion", "kind", "items"}, ignored={"metadata"})
        items = root.get("items")
        listed = items.as_list() if items else []
        return [(f"{label}, item {i}", item.value) for i, item in enumerate(listed)]
    return [(label, doc)]


def _parse_object(source: str, label: str, doc: object) -> MeshObject:
    """One object; before its identity is known, errors name it by ``label``."""
    root = Node(Where(source, label), "", doc)
    root.as_map()
    kind_node, version_node = root.req("kind"), root.req("apiVersion")
    kind, version = kind_node.as_str(), version_node.as_str()
    if kind not in SUPPORTED_KINDS:
        kind_node.fail(_unsupported_kind(kind, version))
    versions, parser, namespaced = SUPPORTED_KINDS[kind]
    metadata = root.req("metadata")
    name = metadata.req("name").as_str()
    namespace = _namespace(metadata) if namespaced else ""
    ref = ObjectRef(kind, namespace, name)
    root = Node(Where(source, str(ref)), "", doc)
    if version not in versions:
        root.req("apiVersion").fail(
            f"apiVersion {version!r} is not supported for {kind} (supported: {', '.join(versions)})"
        )
    _check_metadata(root.req("metadata"), kind)
    return parser(root, ref, source)


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


def _check_metadata(metadata: Node, kind: str) -> None:
    metadata.only(
        {"name", "namespace", "labels"},
        ignored=_METADATA_IGNORED,
        unsupported={"generateName": "give the object a fixed metadata.name"},
    )
    name_node = metadata.req("name")
    name = name_node.as_str()
    if kind == "Namespace":
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
    return KIND_ORDER.index(type(obj)), obj.ref


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
