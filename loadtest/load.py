"""``canary load``: the locustfile, headless, in a subprocess, with a progress bar.

Locust runs as ``python -m locust -f loadtest/locustfile.py --headless ...``
with the canary options, its output going to ``<run dir>/locust.log``; the
progress bar follows ``<run dir>/progress.json``, and Locust's exit code is
passed through. Without ``host`` the running local mesh's ingress is used.
The wait is bounded: Locust is stopped if its progress stalls for
``stall_s`` or the run overshoots its run time by ``grace_s``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from canary.errors import CanaryError, UsageError
from loadtest.options import PROTOCOLS, parse_header
from loadtest.rundir import RunDir, default_run_dir

__all__ = ["LOCUSTFILE", "LoadRequest", "LoadResult", "RichProgress", "locust_argv", "parse_run_time", "run_load"]

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
DEFAULT_RUN_TIME = "60s"
ProgressCallback = Callable[[dict[str, Any]], None]


def parse_run_time(text: str) -> int:
    """Locust's timespan (``90``, ``60s``, ``1m30s``, ``1h``) in seconds."""
    value = str(text).strip().lower()
    if value.isdigit():
        return int(value)
    match = re.fullmatch(r"(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?", value)
    if not value or match is None or not any(match.groups()):
        raise UsageError(f"-t/--run-time {text!r} must look like 60s, 5m, 1h30m or a number of seconds")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


@dataclass(frozen=True)
class LoadRequest:
    """What ``canary load`` was asked to do."""

    host: str | None = None
    protocol: str = "both"
    canary_share: float = 0.2
    canary_header: str = "user-group: canary"
    payloads: Path | None = None
    users: int = 10
    spawn_rate: float | None = None  # default: all users in the first second
    run_time: str | None = None
    requests: int | None = None
    processes: int | None = None
    run_dir: Path | None = None
    calibration: Path | None = None
    expected: str | None = None
    home: Path | None = None  # the local mesh's home ($CANARY_HOME)
    until_verified: bool = False  # stop once the sequential test decides every cell
    from_manifest: Path | None = None  # with until_verified: expectations from this VirtualService
    tolerance: float | None = None  # with until_verified (default 0.03)
    extra: tuple[str, ...] = field(default_factory=tuple)  # more Locust arguments

    def validate(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise UsageError(f"--protocol {self.protocol!r} must be one of {', '.join(PROTOCOLS)}")
        if not 0.0 <= self.canary_share <= 1.0:
            raise UsageError(f"--canary-share must be between 0 and 1 (0.2 is 20%), got {self.canary_share}")
        parse_header(self.canary_header)
        if self.users < 1:
            raise UsageError(f"-u/--users must be at least 1, got {self.users}")
        if self.requests is not None and self.requests < 1:
            raise UsageError(f"--requests must be at least 1, got {self.requests}")
        if self.processes is not None and self.processes < 1:
            raise UsageError(f"--processes must be at least 1, got {self.processes}")
        if self.run_time is not None:
            parse_run_time(self.run_time)
        if self.until_verified and bool(self.expected) == bool(self.from_manifest):
            raise UsageError("--until-verified needs the expected split: --expected 70/30 or --from-manifest "
                             "manifests/routing/virtualservice-weight-70.yaml (one of them)")
        if not self.until_verified and (self.from_manifest or self.tolerance is not None):
            raise UsageError("--from-manifest and --tolerance go with --until-verified")
        if self.tolerance is not None and not 0.0 < self.tolerance < 0.5:
            raise UsageError(f"--tolerance must be a fraction between 0 and 0.5 (0.03 is ±3 points), got {self.tolerance}")


@dataclass(frozen=True)
class LoadResult:
    """How the run ended, and where it is."""

    exit_code: int
    run_dir: Path
    log: Path
    run: dict[str, Any] | None  # run.json, when Locust got far enough to write it


def _resolve_host(request: LoadRequest) -> str:
    if request.host:
        return request.host
    from loadtest.meshinfo import ingress_url

    try:
        return ingress_url(request.home)
    except CanaryError as error:
        raise UsageError(f"{error}; or give --host http://HOST:PORT (the ingress to load)") from None


def locust_argv(request: LoadRequest, host: str, run_dir: Path) -> list[str]:
    """The Locust command line for ``request``."""
    run_time = request.run_time or (None if request.requests else DEFAULT_RUN_TIME)
    argv = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", host,
        "-u", str(request.users),
        "-r", f"{request.spawn_rate if request.spawn_rate is not None else request.users:g}",
        "--protocol", request.protocol,
        "--canary-share", f"{request.canary_share:g}",
        "--canary-header", request.canary_header,
        "--run-dir", str(run_dir),
    ]
    if run_time:
        argv += ["-t", run_time]
    if request.requests:
        argv += ["--requests", str(request.requests)]
    if request.processes:
        argv += ["--processes", str(request.processes)]
    if request.payloads:
        argv += ["--payloads", str(request.payloads)]
    if request.calibration:
        argv += ["--calibration", str(request.calibration)]
    if request.expected:
        argv += ["--expected", request.expected]
    if request.until_verified:
        argv += ["--until-verified"]
    if request.from_manifest:
        argv += ["--from-manifest", str(Path(request.from_manifest).resolve())]
    if request.tolerance is not None:
        argv += ["--tolerance", f"{request.tolerance:g}"]
    return argv + list(request.extra)


