"""For the tests of `canary load`'s first minutes: a plain HTTP server on loopback, and a refused load.

``with StubHttp(404, b'{"error": "..."}') as server:`` then ``server.url``, ``server.asked``;
:func:`refused_load` runs ``canary load`` and checks that it left nothing behind.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

import pytest

from commands.cli import main

__all__ = ["StubHttp", "refused_load"]


class StubHttp:
    """Answers every GET with ``status`` and ``body``; ``asked`` lists the paths, in order."""

    def __init__(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.asked: list[str] = []
        asked = self.asked

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                asked.append(self.path)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> StubHttp:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def refused_load(argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``canary load ARGV`` twice, with ``--run-dir`` under ``tmp_path`` and then with the default
    ``reports/`` of a fresh current directory: exit 3 both times, one line on the terminal, no run
    directory (nor reports/) left behind. Returns that line."""
    given = tmp_path / "given"
    assert main(["load", *argv, "--run-dir", str(given / "run")]) == 3
    first = capsys.readouterr()
    assert not given.exists()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main(["load", *argv]) == 3
    second = capsys.readouterr()
    assert list(cwd.iterdir()) == []
    lines = first.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("canary: "), first.err
    assert second.err == first.err and first.out == second.out == ""
    return lines[0]
