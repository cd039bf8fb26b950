"""Ctrl-C and SIGTERM in the load test's processes, without a mesh: who does what, a killed request's
record, and the end-of-run checks an interrupted run goes through.

The runs interrupted on the local mesh (records = Locust's count = Envoy's, exit code 130) are in
test_loadtest_distributed.py. The signal tests here send real signals to this (gevent) process, with
the handlers :mod:`loadtest.interrupt` installs, and put Python's own handlers back after each.
"""

from __future__ import annotations

import os
import signal
import types
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import gevent
import pytest

from canary.conventions import ExitCode
from canary.rundir.records import INTERRUPTED_STATUS, OUTCOMES, outcome
from loadtest.endchecks import end_checks, unconfirmed_workers
from loadtest.interrupt import Interrupts, decide, hand_to_main
from loadtest.recording import RequestInterrupted, RequestMeta, make_row
from loadtest.records import SinkStats, WorkerTally
from loadtest.users import GrpcUser, RestUser, _CanaryMixin


@dataclass
class Side:
    """What :func:`decide` reads of a process's side of the plugin."""

    quitting: bool = False
    ending: bool = False
    test_running: bool = False
    tests: int = 1
    noted: list[Any] | None = None

    def note_signal(self, interruption: Any) -> None:
        self.noted = [*(self.noted or []), interruption]


@pytest.mark.parametrize(("side", "worker", "headless", "action"), [
    (None, False, True, "exit"),  # still setting up (calibrating): nothing was sent
    (None, True, False, "exit"),
    (Side(quitting=True, test_running=True), False, True, "note"),  # Locust is already shutting down
    (Side(ending=True, test_running=True), False, True, "note"),  # --requests / -t / --until-verified stop
    (Side(test_running=True), False, True, "shutdown"),  # the run is interrupted: collect, write, exit 130
    (Side(test_running=True), False, False, "shutdown"),  # web UI: Ctrl-C quits Locust
    (Side(tests=0), False, True, "exit"),  # headless before the test started
    (Side(tests=0), False, False, "shutdown"),  # an idle web UI quits as it always did
    (Side(tests=2), False, False, "shutdown"),  # after a test ended
    (Side(), True, False, "shutdown"),  # a worker: Locust's shutdown hands every record over first
    (Side(quitting=True), True, False, "note"),
])
def test_what_a_signal_does(side: Side | None, worker: bool, headless: bool, action: str) -> None:
    assert decide(side, worker=worker, headless=headless) == action


