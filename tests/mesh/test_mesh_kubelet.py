"""The local mesh's kubelet: its restart back-off, a real kubelet process restarting a stand-in
server on demand and stopping with it, and the container's environment (nothing of the mesh's
own interpreter variables reaches a model server)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mesh.local import procs
from mesh.local.kubelet import (
    BACKOFF_INITIAL_S,
    BACKOFF_MAX_S,
    BACKOFF_RESET_S,
    BIND_HOST,
    KubeletStatus,
    PodFiles,
    PodSpec,
    container_environment,
    crashes_after,
    kubelet_argv,
    read_status,
    restart_delay,
    server_argv,
)

MARKER = "kubelet-test#"


def test_restart_back_off_is_the_kubelets_scaled_down() -> None:
    """At once, then BACKOFF_INITIAL_S doubling, capped at BACKOFF_MAX_S (the kubelet: at once,
    then 10 s doubling to 300 s)."""
    delays = [restart_delay(n) for n in range(10)]
    assert delays[0] == 0.0
    assert delays[1] == BACKOFF_INITIAL_S
    assert all(b == min(2 * a, BACKOFF_MAX_S) for a, b in itertools.pairwise(delays[1:]))
    assert delays[-1] == BACKOFF_MAX_S
    assert delays[:7] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]


def test_a_server_that_ran_long_enough_starts_a_new_back_off() -> None:
    crashes = 0
    for _ in range(4):  # four quick exits: the fourth restart waits 4 s
        crashes = crashes_after(crashes, ran_s=0.5)
    assert restart_delay(crashes - 1) == 4.0
    crashes = crashes_after(crashes, ran_s=BACKOFF_RESET_S - 1)
    assert restart_delay(crashes - 1) == 8.0
    crashes = crashes_after(crashes, ran_s=BACKOFF_RESET_S)
    assert crashes == 1 and restart_delay(crashes - 1) == 0.0  # at once again


def test_the_container_environment_is_built_from_nothing(tmp_path: Path) -> None:
    host = {"PATH": "/evil", "PYTHONPATH": "/x", "SECRET_TOKEN": "t", "LD_LIBRARY_PATH": "/opt/lib", "TZ": "UTC"}
    manifest = {"MODEL_NAME": "m", "CANARY_BIND_HOST": "0.0.0.0", "CANARY_POD": "forged", "LANG": "de_DE.UTF-8"}
    env = container_environment(manifest, {"CANARY_POD": "pod#1"}, home=tmp_path, host_env=host)
    assert env["MODEL_NAME"] == "m" and env["LANG"] == "de_DE.UTF-8"  # the manifest's own
    assert env["CANARY_BIND_HOST"] == BIND_HOST and env["CANARY_POD"] == "pod#1"  # the mesh's, last
    assert env["HOME"] == str(tmp_path)
    assert env["LD_LIBRARY_PATH"] == "/opt/lib" and env["TZ"] == "UTC"
    assert "PYTHONPATH" not in env and "SECRET_TOKEN" not in env and "/evil" not in env["PATH"]


def test_no_python_variable_or_sitecustomize_reaches_the_model_server(tmp_path: Path) -> None:
    """A sitecustomize.py on PYTHONPATH (the mesh's own or a manifest's) runs in a plain Python,
    never in the model server's isolated one."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    ran = tmp_path / "sitecustomize-ran"
    (hooks / "sitecustomize.py").write_text(f"open({str(ran)!r}, 'w').write('ran')\n")
    env = container_environment({"PYTHONPATH": str(hooks)}, {}, home=tmp_path,
                                host_env={**os.environ, "PYTHONPATH": str(hooks)})
    plain = subprocess.run([sys.executable, "-c", "pass"], env=env, cwd=tmp_path, timeout=60, check=True)
    assert plain.returncode == 0 and ran.exists(), "the control: a plain Python runs the hook"
    ran.unlink()
    served = subprocess.run(server_argv(["--version"]), env=env, cwd=tmp_path, timeout=60,
                            capture_output=True, text=True, check=False)
    assert served.returncode == 0, served.stderr
    assert "TensorFlow ModelServer" in served.stdout
    assert not ran.exists(), "the model server's interpreter ran a sitecustomize from PYTHONPATH"


# --- a real kubelet process, with a stand-in server ---------------------------------------------

STAND_IN = "import os, signal, time; signal.signal(signal.SIGTERM, lambda *a: os._exit(0)); time.sleep(120)"


