"""`canary load` refuses a target that cannot work before it makes a run directory, and warns
when a protocol x group gets no user. No mesh here: a free port, and plain HTTP servers on
loopback (tests/integration/test_load_preflight.py runs the same against the tiny mesh)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from canary.errors import CalibrationError, UsageError
from loadtest.load import LoadRequest, preflight, run_load
from loadtest.options import CanaryOptions
from loadtest.preflight import check_target, group_warning
from loadtest.users import users_per_protocol
from mesh.local import procs
from tests.load_kit import StubHttp, refused_load

_Serve = Callable[..., StubHttp]


@pytest.fixture
def serve() -> Iterator[_Serve]:
    """Start servers with ``serve(status, body[, content_type])``; all are closed afterwards."""
    started: list[StubHttp] = []

    def start(status: int, body: bytes, content_type: str = "application/json") -> StubHttp:
        server = StubHttp(status, body, content_type)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture(autouse=True)
def _no_mesh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANARY_HOME", str(tmp_path / "home"))  # no local mesh runs here


def test_nothing_listening_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{procs.free_port()}"
    started = time.monotonic()
    line = refused_load(["--host", url, "--requests", "5"], tmp_path, monkeypatch, capsys)
    assert f"nothing is listening at {url} (connection refused)" in line and "canary mesh up" in line
    assert time.monotonic() - started < 20


def test_a_host_that_is_not_the_mesh_needs_a_calibration(serve: _Serve, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    plain = serve(200, b"<html>hello</html>", "text/html")
    line = refused_load(["--host", plain.url, "--requests", "5"], tmp_path, monkeypatch, capsys)
    assert "no calibration to attribute responses with: give --calibration FILE" in line


def test_a_model_the_server_does_not_serve_is_refused(serve: _Serve, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """TF Serving's own 404 for the model status: --model-name is wrong (REST users ask over REST)."""
    server = serve(404, b'{"error": "Could not find any versions of model image_classifer"}')
    calibration = tmp_path / "calibration.json"  # never read: the model check refuses first
    argv = ["--host", server.url, "--protocol", "rest", "--model-name", "image_classifer",
            "--calibration", str(calibration), "--requests", "5"]
    line = refused_load(argv, tmp_path, monkeypatch, capsys)
    assert f"the model server behind {server.url} serves no model named 'image_classifer' over REST" in line
    assert "404 Not Found: Could not find any versions of model image_classifer" in line
    assert "check --model-name (default image_classifier)" in line
    assert set(server.asked) == {"/v1/models/image_classifer"}


def test_answers_that_decide_nothing_are_asked_three_times_then_warned(serve: _Serve) -> None:
    """A 503 (an injected fault, no healthy upstream) or a 404 without TF Serving's error body (a
    route that serves predict only) does not refuse the run."""
    for status, body in ((503, b"fault filter abort"), (404, b"")):
        server = serve(status, body, "text/plain")
        options = CanaryOptions(protocol="rest", calibration=Path("given.json"))
        (warning,) = check_target(server.url, options, None)
        assert f"could not confirm that {server.url} serves model 'image_classifier' over REST" in warning
        assert f"{status}" in warning and warning.endswith("starting anyway")
        assert len(server.asked) == 3


def test_one_subset_serving_the_model_is_enough() -> None:
    """Behind a weighted route the status request may reach a canary that serves another name:
    the model is served as soon as one answer says so, and refused only when eight answers agree."""
    from loadtest.preflight import _Answer, _asked

    script = iter([_Answer(False, "NOT_FOUND")] * 3 + [_Answer(True, "OK")])
    asked = []

    def ask() -> _Answer:
        asked.append(1)
        return next(script)

    assert _asked(ask).served is True and len(asked) == 4
    asked.clear()
    assert _asked(lambda: asked.append(1) or _Answer(False, "NOT_FOUND")).served is False  # type: ignore[func-returns-value]
    assert len(asked) == 8


def test_a_served_model_passes(serve: _Serve) -> None:
    server = serve(200, b'{"model_version_status": [{"version": "1", "state": "AVAILABLE"}]}')
    assert check_target(server.url, CanaryOptions(protocol="rest", calibration=Path("c.json")), None) == []
    assert server.asked == ["/v1/models/image_classifier"]


