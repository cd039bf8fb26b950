"""Where calibrations come from: each subset's own endpoints, a file, or the SavedModels.

The edges of fingerprinting (sockets, files, TensorFlow); the attribution
itself is pure, in :mod:`loadtest.fingerprint`.

* :func:`calibrate_endpoints` asks each subset's model server directly
  (bypassing the mesh's routing) for every payload and format, over REST,
  gRPC or both; it asks each question ``repeats`` times and checks that the
  answers (and REST against gRPC) agree within the tolerance, so a server
  whose answers wander fails here instead of making "unknown" responses later.
* :func:`local_mesh_endpoints` finds those servers in the local mesh, as
  the mesh's query API answers (:meth:`mesh.query.MeshView.subset_servers`).
* :func:`mesh_to_calibrate` says whether the local mesh's pods can calibrate a
  load of a host (the master asks it at start, ``canary load`` before it starts).
* :func:`calibrate_savedmodels` runs the exported SavedModels in-process.
* :func:`save_calibration` / :func:`load_calibration` keep one on disk.
* :func:`run_calibrate` is ``canary calibrate``.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt

from canary.conventions import GRPC_PREDICT_METHOD, MODEL_NAME, canary_home, rest_predict_path
from canary.errors import CalibrationError, CanaryError, MeshError, UsageError
from canary.files import write_atomic
from canary.quiet_import import quiet_tensorflow
from loadtest.fingerprint import (
    DEFAULT_TOLERANCE,
    Calibration,
    build_calibration,
    grpc_probabilities,
    rest_probabilities,
)
from loadtest.meshinfo import same_endpoint
from mesh.api import KubeTarget, MeshSnapshot, model_store, reachable_servers, snapshot
from payloads.library import (
    DEFAULT_SIZE,
    FORMATS,
    Payload,
    PayloadSet,
    grpc_request_bytes,
    load_payloads,
)

__all__ = [
    "PROTOCOLS",
    "CalibrateResult",
    "calibrate_endpoints",
    "calibrate_savedmodels",
    "calibrate_serving",
    "check_payloads",
    "default_calibration_path",
    "load_calibration",
    "local_mesh_endpoints",
    "mesh_servers",
    "mesh_to_calibrate",
    "parse_endpoint",
    "run_calibrate",
    "save_calibration",
    "subset_answers",
]

PROTOCOLS = ("rest", "grpc", "both")
Protocol = Literal["rest", "grpc", "both"]
Endpoints = Mapping[
    str, Mapping[str, str]
]  # subset -> {"rest": "http://host:port", "grpc": "host:port"}
Outputs = dict[str, dict[str, dict[str, npt.NDArray[np.float32]]]]
_GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 256 << 20),
]


@dataclass(frozen=True)
class CalibrateResult:
    """What ``canary calibrate`` did: the calibration and where it was written."""

    calibration: Calibration
    path: Path
    endpoints: dict[str, dict[str, str]]


def default_calibration_path(home: Path | None = None) -> Path:
    """``<canary home>/calibration.json`` (``$CANARY_HOME`` or ``./.canary``)."""
    return (Path(home).resolve() if home else canary_home()) / "calibration.json"


# ---------------------------------------------------------------- endpoints


def calibrate_endpoints(
    endpoints: Endpoints,
    payloads: Iterable[Payload],
    protocol: Protocol = "rest",
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    model_name: str = MODEL_NAME,
    repeats: int = 2,
    timeout: float = 60.0,
) -> Calibration:
    """Ask every subset's own server for every payload in both formats.

    ``endpoints[subset]`` has ``"rest"`` (``http://127.0.0.1:PORT``) and/or
    ``"grpc"`` (``127.0.0.1:PORT``), as the protocol needs. The reference is
    the gRPC answer when there is one (float32, exact), else the REST one.
    Raises :class:`CalibrationError` when a server cannot be reached, answers
    an error, or two answers to the same question differ by more than the
    tolerance (REST vs gRPC, or one repeat vs another).
    """
    if protocol not in PROTOCOLS:
        raise CalibrationError(f"protocol {protocol!r} must be one of {', '.join(PROTOCOLS)}")
    items = list(payloads)
    protocols = ("rest", "grpc") if protocol == "both" else (protocol,)
    outputs: Outputs = {}
    noise = 0.0
    for subset in sorted(endpoints):
        answers: dict[tuple[str, str], list[tuple[str, npt.NDArray[np.float32]]]] = {}
        for proto in protocols:
            address = endpoints[subset].get(proto)
            if not address:
                raise CalibrationError(
                    f"subset {subset} has no {proto} endpoint; give one or use --protocol"
                )
            ask = _client(proto, address, model_name, timeout)
            try:
                for payload in items:
                    for fmt in FORMATS:
                        for _ in range(max(1, repeats)):
                            vector = _ask(ask, payload, fmt, model_name, proto, subset, address)
                            answers.setdefault((payload.id, fmt), []).append((proto, vector))
            finally:
                ask.close()
        for (pid, fmt), found in sorted(answers.items()):
            reference = next((v for p, v in found if p == "grpc"), found[0][1])
            for proto, vector in found:
                distance = (
                    float(np.abs(vector - reference).max())
                    if vector.shape == reference.shape
                    else np.inf
                )
                if not distance <= tolerance:
                    raise CalibrationError(
                        f"subset {subset} answers {pid} ({fmt}) differently from one request to the next "
                        f"({proto} differs by {distance:.3g}, more than the tolerance {tolerance:g}); the server is "
                        "not deterministic enough: raise --tolerance, or check that one model serves this subset"
                    )
                noise = max(noise, distance)
            outputs.setdefault(pid, {}).setdefault(fmt, {})[subset] = reference
    meta = {
        "protocols": list(protocols),
        "endpoints": {s: dict(e) for s, e in sorted(endpoints.items())},
        "model_name": model_name,
        "repeats": max(1, repeats),
        "noise": noise,
    }
    return build_calibration(
        outputs, tolerance, "endpoints", payload_digests=_digests(items), meta=meta
    )


def calibrate_serving(
    endpoints: Endpoints,
    payloads: Iterable[Payload],
    protocol: Protocol = "rest",
    **options: Any,
) -> tuple[Calibration, dict[str, str]]:
    """:func:`calibrate_endpoints`, leaving out the subsets whose servers fail to answer (a canary
    serving under another model name, a crashed pod) as long as one subset answers: their
    requests will fail in the load test and count as errors, which the verdict and the gates
    judge. Returns the calibration and ``{subset left out: why}``."""
    items = list(payloads)
    try:
        return calibrate_endpoints(endpoints, items, protocol, **options), {}
    except CalibrationError:
        if len(endpoints) < 2:
            raise
    skipped: dict[str, str] = {}
    for subset in sorted(endpoints):
        try:
            calibrate_endpoints({subset: endpoints[subset]}, items[:1], protocol, **{**options, "repeats": 1})
        except CalibrationError as error:
            skipped[subset] = str(error)
    kept = {s: e for s, e in endpoints.items() if s not in skipped}
    if not skipped or not kept:  # not one failing subset: the first error stands
        return calibrate_endpoints(endpoints, items, protocol, **options), {}
    return calibrate_endpoints(kept, items, protocol, **options), skipped


def subset_answers(
    endpoints: Endpoints,
    body: bytes,
    protocol: Literal["rest", "grpc"],
    *,
    model_name: str = MODEL_NAME,
    timeout: float = 60.0,
) -> dict[str, npt.NDArray[np.float32]]:
    """Each subset's own answer to one request, asked of its server directly as calibration asks.

    ``body`` is the REST JSON, or for ``grpc`` a serialised ``PredictRequest``;
    it is sent as it is. Raises :class:`CalibrationError` when a server has no
    such endpoint, cannot be reached or answers an error.
    """
    answers: dict[str, npt.NDArray[np.float32]] = {}
    for subset in sorted(endpoints):
        address = endpoints[subset].get(protocol)
        if not address:
            raise CalibrationError(f"subset {subset} has no {protocol} endpoint")
        ask = _client(protocol, address, model_name, timeout)
        try:
            answers[subset] = ask.send(body)
        except (OSError, http.client.HTTPException, CanaryError) as error:
            raise CalibrationError(
                f"subset {subset}: {protocol} predict on {address} (model {model_name}) failed: {error}; "
                "check that its model server is up (`canary mesh status`)"
            ) from None
        finally:
            ask.close()
    return answers


class _Client:
    """One keep-alive connection to one server, for one protocol."""

    def predict(self, payload: Payload, fmt: str) -> npt.NDArray[np.float32]:
        raise NotImplementedError

    def send(self, body: bytes) -> npt.NDArray[np.float32]:
        """The probabilities answering ``body`` (REST JSON, or a serialised gRPC request)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _RestClient(_Client):
    def __init__(self, url: str, model_name: str, timeout: float) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        self._conn = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout
        )
        self._path = parts.path.rstrip("/") + rest_predict_path(model_name)

    def predict(self, payload: Payload, fmt: str) -> npt.NDArray[np.float32]:
        return self.send(payload.body(fmt))

    def send(self, body: bytes) -> npt.NDArray[np.float32]:
        self._conn.request(
            "POST", self._path, body=body, headers={"Content-Type": "application/json"}
        )
        response = self._conn.getresponse()
        answer = response.read()
        if response.status != 200:
            raise CalibrationError(f"HTTP {response.status}: {answer[:300].decode(errors='replace')}")
        return rest_probabilities(answer)

    def close(self) -> None:
        self._conn.close()


