"""The local mesh's pods as processes: each pod is its kubelet (:mod:`mesh.local.kubelet`)
and the model server that kubelet keeps running on the pod's fixed host ports.

A pod's ``pid`` and marker are its kubelet's: the pod lives as long as its
kubelet does, while the server's pid changes at each restart and is read
from the kubelet's status file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import orjson

from canary.errors import MeshError
from mesh.local import procs
from mesh.local.kubelet import (
    KubeletStatus,
    PodFiles,
    PodSpec,
    container_environment,
    kubelet_argv,
    read_status,
    server_argv,
)
from mesh.local.state import MeshHome, PodState
from mesh.pods import PodPlan, listening_ports

__all__ = [
    "container_status",
    "exited_since_start",
    "serving",
    "spawn_pod",
    "stop_targets",
    "volume_map",
    "wait_ready",
]


def spawn_pod(home: MeshHome, plan: PodPlan, volume_map: Mapping[str, str]) -> PodState:
    """Start ``plan``'s kubelet, which starts its model server on fresh host ports; returns at
    once (readiness is the caller's to wait for)."""
    grpc_port, rest_port = listening_ports(plan.server_args)
    host_ports = {p: procs.free_port() for p in (grpc_port, rest_port) if p}
    port_flags = [f"--port={host_ports[grpc_port]}"]
    port_flags.append(f"--rest_api_port={host_ports[rest_port]}" if rest_port else "--rest_api_port=0")
    marker = f"{home.root}#{plan.namespace}/{plan.name}"
    files = PodFiles(home.pod_dir(plan.name) / ".kubelet")  # volume names cannot start with a dot
    files.home.mkdir(parents=True, exist_ok=True)
    files.status.unlink(missing_ok=True)  # an earlier kubelet's, of a pod of the same name
    mesh_env = {
        "CANARY_VOLUME_MAP": orjson.dumps(dict(volume_map)).decode(),
        "CANARY_POD": marker,
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    PodSpec(
        argv=server_argv([*plan.server_args, *port_flags]),
        env=container_environment(plan.env, mesh_env, home=files.home),
        cwd=str(files.home),
        status=str(files.status),
    ).write(files.spec)
    log = home.logs / f"{plan.namespace}_{plan.name}.log"
    kubelet_env = container_environment({}, {"CANARY_POD": marker}, home=files.home)
    pid = procs.spawn(kubelet_argv(marker, files.spec), kubelet_env, log, cwd=files.home)
    return PodState(
        namespace=plan.namespace,
        name=plan.name,
        deployment=plan.deployment,
        labels=plan.labels,
        template_hash=plan.template_hash,
        pid=pid,
        marker=marker,
        ports=host_ports,
        port_names={name: port for name, port in plan.container_ports.items() if not name.isdigit()},
        log=str(log),
        status_file=str(files.status),
    )


def container_status(pod: PodState) -> KubeletStatus | None:
    """What ``pod``'s kubelet last wrote; None before it wrote, for a pod of an older state, or
    when the file is another kubelet's."""
    if not pod.status_file:
        return None
    status = read_status(Path(pod.status_file))
    return status if status is not None and status.kubelet_pid == pod.pid else None


def serving(pod: PodState, status: KubeletStatus | None = None) -> bool:
    """The pod's kubelet runs and its model server process too (not waiting to restart it)."""
    if not procs.is_running(pod.pid, pod.marker):
        return False
    if not pod.status_file:
        return True  # an older state's pod: its pid is the server
    status = status or container_status(pod)
    return (
        status is not None and status.state == "running" and procs.is_running(status.server_pid, pod.marker)
    )


def exited_since_start(pod: PodState) -> bool:
    """The pod's model server has exited at least once (or could not be started) since its
    kubelet started, or the kubelet itself is gone: what a start that must succeed refuses."""
    if not procs.is_running(pod.pid, pod.marker):
        return True
    status = container_status(pod)
    return status is not None and (status.last_exit is not None or status.state != "running")


def stop_targets(pods: Iterable[PodState]) -> list[tuple[int, str]]:
    """(pid, marker) to stop for each pod: its kubelet (which stops its server: both are in its
    process group), or, when the kubelet was killed, the model server it left (a pid only counts
    while it carries the pod's marker, so a recycled one is never signalled)."""
    targets: list[tuple[int, str]] = []
    for pod in pods:
        targets.append((pod.pid, pod.marker))
        if pod.status_file and not procs.is_running(pod.pid, pod.marker):
            status = read_status(Path(pod.status_file))
            if status is not None and status.server_pid:
                targets.append((status.server_pid, pod.marker))
    return targets


def volume_map(home: MeshHome, store: str, plan: PodPlan) -> dict[str, str]:
    """Each of the pod's mount paths → the host folder it is: the model store for a
    persistentVolumeClaim, the path of a hostPath (confined to the store at validation), a
    folder of the pod's own for an emptyDir."""
    mapping: dict[str, str] = {}
    for mount_path, volume in plan.mounts.items():
        if volume.kind == "persistentVolumeClaim":
            mapping[mount_path] = store
        elif volume.kind == "hostPath":
            mapping[mount_path] = volume.reference
        elif volume.kind == "emptyDir":
            local = home.pod_dir(plan.name) / volume.name
            local.mkdir(parents=True, exist_ok=True)
            mapping[mount_path] = str(local)
        else:
            raise MeshError(
                f"Deployment {plan.namespace}/{plan.deployment}: the local mesh cannot mount a "
                f"{volume.kind} volume ({volume.name}); use a persistentVolumeClaim for the model store"
            )
    return mapping


def wait_ready(pod: PodState, plan: PodPlan) -> None:
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
        lambda: not exited_since_start(pod),  # the kubelet would restart it: a start fails
        timeout=max(timeout, 5.0),
        what=f"model server pod {plan.namespace}/{plan.name}",
        log=Path(pod.log),
    )
