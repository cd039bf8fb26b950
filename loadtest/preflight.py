"""``canary load``'s checks before anything starts, so a run that cannot work leaves no run directory.

* :func:`check_target`: something listens at the host; without ``--calibration
  FILE`` the host is the local mesh's ingress, since only its pods can
  calibrate (:func:`loadtest.calibration.mesh_to_calibrate`, the master's own
  rule); and the model server behind the ingress serves ``--model-name``, asked
  through the ingress as the load will go: TF Serving's model status,
  ``GET /v1/models/<name>`` for REST users and ``ModelService/GetModelStatus``
  for gRPC users (the manifests route both). The model server's own 404 /
  ``NOT_FOUND`` refuses the run when every one of eight answers says so (a
  weighted route may reach a canary that serves another name). Any other answer (a fault the VirtualService
  injects, a route that serves predict only) decides nothing: asked up to three
  times, it becomes a warning and the run starts.
* :func:`group_warning`: whether every protocol x header group the options ask
  for gets a user (Locust's spread of users over the protocols, then
  :func:`loadtest.items.group_of`, the master's rule).

Every check is bounded: a connection within ``timeout`` seconds, each answer
within the same.
"""

from __future__ import annotations

import http.client
import socket
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import orjson

from canary.conventions import GRPC_MODEL_STATUS_METHOD, MODEL_NAME
from canary.errors import UsageError
from loadtest.calibration import mesh_to_calibrate
from loadtest.items import group_of, grpc_target
from loadtest.meshinfo import same_endpoint
from loadtest.options import CanaryOptions
from loadtest.users import users_per_protocol
from mesh.api import MeshSnapshot
from payloads.responses import rest_error_text
from payloads.wire import encode_model_status_request

__all__ = ["PREFLIGHT_TIMEOUT_S", "check_target", "group_warning"]

PREFLIGHT_TIMEOUT_S = 3.0
_ATTEMPTS = 3
_NOT_SERVED_ATTEMPTS = 8
_NAMES = {"rest": "REST", "grpc": "gRPC"}


@dataclass(frozen=True)
class _Answer:
    """What one model status request found: ``served`` True or False when the model server said
    so, None when the answer decides nothing (``again``: it may differ next time)."""

    served: bool | None
    said: str
    again: bool = False


def check_target(host: str, options: CanaryOptions, mesh: MeshSnapshot | None, *,
                 timeout: float = PREFLIGHT_TIMEOUT_S) -> list[str]:
    """Raise :class:`UsageError` (or :class:`CalibrationError`) when a load of ``host`` with
    ``options`` cannot work; return warnings about answers that decide nothing."""
    hostname, port, secure, prefix = _endpoint(host)
    _listening(host, hostname, port, mesh, timeout)
    if options.calibration is None:
        mesh_to_calibrate(host, mesh)
    warnings = []
    for protocol in options.protocols:
        if protocol == "rest":
            answer = _asked(lambda: _rest_status(hostname, port, secure, prefix, options.model_name, timeout))
        else:
            answer = _asked(lambda: _grpc_status(host, options.model_name, timeout))
        name = _NAMES[protocol]
        if answer.served is False:
            raise UsageError(
                f"the model server behind {host} serves no model named {options.model_name!r} over {name} "
                f"({answer.said}); check --model-name (default {MODEL_NAME})"
            )
        if answer.served is None:
            warnings.append(f"could not confirm that {host} serves model {options.model_name!r} over {name} "
                            f"({answer.said}); starting anyway")
    return warnings


