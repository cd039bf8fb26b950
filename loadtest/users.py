"""The Locust users: REST (FastHttpUser) and gRPC, with or without the canary header.

Both send prepared bytes (no per-request serialisation), cycling through
every payload x format x path from an offset given by the user's run-wide
index. The master hands out that index in start order (``canary:enroll``), and
the index decides the group (:func:`loadtest.items.group_of`), so the canary
share is exact however Locust spreads users over workers.

gRPC under gevent and fork: :func:`init_grpc_for_gevent` runs once, before
any gRPC object exists (the locustfile calls it at import, before Locust
forks ``--processes`` workers), with ``GRPC_ENABLE_FORK_SUPPORT=0`` and
``GRPC_POLL_STRATEGY=poll`` unless already set; every channel is created in
``on_start``, so after any fork, one per user. A channel created before the
fork makes the forked workers hang (no request sent, or no exit).

A user stopped while its request is in flight finishes it (Locust's
``--stop-timeout``); one the stop timeout kills fires the request event with
:class:`loadtest.recording.RequestInterrupted` on its way out, so the request
is counted by Locust and recorded (status ``interrupted``) all the same.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import gevent
from gevent import GreenletExit
from locust import FastHttpUser, User, constant, task
from locust.dispatch import UsersDispatcher
from locust.runners import WorkerNode

from canary.conventions import GRPC_PREDICT_METHOD
from loadtest.items import PredictItem, grpc_target
from loadtest.recording import (
    META_KEY,
    SERVER_TIME_HEADER,
    SERVER_TIME_KEY,
    RequestInterrupted,
    RequestMeta,
    server_ms,
)
from loadtest.worker import Enrollment, WorkerSide, worker_side

__all__ = ["GrpcUser", "RestUser", "init_grpc_for_gevent", "users_per_protocol"]

_GRPC_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 256 << 20)]
_IDLE_S = 0.1
_state = {"grpc_ready": False}


def init_grpc_for_gevent() -> None:
    """Make grpcio cooperative with gevent; call after Locust's monkey-patching, before any channel."""
    if _state["grpc_ready"]:
        return
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
    os.environ.setdefault("GRPC_POLL_STRATEGY", "poll")
    import grpc.experimental.gevent as grpc_gevent

    grpc_gevent.init_gevent()
    _state["grpc_ready"] = True


class _CanaryMixin:
    """What both users share: enrollment, the request cycle, the request budget."""

    protocol: ClassVar[str] = ""
    environment: Any
    enrollment: Enrollment
    _side: WorkerSide
    _items: list[PredictItem]
    _metas: dict[int, RequestMeta]
    _cursor: int

    def _enroll(self) -> None:
        side = worker_side(self.environment)
        self._side = side
        self.enrollment = side.enroll(self.protocol)
        self._items = side.items[self.protocol]
        # RequestMeta is frozen and depends only on the user and the item: made once per item, not per request
        self._metas = {id(item): self._make_meta(item) for item in self._items}
        self._cursor = self.enrollment.index % len(self._items)
        side.wait_calibrated()

    def _next(self) -> PredictItem | None:
        """The next request, or None when ``--requests`` is spent (the user idles)."""
        side = self._side
        budget = side.budget
        if not budget.take(side.lease_size() if budget.limited else 1):
            gevent.sleep(_IDLE_S)
            return None
        items = self._items
        cursor = self._cursor
        item = items[cursor]
        cursor += 1
        self._cursor = 0 if cursor >= len(items) else cursor
        return item

    def _meta(self, item: PredictItem) -> RequestMeta:
        # keyed by id: self._items keeps every item alive, so an id cannot be reused while it is a key
        meta = self._metas.get(id(item))
        return meta if meta is not None else self._make_meta(item)

    def _interrupted(self, request_type: str, item: PredictItem, start_time: float, started: float,
                     url: str) -> None:
        """The stop timeout killed this user with its request in flight: count and record the request
        (Locust's request event, with :class:`RequestInterrupted`) before the user goes."""
        self.environment.events.request.fire(
            request_type=request_type,
            name=item.name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            response=None,
            exception=RequestInterrupted(float(getattr(self.environment, "stop_timeout", 0) or 0)),
            context={META_KEY: self._meta(item)},
            start_time=start_time,
            url=url,
        )

    def _make_meta(self, item: PredictItem) -> RequestMeta:
        header = self.enrollment.header
        return RequestMeta(
            protocol=self.protocol,
            group=self.enrollment.group,
            header=f"{header[0]}: {header[1]}" if header else "",
            user=self.enrollment.index,
            payload_id=item.payload_id,
            fmt=item.fmt,
            path=item.path,
            versioned=item.versioned,
            label=item.label,
        )