def test_a_server_that_never_answers_is_bounded(tmp_path: Path) -> None:
    """It accepts the connection (the kernel does) and never answers: the check gives up in time."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        (warning,) = check_target(url, CanaryOptions(protocol="rest", calibration=Path("c.json")), None, timeout=0.5)
        assert time.monotonic() - started < 3
        assert "timed out" in warning


def test_no_calibration_and_no_mesh_is_a_calibration_error(serve: _Serve) -> None:
    server = serve(200, b"{}")
    with pytest.raises(CalibrationError, match="canary mesh up"):
        check_target(server.url, CanaryOptions(), None)


@pytest.mark.parametrize("host", ["ftp://127.0.0.1:21", "http://", "http://127.0.0.1:port"])
def test_a_host_that_is_no_url_is_a_usage_error(host: str) -> None:
    with pytest.raises(UsageError, match="must be a URL such as http://"):
        check_target(host, CanaryOptions(), None)


# --- who gets users -------------------------------------------------------------------------


def _options(protocols: tuple[str, ...], share: float) -> CanaryOptions:
    return CanaryOptions(protocol="both" if len(protocols) == 2 else protocols[0], canary_share=share)


@pytest.mark.parametrize(("users", "protocols", "processes", "expected"), [
    (1, ("rest", "grpc"), None, {"rest": 0, "grpc": 1}),  # Locust's order: classes by name, GrpcUser first
    (3, ("rest", "grpc"), None, {"rest": 1, "grpc": 2}),
    (3, ("rest", "grpc"), 2, {"rest": 1, "grpc": 2}),  # --processes: the same totals
    (10, ("rest", "grpc"), 4, {"rest": 5, "grpc": 5}),
    (1, ("rest",), None, {"rest": 1}),
])
def test_users_per_protocol_is_locusts_spread(users: int, protocols: tuple[str, ...], processes: int | None,
                                              expected: dict[str, int]) -> None:
    assert users_per_protocol(users, protocols, processes) == expected


@pytest.mark.parametrize(("users", "protocols", "share", "processes"), [
    (4, ("rest", "grpc"), 0.2, None),  # 2 per protocol: 1 canary, 1 default each
    (10, ("rest", "grpc"), 0.2, 3),
    (2, ("rest",), 0.5, None),
    (4, ("rest", "grpc"), 0.9, None),  # 2 per protocol: the smaller (default) group takes user 0
    (2, ("grpc",), 0.999, None),
    (2, ("rest", "grpc"), 0.0, None),  # share 0 asks for the default group only
    (1, ("grpc",), 1.0, None),  # share 1: the canary group only
])
def test_every_cell_asked_for_gets_a_user(users: int, protocols: tuple[str, ...], share: float,
                                          processes: int | None) -> None:
    assert group_warning(users, _options(protocols, share), processes) is None


@pytest.mark.parametrize(("users", "protocols", "share", "processes", "empty", "need"), [
    (1, ("rest", "grpc"), 0.2, None, "rest/default, rest/canary and grpc/default get no user", 4),
    (1, ("rest", "grpc"), 0.2, 2, "rest/default, rest/canary and grpc/default get no user", 4),
    (3, ("rest", "grpc"), 0.5, None, "rest/default gets no user", 4),
    (2, ("rest", "grpc"), 0.9, None, "rest/canary and grpc/canary get no user", 4),  # user 0: the smaller group
    (1, ("grpc",), 0.5, None, "grpc/default gets no user", 2),
    (1, ("rest", "grpc"), 0.0, None, "rest/default gets no user", 2),
    (1, ("rest", "grpc"), 1.0, None, "rest/canary gets no user", 2),
])
def test_a_cell_without_users_is_warned(users: int, protocols: tuple[str, ...], share: float,
                                        processes: int | None, empty: str, need: int) -> None:
    warning = group_warning(users, _options(protocols, share), processes)
    assert warning is not None
    assert warning.startswith(f"-u {users} with --protocol {'both' if len(protocols) == 2 else protocols[0]} "
                              f"and --canary-share {share:g}: Locust starts ")
    assert empty in warning and warning.endswith(f"give -u {need} or more")
    assert group_warning(need, _options(protocols, share), processes) is None
    assert group_warning(need - 1, _options(protocols, share), processes) is not None


def test_the_group_warning_is_one_of_the_preflights(serve: _Serve) -> None:
    server = serve(200, b"{}")
    options = CanaryOptions(protocol="rest", calibration=Path("c.json"), canary_share=0.5)
    (warning,) = preflight(LoadRequest(options=options, host=server.url, users=1), server.url, None)
    assert "rest/default gets no user" in warning


def test_a_refused_target_calls_neither_warn_nor_progress(tmp_path: Path) -> None:
    """A refused target: run_load raises and calls neither warn nor progress, and makes no directory."""
    seen: list[object] = []
    request = LoadRequest(options=CanaryOptions(requests=5, run_dir=tmp_path / "run"),
                          host=f"http://127.0.0.1:{procs.free_port()}", users=1)
    with pytest.raises(UsageError, match="nothing is listening"):
        run_load(request, progress=seen.append, warn=seen.append)
    assert seen == [] and not (tmp_path / "run").exists()