class RunningKubelet:
    def __init__(self, tmp_path: Path, argv: list[str]) -> None:
        self.files = PodFiles(tmp_path / "pod")
        self.files.home.mkdir(parents=True)
        self.marker = f"{MARKER}{tmp_path}"
        env = container_environment({}, {"CANARY_POD": self.marker}, home=self.files.home)
        PodSpec(argv, env, str(self.files.home), str(self.files.status)).write(self.files.spec)
        self.log = tmp_path / "pod.log"
        self.pid = procs.spawn(kubelet_argv(self.marker, self.files.spec), env, self.log)

    def status(self) -> KubeletStatus | None:
        return read_status(self.files.status)

    def wait_for(self, what: Callable[[KubeletStatus], bool], timeout: float = 30.0) -> KubeletStatus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if status is not None and what(status):
                return status
            assert procs.is_running(self.pid, self.marker), self.log.read_text()
            time.sleep(0.01)
        raise AssertionError(f"kubelet status never matched: {self.status()}\n{self.log.read_text()}")


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[RunningKubelet]:
    running = RunningKubelet(tmp_path, [sys.executable, "-I", "-c", STAND_IN])
    try:
        yield running
    finally:
        procs.stop([(running.pid, running.marker)], grace=5)


def test_a_killed_server_is_restarted_with_back_off_then_stopped_on_request(kubelet: RunningKubelet) -> None:
    first = kubelet.wait_for(lambda s: s.state == "running")
    assert first.restarts == 0 and first.last_exit is None and first.kubelet_pid == kubelet.pid
    os.kill(first.server_pid, signal.SIGKILL)
    second = kubelet.wait_for(lambda s: s.state == "running" and s.server_pid != first.server_pid)
    assert second.restarts == 1  # at once, as the kubelet's first restart
    assert second.last_exit is not None and second.last_exit.signal == "SIGKILL"
    assert procs.is_running(second.server_pid, kubelet.marker)  # the pod's marker is in its environment

    os.kill(second.server_pid, signal.SIGKILL)  # a crash loop: now the back-off
    waiting = kubelet.wait_for(lambda s: s.state == "waiting")
    assert waiting.restarts == 1 and waiting.restart_at is not None
    third = kubelet.wait_for(lambda s: s.state == "running" and s.server_pid != second.server_pid)
    assert third.restarts == 2
    log = kubelet.log.read_text()
    assert "restarting the model server at once" in log and f"in {BACKOFF_INITIAL_S:g}s (back-off)" in log

    procs.stop([(kubelet.pid, kubelet.marker)], grace=5)
    final = read_status(kubelet.files.status)
    assert final is not None and final.state == "terminated" and final.restarts == 2
    assert not procs.is_running(third.server_pid, kubelet.marker)


def test_a_stop_while_waiting_to_restart_ends_the_kubelet_at_once(tmp_path: Path) -> None:
    crashing = RunningKubelet(tmp_path, [sys.executable, "-I", "-c", "import sys; sys.exit(3)"])
    try:
        status = crashing.wait_for(lambda s: s.state == "waiting" and s.restarts >= 1)
        assert status.last_exit is not None and status.last_exit.code == 3
        started = time.monotonic()
        procs.stop([(crashing.pid, crashing.marker)], grace=5)
        assert time.monotonic() - started < 2.0
        final = read_status(crashing.files.status)
        assert final is not None and final.state == "terminated"
    finally:
        procs.stop([(crashing.pid, crashing.marker)], grace=1)


def test_a_killed_kubelet_takes_its_server_with_it(kubelet: RunningKubelet) -> None:
    server = kubelet.wait_for(lambda s: s.state == "running").server_pid
    os.kill(kubelet.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while procs.is_running(server, kubelet.marker) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not procs.is_running(server, kubelet.marker), "the server outlived its kubelet"


def test_a_marker_is_a_whole_argument_or_value_not_a_part_of_one(tmp_path: Path) -> None:
    from mesh.local import procs

    code = "import time; time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code, "--pod", "home#ns/pod-10"],
                             env={"CANARY_POD": "home#ns/web-10", "PATH": "/usr/bin:/bin"})
    try:
        procs._children.pop(child.pid, None)  # judged by /proc, as a process of an earlier command is
        assert procs.is_running(child.pid, "home#ns/pod-10")
        assert procs.is_running(child.pid, "home#ns/web-10")
        assert not procs.is_running(child.pid, "home#ns/pod-1")  # replica 1 is not replica 10
        assert not procs.is_running(child.pid, "home#ns/web-1")
    finally:
        child.kill()
        child.wait()
