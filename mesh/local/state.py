"""What the local mesh remembers between commands, in ``<home>/mesh/state.json``.

The state is written atomically after each change, under an exclusive lock,
so a command killed half-way leaves the previous state whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from canary.conventions import canary_home
from canary.errors import MeshError, MeshNotRunningError
from canary.files import write_atomic

__all__ = [
    "ROUTING_KINDS",
    "AppliedFile",
    "AppliedVersion",
    "MeshHome",
    "MeshState",
    "PodState",
    "StoredObject",
    "interrupted_push",
    "last_routing_change",
    "routing_digest",
    "routing_documents",
    "sha256_file",
]

STATE_FORMAT = 1


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class PodState:
    namespace: str
    name: str
    deployment: str
    labels: dict[str, str]
    template_hash: str
    pid: int
    marker: str
    ports: dict[int, int]  # container port → host port
    port_names: dict[str, int]  # container port name → container port
    log: str
    # ``pid`` is the pod's kubelet (mesh.local.kubelet), which restarts the model server on the
    # same ports; it writes the server's pid, restarts and last exit here ("" in older states,
    # whose ``pid`` is the model server itself)
    status_file: str = ""


@dataclass
class StoredObject:
    """An applied object, kept as its manifest so it can be re-validated and re-translated."""

    source: str
    document: dict[str, Any]


@dataclass
class AppliedFile:
    path: str
    sha256: str
    objects: list[str]


ROUTING_KINDS = ("Gateway", "VirtualService", "DestinationRule")
"""The kinds that decide which subset answers a request: what a version records of the routing."""


def routing_documents(objects: list[StoredObject]) -> list[dict[str, Any]]:
    """``{"source", "document"}`` of each routing object among ``objects``, in order."""
    return [{"source": o.source, "document": o.document} for o in objects if o.document.get("kind") in ROUTING_KINDS]


def routing_digest(documents: list[dict[str, Any]]) -> str:
    """A hash of routing documents: equal exactly when the routing is the same."""
    return hashlib.sha256(orjson.dumps(documents, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass
class AppliedVersion:
    """One configuration version the mesh pushed: when it started and when Envoy acknowledged
    it (None while the push runs, and for a push that failed), from which files, and the
    routing objects it made live. Saved when the push starts, so a reader polling the state
    learns of a change before the first request the new routing may answer."""

    version: int
    started_at: str  # ISO 8601 UTC, before the first xDS file was written
    applied_at: str | None  # ISO 8601 UTC, when Envoy had acknowledged every resource
    files: list[str]
    routing: list[dict[str, Any]] = field(default_factory=list)
    routing_sha256: str = ""
    failed: bool = False
    # Envoy's request counts per subset ({"total": n, "2xx": n, …}) read just after the
    # acknowledgement, so a status can count since this version; None while pending, after a
    # failed push or counters Envoy did not give, and in state files older than this field
    counters: dict[str, dict[str, int]] | None = None
    # True for a version that put the configuration before it back, after an apply was
    # interrupted (Ctrl-C, SIGTERM, or a command killed mid-push) or its push failed
    restored: bool = False


def interrupted_push(history: Sequence[AppliedVersion]) -> AppliedVersion | None:
    """The newest version when its push never finished (neither acknowledged nor failed): the
    command that pushed it was killed. Only meaningful while no mesh command holds the lock."""
    if history and history[-1].applied_at is None and not history[-1].failed:
        return history[-1]
    return None


def last_routing_change(history: Sequence[AppliedVersion]) -> AppliedVersion | None:
    """The newest acknowledged version whose routing differs from the acknowledged version
    before it (the first acknowledged version is a change); None before any acknowledgement.
    A version that changed only pods or Services is no routing change."""
    change: AppliedVersion | None = None
    live = ""  # the routing digest of the version acknowledged last
    for version in history:
        if version.applied_at is None or version.failed:
            continue
        if change is None or version.routing_sha256 != live:
            change = version
        live = version.routing_sha256
    return change


def _pod_state(data: dict[str, Any]) -> PodState:
    return PodState(**{**data, "ports": {int(k): int(v) for k, v in data["ports"].items()}})


@dataclass
class MeshState:
    ingress_address: str
    ingress_ports: dict[int, int]  # Gateway port → local listener port
    store: str
    tiny: bool
    admin_socket: str = ""  # Envoy's admin interface: a Unix socket of mode 0600 ("" in older states)
    admin_port: int = 0  # a state written before the admin socket: that Envoy's admin was on TCP
    envoy_pid: int = 0
    envoy_marker: str = ""
    version: int = 0
    objects: list[StoredObject] = field(default_factory=list)
    pods: list[PodState] = field(default_factory=list)
    applied: list[AppliedFile] = field(default_factory=list)
    history: list[AppliedVersion] = field(default_factory=list)
    # pods running that are not (or no longer) live: those an apply has started but not yet made
    # live, and those a failed apply left behind; kept so that the next command stops them
    # (an apply killed half-way included) instead of their running on unknown
    starting: list[PodState] = field(default_factory=list)
    format: int = STATE_FORMAT

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)

    @classmethod
    def from_json(cls, raw: bytes) -> MeshState:
        data = orjson.loads(raw)
        if data.get("format") != STATE_FORMAT:
            raise MeshError("the mesh state was written by another canary version; run `canary mesh down`")
        data["ingress_ports"] = {int(k): int(v) for k, v in data["ingress_ports"].items()}
        data["objects"] = [StoredObject(**o) for o in data["objects"]]
        data["applied"] = [AppliedFile(**a) for a in data["applied"]]
        data["history"] = [AppliedVersion(**h) for h in data.get("history", [])]
        for key in ("pods", "starting"):
            data[key] = [_pod_state(p) for p in data.get(key, [])]
        return cls(**data)

    @property
    def ingress_url(self) -> str:
        port = self.ingress_ports.get(80) or next(iter(self.ingress_ports.values()), 0)
        return f"http://{self.ingress_address}:{port}"


class MeshHome:
    """The mesh's directory: state, lock, xDS files, bootstrap and logs."""

    def __init__(self, home: Path | None = None) -> None:
        self.root = (home or canary_home()) / "mesh"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def xds_dir(self) -> Path:
        return self.root / "xds"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def bootstrap(self) -> Path:
        return self.root / "envoy-bootstrap.json"

    def pod_dir(self, pod: str) -> Path:
        return self.root / "pods" / pod

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One mesh command at a time."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)  # the mesh's state is its owner's only
        with open(self.root / "lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise MeshError(
                    f"another canary mesh command is running on {self.root}; wait for it to finish"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def busy(self) -> bool:
        """Whether a mesh command holds the lock now (an apply under way)."""
        if not (self.root / "lock").exists():
            return False
        with open(self.root / "lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(lock, fcntl.LOCK_UN)
            return False

    def exists(self) -> bool:
        return self.state_file.exists()

    def load(self) -> MeshState:
        if not self.state_file.exists():
            raise MeshNotRunningError(str(self.root))
        return MeshState.from_json(self.state_file.read_bytes())

    def save(self, state: MeshState) -> None:
        write_atomic(self.state_file, state.to_json())
