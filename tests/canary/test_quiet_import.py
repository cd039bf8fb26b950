"""TensorFlow's import is kept off the terminal, and a failing import still explains itself."""

from __future__ import annotations

import os
import sys

import pytest

from canary.quiet_import import quiet_tensorflow


@pytest.fixture
def tensorflow_not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a fresh ``canary`` process, whatever this test process imported before."""
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)


def _native_write(text: str) -> None:
    os.write(2, text.encode())  # as TensorFlow's C++ layer writes: to the descriptor, past sys.stderr


@pytest.mark.usefixtures("tensorflow_not_loaded")
def test_what_the_import_writes_to_fd_2_stays_off_the_terminal(capfd: pytest.CaptureFixture[str]) -> None:
    print("before", file=sys.stderr)
    with quiet_tensorflow():
        _native_write("I0000 00:00:1 cudart_stub.cc:31] Could not find cuda drivers\n")
    print("after", file=sys.stderr)
    assert capfd.readouterr().err.splitlines() == ["before", "after"]
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"


@pytest.mark.usefixtures("tensorflow_not_loaded")
def test_a_failing_import_shows_what_it_wrote(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ImportError), quiet_tensorflow():
        _native_write("libtensorflow_framework.so.2: cannot open shared object file\n")
        raise ImportError("no tensorflow")
    assert "cannot open shared object file" in capfd.readouterr().err


@pytest.mark.usefixtures("tensorflow_not_loaded")
def test_the_users_own_log_level_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    with quiet_tensorflow():
        pass
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
