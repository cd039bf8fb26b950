"""``canary load``: the locustfile, headless, in a subprocess, with a progress bar.

Locust runs as ``python -m locust -f loadtest/locustfile.py --headless ...``
with the canary options, its output going to ``<run dir>/locust.log``; the
progress bar follows ``<run dir>/progress.json``, and Locust's exit code is
passed through. Without ``host`` the running local mesh's ingress is used.
Before the run directory is made, :mod:`loadtest.preflight` checks the target
(something listens, it serves ``--model-name``, it can be calibrated) and
whether every protocol x group gets a user. After the run, the result says why
requests failed, most common reason first, from the run's records.
The wait is bounded: Locust is stopped if its progress stalls for
``stall_s`` or the run overshoots its run time by ``grace_s``.

Ctrl-C or SIGTERM to ``canary load`` is passed on to Locust's master only
(Locust runs in its own session, so the terminal's Ctrl-C reaches nobody
else): the master stops its workers through their messages, keeps every
record (:mod:`loadtest.interrupt`) and exits 130, which ``canary load``
passes on. The wait for it is bounded (``STOP_WAIT_S``); a Locust that
outstays it is killed with its whole process group (exit code 130 all the
same), and a second Ctrl-C gives up waiting (the group is killed 5 s later).
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

from locust.util.timespan import parse_timespan

from canary.conventions import CANARY_HOME_ENV, ExitCode
from canary.errors import CanaryError, UsageError
from canary.interrupts import terminate_as_interrupt
from canary.rundir.document import RunDocument, parse_run_document
from canary.rundir.layout import RunDir, default_run_dir
from canary.rundir.records import failure_counts, read_records
from loadtest.meshinfo import try_snapshot
from loadtest.options import CanaryOptions, kube_target, option_argv
from loadtest.preflight import PREFLIGHT_TIMEOUT_S, check_target, group_warning
from loadtest.process_group import reap_group, signal_group
from mesh.api import MeshSnapshot, snapshot

__all__ = [
    "LOCUSTFILE",
    "STARTING",
    "STOP_WAIT_S",
    "LoadRequest",
    "LoadResult",
    "RichProgress",
    "locust_argv",
    "parse_run_time",
    "preflight",
    "run_load",
    "startup_error",
]

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
DEFAULT_RUN_TIME = "60s"
ProgressCallback = Callable[[dict[str, Any]], None]
WarnCallback = Callable[[str], None]
STARTING: dict[str, Any] = {"state": "starting"}
"""What :func:`run_load` hands its progress callback once Locust is started, before Locust's own progress."""
STOP_WAIT_S = 120.0
"""How long a stopped Locust may take to write its run: the stop timeout (30 s) for requests in flight,
the master's wait for the workers' last records (30 s more), Locust's statistics and the mesh's counters."""


class Terminated(KeyboardInterrupt):
    """SIGTERM to ``canary load``: it stops Locust as Ctrl-C does."""


_CANARY_ERROR = re.compile(r"/(?:ERROR|CRITICAL)/[^:]*: canary: (.+)$")


def startup_error(log: Path) -> str | None:
    """The last error the load test's plugin logged (``canary: ...``), from Locust's log: why a run
    that wrote no run.json never started (a cluster that refuses a port-forward, no ready pod ...)."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    found = [m.group(1).strip() for m in map(_CANARY_ERROR.search, lines) if m]
    return found[-1] if found else None


def parse_run_time(text: str) -> int:
    """Locust's own time span (``90``, ``60s``, ``1m30s``, ``1h``) in seconds, as Locust reads ``-t``."""
    try:
        return int(parse_timespan(str(text).strip()))
    except ValueError:
        raise UsageError(f"-t/--run-time {text!r} must look like 60s, 5m, 1h30m or a number of seconds") from None


