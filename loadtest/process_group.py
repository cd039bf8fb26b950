"""Locust's process group, as ``canary load`` and the in-cluster wrapper run it (its own session).

:func:`signal_group` sends a signal to the whole group; :func:`reap_group` waits, once Locust's
master has exited, for the rest of the group to go, and kills what stays: a worker that missed
the master's quit would otherwise keep running and join the next master on the same port. The
run directory is written by then, so nothing a straggler holds can still be recorded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

__all__ = ["reap_group", "signal_group"]


def signal_group(child: subprocess.Popen[bytes], sig: int) -> None:
    """``sig`` to ``child``'s process group (nothing when it is gone)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, sig)


def reap_group(child: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """Leave nothing of ``child``'s process group behind once it has exited (see the module)."""
    end = time.monotonic() + grace_s
    while time.monotonic() < end:
        try:
            os.killpg(child.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    signal_group(child, signal.SIGKILL)
