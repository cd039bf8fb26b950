"""Ctrl-C and SIGTERM as one interrupt: raised where cleanup can run, or held while a block must stay whole."""

from __future__ import annotations

import argparse
import os
import signal

import pytest

from canary.conventions import ExitCode
from canary.interrupts import held_interrupts, terminate_as_interrupt
from commands.console import Consoles, run_command


class Stopped(KeyboardInterrupt):
    pass


def test_sigterm_raises_the_interrupt_inside_the_block_only() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped), terminate_as_interrupt(Stopped):
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0)  # give the handler its chance before the block ends
    assert signal.getsignal(signal.SIGTERM) is before


def test_held_interrupts_are_told_not_raised() -> None:
    with held_interrupts() as received:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0)
    assert received == [signal.SIGINT, signal.SIGTERM]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_command_stopped_by_sigterm_cleans_up_and_exits_130() -> None:
    cleaned: list[bool] = []

    def dispatch(_args: argparse.Namespace, _io: Consoles) -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0)
            return 0
        finally:
            cleaned.append(True)

    assert run_command("canary test", argparse.ArgumentParser(), [], dispatch) == ExitCode.INTERRUPTED == 130
    assert cleaned == [True]
