"""Which subset answered: attribution of a predict response to a calibrated model.

Both subsets serve under the same model name and version, so a response
alone does not say which model produced it. A :class:`Calibration` holds,
for each payload and request format, the probability vector each subset
returns (its *reference*). A response is attributed to the subset whose
reference is nearest in L-infinity distance, provided that distance is at
most ``tolerance``; otherwise it is ``"unknown"``.

Tolerance. ``DEFAULT_TOLERANCE = 1e-5`` (absolute, per probability). It
must absorb what changes a model's answer without changing the model: REST
JSON printing (TF Serving prints about 7 significant digits, so at most
~5e-8 on a probability <= 1; our server prints float32's shortest repr,
which parses back exactly), gRPC (float32 bit-exact) and run-to-run
floating-point noise of the kernels (~1e-7). It must also stay well below
what tells two real models apart: distinct architectures differ by 1e-2 or
more, and even a near-twin (every weight perturbed by 1e-3) moves its
largest probability by 1.2e-4 to 1.3e-3 on our payloads. 1e-5 sits 100x
above the noise, and the closest near-twin payload is still 6x past the
separability limit of 2e-5.

Separability. If two subsets' references for a payload are more than
``2 * tolerance`` apart, no vector is within tolerance of both (triangle
inequality), so attribution is unambiguous; a payload/format at or below
that separation is *excluded* (its responses come out "unknown", with the
reason), and if every one is excluded :func:`build_calibration` raises.

Speed. :class:`Fingerprinter` memoises exact responses: the same response
bytes (the raw REST body, the raw gRPC message or the float32 vector) always
get the same attribution, so a repeat costs one dict lookup. Otherwise REST
JSON is parsed with orjson into float32 (~45 us for 1000 classes: that,
not the arithmetic, is the cost) and gRPC ``tensor_content`` is read zero
copy; the nearest-reference arithmetic on 1000 floats takes a few us.

Everything here is pure: no I/O, deterministic, sorted output.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

from canary.conventions import UNKNOWN
from canary.errors import CalibrationError, FingerprintError
from payloads.responses import OUTPUT, grpc_probabilities, rest_probabilities

__all__ = [
    "CALIBRATION_FORMAT",
    "DEFAULT_TOLERANCE",
    "OUTPUT",
    "SOURCES",
    "Attribution",
    "Calibration",
    "CalibrationRow",
    "Fingerprinter",
    "attribute",
    "build_calibration",
    "grpc_probabilities",
    "rest_probabilities",
    "top_k",
]

DEFAULT_TOLERANCE = 1e-5
_MEMO_TAIL = 64  # the last bytes of a response key the memo
SOURCES = ("endpoints", "file", "savedmodel")
CALIBRATION_FORMAT = 1

Vector = npt.NDArray[np.float32]
Match = Literal["exact", "tolerance", "none", "excluded"]
Top = tuple[tuple[int, float], ...]


@dataclass(frozen=True, slots=True)
class Attribution:
    """The subset that answered (or ``"unknown"``), and what the response said.

    ``distance`` is the L-infinity distance to the nearest reference.
    ``match``: ``exact`` (bit-identical to a reference), ``tolerance``
    (within tolerance), ``none`` (nothing within tolerance) or ``excluded``
    (the payload does not separate the subsets). For an attributed response
    ``top1``/``top5`` are its reference's (equal within tolerance, computed
    once); for an unknown one they are its own.
    """

    subset: str
    distance: float
    top5: Top
    top1: int
    match: Match


@dataclass(frozen=True)
class CalibrationRow:
    """One payload/format of a calibration, for summaries."""

    payload_id: str
    fmt: str
    top: dict[str, tuple[int, float]]  # subset -> (top-1 class, its probability)
    separation: float  # smallest L-infinity distance between two subsets' references
    excluded: str | None


@dataclass(frozen=True)
class _Entry:
    subsets: tuple[str, ...]
    matrix: Vector  # subsets x classes, C-contiguous
    top1: tuple[int, ...]
    top5: tuple[Top, ...]
    excluded: str | None


@dataclass(frozen=True, eq=False)
class Calibration:
    """Reference outputs per payload, format and subset, and how to compare with them.

    ``references[payload_id][fmt][subset]`` is a float32 vector; ``excluded``
    maps ``(payload_id, fmt)`` to why it cannot tell the subsets apart;
    ``source`` says where the references came from (``endpoints``,
    ``savedmodel``, or ``file`` once read back, the original source then in
    ``meta["origin"]``); ``payload_digests[payload_id][fmt]`` is the sha256 of
    the REST body that was calibrated, to catch a load test sending other
    payloads.
    """

    references: Mapping[str, Mapping[str, Mapping[str, Vector]]]
    tolerance: float = DEFAULT_TOLERANCE
    excluded: Mapping[tuple[str, str], str] = field(default_factory=dict)
    source: str = "endpoints"
    payload_digests: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def subsets(self) -> tuple[str, ...]:
        return tuple(
            sorted(
                {
                    s
                    for formats in self.references.values()
                    for refs in formats.values()
                    for s in refs
                }
            )
        )

    @functools.cached_property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """Every ``(payload_id, fmt)``, sorted."""
        return tuple(
            sorted((pid, fmt) for pid, formats in self.references.items() for fmt in formats)
        )

    @property
    def usable(self) -> tuple[tuple[str, str], ...]:
        """The ``(payload_id, fmt)`` pairs that tell the subsets apart."""
        return tuple(pair for pair in self.pairs if pair not in self.excluded)

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(self.excluded[pair] for pair in sorted(self.excluded))

    def separation(self, payload_id: str, fmt: str) -> float:
        """The smallest L-infinity distance between two subsets' references (inf with one)."""
        matrix = self._entry(payload_id, fmt).matrix
        return _separation(matrix)

    def rows(self) -> list[CalibrationRow]:
        """One summary row per payload/format, sorted."""
        rows = []
        for pid, fmt in self.pairs:
            entry = self._entry(pid, fmt)
            top = {
                subset: (entry.top1[i], entry.top5[i][0][1])
                for i, subset in enumerate(entry.subsets)
            }
            rows.append(CalibrationRow(pid, fmt, top, _separation(entry.matrix), entry.excluded))
        return rows

    def _entry(self, payload_id: str, fmt: str) -> _Entry:
        try:
            return self._entries[(payload_id, fmt)]
        except KeyError:
            known = ", ".join(f"{p}/{f}" for p, f in self.pairs)
            raise FingerprintError(
                f"payload {payload_id!r} in format {fmt!r} is not in the calibration (it has {known}); "
                "recalibrate with the payloads the load test sends (`canary calibrate`)"
            ) from None

    @functools.cached_property
    def _entries(self) -> dict[tuple[str, str], _Entry]:
        entries = {}
        for pid, fmt in self.pairs:
            refs = self.references[pid][fmt]
            subsets = tuple(sorted(refs))
            matrix = np.ascontiguousarray(np.stack([refs[s] for s in subsets]), dtype=np.float32)
            top5 = tuple(top_k(row, 5) for row in matrix)
            entries[(pid, fmt)] = _Entry(
                subsets, matrix, tuple(t[0][0] for t in top5), top5, self.excluded.get((pid, fmt))
            )
        return entries

    def to_json(self) -> bytes:
        """Deterministic JSON (sorted keys; float32 shortest repr, which reads back bit-exact)."""
        payloads: dict[str, dict[str, Any]] = {}
        for pid, fmt in self.pairs:
            separation = self.separation(pid, fmt)
            payloads.setdefault(pid, {})[fmt] = {
                "references": {
                    s: np.ascontiguousarray(v, dtype=np.float32)
                    for s, v in self.references[pid][fmt].items()
                },
                "excluded": self.excluded.get((pid, fmt)),
                "separation": separation if math.isfinite(separation) else None,
                "sha256": self.payload_digests.get(pid, {}).get(fmt),
            }
        meta = dict(self.meta)
        origin = meta.pop("origin", None)
        doc = {
            "format": CALIBRATION_FORMAT,
            "source": (origin or self.source) if self.source == "file" else self.source,
            "tolerance": self.tolerance,
            "subsets": list(self.subsets),
            "meta": meta,
            "payloads": payloads,
        }
        return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_SORT_KEYS) + b"\n"

    @classmethod
    def from_json(cls, raw: bytes | str, *, where: str = "the calibration") -> Calibration:
        """Read :meth:`to_json`'s output; ``source`` becomes ``file``, the original in ``meta["origin"]``."""
        try:
            doc = orjson.loads(raw)
            if not isinstance(doc, dict) or doc.get("format") != CALIBRATION_FORMAT:
                found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
                raise CalibrationError(
                    f"{where} has format {found!r}, not {CALIBRATION_FORMAT}; recalibrate with `canary calibrate`"
                )
            references: dict[str, dict[str, dict[str, Vector]]] = {}
            excluded: dict[tuple[str, str], str] = {}
            digests: dict[str, dict[str, str]] = {}
            for pid, formats in doc["payloads"].items():
                for fmt, item in formats.items():
                    references.setdefault(pid, {})[fmt] = {
                        s: _reference(v, f"{where}: {pid}/{fmt}/{s}")
                        for s, v in item["references"].items()
                    }
                    if item.get("excluded"):
                        excluded[(pid, fmt)] = str(item["excluded"])
                    if item.get("sha256"):
                        digests.setdefault(pid, {})[fmt] = str(item["sha256"])
            tolerance = float(doc["tolerance"])
            meta = {**doc.get("meta", {}), "origin": str(doc["source"])}
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
            raise CalibrationError(
                f"{where} is not a readable calibration ({type(error).__name__}: {error}); "
                "recalibrate with `canary calibrate`"
            ) from None
        _check_tolerance(tolerance)
        _check_shapes(references)
        return cls(references, tolerance, excluded, "file", digests, meta)


