"""run.json as typed data: what ran and what came of it.

The load test builds a :class:`RunDocument` and writes it (at start, at the
end, at exit); every reader gets the same typed document back from
:func:`parse_run_document`, never nested ``.get()`` chains. Validation and
(de)serialisation are pydantic's. Every section keeps keys it does not know
(``extra="allow"``), so a document written by a newer version reads here and
writes back whole.

Formats read: ``1`` (this version writes it).
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from canary.conventions import (
    DEFAULT_HEADER_TEXT,
    DEFAULT_MODEL_VERSION,
    DEFAULT_PAYLOAD_SIZE,
    GROUPS,
    KUBE_NAMESPACE,
    MODEL_NAME,
    check_dns_label,
    parse_header,
)
from canary.errors import UsageError

__all__ = [
    "FORMATS_READ",
    "LOAD_PROTOCOLS",
    "RUN_FORMAT",
    "AppliedManifest",
    "CalibrationSummary",
    "CanaryOptions",
    "ExpectedSplit",
    "InterruptionRecord",
    "MeshRecord",
    "ModelRecord",
    "PayloadRecord",
    "PayloadsRecord",
    "RecordsRecord",
    "RequestsRecord",
    "RoutingObject",
    "RoutingRecord",
    "RunArguments",
    "RunDocument",
    "SequentialCellRecord",
    "SequentialRecord",
    "SubsetCounts",
    "WorkerTallyRecord",
    "epoch_seconds",
    "parse_run_document",
    "parse_timestamp",
    "validated",
]

RUN_FORMAT = 1
FORMATS_READ = (1,)
LOAD_PROTOCOLS = ("rest", "grpc", "both")
"""What ``--protocol`` takes: REST users, gRPC users, or both (half each)."""
DEFAULT_CANARY_SHARE = 0.2
DEFAULT_TOLERANCE = 0.03


class Section(BaseModel):
    """A part of run.json: typed, lenient about keys it does not know."""

    model_config = ConfigDict(extra="allow", validate_assignment=False)


def validated(model: type[Section], data: Any, where: str) -> Any:
    """``model`` from ``data``; a :class:`UsageError` saying which field is wrong and where."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(document)"
        raise UsageError(f"{where}: {field}: {first['msg']} (got {first.get('input')!r})") from None


# --- the load test's options ---------------------------------------------------------