def run_load(
    request: LoadRequest,
    *,
    progress: ProgressCallback | None = None,
    poll_s: float = 0.25,
    stall_s: float = 180.0,
    grace_s: float = 300.0,
) -> LoadResult:
    """Run the load test headless and return its exit code and run directory."""
    request.validate()
    host = _resolve_host(request)
    run = RunDir(request.run_dir or default_run_dir())
    if run.run_json.exists():
        raise UsageError(f"{run.root} already holds a run; give a new --run-dir or leave it out")
    run.root.mkdir(parents=True, exist_ok=True)
    log = run.root / "locust.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if request.home is not None:
        env["CANARY_HOME"] = str(Path(request.home).resolve())
    run_time = request.run_time or (None if request.requests else DEFAULT_RUN_TIME)
    deadline = time.monotonic() + (parse_run_time(run_time) + grace_s if run_time else float("inf"))
    with open(log, "wb") as out:
        # Its own process group: a Ctrl-C here is forwarded once to Locust and all its workers, as a
        # terminal would deliver it, and nothing is left behind if they do not stop.
        child = subprocess.Popen(locust_argv(request, host, run.root), stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        try:
            code = _follow(child, run, progress, poll_s, stall_s, deadline)
        except KeyboardInterrupt:
            code = _stop(child, signal.SIGINT, wait_s=90.0)
        except BaseException:
            _stop(child, signal.SIGINT, wait_s=90.0)
            raise
    document = run.read_run() if run.run_json.exists() else None
    if progress is not None and (last := run.read_progress()) is not None:
        progress(last)
    return LoadResult(exit_code=code, run_dir=run.root, log=log, run=document)


def _follow(child: subprocess.Popen[bytes], run: RunDir, progress: ProgressCallback | None,
            poll_s: float, stall_s: float, deadline: float) -> int:
    last_seen: tuple[Any, ...] = ()
    last_change = time.monotonic()
    while True:
        code = child.poll()
        if code is not None:
            return code
        state = run.read_progress()
        if state is not None:
            key = (state.get("requests"), state.get("state"))
            if key != last_seen:
                last_seen, last_change = key, time.monotonic()
            if progress is not None:
                progress(state)
        now = time.monotonic()
        if now - last_change > stall_s or now > deadline:
            why = "made no progress" if now <= deadline else "ran past its run time"
            code = _stop(child, signal.SIGINT, wait_s=90.0)
            raise CanaryError(f"Locust {why}; stopped it (exit code {code}); see {run.root / 'locust.log'}")
        time.sleep(poll_s)


def _stop(child: subprocess.Popen[bytes], sig: int, wait_s: float) -> int:
    """Signal Locust's process group (master and workers); kill the group if it outstays ``wait_s``."""
    if child.poll() is None:
        _signal_group(child, sig)
    try:
        return child.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        _signal_group(child, signal.SIGKILL)
        return child.wait(timeout=30)


def _signal_group(child: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, sig)


class RichProgress:
    """A rich progress bar for :func:`run_load`: requests out of ``--requests``, or seconds of ``-t``."""

    def __init__(self, request: LoadRequest, console: Any = None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._by_requests = bool(request.requests)
        run_time = request.run_time or (None if request.requests else DEFAULT_RUN_TIME)
        total = request.requests if request.requests else parse_run_time(run_time or DEFAULT_RUN_TIME)
        self._progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False)
        self._task = self._progress.add_task("starting Locust (calibrating)", total=total)

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._progress.stop()

    def __call__(self, state: dict[str, Any]) -> None:
        requests = int(state.get("requests") or 0)
        subsets = ", ".join(f"{k} {v}" for k, v in sorted((state.get("by_subset") or {}).items()))
        text = f"{requests} requests ({state.get('failed', 0)} failed, {state.get('unknown', 0)} unknown) {subsets}"
        done = requests if self._by_requests else min(float(state.get("elapsed_s") or 0.0), self._total())
        self._progress.update(self._task, completed=done, description=text)

    def _total(self) -> float:
        task = self._progress.tasks[0]
        return float(task.total or 0)