class RestUser(_CanaryMixin, FastHttpUser):
    """TF Serving's REST predict API through the ingress."""

    protocol = "rest"
    wait_time = constant(0)
    network_timeout = 60.0
    connection_timeout = 30.0

    def on_start(self) -> None:
        self._enroll()
        self._headers = {"Content-Type": "application/json"}
        if self.enrollment.header:
            self._headers[self.enrollment.header[0]] = self.enrollment.header[1]

    @task
    def predict(self) -> None:
        item = self._next()
        if item is None:
            return
        start_time, started = time.time(), time.perf_counter()
        try:
            self.client.post(item.path, data=item.body, headers=self._headers, name=item.name,
                             context={META_KEY: self._meta(item)})
        except GreenletExit:
            self._interrupted("POST", item, start_time, started, f"{self.host}{item.path}")
            raise


class GrpcUser(_CanaryMixin, User):
    """``tensorflow.serving.PredictionService/Predict`` through the ingress, one channel per user."""

    protocol = "grpc"
    wait_time = constant(0)
    timeout_s = 60.0

    def on_start(self) -> None:
        init_grpc_for_gevent()
        import grpc

        self._enroll()
        self._rpc_error: type[BaseException] = grpc.RpcError
        self._target = grpc_target(self.host)
        self._channel = grpc.insecure_channel(self._target, options=_GRPC_OPTIONS)
        # no serializers: prepared PredictRequest bytes go out as they are, the response comes back as bytes
        self._predict = self._channel.unary_unary(GRPC_PREDICT_METHOD)
        self._url = f"grpc://{self._target}{GRPC_PREDICT_METHOD}"
        header = self.enrollment.header
        self._metadata = ((header[0].lower(), header[1]),) if header else None

    def on_stop(self) -> None:
        channel = getattr(self, "_channel", None)
        if channel is not None:
            channel.close()

    @task
    def predict(self) -> None:
        item = self._next()
        if item is None:
            return
        exception: BaseException | None = None
        response: bytes | None = None
        upstream_ms: float | None = None
        start_time = time.time()
        started = time.perf_counter()
        try:
            response, call = self._predict.with_call(item.body, timeout=self.timeout_s, metadata=self._metadata)
            upstream_ms = server_ms(next((v for k, v in call.initial_metadata() or () if k == SERVER_TIME_HEADER), None))
        except self._rpc_error as error:
            exception = error
        except GreenletExit:
            self._interrupted("grpc", item, start_time, started, self._url)
            raise
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.environment.events.request.fire(
            request_type="grpc",
            name=item.name,
            response_time=elapsed_ms,
            response_length=len(response) if response is not None else 0,
            response=response,
            exception=exception,
            context={META_KEY: self._meta(item), SERVER_TIME_KEY: upstream_ms},
            start_time=start_time,
            url=self._url,
        )


def users_per_protocol(users: int, protocols: Sequence[str], processes: int | None = None) -> dict[str, int]:
    """How many users of each protocol ``-u users`` starts, as Locust's own dispatcher spreads them
    over the user classes: by weight, in class-name order, so ``-u 1`` with both protocols starts
    one gRPC user and no REST user. The totals are the same over any number of ``processes``."""
    classes = [c for c in (GrpcUser, RestUser) if c.protocol in protocols]
    protocol_of = {c.__name__: c.protocol for c in classes}
    dispatcher = UsersDispatcher([WorkerNode(f"worker-{i}") for i in range(max(1, processes or 1))], classes)
    dispatcher.new_dispatch(users, spawn_rate=max(1, users))  # one step: no wait between steps
    *_, spread = dispatcher  # the users on each worker once the dispatch is done
    out = dict.fromkeys(protocols, 0)
    for per_class in spread.values():
        for name, n in per_class.items():
            out[protocol_of[name]] += n
    return out
