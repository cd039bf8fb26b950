"""``--requests N``: exactly N requests over every worker, by leasing.

Locust has no iteration count. The master keeps a :class:`Ledger` of the
requests left; each worker's :class:`BudgetClient` leases blocks of them
(one lease in flight per worker) and its users take one token per request.
Blocks shrink as the budget runs out, so no worker sits on tokens while
others starve, and the total sent is exactly N. Local runs use the same two
objects in one process.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import gevent.event

__all__ = ["BudgetClient", "Ledger"]

MAX_LEASE = 64


class Ledger:
    """The requests left to hand out (master side)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.remaining = total
        self.granted: dict[str, int] = {}

    def grant(self, worker: str, want: int, workers: int) -> int:
        """Tokens for ``worker``: at most ``want``, and a fair slice of what is left."""
        if self.remaining <= 0:
            return 0
        fair = max(1, math.ceil(self.remaining / (2 * max(1, workers))))
        n = max(1, min(want, fair, MAX_LEASE, self.remaining))
        self.remaining -= n
        self.granted[worker] = self.granted.get(worker, 0) + n
        return n


class BudgetClient:
    """A worker's pool of request tokens; unlimited when ``limited`` is False."""

    def __init__(self, request_lease: Callable[[int], None], lease_timeout: float = 10.0) -> None:
        self._request_lease = request_lease
        self._timeout = lease_timeout
        self.limited = False
        self.pool = 0
        self.exhausted = False
        self.taken = 0
        self._pending: gevent.event.Event | None = None

    def reset(self, limited: bool) -> None:
        """A new test: forget tokens and exhaustion; wake anyone waiting."""
        self.limited = limited
        self.pool = 0
        self.exhausted = False
        self.taken = 0
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.set()

    def take(self, want: int = 1) -> bool:
        """One token (True), or False when the budget is spent or no lease came in time."""
        if not self.limited:
            self.taken += 1
            return True
        for _ in range(3):
            if self.pool > 0:
                self.pool -= 1
                self.taken += 1
                return True
            if self.exhausted:
                return False
            pending = self._pending
            if pending is None:
                pending = self._pending = gevent.event.Event()
                self._request_lease(max(1, want))
            if not pending.wait(self._timeout):
                if self._pending is pending:
                    self._pending = None  # ask again next time
                return False
        return False

    def on_grant(self, n: int) -> None:
        """The master's answer to a lease: ``n`` tokens (0: the budget is spent)."""
        if n <= 0:
            self.exhausted = True
        else:
            self.pool += n
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.set()
