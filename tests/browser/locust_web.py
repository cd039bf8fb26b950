"""A real Locust web UI in a subprocess, running the synthetic canary locustfile.

Shared by the browser test and the browserless web-UI test. Everything is on
127.0.0.1 and bounded in time; the process is stopped (and killed if need be)
on exit.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = Path(__file__).with_name("canary_tab_locustfile.py")
START_TIMEOUT_S = 30.0
EXPECTED = "default: 70/30; canary: 0/100"
"""The split the synthetic locustfile's records follow, as ``--expected`` gives it."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class LocustWeb:
    url: str  # base URL of the web UI, ending in "/"
    log: Path

    def get(self, path: str, timeout: float = 5.0) -> bytes:
        with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=timeout) as response:
            return bytes(response.read())

    def post(self, path: str, form: dict[str, str], timeout: float = 5.0) -> bytes:
        data = urllib.parse.urlencode(form).encode()
        with urllib.request.urlopen(self.url + path.lstrip("/"), data, timeout=timeout) as response:
            return bytes(response.read())

    def swarm(self, users: int = 2, spawn_rate: float = 2, **options: str) -> dict[str, Any]:
        """Start a test as the start form does; ``options`` are its custom parameters."""
        form = {"user_count": str(users), "spawn_rate": str(spawn_rate), **options}
        return dict(json.loads(self.post("swarm", form)))

    def canary_rows(self) -> list[dict[str, Any]]:
        """The Canary tab's rows, as ``/stats/requests`` gives them to the page."""
        stats = json.loads(self.get("stats/requests"))
        for item in stats.get("extended_stats") or []:
            if item.get("key") == "canary":
                return list(item["data"])
        raise AssertionError(f"no canary rows in /stats/requests: {sorted(stats)}")

    def read_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def running_locust_web(tmp: Path, extra: Sequence[str] = ("--expected", EXPECTED)) -> Iterator[LocustWeb]:
    """Start ``locust -f canary_tab_locustfile.py`` with its web UI (and the options ``extra``);
    stop it on exit."""
    port = free_port()
    log = tmp / "locust.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--web-host",
        "127.0.0.1",
        "--web-port",
        str(port),
        "--host",
        f"http://127.0.0.1:{free_port()}",  # never contacted: the users are synthetic
        "--loglevel",
        "WARNING",
        *extra,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    web = LocustWeb(f"http://127.0.0.1:{port}/", log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise AssertionError(f"locust exited with {process.returncode}:\n{web.read_log()}")
            try:
                web.get("", timeout=1.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"locust web UI not up after {START_TIMEOUT_S:g}s:\n{web.read_log()}"
                    ) from None
                time.sleep(0.2)
        yield web
    finally:
        if process.poll() is None:
            with suppress(OSError):
                web.post("stop", {}, timeout=2.0)
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