class _GrpcClient(_Client):
    def __init__(self, target: str, timeout: float) -> None:
        import grpc

        self._grpc = grpc
        self._channel = grpc.insecure_channel(target, options=_GRPC_OPTIONS)
        self._call = self._channel.unary_unary(GRPC_PREDICT_METHOD)  # bytes in, bytes out
        self._timeout = timeout

    def predict(self, payload: Payload, fmt: str) -> npt.NDArray[np.float32]:
        return self.send(grpc_request_bytes(payload, fmt))

    def send(self, body: bytes) -> npt.NDArray[np.float32]:
        try:
            message = self._call(body, timeout=self._timeout)
        except self._grpc.RpcError as error:
            raise CalibrationError(f"gRPC {error.code().name}: {error.details()}") from None
        return grpc_probabilities(message).copy()

    def close(self) -> None:
        self._channel.close()


def _client(protocol: str, address: str, model_name: str, timeout: float) -> _Client:
    if protocol == "rest":
        return _RestClient(address, model_name, timeout)
    return _GrpcClient(address, timeout)


def _ask(
    client: _Client, payload: Payload, fmt: str, model: str, proto: str, subset: str, address: str
) -> Any:
    try:
        return client.predict(payload, fmt)
    except (OSError, http.client.HTTPException, CanaryError) as error:
        raise CalibrationError(
            f"subset {subset}: {proto} predict of {payload.id} ({fmt}) on {address} (model {model}) failed: {error}; "
            "check that its model server is up (`canary mesh status`)"
        ) from None


