"""A locustfile for the browser test: synthetic records, no mesh.

Each user sends, every 0.2 s, a batch of 20 records to the hooks the Canary
tab registered on, as ``loadtest.plugin`` does with the records the master
receives: REST and gRPC, the default group split 70/30 between resnet50 and
resnet101, the canary group all on resnet101. It also reports each batch as one
Locust request so the usual tabs move too. The expected shares are set on
``environment.canary_expected`` as the plugin does.
"""

from __future__ import annotations

import random
import time
from typing import Any

from locust import User, constant, events, task

from canary.stats import parse_expected
from loadtest.live import LiveCounts
from loadtest.webui import RecordHook, register

SUBSETS = ("resnet50", "resnet101")
BATCH = 20

on_records: list[RecordHook] = []
live = LiveCounts()


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    environment.canary_expected = {
        "default": parse_expected("70/30", SUBSETS),
        "canary": parse_expected("resnet101=100", SUBSETS),
    }
    register(environment, live, hooks=on_records)


def synthetic_batch(rng: random.Random, size: int = BATCH) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for _ in range(size):
        group = "canary" if rng.random() < 0.25 else "default"
        if group == "canary":
            subset = "resnet101"
        else:
            subset = "resnet50" if rng.random() < 0.7 else "resnet101"
        rows.append({"protocol": rng.choice(("rest", "grpc")), "group": group, "subset": subset})
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