class CanaryOptions(Section):
    """The load test's own options (``arguments.canary``): validated, so a run holds sane values.

    Locust's options (users, run time, ...) are recorded beside them as
    Locust names them (``arguments.locust``).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    protocol: str = "both"
    canary_share: float = DEFAULT_CANARY_SHARE
    canary_header: str = DEFAULT_HEADER_TEXT
    requests: int | None = None  # exactly this many requests; None: no limit
    payloads: Path | None = None
    payload_size: int | None = DEFAULT_PAYLOAD_SIZE  # None: the images as they are
    calibration: Path | None = None
    run_dir: Path | None = None
    expected: str | None = None
    model_name: str = MODEL_NAME
    model_version: int = DEFAULT_MODEL_VERSION
    until_verified: bool = False
    from_manifest: Path | None = None
    tolerance: float = DEFAULT_TOLERANCE
    # --kube: the cluster of a kubeconfig context (names only, never a credential)
    kube: bool = False
    context: str | None = None
    namespace: str = KUBE_NAMESPACE
    prometheus: str | None = None

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, value: str) -> str:
        value = str(value).lower()
        if value not in LOAD_PROTOCOLS:
            raise UsageError(f"--protocol {value!r} must be one of {', '.join(LOAD_PROTOCOLS)}")
        return value

    @field_validator("canary_share")
    @classmethod
    def _share(cls, value: float) -> float:
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise UsageError(f"--canary-share must be between 0 and 1 (0.2 is 20%), got {value}")
        return value

    @field_validator("canary_header")
    @classmethod
    def _header(cls, value: str) -> str:
        name, text = parse_header(value)
        return f"{name}: {text}"

    @field_validator("requests")
    @classmethod
    def _requests(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise UsageError(f"--requests must be 0 (no limit) or more, got {value}")
        return value or None

    @field_validator("payload_size")
    @classmethod
    def _size(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= 4096:
            raise UsageError(f"--payload-size must be between 1 and 4096 pixels, got {value}")
        return value

    @field_validator("model_version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value < 1:
            raise UsageError(f"--model-version must be 1 or more, got {value}")
        return value

    @field_validator("tolerance")
    @classmethod
    def _tolerance(cls, value: float) -> float:
        if not (math.isfinite(value) and 0.0 < value < 0.5):
            raise UsageError(f"--tolerance must be a fraction between 0 and 0.5 (0.03 is ±3 points), got {value}")
        return value

    @field_validator("payloads", "calibration", "run_dir", "from_manifest", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        return None if value is None or not str(value).strip() else value

    @field_validator("context", "prometheus", mode="before")
    @classmethod
    def _optional_text(cls, value: Any) -> Any:
        return None if value is None or not str(value).strip() else str(value).strip()

    @field_validator("prometheus")
    @classmethod
    def _prometheus(cls, value: str | None) -> str | None:
        if value is not None and "@" in value.split("://", 1)[-1].split("/", 1)[0]:
            raise UsageError("--prometheus must not carry a user or password (it would be recorded in run.json); "
                             "reach an authenticated Prometheus through `kubectl port-forward` instead")
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        value = str(value).strip() or KUBE_NAMESPACE
        if check_dns_label(value):
            raise UsageError(f"--namespace {value!r} must be a Kubernetes namespace name (lower-case letters, digits, '-')")
        return value

    @field_validator("expected", mode="before")
    @classmethod
    def _expected(cls, value: Any) -> Any:
        return None if value is None or not str(value).strip() else str(value)

    @property
    def header(self) -> tuple[str, str]:
        """The canary header as ``(name, value)``, the name lower-cased."""
        return parse_header(self.canary_header)

    @property
    def protocols(self) -> tuple[str, ...]:
        """The protocols users are made for."""
        return ("rest", "grpc") if self.protocol == "both" else (self.protocol,)

    @property
    def groups(self) -> tuple[str, ...]:
        """The header groups the canary share asks users for: default below 1, canary above 0."""
        return tuple(g for g in GROUPS if (self.canary_share > 0 if g == "canary" else self.canary_share < 1))


class RunArguments(Section):
    argv: list[str] = Field(default_factory=list)
    canary: CanaryOptions = Field(default_factory=CanaryOptions)
    locust: dict[str, Any] = Field(default_factory=dict)
    user_classes: list[str] = Field(default_factory=list)


# --- what was sent and how it was attributed -----------------------------------------


class PayloadRecord(Section):
    id: str
    label: int | None = None
    sha256: dict[str, str] = Field(default_factory=dict)  # format -> sha256 of the REST body


class PayloadsRecord(Section):
    dir: str | None = None
    size: int | None = None
    digest: str | None = None
    items: list[PayloadRecord] = Field(default_factory=list)


class CalibrationSummary(Section):
    """What run.json says of the calibration (the fingerprints are in calibration.json)."""

    file: str | None = None
    given: str | None = None  # the --calibration file, or None when calibrated at start
    endpoints: dict[str, dict[str, str]] | None = None  # subset -> {"rest": url, "grpc": target}
    source: str | None = None
    tolerance: float | None = None
    subsets: list[str] = Field(default_factory=list)
    pairs: int = 0
    usable: int = 0
    excluded: list[str] = Field(default_factory=list)


class ModelRecord(Section):
    """One subset's model, as its own server described it."""

    endpoint: str | None = None
    version: int | None = None
    canary_model: dict[str, Any] | None = None  # the export's record: architecture, weights
    weights: str | None = None
    error: str | None = None

    @property
    def weights_kind(self) -> str | None:
        """``seeded`` or ``imagenet``, where recorded."""
        if self.weights:
            return self.weights
        found = (self.canary_model or {}).get("weights")
        return found if isinstance(found, str) else None


class ExpectedSplit(Section):
    shares: dict[str, float]
    label: str | None = None


# --- the mesh --------------------------------------------------------------------------


class AppliedManifest(Section):
    path: str
    sha256: str
    objects: list[str] = Field(default_factory=list)


