"""What translation takes besides the objects, and what it gives: plain data, no I/O."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import PurePath, PurePosixPath
from typing import Any, Protocol

__all__ = [
    "CDS_FILE",
    "LDS_FILE",
    "ClusterKey",
    "EnvoyResources",
    "IngressSettings",
    "PodEndpoint",
    "XdsLayout",
    "XdsPaths",
    "eds_file",
    "rds_file",
]


@dataclass(frozen=True)
class PodEndpoint:
    """A running pod as the mesh sees it.

    ``ports`` maps each container port to the host port where it really
    listens (the local backend moves container ports to free loopback ports);
    ``port_names`` maps container port names to container ports, for Services
    whose targetPort is a name.
    """

    namespace: str
    name: str
    labels: dict[str, str]
    address: str
    ports: dict[int, int]
    port_names: dict[str, int]
    ready: bool


def _default_ports() -> dict[int, int]:
    return {80: 8080}


@dataclass(frozen=True)
class IngressSettings:
    """Where the ingress listens: ``ports`` maps a Gateway server port to a local port."""

    address: str = "127.0.0.1"
    ports: dict[int, int] = field(default_factory=_default_ports)


class XdsLayout(Protocol):
    """Where the file-based xDS resources live, as the config must point at them.

    Envoy's file subscriptions carry exactly one resource for RDS and EDS, so
    each route configuration and each cluster's endpoints get a file of their
    own; Envoy watches ``directory`` for files renamed into it.
    ``mesh.local.envoy.XdsFiles`` is the implementation that also writes them.
    """

    @property
    def directory(self) -> PurePath: ...

    def rds(self, route_config_name: str) -> PurePath: ...

    def eds(self, cluster_name: str) -> PurePath: ...


_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
LDS_FILE = "lds.json"
CDS_FILE = "cds.json"


def rds_file(route_config_name: str) -> str:
    """The file of one route configuration: ``rds_<name>.json``, unsafe characters as ``_``."""
    return f"rds_{_SAFE.sub('_', route_config_name)}.json"


def eds_file(cluster_name: str) -> str:
    """The file of one cluster's endpoints: ``eds_<cluster>.json``, unsafe characters as ``_``."""
    return f"eds_{_SAFE.sub('_', cluster_name)}.json"


@dataclass(frozen=True)
class XdsPaths:
    """An :class:`XdsLayout` that only names the files (for tests and dry runs); the names are
    the ones ``mesh.local.envoy.XdsFiles`` writes (:func:`rds_file`, :func:`eds_file`)."""

    watched_dir: str

    @property
    def directory(self) -> PurePosixPath:
        return PurePosixPath(self.watched_dir)

    def rds(self, route_config_name: str) -> PurePosixPath:
        return self.directory / rds_file(route_config_name)

    def eds(self, cluster_name: str) -> PurePosixPath:
        return self.directory / eds_file(cluster_name)


@dataclass(frozen=True)
class ClusterKey:
    """What an Envoy cluster stands for: one Service port, one subset ("" for all pods)."""

    service: str  # FQDN
    port: int
    subset: str
    namespace: str


@dataclass(frozen=True)
class EnvoyResources:
    """One Envoy configuration: each resource a proto3-JSON dict with its ``@type``.

    Every list is sorted by resource name; ``cluster_index`` maps each
    cluster's ``alt_stat_name`` (the ``envoy_cluster_name`` label of
    ``/stats/prometheus``) to what the cluster stands for.
    """

    listeners: list[dict[str, Any]]
    clusters: list[dict[str, Any]]
    route_configurations: list[dict[str, Any]]
    cluster_load_assignments: list[dict[str, Any]]
    cluster_index: dict[str, ClusterKey]

    def as_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-ready data (for golden files and debugging)."""
        return {
            "listeners": self.listeners,
            "clusters": self.clusters,
            "route_configurations": self.route_configurations,
            "cluster_load_assignments": self.cluster_load_assignments,
            "cluster_index": {
                name: asdict(key) for name, key in sorted(self.cluster_index.items())
            },
        }
