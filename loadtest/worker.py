"""The traffic side of the plugin: on each Locust worker, or in a local (single-process) run.

It holds the prepared requests, attributes each response (Locust ``request``
event -> :func:`loadtest.recording.make_row`), numbers the records and ships
them to the master in batches at least twice a second with Locust's custom
messages (``runner.send_message``). In a local run the same messages reach
the master side in-process.

Messages (all carry plain msgpack-able data):

``canary:records``      worker -> master  ``{"worker", "rows": [record, ...]}``
``canary:flushed``      worker -> master  ``{"worker", "produced", "last_seq"}``: nothing left to send
``canary:enroll``       worker -> master  ``{"token", "protocol"}``: a user asks for its run-wide index
``canary:enrolled``     master -> worker  ``{"token", "index", "group", "header"}``
``canary:lease``        worker -> master  ``{"worker", "want"}``: request tokens (``--requests``)
``canary:grant``        master -> worker  ``{"n"}`` (0: the budget is spent)
``canary:calibration``  master -> worker  ``{"json"}``: the calibration to attribute with
``canary:need-calibration`` worker -> master: a late worker asks for it
``canary:stop``         master -> worker: stop users (gracefully), ship everything, answer ``flushed``

When Locust shuts the worker down (the master's quit, or Ctrl-C / SIGTERM to
the worker: :mod:`loadtest.interrupt`), ``quitting`` does the same, then sends
Locust's last statistics, so the master's count covers every record. A stop
already under way (the master's ``canary:stop`` and the worker's own signal
at once) is waited for, not repeated: the records are handed over once,
complete.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
from locust.runners import (
    STATE_CLEANUP,
    STATE_RUNNING,
    STATE_SPAWNING,
    STATE_STOPPING,
    WorkerRunner,
)

from canary.errors import CanaryError
from loadtest.budget import BudgetClient
from loadtest.calibration import check_payloads
from loadtest.fingerprint import Calibration, Fingerprinter
from loadtest.items import PredictItem, build_items, group_of
from loadtest.options import CanaryOptions, options_from_parsed
from loadtest.recording import META_KEY, SERVER_TIME_KEY, RequestMeta, make_row
from payloads import PayloadSet

__all__ = ["MSG", "Enrollment", "WorkerSide", "worker_side"]

logger = logging.getLogger("canary.loadtest")


class MSG:
    """Message types."""

    RECORDS = "canary:records"
    FLUSHED = "canary:flushed"
    ENROLL = "canary:enroll"
    ENROLLED = "canary:enrolled"
    LEASE = "canary:lease"
    GRANT = "canary:grant"
    CALIBRATION = "canary:calibration"
    NEED_CALIBRATION = "canary:need-calibration"
    STOP = "canary:stop"


@dataclass(frozen=True)
class Enrollment:
    """A user's place in the run: its index decides its group."""

    index: int
    group: str
    header: tuple[str, str] | None  # sent by canary users only


