"""One process environment for the whole suite, whatever order the tests run in.

Many tests run Locust in-process (its users, the web UI, the plugin), and
importing Locust monkey-patches the standard library for gevent; grpcio then
has to be told to cooperate (``init_gevent``), or a gRPC server started by a
later test hangs. Doing both here, first, makes every test see the same
process as a Locust worker does, instead of depending on which test imported
Locust first.
"""

from __future__ import annotations

import locust  # noqa: F401  (monkey-patches for gevent, as the locustfile does at start-up)

from loadtest.users import init_grpc_for_gevent

init_grpc_for_gevent()