# ---------------------------------------------------------------- the local mesh


def local_mesh_endpoints(
    home: Path | None = None, *, host: str | None = None
) -> dict[str, dict[str, str]]:
    """``{subset: {"rest": url, "grpc": target}}``: one pod of each subset of the running local mesh
    (:class:`MeshNotRunningError` when none runs); see :func:`mesh_servers`."""
    return mesh_servers(snapshot(home=home), host=host)


def mesh_servers(
    mesh: MeshSnapshot, *, host: str | None = None, allow_missing: bool = False
) -> dict[str, dict[str, str]]:
    """One pod of each subset of ``mesh``, as the mesh's query answers (the same selector
    matching that builds the ingress's clusters). With ``allow_missing`` a subset without a
    ready pod (a canary not deployed yet) is left out: it cannot answer, and an answer no
    calibrated subset explains counts as unknown."""
    try:
        return mesh.view.subset_servers(host, allow_missing=allow_missing)
    except MeshError as error:
        raise CalibrationError(f"cannot find each subset's own server: {error}") from None


def mesh_to_calibrate(host: str | None, mesh: MeshSnapshot | None) -> MeshSnapshot:
    """The local mesh whose pods calibrate a load test of ``host`` (its ingress; None: the
    ingress is meant). Without ``--calibration FILE`` that is the only source, so
    :class:`CalibrationError` says what to give when no mesh runs or ``host`` is another."""
    if mesh is None:
        raise CalibrationError(
            "no calibration to attribute responses with: give --calibration FILE (made by `canary calibrate`), "
            "or start the local mesh (`canary mesh up`) so the load test calibrates against its pods"
        )
    if host and not same_endpoint(host, mesh.ingress_url):
        raise CalibrationError(
            f"--host {host} is not the local mesh's ingress ({mesh.ingress_url}), so its models cannot be "
            "calibrated from the local pods: give --calibration FILE "
            "(`canary calibrate --source endpoints --endpoint ...`)"
        )
    return mesh


