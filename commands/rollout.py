"""``canary rollout``: progressive delivery on the local mesh, every step verified and gated.

For each step (``--steps 10,30,50,100``: the canary's percentage) the
VirtualService under test (``--from-manifest``, else the one live on the
mesh) gets those weights on every route that serves the stable subset, REST
and gRPC alike (:func:`mesh.weights.with_canary_weight`), written beside the
steps and applied. :func:`commands.steps.run_step` then loads until the split
is decided and judges it; the gates (:mod:`verifier.gates`) compare the
canary with the stable model on the step's own requests: error rate, latency
shift and p99 ratio, each with its interval. A step that is not verified, or
whose gate fails, rolls the mesh back to 100/0 (the stable subset takes
everything), verifies the rollback, and the rollout exits 1. A healthy canary
ends at its last step (100: all traffic to the canary) and exits 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from canary.conventions import DEFAULT_HEADER, MODEL_NAME, ExitCode
from canary.errors import UsageError
from canary.rundir.layout import REPORTS_DIR
from canary.rundir.reader import read_run
from canary.rundir.steps import GateRecord, StepsDir, StepsDocument
from commands.steps import (
    LoadPlan,
    LoadProgress,
    SequenceResult,
    StepDone,
    StepLog,
    StepResult,
    StepSpec,
    no_load_progress,
    run_step,
)
from mesh.api import KubeTarget, MeshSnapshot, snapshot
from mesh.local.backend import Progress, no_progress
from mesh.manifests import read_documents
from mesh.model import VirtualService
from mesh.routing import (
    expectations_from_virtual_service,
    load_virtual_service,
    recorded_virtual_service,
)
from mesh.weights import with_canary_weight
from verifier.gates import GateLimits, evaluate_gates, gates_passed, mesh_error_counts

__all__ = ["DEFAULT_STEPS", "RolloutRequest", "RolloutResult", "parse_steps", "run_rollout"]

DEFAULT_STEPS = (10, 30, 50, 100)


def parse_steps(text: str) -> tuple[int, ...]:
    """``10,30,50,100`` → (10, 30, 50, 100): whole percentages from 1 to 100, rising."""
    try:
        steps = tuple(int(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        raise UsageError(f"--steps {text!r} must be rising whole percentages, e.g. 10,30,50,100") from None
    if not steps or any(not 1 <= s <= 100 for s in steps) or list(steps) != sorted(set(steps)):
        raise UsageError(f"--steps {text!r} must be rising whole percentages from 1 to 100, e.g. 10,30,50,100")
    return steps


@dataclass(frozen=True)
class RolloutRequest:
    steps: tuple[int, ...] = DEFAULT_STEPS
    limits: GateLimits = field(default_factory=GateLimits)
    plan: LoadPlan = field(default_factory=lambda: LoadPlan(canary_share=0.2))
    from_manifest: Path | None = None  # the VirtualService under test (default: the one live on the mesh)
    stable: str | None = None
    canary: str | None = None
    home: Path | None = None
    reports: Path = REPORTS_DIR
    kube: KubeTarget | None = None  # a cluster instead of the local mesh


class RolloutResult(SequenceResult):
    """How the rollout ended (``steps.json``'s status: promoted, rolled back, ...)."""


def _virtual_service(from_manifest: Path | None, mesh: MeshSnapshot) -> tuple[dict[str, Any], VirtualService]:
    """The VirtualService under test, as a document and as the mesh's parser reads it: the given
    file's, else the one live on the mesh."""
    if from_manifest is not None:
        parsed = load_virtual_service([from_manifest])
        found = [d for d in read_documents(from_manifest) if isinstance(d, dict) and d.get("kind") == "VirtualService"]
    else:
        found = [o["document"] for o in mesh.routing if o["document"].get("kind") == "VirtualService"]
        parsed = recorded_virtual_service([("live", d) for d in found],
                                          "the cluster's live routing" if mesh.kube else "the local mesh's live routing",
                                          cluster=mesh.kube is not None)
    return dict(found[0]), parsed


def _subsets(request: RolloutRequest, mesh: MeshSnapshot, service: VirtualService) -> tuple[str, str]:
    """(stable, canary): as given, else the first subset of the route the default group's REST
    requests take in the VirtualService under test, and the DestinationRule's other subset."""
    known = list(mesh.view.subsets())
    stable = request.stable
    if stable is None:
        cell = ("rest", "default")
        try:
            stable = expectations_from_virtual_service(service, [cell], header=DEFAULT_HEADER, model_name=MODEL_NAME,
                                                       known_subsets=known).stable
        except UsageError:  # a route that names no subset: nothing to tell the stable one by
            stable = None
    others = [s for s in known if s != stable]
    canary = request.canary or (others[0] if len(others) == 1 else None)
    if stable is None or canary is None or stable == canary:
        raise UsageError(f"cannot tell the stable and canary subsets apart among {', '.join(known) or 'none'} "
                         "from the VirtualService under test; give --stable and --canary (or --from-manifest)")
    for name in (stable, canary):
        if name not in known:
            raise UsageError(f"subset {name!r} is not in the DestinationRule (subsets: {', '.join(known)})")
    return stable, canary


def _weights_step(folder: StepsDir, index: int, name: str, title: str, document: Mapping[str, Any],
                  subsets: tuple[str, str], percent: int) -> StepSpec:
    path = folder.manifest(index, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    weighted = with_canary_weight(document, subsets[0], subsets[1], percent)
    path.write_text(f"# canary rollout step {index}: {percent}% to {subsets[1]}\n"
                    + yaml.safe_dump(weighted, sort_keys=False), encoding="utf-8")
    return StepSpec(name=name, title=title, apply=(path,), from_manifest=path, canary_percent=percent,
                    routing_only=True)


def _gates(result: StepResult, subsets: tuple[str, str], limits: GateLimits) -> list[GateRecord]:
    if result.run_dir is None or not (result.run_dir / "run.json").is_file():
        return []
    run = read_run(result.run_dir)
    return evaluate_gates(run.records, stable=subsets[0], canary=subsets[1], limits=limits,
                          mesh_errors=mesh_error_counts(run.document))


def _reusable(results: list[StepResult]) -> Path | None:
    """The first step's calibration: the rollout changes routing only, never the pods."""
    return results[0].calibration if results else None


def run_rollout(
    request: RolloutRequest,
    *,
    progress: Progress = no_progress,
    load_progress: LoadProgress = no_load_progress,
    step_done: StepDone | None = None,
) -> RolloutResult:
    """Run the rollout (see the module docstring) on the running local mesh, or on ``request.kube``."""
    mesh = snapshot(home=request.home, kube=request.kube)
    service, parsed = _virtual_service(request.from_manifest, mesh)
    subsets = _subsets(request, mesh, parsed)
    with_canary_weight(service, *subsets, 0)  # refuses a VirtualService with no route to change, before anything
    limits = request.limits
    log = StepLog("rollout", {
        "steps": list(request.steps), "stable": subsets[0], "canary": subsets[1],
        "virtual_service": str(request.from_manifest or "live on the mesh"), "plan": request.plan.describe(),
        "max_error_rate": limits.max_error_rate, "max_latency_shift_ms": limits.max_latency_shift_ms,
        "max_p99_ratio": limits.max_p99_ratio, "gate_confidence": limits.confidence,
    }, request.reports, step_done)
    document = log.document

    def step(index: int, name: str, title: str, percent: int) -> StepResult:
        spec = _weights_step(log.folder, index, name, title, service, subsets, percent)
        return run_step(log.folder, index, spec, request.plan, home=request.home, progress=progress, kube=request.kube,
                        load_progress=load_progress, calibration=_reusable(log.results))

    try:
        for index, percent in enumerate(request.steps, start=1):
            result = step(index, f"canary-{percent}", f"{percent}% to {subsets[1]}", percent)
            result.record.gates = _gates(result, subsets, limits)
            log.add(result, len(request.steps))
            if not (result.passed and gates_passed(result.record.gates)):
                break
        else:
            document.status, document.exit_code = "promoted", int(ExitCode.OK)
        if document.exit_code is None:
            index = len(log.results) + 1
            result = step(index, "rollback", f"roll back: everything to {subsets[0]}", 0)
            log.add(result, index)
            document.status = "rolled back" if result.passed else "rollback not verified"
            document.exit_code = int(ExitCode.FAILED)
    finally:
        report = log.finish(_summary(document, subsets))
    return RolloutResult(log.folder.root, document, tuple(log.results), report)


def _summary(document: StepsDocument, subsets: tuple[str, str]) -> str:
    requests = sum(s.requests for s in document.steps)
    last = next((s for s in reversed(document.steps) if s.canary_percent is not None), None)
    where = f"ends at {100 - last.canary_percent}/{last.canary_percent}" if last and last.canary_percent is not None \
        else "no step ran"
    return f"{document.status}: {len(document.steps)} steps over {requests} requests; {subsets[0]}/{subsets[1]} {where}"
