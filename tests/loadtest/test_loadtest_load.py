"""`canary load` without a mesh: arguments, run time, the missing-host message, exit-code pass-through.

The runs on the local mesh (``canary load --requests N`` through ``main``)
are in test_loadtest_distributed.py, which brings one mesh up for them all.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from canary.errors import UsageError
from commands.cli import main
from loadtest.load import (
    LOCUSTFILE,
    STARTING,
    LoadRequest,
    RichProgress,
    locust_argv,
    parse_run_time,
    run_load,
)
from loadtest.options import CanaryOptions
from tests.load_kit import StubHttp


def req(**options) -> LoadRequest:
    """A request whose canary options are ``options``; the rest of the request at its defaults."""
    return LoadRequest(options=CanaryOptions.model_validate(options))


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("60s", 60), ("5m", 300), ("1h30m", 5400), ("1m5s", 65)])
def test_run_time_is_locusts_timespan(text: str, seconds: int) -> None:
    assert parse_run_time(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5x", "-3", "5 m", "1m 30s"])
def test_bad_run_time_says_what_looks_right(text: str) -> None:
    with pytest.raises(UsageError, match="60s"):
        parse_run_time(text)


def test_locust_command_line() -> None:
    options = CanaryOptions(requests=50, canary_share=0.25, calibration=Path("cal.json"), expected="70/30")
    request = LoadRequest(options=options, users=4, processes=2)
    argv = locust_argv(request, "http://127.0.0.1:8080", Path("reports/r1"))
    assert argv[1:5] == ["-m", "locust", "-f", str(LOCUSTFILE)]
    text = " ".join(argv)
    for part in ("--headless", "--host http://127.0.0.1:8080", "-u 4", "-r 4", "--requests 50", "--processes 2",
                 "--canary-share 0.25", "--run-dir reports/r1", "--calibration cal.json", "--expected 70/30"):
        assert part in text, part
    assert "-t" not in argv  # --requests alone: Locust runs until the plugin stops it
    assert "--protocol" not in argv and "--tolerance" not in argv  # defaults are left to the locustfile
    timed = locust_argv(LoadRequest(), "h", Path("r"))
    assert timed[timed.index("-t") + 1] == "60s"


@pytest.mark.parametrize(("options", "message"), [
    ({"protocol": "soap"}, "--protocol"),
    ({"canary_share": 2.0}, "--canary-share"),
    ({"canary_header": "nocolon"}, "name: value"),
    ({"requests": -1}, "--requests"),
])
def test_options_are_validated(options: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        req(**options)


@pytest.mark.parametrize(("request_", "message"), [
    (LoadRequest(users=0), "--users"),
    (LoadRequest(run_time="forever"), "--run-time"),
    (LoadRequest(spawn_rate=0), "--spawn-rate"),
    (LoadRequest(processes=0), "--processes"),
    (req(until_verified=True), "--until-verified needs the expected split"),
    (req(tolerance=0.05), "--from-manifest and --tolerance go with --until-verified"),
])
def test_requests_are_validated(request_: LoadRequest, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        request_.validate()


@pytest.mark.parametrize("argv", [
    ["load", "--protocol", "foo"],
    ["load", "--canary-share", "x"],
    ["load", "--canary-share", "2"],
    ["load", "-u", "0"],
    ["load", "-t", "soon"],
    ["load", "--payload-size", "huge"],
    ["load", "--until-verified"],
    ["load", "--no-such-option"],
])
def test_bad_load_usage_exits_3(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 3
    assert "canary:" in capsys.readouterr().err


def test_without_host_and_mesh_it_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CANARY_HOME", str(tmp_path / "home"))
    with pytest.raises(UsageError, match=r"canary mesh up.*--host"):
        run_load(LoadRequest(options=CanaryOptions(requests=5, run_dir=tmp_path / "run")))
    assert main(["load", "--requests", "5", "--run-dir", str(tmp_path / "run")]) == 3
    assert "--host" in capsys.readouterr().err


def test_locusts_exit_code_passes_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A calibration file that cannot be read stops Locust at start-up with canary's usage exit code
    (the target passes the preflight: it answers the model status as TF Serving does)."""
    monkeypatch.setenv("CANARY_HOME", str(tmp_path / "home"))
    options = CanaryOptions(requests=5, run_dir=tmp_path / "run", calibration=tmp_path / "missing.json",
                            protocol="rest")
    with StubHttp(200, b'{"model_version_status": [{"version": "1", "state": "AVAILABLE"}]}') as server:
        result = run_load(LoadRequest(options=options, host=server.url), stall_s=60)
    assert result.exit_code == 3
    assert result.run is None
    assert "canary calibrate" in result.log.read_text()


def test_a_run_directory_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{}")
    with pytest.raises(UsageError, match="already holds a run"):
        run_load(LoadRequest(options=CanaryOptions(requests=5, run_dir=tmp_path / "run"), host="http://127.0.0.1:9"))


def test_the_progress_bar_shows_once_locust_starts() -> None:
    """Nothing on the terminal before run_load's STARTING (a refused preflight is one line alone)."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=120)
    with RichProgress(LoadRequest(options=CanaryOptions(requests=10)), console=console):
        pass
    assert out.getvalue() == ""
    with RichProgress(LoadRequest(options=CanaryOptions(requests=10)), console=console) as bar:
        bar(STARTING)
        bar({"requests": 4, "failed": 1, "unknown": 0, "by_subset": {"resnet50": 3}})
    assert "4 requests (1 failed, 0 unknown) resnet50 3" in out.getvalue()


def test_why_a_run_never_started_is_read_from_locusts_log(tmp_path: Path) -> None:
    from loadtest.load import startup_error

    log = tmp_path / "locust.log"
    log.write_text(
        "[2026-12-01 05:00:00,000] host/INFO/locust.main: Starting Locust 2.47.0\n"
        "[2026-12-01 05:00:01,000] host/ERROR/loadtest.plugin: canary: subset resnet50 is no good\n"
        '[2026-12-01 05:00:02,000] host/ERROR/loadtest.plugin: canary: pods "p" is forbidden: User "u" cannot '
        'create resource "pods/portforward" in the namespace "tf-serving"\n')
    assert startup_error(log) == ('pods "p" is forbidden: User "u" cannot create resource "pods/portforward" in '
                                  'the namespace "tf-serving"')
    log.write_text("[2026-12-01 05:00:00,000] host/INFO/locust.main: Starting Locust 2.47.0\n")
    assert startup_error(log) is None
    assert startup_error(tmp_path / "absent.log") is None
