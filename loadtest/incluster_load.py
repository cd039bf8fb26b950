"""``canary load --kube --in-cluster --workers N``: Locust master and workers as Jobs in the cluster.

1. The subsets are calibrated from here, through a port-forward to one pod
   of each (as ``canary load --kube`` does), unless ``--calibration`` is given.
2. ``manifests/loadgen/`` is filled in for the run
   (:func:`loadtest.loadgen_manifests.render`: the image, the workers, a
   ConfigMap with ``settings.json``, ``calibration.json`` and the
   ``--from-manifest`` VirtualService) and server-side applied, after the
   previous run's Jobs are deleted (a Job's pods cannot be changed).
3. The master's pod (:mod:`loadtest.incluster`) is awaited, then followed
   through a port-forward to its results port: its progress feeds the
   progress bar; Ctrl-C asks it to stop (Locust keeps every record).
4. When Locust has finished, the run directory is fetched, checked
   (:func:`~loadtest.incluster.fetch_run`: nothing lost, nothing counted
   twice, as ``read_run`` checks) and kept under ``reports/`` as any run;
   then the master is told it may go, and the Jobs are deleted (``--keep``
   leaves them).

The load goes to the ingress gateway by its in-cluster name
(:data:`IN_CLUSTER_INGRESS`) unless ``--host`` names another; the master
reads the mesh with the load generator's ServiceAccount (the Role of
``manifests/loadgen/rbac.yaml``: list, in the namespace, what
:data:`mesh.kube_query.READS` lists); the run's cross-check against Istio's
Prometheus is ``verify-split``'s, afterwards, from here.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from canary.conventions import ExitCode
from canary.errors import CanaryError, MeshError, UsageError
from canary.files import write_atomic
from canary.interrupts import terminate_as_interrupt
from canary.rundir.document import parse_run_document
from canary.rundir.layout import RunDir, default_run_dir
from canary.rundir.records import failure_counts, read_records
from loadtest.calibration import calibrate_serving, check_payloads, load_calibration
from loadtest.incluster import fetch_run, results_progress, results_status, results_stop
from loadtest.incluster_args import RunSettings, checked_settings
from loadtest.load import LoadRequest, LoadResult, parse_run_time
from loadtest.loadgen_manifests import MASTER, RUN_ID_KEY, WORKERS, read_templates, render
from loadtest.options import kube_target, option_argv
from mesh.api import (
    KubeTarget,
    kube_apply_documents,
    kube_delete,
    kube_pods,
    kube_port_forward,
    reachable_servers,
    resolved_context,
    snapshot,
)
from payloads import load_payloads

__all__ = ["IN_CLUSTER_INGRESS", "RESULTS_PORT", "InClusterLoad", "KubeLoadgen", "LoadgenCluster", "run_in_cluster"]

IN_CLUSTER_INGRESS = "http://istio-ingressgateway.istio-system.svc.cluster.local"
RESULTS_PORT = 8089
STARTUP_MARGIN_S = 1800.0  # pulling the image, waiting for the workers, stopping
ProgressCallback = Callable[[dict[str, Any]], None]


class LoadgenCluster(Protocol):
    """What the run asks of the cluster (:class:`KubeLoadgen`; tests give a fake)."""

    def replace(self, documents: list[dict[str, Any]]) -> None: ...
    def master_pod(self, run_id: str, timeout_s: float) -> str: ...
    def forward(self, pod: str, port: int) -> AbstractContextManager[str]: ...
    def remove(self) -> None: ...


@dataclass(frozen=True)
class KubeLoadgen:
    """The load generator on the cluster of ``target``."""

    target: KubeTarget
    poll_s: float = 2.0

    def replace(self, documents: list[dict[str, Any]]) -> None:
        self.remove()
        kube_apply_documents(documents, "manifests/loadgen (rendered for the run)", context=self.target.context)

    def master_pod(self, run_id: str, timeout_s: float) -> str:
        deadline, seen = time.monotonic() + timeout_s, "no pod yet"
        while time.monotonic() < deadline:
            for pod in kube_pods(self.target, {"role": "master", RUN_ID_KEY: run_id}):
                status = pod.get("status") or {}
                if status.get("phase") in ("Failed", "Succeeded"):  # backoffLimit 0: no other pod comes
                    raise MeshError(f"the load generator's master ended before its run could be followed "
                                    f"({_waiting(pod)}); see `kubectl -n {self.target.namespace} logs job/{MASTER}`")
                if status.get("phase") == "Running" and _ready(pod):
                    return str(pod["metadata"]["name"])
                seen = _waiting(pod)
            time.sleep(self.poll_s)
        raise MeshError(f"the load generator's master did not start within {timeout_s:.0f}s ({seen}); see "
                        f"`kubectl -n {self.target.namespace} describe job {MASTER}`")

    def forward(self, pod: str, port: int) -> AbstractContextManager[str]:
        return kube_port_forward(self.target, pod, port)

    def remove(self) -> None:
        for name in (WORKERS, MASTER):
            kube_delete(self.target, "batch/v1", "Job", name)


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or ()
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _waiting(pod: dict[str, Any]) -> str:
    """Why a pod is not running (yet), as ``kubectl get pod`` says it (ErrImagePull, Error ...)."""
    status = pod.get("status") or {}
    for container in status.get("containerStatuses") or ():
        state = container.get("state") or {}
        why = state.get("waiting") or state.get("terminated") or {}
        if why.get("reason"):
            code = f" (exit code {why['exitCode']})" if "exitCode" in why else ""
            return f"{pod['metadata']['name']}: {why['reason']}{code}: {why.get('message', '')}".strip(": ")
    return f"{pod['metadata']['name']}: {status.get('phase', 'Pending')}"


@dataclass(frozen=True)
class InClusterLoad:
    load: LoadRequest  # its options have --kube; users, spawn rate, run time as for `canary load`
    workers: int = 1
    image: str = "canary-loadgen:latest"
    start_timeout_s: float = 300.0
    keep: bool = False


def _calibration_text(request: InClusterLoad, kube: KubeTarget) -> str:
    """The run's calibration: the given file, or made now through port-forwards to the pods."""
    options = request.load.options
    payloads = load_payloads(options.payloads, size=options.payload_size)
    if options.calibration is not None:
        calibration = load_calibration(options.calibration)
        check_payloads(calibration, payloads)
    else:
        with reachable_servers(snapshot(kube=kube), allow_missing=True) as endpoints:
            calibration, _ = calibrate_serving(endpoints, payloads.items, options.protocol)  # type: ignore[arg-type]
    return calibration.to_json().decode()


