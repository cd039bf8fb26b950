"""YAML as the tool reads it: strictly, within bounds, and never an alias.

Kubernetes reads YAML with duplicate keys as errors and dates as strings;
:func:`load_yaml_documents` does the same and, beyond that, refuses anchors and
aliases (``&name``/``*name``: no manifest needs them, and a few aliased lists
expand to millions of values, the "alias bomb") and bounds a file's size and
document count. The checks run on libyaml's event stream before anything is
built, so a refused file costs one parse. Manifests are read through it
(:mod:`mesh.manifests`), and any other YAML the tool reads (a kubeconfig) can be.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from canary.errors import ManifestError

__all__ = [
    "MAX_MANIFEST_BYTES",
    "MAX_MANIFEST_DOCUMENTS",
    "load_yaml_documents",
    "read_yaml_file",
]

# Bounds on one manifest file, checked before it is parsed: a manifest is a few kB, a
# large Helm-rendered bundle a few hundred kB with a few hundred documents.
MAX_MANIFEST_BYTES = 1 << 20  # 1 MiB, as UTF-8
MAX_MANIFEST_DOCUMENTS = 1000

# libyaml's parser when it is there: several times faster than the pure-Python one.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):  # type: ignore[misc, valid-type]
    """YAML as Kubernetes reads it: duplicate keys are errors, dates stay strings.
    (Anchors and aliases are refused before it constructs anything: see
    :func:`load_yaml_documents`.)"""


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


def read_yaml_file(path: Path) -> list[object]:
    """Every document of the file, read by :func:`load_yaml_documents` (empty ones as None, so
    that documents keep their numbers); never more than :data:`MAX_MANIFEST_BYTES` is read."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_MANIFEST_BYTES + 1)  # never more than the bound, whatever the file
    except OSError as error:
        raise ManifestError(str(path), "", "", f"cannot read: {error}") from error
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(str(path), "", "", _too_big())
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ManifestError(str(path), "", "", f"cannot read: {error}") from error
    return load_yaml_documents(text, str(path))


def _too_big() -> str:
    return (
        f"larger than {MAX_MANIFEST_BYTES // 1024} KiB ({MAX_MANIFEST_BYTES} bytes), "
        "the most a manifest file may hold: split it into several files"
    )


def load_yaml_documents(text: str, source: str) -> list[object]:
    """Every YAML document of ``text``, read strictly (empty documents as None).

    Strict as Kubernetes reads YAML: a key given twice is an error and dates stay
    strings. Beyond that, anchors and aliases (``&name``, ``*name``) are refused: no
    manifest needs them, and a few aliased lists expand to millions of values (an
    "alias bomb"). ``text`` holds at most :data:`MAX_MANIFEST_BYTES` bytes (as UTF-8)
    and :data:`MAX_MANIFEST_DOCUMENTS` documents. Every problem is a
    :class:`ManifestError` naming ``source``, found before anything is constructed.
    """
    if len(text) > MAX_MANIFEST_BYTES or len(text.encode("utf-8")) > MAX_MANIFEST_BYTES:
        raise ManifestError(source, "", "", _too_big())
    try:
        _check_events(text, source)
        return list(yaml.load_all(text, Loader=_StrictLoader))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ManifestError(source, "", "", f"invalid YAML: {where}{problem}") from error


def _check_events(text: str, source: str) -> None:
    """Refuse anchors, aliases and too many documents from the event stream (libyaml's,
    one pass without building anything); YAML syntax errors surface here too."""
    documents = 0
    for event in yaml.parse(text, Loader=_StrictLoader):
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > MAX_MANIFEST_DOCUMENTS:
                raise ManifestError(
                    source,
                    "",
                    "",
                    f"more than {MAX_MANIFEST_DOCUMENTS} YAML documents, the most a manifest "
                    "file may hold: split it into several files",
                )
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            mark = event.start_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
            what = f"alias *{anchor}" if isinstance(event, yaml.AliasEvent) else f"anchor &{anchor}"
            raise ManifestError(
                source,
                "",
                "",
                f"invalid YAML: {where}the {what}: "
                "YAML anchors and aliases are not accepted (an alias can expand "
                "to millions of values); write each value out where it is used",
            )
