"""A sequence of verified steps (``canary demo``, ``canary rollout``) as typed data and files.

Layout (``reports/<UTC start>-<kind>-<6 hex>/``)::

    steps.json          what was asked, every step so far, and how it ended (rewritten after each step)
    report.html         the steps on one page, linking each step's own report
    01-<step>/          each step's load test: an ordinary run directory (run.json, records/, ...)
    01-<step>.yaml      a manifest the step wrote and applied (a rollout's weights), when there is one

``steps.json`` is rewritten atomically after every step, so an interrupted
sequence still says how far it got; each step's run directory is verified
and reported like any other (``verify-split reports/<sequence>/02-weight-70``).
"""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path
from typing import Any

from pydantic import Field

from canary.rundir.document import Section, validated
from canary.rundir.layout import REPORTS_DIR, read_json, write_json_atomic

__all__ = [
    "STEPS_FILE",
    "STEPS_FORMAT",
    "GateRecord",
    "StepRecord",
    "StepsDir",
    "StepsDocument",
    "default_steps_dir",
]

STEPS_FILE = "steps.json"
STEPS_FORMAT = "canary-steps/1"


class GateRecord(Section):
    """One check of the canary against the stable model at a step."""

    name: str  # "error rate", "latency shift (rest)", "p99 ratio (grpc)", ...
    status: str  # "pass" (within the limit), "fail" (shown beyond it), "not judged"
    value: float | None = None
    low: float | None = None  # the interval of ``value``
    high: float | None = None
    limit: float | None = None
    unit: str = ""
    reason: str = ""


class StepRecord(Section):
    """One step: what it applied, the load it took, the verdict and the gates."""

    index: int
    name: str  # "weight-70"
    title: str  # "apply weight-70, verify 70/30"
    applied: list[str] = Field(default_factory=list)  # manifest files, as given to `mesh apply`
    canary_percent: int | None = None  # a rollout step's canary weight
    expected: str = ""  # what the split was verified against ("70/30", "from virtualservice-…yaml")
    verify_command: str = ""  # the verify-split line that judges the step's run again
    tolerance: float | None = None
    status: str = ""  # verified / refuted / inconclusive / failed
    exit_code: int | None = None
    requests: int = 0
    mesh_version: int | None = None  # the configuration version the step made live
    # local mesh: from the push's start to the ingress's acknowledgement; on a cluster: from the
    # apply's end to the probe that showed the new routing in the traffic (routing_observed)
    took_effect_s: float | None = None
    routing_observed: dict[str, Any] | None = None  # on a cluster: the change detector's observation
    started_at: str = ""
    seconds: float = 0.0
    run: str | None = None  # the step's run directory, relative to the sequence's folder
    verdict: str = ""  # the one-line verdict
    details: list[str] = Field(default_factory=list)  # failing cells, problems
    gates: list[GateRecord] = Field(default_factory=list)


class StepsDocument(Section):
    """``steps.json``."""

    format: str = STEPS_FORMAT
    kind: str  # "demo" or "rollout"
    started_at: str
    ended_at: str = ""
    status: str = "running"  # running, then passed / failed / rolled back / interrupted
    exit_code: int | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    steps: list[StepRecord] = Field(default_factory=list)
    summary: str = ""


def default_steps_dir(kind: str, reports: Path = REPORTS_DIR, now: dt.datetime | None = None) -> Path:
    """``reports/<UTC timestamp>-<kind>-<short id>``; names sort by start time as runs do."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    return Path(reports) / f"{stamp}-{kind}-{secrets.token_hex(3)}"


class StepsDir:
    """Paths inside one sequence's folder, and its ``steps.json``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def steps_json(self) -> Path:
        return self.root / STEPS_FILE

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    def step_name(self, index: int, name: str) -> str:
        return f"{index:02d}-{name}"

    def run_dir(self, index: int, name: str) -> Path:
        return self.root / self.step_name(index, name)

    def manifest(self, index: int, name: str) -> Path:
        return self.root / f"{self.step_name(index, name)}.yaml"

    def write(self, document: StepsDocument) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.steps_json, document.model_dump(mode="json"))

    def read(self) -> StepsDocument:
        document: StepsDocument = validated(StepsDocument, read_json(self.steps_json), str(self.steps_json))
        return document
