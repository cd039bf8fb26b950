"""A pod's kubelet on the local mesh: ``python -I -m mesh.local.kubelet --pod MARKER SPEC``.

The local mesh starts each pod as this small supervisor. It starts the model
server from the pod's spec (argv, environment, working directory: written by
the mesh to ``SPEC``), on the pod's fixed host ports, and restarts it whenever
it exits without being asked to, as the kubelet does for a Deployment's pods
(``restartPolicy: Always``): the first restart at once, then after
:data:`BACKOFF_INITIAL_S` doubling up to :data:`BACKOFF_MAX_S`, the back-off
forgotten once a server has run :data:`BACKOFF_RESET_S` (the kubelet: 10 s
doubling to 5 min, reset after 10 min; a local mesh restarts sooner).

SIGTERM or SIGINT is forwarded to the server; the kubelet exits once the
server has stopped, or at once while it waits to restart one. The server runs
in the kubelet's process group (so stopping the group stops both) and gets
SIGTERM should the kubelet die (``PR_SET_PDEATHSIG``). Each change is written
atomically to the status file named in the spec (:class:`KubeletStatus`:
the server's pid, restarts, last exit), which ``canary mesh status`` reads.

The server's environment is the container's, built from nothing by
:func:`container_environment`, and the interpreter runs isolated (``-I``), so
no ``PYTHON*`` variable or ``sitecustomize`` of the mesh's or the manifest's
can apply to it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

from canary.conventions import utc_iso, utc_now
from canary.files import write_atomic

__all__ = [
    "BACKOFF_INITIAL_S",
    "BACKOFF_MAX_S",
    "BACKOFF_RESET_S",
    "BIND_HOST",
    "KubeletStatus",
    "LastExit",
    "PodFiles",
    "PodSpec",
    "container_environment",
    "crashes_after",
    "kubelet_argv",
    "main",
    "read_status",
    "restart_delay",
    "server_argv",
]

BACKOFF_INITIAL_S = 1.0  # the wait before the second restart in a row (the first is at once)
BACKOFF_MAX_S = 30.0  # the longest wait between restarts
BACKOFF_RESET_S = 60.0  # a server that ran this long starts a new back-off (the kubelet: twice the cap)

BIND_HOST = "127.0.0.1"  # the local mesh is loopback only, whatever a manifest says
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Facts of the machine a node would give its containers (libraries, devices, time zone, temp
# folder), taken from the mesh's own environment when set; nothing else of it reaches a pod.
HOST_ENV = ("LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES", "TZ", "TMPDIR")

_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
_PR_SET_PDEATHSIG = 1


def restart_delay(crashes: int) -> float:
    """Seconds to wait before starting the server again after ``crashes`` earlier exits in the
    same crash loop (0 for the first exit: restarted at once, as the kubelet does)."""
    if crashes <= 0:
        return 0.0
    return min(BACKOFF_INITIAL_S * 2.0 ** (crashes - 1), BACKOFF_MAX_S)


def crashes_after(crashes: int, ran_s: float) -> int:
    """The exits in the crash loop once a server that ran ``ran_s`` seconds exits: one more, or
    a new loop (1) after a run of :data:`BACKOFF_RESET_S` or longer."""
    return 1 if ran_s >= BACKOFF_RESET_S else crashes + 1


def container_environment(
    manifest_env: Mapping[str, str],
    mesh_env: Mapping[str, str],
    *,
    home: Path,
    host_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A container's environment, built from nothing: a minimal base (PATH with this Python's
    bin folder, a pod HOME, a UTF-8 locale, :data:`HOST_ENV` from the host), then the
    manifest's ``env``, then the mesh's own values, which nothing in a manifest overrides
    (and the bind host forced to loopback)."""
    host = os.environ if host_env is None else host_env
    base = {
        "PATH": f"{Path(sys.executable).parent}:{DEFAULT_PATH}",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        **{name: host[name] for name in HOST_ENV if name in host},
    }
    return {**base, **manifest_env, **mesh_env, "CANARY_BIND_HOST": BIND_HOST}


def server_argv(server_args: Sequence[str]) -> list[str]:
    """The model server's command line: this Python, isolated (no PYTHON* variables, no
    user site, no current folder on the path) and unbuffered."""
    return [sys.executable, "-I", "-u", "-m", "serving.server", *server_args]


def kubelet_argv(marker: str, spec: Path) -> list[str]:
    """The kubelet's own command line; ``marker`` in it is how the mesh recognises the pod."""
    return [sys.executable, "-I", "-m", "mesh.local.kubelet", "--pod", marker, str(spec)]


@dataclass(frozen=True)
class PodFiles:
    """Where one pod's kubelet keeps its spec, its status and the pod's HOME."""

    root: Path

    @property
    def spec(self) -> Path:
        return self.root / "pod.json"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def home(self) -> Path:
        return self.root / "home"