def test_the_stop_reaches_the_main_greenlet_only() -> None:
    """A user, the shipper or a message loop never gets the KeyboardInterrupt: they go on running."""
    ticks: list[int] = []

    def busy() -> None:
        for i in range(100):
            ticks.append(i)
            gevent.sleep(0.01)

    other = gevent.spawn(busy)
    gevent.spawn(hand_to_main, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        gevent.sleep(5)
    assert not other.dead
    seen = len(ticks)
    gevent.sleep(0.05)
    assert len(ticks) > seen  # still running after the main greenlet got the stop
    other.kill()


@pytest.fixture
def handlers() -> Iterator[list[Interrupts]]:
    """Interrupts installed in a test; Python's own SIGINT/SIGTERM handling put back afterwards."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    installed: list[Interrupts] = []
    try:
        yield installed
    finally:
        for interrupts in installed:
            interrupts.cancel()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _install(handlers: list[Interrupts], side: Side | None, *, headless: bool = True,
             worker: bool = False) -> Interrupts:
    environment = SimpleNamespace(parsed_options=SimpleNamespace(headless=headless), process_exit_code=None)
    if side is not None:
        setattr(environment, "canary_worker" if worker else "canary_master", side)
    interrupts = Interrupts(environment, worker=worker)
    interrupts.install()
    handlers.append(interrupts)
    return interrupts


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_a_test_shuts_locust_down_from_its_main_greenlet(handlers: list[Interrupts],
                                                                          sig: signal.Signals) -> None:
    side = Side(test_running=True)
    interrupts = _install(handlers, side)
    os.kill(os.getpid(), sig)
    with pytest.raises(KeyboardInterrupt):  # where Locust's main waits: Locust's own shutdown follows
        gevent.sleep(5)
    assert interrupts.first is not None and interrupts.first.signal == sig.name
    assert side.noted is not None and side.noted[0].signal == sig.name and side.noted[0].at.endswith("Z")


def test_a_signal_while_the_test_ends_is_only_told(handlers: list[Interrupts]) -> None:
    _install(handlers, Side(test_running=True, ending=True))
    os.kill(os.getpid(), signal.SIGINT)
    gevent.sleep(0.3)  # no KeyboardInterrupt: the stop under way goes on


def test_locusts_own_sigterm_shutdown_is_left_to_run(handlers: list[Interrupts]) -> None:
    """Locust's SIGTERM handler (installed after the plugin's) starts the shutdown; the plugin only notes it."""
    side = Side(test_running=True)
    interrupts = _install(handlers, side)
    locusts = gevent.signal_handler(signal.SIGTERM, lambda: setattr(side, "quitting", True))
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        gevent.sleep(0.5)
    finally:
        locusts.cancel()
    assert interrupts.first is not None and interrupts.first.signal == "SIGTERM"


def test_before_the_test_headless_exits_130(handlers: list[Interrupts]) -> None:
    interrupts = _install(handlers, Side(tests=0))
    os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(SystemExit) as stopped:
        gevent.sleep(5)
    assert stopped.value.code == ExitCode.INTERRUPTED == 130
    assert interrupts.environment.process_exit_code == 130  # also when Locust's own SIGTERM shutdown runs


# --- a request the stop timeout cuts short --------------------------------------------------------


def _meta() -> RequestMeta:
    return RequestMeta(protocol="rest", group="canary", header="user-group: canary", user=3, payload_id="p",
                       fmt="b64", path="/v1/models/image_classifier:predict", versioned=False, label=652)


def test_an_interrupted_request_is_a_record_that_says_so() -> None:
    row = make_row(_meta(), request_type="POST", name="x", response_time=30012.0, response_length=0,
                   response=None, exception=RequestInterrupted(30.0), start_time=1_800_000_000.0,
                   fingerprinter=None, worker="w", seq=5)
    assert (row["status"], row["ok"], row["subset"]) == (INTERRUPTED_STATUS, False, "error")
    assert "stop timeout (30 s after the stop)" in row["error"] and "may or may not have counted it" in row["error"]
    assert outcome(row["ok"], row["subset"], row["status"]) == "interrupted"
    assert [outcome(True, "resnet50", "200"), outcome(True, "unknown", "200"), outcome(False, "error", "503"),
            outcome(False, "error", "interrupted")] == list(OUTCOMES)


@pytest.mark.parametrize("user_class", [RestUser, GrpcUser])
def test_a_user_killed_mid_request_counts_and_records_it(user_class: type) -> None:
    """The stop timeout kills the user's greenlet while its request waits for an answer: the request
    event still fires (Locust counts it, the plugin records it), then the user goes."""
    fired: list[dict[str, Any]] = []
    item = SimpleNamespace(name="b64 /v1/models/image_classifier:predict", path="/v1/models/image_classifier:predict",
                           body=b"{}")
    user = SimpleNamespace(
        environment=SimpleNamespace(stop_timeout=2.0, events=SimpleNamespace(
            request=SimpleNamespace(fire=lambda **kw: fired.append(kw)))),
        host="http://127.0.0.1:9", _url="grpc://127.0.0.1:9/Predict", _metadata=None, timeout_s=60.0,
        _rpc_error=type("RpcError", (Exception,), {}),
        _next=lambda: item, _meta=lambda _: _meta(), _headers={},
        client=SimpleNamespace(post=lambda *a, **kw: gevent.sleep(30)),
        _predict=SimpleNamespace(with_call=lambda *a, **kw: gevent.sleep(30)),
    )
    user._interrupted = types.MethodType(_CanaryMixin._interrupted, user)
    running = gevent.spawn(user_class.predict, user)
    gevent.sleep(0.05)
    running.kill(block=True, timeout=5)
    assert running.dead and isinstance(running.value, gevent.GreenletExit)  # it went on: the user stopped
    [event] = fired
    assert isinstance(event["exception"], RequestInterrupted) and event["response"] is None
    assert event["name"] == item.name and event["context"]["canary"] == _meta()
    assert event["response_time"] >= 40  # ms it was in flight


# --- the end-of-run checks ------------------------------------------------------------------------


def _stats(rows: int, *, workers: dict[str, WorkerTally] | None = None, **by_outcome: int) -> SinkStats:
    return SinkStats(rows=rows, by_outcome={"attributed": rows, **by_outcome}, workers=workers or {})


def test_an_interrupted_run_exits_130_whatever_it_found() -> None:
    clean = _stats(120)
    assert end_checks(clean, notes=[], lost={}, locust_requests=120, interrupted=True, exit_code_on_error=1,
                      sequential_exit=None) == ([], 130)
    assert end_checks(clean, notes=[], lost={}, locust_requests=120, interrupted=False, exit_code_on_error=1,
                      sequential_exit=None) == ([], None)
    failed = _stats(120, failed=3)
    problems, code = end_checks(failed, notes=[], lost={}, locust_requests=120, interrupted=True,
                                exit_code_on_error=1, sequential_exit=0)
    assert code == 130 and problems == ["3 requests failed (subset 'error'; see the records' status and error)"]
    # --until-verified: an interrupted run is not verified, even if the cells decided so far were
    assert end_checks(clean, notes=[], lost={}, locust_requests=120, interrupted=True, exit_code_on_error=1,
                      sequential_exit=0)[1] == 130


def test_what_was_lost_is_said_precisely() -> None:
    workers = {"w1": WorkerTally(received=60, next_seq=62, missing=2), "w2": WorkerTally(received=58, next_seq=58)}
    problems, code = end_checks(_stats(118, workers=workers, interrupted=1), notes=["a note"], lost={"w2": 5},
                                locust_requests=125, interrupted=False, exit_code_on_error=1, sequential_exit=None)
    assert code == 1
    assert problems[0] == "a note"
    assert ("7 records were lost on the way to the master (made but never received: worker w2: 5; "
            "gaps in the sequence numbers: worker w1: 2)") in problems
    assert "Locust counted 125 requests but 118 records arrived" in problems
    assert any(p.startswith("1 requests were still in flight when the stop timeout ran out") for p in problems)
    fewer = end_checks(_stats(118), notes=[], lost={}, locust_requests=117, interrupted=True,
                       exit_code_on_error=1, sequential_exit=None)[0]
    assert fewer == ["Locust counted 117 requests but 118 records arrived"]  # an interrupted run is not excused


def test_workers_that_never_confirmed_are_named() -> None:
    stats = SinkStats(workers={"w1": WorkerTally(received=40, next_seq=40), "w2": WorkerTally(received=7, next_seq=7),
                               "local": WorkerTally()})
    lines = unconfirmed_workers(stats, asked={"w1", "w2", "w3"}, flushed={"w1"}, timed_out={"w2"}, bound_s=60)
    assert lines == [
        "worker w2 did not confirm its last records within 60 s: 7 of its records arrived (up to seq 6); any it "
        "made after are missing from this run (Locust's count against the records says how many)",
        "worker w3 left (or lost its connection) without confirming its last records: none of its records "
        "arrived; any it made after are missing from this run (Locust's count against the records says how many)",
    ]
