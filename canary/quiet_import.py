"""TensorFlow imported without its start-up noise on the terminal: the one rule every part follows.

A canary command that imports TensorFlow in-process (exporting the models
for ``canary mesh up`` / ``canary export``, calibrating from SavedModels)
wraps its first import in :func:`quiet_tensorflow`::

    with quiet_tensorflow():
        import tensorflow as tf

TensorFlow's C++ logging is turned down (``TF_CPP_MIN_LOG_LEVEL=3``, unless
the user set it) before the import, and file descriptor 2 is held for the
import itself, since the native layers write there before any log level
applies (``All log messages before absl::InitializeLog()``, the oneDNN
notice, ``Could not find cuda drivers``). What was held is shown only when
the import fails, so a broken installation still explains itself. Model
server processes are not concerned: their output goes to the pods' logs.
Pure standard library: nothing here imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["TENSORFLOW_QUIET_ENV", "quiet_tensorflow"]

TENSORFLOW_QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3"}
"""Set (where the user has not) before TensorFlow is imported: no C++ INFO, WARNING or ERROR lines."""


@contextlib.contextmanager
def quiet_tensorflow() -> Iterator[None]:
    """Around the first ``import tensorflow`` (or ``keras``) of a process; a no-op once it is loaded."""
    if "tensorflow" in sys.modules:
        yield
        return
    for name, value in TENSORFLOW_QUIET_ENV.items():
        os.environ.setdefault(name, value)
    with _stderr_held():
        yield


@contextlib.contextmanager
def _stderr_held() -> Iterator[None]:
    """File descriptor 2 goes to a temporary file for the block, replayed only if the block raises.

    Another thread's writes to stderr meanwhile are held too (and dropped with the rest)."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep quiet
        yield
        return
    failed = False
    with tempfile.TemporaryFile() as held:
        _flush()
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            _flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                held.seek(0)
                _replay(held.read())


def _flush() -> None:
    if sys.stderr is not None:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()


def _replay(data: bytes) -> None:
    if data and sys.stderr is not None:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(data.decode(errors="replace"))
            sys.stderr.flush()
