"""One verified step of a demo or a rollout: apply manifests, load until the split is decided, judge.

:func:`run_step` applies the step's manifests to the local mesh (the apply
returns once Envoy has acknowledged the new configuration; the time from the
push's start to that acknowledgement is the step's *took effect*), runs the
real load test (``canary load --until-verified``: the anytime-valid
sequential test, pooled as ``verify-split`` pools, stops it as soon as the
split is decided, within a request cap), then judges the run with
``verify-split``'s own function, which also writes the run's summary.json and
report.html. The step's record says what was applied, what was expected, the
verdict, the requests and the times; its run directory is an ordinary one.
"""

from __future__ import annotations

import contextlib
import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from canary.conventions import ExitCode, utc_now
from canary.errors import CanaryError
from canary.rundir.document import CanaryOptions, epoch_seconds
from canary.rundir.steps import StepRecord, StepsDir, StepsDocument, default_steps_dir
from canary.stats import SplitPolicy
from commands.cluster_steps import apply_on_cluster
from loadtest.load import LoadRequest, run_load
from mesh.api import KubeTarget, mesh_apply, routing_versions
from mesh.local.backend import Progress, no_progress
from verifier.report_files import verify_and_report
from verifier.report_steps import write_steps_html
from verifier.verify import Verification, VerifyRequest

__all__ = ["LoadPlan", "LoadProgress", "SequenceResult", "StepDone", "StepLog", "StepResult", "StepSpec",
           "no_load_progress", "run_step"]

ProgressCallback = Callable[[dict[str, Any]], None]
LoadProgress = Callable[[LoadRequest], AbstractContextManager[ProgressCallback | None]]


@dataclass(frozen=True)
class LoadPlan:
    """How each step loads the mesh: users, the verdict's tolerance, and the caps."""

    users: int = 8
    tolerance: float = 0.05
    max_requests: int = 4000
    max_seconds: int = 120
    canary_share: float = 0.5
    protocol: str = "both"

    def describe(self) -> str:
        return (f"±{100 * self.tolerance:g} points, {self.users} users ({self.protocol}, "
                f"{100 * self.canary_share:g}% with the canary header), at most {self.max_requests} "
                f"requests or {self.max_seconds} s per step")


@dataclass(frozen=True)
class StepSpec:
    """What a step does: the manifests to apply, then the split to verify."""

    name: str
    title: str
    apply: tuple[Path, ...] = ()
    expected: str | None = None  # e.g. "70/30"; or
    from_manifest: Path | None = None  # the VirtualService each cell's expectation comes from
    canary_percent: int | None = None
    routing_only: bool = False  # changes no pod: the previous step's calibration still holds

    @property
    def expectation(self) -> str:
        """What the split is verified against, for people: ``70/30`` or ``from <file name>``."""
        return self.expected or f"from {Path(str(self.from_manifest)).name}"

    def verify_command(self, run_dir: Path, tolerance: float) -> str:
        """The ``verify-split`` line that judges the step's run again, as the step judged it."""
        given = ["--expected", self.expected] if self.expected else ["--from-manifest", str(self.from_manifest)]
        return shlex.join(["verify-split", str(run_dir), *given, "--tolerance", f"{tolerance:g}"])


@dataclass(frozen=True)
class StepResult:
    record: StepRecord
    verification: Verification | None = None
    run_dir: Path | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return self.record.status == "verified"

    @property
    def calibration(self) -> Path | None:
        """The calibration the step's load test attributed with, for a next step to reuse."""
        path = self.run_dir / "calibration.json" if self.run_dir is not None else None
        return path if path is not None and path.is_file() else None


@dataclass(frozen=True)
class SequenceResult:
    """A demo or rollout as it ended: its folder, ``steps.json`` as written, each step, the page."""

    steps_dir: Path
    document: StepsDocument
    results: tuple[StepResult, ...]
    report: Path

    @property
    def exit_code(self) -> int:
        return int(self.document.exit_code if self.document.exit_code is not None else ExitCode.FAILED)


StepDone = Callable[[StepResult, int], None]


class StepLog:
    """A demo's or rollout's steps as they end: each kept in ``steps.json`` at once (so an
    interrupted sequence says how far it got) and told to the caller; :meth:`finish` writes the
    end and the page. Until then the status is "interrupted"."""

    def __init__(self, kind: str, settings: dict[str, Any], reports: Path, step_done: StepDone | None = None) -> None:
        self.folder = StepsDir(default_steps_dir(kind, reports))
        self.document = StepsDocument(kind=kind, started_at=utc_now(), settings=settings, status="interrupted")
        self.results: list[StepResult] = []
        self._step_done = step_done
        self.folder.write(self.document)

    def add(self, result: StepResult, total: int) -> None:
        self.results.append(result)
        self.document.steps.append(result.record)
        self.folder.write(self.document)
        if self._step_done is not None:
            self._step_done(result, total)

    def finish(self, summary: str) -> Path:
        """Write the sequence's end (status and exit code set by the caller) and its page."""
        self.document.ended_at = utc_now()
        self.document.summary = summary
        self.folder.write(self.document)
        return write_steps_html(self.folder, self.document)