@dataclass(frozen=True)
class PodSpec:
    """What the mesh hands a pod's kubelet: the server's argv, environment and folder, and
    where to write its status."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    status: str

    def write(self, path: Path) -> None:
        write_atomic(path, orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2))

    @classmethod
    def read(cls, path: Path) -> PodSpec:
        return cls(**orjson.loads(path.read_bytes()))


@dataclass(frozen=True)
class LastExit:
    """How the server last ended, as ``kubectl describe pod`` shows a Last State."""

    code: int | None  # the exit code; None when a signal ended it
    signal: str | None  # "SIGKILL" when a signal ended it
    finished_at: str
    ran_s: float

    def describe(self) -> str:
        how = f"killed by {self.signal}" if self.signal else f"exit code {self.code}"
        return f"{how} after {self.ran_s:.1f}s"


@dataclass(frozen=True)
class KubeletStatus:
    """A pod's container status. ``state``: "running" (the server's pid is ``server_pid``),
    "waiting" (restarting at ``restart_at``: a back-off) or "terminated" (stopped on request)."""

    kubelet_pid: int
    state: str
    server_pid: int
    restarts: int
    started_at: str | None = None
    restart_at: str | None = None
    last_exit: LastExit | None = None
    reason: str = ""  # why the server could not be started, when it could not

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def read_status(path: Path) -> KubeletStatus | None:
    """The status a kubelet wrote at ``path``; None when there is none (or it cannot be read)."""
    try:
        data = orjson.loads(path.read_bytes())
        last = data.get("last_exit")
        data["last_exit"] = LastExit(**last) if last else None
        return KubeletStatus(**data)
    except (OSError, orjson.JSONDecodeError, TypeError):
        return None


def _pod_process(kubelet: int) -> Callable[[], None]:
    """Run in the server's process before it execs: take the signals the kubelet holds back,
    and get SIGTERM should the kubelet die (or have died already)."""
    libc = ctypes.CDLL(None, use_errno=True)

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != kubelet:
            os.kill(os.getpid(), signal.SIGTERM)

    return setup


@dataclass
class Kubelet:
    """One pod's supervisor: :meth:`run` is the whole life of the ``python -m`` process."""

    spec: PodSpec
    restarts: int = 0
    crashes: int = 0  # exits in the current crash loop
    last_exit: LastExit | None = None
    reason: str = ""  # why the server could not be started, the last time it could not
    clock: Callable[[], float] = field(default=time.monotonic)

    def run(self) -> int:
        """Start the server and keep it running until asked to stop; returns the exit code."""
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        setup = _pod_process(os.getpid())
        while True:
            started = self.clock()
            try:
                server = subprocess.Popen(
                    self.spec.argv, env=self.spec.env, cwd=self.spec.cwd,
                    stdin=subprocess.DEVNULL, preexec_fn=setup,
                )
            except (OSError, subprocess.SubprocessError) as error:
                self._say(f"cannot start the model server: {error}")
                self._exited(None, 127, started, reason=str(error))
            else:
                self.reason = ""
                self._write("running", server.pid, started_at=utc_now())
                stop = self._wait_exit(server)
                if stop is not None:
                    self._exited(server.pid, server.returncode, started, wanted=True)
                    self._write("terminated", 0)
                    return 0
                self._exited(server.pid, server.returncode, started)
            delay = restart_delay(self.crashes - 1)
            when = "at once" if delay == 0 else f"in {delay:g}s (back-off)"
            self._say(f"restarting the model server {when}: restart {self.restarts + 1}")
            if self._sleep(delay, restart_at=_utc_in(delay)):
                self._write("terminated", 0)
                return 0
            self.restarts += 1

    def _wait_exit(self, server: subprocess.Popen[bytes]) -> int | None:
        """Wait for the server to exit; a stop signal meanwhile is forwarded to it and returned."""
        stop: int | None = None
        while True:
            info = signal.sigwaitinfo(_SIGNALS)
            if info.si_signo in _STOP_SIGNALS:
                stop = info.si_signo
                with contextlib.suppress(ProcessLookupError):
                    server.send_signal(stop)
            elif server.poll() is not None:
                return stop

    def _sleep(self, seconds: float, restart_at: str) -> bool:
        """Wait out a back-off; True when a stop signal came meanwhile."""
        self._write("waiting", 0, restart_at=restart_at)
        deadline = self.clock() + seconds
        while True:
            info = signal.sigtimedwait(_SIGNALS, max(0.0, deadline - self.clock()))
            if info is None:
                return False
            if info.si_signo in _STOP_SIGNALS:
                return True

    def _exited(self, pid: int | None, code: int | None, started: float,
                *, wanted: bool = False, reason: str = "") -> None:
        ran = self.clock() - started
        by_signal = code is not None and code < 0
        self.last_exit = LastExit(
            code=None if by_signal else code,
            signal=signal.Signals(-code).name if by_signal and code is not None else None,
            finished_at=utc_now(),
            ran_s=round(ran, 3),
        )
        self.reason = reason
        if wanted:
            return
        self.crashes = crashes_after(self.crashes, ran)
        self._say(f"the model server (pid {pid}) exited: {self.last_exit.describe()}")

    def _write(self, state: str, server_pid: int, *, started_at: str | None = None,
               restart_at: str | None = None) -> None:
        status = KubeletStatus(
            kubelet_pid=os.getpid(), state=state, server_pid=server_pid, restarts=self.restarts,
            started_at=started_at, restart_at=restart_at, last_exit=self.last_exit, reason=self.reason,
        )
        with contextlib.suppress(OSError):  # a status it cannot write stops no restart
            write_atomic(Path(self.spec.status), orjson.dumps(status.to_dict(), option=orjson.OPT_INDENT_2))

    @staticmethod
    def _say(message: str) -> None:
        print(f"{utc_now()} kubelet] {message}", flush=True)


def _utc_in(seconds: float) -> str:
    return utc_iso(time.time() + seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -I -m mesh.local.kubelet",
        description="Run one pod of the local mesh: start its model server and restart it when it exits.",
    )
    parser.add_argument("--pod", required=True, help="the pod's marker, how the mesh recognises this process")
    parser.add_argument("spec", type=Path, help="the pod's spec (JSON: argv, env, cwd, status)")
    args = parser.parse_args(argv)
    return Kubelet(PodSpec.read(args.spec)).run()


if __name__ == "__main__":
    sys.exit(main())
