"""The local mesh: the manifests running on one machine, on loopback only.

Each Deployment replica is a pod: its kubelet (:mod:`mesh.local.kubelet`)
keeps a model server running from the container's own args, in the
container's environment, and restarts it when it dies. The Gateway,
VirtualServices and DestinationRules become the configuration of one real
Envoy (admin on a private Unix socket), pushed by file-based xDS, which
health-checks every pod. Applying manifests works like ``kubectl apply``:
changed Deployments get new pods that must be ready before Envoy moves
traffic to them (old pods stop afterwards), routing objects only reload
Envoy, and a manifest that fails validation changes nothing. An apply is all
or nothing: interrupted or failing, the configuration before it stays or
goes back live, and the state says which version Envoy has.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import orjson

from canary.conventions import CANARY_HOME_ENV, utc_now
from canary.errors import MeshError, ProcessExitedError
from canary.interrupts import held_interrupts, terminate_as_interrupt
from mesh.counters import (
    SinceChange,
    SubsetCounters,
    counter_marks,
    counts_since,
    subset_counters,
)
from mesh.local import pod_processes, procs
from mesh.local.envoy import (
    EnvoyAdmin,
    XdsFiles,
    admin_socket_path,
    bootstrap_config,
    envoy_binary,
    private_admin_dir,
)
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
from mesh.local.status import ApplyResult, MeshStatus
from mesh.manifests import apply as apply_objects
from mesh.manifests import load_manifests, manifest_files, parse_objects, validate_set
from mesh.model import Gateway, MeshObject
from mesh.pods import PodPlan, plan_pods
from mesh.query import MeshView
from mesh.translate import ClusterKey, EnvoyResources, IngressSettings, PodEndpoint, translate

__all__ = ["ApplyResult", "LocalMesh", "MeshStatus", "Progress", "no_progress"]

Progress = Callable[[str], None]
RESTARTS = 2  # early exits tolerated per pod start (a port taken between choosing and binding it)


def no_progress(_: str) -> None:
    pass


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
            plan_pods(objects, store=store)  # every pod's refusals before Envoy starts
            state = MeshState(
                ingress_address="127.0.0.1",
                ingress_ports=self._ingress_ports(objects, port),
                admin_socket=str(admin_socket_path(self.home.root)),
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
        Cheap and changes nothing: ``mesh up`` asks before exporting models, and again under the lock.
        A home whose path is too long for Envoy's admin socket is refused here too."""
        admin_socket_path(self.home.root)
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
        containers = {p.name: c for p in state.pods
                      if procs.is_running(p.pid, p.marker) and (c := pod_processes.container_status(p))}
        running = {p.name: pod_processes.serving(p, containers.get(p.name)) for p in state.pods}
        return MeshStatus(
            state=state,
            envoy_running=envoy_up,
            pods_running=running,
            containers=containers,
            counters=counters,
            view=MeshView(tuple(objects), tuple(_pod_endpoints(state.pods, running))),
            since_change=since,
            interrupted_push=pending.version if (pending := interrupted_push(state.history))
            and not self.home.busy() else None,
        )

    @staticmethod
    def _counters(state: MeshState, cluster_index: Mapping[str, ClusterKey]) -> dict[str, SubsetCounters]:
        """Envoy's own request counters per DestinationRule subset (as istio_requests_total), with
        the histograms merged, so the counts of timed requests are whole (see ``mesh.counters``)."""
        return subset_counters(LocalMesh._admin(state).stats_prometheus(merged=True), cluster_index)

    @staticmethod
    def _admin(state: MeshState) -> EnvoyAdmin:
        """The mesh's Envoy admin, on its private socket; a mesh an older canary started (admin on
        a TCP port every local user could reach) is refused with what to do."""
        if not state.admin_socket:
            raise MeshError(
                f"this mesh was started by an older canary, whose Envoy admin listens on TCP port "
                f"{state.admin_port} where any local user can stop it or reset its counters; "
                "run `canary mesh down`, then `canary mesh up`"
            )
        return EnvoyAdmin(state.admin_socket)

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
        plans = plan_pods(merged, store=Path(state.store))  # raises before anything starts
        applied = [
            AppliedFile(
                path=str(f),
                sha256=sha256_file(f),
                objects=[str(o.ref) for o in new_objects if o.source == str(f)],
            )
            for f in files
        ]

        current = {p.name: p for p in state.pods if procs.is_running(p.pid, p.marker)}
        dead = [p for p in state.pods if p.name not in current]  # their kubelet is gone
        # what a dead pod left behind goes first: its successor takes its name, marker and files
        procs.stop(pod_processes.stop_targets(dead))
        keep = [current[p.name] for p in plans if p.name in current]
        to_start = [p for p in plans if p.name not in current]
        to_stop = [p for p in current.values() if p.name not in {k.name for k in keep}]

        started: list[PodState] = []
        live = False  # True once the state says this apply's pods are live and must stay so
        try:
            started = self._start_pods(state, to_start)
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
                    try:
                        self._restore_after(MeshError("interrupted during the switch-over"), state, *previous)
                    except MeshError:
                        live = True  # the restore failed: this apply's configuration and pods stay
                        raise
                else:
                    state.applied.extend(applied)
                    self.home.save(state)
            if received:
                raise KeyboardInterrupt
        except BaseException:
            with held_interrupts():  # a second Ctrl-C must not leave pods half stopped and forgotten
                procs.stop(pod_processes.stop_targets([] if live else [*started, *state.starting]))
            raise
        finally:
            # made live, or stopped: no longer starting; but when a failed restore leaves this apply
            # live, the pods it replaced are no longer the state's: the next command stops them
            leftover = list(to_stop) if live else []
            if state.starting or leftover:
                state.starting = leftover
                self.home.save(state)
        with held_interrupts():  # the new configuration is live: the apply ends whole, old pods stopped
            procs.stop(pod_processes.stop_targets(to_stop))
        return ApplyResult(
            version=state.version,
            files=applied,
            started=[p.name for p in started],
            stopped=[p.name for p in [*dead, *to_stop]],
            unchanged=not started and not to_stop and not dead,
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
        if state.starting:
            self.progress(f"stopping {len(state.starting)} pod(s) an interrupted apply had started")
            procs.stop(pod_processes.stop_targets(state.starting))
            state.starting = []
            self.home.save(state)
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
        """Start Envoy with an empty configuration and its admin on a socket only this user may
        open (mode 0600, in a folder of mode 0700 inside the mesh's home, itself 0700)."""
        socket_path = Path(state.admin_socket)
        private_admin_dir(socket_path)
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
                orjson.dumps(bootstrap_config(socket_path, self.xds), option=orjson.OPT_INDENT_2)
            )
            state.envoy_pid = procs.spawn(argv, {}, log)
            state.envoy_marker = str(self.home.bootstrap)
            admin = EnvoyAdmin(socket_path)
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
                private_admin_dir(socket_path)  # the exited Envoy's socket

    def _push(self, state: MeshState, res: EnvoyResources) -> None:
        """Make-before-break: new endpoints and clusters first, then routes and listeners."""
        admin = self._admin(state)
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
                        pod_processes.wait_ready(started[index], plan)
                        break
                    except ProcessExitedError:
                        if attempt == RESTARTS:
                            raise
                        self.progress(f"pod {plan.namespace}/{plan.name} exited early; restarting it")
                        procs.stop(pod_processes.stop_targets([started[index]]))
                        started[index] = self._spawn_pod(state, plan)
                self.progress(f"pod {plan.namespace}/{plan.name} is ready")
        except BaseException:
            procs.stop(pod_processes.stop_targets(started))
            raise
        return started

    def _spawn_pod(self, state: MeshState, plan: PodPlan) -> PodState:
        """Start the pod's kubelet (``mesh.local.kubelet``), which runs the model server on fresh
        host ports, in the container's environment, and restarts it there when it exits."""
        pod = pod_processes.spawn_pod(self.home, plan, pod_processes.volume_map(self.home, state.store, plan))
        state.starting.append(pod)  # known before it is live, so no command can lose track of it
        self.home.save(state)
        return pod

    def _stop_all(self, state: MeshState) -> list[str]:
        """Stop every pod (kubelet and model server, even one whose kubelet was killed) and Envoy."""
        targets: list[tuple[int, str]] = []
        names: list[str] = []
        for pod in [*state.pods, *state.starting]:
            live = [t for t in pod_processes.stop_targets([pod]) if procs.is_running(*t)]
            if live:
                targets += live
                names.append(f"pod {pod.namespace}/{pod.name} (pid {live[0][0]})")
        if state.envoy_pid and procs.is_running(state.envoy_pid, state.envoy_marker):
            targets.append((state.envoy_pid, state.envoy_marker))
            names.append(f"envoy (pid {state.envoy_pid})")
        procs.stop(targets)
        return names
