"""The collecting side of the plugin: on the Locust master, or in a local (single-process) run.

At each test start it opens a run directory, writes the first ``run.json``,
snapshots the local mesh's counters and sends the calibration to the
workers. While the test runs it hands out user indices (groups) and request
leases, appends the records workers ship to the Parquet sink, feeds the
``on_records`` hooks (the web UI) and rewrites ``progress.json``. When the
test stops it asks every worker to stop its users and ship what is left,
waits for each to say so, and writes the final ``run.json``; at ``quitting``
it checks that nothing was lost, failed or left unattributed and sets the
process exit code.

Ctrl-C or SIGTERM during a test (:mod:`loadtest.interrupt`) reaches
``quitting`` with the test still running: the same collection then runs there
(users finish their requests in flight), and run.json says the run was
``interrupted`` (which signal, when), with exit code 130 whatever else it
found. A stop already under way when Locust shuts down is waited for, never
cut short.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
from locust.runners import STATE_MISSING, STATE_SPAWNING, STATE_STOPPED, STATE_STOPPING, LocalRunner

from canary.errors import CanaryError
from canary.files import write_atomic
from canary.rundir.document import (
    InterruptionRecord,
    ModelRecord,
    RunDocument,
)
from canary.rundir.layout import RunDir, default_run_dir, utc_now
from canary.stats import Expectation, expectations_by_group
from loadtest.budget import Ledger
from loadtest.endchecks import end_checks, lost_records, unconfirmed_workers
from loadtest.fingerprint import Calibration
from loadtest.interrupt import Interruption
from loadtest.items import group_of
from loadtest.meshinfo import routing_record, run_mesh, try_snapshot
from loadtest.options import CanaryOptions, kube_target, options_from_parsed
from loadtest.phases import PhaseTracker
from loadtest.records import RecordSink
from loadtest.run_document import run_document
from loadtest.sequential import SequentialMonitor, monitor_for
from loadtest.worker import MSG
from mesh.api import MeshSnapshot
from payloads import PayloadSet

__all__ = ["MasterSide", "RecordHook"]

logger = logging.getLogger("canary.loadtest")

RecordHook = Callable[[list[dict[str, Any]]], None]

class MasterSide:
    """Run directory, records, groups and the request budget for one Locust master (or local run)."""

    progress_interval_s = 0.5
    flush_grace_s = 30.0
    stats_wait_s = 10.0
    stale_budget_s = 15.0

    def __init__(self, environment: Any, options: CanaryOptions, payloads: PayloadSet,
                 calibration: Calibration, calibration_origin: dict[str, Any], hooks: list[RecordHook],
                 expected: dict[str, Expectation]) -> None:
        self.environment = environment
        self.runner = environment.runner
        self.local = isinstance(self.runner, LocalRunner)
        self.options = options
        self.payloads = payloads
        self.calibration = calibration
        self.calibration_origin = calibration_origin
        self.calibration_json = calibration.to_json().decode()
        self.hooks = hooks
        self.expected = expected
        self.run: RunDir | None = None
        self.sink: RecordSink | None = None
        self.phases = PhaseTracker(None, None)
        self.ledger: Ledger | None = None
        self.tests = 0
        self.finalized = False
        self.stopping = False
        self.status = "idle"
        self.started_at = self.ended_at = ""
        self.started_monotonic = 0.0
        self.mesh_before: MeshSnapshot | None = None
        self.mesh_after: MeshSnapshot | None = None
        self.enrolled: Counter[str] = Counter()
        self.groups: Counter[tuple[str, str]] = Counter()
        self.flushed: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []  # what went wrong while running (problems add the end-of-run checks)
        self.problems: list[str] = []
        self.mesh_problems: list[str] = []  # what could not be read of the mesh (run.json mesh.problems)
        self.exit_code: int | None = None
        self.models: dict[str, ModelRecord] = {}  # subset -> its server's model metadata
        self.subsets: list[str] | None = None  # the mesh's subsets, stable first (for --until-verified)
        self.sequential: SequentialMonitor | None = None  # --until-verified
        self.stop_reason = ""
        self.signalled: tuple[Interruption, int] | None = None  # the signal that interrupts this test, records by then
        self.finalizing = False
        self.quitting = False
        self._final = gevent.event.Event()  # set once the test's final state is written
        self._progress: gevent.Greenlet | None = None
        self._last_rows = (0, time.monotonic())

    @property
    def test_running(self) -> bool:
        """A test is under way (started, its final state not written yet)."""
        return self.run is not None and self.sink is not None and not self.finalized

    @property
    def ending(self) -> bool:
        """The test is ending for its own reason (run time, --requests, --until-verified, the web UI's stop)."""
        return self.finalizing or (self.stopping and not self.finalized)

    def note_signal(self, interruption: Interruption) -> None:
        """Ctrl-C or SIGTERM (:mod:`loadtest.interrupt`): it interrupts the test if one is running and
        not already ending."""
        if self.test_running and not self.ending and self.signalled is None and self.sink is not None:
            self.signalled = (interruption, self.sink.stats.rows)

    # --- wiring --------------------------------------------------------------------

    def register(self) -> None:
        runner = self.runner
        runner.register_message(MSG.RECORDS, self._on_records)
        runner.register_message(MSG.FLUSHED, self._on_flushed)
        runner.register_message(MSG.ENROLL, self._on_enroll)
        runner.register_message(MSG.LEASE, self._on_lease)
        runner.register_message(MSG.NEED_CALIBRATION, self._on_need_calibration)
        events = self.environment.events
        events.test_start.add_listener(self.on_test_start)
        events.test_stop.add_listener(self.on_test_stop)
        events.quitting.add_listener(self.on_quitting)
        self._locust_quit = runner.quit
        runner.quit = self._quit_after_collecting

    def _quit_after_collecting(self) -> None:
        """Locust's ``runner.quit``, once a collection under way has ended: quitting kills the runner's
        greenlets, the message loop the workers' last records arrive on among them (the run time can run
        out while an interrupted test is being collected, or the last worker quit)."""
        if self.finalizing:
            self._final.wait(timeout=self.collect_bound_s + self.stats_wait_s + 30)
        self._locust_quit()

    def _reply(self, kind: str, data: dict[str, Any], node: str) -> None:
        self.runner.send_message(kind, data, client_id=node)

    # --- start ---------------------------------------------------------------------

    def _next_run_dir(self) -> RunDir:
        given = self.options.run_dir
        if given is None:
            return RunDir(default_run_dir())
        if self.tests == 1:
            return RunDir(given)
        return RunDir(given.with_name(f"{given.name}-{self.tests}"))  # a second test from the web UI

    def reread_options(self, parsed: Any) -> None:
        """Take the canary options as they are now (the web UI's start form may have changed
        them: an Expected typed in, say) and the expected split they give; on a bad value
        keep the previous ones."""
        try:
            options = options_from_parsed(parsed)
            expected = expectations_by_group(options.expected or "", self.subsets)
        except CanaryError as error:
            logger.error("canary: %s (keeping the previous options)", error)
            return
        self.options, self.expected = options, expected
        self.environment.canary_expected = expected

    def on_test_start(self, environment: Any, **_: Any) -> None:
        self.reread_options(environment.parsed_options)
        if self.sink is not None and not self.sink.closed:
            self.sink.close()
        self.tests += 1
        try:
            run = self._next_run_dir().create()
            write_atomic(run.calibration_json, self.calibration_json.encode())
        except (CanaryError, OSError) as error:
            logger.error("canary: cannot write the run directory: %s", error)
            environment.process_exit_code = getattr(error, "exit_code", 3)
            self.run = self.sink = None
            self._stop_test("no run directory")
            return
        self.run = run
        self.sink = RecordSink(self.run.records)
        self.ledger = Ledger(self.options.requests) if self.options.requests else None
        self.enrolled, self.groups, self.flushed = Counter(), Counter(), {}
        self.notes, self.problems, self.mesh_problems = [], [], []
        self.finalized = self.stopping = self.finalizing = False
        self.signalled = None
        self._final.clear()
        self.exit_code = None
        self.stop_reason = ""
        self.sequential = self._sequential_monitor()
        self.status = "running"
        self.started_at, self.ended_at = utc_now(), ""
        self.started_monotonic = time.monotonic()
        self._last_rows = (0, time.monotonic())
        self.mesh_before = self._mesh_now()
        self.mesh_after = None
        through = run_mesh(self.environment.host, self.mesh_before)
        self.phases = PhaseTracker(routing_record(through) if through else None, through)
        self.write_run()
        self.write_progress()
        if not self.local:
            self.runner.send_message(MSG.CALIBRATION, {"json": self.calibration_json})
        if self._progress is None or self._progress.dead:
            self._progress = gevent.spawn(self._progress_loop)
        logger.info("canary: writing the run directory %s", self.run.root)

    def _mesh_now(self) -> MeshSnapshot | None:
        """The mesh the run goes through, now; None when there is none canary can read. A
        cluster that cannot be read is said in run.json's ``mesh.problems``, and ends nothing."""
        try:
            return try_snapshot(kube=kube_target(self.options, ingress=self.environment.host or None))
        except CanaryError as error:
            logger.warning("canary: the mesh could not be read: %s", error)
            self.mesh_problems.append(f"the mesh could not be read: {error}")
            return None

    def _sequential_monitor(self) -> SequentialMonitor | None:
        try:
            return monitor_for(self.options, self.subsets)
        except CanaryError as error:  # checked at start-up; only options changed in the web UI get here
            logger.error("canary: --until-verified is off for this test: %s", error)
            self.notes.append(f"--until-verified could not start: {error}")
            return None

    # --- messages ------------------------------------------------------------------

    def _on_records(self, environment: Any, msg: Any, **_: Any) -> None:
        rows = msg.data.get("rows") or []
        if self.sink is None or self.sink.closed:
            logger.error("canary: %d records arrived with no run open; they are dropped", len(rows))
            return
        self._accept(self.phases.release(rows))

    def _poll_phases(self, *, everything: bool = False) -> None:
        """Learn of routing changes, then pass on the rows that can now be given their phase."""
        for record in self.phases.poll():
            logger.info("canary: routing changed (mesh version %s): phase %d", record.version, record.phase)
        if self.sink is not None and not self.sink.closed:
            self._accept(self.phases.release(everything=everything))

    def _accept(self, rows: list[dict[str, Any]]) -> None:
        if not rows or self.sink is None:
            return
        accepted = self.sink.add(rows)
        if accepted:
            for hook in list(self.hooks):
                try:
                    hook(accepted)  # type: ignore[arg-type]
                except Exception:
                    logger.exception("canary: an on_records hook failed")
            if self.sequential is not None and not self.sequential.ended:
                self.sequential.add(accepted)
                self._check_sequential()

    def _on_flushed(self, environment: Any, msg: Any, **_: Any) -> None:
        self.flushed[str(msg.node_id)] = dict(msg.data or {})

    def _on_enroll(self, environment: Any, msg: Any, **_: Any) -> None:
        protocol = str(msg.data.get("protocol"))
        index = self.enrolled[protocol]
        self.enrolled[protocol] += 1
        group = group_of(index, self.options.canary_share)
        self.groups[(protocol, group)] += 1
        header = list(self.options.header) if group == "canary" else None
        self._reply(MSG.ENROLLED, {"token": msg.data.get("token"), "index": index, "group": group,
                                   "header": header}, msg.node_id)

    def _on_lease(self, environment: Any, msg: Any, **_: Any) -> None:
        want = int(msg.data.get("want", 1))
        if self.ledger is None:
            n = want  # no budget in this test: a worker asking is out of date, let it run
        else:
            workers = 1 if self.local else max(1, self.runner.worker_count)
            n = self.ledger.grant(str(msg.data.get("worker", msg.node_id)), want, workers)
        self._reply(MSG.GRANT, {"n": n}, msg.node_id)

    def _on_need_calibration(self, environment: Any, msg: Any, **_: Any) -> None:
        self._reply(MSG.CALIBRATION, {"json": self.calibration_json}, msg.node_id)

    # --- while running -------------------------------------------------------------

    def _progress_loop(self) -> None:
        while True:
            gevent.sleep(self.progress_interval_s)
            try:
                self._poll_phases()
                if self.sink is not None and not self.sink.closed:
                    self.sink.flush_due()
                if self.status == "running":
                    self.write_progress()
                    self._check_budget()
                    self._check_sequential()
            except Exception:
                logger.exception("canary: progress update failed")

    def _check_budget(self) -> None:
        if self.ledger is None or self.sink is None or self.stopping or self.ledger.remaining > 0:
            return
        rows = self.sink.stats.rows
        if rows != self._last_rows[0]:
            self._last_rows = (rows, time.monotonic())
        if rows >= self.ledger.total:
            self._stop_test(f"--requests {self.ledger.total} reached")
        elif time.monotonic() - self._last_rows[1] > self.stale_budget_s:
            self.notes.append(
                f"only {rows} of the {self.ledger.total} requests handed out came back (a worker died?)"
            )
            self._stop_test("--requests: the last leased requests never came back")

    def _active_cells(self) -> set[tuple[str, str]]:
        return {cell for cell, n in self.groups.items() if n > 0}

    def _check_sequential(self) -> None:
        """--until-verified: stop once every cell with users has decided (and every user has started)."""
        monitor = self.sequential
        if monitor is None or self.stopping or getattr(self.runner, "state", None) == STATE_SPAWNING:
            return
        if monitor.decided(self._active_cells()):
            self._stop_test(f"--until-verified: the split is {monitor.overall} after {monitor.requests} requests")

    def _stop_test(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason
        self.stopping = True
        headless = bool(getattr(self.environment.parsed_options, "headless", False))
        logger.info("canary: %s, %s", reason, "shutting down" if headless else "stopping the test")
        gevent.spawn(self.runner.quit if headless else self.runner.stop)

    # --- stop ----------------------------------------------------------------------

    def on_test_stop(self, environment: Any, **_: Any) -> None:
        self.finalize("finished")

    def finalize(self, status: str) -> None:
        """Collect every worker's last records, then write the run's final state (once per test)."""
        if self.finalized or self.run is None or self.sink is None:
            return
        self.finalized = self.finalizing = True
        try:
            self._finalize(status)
        finally:
            self.finalizing = False
            self._final.set()

    def _finalize(self, status: str) -> None:
        assert self.sink is not None
        if status == "interrupted":
            if self.signalled is not None:
                self.stop_reason = self.stop_reason or f"interrupted by {self.signalled[0].signal}"
            if not self.local and self.runner.state not in (STATE_STOPPING, STATE_STOPPED):
                self.runner.stop(send_stop_to_client=False)  # spawn no more: a worker that quits is not replaced
        self._collect_from_workers()
        self._poll_phases(everything=True)
        self.mesh_problems.extend(self.phases.problems)
        self.sink.flush()
        self._wait_for_locust_stats()
        self.mesh_after = self._mesh_now() if self.mesh_before is not None else None
        if self.sequential is not None:
            self.sequential.stop(self.stop_reason or ("interrupted" if status == "interrupted" else
                                                      "the test ended (--run-time or stopped)"), self._active_cells())
        self.status = status
        self.ended_at = utc_now()
        self.exit_code = self._exit_code(log=False)
        self.write_run()
        self.write_progress()

    def _collect_from_workers(self) -> None:
        if self.local:
            self.runner.send_message(MSG.STOP, None)
            return
        bound = self.collect_bound_s
        deadline = time.monotonic() + bound
        pending = {c.id for c in self.runner.clients.all if c.state != STATE_MISSING}
        for node in pending:
            self._reply(MSG.STOP, {}, node)
        waiting = set(pending)
        while waiting and time.monotonic() < deadline:
            gevent.sleep(0.05)
            connected = {c.id for c in self.runner.clients.all}
            waiting = {n for n in pending if n not in self.flushed and n in connected}
        assert self.sink is not None
        self.notes.extend(unconfirmed_workers(self.sink.stats, pending, self.flushed, waiting, bound))

    @property
    def collect_bound_s(self) -> float:
        """How long the master waits for the workers' last records: the stop timeout (users finish their
        requests in flight), then ``flush_grace_s`` for the records to travel."""
        return float(getattr(self.environment, "stop_timeout", 0.0) or 0.0) + self.flush_grace_s

    def _wait_for_locust_stats(self) -> None:
        """Workers report Locust's statistics every few seconds; wait until they cover every record."""
        deadline = time.monotonic() + self.stats_wait_s
        rows = self.sink.stats.rows if self.sink else 0
        while self.runner.stats.total.num_requests < rows and time.monotonic() < deadline:
            gevent.sleep(0.1)

    def on_quitting(self, environment: Any, **_: Any) -> None:
        """Locust is exiting: a test still running was interrupted (Ctrl-C, SIGTERM: collect and write it
        all the same); a stop under way is waited for (bounded), never cut short."""
        self.quitting = True
        if self.run is None or self.sink is None:
            return
        if self.finalizing:
            self._final.wait(timeout=self.collect_bound_s + self.stats_wait_s + 30)
        if not self.finalized:
            self.finalize("finished" if self.stopping else "interrupted")
        self.sink.close()
        self.exit_code = self._exit_code(log=True)
        self.write_run()
        self.write_progress()
        if self._progress is not None:
            self._progress.kill(block=False)
        if self.exit_code:
            environment.process_exit_code = self.exit_code

    def lost(self) -> dict[str, int]:
        """Records each worker made but the master never received (by worker)."""
        assert self.sink is not None
        return lost_records(self.flushed, self.sink.stats)

    def _exit_code(self, log: bool) -> int | None:
        """The end-of-run checks (:mod:`loadtest.endchecks`): sets ``problems``; the exit code they call
        for (None: all good)."""
        assert self.sink is not None
        sequential = self.sequential
        self.problems, code = end_checks(
            self.sink.stats, notes=self.notes, lost=self.lost(), locust_requests=self.runner.stats.total.num_requests,
            interrupted=self.status == "interrupted",
            exit_code_on_error=int(getattr(self.environment.parsed_options, "exit_code_on_error", 1) or 1),
            sequential_exit=sequential.exit_code if sequential is not None and sequential.ended else None)
        if log:
            for problem in self.problems:
                logger.error("canary: %s", problem)
            if self.status == "interrupted":
                stop = self.interruption()
                logger.warning("canary: the run was interrupted%s after %d requests; every record is in %s "
                               "(exit code %s)", f" by {stop.signal} at {stop.at}" if stop.signal else "",
                               self.sink.stats.rows, self.run.root if self.run else "the run directory", code)
        return code

    # --- files ---------------------------------------------------------------------

    def interruption(self) -> InterruptionRecord:
        """run.json's ``interrupted`` section (for an interrupted test)."""
        cut = self.sink.stats.by_outcome.get("interrupted", 0) if self.sink else 0
        if self.signalled is None:
            rows = self.sink.stats.rows if self.sink else 0  # Locust quit without a signal (an error): at the end
            return InterruptionRecord(signal=None, at=self.ended_at or None, requests=rows, in_flight=cut)
        signalled, rows = self.signalled
        return InterruptionRecord(signal=signalled.signal, at=signalled.at, requests=rows, in_flight=cut)

    def write_progress(self) -> None:
        if self.run is None or self.sink is None:
            return
        stats = self.sink.stats
        parsed = self.environment.parsed_options
        self.run.write_progress({
            "state": self.status,
            "elapsed_s": round(time.monotonic() - self.started_monotonic, 3),
            "run_time_s": getattr(parsed, "run_time", None),
            "target_requests": self.options.requests or None,
            "requests": stats.rows,
            "failed": stats.by_outcome.get("failed", 0),
            "unknown": stats.by_outcome.get("unknown", 0),
            "by_subset": dict(sorted(stats.by_subset.items())),
            "users": int(getattr(self.runner, "user_count", 0) or 0),
            "exit_code": self.exit_code,
        })

    def write_run(self) -> None:
        if self.run is not None:
            self.run.write_run(self.document())

    def document(self) -> RunDocument:
        """The run.json document (see reports/README.md)."""
        return run_document(self)