@contextlib.contextmanager
def no_load_progress(_: LoadRequest) -> Iterator[None]:
    yield None


def _took_effect(version: int, home: Path | None) -> float | None:
    """Seconds from the push's start to the ingress's acknowledgement of ``version``."""
    for applied in routing_versions(home=home):
        if applied.version == version:
            start, end = epoch_seconds(applied.started_at), epoch_seconds(applied.applied_at)
            return None if start is None or end is None else max(0.0, end - start)
    return None


def _load_request(spec: StepSpec, plan: LoadPlan, run_dir: Path, home: Path | None,
                  calibration: Path | None, kube: KubeTarget | None = None) -> LoadRequest:
    cluster: dict[str, Any] = {} if kube is None else {
        "kube": True, "context": kube.context, "namespace": kube.namespace, "prometheus": kube.prometheus}
    options = CanaryOptions(
        **cluster,
        calibration=calibration if spec.routing_only else None,
        protocol=plan.protocol, canary_share=plan.canary_share, requests=plan.max_requests, run_dir=run_dir,
        until_verified=True, tolerance=plan.tolerance, expected=spec.expected, from_manifest=spec.from_manifest,
    )
    return LoadRequest(options=options, users=plan.users, run_time=f"{plan.max_seconds}s", home=home,
                       host=kube.ingress if kube is not None else None)


def _verdict_line(verification: Verification) -> tuple[str, list[str]]:
    judgement = verification.judgement
    details = judgement.failing_lines() if judgement is not None else []
    details += [f"cross-check: {verification.crosscheck.reason}"] if verification.crosscheck.status == "mismatch" else []
    return verification.reason, details


def run_step(
    steps: StepsDir,
    index: int,
    spec: StepSpec,
    plan: LoadPlan,
    *,
    home: Path | None = None,
    calibration: Path | None = None,
    progress: Progress = no_progress,
    load_progress: LoadProgress = no_load_progress,
    kube: KubeTarget | None = None,
) -> StepResult:
    """Apply, load until decided, judge (see the module docstring); with ``kube`` on that cluster
    (:mod:`commands.cluster_steps`: the change watched for in the traffic). Never raises for a failed
    step, only for a mesh that cannot be changed (:class:`CanaryError`). A ``routing_only`` step
    attributes with ``calibration`` (the previous step's, when it has one: the pods are the
    same, so asking them again would only cost time) instead of calibrating anew."""
    started, began = utc_now(), time.monotonic()
    notes: tuple[str, ...] = ()
    record = StepRecord(index=index, name=spec.name, title=spec.title, applied=[str(p) for p in spec.apply],
                        canary_percent=spec.canary_percent, expected=spec.expectation,
                        tolerance=plan.tolerance, started_at=started)
    if spec.apply and kube is not None:
        on_cluster = apply_on_cluster(spec.apply, kube, calibration, deadline_s=plan.max_seconds, progress=progress)
        seen = on_cluster.observation
        if seen is not None:
            record.routing_observed = seen.to_dict()
            record.took_effect_s = round(seen.after_apply_s, 3) if seen.observed and seen.after_apply_s is not None else None
            if not seen.observed:
                record.status, record.exit_code = "failed", int(ExitCode.FAILED)
                record.verdict = f"the new routing did not show in the traffic: {seen.reason}"
                record.seconds = round(time.monotonic() - began, 3)
                return StepResult(record, None, None, (seen.reason,))
        notes = (on_cluster.note,) if on_cluster.note else ()
    elif spec.apply:
        applied = mesh_apply(list(spec.apply), home=home, progress=progress)
        record.mesh_version = applied.version
        record.took_effect_s = _took_effect(applied.version, home)
    run_dir = steps.run_dir(index, spec.name)
    record.run = run_dir.name
    record.verify_command = spec.verify_command(run_dir, plan.tolerance)
    request = _load_request(spec, plan, run_dir, home, calibration, kube)
    try:
        with load_progress(request) as bar:
            load = run_load(request, progress=bar)
        if load.exit_code == ExitCode.INTERRUPTED:  # the run kept its records; the sequence stops here
            raise KeyboardInterrupt
        verification, _ = verify_and_report(VerifyRequest(
            run_dir=run_dir, expected=spec.expected,
            manifests=(spec.from_manifest,) if spec.from_manifest else (),
            policy=SplitPolicy(tolerance=plan.tolerance),
        ))
    except CanaryError as error:
        record.status, record.exit_code = "failed", int(ExitCode.FAILED)
        record.verdict = f"the step's load test could not be judged: {error}"
        record.seconds = round(time.monotonic() - began, 3)
        return StepResult(record, None, run_dir, notes)
    record.requests = load.run.requests.total if load.run is not None else 0
    record.status, record.exit_code = verification.status, verification.exit_code
    record.verdict, record.details = _verdict_line(verification)
    record.seconds = round(time.monotonic() - began, 3)
    return StepResult(record, verification, run_dir, notes)
