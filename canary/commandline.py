"""What every command line of canary shares: argparse errors are usage errors (exit code 3).

argparse exits 2 on a command line it cannot read; canary's exit code 2
means "inconclusive", so every canary parser raises
:class:`~canary.errors.UsageError` instead, which every command turns into
exit code 3 with the message. Standard library only, so the lowest layers'
own commands (``python -m payloads.gen``) use it too.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from canary.conventions import EXIT_CODES_HELP
from canary.errors import UsageError

__all__ = ["ArgumentError", "ArgumentParser"]


class ArgumentError(UsageError):
    """A command line that cannot be read (exit code 3, like every usage error)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are :class:`ArgumentError`; the exit codes close every ``--help``."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("epilog", EXIT_CODES_HELP)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)  # examples keep their lines
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        raise ArgumentError(f"{self.prog}: {message} (see {self.prog} --help)")
