"""The one console set-up every command shares, and how a command ends.

Tables go to stdout, progress, warnings and errors to stderr. Piped output
is 200 columns wide (rich would assume 80 and fold pod and cluster names).
:func:`run_command` parses the command line and runs the chosen function:
a :class:`~canary.errors.CanaryError` (a usage error included: every parser
is :class:`canary.commandline.ArgumentParser`) prints one line and exits with
its code (3 for usage), Ctrl-C or SIGTERM exits 130, ``--help`` exits 0.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.markup import escape

from canary.conventions import ExitCode
from canary.errors import CanaryError
from canary.interrupts import terminate_as_interrupt

__all__ = ["Consoles", "consoles", "run_command"]

INTERRUPTED = int(ExitCode.INTERRUPTED)  # as a shell reports a command stopped by SIGINT


class Consoles:
    """stdout for results, stderr for progress, warnings and errors."""

    def __init__(self) -> None:
        width = None if sys.stdout.isatty() else 200
        self.out = Console(highlight=False, width=width, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    def progress(self, message: str) -> None:
        self.err.print(f"[dim]canary:[/dim] {escape(message)}")

    def warn(self, message: str) -> None:
        self.err.print(f"[yellow]warning:[/yellow] {escape(message)}")

    def problem(self, message: str) -> None:
        self.err.print(f"[yellow]problem:[/yellow] {escape(message)}")


def consoles() -> Consoles:
    return Consoles()


def run_command(
    prog: str,
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    dispatch: Callable[[argparse.Namespace, Consoles], int],
) -> int:
    """Parse ``argv`` and run ``dispatch``; returns the exit code (never raises for a user's error)."""
    io = consoles()
    try:
        with terminate_as_interrupt():  # SIGTERM cleans up and exits 130 as Ctrl-C does
            args = parser.parse_args(argv)
            return int(dispatch(args, io))
    except SystemExit as done:  # --help, --version
        return done.code if isinstance(done.code, int) else 0 if done.code is None else 3
    except CanaryError as error:
        io.err.print(f"[bold red]{prog}:[/bold red] {escape(str(error))}")
        return error.exit_code
    except KeyboardInterrupt:
        io.err.print(f"{prog}: interrupted")
        return INTERRUPTED
