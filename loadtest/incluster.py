"""The load generator inside the cluster: Locust's master (or a worker) in a pod, and the client that follows it.

``python -m loadtest.incluster master`` reads ``$CANARY_RUN_CONFIG`` (default
``/etc/canary-run``: ``settings.json``, ``calibration.json``, maybe
``from-manifest.yaml``), runs ``python -m locust -f loadtest/locustfile.py
--master`` on it in its own session (output to the pod's log and to
``locust.log`` of the run) and serves the run on ``0.0.0.0:$CANARY_RESULTS_PORT``
(default 8089)::

    GET  /status    {"state": "starting"|"running"|"finished", "exit_code": int|null, "run_id": ...}
    GET  /progress  the run's progress.json as is ({"state": "starting"} before it exists)
    GET  /run.tar   409 until finished; then an uncompressed tar of the run directory (members relative
                    to it), with Content-Length and X-Canary-SHA256
    POST /stop      202: Ctrl-C to Locust's master (once; 409 once finished)
    POST /done      200 once finished (409 before): the wrapper exits with Locust's exit code

It also exits after ``keep_s`` without /done. SIGTERM/SIGINT while Locust runs go to its master once
(it keeps every record and exits 130); one after Locust finished ends the wait for /done. Locust is
stopped if it starts no test within its wait for workers + ``STARTUP_S``, or its progress stalls for
``STALL_S``; a stop that outlasts ``STOP_WAIT_S`` kills its process group.

``python -m loadtest.incluster worker`` execs ``python -m locust -f loadtest/locustfile.py --worker
--master-host $LOCUST_MASTER_NODE_HOST`` (default ``canary-loadgen-master``) with the run's Locust
arguments, less those only a master takes (``--master-bind-port P`` becomes ``--master-port P``
unless ``$LOCUST_MASTER_NODE_PORT`` is set); its exit code is Locust's. Both command lines, and the
checks of ``settings.json``, are :mod:`loadtest.incluster_args`.

The local command follows it through a port-forward to the results port with the client in
:mod:`loadtest.incluster_client` (re-exported here): :func:`results_status`, :func:`results_progress`,
:func:`results_stop`, :func:`fetch_run` (download, safe extraction, :func:`~canary.rundir.read_run`,
then /done).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO

from canary.conventions import ExitCode
from canary.errors import CanaryError, UsageError
from canary.rundir import RunDir
from loadtest.incluster_args import (
    RunSettings,
    locust_master_argv,
    locust_worker_argv,
    option_value,
    read_settings,
)
from loadtest.incluster_client import (
    fetch_run,
    results_done,
    results_progress,
    results_status,
    results_stop,
)
from loadtest.process_group import reap_group, signal_group

__all__ = ["RunSettings", "fetch_run", "locust_master_argv", "locust_worker_argv", "main", "read_settings",
           "results_done", "results_progress", "results_status", "results_stop", "run_master"]

DEFAULT_CONFIG, DEFAULT_RUNS, DEFAULT_PORT = "/etc/canary-run", "/runs", 8089
STARTUP_S, STALL_S, STOP_WAIT_S = 300.0, 180.0, 120.0


class _Master:
    """Locust's master in a subprocess, and what the results server tells of it."""

    def __init__(self, settings: RunSettings, run: RunDir) -> None:
        self.settings, self.run = settings, run
        self.exit_code: int | None = None
        self.tar: tuple[Path, int, str] | None = None  # path, size, sha256
        self.done = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None
        self.signalled = False
        self.pending: int | None = None  # a signal that came before Locust started

    def status(self) -> dict[str, Any]:
        state = "finished" if self.tar else "running" if self.run.progress_json.exists() else "starting"
        return {"state": state, "exit_code": self.exit_code if self.tar else None, "run_id": self.settings.run_id}

    def stop(self, sig: int = signal.SIGINT) -> bool:
        """Signal Locust's master once (as soon as it starts); False when signalled already or finished."""
        if self.signalled or (self.child is not None and self.child.poll() is not None):
            return False
        self.signalled, self.pending = True, sig
        if self.child is not None:
            self._send_pending(self.child)
        return True

    def _send_pending(self, child: subprocess.Popen[bytes]) -> None:
        sig, self.pending = self.pending, None
        if sig is not None:
            print(f"canary-loadgen: {signal.Signals(sig).name} to Locust's master", file=sys.stderr, flush=True)
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(sig)

    def on_signal(self, signum: int, _frame: object) -> None:
        if self.tar is not None:
            self.done.set()
        else:
            self.stop(signum)

    def follow(self, argv: list[str], workers_wait_s: float, poll_s: float = 0.25) -> int:
        """Run Locust to its end (bounded), its output to ours and to locust.log; returns its exit code."""
        self.run.root.mkdir(parents=True, exist_ok=True)
        child = self.child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, start_new_session=True)
        tee = threading.Thread(target=_tee, args=(child.stdout, self.run.locust_log), daemon=True)
        tee.start()
        self._send_pending(child)
        started, seen, changed, stopped_at = time.monotonic(), None, time.monotonic(), None
        while (code := child.poll()) is None:
            progress, now = self.run.read_progress(), time.monotonic()
            if progress is not None and (key := (progress.get("requests"), progress.get("state"))) != seen:
                seen, changed = key, now
            late = now - changed > STALL_S if seen else now - started > workers_wait_s + STARTUP_S
            if late and self.stop():
                print("canary-loadgen: Locust made no progress; stopping it", file=sys.stderr, flush=True)
            if self.signalled and stopped_at is None:
                stopped_at = now
            if stopped_at is not None and now - stopped_at > STOP_WAIT_S:
                signal_group(child, signal.SIGKILL)
            time.sleep(poll_s)
        reap_group(child)
        tee.join(timeout=30)
        return int(ExitCode.INTERRUPTED) if code < 0 and self.signalled else (128 - code if code < 0 else code)

    def pack(self) -> None:
        """The run directory as one tar beside it (members relative to it), then the run is finished."""
        path = self.run.root.with_name(self.run.root.name + ".tar")
        with tarfile.open(path, "w") as tar:
            for item in sorted(self.run.root.rglob("*")):
                if item.is_file() and not item.is_symlink():
                    tar.add(item, arcname=item.relative_to(self.run.root).as_posix(), recursive=False)
        digest = hashlib.sha256()
        with open(path, "rb") as data:
            for block in iter(lambda: data.read(1 << 20), b""):
                digest.update(block)
        self.tar = (path, path.stat().st_size, digest.hexdigest())


