"""The versions of one model: which are served, in what state, and how they change.

Version directories are read as TF Serving reads them
(sources/storage_path/file_system_storage_path_source.cc): a child of the
base path is a version when its name parses as a 64-bit integer as
``absl::SimpleAtoi`` parses it (``00000123`` is version 123); when two
names give one number (``1`` and ``01``), the last in byte order wins and a
warning is logged. Here a version directory must also hold
``saved_model.pb`` (so a directory made before its files is not one yet;
write a new version under another name and rename it into place, as a
load that fails on half-copied variables is not tried again while the
version stays), and one that is a link out of the base path is not this
model's.

The model's ``model_version_policy`` (latest N, all, specific) picks the
versions to serve; :meth:`ModelManager.sync` (run at start, on every
``--file_system_poll_wait_seconds`` poll and on a config reload) loads and
unloads as TF Serving's ``AvailabilityPreservingPolicy`` does: versions no
longer wanted are unloaded once a wanted one is AVAILABLE, and new ones load
newest first. Each version goes START -> LOADING -> AVAILABLE -> END (END
with the error when its load fails; a failed version is not retried while
it stays wanted). Requests in flight keep the servable they resolved, so a
swap drops nothing.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from canary.errors import ServingError
from serving.model_config import VersionPolicy
from serving.servable import Servable, load_servable
from serving.status import Code, RequestError

__all__ = ["ModelManager", "State", "VersionStatus", "parse_version", "scan_versions", "version_dirs"]

log = logging.getLogger("serving.registry")

# What makes a directory a version. (TF Serving also loads saved_model.pbtxt; serving.servable reads
# saved_model.pb only, so a version written as text is not picked up here.)
_SAVED_MODEL_FILES = ("saved_model.pb",)
_INT64 = 2**63
_ASCII_SPACE = " \t\n\v\f\r"


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


def parse_version(name: str) -> int | None:
    """The version a directory name stands for, as ``absl::SimpleAtoi`` parses an int64, or None.

    ASCII whitespace around the number and one leading sign are allowed; anything else (and a
    number beyond 64 bits) is not a version.
    """
    text = name.strip(_ASCII_SPACE)
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    value = int(text)
    return value if -_INT64 <= value < _INT64 else None


def version_dirs(base_path: Path, warned: set[tuple[int, str, str]] | None = None) -> dict[int, str]:
    """Version -> directory name under ``base_path``: children whose name parses as a version, that
    hold a SavedModel and do not lead out of the base path. Of two names for one version the last in
    byte order wins, with TF Serving's warning (once per pair when ``warned`` is given)."""
    try:
        entries = sorted(base_path.iterdir(), key=lambda entry: entry.name.encode())
    except OSError:
        return {}
    base = base_path.resolve()
    found: dict[int, str] = {}
    for entry in entries:
        version = parse_version(entry.name)
        if version is None:
            continue
        try:
            if not entry.resolve().is_relative_to(base):
                continue  # a version linked from outside the base path is not this model's
            if not any((entry / name).is_file() for name in _SAVED_MODEL_FILES):
                continue  # not (yet) a SavedModel
        except (OSError, RuntimeError) as error:  # a link loop, an unreadable entry: not a version
            if warned is None or (version, entry.name, "") not in warned:
                log.warning("%s is not a version directory (%s): remove or fix it", entry, error)
                if warned is not None:
                    warned.add((version, entry.name, ""))
            continue
        previous = found.get(version)
        if previous is not None and (warned is None or (version, entry.name, previous) not in warned):
            log.warning(
                "Duplicate version directories detected. Version %d will be loaded from %s, %s will be ignored.",
                version, entry.name, previous,
            )
            if warned is not None:
                warned.add((version, entry.name, previous))
        found[version] = entry.name
    return found


def scan_versions(base_path: Path) -> list[int]:
    """The versions under ``base_path`` (see :func:`version_dirs`), ascending."""
    return sorted(version_dirs(base_path))


