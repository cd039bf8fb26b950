"""A fake Kubernetes API server on loopback, for the official client over real HTTP.

It serves what ``mesh.kube`` and the ``kubernetes`` dynamic client ask of a
cluster: discovery (``/version``, ``/api``, ``/api/v1``, ``/apis``,
``/apis/<group>/<version>``), server-side apply (``PATCH`` with
``application/apply-patch+yaml``, ``fieldManager``, ``force``, ``dryRun=All``;
a dry run stores nothing) and GET of objects and collections. Deployments
report themselves rolled out (or not: :attr:`FakeApiServer.rolled_out`). A
namespaced object in a namespace that does not exist gets the API server's 404,
and :meth:`FakeApiServer.reject` makes it refuse a named object with a
Kubernetes ``Status`` body; :meth:`FakeApiServer.fail` answers every request
of a method with an error status (403, 503 ...), and
:attr:`FakeApiServer.required_token` answers 401 to any other bearer token.
Every request is recorded.

The server is a ``ThreadingHTTPServer`` on ``127.0.0.1``, port 0, in a thread,
over HTTPS when given a certificate (:func:`self_signed` makes one); tests
reach it through a kubeconfig (:meth:`FakeApiServer.write_kubeconfig`).
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import ssl
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

__all__ = ["RESOURCES", "ApiResource", "FakeApiServer", "Request", "self_signed"]

VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
APPLY_PATCH = "application/apply-patch+yaml"
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclass(frozen=True)
class ApiResource:
    """One resource the server serves, as discovery lists it."""

    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def discovery(self) -> dict[str, Any]:
        return {
            "name": self.plural,
            "singularName": self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(VERBS),
        }


def _group(
    group: str, versions: Iterable[str], kinds: Iterable[tuple[str, str, bool]]
) -> list[ApiResource]:
    return [
        ApiResource(group, version, kind, plural, namespaced)
        for version in versions
        for kind, plural, namespaced in kinds
    ]


RESOURCES: tuple[ApiResource, ...] = (
    *_group(
        "",
        ["v1"],
        [
            ("Namespace", "namespaces", False),
            ("ConfigMap", "configmaps", True),
            ("Secret", "secrets", True),
            ("Service", "services", True),
            ("ServiceAccount", "serviceaccounts", True),
            ("PersistentVolumeClaim", "persistentvolumeclaims", True),
            ("Pod", "pods", True),
        ],
    ),
    *_group(
        "apps",
        ["v1"],
        [
            ("Deployment", "deployments", True),
            ("StatefulSet", "statefulsets", True),
            ("DaemonSet", "daemonsets", True),
        ],
    ),
    *_group("batch", ["v1"], [("Job", "jobs", True), ("CronJob", "cronjobs", True)]),
    *_group(
        "rbac.authorization.k8s.io",
        ["v1"],
        [
            ("Role", "roles", True),
            ("RoleBinding", "rolebindings", True),
            ("ClusterRole", "clusterroles", False),
            ("ClusterRoleBinding", "clusterrolebindings", False),
        ],
    ),
    *_group(
        "networking.istio.io",
        ["v1", "v1beta1", "v1alpha3"],
        [
            ("Gateway", "gateways", True),
            ("VirtualService", "virtualservices", True),
            ("DestinationRule", "destinationrules", True),
            ("ServiceEntry", "serviceentries", True),
        ],
    ),
)


@dataclass(frozen=True)
class Request:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str
    body: Any  # the parsed JSON or YAML body, or None

    @property
    def dry_run(self) -> bool:
        return self.query.get("dryRun") == ["All"]

    @property
    def is_apply(self) -> bool:
        return self.method == "PATCH"

    @property
    def object_name(self) -> str:
        """``Kind/name`` of an apply's body."""
        body = self.body if isinstance(self.body, dict) else {}
        return f"{body.get('kind')}/{(body.get('metadata') or {}).get('name')}"


class _ApiError(Exception):
    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details


