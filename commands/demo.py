"""``canary demo``: both published walkthroughs on the local mesh, every step verified.

1. bring the mesh up with the stable model only and the base routing; verify
   that every request reaches ResNet50;
2. apply weight-100 and deploy the ResNet101 canary; verify that the canary
   receives nothing;
3. apply weight-70; verify 70/30 (cells pooled, sequential stop);
4. apply focused routing; verify both groups: every ``user-group: canary``
   request to ResNet101, every other to ResNet50;
5. write the report: ``steps.json`` and ``report.html`` in
   ``reports/<time>-demo-<id>/``, each step's run beside them.

Each step is :func:`commands.steps.run_step`: the real load test, stopped by
the sequential test, judged by ``verify-split``'s own function. The demo's
tolerance and request caps (:func:`demo_plan`) are chosen so that each
verdict is decisive in the demo's time on a 2-core machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from canary.conventions import ExitCode
from canary.rundir.layout import REPORTS_DIR
from canary.rundir.steps import StepRecord, StepsDocument
from commands.steps import (
    LoadPlan,
    LoadProgress,
    SequenceResult,
    StepDone,
    StepLog,
    StepSpec,
    no_load_progress,
    run_step,
)
from mesh.api import KubeTarget, default_manifests, kube_delete, mesh_down, mesh_up
from mesh.local.backend import Progress, no_progress
from mesh.manifests import read_documents

__all__ = ["CANARY_DEPLOYMENT", "DemoResult", "demo_plan", "demo_steps", "run_demo", "sequence_status"]

CANARY_DEPLOYMENT = "deployment-resnet101.yaml"


def demo_plan(tiny: bool) -> LoadPlan:
    """The demo's load: ±5 points on the tiny models (hundreds of requests a second), ±10 points
    on the real ResNets (a handful a second on two cores), so every verdict is decisive in time."""
    if tiny:
        return LoadPlan(users=8, tolerance=0.05, max_requests=5000, max_seconds=60, canary_share=0.5)
    return LoadPlan(users=6, tolerance=0.10, max_requests=1500, max_seconds=150, canary_share=0.5)


def stable_only_manifests() -> list[Path]:
    """``manifests/base`` without the canary's Deployment."""
    return sorted(p for p in default_manifests("base").glob("*.yaml") if p.name != CANARY_DEPLOYMENT)


def demo_steps() -> list[StepSpec]:
    routing = default_manifests("routing")
    weight_100 = routing / "virtualservice-weight-100.yaml"
    focused = routing / "virtualservice-focused-routing.yaml"
    return [
        StepSpec("stable-only", "ResNet50 alone behind the base routing: every request to resnet50",
                 expected="resnet50=100,resnet101=0"),
        StepSpec("weight-100", "apply weight-100 and deploy the ResNet101 canary: the canary gets nothing",
                 apply=(weight_100, default_manifests("base", CANARY_DEPLOYMENT)), from_manifest=weight_100),
        StepSpec("weight-70", "apply weight-70: 70/30 (all cells pooled)",
                 apply=(routing / "virtualservice-weight-70.yaml",), expected="70/30", routing_only=True),
        StepSpec("focused", "apply focused routing: user-group: canary to resnet101, all else to resnet50",
                 apply=(focused,), from_manifest=focused, routing_only=True),
    ]


@dataclass(frozen=True)
class DemoResult(SequenceResult):
    plan: LoadPlan = field(default_factory=LoadPlan)
    ingress_url: str = ""
    kept_running: bool = False


def sequence_status(records: list[StepRecord]) -> tuple[str, int]:
    """(status, exit code) of a sequence of steps: every step verified → passed, 0; any refuted
    or failed → failed, 1; else (an inconclusive step) → inconclusive, 2."""
    statuses = {r.status for r in records}
    if statuses <= {"verified"} and records:
        return "passed", int(ExitCode.OK)
    if statuses & {"refuted", "failed"} or not records:
        return "failed", int(ExitCode.FAILED)
    return "inconclusive", int(ExitCode.INCONCLUSIVE)


def run_demo(
    *,
    tiny: bool = False,
    port: int = 8080,
    keep: bool = False,
    plan: LoadPlan | None = None,
    home: Path | None = None,
    reports: Path = REPORTS_DIR,
    weights_dir: Path | None = None,
    progress: Progress = no_progress,
    load_progress: LoadProgress = no_load_progress,
    step_done: StepDone | None = None,
    kube: KubeTarget | None = None,
) -> DemoResult:
    """Run the walkthrough (see the module docstring); the mesh is taken down at the end unless ``keep``.
    With ``kube`` on that cluster: every step's manifests server-side applied (the stable-only
    ones as step 1), each routing change watched for in the traffic; the cluster keeps them."""
    plan = plan or demo_plan(tiny)
    settings = {
        "tiny": tiny, "port": port, "plan": plan.describe(), "tolerance": plan.tolerance, "users": plan.users,
        "max_requests": plan.max_requests, "canary_share": plan.canary_share, "protocol": plan.protocol,
    }
    began = time.monotonic()
    steps = demo_steps()
    if kube is None:
        ingress = mesh_up(stable_only_manifests(), tiny=tiny, port=port, weights_dir=weights_dir, home=home,
                          progress=progress).ingress_url
    else:  # the cluster applies the stable-only manifests as step 1, and keeps what the demo applied
        settings.update(cluster=kube.describe(), tiny=False)
        steps[0] = replace(steps[0], apply=tuple(stable_only_manifests()))
        canary = default_manifests("base", CANARY_DEPLOYMENT)
        for document in read_documents(canary):  # a previous demo's canary: step 1 is the stable one alone
            if isinstance(document, dict) and document.get("kind") == "Deployment":
                progress(f"removing the canary Deployment {document['metadata']['name']} a previous run left")
                kube_delete(kube, "apps/v1", "Deployment", str(document["metadata"]["name"]))
        ingress = kube.ingress or ""
    mesh_ready_s = time.monotonic() - began
    log = StepLog("demo", settings, reports, step_done)
    try:
        for index, spec in enumerate(steps, start=1):
            result = run_step(log.folder, index, spec, plan, home=home, progress=progress, kube=kube,
                              load_progress=load_progress, calibration=log.results[-1].calibration if log.results else None)
            if index == 1 and kube is None:
                result.record.took_effect_s = round(mesh_ready_s, 3)  # the mesh's start, for the first step
            log.add(result, len(steps))
        log.document.status, log.document.exit_code = sequence_status(log.document.steps)
    finally:
        report = log.finish(_summary(log.document))
        if not keep and kube is None:
            progress("taking the mesh down (use --keep to leave it running)")
            mesh_down(home=home)
    return DemoResult(log.folder.root, log.document, tuple(log.results), report, plan, ingress,
                      keep or kube is not None)


def _summary(document: StepsDocument) -> str:
    verified = sum(1 for s in document.steps if s.status == "verified")
    requests = sum(s.requests for s in document.steps)
    return f"{verified} of {len(document.steps)} steps verified over {requests} requests"