def _endpoint(host: str) -> tuple[str, int, bool, str]:
    parts = urlsplit(host if "://" in host else f"http://{host}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise UsageError(f"--host {host!r} must be a URL such as http://127.0.0.1:8080 (the ingress)")
    secure = parts.scheme == "https"
    return parts.hostname, port or (443 if secure else 80), secure, parts.path.rstrip("/")


def _listening(host: str, hostname: str, port: int, mesh: MeshSnapshot | None, timeout: float) -> None:
    try:
        socket.create_connection((hostname, port), timeout=timeout).close()
    except OSError as error:
        if isinstance(error, ConnectionRefusedError):
            why = "connection refused"
        elif isinstance(error, TimeoutError):
            why = f"no connection within {timeout:g} s"
        else:
            why = error.strerror or str(error) or type(error).__name__
        if mesh is None:
            hint = "start the local mesh with `canary mesh up`, or give --host the ingress's URL"
        elif same_endpoint(host, mesh.ingress_url):
            hint = "the local mesh's Envoy does not answer: see `canary mesh status`"
        else:
            hint = f"the local mesh's ingress is {mesh.ingress_url}"
        raise UsageError(f"nothing is listening at {host} ({why}); {hint}") from None


def _asked(ask: Callable[[], _Answer]) -> _Answer:
    """Ask until an answer says the model is served. A weighted route may send a status request
    to a subset that serves another name (a broken canary at 20%), so "not served" refuses only
    when every one of up to eight answers says so; an answer that decides nothing is asked again
    up to three times in all."""
    last: _Answer | None = None
    undecided = 0
    for _ in range(_NOT_SERVED_ATTEMPTS):
        answer = ask()
        if answer.served is True:
            return answer
        last = answer
        if answer.served is None:
            undecided += 1
            if not answer.again or undecided >= _ATTEMPTS:
                return answer
    assert last is not None
    return last


def _rest_status(hostname: str, port: int, secure: bool, prefix: str, model_name: str, timeout: float) -> _Answer:
    path = f"{prefix}/v1/models/{quote(model_name, safe='')}"
    kind = http.client.HTTPSConnection if secure else http.client.HTTPConnection
    conn = kind(hostname, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as error:
        return _Answer(None, f"GET {path} failed: {error or type(error).__name__}")
    finally:
        conn.close()
    text = rest_error_text(body)
    said = f"GET {path}: {response.status} {response.reason}" + (f": {text}" if text else "")
    if response.status == 200:
        return _Answer(True, said)
    if response.status == 404 and _is_serving_error(body):
        return _Answer(False, said)
    return _Answer(None, said, again=True)


def _is_serving_error(body: bytes) -> bool:
    """TF Serving answers an error as ``{"error": "..."}``; Envoy's own 404 (no route) has no body."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(doc, dict) and "error" in doc


def _grpc_status(host: str, model_name: str, timeout: float) -> _Answer:
    import grpc

    with grpc.insecure_channel(grpc_target(host)) as channel:
        call = channel.unary_unary(GRPC_MODEL_STATUS_METHOD)  # bytes in, bytes out
        try:
            call(encode_model_status_request(model_name), timeout=timeout)
        except grpc.RpcError as error:
            code = error.code()
            said = f"GetModelStatus: {code.name}: {error.details()}"
            if code == grpc.StatusCode.NOT_FOUND:
                return _Answer(False, said)
            return _Answer(None, said, again=code != grpc.StatusCode.DEADLINE_EXCEEDED)
    return _Answer(True, "GetModelStatus: OK")


def group_warning(users: int, options: CanaryOptions, processes: int | None = None) -> str | None:
    """A warning when a protocol x header group that ``options`` ask for gets no user from ``-u
    users`` (None: each gets one); ``--canary-share`` 0 asks for the default group only, 1 for the
    canary group only (:attr:`CanaryOptions.groups`)."""
    protocols, share, wanted = options.protocols, options.canary_share, options.groups
    empty = _empty_cells(users, protocols, share, processes, wanted)
    if not empty:
        return None
    spread = users_per_protocol(users, protocols, processes)
    started = _and([f"{n} {_NAMES[p]} user{'' if n == 1 else 's'}" for p, n in spread.items()])
    need = _users_needed(users, protocols, share, processes, wanted)
    remedy = f"; give -u {need} or more" if need else ""
    return (
        f"-u {users} with --protocol {'both' if len(protocols) > 1 else protocols[0]} and --canary-share "
        f"{share:g}: Locust starts {started}, so {_and([f'{p}/{g}' for p, g in empty])} "
        + ("gets no user and sends nothing (verify-split cannot judge it)" if len(empty) == 1 else
           "get no user and send nothing (verify-split cannot judge them)") + remedy
    )


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _empty_cells(users: int, protocols: Sequence[str], share: float, processes: int | None,
                 wanted: Sequence[str]) -> list[tuple[str, str]]:
    empty = []
    for protocol, n in users_per_protocol(users, protocols, processes).items():
        groups = Counter(group_of(index, share) for index in range(n))
        empty += [(protocol, group) for group in wanted if not groups[group]]
    return empty


def _users_needed(users: int, protocols: Sequence[str], share: float, processes: int | None,
                  wanted: Sequence[str], limit: int = 10_000) -> int | None:
    """The fewest users from which every wanted cell gets one (None beyond ``limit`` per protocol)."""
    groups: Counter[str] = Counter()
    for index in range(limit):  # each protocol numbers its users from 0, as the master does
        groups[group_of(index, share)] += 1
        if all(groups[g] for g in wanted):
            need = max(users + 1, (index + 1) * len(protocols))
            while _empty_cells(need, protocols, share, processes, wanted):
                need += 1
            return need
    return None
