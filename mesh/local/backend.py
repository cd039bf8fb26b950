"""The local mesh: the manifests running on one machine, on loopback only.

Each Deployment replica is a model server process started from the
container's own args and env; the Gateway, VirtualServices and
DestinationRules become the configuration of one real Envoy, pushed by
file-based xDS. Applying manifests works like ``kubectl apply``: changed
Deployments get new pods that must be ready before Envoy moves traffic to
them (old pods stop afterwards), routing objects only reload Envoy, and a
manifest that fails validation changes nothing.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from canary.conventions import CANARY_HOME_ENV, utc_now
from canary.errors import MeshError, ProcessExitedError
from canary.interrupts import held_interrupts, terminate_as_interrupt
from mesh.counters import (
    SinceChange,
    SubsetCounters,
    counter_marks,
    counts_since,
    shares,
    subset_counters,
)
from mesh.local import procs
from mesh.local.envoy import EnvoyAdmin, XdsFiles, bootstrap_config, envoy_binary
from mesh.local.state import (
    AppliedFile,
    AppliedVersion,
    MeshHome,
    MeshState,
    PodState,
    StoredObject,
    interrupted_push,
    last_routing_change,
    routing_digest,
    routing_documents,
    sha256_file,
)
from mesh.manifests import apply as apply_objects
from mesh.manifests import load_manifests, manifest_files, parse_objects, validate_set
from mesh.model import Gateway, MeshObject
from mesh.pods import PodPlan, listening_ports, plan_pods
from mesh.query import MeshView
from mesh.translate import ClusterKey, EnvoyResources, IngressSettings, PodEndpoint, translate

__all__ = ["ApplyResult", "LocalMesh", "MeshStatus", "Progress", "no_progress"]

Progress = Callable[[str], None]
RESTARTS = 2  # early exits tolerated per pod start (a port taken between choosing and binding it)


def no_progress(_: str) -> None:
    pass


@dataclass(frozen=True)
class ApplyResult:
    version: int
    files: list[AppliedFile]
    started: list[str]  # pods
    stopped: list[str]
    unchanged: bool


@dataclass(frozen=True)
class MeshStatus:
    state: MeshState
    envoy_running: bool
    pods_running: dict[str, bool]
    counters: dict[str, SubsetCounters]
    view: MeshView  # the objects and the pods that run, for the mesh's queries
    since_change: SinceChange | None = None  # None: Envoy down, or no counts kept at the change

    def subset_counts(self) -> dict[str, dict[str, Any]]:
        """Per subset ("": no subset): Envoy's counters and their share of all requests, and
        ``since_change``: the requests since the last routing change and their share."""
        total_share = shares({k: c.requests for k, c in self.counters.items()})
        since = self.since_change
        since_share = shares({k: since.requests(k) for k in self.counters}) if since else {}
        rows: dict[str, dict[str, Any]] = {}
        for subset, counters in self.counters.items():
            rows[subset] = {**counters.to_dict(), "share": total_share[subset], "since_change": None}
            if since is not None:
                by_class = {k: n for k, n in sorted(since.counts.get(subset, {}).items()) if k != "total"}
                rows[subset]["since_change"] = {
                    "requests": since.requests(subset), "share": since_share[subset], "by_class": by_class,
                }
        return rows

    def to_dict(self) -> dict[str, Any]:
        """``canary mesh status --json``."""
        st = self.state
        return {
            "ingress_url": st.ingress_url,
            "admin_port": st.admin_port,
            "envoy": {"pid": st.envoy_pid, "running": self.envoy_running},
            "version": st.version,
            "store": st.store,
            "objects": sorted({str(obj.ref) for obj in self.view.objects}),
            "pods": [
                {
                    "namespace": p.namespace,
                    "name": p.name,
                    "deployment": p.deployment,
                    "labels": p.labels,
                    "pid": p.pid,
                    "ports": {str(k): v for k, v in p.ports.items()},
                    "running": self.pods_running.get(p.name, False),
                }
                for p in st.pods
            ],
            "counters": {k or "(no subset)": v for k, v in self.subset_counts().items()},
            "routing_change": None if self.since_change is None else {
                "version": self.since_change.version, "applied_at": self.since_change.applied_at,
            },
        }


def _pod_endpoints(pods: Sequence[PodState], running: dict[str, bool] | None = None) -> list[PodEndpoint]:
    """The pods as the mesh's endpoints (ready unless ``running`` says the process exited)."""
    return [
        PodEndpoint(namespace=p.namespace, name=p.name, labels=p.labels, address="127.0.0.1",
                    ports=p.ports, port_names=p.port_names,
                    ready=True if running is None else running.get(p.name, False))
        for p in pods
    ]


