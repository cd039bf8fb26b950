"""Versions of the served model: which one is loaded, in what state, and lookups.

As TF Serving's default "latest" version policy does, the newest numeric
version directory under the base path is served. A version is LOADING while
it loads and AVAILABLE once it answers; when a newer version appears (polled
every ``--file_system_poll_wait_seconds``), it is loaded beside the current
one and swapped in, and the old one goes to END. Requests in flight keep the
servable they resolved, so a swap drops nothing.
"""

from __future__ import annotations

import enum
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from canary.errors import ServingError
from serving.servable import Servable, load_servable
from serving.status import Code, RequestError

__all__ = ["ModelManager", "State", "VersionStatus", "scan_versions"]

log = logging.getLogger("serving.registry")


class State(enum.Enum):
    """ModelVersionStatus.State names."""

    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"


@dataclass(frozen=True)
class VersionStatus:
    """One version's state and, if its load failed, why."""

    version: int
    state: State
    error: RequestError | None = None


def scan_versions(base_path: Path) -> list[int]:
    """Numeric version directories under ``base_path`` that hold a SavedModel, ascending (a
    version directory that is a link out of the base path is not one)."""
    try:
        entries = list(base_path.iterdir())
    except OSError:
        return []
    versions = []
    base = base_path.resolve()
    for entry in entries:
        if not entry.name.isdigit() or not entry.resolve().is_relative_to(base):
            continue  # a version linked from outside the base path is not this model's
        if (entry / "saved_model.pb").is_file():
            versions.append(int(entry.name))
    return sorted(versions)


class ModelManager:
    """Loads, serves and hot-swaps the versions of one model."""

    def __init__(
        self,
        name: str,
        base_path: Path,
        *,
        shown_base_path: str | None = None,
        tags: str = "serve",
        warmup: bool = True,
    ) -> None:
        self.name = name
        self.base_path = base_path
        self._shown = shown_base_path or str(base_path)
        self._tags = tags
        self._warmup = warmup
        self._current: Servable | None = None
        self._states: dict[int, VersionStatus] = {}
        self._failed: set[int] = set()
        self._lock = threading.Lock()

    @property
    def current(self) -> Servable | None:
        """The servable answering requests, if any."""
        return self._current

    def check_base_path(self) -> int:
        """The newest version on disk; ServingError if the base path or versions are missing."""
        where = self._shown if self._shown == str(self.base_path) else f"{self._shown} (local {self.base_path})"
        if not self.base_path.is_dir():
            raise ServingError(
                f"Could not find base path {where} for servable {self.name}; export the models "
                "(python -m serving.export --store DIR) and point --model_base_path (or CANARY_VOLUME_MAP) at them"
            )
        versions = scan_versions(self.base_path)
        if not versions:
            raise ServingError(
                f"No versions of servable {self.name} found under base path {where}: expected "
                "numbered directories holding saved_model.pb (for example 1/saved_model.pb)"
            )
        return versions[-1]

    def load_initial(self) -> Servable:
        """Load the newest version (blocking); raise ServingError if there is none or it fails."""
        return self._load(self.check_base_path())

    def poll_once(self) -> None:
        """Load and swap in a newer version if one appeared (blocking; errors are logged)."""
        versions = [v for v in scan_versions(self.base_path) if v not in self._failed]
        current = self._current
        if not versions or (current is not None and versions[-1] == current.version):
            return
        try:
            self._load(versions[-1])
        except ServingError as error:
            log.error("%s", error)

    def _load(self, version: int) -> Servable:
        path = self.base_path / str(version)
        self._set(VersionStatus(version, State.LOADING))
        log.info("Loading servable: {name: %s version: %d} from %s", self.name, version, path)
        try:
            servable = load_servable(self.name, version, path, tags=self._tags, warmup=self._warmup)
        except ServingError as error:
            self._failed.add(version)
            self._set(VersionStatus(version, State.END, RequestError(Code.UNKNOWN, str(error))))
            raise
        with self._lock:
            previous, self._current = self._current, servable
            self._states[version] = VersionStatus(version, State.AVAILABLE)
            if previous is not None and previous.version != version:
                self._states[previous.version] = VersionStatus(previous.version, State.END)
        log.info("Successfully loaded servable version {name: %s version: %d}", self.name, version)
        return servable

    def _set(self, status: VersionStatus) -> None:
        with self._lock:
            self._states[status.version] = status

    def resolve(self, model_name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request names, or the RequestError TF Serving would give."""
        if label is not None:
            raise RequestError(
                Code.INVALID_ARGUMENT,
                f"Unrecognized servable version label: {label}. This server has no version labels "
                "(they need a model config file); ask for /versions/N or the latest version instead",
            )
        current = self._current
        request = f"Latest({model_name})" if version is None else f"Specific({model_name}, {version})"
        if model_name != self.name or current is None:
            raise RequestError(
                Code.NOT_FOUND, f"Servable not found for request: {request}. This server serves model '{self.name}'"
            )
        if version is not None and version != current.version:
            raise RequestError(
                Code.NOT_FOUND,
                f"Servable not found for request: {request}. Version {current.version} is being served",
            )
        return current

    def status(self, model_name: str, version: int | None = None) -> list[VersionStatus]:
        """Version states, newest first, or NOT_FOUND as GetModelStatus answers."""
        with self._lock:
            states = dict(self._states)
        if model_name != self.name or not states:
            raise RequestError(Code.NOT_FOUND, f"Could not find any versions of model {model_name}")
        if version is not None:
            if version not in states:
                raise RequestError(Code.NOT_FOUND, f"Could not find version {version} of model {model_name}")
            return [states[version]]
        return [states[v] for v in sorted(states, reverse=True)]
