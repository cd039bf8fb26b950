"""Detached processes of the local mesh: start, identify, probe, stop.

The mesh outlives the ``canary mesh up`` command that started it, so its
processes run in their own sessions and are found again by pid. A pid is only
trusted while ``/proc/<pid>/cmdline`` still carries the mesh's marker, so a
recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from canary.errors import MeshError, ProcessExitedError

__all__ = [
    "free_port",
    "is_running",
    "log_tail",
    "probe_http",
    "probe_tcp",
    "spawn",
    "stop",
    "wait_until",
]


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# Processes started by this process: their exit status is known for certain, with no
# need to read /proc (whose marker check is for processes started by an earlier command).
_children: dict[int, subprocess.Popen[bytes]] = {}


def spawn(argv: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path | None = None) -> int:
    """Start ``argv`` in a session of its own, output to ``log``; returns the pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    return proc.pid


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_running(pid: int, marker: str) -> bool:
    """Whether ``pid`` is alive and ``marker`` is one of its arguments or the value of one of its
    environment variables."""
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    _reap(pid)
    proc = Path(f"/proc/{pid}")
    try:
        if proc.joinpath("stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
            return False
        needle = marker.encode()  # a whole argument, or a whole variable's value: replica 1 is not 10
        if needle in proc.joinpath("cmdline").read_bytes().split(b"\0"):
            return True
        suffix = b"=" + needle
        return any(entry.endswith(suffix) for entry in proc.joinpath("environ").read_bytes().split(b"\0"))
    except OSError:
        return False


def stop(pids: Iterable[tuple[int, str]], grace: float = 10.0) -> None:
    """SIGTERM each (pid, marker) still running, then SIGKILL what outlives ``grace``."""
    live = [(pid, marker) for pid, marker in pids if is_running(pid, marker)]
    for pid, _ in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        live = [(pid, marker) for pid, marker in live if is_running(pid, marker)]
        if live:
            time.sleep(0.05)
    for pid, _ in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for pid, _ in live:
        _reap(pid)


def probe_tcp(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def probe_http(port: int, path: str, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """A kubelet httpGet probe: any status from 200 to 399 is success."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as resp:
            return 200 <= int(resp.status) < 400
    except (urllib.error.URLError, OSError):
        return False


def log_tail(log: Path, lines: int = 12) -> str:
    if not log.exists():
        return "(no output)"
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n  ".join(tail) or "(no output)"


def wait_until(
    ready: Callable[[], bool],
    alive: Callable[[], bool],
    timeout: float,
    what: str,
    log: Path | None = None,
    interval: float = 0.05,
) -> None:
    """Poll ``ready`` until it holds; fail early, with the log's tail, if ``alive`` stops holding.

    ``alive`` is checked once more after ``ready`` holds: a port that answers
    may belong to another process when ours failed to bind it.
    """
    deadline = time.monotonic() + timeout
    while not (ready() and alive()):
        if not alive():
            tail = f"; its output ends with:\n  {log_tail(log)}" if log else ""
            raise ProcessExitedError(f"{what} exited before it was ready{tail}")
        if time.monotonic() > deadline:
            tail = f"; its output ends with:\n  {log_tail(log)}" if log else ""
            raise MeshError(f"{what} was not ready within {timeout:.0f}s{tail}")
        time.sleep(interval)
