"""The canary plugin for Locust: options, the run lifecycle, and the ``on_records`` hooks.

:func:`install` (the locustfile calls it) adds the canary options to Locust's
parser and, at ``init``, sets up each process by its role:

* the master, or a local run: loads the payloads, calibrates (``--calibration
  FILE``, else the local mesh's pods per subset), parses ``--expected`` into
  ``environment.canary_expected`` and starts a :class:`loadtest.master.MasterSide`
  (``environment.canary_master``);
* a worker, or a local run: loads the payloads, prepares every request and
  starts a :class:`loadtest.worker.WorkerSide` (``environment.canary_worker``).

``on_records`` is the one coupling point for the web UI: every hook in it is
called with each batch of records the master (or local run) accepts.

Users in flight when a test stops finish their request: unless
``--stop-timeout`` is given, it is set to 30 s, so every request Envoy saw
gets its record (one still in flight then is recorded as ``interrupted``).
Ctrl-C and SIGTERM stop the test at a safe point and keep every record
(:mod:`loadtest.interrupt`, installed first at ``init`` in every process); an
interrupted run exits 130.

Locust's web UI listens on 127.0.0.1 (loopback) unless ``--web-host`` says
otherwise (``--web-host 0.0.0.0`` for every interface): the plugin sets the
option's default where Locust lets a locustfile change its options
(``init_command_line_parser``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from locust.runners import LocalRunner, MasterRunner, WorkerRunner

from canary.errors import CanaryError, UsageError
from canary.stats import expectations_by_group
from loadtest.calibration import (
    calibrate_serving,
    check_payloads,
    load_calibration,
    mesh_servers,
    mesh_to_calibrate,
)
from loadtest.fingerprint import Calibration
from loadtest.interrupt import install as install_interrupts
from loadtest.master import MasterSide
from loadtest.meshinfo import model_metadata, subsets_in_order, try_snapshot
from loadtest.options import CanaryOptions, add_arguments, kube_target, options_from_parsed
from loadtest.sequential import monitor_for
from loadtest.worker import WorkerSide
from mesh.api import MeshSnapshot, reachable_servers
from payloads import PayloadSet, load_payloads

__all__ = ["DRAIN_S", "WEB_HOST", "install", "on_records", "setup_environment"]

logger = logging.getLogger("canary.loadtest")

on_records: list[Callable[[list[dict[str, Any]]], None]] = []
"""Called with each batch of records the master (or the local runner) accepts."""

DRAIN_S = 30.0
WEB_HOST = "127.0.0.1"
"""Where Locust's web UI listens unless ``--web-host`` is given (Locust's own default: every interface)."""
_installed: set[int] = set()


def install(events: Any = None) -> None:
    """Register the plugin on Locust's events (default ``locust.events``); idempotent."""
    if events is None:
        from locust import events as locust_events

        events = locust_events
    if id(events) in _installed:
        return
    _installed.add(id(events))
    events.init_command_line_parser.add_listener(_on_parser)
    events.init.add_listener(_on_init)


def _on_parser(parser: Any, **_: Any) -> None:
    add_arguments(parser)
    parser.set_defaults(web_host=WEB_HOST)  # --web-host and LOCUST_WEB_HOST still win
    for action in getattr(parser, "_actions", ()):
        if action.dest == "web_host":
            action.help = (f"Host to bind the web interface to (canary's default: {WEB_HOST}, loopback only; "
                           "'*' or 0.0.0.0 for every interface)")


def _on_init(environment: Any, runner: Any = None, **_: Any) -> None:
    if runner is None:
        return
    install_interrupts(environment, worker=isinstance(runner, WorkerRunner))  # before anything can be lost
    try:
        setup_environment(environment)
    except CanaryError as error:
        logger.error("canary: %s", error)
        raise SystemExit(error.exit_code) from None