def build_calibration(
    outputs: Mapping[str, Mapping[str, Mapping[str, npt.ArrayLike]]],
    tolerance: float = DEFAULT_TOLERANCE,
    source: str = "endpoints",
    *,
    payload_digests: Mapping[str, Mapping[str, str]] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Calibration:
    """A calibration from ``outputs[payload_id][fmt][subset]`` (probability vectors).

    A payload/format whose subsets' references are within ``2 * tolerance``
    of each other (or that lacks a subset) is excluded, with the reason in
    ``Calibration.excluded``/``warnings``. Raises :class:`CalibrationError`
    when nothing separates the subsets, or the outputs are malformed.
    """
    _check_tolerance(tolerance)
    if source not in SOURCES:
        raise CalibrationError(f"calibration source {source!r} must be one of {', '.join(SOURCES)}")
    references: dict[str, dict[str, dict[str, Vector]]] = {}
    for pid in sorted(outputs):
        for fmt in sorted(outputs[pid]):
            references.setdefault(pid, {})[fmt] = {
                s: _reference(v, f"the output of {s} for {pid}/{fmt}")
                for s, v in sorted(outputs[pid][fmt].items())
            }
    _check_shapes(references)
    subsets = sorted(
        {s for formats in references.values() for refs in formats.values() for s in refs}
    )
    if not subsets:  # one subset is enough: before a canary is deployed, anything else is unknown
        raise CalibrationError(
            "calibration needs the outputs of at least one subset, got none; "
            "check that every subset has a ready pod (`canary mesh status`)"
        )
    excluded: dict[tuple[str, str], str] = {}
    for pid, formats in references.items():
        for fmt, refs in formats.items():
            missing = [s for s in subsets if s not in refs]
            if missing:
                excluded[(pid, fmt)] = f"{pid} ({fmt}): no reference from {', '.join(missing)}"
                continue
            if len(refs) < 2:
                continue
            a, b, distance = _closest_pair(refs)
            if distance <= 2 * tolerance:
                excluded[(pid, fmt)] = (
                    f"{pid} ({fmt}): {a} and {b} answer within {distance:.3g} of each other "
                    f"(at most twice the tolerance {tolerance:g}), so its responses cannot be attributed"
                )
    calibration = Calibration(
        references, tolerance, excluded, source, dict(payload_digests or {}), dict(meta or {})
    )
    if calibration.pairs and not calibration.usable:
        same = "; ".join(
            f"{pid} ({fmt}, max difference {calibration.separation(pid, fmt):.3g})"
            for pid, fmt in calibration.pairs
        )
        raise CalibrationError(
            f"the models of subsets {' and '.join(subsets)} answer identically (within twice the tolerance "
            f"{tolerance:g}) on every payload: {same}; add payloads that tell them apart (JPEGs in "
            "payloads/images, or --images DIR), or check that the subsets really serve different models"
        )
    if not calibration.pairs:
        raise CalibrationError("the calibration has no payloads; give it at least one image")
    return calibration


def attribute(
    calibration: Calibration, payload_id: str, fmt: str, vector: npt.ArrayLike
) -> Attribution:
    """The subset whose reference is nearest to ``vector``, if within tolerance; else ``unknown``."""
    return _attribute(
        calibration._entry(payload_id, fmt),
        calibration.tolerance,
        _vector(vector, calibration, payload_id, fmt),
    )


class Fingerprinter:
    """Attribution with an exact-response memo, from vectors or raw response bytes.

    Each ``(payload, format)`` remembers up to ``memo_limit`` distinct
    responses per kind (REST body, gRPC message, vector) (after that new ones are computed, not stored), so memory stays
    bounded however noisy the servers are. One per process; not shared
    between threads that mutate it concurrently (gevent users are fine).
    """

    def __init__(
        self, calibration: Calibration, *, memo_limit: int = 64, output: str = OUTPUT
    ) -> None:
        self.calibration = calibration
        self.memo_limit = memo_limit
        self.output = output
        self.hits = 0
        self.misses = 0
        # (kind, payload, format) -> last bytes of a response -> [(response, attribution)]
        self._memo: dict[tuple[str, str, str], dict[bytes, list[tuple[bytes, Attribution]]]] = {}
        self._memo_sizes: dict[tuple[str, str, str], int] = {}

    def attribute(self, payload_id: str, fmt: str, vector: npt.ArrayLike) -> Attribution:
        """As :func:`attribute`, memoised on the vector's float32 bytes."""
        v = _vector(vector, self.calibration, payload_id, fmt)
        return self._lookup("vector", payload_id, fmt, v.tobytes(), _same, v)

    def attribute_rest(self, payload_id: str, fmt: str, body: bytes) -> Attribution:
        """Attribute a raw REST predict response body (TF Serving's JSON)."""
        return self._lookup("rest", payload_id, fmt, bytes(body), rest_probabilities, body, self.output)

    def attribute_grpc(self, payload_id: str, fmt: str, message: bytes) -> Attribution:
        """Attribute a raw serialised ``PredictResponse`` (use an identity response deserializer)."""
        return self._lookup("grpc", payload_id, fmt, bytes(message), grpc_probabilities, message, self.output)

    def _lookup(
        self, kind: str, payload_id: str, fmt: str, key: bytes, decode: Callable[..., Any], *args: Any
    ) -> Attribution:
        # Hashing a whole response (kilobytes) costs more than the rest of a hit, so the memo is keyed by
        # its last bytes, and a hit is confirmed by comparing the whole response (length, then memcmp).
        tail = key[-_MEMO_TAIL:]
        memo = self._memo.get((kind, payload_id, fmt))
        if memo is None:
            self.calibration._entry(payload_id, fmt)  # raises for a pair the calibration lacks
            memo = self._memo[(kind, payload_id, fmt)] = {}
        else:
            bucket = memo.get(tail)
            if bucket is not None:
                for known, found in bucket:
                    if known == key:
                        self.hits += 1
                        return found
        self.misses += 1
        vector = _vector(decode(*args), self.calibration, payload_id, fmt)
        entry = self.calibration._entries[(payload_id, fmt)]
        result = _attribute(entry, self.calibration.tolerance, vector)
        stored = self._memo_sizes.get((kind, payload_id, fmt), 0)
        if stored < self.memo_limit:
            memo.setdefault(tail, []).append((key, result))
            self._memo_sizes[(kind, payload_id, fmt)] = stored + 1
        return result


def _same(vector: Vector) -> Vector:
    return vector


def top_k(vector: npt.ArrayLike, k: int = 5) -> Top:
    """The ``k`` largest entries as ``(class index, value)``, largest first, ties by index (NaN last)."""
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    k = min(k, v.size)
    if k <= 0:
        return ()
    ranked = np.where(np.isnan(v), -np.inf, v) if np.isnan(v).any() else v
    threshold = np.partition(ranked, v.size - k)[v.size - k]  # the k-th largest value
    above = np.flatnonzero(ranked > threshold)
    ties = np.flatnonzero(ranked == threshold)[: k - above.size]
    candidates = np.concatenate((above, ties))
    order = candidates[np.lexsort((candidates, -ranked[candidates]))]
    return tuple(zip(order.tolist(), v[order].tolist(), strict=True))


# ---------------------------------------------------------------- internals


def _attribute(entry: _Entry, tolerance: float, vector: Vector) -> Attribution:
    distances: list[float] = np.abs(entry.matrix - vector).max(axis=1).tolist()
    distance = min(distances)
    nearest = distances.index(distance)
    if entry.excluded is None and distance <= tolerance:
        return Attribution(
            entry.subsets[nearest],
            distance,
            entry.top5[nearest],
            entry.top1[nearest],
            "exact" if distance == 0.0 else "tolerance",
        )
    top5 = top_k(vector, 5)
    return Attribution(
        UNKNOWN, distance, top5, top5[0][0], "excluded" if entry.excluded else "none"
    )


def _vector(vector: npt.ArrayLike, calibration: Calibration, payload_id: str, fmt: str) -> Vector:
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    expected = calibration._entry(payload_id, fmt).matrix.shape[1]
    if v.size != expected:
        raise FingerprintError(
            f"the response for {payload_id} ({fmt}) has {v.size} values but the calibration {expected}; "
            "is the load test talking to the models it was calibrated against?"
        )
    return v


def _reference(values: Any, what: str) -> Vector:
    try:
        v = np.asarray(values, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        raise CalibrationError(f"{what} is not a vector of numbers") from None
    if v.size == 0 or not np.isfinite(v).all():
        raise CalibrationError(f"{what} is empty or not finite; the model server returned garbage")
    v.flags.writeable = False
    return v


def _check_tolerance(tolerance: float) -> None:
    if not (math.isfinite(tolerance) and 0.0 < tolerance < 1.0):
        raise CalibrationError(
            f"tolerance must be a number in (0, 1), got {tolerance!r}; the default is {DEFAULT_TOLERANCE:g}"
        )


def _check_shapes(references: Mapping[str, Mapping[str, Mapping[str, Vector]]]) -> None:
    sizes = {
        len(v)
        for formats in references.values()
        for refs in formats.values()
        for v in refs.values()
    }
    if len(sizes) > 1:
        raise CalibrationError(
            f"the reference vectors have different lengths ({', '.join(map(str, sorted(sizes)))}); "
            "the subsets are not classifiers over the same classes"
        )


def _closest_pair(refs: Mapping[str, Vector]) -> tuple[str, str, float]:
    best = ("", "", math.inf)
    for a, b in combinations(sorted(refs), 2):
        distance = (
            float(np.abs(refs[a] - refs[b]).max()) if len(refs[a]) == len(refs[b]) else math.inf
        )
        if distance < best[2]:
            best = (a, b, distance)
    return best


def _separation(matrix: Vector) -> float:
    if len(matrix) < 2:
        return math.inf
    return min(
        float(np.abs(matrix[i] - matrix[j]).max()) for i, j in combinations(range(len(matrix)), 2)
    )