class SubsetCounts(Section):
    """The mesh's own count of requests to one subset (Envoy's upstream counters)."""

    subset: str = ""
    requests: int = 0
    by_class: dict[str, int] = Field(default_factory=dict)
    by_port: dict[str, int] = Field(default_factory=dict)
    clusters: list[str] = Field(default_factory=list)
    # cluster -> {"requests", "timed" (upstream_rq_time samples: kept by /reset_counters), "active"}
    by_cluster: dict[str, dict[str, int]] = Field(default_factory=dict)


class RoutingObject(Section):
    source: str  # the manifest file it was applied from
    document: dict[str, Any]  # the object as applied


class RoutingRecord(Section):
    """The routing live in one phase of the run: the mesh's configuration version, when its
    push started and when the ingress acknowledged it, a hash of its routing objects
    (Gateway, VirtualService, DestinationRule) and the objects themselves, so each phase
    can be judged against its own routing later. Phase 0 is the routing live when the load
    test started; each later phase is one routing change the mesh made during the run."""

    phase: int = 0
    version: int | None = None
    started_at: str | None = None  # when the mesh began pushing it (ISO 8601 UTC); None for phase 0
    applied_at: str | None = None  # when the ingress acknowledged it; None while pending
    seen_at: str | None = None  # when the load test first read it
    failed: bool = False  # the push failed: what the ingress routed in this phase is unknown
    sha256: str = ""
    objects: list[RoutingObject] = Field(default_factory=list)


class MeshRecord(Section):
    """The mesh the run went through, when canary could read it (``local``: the local mesh)."""

    local: bool = False
    backend: str = ""  # "local", "kube", or "" (a host that is no mesh canary could read)
    context: str | None = None  # on a cluster: the kubeconfig context (a name, no credential)
    namespace: str | None = None  # on a cluster: the model Services' namespace
    counters_from: str = ""  # whose counts: "envoy", "prometheus <where>", or ""
    home: str | None = None
    ingress_url: str | None = None
    applied: list[AppliedManifest] = Field(default_factory=list)
    counters_before: dict[str, SubsetCounts] | None = None
    counters_after: dict[str, SubsetCounts] | None = None
    delta: dict[str, int] | None = None  # requests per subset during the run
    routing: list[RoutingRecord] = Field(default_factory=list)  # one per phase, in order
    # Envoy's counters were zeroed during the run (POST /reset_counters), so after − before
    # means nothing; why the mesh's histograms say so, one line per cluster
    counters_reset: bool = False
    counters_reset_evidence: list[str] = Field(default_factory=list)
    # what could not be read of the mesh during the run (a cluster that stopped answering, the local
    # mesh's routing history): the records stand, the mesh's side of them is incomplete
    problems: list[str] = Field(default_factory=list)

    def requests_during_run(self) -> dict[str, int] | None:
        """Requests per subset over the run: ``delta``, else after − before; None when unknown
        (or when the counters were reset during the run)."""
        if self.counters_reset:
            return None
        if self.delta is not None:
            return dict(self.delta)
        if self.counters_before is None or self.counters_after is None:
            return None
        names = sorted(set(self.counters_before) | set(self.counters_after))
        zero = SubsetCounts()
        return {n: self.counters_after.get(n, zero).requests - self.counters_before.get(n, zero).requests
                for n in names}


# --- what came of it -------------------------------------------------------------------


class RequestsRecord(Section):
    total: int = 0
    target: int | None = None
    by_outcome: dict[str, int] = Field(default_factory=dict)  # attributed / unknown / failed
    by_subset: dict[str, int] = Field(default_factory=dict)
    locust: dict[str, int] = Field(default_factory=dict)  # Locust's own requests / failures


class WorkerTallyRecord(Section):
    received: int = 0
    last_seq: int = -1
    missing: int = 0
    duplicates: int = 0


class RecordsRecord(Section):
    dir: str = "records"
    rows: int = 0
    chunks: int = 0
    by_subset: dict[str, int] = Field(default_factory=dict)
    by_outcome: dict[str, int] = Field(default_factory=dict)
    duplicates_dropped: int = 0
    missing: int = 0
    lost: dict[str, int] = Field(default_factory=dict)
    workers: dict[str, WorkerTallyRecord] = Field(default_factory=dict)
    workers_flushed: list[str] = Field(default_factory=list)