class LocalMesh:
    """Brings the local mesh up, applies manifests to it, reports on it and takes it down."""

    def __init__(self, home: MeshHome | None = None, progress: Progress = no_progress) -> None:
        self.home = home or MeshHome()
        self.xds = XdsFiles(self.home.xds_dir)
        self.progress = progress

    # --- lifecycle ---------------------------------------------------------------

    def up(self, manifests: Sequence[Path], *, store: Path, tiny: bool, port: int = 8080) -> MeshState:
        """Start Envoy, apply ``manifests`` and return once every pod is ready."""
        with self.home.locked(), terminate_as_interrupt():
            self.check_can_start(port)
            if self.home.exists():
                self._stop_all(self.home.load())  # what a mesh that died left behind
            objects = load_manifests(list(manifests))  # validate before starting anything
            validate_set(objects)
            state = MeshState(
                ingress_address="127.0.0.1",
                ingress_ports=self._ingress_ports(objects, port),
                admin_port=procs.free_port(),
                store=str(store),
                tiny=tiny,
            )
            try:
                self._start_envoy(state)
                self.home.save(state)
                self._apply_locked(state, manifests)
            except BaseException:
                self._stop_all(state)
                self.home.state_file.unlink(missing_ok=True)
                raise
            return state

    def check_can_start(self, port: int) -> None:
        """Raise :class:`MeshError` when a mesh already runs on this home or ``port`` is taken.
        Cheap and changes nothing: ``mesh up`` asks before exporting models, and again under the lock."""
        if self.home.exists():
            state = self.home.load()
            if procs.is_running(state.envoy_pid, state.envoy_marker):
                raise MeshError(
                    f"a local mesh is already running at {state.ingress_url} (state in {self.home.root}); "
                    "change it with `canary mesh apply`, stop it with `canary mesh down`, "
                    f"or set {CANARY_HOME_ENV} to another folder for a second mesh"
                )
        if procs.probe_tcp(port):
            raise MeshError(f"port {port} on 127.0.0.1 is in use; pick another with --port")

    def apply(self, manifests: Sequence[Path]) -> ApplyResult:
        with self.home.locked(), terminate_as_interrupt():
            state = self.home.load()
            if not procs.is_running(state.envoy_pid, state.envoy_marker):
                raise MeshError("the local mesh's Envoy is not running; run `canary mesh down` then `canary mesh up`")
            self._recover(state)
            return self._apply_locked(state, manifests)

    def status(self) -> MeshStatus:
        state = self.home.load()
        objects = self._objects(state)  # parsed once for the counters and the view
        envoy_up = procs.is_running(state.envoy_pid, state.envoy_marker)
        counters: dict[str, SubsetCounters] = {}
        since: SinceChange | None = None
        if envoy_up:
            counters = self._counters(state, self._translate(state, objects).cluster_index)
            change = last_routing_change(state.history)
            if change is not None and change.applied_at and change.counters is not None:
                since = SinceChange(change.version, change.applied_at, counts_since(counters, change.counters))
        running = {p.name: procs.is_running(p.pid, p.marker) for p in state.pods}
        return MeshStatus(
            state=state,
            envoy_running=envoy_up,
            pods_running=running,
            counters=counters,
            view=MeshView(tuple(objects), tuple(_pod_endpoints(state.pods, running))),
            since_change=since,
        )

    @staticmethod
    def _counters(state: MeshState, cluster_index: Mapping[str, ClusterKey]) -> dict[str, SubsetCounters]:
        """Envoy's own request counters per DestinationRule subset (as istio_requests_total)."""
        return subset_counters(EnvoyAdmin(state.admin_port).stats_prometheus(), cluster_index)

    def _counters_at_ack(self, state: MeshState, resources: EnvoyResources) -> dict[str, dict[str, int]] | None:
        """The counts a version keeps from its acknowledgement (None when Envoy's admin does not answer:
        the push took, only the counts since it are unknown)."""
        try:
            return counter_marks(self._counters(state, resources.cluster_index))
        except MeshError:
            return None

    def down(self) -> list[str]:
        """Stop every process the mesh started; returns what was stopped."""
        with self.home.locked():
            if not self.home.exists():
                return []
            state = self.home.load()
            stopped = self._stop_all(state)
            self.home.state_file.unlink(missing_ok=True)
            return stopped

    # --- apply -------------------------------------------------------------------

    def _apply_locked(self, state: MeshState, manifests: Sequence[Path]) -> ApplyResult:
        """Validate, start the new pods, switch Envoy over, stop the old pods. Interrupted
        (Ctrl-C, SIGTERM) or failing at any point, the configuration before it stays or goes
        back live, and the state says which version Envoy has."""
        files = manifest_files(manifests)
        new_objects = load_manifests(files)
        merged = apply_objects(self._objects(state), new_objects)
        validate_set(merged)
        plans = plan_pods(merged)  # raises before anything starts
        applied = [
            AppliedFile(
                path=str(f),
                sha256=sha256_file(f),
                objects=[str(o.ref) for o in new_objects if o.source == str(f)],
            )
            for f in files
        ]

        current = {p.name: p for p in state.pods if procs.is_running(p.pid, p.marker)}
        keep = [current[p.name] for p in plans if p.name in current]
        to_start = [p for p in plans if p.name not in current]
        to_stop = [p for p in state.pods if p.name not in {k.name for k in keep}]

        started = self._start_pods(state, to_start)
        try:
            pods = sorted(keep + started, key=lambda p: (p.namespace, p.name))
            stored = [StoredObject(source=o.source, document=dict(o.raw)) for o in merged]
            resources = self._translate(state, merged, pods)  # before the switch-over: still interruptible
            previous = (state.objects, state.pods)
            with held_interrupts() as received:
                try:
                    self._switch(state, resources, stored, pods, [a.path for a in applied])
                except BaseException as error:
                    self._restore_after(error, state, *previous)
                    raise
                if received:  # all or nothing: the configuration before this apply goes back
                    self._restore(state, *previous)
                else:
                    state.applied.extend(applied)
                    self.home.save(state)
            if received:
                raise KeyboardInterrupt
        except BaseException:
            procs.stop((p.pid, p.marker) for p in started)
            raise
        procs.stop((p.pid, p.marker) for p in to_stop)
        return ApplyResult(
            version=state.version,
            files=applied,
            started=[p.name for p in started],
            stopped=[p.name for p in to_stop],
            unchanged=not started and not to_stop,
        )

    def _switch(
        self,
        state: MeshState,
        resources: EnvoyResources,
        objects: list[StoredObject],
        pods: Sequence[PodState],
        files: list[str],
        *,
        restored: bool = False,
    ) -> None:
        """Push ``resources`` as the next version and make the state say so: saved as pending
        before the first xDS file is written (readers learn of the change early), then as
        acknowledged with ``objects`` and ``pods`` live, or as failed."""
        state.version += 1
        routing = routing_documents(objects)
        entry = AppliedVersion(
            state.version, utc_now(), None, files, routing, routing_digest(routing), restored=restored
        )
        state.history.append(entry)
        self.home.save(state)
        try:
            self._push(state, resources)
        except BaseException:
            entry.failed = True
            self.home.save(state)
            raise
        entry.applied_at = utc_now()
        entry.counters = self._counters_at_ack(state, resources)
        state.objects, state.pods = objects, list(pods)
        self.home.save(state)

    def _restore(self, state: MeshState, objects: list[StoredObject], pods: Sequence[PodState]) -> None:
        """Push the configuration of ``objects`` and ``pods`` again, as a new version."""
        self.progress("putting the configuration before it back")
        resources = self._translate(state, parse_objects((o.source, o.document) for o in objects), pods)
        self._switch(state, resources, objects, pods, [], restored=True)

    def _restore_after(
        self, error: BaseException, state: MeshState, objects: list[StoredObject], pods: Sequence[PodState]
    ) -> None:
        """:meth:`_restore` after a failed push; when that fails too, one error says both."""
        try:
            self._restore(state, objects, pods)
        except Exception as second:
            raise MeshError(
                f"{error}; putting the configuration before it back failed too ({second}): "
                "run `canary mesh down`, then `canary mesh up`"
            ) from error

    def _recover(self, state: MeshState) -> None:
        """A command killed in the middle of a push left Envoy somewhere between two versions:
        push the stored (last acknowledged) configuration again before anything else."""
        pending = interrupted_push(state.history)
        if pending is None:
            return
        self.progress(f"version {pending.version}'s push was interrupted; restoring the configuration before it")
        pending.failed = True
        self.home.save(state)
        self._restore(state, state.objects, state.pods)

    def _objects(self, state: MeshState) -> list[MeshObject]:
        return parse_objects((o.source, o.document) for o in state.objects)

    @staticmethod
    def _ingress_ports(objects: Sequence[MeshObject], port: int) -> dict[int, int]:
        gateway_ports = sorted({s.port for o in objects if isinstance(o, Gateway) for s in o.servers})
        ports = {80: port}
        for gw_port in gateway_ports:
            if gw_port not in ports:
                ports[gw_port] = procs.free_port()
        return ports

    def _translate(
        self, state: MeshState, objects: Sequence[MeshObject], pods: Sequence[PodState] | None = None
    ) -> EnvoyResources:
        endpoints = _pod_endpoints(state.pods if pods is None else pods)
        ingress = IngressSettings(address=state.ingress_address, ports=state.ingress_ports)
        return translate(objects, endpoints, ingress, self.xds)

    # --- Envoy -------------------------------------------------------------------

    def _start_envoy(self, state: MeshState) -> None:
        """Start Envoy with an empty configuration; its admin port is retried if taken meanwhile."""
        self.home.xds_dir.mkdir(parents=True, exist_ok=True)
        self.home.logs.mkdir(parents=True, exist_ok=True)
        self.xds.write(self.xds.lds, "0", [])
        self.xds.write(self.xds.cds, "0", [])
        log = self.home.logs / "envoy.log"
        argv = [str(envoy_binary()), "-c", str(self.home.bootstrap), "--disable-hot-restart",
                "--concurrency", "2", "--log-level", "warn"]
        self.progress("starting Envoy (ingress gateway)")
        for attempt in range(RESTARTS + 1):
            self.home.bootstrap.write_bytes(
                orjson.dumps(bootstrap_config(state.admin_port, self.xds), option=orjson.OPT_INDENT_2)
            )
            state.envoy_pid = procs.spawn(argv, {}, log)
            state.envoy_marker = str(self.home.bootstrap)
            admin = EnvoyAdmin(state.admin_port)
            try:
                procs.wait_until(
                    functools.partial(admin.is_ready, str(self.home.bootstrap)),
                    lambda: procs.is_running(state.envoy_pid, state.envoy_marker),
                    timeout=30,
                    what="Envoy",
                    log=log,
                )
                return
            except ProcessExitedError:
                procs.stop([(state.envoy_pid, state.envoy_marker)])
                if attempt == RESTARTS:
                    raise
                state.admin_port = procs.free_port()

    def _push(self, state: MeshState, res: EnvoyResources) -> None:
        """Make-before-break: new endpoints and clusters first, then routes and listeners."""
        admin = EnvoyAdmin(state.admin_port)
        version = str(state.version)
        log = self.home.logs / "envoy.log"
        before = {p: s[1] for p, s in admin.subscription_states().items()}
        old_clusters = orjson.loads(self.xds.cds.read_bytes())["resources"] if self.xds.cds.exists() else []
        new_names = {c["name"] for c in res.clusters}
        union = res.clusters + [c for c in old_clusters if c["name"] not in new_names]
        cluster_stats = [f"cluster.{c.get('alt_stat_name', c['name'])}" for c in res.clusters]
        files = [self.xds.lds, self.xds.cds]

        files += self.xds.write_endpoints(res, version)
        self.xds.write(self.xds.cds, version, union)
        admin.wait_for_version(version, ["cluster_manager.cds", *cluster_stats], before, 30, log)
        files += self.xds.write_routes(res, version)
        self.xds.write(self.xds.lds, version, res.listeners)
        rds = [f".rds.{rc['name']}" for rc in res.route_configurations]
        admin.wait_for_version(version, ["listener_manager.lds", *rds], before, 30, log)
        if len(union) != len(res.clusters):
            self.xds.write(self.xds.cds, version + "-final", res.clusters)
            admin.wait_for_version(version + "-final", ["cluster_manager.cds"], before, 30, log)
        self.xds.remove_stale(files)

    # --- pods --------------------------------------------------------------------

    def _start_pods(self, state: MeshState, plans: Sequence[PodPlan]) -> list[PodState]:
        """Start every pod at once, then wait for each; a pod that exits early is restarted
        (as the kubelet would) on fresh ports, at most ``RESTARTS`` times."""
        started: list[PodState] = []
        try:
            for plan in plans:
                self.progress(f"starting pod {plan.namespace}/{plan.name}")
                started.append(self._spawn_pod(state, plan))
            for index, plan in enumerate(plans):
                for attempt in range(RESTARTS + 1):
                    try:
                        self._wait_ready(started[index], plan)
                        break
                    except ProcessExitedError:
                        if attempt == RESTARTS:
                            raise
                        self.progress(f"pod {plan.namespace}/{plan.name} exited early; restarting it")
                        procs.stop([(started[index].pid, started[index].marker)])
                        started[index] = self._spawn_pod(state, plan)
                self.progress(f"pod {plan.namespace}/{plan.name} is ready")
        except BaseException:
            procs.stop((p.pid, p.marker) for p in started)
            raise
        return started

    def _volume_map(self, state: MeshState, plan: PodPlan) -> dict[str, str]:
        mapping: dict[str, str] = {}
        for mount_path, volume in plan.mounts.items():
            if volume.kind == "persistentVolumeClaim":
                mapping[mount_path] = state.store
            elif volume.kind == "hostPath":
                mapping[mount_path] = volume.reference
            elif volume.kind == "emptyDir":
                local = self.home.pod_dir(plan.name) / volume.name
                local.mkdir(parents=True, exist_ok=True)
                mapping[mount_path] = str(local)
            else:
                raise MeshError(
                    f"Deployment {plan.namespace}/{plan.deployment}: the local mesh cannot mount a "
                    f"{volume.kind} volume ({volume.name}); use a persistentVolumeClaim for the model store"
                )
        return mapping

    def _spawn_pod(self, state: MeshState, plan: PodPlan) -> PodState:
        grpc_port, rest_port = listening_ports(plan.server_args)
        host_ports = {p: procs.free_port() for p in (grpc_port, rest_port) if p}
        port_flags = [f"--port={host_ports[grpc_port]}"]
        port_flags.append(f"--rest_api_port={host_ports[rest_port]}" if rest_port else "--rest_api_port=0")
        marker = f"{self.home.root}#{plan.namespace}/{plan.name}"
        env = {
            **os.environ,
            **plan.env,
            "CANARY_VOLUME_MAP": orjson.dumps(self._volume_map(state, plan)).decode(),
            "CANARY_POD": marker,
            "PYTHONUNBUFFERED": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        log = self.home.logs / f"{plan.namespace}_{plan.name}.log"
        argv = [sys.executable, "-m", "serving.server", *plan.server_args, *port_flags]
        pid = procs.spawn(argv, env, log)
        port_names = {name: port for name, port in plan.container_ports.items() if not name.isdigit()}
        return PodState(
            namespace=plan.namespace,
            name=plan.name,
            deployment=plan.deployment,
            labels=plan.labels,
            template_hash=plan.template_hash,
            pid=pid,
            marker=marker,
            ports=host_ports,
            port_names=port_names,
            log=str(log),
        )

    def _wait_ready(self, pod: PodState, plan: PodPlan) -> None:
        """The readiness probe as the kubelet runs it; without one, every declared port must accept."""
        probe = plan.readiness_probe

        def host_port(port: int | str) -> int:
            container_port = plan.container_ports.get(str(port)) if isinstance(port, str) else port
            if container_port is None or container_port not in pod.ports:
                raise MeshError(
                    f"{plan.namespace}/{plan.deployment}: the readiness probe's port {port} is not a "
                    "port the model server listens on (--port / --rest_api_port)"
                )
            return pod.ports[container_port]

        if probe is None:
            ports = list(pod.ports.values())

            def ready() -> bool:
                return all(procs.probe_tcp(p) for p in ports)

            timeout = 300.0
        else:
            target = host_port(probe.port)
            if probe.kind == "httpGet":
                path = probe.path

                def ready() -> bool:
                    return procs.probe_http(target, path)
            else:  # tcpSocket, and grpc probes checked as a connection like tcpSocket

                def ready() -> bool:
                    return procs.probe_tcp(target)

            timeout = probe.initial_delay_seconds + probe.period_seconds * probe.failure_threshold
        procs.wait_until(
            ready,
            lambda: procs.is_running(pod.pid, pod.marker),
            timeout=max(timeout, 5.0),
            what=f"model server pod {plan.namespace}/{plan.name}",
            log=Path(pod.log),
        )

    def _stop_all(self, state: MeshState) -> list[str]:
        running = [p for p in state.pods if procs.is_running(p.pid, p.marker)]
        targets = [(p.pid, p.marker) for p in running]
        names = [f"pod {p.namespace}/{p.name} (pid {p.pid})" for p in running]
        if state.envoy_pid and procs.is_running(state.envoy_pid, state.envoy_marker):
            targets.append((state.envoy_pid, state.envoy_marker))
            names.append(f"envoy (pid {state.envoy_pid})")
        procs.stop(targets)
        return names