@dataclass(frozen=True)
class LoadRequest:
    """What ``canary load`` was asked to do: the canary options, and how to run Locust."""

    options: CanaryOptions = field(default_factory=CanaryOptions)
    host: str | None = None
    users: int = 10
    spawn_rate: float | None = None  # default: all users in the first second
    run_time: str | None = None
    processes: int | None = None
    home: Path | None = None  # the local mesh's home ($CANARY_HOME)
    extra: tuple[str, ...] = field(default_factory=tuple)  # more Locust arguments

    def validate(self) -> None:
        options = self.options
        if self.users < 1:
            raise UsageError(f"-u/--users must be at least 1, got {self.users}")
        if self.spawn_rate is not None and not self.spawn_rate > 0:
            raise UsageError(f"-r/--spawn-rate must be more than 0 users per second, got {self.spawn_rate}")
        if self.processes is not None and self.processes < 1:
            raise UsageError(f"--processes must be at least 1, got {self.processes}")
        if self.run_time is not None:
            parse_run_time(self.run_time)
        kube_target(options)  # --context and the others go with --kube
        if options.until_verified and bool(options.expected) == bool(options.from_manifest):
            raise UsageError("--until-verified needs the expected split: --expected 70/30 or --from-manifest "
                             "manifests/routing/virtualservice-weight-70.yaml (one of them)")
        if not options.until_verified and (options.from_manifest or "tolerance" in options.model_fields_set):
            raise UsageError("--from-manifest and --tolerance go with --until-verified")

    @property
    def effective_run_time(self) -> str | None:
        """``-t`` as given; without it and without ``--requests``, the default 60s."""
        return self.run_time or (None if self.options.requests else DEFAULT_RUN_TIME)


@dataclass(frozen=True)
class LoadResult:
    """How the run ended, and where it is."""

    exit_code: int
    run_dir: Path
    log: Path
    run: RunDocument | None  # run.json, when Locust got far enough to write it
    failures: tuple[tuple[str, int], ...] = ()  # why requests failed, most common first (reason, count)


def _target(request: LoadRequest) -> tuple[str, MeshSnapshot | None]:
    """The host to load, and the running local mesh (None when none runs); with ``--kube``,
    the cluster's ingress (``--host`` when given) and namespace."""
    kube = kube_target(request.options, ingress=request.host)
    if kube is not None:
        mesh = snapshot(kube=kube)
        return mesh.ingress_url, mesh
    if request.host:
        return request.host, try_snapshot(request.home)
    try:
        mesh = snapshot(home=request.home)
    except CanaryError as error:
        raise UsageError(f"{error}; or give --host http://HOST:PORT (the ingress to load)") from None
    return mesh.ingress_url, mesh


def preflight(request: LoadRequest, host: str, mesh: MeshSnapshot | None,
              timeout: float = PREFLIGHT_TIMEOUT_S) -> list[str]:
    """Raise when a load of ``host`` cannot work (see :mod:`loadtest.preflight`); return warnings."""
    options = request.options
    groups = group_warning(request.users, options, request.processes)
    return [*([groups] if groups else []), *check_target(host, options, mesh, timeout=timeout)]


def locust_argv(request: LoadRequest, host: str, run_dir: Path) -> list[str]:
    """The Locust command line for ``request``."""
    options = request.options
    if options.from_manifest:  # Locust runs in the same folder, but say exactly which file
        options = options.model_copy(update={"from_manifest": Path(options.from_manifest).resolve()})
    argv = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", host,
        "-u", str(request.users),
        "-r", f"{request.spawn_rate if request.spawn_rate is not None else request.users:g}",
        *option_argv(options.model_copy(update={"run_dir": None})),
        "--run-dir", str(run_dir),
    ]
    if request.effective_run_time:
        argv += ["-t", request.effective_run_time]
    if request.processes:
        argv += ["--processes", str(request.processes)]
    return argv + list(request.extra)