class WorkerSide:
    """Prepared requests, attribution and record shipping for one worker process."""

    ship_interval_s = 0.5
    enroll_timeout_s = 10.0
    calibration_timeout_s = 120.0
    stop_wait_s = 5.0  # beyond the stop timeout, for a stop under way to end

    def __init__(self, environment: Any, options: CanaryOptions, payloads: PayloadSet) -> None:
        self.environment = environment
        self.runner = environment.runner
        self.options = options
        self.payloads = payloads
        self.worker_id = str(self.runner.client_id) if isinstance(self.runner, WorkerRunner) else "local"
        self.items: dict[str, list[PredictItem]] = {
            p: build_items(payloads, p, options.model_name, options.model_version) for p in ("rest", "grpc")
        }
        self.fingerprinter: Fingerprinter | None = None
        self.calibrated = gevent.event.Event()
        self.budget = BudgetClient(self._request_lease)
        self.seq = 0
        self.produced = 0
        self.started = False
        self._buffer: list[dict[str, Any]] = []
        self._enrollments: dict[str, gevent.event.AsyncResult] = {}
        self._local_counts = {"rest": 0, "grpc": 0}
        self._shipper: gevent.Greenlet | None = None
        self._asked_calibration = False
        self.calibration_problem = ""
        self.quitting = False  # Locust's shutdown of this process has begun

    # --- wiring --------------------------------------------------------------------

    def register(self) -> None:
        """Listen to the master's messages and to Locust's request and lifecycle events."""
        runner = self.runner
        runner.register_message(MSG.ENROLLED, self._on_enrolled)
        runner.register_message(MSG.GRANT, self._on_grant)
        runner.register_message(MSG.CALIBRATION, self._on_calibration)
        runner.register_message(MSG.STOP, self._on_stop, concurrent=True)
        events = self.environment.events
        events.request.add_listener(self.on_request)
        events.test_start.add_listener(self.on_test_start)
        events.test_stop.add_listener(self.on_test_stop)
        events.quitting.add_listener(self.on_quitting)

    def _send(self, kind: str, data: dict[str, Any]) -> None:
        try:
            self.runner.send_message(kind, data)
        except Exception as error:  # the connection to the master may be gone
            logger.error("canary: could not send %s to the master: %s", kind, error)

    # --- calibration ---------------------------------------------------------------

    def set_calibration(self, calibration: Calibration) -> None:
        check_payloads(calibration, self.payloads)
        self.fingerprinter = Fingerprinter(calibration)
        self.calibrated.set()

    def _on_calibration(self, environment: Any, msg: Any, **_: Any) -> None:
        try:
            self.set_calibration(Calibration.from_json(msg.data["json"], where="the master's calibration"))
        except CanaryError as error:
            logger.error("canary: %s", error)
            self.calibration_problem = str(error)
            self.calibrated.set()  # users go on; their responses are recorded as unknown, with the reason

    # --- the test ------------------------------------------------------------------

    def on_test_start(self, environment: Any, **_: Any) -> None:
        try:
            self.options = options_from_parsed(environment.parsed_options)
        except CanaryError as error:
            logger.error("canary: %s (keeping the previous options)", error)
        self.budget.reset(bool(self.options.requests))
        if self._buffer:  # cannot happen: test_stop ships everything; never mix two tests' numbering
            logger.error("canary: %d records of the previous test were never shipped", len(self._buffer))
        self.seq = 0
        self.produced = 0
        self._buffer = []
        self._local_counts = {"rest": 0, "grpc": 0}
        self.started = True
        if not self.calibrated.is_set() and not self._asked_calibration and isinstance(self.runner, WorkerRunner):
            self._asked_calibration = True
            self._send(MSG.NEED_CALIBRATION, {"worker": self.worker_id})
        if self._shipper is None or self._shipper.dead:
            self._shipper = gevent.spawn(self._ship_loop)

    def on_request(self, request_type: str, name: str, response_time: float, response_length: int,
                   response: Any = None, context: dict[str, Any] | None = None,
                   exception: BaseException | None = None, start_time: float | None = None, **_: Any) -> None:
        meta = (context or {}).get(META_KEY)
        row = make_row(
            meta if isinstance(meta, RequestMeta) else None,
            request_type=request_type, name=name, response_time=response_time,
            response_length=response_length, response=response, exception=exception,
            start_time=start_time if start_time is not None else time.time(),
            fingerprinter=self.fingerprinter, worker=self.worker_id, seq=self.seq,
            upstream_ms=(context or {}).get(SERVER_TIME_KEY),
        )
        if self.fingerprinter is None and self.calibration_problem and row["ok"]:
            row["error"] = self.calibration_problem
        self.seq += 1
        self.produced += 1
        self._buffer.append(row)

    def ship(self) -> None:
        """Send the buffered records now."""
        if not self._buffer:
            return
        rows, self._buffer = self._buffer, []
        self._send(MSG.RECORDS, {"worker": self.worker_id, "rows": rows})

    def _ship_loop(self) -> None:
        while True:
            gevent.sleep(self.ship_interval_s)
            try:
                self.ship()
            except Exception:
                logger.exception("canary: shipping records failed")

    def _flushed(self) -> None:
        self.ship()
        self._send(MSG.FLUSHED, {"worker": self.worker_id, "produced": self.produced, "last_seq": self.seq - 1})

    def stop_users(self) -> None:
        """Stop this process's users; each finishes its request in flight (at most the stop timeout, then
        it is recorded as interrupted). A stop already under way is waited for (bounded), not repeated."""
        runner = self.runner
        if runner.state in (STATE_RUNNING, STATE_SPAWNING):
            runner.stop()
            return
        bound = float(getattr(self.environment, "stop_timeout", 0.0) or 0.0) + self.stop_wait_s
        deadline = time.monotonic() + bound
        while runner.state in (STATE_CLEANUP, STATE_STOPPING) and time.monotonic() < deadline:
            gevent.sleep(0.05)

    def _on_stop(self, environment: Any, msg: Any, **_: Any) -> None:
        self.stop_users()
        self._flushed()
        self._send_locust_stats()  # the master's count covers every record now, not at the next report

    def on_test_stop(self, environment: Any, **_: Any) -> None:
        self.ship()

    def on_quitting(self, environment: Any, **_: Any) -> None:
        self.quitting = True
        if self.started:
            self.stop_users()  # Ctrl-C, SIGTERM, the master's quit: requests in flight finish and are recorded
            self._flushed()
            self._send_locust_stats()
        if self._shipper is not None:
            self._shipper.kill(block=False)

    def _send_locust_stats(self) -> None:
        """Locust's statistics report, now (Locust sends one every few seconds, and on the master's quit)."""
        send = getattr(self.runner, "_send_stats", None)
        if isinstance(self.runner, WorkerRunner) and callable(send):
            try:
                send()
            except Exception as error:  # the connection to the master may be gone
                logger.error("canary: could not send Locust's last statistics to the master: %s", error)

    # --- what users ask ------------------------------------------------------------

    def wait_calibrated(self) -> bool:
        return bool(self.calibrated.wait(self.calibration_timeout_s))

    def enroll(self, protocol: str) -> Enrollment:
        """The user's run-wide index and group, from the master (a local guess if it does not answer)."""
        local = self._local_counts[protocol]
        self._local_counts[protocol] = local + 1
        token = uuid.uuid4().hex
        result = self._enrollments[token] = gevent.event.AsyncResult()
        try:
            self._send(MSG.ENROLL, {"token": token, "protocol": protocol})
            data = result.get(timeout=self.enroll_timeout_s)
            header = tuple(data["header"]) if data.get("header") else None
            return Enrollment(int(data["index"]), str(data["group"]), (header[0], header[1]) if header else None)
        except gevent.Timeout:
            workers = max(1, int(getattr(self.environment.parsed_options, "expect_workers", 1) or 1))
            index = local * workers + max(0, int(getattr(self.runner, "worker_index", 0)))
            group = group_of(index, self.options.canary_share)
            logger.warning("canary: the master did not answer an enrollment; user %d guesses group %s", index, group)
            return Enrollment(index, group, self.options.header if group == "canary" else None)
        finally:
            self._enrollments.pop(token, None)

    def _on_enrolled(self, environment: Any, msg: Any, **_: Any) -> None:
        result = self._enrollments.get(str(msg.data.get("token")))
        if result is not None:
            result.set(msg.data)

    def _request_lease(self, want: int) -> None:
        self._send(MSG.LEASE, {"worker": self.worker_id, "want": want})

    def _on_grant(self, environment: Any, msg: Any, **_: Any) -> None:
        self.budget.on_grant(int(msg.data.get("n", 0)))

    def lease_size(self) -> int:
        return max(1, 2 * int(getattr(self.runner, "user_count", 1) or 1))


def worker_side(environment: Any) -> WorkerSide:
    """The :class:`WorkerSide` of this process (the plugin sets it at ``init``)."""
    side = getattr(environment, "canary_worker", None)
    if not isinstance(side, WorkerSide):
        raise CanaryError(
            "the canary users need the canary plugin: run them with `locust -f loadtest/locustfile.py`"
        )
    return side
