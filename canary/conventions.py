"""The names every part of canary shares, each defined once.

The protocols and request groups a run is made of, the canary header, the
served model's name, the predict paths of both protocols, the outcome names
of a response that no subset answered, where canary keeps its state, and the
exit codes every command uses. Pure: the standard library only.
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import re
from pathlib import Path

from canary.errors import UsageError

__all__ = [
    "CANARY_HOME_ENV",
    "DEFAULT_HEADER",
    "DEFAULT_HEADER_TEXT",
    "DEFAULT_MODEL_VERSION",
    "DEFAULT_PAYLOAD_SIZE",
    "ERROR",
    "EXIT_CODES_HELP",
    "GROUPS",
    "GRPC_MODEL_STATUS_METHOD",
    "GRPC_PREDICT_METHOD",
    "MODEL_NAME",
    "PROTOCOLS",
    "RESERVED_SUBSETS",
    "UNKNOWN",
    "Cell",
    "ExitCode",
    "canary_home",
    "check_dns_label",
    "order_cells",
    "parse_header",
    "parse_payload_size",
    "rest_predict_path",
    "utc_iso",
    "utc_now",
]

PROTOCOLS = ("rest", "grpc")
"""The two ways a predict request is sent, REST first wherever both are listed."""

GROUPS = ("default", "canary")
"""Requests without the canary header, and requests with it."""

Cell = tuple[str, str]
"""``(protocol, group)``: the unit the load test counts and a split verdict is about."""

DEFAULT_HEADER = ("user-group", "canary")
DEFAULT_HEADER_TEXT = "user-group: canary"

MODEL_NAME = "image_classifier"
"""The name both model versions are served under (the walkthroughs' ``MODEL_NAME``)."""

DEFAULT_MODEL_VERSION = 1
KUBE_NAMESPACE = "tf-serving"  # the model Services' namespace on a cluster (the manifests' own)
KUBE_CONTEXT_ENV = "CANARY_KUBE_CONTEXT"  # the configured default of --context (with --kube)
KUBE_NAMESPACE_ENV = "CANARY_KUBE_NAMESPACE"  # the configured default of --namespace (with --kube)
DEFAULT_PAYLOAD_SIZE = 224
"""Pixels of the ``instances`` payloads (ResNet's input size)."""

GRPC_PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
GRPC_MODEL_STATUS_METHOD = "/tensorflow.serving.ModelService/GetModelStatus"

UNKNOWN = "unknown"
"""The subset of a response that matched no calibrated reference."""
ERROR = "error"
"""The subset of a request that failed (no response to attribute)."""
RESERVED_SUBSETS = (UNKNOWN, ERROR)

CANARY_HOME_ENV = "CANARY_HOME"


class ExitCode(enum.IntEnum):
    """The exit codes of every canary command."""

    OK = 0  # verified, or done
    FAILED = 1  # refuted, or failed
    INCONCLUSIVE = 2  # too few requests for the asked tolerance
    USAGE = 3  # bad usage or unreadable input
    INTERRUPTED = 130  # stopped by Ctrl-C or SIGTERM before its end (128 + SIGINT, as a shell reports it)


EXIT_CODES_HELP = (
    "exit codes: 0 verified (or done), 1 refuted (or failed), "
    "2 inconclusive (too few requests for the tolerance), 3 bad usage or unreadable input, "
    "130 interrupted (Ctrl-C or SIGTERM; a load test's run.json says so)"
)


def canary_home() -> Path:
    """Where canary keeps its state, model store and payload cache: ``$CANARY_HOME`` or ``./.canary``."""
    return Path(os.environ.get(CANARY_HOME_ENV, ".canary")).resolve()


def rest_predict_path(model_name: str = MODEL_NAME, version: int | None = None) -> str:
    """``/v1/models/<name>[/versions/<n>]:predict``."""
    if version is None:
        return f"/v1/models/{model_name}:predict"
    return f"/v1/models/{model_name}/versions/{version}:predict"


def parse_header(text: str, *, option: str = "--canary-header") -> tuple[str, str]:
    """``'user-group: canary'`` → ``("user-group", "canary")``.

    The name is lower-cased: HTTP/2 (gRPC metadata) and Envoy's header
    matching treat names case-insensitively, and gRPC refuses upper case.
    """
    name, sep, value = str(text).partition(":")
    name, value = name.strip().lower(), value.strip()
    if not sep or not name or not value or any(c.isspace() for c in name):
        raise UsageError(f"{option} {text!r} must be 'name: value', e.g. '{DEFAULT_HEADER_TEXT}'")
    return name, value


def parse_payload_size(text: str | int | None, *, option: str = "--payload-size") -> int | None:
    """``"224"`` → 224; ``"original"`` (or None) → None, the images as they are."""
    if text is None or str(text).strip().lower() == "original":
        return None
    try:
        size = int(str(text).strip())
    except ValueError:
        raise UsageError(f"{option} takes a number of pixels or 'original', not {text!r}") from None
    if not 1 <= size <= 4096:
        raise UsageError(f"{option} must be between 1 and 4096 pixels, got {size}")
    return size


def order_cells(cells: set[Cell] | frozenset[Cell]) -> tuple[Cell, ...]:
    """REST before gRPC, the default group before the canary group, others after, by name."""

    def key(cell: Cell) -> tuple[int, str, int, str]:
        protocol, group = cell
        p = PROTOCOLS.index(protocol) if protocol in PROTOCOLS else len(PROTOCOLS)
        g = GROUPS.index(group) if group in GROUPS else len(GROUPS)
        return p, protocol, g, group

    return tuple(sorted(cells, key=key))


def utc_now() -> str:
    """The current time as ISO 8601 UTC with microseconds (``2026-01-31T12:00:00.123456Z``):
    the one timestamp format of run.json, the mesh's state and the records."""
    return utc_iso(dt.datetime.now(dt.UTC).timestamp())


def utc_iso(epoch: float) -> str:
    """Epoch seconds in the format of :func:`utc_now`."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def check_dns_label(value: str) -> str:
    """Why ``value`` is not an RFC 1123 label (namespace, port and subset names), or ""."""
    if len(value) > 63:
        return "at most 63 characters"
    if not _DNS_LABEL.match(value):
        return "lower-case alphanumerics or '-', starting and ending with an alphanumeric"
    return ""