def run_load(
    request: LoadRequest,
    *,
    progress: ProgressCallback | None = None,
    warn: WarnCallback | None = None,
    poll_s: float = 0.25,
    stall_s: float = 180.0,
    grace_s: float = 300.0,
    preflight_timeout_s: float = PREFLIGHT_TIMEOUT_S,
) -> LoadResult:
    """Check the target, run the load test headless, and return its exit code, run directory and
    why requests failed. ``warn`` gets the preflight's warnings before Locust starts; ``progress``
    gets :data:`STARTING` once it has, then Locust's progress."""
    request.validate()
    host, mesh = _target(request)
    run = RunDir(request.options.run_dir or default_run_dir())
    if run.run_json.exists():
        raise UsageError(f"{run.root} already holds a run; give a new --run-dir or leave it out")
    for warning in preflight(request, host, mesh, preflight_timeout_s):
        if warn is not None:
            warn(warning)
    run.root.mkdir(parents=True, exist_ok=True)
    log = run.locust_log
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if request.home is not None:
        env[CANARY_HOME_ENV] = str(Path(request.home).resolve())
    run_time = request.effective_run_time
    deadline = time.monotonic() + (parse_run_time(run_time) + grace_s if run_time else float("inf"))
    with open(log, "wb") as out, terminate_as_interrupt(Terminated):
        # Its own session: the terminal's Ctrl-C reaches canary only, which passes it on to Locust's
        # master once; the master stops its workers, and nothing is left behind if they do not stop.
        child = subprocess.Popen(locust_argv(request, host, run.root), stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        if progress is not None:
            progress(STARTING)
        try:
            code = _follow(child, run, progress, poll_s, stall_s, deadline)
        except KeyboardInterrupt as stop:
            code = _stop(child, signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT, STOP_WAIT_S)
            if code < 0:  # killed: it never wrote that the run was interrupted, but it was
                code = int(ExitCode.INTERRUPTED)
        except BaseException:
            _stop(child, signal.SIGINT, wait_s=STOP_WAIT_S)
            raise
        finally:
            reap_group(child)
    document = parse_run_document(run.read_run_json(), str(run.run_json)) if run.run_json.exists() else None
    if progress is not None and (last := run.read_progress()) is not None:
        progress(last)
    return LoadResult(exit_code=code, run_dir=run.root, log=log, run=document, failures=_failures(run, document))


def _failures(run: RunDir, document: RunDocument | None) -> tuple[tuple[str, int], ...]:
    """Why the run's requests failed (nothing when run.json counts no failure, or no record is readable)."""
    outcomes = document.requests.by_outcome if document is not None else {}
    if document is not None and not (outcomes.get("failed") or outcomes.get("interrupted")):
        return ()
    try:
        return tuple(failure_counts(read_records(run.root)))
    except UsageError:  # no records/ (Locust stopped before the first test) or a damaged chunk
        return ()


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
            code = _stop(child, signal.SIGINT, wait_s=STOP_WAIT_S)
            raise CanaryError(f"Locust {why}; stopped it (exit code {code}); see {run.root / 'locust.log'}")
        time.sleep(poll_s)


def _stop(child: subprocess.Popen[bytes], sig: int, wait_s: float) -> int:
    """Signal Locust's master (it stops its workers, and keeps every record); kill Locust's whole
    process group if it outstays ``wait_s``."""
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(sig)
    try:
        return child.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        signal_group(child, signal.SIGKILL)
        return child.wait(timeout=30)


class RichProgress:
    """A rich progress bar for :func:`run_load`: requests out of ``--requests``, or seconds of ``-t``.

    It shows from the first update (:data:`STARTING`, once Locust is started), so a preflight
    refusal is the only line on the terminal."""

    def __init__(self, request: LoadRequest, console: Any = None, *, transient: bool = False) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._by_requests = bool(request.options.requests)
        total = request.options.requests or parse_run_time(request.effective_run_time or DEFAULT_RUN_TIME)
        self._progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=transient)
        self._task = self._progress.add_task("starting Locust (calibrating)", total=total)
        self._shown = False

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, *_: object) -> None:
        if self._shown:
            self._progress.stop()

    def __call__(self, state: dict[str, Any]) -> None:
        if not self._shown:
            self._progress.start()
            self._shown = True
        if "requests" not in state:  # STARTING: Locust calibrates before its first progress
            return
        requests = int(state.get("requests") or 0)
        subsets = ", ".join(f"{k} {v}" for k, v in sorted((state.get("by_subset") or {}).items()))
        text = f"{requests} requests ({state.get('failed', 0)} failed, {state.get('unknown', 0)} unknown) {subsets}"
        done = requests if self._by_requests else min(float(state.get("elapsed_s") or 0.0), self._total())
        self._progress.update(self._task, completed=done, description=text)

    def _total(self) -> float:
        task = self._progress.tasks[0]
        return float(task.total or 0)