class ModelManager:
    """Loads, serves and unloads the versions of one model as its version policy asks."""

    def __init__(
        self,
        name: str,
        base_path: Path,
        *,
        shown_base_path: str | None = None,
        policy: VersionPolicy | None = None,
        tags: str = "serve",
        warmup: bool = True,
    ) -> None:
        self.name = name
        self.base_path = base_path
        self._shown = shown_base_path or str(base_path)
        self.policy = policy or VersionPolicy()
        self._tags = tags
        self._warmup = warmup
        self._served: Mapping[int, Servable] = {}  # replaced, never mutated: readers take no lock
        self._states: dict[int, VersionStatus] = {}
        self._failed: set[int] = set()
        self._warned: set[tuple[int, str, str]] = set()
        self._missing_warned: frozenset[int] = frozenset()
        self._lock = threading.Lock()  # guards _states and the swaps of _served
        self._sync_lock = threading.Lock()  # one sync at a time

    def configure(self, base_path: Path, shown_base_path: str, policy: VersionPolicy) -> None:
        """Take a new base path and policy (a config reload); :meth:`sync` applies them."""
        self.base_path, self._shown, self.policy = base_path, shown_base_path, policy

    @property
    def served(self) -> Mapping[int, Servable]:
        """The AVAILABLE versions (a new mapping after every change, never changed in place)."""
        return self._served

    @property
    def current(self) -> Servable | None:
        """The newest AVAILABLE version, if any (what a request without a version gets)."""
        served = self._served
        return served[max(served)] if served else None

    def servable(self, version: int | None = None) -> Servable | None:
        """The AVAILABLE ``version`` (the newest when None), or None."""
        served = self._served
        if version is None:
            return served[max(served)] if served else None
        return served.get(version)

    def states(self) -> dict[int, VersionStatus]:
        """Every version this manager has seen, with its state (END ones included, as TF Serving keeps them)."""
        with self._lock:
            return dict(self._states)

    def _where(self) -> str:
        return self._shown if self._shown == str(self.base_path) else f"{self._shown} (local {self.base_path})"

    def wanted(self) -> dict[int, str]:
        """Version -> directory name of the versions the policy serves; ServingError if the base path is missing."""
        if not self.base_path.is_dir():
            raise ServingError(
                f"Could not find base path {self._where()} for servable {self.name}; export the models "
                "(python -m serving.export --store DIR) and point --model_base_path (or CANARY_VOLUME_MAP) at them"
            )
        found = version_dirs(self.base_path, self._warned)
        chosen = self.policy.select(found)
        if self.policy.kind == "specific":
            missing = frozenset(self.policy.versions) - set(chosen)
            if missing != self._missing_warned:
                for version in sorted(missing - self._missing_warned):
                    log.warning(
                        "Version %d of servable %s, which was requested to be served as a 'specific' version in "
                        "the servable's version policy, was not found in the file system", version, self.name,
                    )
                self._missing_warned = missing
        return {version: found[version] for version in chosen}

    def check_base_path(self) -> int:
        """The newest version to serve; ServingError if the base path or the versions are missing."""
        wanted = self.wanted()
        if not wanted:
            asked = "" if self.policy.kind == "latest" else f" that its version policy ({self.policy.describe()}) asks for"
            raise ServingError(
                f"No versions of servable {self.name}{asked} found under base path {self._where()}: expected "
                "numbered directories holding saved_model.pb (for example 1/saved_model.pb)"
            )
        return max(wanted)

    def load_initial(self) -> Servable:
        """Load the versions to serve (blocking); raise ServingError if there is none or one fails."""
        self.check_base_path()
        errors = self.sync()
        if errors:
            raise errors[0]
        current = self.current
        if current is None:  # pragma: no cover - sync loads at least the newest wanted version or fails
            raise ServingError(f"no version of {self.name} became available")
        return current

    def poll_once(self) -> bool:
        """Apply what changed on disk (blocking; errors are logged); True if the served versions changed."""
        before = self._served
        try:
            for error in self.sync():
                log.error("%s", error)
        except ServingError as error:  # base path gone: keep serving what is loaded, as TF Serving does
            log.error("%s", error)
        return self._served is not before

    def sync(self) -> list[ServingError]:
        """Load and unload until the served versions are those the policy wants; the load errors.

        Raises ServingError, changing nothing, when the base path is missing.
        """
        with self._sync_lock:
            wanted = self.wanted()
            self._failed &= set(wanted)  # a failed version that went away is tried again if it comes back
            with self._lock:
                for version in wanted:
                    state = self._states.get(version)
                    if version not in self._served and version not in self._failed and (
                        state is None or state.state is State.END
                    ):
                        self._states[version] = VersionStatus(version, State.START)
            errors: list[ServingError] = []
            while True:
                served = self._served
                unwanted = sorted(v for v in served if v not in wanted)
                if unwanted and (not wanted or any(v in wanted for v in served) or len(unwanted) > 1):
                    self._unload(unwanted[0])
                    continue
                pending = sorted(v for v in wanted if v not in served and v not in self._failed)
                if not pending:
                    return errors
                try:
                    self._load(pending[-1], self.base_path / wanted[pending[-1]])
                except ServingError as error:
                    errors.append(error)

    def retire(self) -> None:
        """Unload every version (the model left the config); their states stay, END."""
        with self._sync_lock:
            for version in sorted(self._served):
                self._unload(version)
            with self._lock:
                for version, status in list(self._states.items()):
                    if status.state is State.START:
                        self._states[version] = VersionStatus(version, State.END)
            self._failed.clear()

    def _load(self, version: int, path: Path) -> Servable:
        self._set(VersionStatus(version, State.LOADING))
        log.info("Loading servable: {name: %s version: %d} from %s", self.name, version, path)
        try:
            servable = load_servable(self.name, version, path, tags=self._tags, warmup=self._warmup)
        except ServingError as error:
            self._failed.add(version)
            self._set(VersionStatus(version, State.END, RequestError(Code.UNKNOWN, str(error))))
            raise
        with self._lock:
            self._served = {**self._served, version: servable}
            self._states[version] = VersionStatus(version, State.AVAILABLE)
        log.info("Successfully loaded servable version {name: %s version: %d}", self.name, version)
        return servable

    def _unload(self, version: int) -> None:
        log.info("Unloading servable version {name: %s version: %d}", self.name, version)
        with self._lock:  # requests in flight keep their reference; the servable goes when they finish
            self._served = {v: s for v, s in self._served.items() if v != version}
            self._states[version] = VersionStatus(version, State.END)
        log.info("Done unloading servable version {name: %s version: %d}", self.name, version)

    def _set(self, status: VersionStatus) -> None:
        with self._lock:
            self._states[status.version] = status
