"""Soak: a long mixed load on the local mesh with routing changes and a killed replica.

Brings up the tiny mesh with two ResNet50 replicas, then runs ``canary load``
(REST and gRPC users, half of them sending the canary header) for
``--minutes`` while, every ``--change-every`` seconds, the VirtualService
under test moves on (weight-70 → weight-100 → focused → weight-70 …), and
once, half-way, one ResNet50 replica's model server gets ``kill -9``.

It prints, against the targets the reliability issue set:

    records lost            Locust's request count − records, and Envoy's count − records   (0)
    unattributed            successful responses no subset's fingerprint matched          (0)
    failed in changes       failed requests started within 1 s of a routing change        (0)
    failed after the kill   and how long until the replica served again                    (≤ 2 %)
    memory                  every process's RSS after warm-up and at the end               (flat)

Run: ``python -m bench.soak`` (10 minutes), ``--minutes 2`` for a short look.
Exit 0 when every target holds, 1 otherwise. Loopback only; every loop is
bounded by the run's own time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psutil

from canary.rundir import RunDir, parse_run_document
from canary.rundir.records import read_records
from mesh.api import default_manifests, mesh_apply, mesh_down, mesh_status, mesh_up, model_store
from mesh.local import procs

ROUTINGS = ("virtualservice-weight-70.yaml", "virtualservice-weight-100.yaml", "virtualservice-focused-routing.yaml")
CHANGE_WINDOW_S = 1.0  # a failure this close to a routing change counts as failed "in the change"


@dataclass
class Soak:
    home: Path
    run_dir: Path
    changes: list[tuple[float, float]] = field(default_factory=list)  # (push started, acknowledged), epoch s
    killed_at: float | None = None
    killed_pid: int | None = None
    killed_pod: str = ""
    serving_again_at: float | None = None  # the killed replica's kubelet runs a new server
    restarts: int = 0
    memory_start: dict[str, float] = field(default_factory=dict)
    memory_end: dict[str, float] = field(default_factory=dict)


def _rss_mb(pid: int) -> float:
    try:
        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20
    except psutil.Error:
        return float("nan")


def _processes(home: Path, load: subprocess.Popen[bytes]) -> Iterator[tuple[str, int]]:
    state = mesh_status(home=home).state
    yield "envoy", state.envoy_pid
    for pod in state.pods:
        yield f"pod {pod.name}", pod.pid
    yield "canary load (+ workers)", load.pid


def _memory(home: Path, load: subprocess.Popen[bytes]) -> dict[str, float]:
    return {name: _rss_mb(pid) for name, pid in _processes(home, load)}


def _model_server_of(pod_pid: int) -> int:
    """The model server process of a pod (the pod's own process, or its supervisor's child)."""
    proc = psutil.Process(pod_pid)
    for candidate in [proc, *proc.children(recursive=True)]:
        if "serving.server" in " ".join(candidate.cmdline()):
            return candidate.pid
    return pod_pid


def _scaled_manifest(folder: Path) -> Path:
    text = default_manifests("base", "deployment-resnet50.yaml").read_text()
    path = folder / "deployment-resnet50-2-replicas.yaml"
    path.write_text(text.replace("replicas: 1", "replicas: 2"))
    return path


def run(minutes: float, change_every: float, users: int, processes: int, folder: Path) -> Soak:
    home = folder / "home"
    from serving.export import ensure_models

    ensure_models(model_store(True, home), tiny=True)
    mesh_up([default_manifests("base")], tiny=True, port=procs.free_port(), home=home)
    soak = Soak(home=home, run_dir=folder / "run")
    load: subprocess.Popen[bytes] | None = None
    try:
        mesh_apply([_scaled_manifest(folder), default_manifests("routing", ROUTINGS[0])], home=home)
        canary = Path(sys.executable).parent / "canary"
        load = subprocess.Popen(
            [str(canary), "load", "-u", str(users), "--processes", str(processes), "--canary-share", "0.5",
             "-t", f"{int(minutes * 60)}s", "--run-dir", str(soak.run_dir)],
            env={**os.environ, "CANARY_HOME": str(home)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        started = time.monotonic()
        end = started + minutes * 60
        kill_at = started + minutes * 30 + change_every / 2  # half-way, between two changes
        next_change = started + change_every
        warmed = False
        step = 1
        while load.poll() is None and time.monotonic() < end + 120:
            now = time.monotonic()
            if not warmed and now - started > 30:
                soak.memory_start, warmed = _memory(home, load), True
            if now >= next_change and now < end - change_every / 2:
                before = time.time()
                mesh_apply([default_manifests("routing", ROUTINGS[step % len(ROUTINGS)])], home=home)
                soak.changes.append((before, time.time()))
                step += 1
                next_change += change_every
            if soak.killed_at is None and now >= kill_at:
                victim = next(p for p in mesh_status(home=home).state.pods if p.labels.get("version") == "resnet50")
                soak.killed_pid, soak.killed_pod = _model_server_of(victim.pid), victim.name
                os.kill(soak.killed_pid, signal.SIGKILL)
                soak.killed_at = time.time()
            if soak.killed_at is not None and soak.serving_again_at is None:
                container = mesh_status(home=home).containers.get(soak.killed_pod)
                if container and container.state == "running" and container.server_pid != soak.killed_pid:
                    soak.serving_again_at, soak.restarts = time.time(), container.restarts
            if warmed and now >= end - 10 and not soak.memory_end:
                soak.memory_end = _memory(home, load)
            time.sleep(0.2)
        if load.poll() is None:
            load.send_signal(signal.SIGINT)
        load.wait(timeout=300)
    finally:
        if load is not None and load.poll() is None:
            load.kill()
        mesh_down(home=home)
    return soak


def report(soak: Soak) -> bool:
    run = parse_run_document(RunDir(soak.run_dir).read_run_json())
    records = read_records(soak.run_dir)
    times = records["time"].astype("int64") / 1e6 if len(records) else pd.Series(dtype=float)
    failed = ~records["ok"]
    locust = run.requests.locust.get("requests", 0)
    envoy = sum((run.mesh.requests_during_run() or {}).values())
    unattributed = int((records["ok"] & (records["subset"] == "unknown")).sum())
    in_change = pd.Series(False, index=records.index)
    for push, ack in soak.changes:
        in_change |= (times >= push - CHANGE_WINDOW_S) & (times <= ack + CHANGE_WINDOW_S)
    after_kill = times >= soak.killed_at if soak.killed_at else pd.Series(False, index=records.index)
    killed_failed = int((failed & after_kill).sum())
    killed_total = int(after_kill.sum())
    share_after_kill = killed_failed / killed_total if killed_total else 0.0
    print(f"records {len(records)}, Locust requests {locust}, Envoy requests {envoy}, run status {run.status}")
    print(f"records lost: {locust - len(records)} against Locust, {envoy - len(records)} against Envoy (target 0)")
    print(f"unattributed successful responses: {unattributed} (target 0)")
    print(f"routing changes: {len(soak.changes)}; requests started within {CHANGE_WINDOW_S:g} s of one: "
          f"{int(in_change.sum())}, failed: {int((failed & in_change).sum())} (target 0)")
    print(f"failed after the kill (pid {soak.killed_pid}): {killed_failed} of {killed_total} "
          f"= {share_after_kill:.2%} (target ≤ 2%)")
    if soak.killed_at is not None:
        again = "never" if soak.serving_again_at is None else f"after {soak.serving_again_at - soak.killed_at:.1f} s"
        print(f"the killed replica's server was restarted (restarts {soak.restarts}) {again}")
    print(f"{'process':40s} {'RSS after 30 s (MB)':>20s} {'RSS at end (MB)':>16s}")
    for name in sorted(set(soak.memory_start) | set(soak.memory_end)):
        print(f"{name:40s} {soak.memory_start.get(name, float('nan')):20.0f} {soak.memory_end.get(name, float('nan')):16.0f}")
    return (locust == len(records) == envoy and unattributed == 0 and soak.serving_again_at is not None
            and not (failed & in_change).any() and share_after_kill <= 0.02)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--change-every", type=float, default=60.0, help="seconds between routing changes")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args(argv)
    print(f"soak: {args.minutes:g} min, routing change every {args.change_every:g} s, {args.users} users, "
          f"{args.processes} Locust workers; {platform.node()} {os.cpu_count()} CPUs, "
          f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    with tempfile.TemporaryDirectory(prefix="canary-soak-") as folder:
        soak = run(args.minutes, args.change_every, args.users, args.processes, Path(folder))
        return 0 if report(soak) else 1


if __name__ == "__main__":
    sys.exit(main())