class SequentialCellRecord(Section):
    protocol: str
    group: str
    expected: str
    status: str
    n: int = 0
    n_total: int = 0
    looks: int = 0
    counts: dict[str, int] = Field(default_factory=dict)
    decided_at_request: int | None = None
    reason: str = ""
    pool: str = ""  # the cells pooled with this one ("rest/default, rest/canary"), if any


class SequentialRecord(Section):
    """``--until-verified``: the anytime-valid test's decisions."""

    test: str = ""
    expected_from: str = ""
    policy: dict[str, float] = Field(default_factory=dict)
    status: str = "continue"
    exit_code: int | None = None
    ended: str | None = None
    requests_to_decide: int | None = None
    cells: list[SequentialCellRecord] = Field(default_factory=list)


class InterruptionRecord(Section):
    """Why and when a run stopped before its end (run.json ``interrupted``; status ``interrupted``).

    Every request the run made is still in its records: requests in flight when the signal
    came were let finish (at most Locust's ``--stop-timeout``), or recorded with status
    ``interrupted`` when they did not."""

    signal: str | None = None  # SIGINT (Ctrl-C) or SIGTERM; None when Locust stopped for another reason
    at: str | None = None  # when the load test got it (ISO 8601 UTC)
    requests: int = 0  # records received by then
    in_flight: int = 0  # requests the stop timeout cut short (records with status "interrupted")


class RunDocument(Section):
    """The whole of run.json."""

    format: int = RUN_FORMAT
    run_id: str = ""
    status: str = "running"  # running, finished, interrupted (then ``interrupted`` says why and when)
    started_at: str | None = None  # ISO 8601 UTC
    ended_at: str | None = None
    host: str | None = None
    runner: str | None = None  # local or master
    arguments: RunArguments = Field(default_factory=RunArguments)
    payloads: PayloadsRecord = Field(default_factory=PayloadsRecord)
    calibration: CalibrationSummary = Field(default_factory=CalibrationSummary)
    models: dict[str, ModelRecord] = Field(default_factory=dict)
    expected: dict[str, ExpectedSplit] = Field(default_factory=dict)  # per group
    users: dict[str, dict[str, int]] = Field(default_factory=dict)  # protocol -> group -> users
    mesh: MeshRecord = Field(default_factory=MeshRecord)
    versions: dict[str, str | None] = Field(default_factory=dict)
    requests: RequestsRecord = Field(default_factory=RequestsRecord)
    records: RecordsRecord = Field(default_factory=RecordsRecord)
    sequential: SequentialRecord | None = None
    problems: list[str] = Field(default_factory=list)
    exit_code: int | None = None
    interrupted: InterruptionRecord | None = None

    @field_validator("format")
    @classmethod
    def _format(cls, value: int) -> int:
        if value not in FORMATS_READ:
            raise UsageError(
                f"run.json has format {value}, which this version of canary cannot read "
                f"(it reads {', '.join(map(str, FORMATS_READ))}); use the canary version that wrote it"
            )
        return value

    @property
    def options(self) -> CanaryOptions:
        return self.arguments.canary

    @property
    def started(self) -> dt.datetime | None:
        return parse_timestamp(self.started_at)

    @property
    def ended(self) -> dt.datetime | None:
        return parse_timestamp(self.ended_at)

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON data, as written to run.json."""
        return self.model_dump(mode="json")


def parse_run_document(data: Any, where: str = "run.json") -> RunDocument:
    """A :class:`RunDocument` from parsed JSON; :class:`UsageError` naming the bad field."""
    document: RunDocument = validated(RunDocument, data, where)
    return document


def epoch_seconds(text: Any) -> float | None:
    """An ISO 8601 time as epoch seconds; None when absent or unreadable."""
    moment = parse_timestamp(text)
    return moment.timestamp() if moment else None


def parse_timestamp(text: Any) -> dt.datetime | None:
    """An ISO 8601 time as an aware UTC datetime; None when absent or unreadable."""
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