def _select_user_classes(environment: Any, protocol: str) -> None:
    wanted = {"rest": {"rest"}, "grpc": {"grpc"}, "both": {"rest", "grpc"}}[protocol]
    classes = [c for c in environment.user_classes if getattr(c, "protocol", "") in wanted]
    if not classes:
        names = ", ".join(c.__name__ for c in environment.user_classes) or "none"
        raise UsageError(f"--protocol {protocol} leaves no user class to run (given: {names})")
    environment.user_classes = classes


def _calibrate(options: CanaryOptions, payloads: PayloadSet, host: str | None,
               mesh: MeshSnapshot | None) -> tuple[Calibration, dict[str, Any]]:
    if options.calibration is not None:
        calibration = load_calibration(options.calibration)
        check_payloads(calibration, payloads)
        return calibration, {"given": str(options.calibration)}
    mesh = mesh_to_calibrate(host, mesh)
    where = "the local mesh's pods" if mesh.kube is None else f"the cluster's pods ({mesh.kube.describe()}), through port-forwards"
    with reachable_servers(mesh, allow_missing=True) as endpoints:
        missing = sorted(set(mesh.view.subsets()) - set(endpoints))
        if missing:
            logger.warning("canary: subset(s) %s have no ready pod, so they are not calibrated: an answer from "
                           "them would count as unknown", ", ".join(missing))
        logger.info("canary: calibrating against %s (%s)", where, ", ".join(sorted(endpoints)))
        calibration, skipped = calibrate_serving(endpoints, payloads.items, options.protocol)  # type: ignore[arg-type]
        models = model_metadata(endpoints, options.model_name)
    skipped = {**{subset: "no ready pod serves it, so it cannot be asked (an answer from it counts as unknown)"
                  for subset in missing}, **skipped}
    for subset, why in skipped.items():
        if subset not in missing:
            logger.warning("canary: subset %s left out of the calibration (its requests will fail): %s", subset, why)
    # the pods' own addresses (a port-forward's loopback port means nothing after the run)
    recorded = endpoints if mesh.kube is None else mesh_servers(mesh, allow_missing=True)
    origin: dict[str, Any] = {"given": None, "endpoints": recorded, "models": models}
    if mesh.kube is not None:
        origin["through"] = "port-forward"
    if skipped:
        origin["skipped"] = skipped
    return calibration, origin


def setup_environment(environment: Any) -> None:
    """Set up this process's side(s) of the plugin on ``environment`` (its runner must exist)."""
    runner = environment.runner
    options = options_from_parsed(environment.parsed_options)
    _select_user_classes(environment, options.protocol)
    is_worker = isinstance(runner, WorkerRunner)
    kube = kube_target(options, ingress=environment.host or None)
    mesh = None if is_worker else try_snapshot(kube=kube)  # read once: the host, the subsets, the pods to calibrate
    if not environment.host and mesh is not None:
        environment.host = mesh.ingress_url
        logger.info("canary: no --host given; using the %s ingress %s",
                    "local mesh's" if kube is None else "cluster's", environment.host)
    if not environment.stop_timeout:
        environment.stop_timeout = DRAIN_S
    payloads = load_payloads(options.payloads, size=options.payload_size)
    side: WorkerSide | None = None
    if is_worker or isinstance(runner, LocalRunner):
        side = WorkerSide(environment, options, payloads)
        side.register()
        environment.canary_worker = side
    if isinstance(runner, MasterRunner | LocalRunner):
        subsets = subsets_in_order(mesh)
        expected = expectations_by_group(options.expected or "", subsets)
        monitor_for(options, subsets)  # --until-verified: a usage error stops here (exit code 3)
        calibration, origin = _calibrate(options, payloads, environment.host, mesh)
        if expected:
            environment.canary_expected = expected
        master = MasterSide(environment, options, payloads, calibration, origin, on_records, expected)
        master.models = origin.pop("models", {})
        master.subsets = subsets
        master.register()
        environment.canary_master = master
        if side is not None:
            side.set_calibration(calibration)
