"""Ctrl-C and SIGTERM in the load test's Locust processes: stop at a safe point, keep every record.

Python turns SIGINT into a ``KeyboardInterrupt`` raised in whichever greenlet
happens to run when it lands: a user between Locust's count of its request and
the record of it, a worker's shipper between taking a batch of records and
sending it, the master's message loop. Each loses records (the master then
cannot even tell how many), and a terminal's Ctrl-C reaches the master and
every ``--processes`` worker at once. :func:`install` (the plugin calls it at
``init``, in every process) takes SIGINT and SIGTERM over with gevent signal
handlers, which run in a greenlet of their own, and hands the stop to Locust's
main greenlet, where Locust's own shutdown runs (``quitting``), never into
another greenlet (:func:`decide` says what each process does):

* master or local run, test running: the signal and its time are noted, then
  Locust shuts down. The master side (``quitting``) asks every worker to stop
  its users (each finishes the request in flight, at most ``--stop-timeout``;
  one cut short is recorded as ``interrupted``), waits for every worker's last
  records and Locust's count of them, and writes run.json with status
  ``interrupted``, ``interrupted: {signal, at, ...}`` and exit code 130
  (:attr:`canary.conventions.ExitCode.INTERRUPTED`).
* master or local run, the test already ending (run time, ``--requests``,
  ``--until-verified``) or Locust already shutting down: the signal is told
  and otherwise left alone; the stop under way is bounded. After a test has
  ended (web UI), Ctrl-C quits Locust as it always did.
* headless, before the test started (calibrating, waiting for workers):
  nothing was sent; the process exits 130 at once.
* worker: Locust shuts the worker down; its side stops the users (requests in
  flight finish), hands every record and Locust's last statistics to the
  master, then the worker quits. When the master stops the test (its own
  signal) the worker does the same through the master's messages; whichever
  comes first, the records are handed over once, complete.

Locust installs its own SIGTERM handler after the plugin's, which starts the
same shutdown; the plugin's handler then only notes the signal.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import gevent

from canary.conventions import ExitCode, utc_now

__all__ = ["Action", "Interruption", "Interrupts", "Stoppable", "decide", "hand_to_main", "install"]

logger = logging.getLogger("canary.loadtest")

Action = Literal["note", "shutdown", "exit"]
SIGNALS = (signal.SIGINT, signal.SIGTERM)
LOCUST_SIGTERM_S = 0.2
"""How long the SIGTERM handler leaves Locust's own handler to begin its shutdown before acting itself."""


@dataclass(frozen=True)
class Interruption:
    """A signal the load test got: which, and when (ISO 8601 UTC)."""

    signal: str
    at: str


class Stoppable(Protocol):
    """What :func:`decide` reads of a process's side of the plugin."""

    @property
    def quitting(self) -> bool: ...  # Locust's shutdown (``quitting``) has begun

    @property
    def ending(self) -> bool: ...  # the test is ending for its own reason (master)

    @property
    def test_running(self) -> bool: ...  # a test is under way (master)

    @property
    def tests(self) -> int: ...  # tests started so far (master)


def decide(side: Stoppable | None, *, worker: bool, headless: bool) -> Action:
    """What a signal does in this process: ``note`` it (a stop is under way), hand Locust's main
    greenlet a ``shutdown`` (KeyboardInterrupt, as Locust expects), or ``exit`` 130 at once."""
    if side is None:
        return "exit"  # the plugin is still setting up (loading payloads, calibrating): nothing was sent
    if side.quitting:
        return "note"
    if worker:
        return "shutdown"
    if side.ending:
        return "note"
    if side.test_running:
        return "shutdown"
    return "exit" if headless and side.tests == 0 else "shutdown"


class Interrupts:
    """The signal handlers of one Locust process (see the module docstring)."""

    def __init__(self, environment: Any, *, worker: bool) -> None:
        self.environment = environment
        self.worker = worker
        self.first: Interruption | None = None
        self.count = 0
        self._handlers: list[Any] = []

    @property
    def headless(self) -> bool:
        return bool(getattr(self.environment.parsed_options, "headless", False))

    def install(self) -> None:
        self._handlers = [gevent.signal_handler(sig, self.on_signal, sig) for sig in SIGNALS]

    def cancel(self) -> None:
        for handler in self._handlers:
            handler.cancel()
        self._handlers = []

    def side(self) -> Any:
        """This process's side of the plugin (a local run's is its master side); None while it is set up."""
        return getattr(self.environment, "canary_worker" if self.worker else "canary_master", None)

    def on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        self.count += 1
        interruption = Interruption(name, utc_now())
        self.first = self.first or interruption
        side = self.side()
        note = getattr(side, "note_signal", None)
        if callable(note):
            note(interruption)
        if side is not None and not self.worker and self.headless and getattr(side, "tests", 1) == 0:
            self.environment.process_exit_code = int(ExitCode.INTERRUPTED)
        if signum == signal.SIGTERM:
            gevent.sleep(LOCUST_SIGTERM_S)  # Locust's own handler (from the start of the test) shuts down
        action = decide(side, worker=self.worker, headless=self.headless)
        if action == "note":
            logger.warning("canary: %s: already stopping; requests in flight finish (at most the stop timeout) "
                           "and every record is collected before Locust exits", name)
        elif action == "exit":
            logger.warning("canary: %s before the test started: nothing was sent; exiting (exit code %d)",
                           name, int(ExitCode.INTERRUPTED))
            hand_to_main(SystemExit(int(ExitCode.INTERRUPTED)))
        else:
            if not self.worker and getattr(side, "test_running", False):
                logger.warning("canary: %s: stopping the test; requests in flight finish and every record is "
                               "kept (exit code %d)", name, int(ExitCode.INTERRUPTED))
            hand_to_main(KeyboardInterrupt())


def hand_to_main(exception: BaseException) -> None:
    """Raise ``exception`` in the main greenlet (where Locust waits for its runner, or sets up), from the
    hub, as gevent hands over a KeyboardInterrupt: never in a user, the shipper or a message loop."""
    hub = gevent.get_hub()
    hub.loop.run_callback(hub.parent.throw, exception)


def install(environment: Any, *, worker: bool) -> Interrupts:
    """Take SIGINT and SIGTERM over in this Locust process; idempotent per environment."""
    found = getattr(environment, "canary_interrupts", None)
    if isinstance(found, Interrupts):
        return found
    interrupts = Interrupts(environment, worker=worker)
    interrupts.install()
    environment.canary_interrupts = interrupts
    return interrupts