def _status(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A Kubernetes ``Status`` body, as the API server sends with every error."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


_CORE_PATH = re.compile(
    r"^/api/v1/(?:namespaces/(?P<ns>[^/]+)/)?(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?$"
)
_GROUP_PATH = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/(?:namespaces/(?P<ns>[^/]+)/)?"
    r"(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?$"
)


class FakeApiServer:
    """The fake API server; :meth:`start` it, :meth:`stop` it (the ``api_server`` fixture does)."""

    def __init__(
        self,
        resources: Iterable[ApiResource] = RESOURCES,
        *,
        namespaces: Iterable[str] = BUILTIN_NAMESPACES,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.resources = tuple(resources)
        self.requests: list[Request] = []
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.rejections: dict[tuple[str, str], tuple[int, str, str]] = {}
        self.failures: dict[str, tuple[int, str, str, bool | None]] = {}
        self.required_token: str | None = None  # else any request is served
        self.rolled_out = True  # what Deployments report in their status
        # takes over a request carrying `Upgrade: websocket` (tests/mesh/fake_portforward.py)
        self.websocket_handler: Callable[[BaseHTTPRequestHandler], None] | None = None
        self._lock = threading.Lock()
        self._versions = 0
        for name in namespaces:
            self.add_namespace(name)
        handler = type("Handler", (_Handler,), {"api": self})
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._scheme = "http"
        if tls is not None:  # certificate and key files
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._http.socket = context.wrap_socket(self._http.socket, server_side=True)
            self._scheme = "https"
        self._http.daemon_threads = True
        self._thread = threading.Thread(
            target=self._http.serve_forever, args=(0.02,), name="fake-apiserver", daemon=True
        )
        self._stopped = False

    # --- control -------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket (again: nothing)."""
        if self._stopped:
            return
        self._stopped = True
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)

    def write_kubeconfig(
        self,
        path: Path,
        context: str = "fake",
        *,
        server: str | None = None,
        user: dict[str, Any] | None = None,
        ca: Path | None = None,
    ) -> Path:
        """A kubeconfig whose ``context`` (also the current one) points at this server (or at
        ``server``), its user entry ``fake-user`` being ``user`` (default: a token), trusting
        the certificate in ``ca`` when given."""
        cluster: dict[str, Any] = {"server": server or self.url}
        if ca is not None:
            cluster["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake-cluster", "cluster": cluster}],
            "users": [{"name": "fake-user", "user": user or {"token": "fake-token"}}],
            "contexts": [
                {"name": context, "context": {"cluster": "fake-cluster", "user": "fake-user"}}
            ],
            "current-context": context,
        }
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    def reject(
        self, kind: str, name: str, message: str, *, code: int = 422, reason: str = "Invalid"
    ) -> None:
        """Refuse every apply of ``kind/name`` (dry run or not) with a ``Status`` body."""
        self.rejections[(kind, name)] = (code, reason, message)

    def fail(
        self, method: str, code: int, reason: str, message: str, *, dry_run: bool | None = None
    ) -> None:
        """Answer every ``method`` request (``GET``, ``PATCH``) with ``code`` and a ``Status``;
        only dry runs, or only real requests, when ``dry_run`` says so."""
        self.failures[method] = (code, reason, message, dry_run)

    def add_namespace(self, name: str) -> None:
        self.objects[("", "namespaces", "", name)] = self._stored(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, None, ""
        )

    def applies(self, *, dry_run: bool) -> list[Request]:
        """The server-side applies received, dry runs or real ones, in order."""
        return [r for r in self.requests if r.is_apply and r.dry_run == dry_run]

    def stored(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as stored (real applies only), or None."""
        resource = next(r for r in self.resources if r.kind == kind)
        return self.objects.get((resource.group, resource.plural, namespace, name))

    # --- serving -------------------------------------------------------------------

    def handle(
        self, method: str, target: str, content_type: str, raw: bytes, authorization: str = ""
    ) -> tuple[int, Any]:
        url = urlsplit(target)
        query = parse_qs(url.query)
        body: Any = None
        if raw:
            try:
                body = yaml.safe_load(raw.decode("utf-8"))  # JSON is YAML too
            except (yaml.YAMLError, UnicodeDecodeError):
                body = raw.decode("utf-8", "replace")
        with self._lock:
            self.requests.append(Request(method, url.path, query, content_type, body))
            if self.required_token is not None and authorization != f"Bearer {self.required_token}":
                return 401, _status(401, "Unauthorized", "Unauthorized")
            if method in self.failures:
                code, reason, message, dry_run = self.failures[method]
                if dry_run is None or dry_run == (query.get("dryRun") == ["All"]):
                    return code, _status(code, reason, message)
            try:
                return self._route(method, url.path, query, content_type, body)
            except _ApiError as error:
                return error.code, _status(error.code, error.reason, error.message, error.details)

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], content_type: str, body: Any
    ) -> tuple[int, Any]:
        if method == "GET":
            discovery = self._discovery(path.rstrip("/"))
            if discovery is not None:
                return 200, discovery
        match = _CORE_PATH.match(path) or _GROUP_PATH.match(path)
        if match is None:
            raise _ApiError(404, "NotFound", "the server could not find the requested resource")
        parts = match.groupdict()
        group, version = parts.get("group") or "", parts.get("version") or "v1"
        resource = next(
            (
                r
                for r in self.resources
                if (r.group, r.version, r.plural) == (group, version, parts["plural"])
            ),
            None,
        )
        if resource is None or (parts["ns"] is not None and not resource.namespaced):
            raise _ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace, name = parts["ns"] or "", parts["name"]
        if method == "GET" and name is None:
            items = [
                self._shown(obj, resource)
                for (g, p, ns, _), obj in sorted(self.objects.items())
                if (g, p) == (group, resource.plural) and (not namespace or ns == namespace)
            ]
            return 200, {
                "kind": f"{resource.kind}List",
                "apiVersion": resource.group_version,
                "metadata": {},
                "items": items,
            }
        if name is None or (resource.namespaced and not namespace):
            raise _ApiError(
                405,
                "MethodNotAllowed",
                f"{method} needs a {'namespaced ' if resource.namespaced else ''}object name",
            )
        if method == "GET":
            return self._get(resource, namespace, name)
        if method == "PATCH":
            return self._apply(resource, namespace, name, query, content_type, body)
        raise _ApiError(405, "MethodNotAllowed", f"the fake API server does not implement {method}")

    def _discovery(self, path: str) -> dict[str, Any] | None:
        if path == "/version":
            return {"major": "1", "minor": "31", "gitVersion": "v1.31.0", "platform": "linux/amd64"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            groups: dict[str, list[str]] = {}
            for r in self.resources:
                if r.group and r.version not in groups.setdefault(r.group, []):
                    groups[r.group].append(r.version)
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": name,
                        "versions": [
                            {"groupVersion": f"{name}/{v}", "version": v} for v in versions
                        ],
                        "preferredVersion": {
                            "groupVersion": f"{name}/{versions[0]}",
                            "version": versions[0],
                        },
                    }
                    for name, versions in groups.items()
                ],
            }
        if path == "/api/v1":
            group_version = "v1"
        elif path.startswith("/apis/") and path.count("/") == 3:
            group_version = path.removeprefix("/apis/")
        else:
            return None
        listed = [r for r in self.resources if r.group_version == group_version]
        if not listed:
            return None
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": [r.discovery() for r in listed],
        }

    def _get(self, resource: ApiResource, namespace: str, name: str) -> tuple[int, Any]:
        obj = self.objects.get((resource.group, resource.plural, namespace, name))
        if obj is None:
            raise _ApiError(
                404,
                "NotFound",
                f'{self._plural(resource)} "{name}" not found',
                {"name": name, "kind": resource.plural},
            )
        return 200, self._shown(obj, resource)

    def _apply(
        self,
        resource: ApiResource,
        namespace: str,
        name: str,
        query: dict[str, list[str]],
        content_type: str,
        body: Any,
    ) -> tuple[int, Any]:
        if content_type.split(";")[0].strip() != APPLY_PATCH:
            raise _ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: {APPLY_PATCH}",
            )
        if not query.get("fieldManager", [""])[0]:
            raise _ApiError(
                400,
                "BadRequest",
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
            )
        if query.get("dryRun", ["All"]) != ["All"]:
            raise _ApiError(400, "BadRequest", f"invalid dry run option: {query['dryRun']}")
        if query.get("force", ["false"])[0] not in ("true", "false", "True", "False"):
            raise _ApiError(400, "BadRequest", f"invalid force option: {query['force']}")
        if not isinstance(body, dict):
            raise _ApiError(400, "BadRequest", "the body of an apply patch must be an object")
        metadata = body.get("metadata") or {}
        if (body.get("apiVersion"), body.get("kind")) != (resource.group_version, resource.kind):
            raise _ApiError(
                400,
                "BadRequest",
                f"the body is a {body.get('apiVersion')} {body.get('kind')}, the URL names {resource.group_version} {resource.kind}",
            )
        if metadata.get("name") != name:
            raise _ApiError(
                400,
                "BadRequest",
                f"the name of the object ({metadata.get('name')}) does not match the name on the URL ({name})",
            )
        if resource.namespaced and metadata.get("namespace", namespace) != namespace:
            raise _ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        rejection = self.rejections.get((resource.kind, name))
        if rejection is not None:
            code, reason, message = rejection
            raise _ApiError(
                code,
                reason,
                f'{resource.kind} "{name}" is invalid: {message}',
                {"name": name, "kind": resource.plural},
            )
        if resource.namespaced and ("", "namespaces", "", namespace) not in self.objects:
            raise _ApiError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                {"name": namespace, "kind": "namespaces"},
            )
        key = (resource.group, resource.plural, namespace, name)
        existing = self.objects.get(key)
        stored = self._stored(body, existing, namespace if resource.namespaced else "")
        if not query.get("dryRun"):
            self.objects[key] = stored
        return (200 if existing else 201), self._shown(stored, resource)

    def _stored(
        self, body: dict[str, Any], existing: dict[str, Any] | None, namespace: str
    ) -> dict[str, Any]:
        """``body`` as the API server would keep it: identity, versions and generation filled in."""
        obj = copy.deepcopy(body)
        obj.pop("status", None)
        metadata = obj.setdefault("metadata", {})
        old = (existing or {}).get("metadata", {})
        self._versions += 1
        metadata.update(
            uid=old.get("uid") or str(uuid.uuid4()),
            resourceVersion=str(self._versions),
            creationTimestamp=old.get("creationTimestamp") or "2024-01-01T00:00:00Z",
        )
        if namespace:
            metadata["namespace"] = namespace
        changed = existing is None or existing.get("spec") != obj.get("spec")
        metadata["generation"] = old.get("generation", 0) + (1 if changed else 0)
        return obj

    def _shown(self, obj: dict[str, Any], resource: ApiResource) -> dict[str, Any]:
        """The object as a GET shows it; Deployments with their rollout status."""
        shown = copy.deepcopy(obj)
        if resource.kind == "Deployment":
            replicas = (shown.get("spec") or {}).get("replicas", 1)
            ready = replicas if self.rolled_out else 0
            shown["status"] = {
                "observedGeneration": shown["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": ready,
                "availableReplicas": ready,
            }
        return shown

    @staticmethod
    def _plural(resource: ApiResource) -> str:
        return f"{resource.plural}.{resource.group}" if resource.group else resource.plural


class _Handler(BaseHTTPRequestHandler):
    api: FakeApiServer

    def _serve(self) -> None:
        if self.api.websocket_handler and self.headers.get("Upgrade", "").lower() == "websocket":
            self.close_connection = True
            return self.api.websocket_handler(self)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        code, body = self.api.handle(
            self.command,
            self.path,
            self.headers.get("Content-Type", ""),
            raw,
            self.headers.get("Authorization", ""),
        )
        data = json.dumps(body).encode("utf-8")
        self.send_response(code, HTTPStatus(code).phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PATCH = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by ``openssl`` (the test skips without it)."""
    import pytest

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = folder / "server.crt", folder / "server.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key