def parse_endpoint(text: str) -> tuple[str, dict[str, str]]:
    """``SUBSET=REST_URL[,GRPC_TARGET]`` (either part may be left out) -> ``(subset, endpoints)``."""
    subset, sep, rest = text.partition("=")
    parts = [p.strip() for p in rest.split(",") if p.strip()]
    found = {("rest" if p.startswith(("http://", "https://")) else "grpc"): p for p in parts}
    if not sep or not subset.strip() or not parts or len(found) != len(parts):
        raise UsageError(
            f"--endpoint {text!r} must be SUBSET=http://HOST:REST_PORT,HOST:GRPC_PORT "
            "(e.g. resnet50=http://127.0.0.1:8501,127.0.0.1:8500)"
        )
    return subset.strip(), found


# ---------------------------------------------------------------- SavedModels


def calibrate_savedmodels(
    model_dirs: Mapping[str, Path],
    payloads: Iterable[Payload],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Calibration:
    """Run each subset's SavedModel in-process (TensorFlow is imported here, lazily).

    ``model_dirs[subset]`` is a version directory (``<store>/resnet50/1``) or
    a model base path, whose newest numeric version is used.
    """
    items = list(payloads)
    resolved = {subset: _version_dir(Path(path)) for subset, path in sorted(model_dirs.items())}
    with quiet_tensorflow():
        import tensorflow as tf

    outputs: Outputs = {}
    for subset, path in resolved.items():
        try:
            loaded = tf.saved_model.load(str(path))
            signatures = {
                "instances": loaded.signatures["serving_default"],
                "b64": loaded.signatures["serving_preprocess"],
            }
            for payload in items:
                for fmt in FORMATS:
                    if fmt == "instances":
                        result = signatures[fmt](
                            input_image=tf.constant(payload.pixels[np.newaxis], tf.float32)
                        )
                    else:
                        result = signatures[fmt](bytes_inputs=tf.constant([payload.jpeg]))
                    vector = np.asarray(result["probabilities"], dtype=np.float32).reshape(-1)
                    outputs.setdefault(payload.id, {}).setdefault(fmt, {})[subset] = vector
        except CanaryError:
            raise
        except Exception as error:  # TensorFlow raises many types
            raise CalibrationError(
                f"running the SavedModel of subset {subset} ({path}) failed: {type(error).__name__}: {error}; "
                "re-export it with `canary export`"
            ) from None
    meta = {"model_dirs": {s: str(p) for s, p in resolved.items()}}
    return build_calibration(
        outputs, tolerance, "savedmodel", payload_digests=_digests(items), meta=meta
    )


def _version_dir(path: Path) -> Path:
    if (path / "saved_model.pb").is_file():
        return path
    versions = sorted(
        (int(p.name), p)
        for p in path.glob("*")
        if p.name.isdigit() and (p / "saved_model.pb").is_file()
    )
    if not versions:
        raise CalibrationError(
            f"no SavedModel in {path} (nor in a numbered version under it); export with `canary export`"
        )
    return versions[-1][1]


# ---------------------------------------------------------------- files


def save_calibration(calibration: Calibration, path: Path) -> Path:
    """Write ``calibration`` to ``path`` atomically (a reader never sees half a file)."""
    path = Path(path)
    try:
        write_atomic(path, calibration.to_json())
    except OSError as error:
        raise CalibrationError(
            f"cannot write the calibration to {path}: {error.strerror}"
        ) from error
    return path


def load_calibration(path: Path) -> Calibration:
    """Read a calibration written by :func:`save_calibration` (its ``source`` is then ``file``)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise CalibrationError(
            f"cannot read the calibration {path} ({error.strerror}); create it with `canary calibrate`"
        ) from error
    return Calibration.from_json(raw, where=str(path))


def check_payloads(calibration: Calibration, payloads: Iterable[Payload]) -> None:
    """Raise unless every payload/format was calibrated with exactly this body."""
    problems = []
    for payload in payloads:
        for fmt in FORMATS:
            if (payload.id, fmt) not in calibration.pairs:
                problems.append(f"{payload.id} ({fmt}) is not calibrated")
                continue
            calibrated = calibration.payload_digests.get(payload.id, {}).get(fmt)
            if calibrated is not None and calibrated != payload.digests.get(fmt):
                problems.append(f"{payload.id} ({fmt}) is not the body that was calibrated")
    if problems:
        raise CalibrationError(
            f"the calibration does not match the payloads: {'; '.join(problems)}; "
            "recalibrate with the same images and --size (`canary calibrate`)"
        )


def _digests(payloads: Iterable[Payload]) -> dict[str, dict[str, str]]:
    return {p.id: dict(p.digests) for p in payloads}


# ---------------------------------------------------------------- canary calibrate


def run_calibrate(
    out: Path | None = None,
    *,
    source: Literal["mesh", "endpoints", "savedmodel"] = "mesh",
    protocol: Protocol = "both",
    endpoints: Endpoints | None = None,
    model_dirs: Mapping[str, Path] | None = None,
    store: Path | None = None,
    tiny: bool = False,
    home: Path | None = None,
    images_dir: Path | None = None,
    size: int | None = DEFAULT_SIZE,
    tolerance: float = DEFAULT_TOLERANCE,
    host: str | None = None,
    kube: KubeTarget | None = None,
) -> CalibrateResult:
    """Calibrate from ``source`` and write the result to ``out`` (default ``<home>/calibration.json``).

    ``mesh``: the running local mesh's pods (with ``kube``: one pod of each subset on the
    cluster, through a port-forward); ``endpoints``: the given
    ``{subset: {"rest": url, "grpc": target}}``; ``savedmodel``: the
    ``model_dirs`` (default: ``<store>/<subset>`` for resnet50 and resnet101,
    the store defaulting to the local mesh's tiny or full model store).
    """
    payloads: PayloadSet = load_payloads(images_dir, size=size)
    found: dict[str, dict[str, str]] = {}
    if source == "savedmodel":
        if model_dirs is None:
            root = store or model_store(tiny, home)
            model_dirs = {name: root / name for name in ("resnet50", "resnet101")}
        calibration = calibrate_savedmodels(model_dirs, payloads, tolerance=tolerance)
    elif source in ("mesh", "endpoints"):
        if source == "mesh" and kube is not None:
            mesh = snapshot(kube=kube, need_ingress=False)  # the pods only: the ingress is not asked
            with reachable_servers(mesh, host) as reachable:
                calibration = calibrate_endpoints(reachable, payloads, protocol, tolerance=tolerance)
            found = mesh_servers(mesh, host=host)  # the pods' own addresses, not the forwards'
            path = save_calibration(calibration, out or default_calibration_path(home))
            return CalibrateResult(calibration, path, found)
        if source == "mesh":
            found = local_mesh_endpoints(home, host=host)
        elif endpoints:
            found = {s: dict(e) for s, e in endpoints.items()}
        else:
            raise CalibrationError(
                "--source endpoints needs --endpoint SUBSET=REST_URL,GRPC_TARGET for each subset"
            )
        calibration = calibrate_endpoints(found, payloads, protocol, tolerance=tolerance)
    else:
        raise CalibrationError(
            f"calibration source {source!r} must be mesh, endpoints or savedmodel"
        )
    path = save_calibration(calibration, out or default_calibration_path(home))
    return CalibrateResult(calibration, path, found)
