"""Every error canary raises on purpose, in one place.

Each message says what went wrong and what to do about it. The CLI prints
``str(error)`` and exits with ``error.exit_code``; nothing else needs to know
the hierarchy.
"""

from __future__ import annotations

__all__ = [
    "CalibrationError",
    "CanaryError",
    "ExportError",
    "FingerprintError",
    "ManifestError",
    "MeshError",
    "MeshNotRunningError",
    "PayloadError",
    "ProcessExitedError",
    "RequestFailedError",
    "ServingError",
    "UsageError",
]


class CanaryError(Exception):
    """Base class: a failure the user can act on."""

    exit_code = 3


class UsageError(CanaryError):
    """Bad command-line usage or unreadable input."""


class ManifestError(CanaryError):
    """A manifest is malformed or uses something the target mesh does not support.

    ``file`` is the manifest file, ``obj`` is ``Kind/namespace/name`` and
    ``field`` is a dotted path into the object (``spec.http[0].route[1].weight``).
    """

    def __init__(self, file: str, obj: str, field: str, message: str) -> None:
        self.file = file
        self.obj = obj
        self.field = field
        self.message = message
        where = f"{file}: {obj}" if obj else file
        if field:
            where += f": {field}"
        super().__init__(f"{where}: {message}")


class MeshError(CanaryError):
    """The mesh could not be brought up, changed or read."""


class ProcessExitedError(MeshError):
    """A process of the mesh exited before it became ready."""


class MeshNotRunningError(MeshError):
    """An operation needs the local mesh, and none is running."""

    def __init__(self, state_dir: str) -> None:
        super().__init__(
            f"no local mesh is running (state directory {state_dir}); "
            "start one with `canary mesh up`"
        )


class ServingError(CanaryError):
    """The model server cannot start or serve (bad flags, missing model)."""


class ExportError(CanaryError):
    """A model could not be exported to the model store."""


class PayloadError(CanaryError):
    """The payload images, labels or generated request bodies are missing or unusable."""


class CalibrationError(CanaryError):
    """Reference outputs could not be collected, read, or do not tell the subsets apart."""


class RequestFailedError(CanaryError):
    """A request reached a server and failed there: an HTTP error status, a gRPC error (exit code 1)."""

    exit_code = 1


class FingerprintError(CanaryError):
    """A predict response could not be read as a probability vector, or does not fit the calibration."""