def _tee(source: BinaryIO, log: Path) -> None:
    with open(log, "ab") as out:
        for block in iter(lambda: source.read1(1 << 16), b""):  # type: ignore[attr-defined]
            out.write(block)
            out.flush()
            sys.stderr.buffer.write(block)
            sys.stderr.flush()


def _handler(master: _Master) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: Any, kind: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/status":
                self._send(200, master.status())
            elif self.path == "/progress":
                progress = master.run.progress_json
                self._send(200, progress.read_bytes() if progress.exists() else {"state": "starting"})
            elif self.path == "/run.tar" and master.tar is None:
                self._send(409, {**master.status(), "error": "the run is not finished; ask /status"})
            elif self.path == "/run.tar" and master.tar is not None:
                path, size, sha = master.tar
                self.send_response(200)
                self.send_header("Content-Type", "application/x-tar")
                self.send_header("Content-Length", str(size))
                self.send_header("X-Canary-SHA256", sha)
                self.end_headers()
                with open(path, "rb") as data:
                    shutil.copyfileobj(data, self.wfile)
            else:
                self._send(404, {"error": f"no {self.path}; ask /status, /progress or /run.tar"})

        def do_POST(self) -> None:
            if self.path == "/done" and master.tar is not None:
                self._send(200, master.status())
                self.wfile.flush()
                master.done.set()
            elif self.path == "/stop" and master.tar is None:
                master.stop()
                self._send(202, {**master.status(), "stopping": True})
            elif self.path in ("/done", "/stop"):
                self._send(409, {**master.status(), "error": f"{self.path} does not apply now"})
            else:
                self._send(404, {"error": f"no {self.path}; POST /stop or /done"})

        def log_message(self, *_: object) -> None:
            pass

    return Handler


def run_master(env: dict[str, str]) -> int:
    """The ``master`` command: run Locust's master, serve its run, return Locust's exit code."""
    config = Path(env.get("CANARY_RUN_CONFIG", DEFAULT_CONFIG))
    settings = read_settings(config)
    run = RunDir(Path(env.get("CANARY_RUNS", DEFAULT_RUNS)) / settings.run_id)
    if run.run_json.exists():
        raise UsageError(f"{run.root} already holds a run; give the run a new run_id")
    argv = locust_master_argv(settings, config, run.root)
    master = _Master(settings, run)
    server = ThreadingHTTPServer(("0.0.0.0", int(env.get("CANARY_RESULTS_PORT", DEFAULT_PORT))), _handler(master))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, master.on_signal)
    try:
        master.exit_code = master.follow(argv, float(option_value(argv, "--expect-workers-max-wait") or 0))
        master.pack()
        print(f"canary-loadgen: Locust exited {master.exit_code}; serving {run.root} until POST /done "
              f"or {settings.keep_s:g} s", file=sys.stderr, flush=True)
        master.done.wait(settings.keep_s)
    finally:
        server.shutdown()
        server.server_close()
    return master.exit_code


def main(argv: list[str] | None = None) -> int:
    """``python -m loadtest.incluster master|worker``."""
    role = (sys.argv[1:] if argv is None else argv)[:1]
    env = dict(os.environ)
    try:
        if role == ["master"]:
            return run_master(env)
        if role == ["worker"]:
            command = locust_worker_argv(read_settings(Path(env.get("CANARY_RUN_CONFIG", DEFAULT_CONFIG))), env)
            os.execv(command[0], command)
    except CanaryError as error:
        print(f"canary-loadgen: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    print("usage: python -m loadtest.incluster master|worker", file=sys.stderr)
    return int(ExitCode.USAGE)


if __name__ == "__main__":
    sys.exit(main())
