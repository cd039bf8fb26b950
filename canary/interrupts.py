"""Ctrl-C and SIGTERM as one thing: an interrupt the code can clean up after.

Python turns SIGINT into :class:`KeyboardInterrupt` but dies on SIGTERM
without running a single ``finally``. :func:`terminate_as_interrupt` makes
SIGTERM raise the same exception for the length of a block, so a command
stopped by a supervisor (CI's timeout, systemd, ``kill``) cleans up as it
would on Ctrl-C. :func:`held_interrupts` holds both signals while a block
that must not be cut in half runs, and tells the block's owner whether one
came.

Signal handlers can only be set from the main thread; elsewhere both context
managers change nothing (the main thread keeps its own handling).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["INTERRUPT_SIGNALS", "held_interrupts", "terminate_as_interrupt"]

INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def terminate_as_interrupt(raised: type[KeyboardInterrupt] = KeyboardInterrupt) -> Iterator[None]:
    """Inside the block SIGTERM raises ``raised`` (:class:`KeyboardInterrupt`, as Ctrl-C does, or a
    subclass for a caller that treats the two apart)."""
    if not _in_main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise raised

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def held_interrupts() -> Iterator[list[int]]:
    """Hold Ctrl-C and SIGTERM until the block ends; yields the list of signals received.

    The caller decides what an interrupt means once the block is whole (undo it,
    then raise :class:`KeyboardInterrupt`); nothing is raised here.
    """
    received: list[int] = []
    if not _in_main_thread():
        yield received
        return

    def hold(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    previous = {s: signal.signal(s, hold) for s in INTERRUPT_SIGNALS}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
