"""canary's locustfile: REST and gRPC predict traffic, attributed per response, one run directory per test.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080                 # web UI (Canary tab) on
                                                                                  # 127.0.0.1:8089 (--web-host
                                                                                  # 0.0.0.0: every interface)
    locust -f loadtest/locustfile.py --headless -u 20 -r 5 -t 60s --host ...      # CI: non-zero exit on
                                                                                  # failed or unattributed requests,
                                                                                  # 130 when interrupted
    locust -f loadtest/locustfile.py --headless --processes 2 ...                 # or --master / --worker

The canary options (``--protocol``, ``--canary-share``, ``--canary-header``,
``--requests``, ``--payloads``, ``--calibration``, ``--run-dir``, ``--expected``)
are listed by ``--help``. ``canary load`` runs this file headless.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import loadtest  # noqa: F401
except ModuleNotFoundError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtest import plugin
from loadtest.users import GrpcUser, RestUser, init_grpc_for_gevent
from loadtest.webui import register_on_init

__all__ = ["GrpcUser", "RestUser"]

# Before Locust forks --processes workers, and before any channel exists.
init_grpc_for_gevent()
plugin.install()
register_on_init()