def _check(request: InClusterLoad) -> None:
    """What cannot travel to the cluster, refused before anything is done."""
    load, options = request.load, request.load.options
    if request.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {request.workers}")
    if options.payloads is not None:
        raise UsageError("--payloads is not shipped to the cluster; the image's bundled payloads are used (leave it out)")
    if load.processes:
        raise UsageError("--processes goes with a load run here; in the cluster give --workers N (worker pods)")
    if options.prometheus:
        raise UsageError("--prometheus names a Prometheus reachable from here, not from the cluster's pods; leave it "
                         "out (verify-split cross-checks the run against the cluster's Prometheus afterwards)")


def _settings(request: InClusterLoad, run_id: str) -> dict[str, Any]:
    """settings.json: Locust's arguments for the master (no local path, no context: the pods
    read the mesh with their own ServiceAccount)."""
    load, options = request.load, request.load.options
    shipped = options.model_copy(update={"run_dir": None, "calibration": None, "from_manifest": None,
                                         "context": None, "prometheus": None})
    args = ["--headless", "--host", load.host or IN_CLUSTER_INGRESS, "-u", str(load.users),
            "-r", f"{load.spawn_rate if load.spawn_rate is not None else load.users:g}", *option_argv(shipped)]
    if load.effective_run_time:
        args += ["-t", load.effective_run_time]
    return {"run_id": run_id, "locust_args": [*args, *load.extra], "workers": request.workers}


