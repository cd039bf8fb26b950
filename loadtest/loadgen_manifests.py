"""The in-cluster load generator's Kubernetes objects, filled in for one run.

``manifests/loadgen/`` (:data:`LOADGEN_DIR`) holds templates: the
ServiceAccount, Role and RoleBinding of the load generator (it may list the
mesh under test in its namespace, exactly the namespaced calls of
:data:`mesh.kube_query.READS`), the Locust master (a Job and the Service its
workers reach it by) and the workers (a Job of N pods). Applied as they are,
the Jobs stay suspended and start nothing.

:func:`read_templates` reads them (plain safe YAML: the load test reaches the mesh
only through ``mesh.api``, which does not offer the strict reader; the tests hold
the templates to the strict reader, the cluster reading and Kubernetes' schemas,
and ``canary mesh apply --kube`` reads what is applied strictly);
:func:`render` fills them in for one run: the namespace, the image, the number
of workers, the run's files in the ConfigMap ``canary-loadgen-run`` (mounted
at ``/etc/canary-run`` in every pod), the label and annotation
``canary/run-id`` on every object, and ``suspend: false``. It returns the
documents to apply, in apply order; :func:`as_yaml` writes them as one YAML
stream that :mod:`mesh.manifest_yaml` reads back (no anchors or aliases).

The Jobs' names are fixed: one load generator per namespace at a time. A
Job's pod template cannot be changed once created, so a run deletes the
previous run's Jobs before applying its own.

Pure: objects in, objects out; only :func:`read_templates` reads files.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from canary.conventions import check_dns_label
from canary.errors import ManifestError, UsageError
from mesh.api import default_manifests

__all__ = [
    "APPLY_ORDER",
    "LOADGEN_DIR",
    "MASTER",
    "MAX_RUN_FILES_BYTES",
    "RUN_CONFIG",
    "RUN_ID_KEY",
    "SERVICE_ACCOUNT",
    "WORKERS",
    "as_yaml",
    "image_problem",
    "read_templates",
    "render",
    "role_rules",
]

LOADGEN_DIR = default_manifests("loadgen").resolve()
"""The templates: ``manifests/loadgen`` of the working directory, else of the checkout."""

SERVICE_ACCOUNT = "canary-loadgen"
MASTER = "canary-loadgen-master"  # the master's Job and Service
WORKERS = "canary-loadgen-workers"
RUN_CONFIG = "canary-loadgen-run"  # the ConfigMap with the run's files
RUN_ID_KEY = "canary/run-id"  # label and annotation on every object of a run

MAX_RUN_FILES_BYTES = 1 << 20
"""Kubernetes refuses a ConfigMap holding more than 1 MiB; counted here as the files'
names and contents in UTF-8 (a little stricter than the API server)."""

_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

# The order a cluster needs them in (``mesh.manifests.KIND_ORDER``, which ``canary mesh apply
# --kube`` follows too): identities and config, access rules, the Service, the Jobs.
APPLY_ORDER = ("ServiceAccount", "ConfigMap", "Role", "RoleBinding", "Service", "Job")

# An image reference as the container runtimes read it (the grammar of
# github.com/distribution/reference): [host[:port]/]path[:tag][@digest].
_ALNUM = r"[a-z0-9]+"
_PATH_COMPONENT = rf"{_ALNUM}(?:(?:[._]|__|-+){_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(rf"^(?P<name>{_NAME})(?::{_TAG})?(?:@{_DIGEST})?$")


# --- reading the templates ---------------------------------------------------------------


def read_templates(folder: Path | None = None) -> list[dict[str, Any]]:
    """The documents of the ``*.yaml`` files of ``folder`` (default :data:`LOADGEN_DIR`), in
    name order; :class:`ManifestError` naming the file for one that cannot be read or holds
    something else than Kubernetes objects. (Their content is checked where they are
    applied, by ``mesh.kube``'s strict reading and the API server's dry run; the tests check
    the templates with both the project's reader and Kubernetes' schemas.)"""
    folder = Path(folder) if folder is not None else LOADGEN_DIR
    paths = sorted(folder.glob("*.yaml"))
    if not paths:
        raise ManifestError(str(folder), "", "", "no load generator templates (*.yaml) in this directory")
    documents: list[dict[str, Any]] = []
    for path in paths:
        try:
            found = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise ManifestError(str(path), "", "", f"cannot read: {error}") from error
        for number, doc in enumerate(found, 1):
            if doc is None:
                continue
            if not isinstance(doc, dict) or not {"apiVersion", "kind", "metadata"} <= doc.keys():
                raise ManifestError(str(path), f"document {number}", "", "not a Kubernetes object")
            documents.append(doc)
    return documents


def role_rules(documents: Iterable[Mapping[str, Any]]) -> frozenset[tuple[str, str, str]]:
    """Every ``(apiGroup, resource, verb)`` the load generator's Role grants."""
    granted: set[tuple[str, str, str]] = set()
    for doc in documents:
        if doc.get("kind") == "Role" and _name(doc) == SERVICE_ACCOUNT:
            for rule in doc.get("rules") or ():
                granted.update(
                    (group, resource, verb)
                    for group in rule.get("apiGroups") or ()
                    for resource in rule.get("resources") or ()
                    for verb in rule.get("verbs") or ()
                )
    return frozenset(granted)


# --- one run -------------------------------------------------------------------------------


def image_problem(image: str) -> str:
    """Why ``image`` is not a plausible image reference (``registry/name:tag``), or ""."""
    match = _REFERENCE.match(image)
    if match is None:
        return (
            "not an image reference: [registry[:port]/]name[:tag][@sha256:digest], "
            "the name in lower case (e.g. registry.example.com/canary-loadgen:0.1.0)"
        )
    if len(match.group("name")) > 255:
        return "an image name has at most 255 characters"
    return ""


