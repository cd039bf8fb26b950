"""One predict request through the ingress, as the walkthroughs' curl and Python steps send it.

``canary predict``: read a request body (a JSON file such as
``payloads/request-body.json``) or a JPEG (then the ``b64`` body the payload
library builds), send it once over REST or gRPC, with or without a header,
and say what came back: the top classes with their ImageNet names, and which
subset answered. The subset is found by fingerprint, as the load test finds
it: each subset's own pods are asked the very same request directly (the
mesh's query API names them, :func:`loadtest.calibration.subset_answers`),
and the ingress's answer is matched against theirs
(:func:`loadtest.fingerprint.attribute`). That needs the running local mesh;
for another ``--host`` the subset is left unknown, with the reason.

Exit codes follow :mod:`canary.errors`: a body that cannot be read and an
ingress that does not answer are usage errors (3); an answer with an HTTP
error status or a gRPC error is a :class:`RequestFailedError` (1).
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt
import orjson

from canary.conventions import GRPC_PREDICT_METHOD, MODEL_NAME, UNKNOWN, rest_predict_path
from canary.errors import (
    CalibrationError,
    FingerprintError,
    MeshError,
    PayloadError,
    RequestFailedError,
    UsageError,
)
from loadtest.calibration import subset_answers
from loadtest.fingerprint import DEFAULT_TOLERANCE, attribute, build_calibration, top_k
from loadtest.items import grpc_target
from loadtest.meshinfo import model_metadata, run_mesh, try_snapshot
from mesh.api import KubeTarget, MeshSnapshot, reachable_servers, snapshot
from payloads import (
    REQUEST_BODY,
    class_name,
    grpc_request_bytes,
    grpc_request_from_body,
    load_payload,
)
from payloads.responses import grpc_probabilities, rest_error_text, rest_probabilities

__all__ = [
    "DEFAULT_TIMEOUT",
    "ClassScore",
    "Identification",
    "PredictInput",
    "PredictResult",
    "ask_ingress",
    "predict",
    "read_input",
    "result_lines",
    "run_predict",
]

Protocol = Literal["rest", "grpc"]
DEFAULT_TIMEOUT = 60.0
_CONNECT_TIMEOUT = 10.0
_JPEG_MAGIC = b"\xff\xd8\xff"
_REQUEST = "request"  # the one payload id of the fingerprint's calibration


@dataclass(frozen=True)
class PredictInput:
    """What ``canary predict`` sends: ``body`` as it goes on the wire."""

    source: Path
    kind: Literal["json", "jpeg"]
    protocol: Protocol
    body: bytes  # the REST JSON, or the serialised gRPC PredictRequest


@dataclass(frozen=True)
class ClassScore:
    index: int
    name: str
    probability: float


@dataclass(frozen=True)
class Identification:
    """Which subset answered: ``subset`` None when that cannot be told, ``reason`` then says why."""

    subset: str | None
    distance: float | None = None  # L-infinity distance to that subset's own answer
    match: str | None = None  # "exact" or "tolerance", as :class:`loadtest.fingerprint.Attribution`
    reason: str | None = None
    tolerance: float = DEFAULT_TOLERANCE


@dataclass(frozen=True)
class PredictResult:
    request: PredictInput
    target: str  # "POST http://HOST:PORT/v1/models/...:predict" or "gRPC ... on HOST:PORT"
    headers: tuple[tuple[str, str], ...]
    status: str  # "200", or the gRPC status "OK"
    elapsed_ms: float
    top: tuple[ClassScore, ...]
    identity: Identification
    weights: Mapping[str, str] = field(default_factory=dict)  # subset -> "seeded" / "imagenet"

    @property
    def labels_note(self) -> str | None:
        """Plain words when the weights behind the answer are seeded: the class names mean nothing."""
        relevant = [self.identity.subset] if self.identity.subset else sorted(self.weights)
        seeded = [s for s in relevant if self.weights.get(s) == "seeded"]
        if not seeded:
            return None
        which = f"the weights of {', '.join(seeded)} are seeded (random), not trained on ImageNet"
        if seeded == relevant:
            return f"{which}: these class names mean nothing"
        return f"{which}: if {'it' if len(seeded) == 1 else 'one of them'} answered, these class names mean nothing"


# ---------------------------------------------------------------- input


def read_input(
    path: Path | None = None, protocol: Protocol = "rest", *, model_name: str = MODEL_NAME
) -> PredictInput:
    """The request to send: a JSON request body as it is (default ``payloads/request-body.json``),
    or a JPEG as the ``b64`` body the payload library builds; for ``grpc`` the same input as a
    ``PredictRequest``."""
    source = Path(path) if path is not None else REQUEST_BODY
    try:
        data = source.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {source}: {error.strerror or error}") from None
    if data.startswith(_JPEG_MAGIC):
        payload = load_payload(source)
        body = (
            payload.body("b64")
            if protocol == "rest"
            else grpc_request_bytes(payload, "b64", model_name)
        )
        return PredictInput(source, "jpeg", protocol, body)
    _check_json_body(source, data)
    if protocol == "grpc":
        try:
            data = grpc_request_from_body(data, model_name)
        except PayloadError as error:
            raise PayloadError(f"{source}: {error}") from None
    return PredictInput(source, "json", protocol, data)


def _check_json_body(source: Path, data: bytes) -> None:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        if source.suffix.lower() != ".json" and not data.lstrip()[:1] == b"{":
            raise UsageError(
                f"{source} is neither a JSON request body nor a JPEG image; "
                f"give a body like payloads/{REQUEST_BODY.name} or a .jpg"
            ) from None
        raise UsageError(f"{source} is not valid JSON ({error})") from None
    instances = doc.get("instances") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or ("inputs" not in doc and not isinstance(instances, list)):
        raise UsageError(
            f'{source}: a predict body is a JSON object with "instances" (or "inputs"), '
            f"like payloads/{REQUEST_BODY.name}"
        )
    if isinstance(instances, list) and len(instances) != 1:
        raise UsageError(
            f"{source} holds {len(instances)} instances; canary predict sends one (one image)"
        )


# ---------------------------------------------------------------- the request


@dataclass(frozen=True)
class _Exchange:
    target: str
    status: str
    answer: bytes
    elapsed_ms: float


def predict(
    request: PredictInput,
    *,
    host: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    top: int = 5,
    home: Path | None = None,
    model_name: str = MODEL_NAME,
    timeout: float = DEFAULT_TIMEOUT,
    kube: KubeTarget | None = None,
) -> PredictResult:
    """Send ``request`` once through the ingress (``host``, default the running local mesh's)
    and say what answered: the ``top`` classes and the subset, by fingerprint."""
    if top < 1:
        raise UsageError(f"--top must be at least 1, got {top}")
    mesh = snapshot(home=home, kube=kube) if host is None or kube else try_snapshot(home)
    url = host or (mesh.ingress_url if mesh else "")
    pairs = tuple(headers)
    exchange = _exchange(url, request.protocol, request.body, pairs, model_name, timeout)
    vector = _probabilities(exchange, request.protocol)
    identity, weights = _identify(run_mesh(url, mesh), request, vector, model_name, timeout)
    scores = tuple(ClassScore(i, _class_name(i), p) for i, p in top_k(vector, top))
    return PredictResult(
        request, exchange.target, pairs, exchange.status, exchange.elapsed_ms, scores, identity,
        weights,
    )


def run_predict(
    path: Path | None = None,
    *,
    grpc: bool = False,
    host: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    top: int = 5,
    home: Path | None = None,
    kube: KubeTarget | None = None,
) -> PredictResult:
    """``canary predict``: :func:`read_input` then :func:`predict` (on a cluster with ``kube``:
    through its ingress, each subset's pod asked through a port-forward)."""
    request = read_input(path, "grpc" if grpc else "rest")
    return predict(request, host=host, headers=headers, top=top, home=home, kube=kube)


def _send_rest(
    url: str, body: bytes, headers: Sequence[tuple[str, str]], model_name: str, timeout: float
) -> _Exchange:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--host {url!r} must be an http:// URL, e.g. http://127.0.0.1:8080")
    path = parts.path.rstrip("/") + rest_predict_path(model_name)
    target = f"POST {parts.scheme}://{parts.netloc}{path}"
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname, parts.port, timeout=timeout)
    try:
        try:
            conn.connect()
        except OSError as error:
            raise UsageError(_unreachable(parts.netloc, error.strerror or str(error))) from None
        started = time.perf_counter()
        try:
            conn.request(
                "POST", path, body=body, headers={"Content-Type": "application/json", **dict(headers)}
            )
            response = conn.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as error:
            raise RequestFailedError(f"{target} failed: {error or type(error).__name__}") from None
        elapsed = (time.perf_counter() - started) * 1000
    finally:
        conn.close()
    if not 200 <= response.status < 300:
        raise RequestFailedError(
            f"{target} answered HTTP {response.status} {response.reason}: {rest_error_text(answer) or '(empty body)'}"
        )
    return _Exchange(target, str(response.status), answer, elapsed)


def _send_grpc(
    url: str, body: bytes, headers: Sequence[tuple[str, str]], timeout: float
) -> _Exchange:
    import grpc

    address = grpc_target(url)
    target = f"gRPC {GRPC_PREDICT_METHOD} on {address}"
    host, _, port = address.rpartition(":")
    try:  # gRPC would retry a refused connection until the deadline: say so at once
        socket.create_connection((host, int(port)), timeout=min(timeout, _CONNECT_TIMEOUT)).close()
    except OSError as error:
        raise UsageError(_unreachable(address, error.strerror or str(error))) from None
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(GRPC_PREDICT_METHOD)  # bytes in, bytes out
        started = time.perf_counter()
        try:
            answer = call(body, timeout=timeout, metadata=tuple(headers))
        except grpc.RpcError as error:
            raise RequestFailedError(
                f"{target} failed: {error.code().name}: {error.details()}"
            ) from None
        elapsed = (time.perf_counter() - started) * 1000
    return _Exchange(target, "OK", bytes(answer), elapsed)


def ask_ingress(url: str, protocol: Protocol, body: bytes, headers: Sequence[tuple[str, str]], *,
                model_name: str = MODEL_NAME, timeout: float = DEFAULT_TIMEOUT) -> npt.NDArray[np.float32]:
    """Send one predict request through the ingress and return the prediction it answered.
    :class:`RequestFailedError` when it fails or answers an error, UsageError when nothing listens."""
    return _probabilities(_exchange(url, protocol, body, headers, model_name, timeout), protocol)


def _exchange(url: str, protocol: Protocol, body: bytes, headers: Sequence[tuple[str, str]],
              model_name: str, timeout: float) -> _Exchange:
    if protocol == "grpc":
        return _send_grpc(url, body, headers, timeout)
    return _send_rest(url, body, headers, model_name, timeout)


def _unreachable(where: str, why: str) -> str:
    return (
        f"nothing answers at {where} ({why}); start the local mesh (`canary mesh up`) "
        "or give the ingress with --host"
    )


def _probabilities(exchange: _Exchange, protocol: Protocol) -> npt.NDArray[np.float32]:
    try:
        if protocol == "grpc":
            return grpc_probabilities(exchange.answer).copy()
        return rest_probabilities(exchange.answer)
    except FingerprintError as error:
        raise RequestFailedError(
            f"{exchange.target} answered {exchange.status}, but not with one prediction: {error}"
        ) from None


def _class_name(index: int) -> str:
    try:
        return class_name(index)
    except PayloadError:
        return "(not an ImageNet class)"


# ---------------------------------------------------------------- which subset answered


def _identify(
    mesh: MeshSnapshot | None,
    request: PredictInput,
    vector: npt.NDArray[np.float32],
    model_name: str,
    timeout: float,
) -> tuple[Identification, dict[str, str]]:
    """Ask each subset's own pod the same request and match the ingress's answer against theirs."""
    if mesh is None:
        return Identification(
            None,
            reason="the host is not the running local mesh's ingress, so the subsets' own pods "
            "cannot be asked",
        ), {}
    try:
        with reachable_servers(mesh) as endpoints:
            models = model_metadata(endpoints, model_name, timeout)
            answers = subset_answers(
                endpoints, request.body, request.protocol, model_name=model_name, timeout=timeout
            )
    except (CalibrationError, MeshError) as error:
        return Identification(None, reason=str(error)), {}
    weights = {s: m.weights_kind for s, m in models.items() if m.weights_kind}
    try:
        calibration = build_calibration({_REQUEST: {request.protocol: answers}}, DEFAULT_TOLERANCE)
        found = attribute(calibration, _REQUEST, request.protocol, vector)
    except (CalibrationError, FingerprintError) as error:
        return Identification(None, reason=f"cannot tell: {error}"), weights
    if found.subset == UNKNOWN:
        return Identification(
            None,
            distance=found.distance,
            reason=f"the answer is {found.distance:.3g} from the nearest subset's own answer, "
            f"beyond the tolerance {DEFAULT_TOLERANCE:g}",
        ), weights
    return Identification(found.subset, found.distance, found.match), weights


# ---------------------------------------------------------------- output


def result_lines(result: PredictResult) -> list[str]:
    """What ``canary predict`` prints: the request, the top classes, the subset, the caveat."""
    header = ", ".join(f"{k}: {v}" for k, v in result.headers) or "no header"
    source = "a JPEG, as its b64 body" if result.request.kind == "jpeg" else "a JSON body"
    lines = [
        f"{result.target} ({header}) -> {result.status} in {result.elapsed_ms:.0f} ms",
        f"input: {result.request.source} ({source})",
        f"top {len(result.top)}:",
    ]
    width = max((len(f"{s.name} ({s.index})") for s in result.top), default=0)
    for rank, score in enumerate(result.top, start=1):
        label = f"{score.name} ({score.index})"
        lines.append(f"  {rank:>2}. {label:<{width}}  {score.probability:.4g}")
    lines.append(f"answered by: {_identity_text(result.identity)}")
    note = result.labels_note
    if note:
        lines.append(f"note: {note}")
    return lines


def _identity_text(identity: Identification) -> str:
    if identity.subset is None:
        return f"unknown ({identity.reason})"
    if identity.match == "exact":
        how = "bit-identical to"
    else:
        how = f"within {identity.distance:.2g} (tolerance {identity.tolerance:g}) of"
    return f"{identity.subset} (the answer is {how} {identity.subset}'s own answer to this request)"
