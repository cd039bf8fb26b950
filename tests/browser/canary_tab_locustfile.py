"""A locustfile for the browser test: synthetic records, no mesh.

Each user sends, every 0.2 s, a batch of 20 records to the hooks the Canary
tab registered on, as ``loadtest.plugin`` does with the records the master
receives: REST and gRPC, the default group split 70/30 between resnet50 and
resnet101, the canary group all on resnet101, each with a latency (resnet101
slower, gRPC faster). It also reports each batch as one Locust request so the
usual tabs move too. The canary options are Locust's (start form included), as
with ``loadtest/locustfile.py``; the tab samples its history every 0.5 s so the
charts fill within seconds.
"""

from __future__ import annotations

import random
import time
from typing import Any

from locust import User, constant, events, task

from loadtest.live import LiveCounts
from loadtest.options import add_arguments
from loadtest.webui import RecordHook, register

SUBSETS = ("resnet50", "resnet101")
BATCH = 20
SAMPLE_INTERVAL_S = 0.5

on_records: list[RecordHook] = []
live = LiveCounts(sample_interval_s=SAMPLE_INTERVAL_S)


@events.init_command_line_parser.add_listener
def _on_parser(parser: Any, **_: Any) -> None:
    add_arguments(parser)


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    register(environment, live, hooks=on_records, subsets=SUBSETS)


def synthetic_batch(rng: random.Random, size: int = BATCH) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for _ in range(size):
        group = "canary" if rng.random() < 0.25 else "default"
        if group == "canary":
            subset = "resnet101"
        else:
            subset = "resnet50" if rng.random() < 0.7 else "resnet101"
        protocol = rng.choice(("rest", "grpc"))
        median = (20.0 if subset == "resnet50" else 35.0) * (0.7 if protocol == "grpc" else 1.0)
        latency = median * rng.lognormvariate(0.0, 0.3)
        rows.append({"protocol": protocol, "group": group, "subset": subset, "latency_ms": latency})
    return rows


class SyntheticCanaryUser(User):
    wait_time = constant(0.2)

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.rng = random.Random()

    @task
    def predict(self) -> None:
        start = time.perf_counter()
        rows = synthetic_batch(self.rng)
        for hook in on_records:
            hook(rows)
        self.environment.events.request.fire(
            request_type="SYNTH",
            name="synthetic batch",
            response_time=(time.perf_counter() - start) * 1000,
            response_length=len(rows),
            exception=None,
            context={},
        )