def render(
    templates: Sequence[Mapping[str, Any]],
    *,
    run_id: str,
    image: str,
    workers: int,
    namespace: str,
    files: Mapping[str, str],
) -> list[dict[str, Any]]:
    """The documents to apply for one run, in apply order (``templates`` is left as it is).

    Every object goes to ``namespace`` and carries ``canary/run-id: run_id`` as a label and
    an annotation (the Jobs' pods too); both Jobs run ``image``, unsuspended; the workers'
    Job runs ``workers`` pods at once; the ConfigMap ``canary-loadgen-run`` holds ``files``
    (file name → content). Raises :class:`UsageError` for a ``run_id`` or ``namespace``
    that is not a DNS label, an implausible image, ``workers`` < 1, or files that are no
    ConfigMap's (bad names, more than 1 MiB); :class:`ManifestError` when the templates
    lack the load generator's Jobs.
    """
    _check_run(run_id=run_id, image=image, workers=workers, namespace=namespace)
    documents = [
        copy.deepcopy(dict(doc))
        for doc in templates
        if not (doc.get("kind") == "ConfigMap" and _name(doc) == RUN_CONFIG)
    ]
    documents.append(_run_config(files))
    jobs = {_name(doc): doc for doc in documents if doc.get("kind") == "Job"}
    for name in (MASTER, WORKERS):
        if name not in jobs:
            raise ManifestError(
                str(LOADGEN_DIR), f"Job/{namespace}/{name}", "",
                "the load generator's templates lack this Job: restore manifests/loadgen/",
            )
    for doc in documents:
        _place(doc, namespace, run_id)
    for job in jobs.values():
        _fill_job(job, image, run_id)
    jobs[WORKERS]["spec"]["parallelism"] = workers
    jobs[WORKERS]["spec"]["completions"] = workers
    return sorted(documents, key=lambda doc: (_apply_rank(str(doc.get("kind"))), _name(doc)))


def as_yaml(documents: Iterable[Mapping[str, Any]]) -> str:
    """``documents`` as one YAML stream, without anchors or aliases (which the project's
    reader refuses), keys in the documents' order."""
    return yaml.dump_all(
        [_plain(doc) for doc in documents], Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True
    )


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _check_run(*, run_id: str, image: str, workers: int, namespace: str) -> None:
    problem = check_dns_label(run_id) if isinstance(run_id, str) else "not a string"
    if problem:
        raise UsageError(
            f"run id {run_id!r} cannot label Kubernetes objects ({problem}): "
            f"give a DNS label, e.g. {_as_label(run_id)!r}"
        )
    problem = check_dns_label(namespace) if isinstance(namespace, str) else "not a string"
    if problem:
        raise UsageError(f"namespace {namespace!r} is not a namespace name ({problem})")
    problem = image_problem(image) if isinstance(image, str) else "not a string"
    if problem:
        raise UsageError(
            f"image {image!r} is {problem}; give the image you pushed "
            "(docker build -f docker/loadgen.Dockerfile -t REGISTRY/canary-loadgen:TAG .)"
        )
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UsageError(f"workers must be a whole number of at least 1, not {workers!r}")


def _apply_rank(kind: str) -> int:
    return APPLY_ORDER.index(kind) if kind in APPLY_ORDER else len(APPLY_ORDER)


def _as_label(text: object) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", str(text).lower()).strip("-")[:63].strip("-")
    return label or "run-1"


def _run_config(files: Mapping[str, str]) -> dict[str, Any]:
    size = 0
    for key, content in files.items():
        if not isinstance(key, str) or not _CONFIG_KEY.match(key) or len(key) > 253 or key in (".", ".."):
            raise UsageError(
                f"run file name {key!r} cannot be a ConfigMap key: "
                "letters, digits, '-', '_' or '.', at most 253 characters"
            )
        if not isinstance(content, str):
            raise UsageError(f"run file {key!r} must be text, not {type(content).__name__}")
        size += len(key.encode("utf-8")) + len(content.encode("utf-8"))
    if size > MAX_RUN_FILES_BYTES:
        raise UsageError(
            f"the run's files hold {size} bytes, more than the {MAX_RUN_FILES_BYTES} bytes (1 MiB) "
            f"a ConfigMap may hold ({', '.join(sorted(files))}); send fewer or smaller files"
        )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": RUN_CONFIG, "labels": {"app": "canary-loadgen"}},
        "data": {key: files[key] for key in sorted(files)},
    }


def _name(doc: Mapping[str, Any]) -> str:
    return str((doc.get("metadata") or {}).get("name", ""))


def _mark(metadata: dict[str, Any], run_id: str) -> None:
    metadata["labels"] = {**(metadata.get("labels") or {}), RUN_ID_KEY: run_id}
    metadata["annotations"] = {**(metadata.get("annotations") or {}), RUN_ID_KEY: run_id}


def _place(doc: dict[str, Any], namespace: str, run_id: str) -> None:
    metadata = doc.setdefault("metadata", {})
    metadata["namespace"] = namespace
    _mark(metadata, run_id)
    if doc.get("kind") == "RoleBinding":
        for subject in doc.get("subjects") or ():
            if subject.get("kind") == "ServiceAccount":
                subject["namespace"] = namespace


def _fill_job(job: dict[str, Any], image: str, run_id: str) -> None:
    spec = job["spec"]
    spec["suspend"] = False
    template = spec["template"]
    _mark(template.setdefault("metadata", {}), run_id)
    pod = template["spec"]
    for container in [*pod.get("initContainers", ()), *pod["containers"]]:
        container["image"] = image