def run_in_cluster(request: InClusterLoad, *, cluster: LoadgenCluster | None = None,
                   progress: ProgressCallback | None = None, warn: Callable[[str], None] | None = None,
                   poll_s: float = 1.0, grace_s: float = 60.0) -> LoadResult:
    """Run the load test in the cluster and bring its run directory home (see the module docstring).

    The Jobs are deleted once the run is home (or when the run never started); when following
    or fetching fails after Locust started, they are kept, and the error says how to fetch the
    run by hand."""
    load = request.load
    load.validate()
    _check(request)
    kube = kube_target(load.options, ingress=load.host or IN_CLUSTER_INGRESS)
    if kube is None:
        raise UsageError("--in-cluster goes with --kube (the cluster to run the load generator in)")
    run = RunDir(load.options.run_dir or default_run_dir())
    if run.run_json.exists():
        raise UsageError(f"{run.root} already holds a run; give a new --run-dir or leave it out")
    settings = checked_settings(_settings(request, run.root.name), "the run's settings")  # before any cluster call
    files = {"settings.json": settings.model_dump_json(),
             "calibration.json": _calibration_text(request, kube)}
    if load.options.from_manifest is not None:
        files["from-manifest.yaml"] = Path(load.options.from_manifest).read_text(encoding="utf-8")
    cluster = cluster or KubeLoadgen(kube)
    run_id = run.root.name.lower()
    documents = _long_enough(render(read_templates(), run_id=run_id, image=request.image, workers=request.workers,
                                    namespace=kube.namespace, files=files), load)
    started = False
    try:
        cluster.replace(documents)
        pod = cluster.master_pod(run_id, request.start_timeout_s)
        started = True
        with cluster.forward(pod, RESULTS_PORT) as address, terminate_as_interrupt():
            base = f"http://{address}"
            exit_code = _follow(base, progress, poll_s, grace_s)
            fetch_run(base, run.root)
    except BaseException as error:
        kept = (f"the load generator's Jobs are kept with the run: fetch it with `kubectl -n {kube.namespace} "
                f"port-forward job/{MASTER} 8089` and `curl -o run.tar http://127.0.0.1:8089/run.tar`, then "
                "`curl -X POST http://127.0.0.1:8089/done`")
        if not started:
            cluster.remove()  # nothing ran, or nothing that a run keeps
        elif isinstance(error, CanaryError):
            raise MeshError(f"{error}; {kept}") from error
        elif warn is not None:  # a second Ctrl-C gave up waiting: the master still holds the run
            warn(kept)
        raise
    if not request.keep:
        cluster.remove()
    _record_context(run, kube)
    document = parse_run_document(json.loads(run.run_json.read_bytes()))
    failures = tuple(failure_counts(read_records(run.root)))
    return LoadResult(exit_code, run.root, run.locust_log, document, failures)


def _long_enough(documents: list[dict[str, Any]], load: LoadRequest) -> list[dict[str, Any]]:
    """The Jobs' ``activeDeadlineSeconds`` raised to cover the run time, the workers' wait and the
    hour the master keeps its run (a Job past its deadline is killed, its records with it)."""
    if not load.effective_run_time:
        return documents
    needed = parse_run_time(load.effective_run_time) + int(STARTUP_MARGIN_S) + int(RunSettings.model_fields["keep_s"].default)
    for document in documents:
        spec = document.get("spec") or {}
        if document.get("kind") == "Job" and int(spec.get("activeDeadlineSeconds") or 0) < needed:
            spec["activeDeadlineSeconds"] = needed
    return documents


def _record_context(run: RunDir, kube: KubeTarget) -> None:
    """run.json's ``mesh.context``: the context this command reached the cluster by (the master
    read it as its ServiceAccount, with no context), so verify-split asks the same cluster."""
    document = json.loads(run.run_json.read_bytes())
    mesh = document.get("mesh") or {}
    if mesh.get("backend") == "kube":
        mesh["context"] = resolved_context(kube)
        write_atomic(run.run_json, json.dumps(document, indent=2).encode())


def _follow(base: str, progress: ProgressCallback | None, poll_s: float, grace_s: float) -> int:
    """Poll the master until Locust has finished. The results server may not listen yet, and a
    port-forward may drop a request: both are retried for ``grace_s``. Ctrl-C asks the master to
    stop, and the wait goes on (bounded by the master's own stop wait) so no record is lost."""
    stopping, failing_since = False, None
    while True:
        try:
            status = results_status(base)
            failing_since = None
            if status.get("state") == "finished":
                code = status.get("exit_code")
                return int(code) if isinstance(code, int) else int(ExitCode.FAILED)
            if progress is not None:
                progress(results_progress(base))
            time.sleep(poll_s)
        except CanaryError:
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > grace_s:
                raise
            time.sleep(poll_s)
        except KeyboardInterrupt:
            if stopping:
                raise
            stopping = True
            with contextlib.suppress(CanaryError):  # 409: it had finished already
                results_stop(base)
