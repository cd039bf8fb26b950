"""The command-line conventions, one set for every command: exit 3 on bad usage, help with defaults."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from commands import cli, verify_split
from payloads import gen


def _parsers(parser: argparse.ArgumentParser, prog: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, f"{prog} {name}")


PARSERS = [
    *_parsers(cli.build_parser(), "canary"),
    ("verify-split", verify_split.build_parser()),
]


@pytest.mark.parametrize(("prog", "parser"), PARSERS, ids=[p for p, _ in PARSERS])
def test_every_option_says_its_default(prog: str, parser: argparse.ArgumentParser) -> None:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        text = action.help or ""
        if not text or (not action.required and "default" not in text):
            missing.append("/".join(action.option_strings) or action.dest)
    assert missing == [], f"{prog}: options whose help does not name the default"


def test_help_names_verify_split_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "verify-split" in text
    assert "exit codes: 0 verified (or done), 1 refuted (or failed), 2 inconclusive" in text
    assert cli.main(["load", "--help"]) == 0
    assert "3 bad usage" in capsys.readouterr().out


Main = Callable[[list[str]], int]
BAD_USAGE: list[tuple[Main, list[str]]] = [
    (cli.main, []),
    (cli.main, ["no-such-command"]),
    (cli.main, ["demo", "--port", "eighty"]),
    (cli.main, ["mesh"]),
    (cli.main, ["mesh", "up", "--bogus"]),
    (cli.main, ["mesh", "apply"]),  # -f is required
    (cli.main, ["mesh", "apply", "-f", "manifests/base", "--backend", "cloud"]),
    (cli.main, ["mesh", "apply", "-f", "manifests/base", "--context", "prod"]),  # --context needs kube
    (cli.main, ["mesh", "status", "--yaml"]),
    (cli.main, ["mesh", "down", "now"]),
    (cli.main, ["calibrate", "--source", "oracle"]),
    (cli.main, ["calibrate", "--size", "huge"]),
    (cli.main, ["load", "--protocol", "foo"]),
    (cli.main, ["load", "--tolerance", "0.03"]),  # goes with --until-verified
    (cli.main, ["report", "--bogus"]),
    (cli.main, ["export", "--tiny", "extra"]),
    (verify_split.main, ["--interval", "bayes"]),
    (verify_split.main, ["--alpha", "x"]),
    (gen.main, ["build", "--size", "huge"]),
    (gen.main, ["transmogrify"]),
]


@pytest.mark.parametrize(("main", "argv"), BAD_USAGE, ids=[f"{m.__module__}:{' '.join(a)}" for m, a in BAD_USAGE])
def test_bad_usage_exits_3_with_a_message(main: Main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 3
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert captured.err.strip() or captured.out.strip()


def test_bad_usage_exits_3_as_a_process() -> None:
    """Through the installed entry points, as a CI pipeline calls them (argparse alone would exit 2)."""
    for argv in (["-m", "commands.cli", "load", "--protocol", "foo"], ["-m", "commands.verify_split", "--nope"]):
        done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=120)
        assert done.returncode == 3, done.stderr
        assert "see" in done.stderr and "--help" in done.stderr


def test_mesh_apply_backend_kube_through_the_command(tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A VirtualService with a CORS policy and a rewrite, which the local mesh refuses, passes the
    cluster's validation and is server-side applied through the official client (fake API server)."""
    import tempfile

    import yaml

    from tests.mesh.fake_apiserver import FakeApiServer

    service = {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "image-classifier", "namespace": "tf-serving"},
        "spec": {"hosts": ["*"], "gateways": ["image-classifier-gateway"], "http": [{
            "corsPolicy": {"allowOrigins": [{"exact": "https://example.com"}], "allowMethods": ["POST"]},
            "rewrite": {"uri": "/v1/models/"},
            "route": [{"destination": {"host": "image-classifier", "subset": "resnet50",
                                       "port": {"number": 8501}}}]}]},
    }
    manifest = tmp_path / "vs-cors.yaml"
    manifest.write_text(yaml.safe_dump(service))
    server = FakeApiServer(namespaces=["default", "tf-serving"])
    server.start()
    try:
        monkeypatch.setenv("KUBECONFIG", str(server.write_kubeconfig(tmp_path / "kubeconfig", "fake")))
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the client's discovery cache
        assert cli.main(["mesh", "apply", "--kube", "--context", "fake", "-f", str(manifest)]) == 0
        assert "VirtualService/tf-serving/image-classifier serverside-applied" in capsys.readouterr().out
        applied = server.applies(dry_run=False)
        assert len(applied) == 1 and len(server.applies(dry_run=True)) == 1
        monkeypatch.setenv("CANARY_HOME", str(tmp_path / "home"))
        assert cli.main(["mesh", "apply", "--backend", "kube", "--context", "nowhere", "-f", str(manifest)]) == 3
        assert "nowhere" in capsys.readouterr().err
    finally:
        server.stop()


def test_canary_load_says_when_the_mesh_counters_were_reset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from pathlib import Path

    from canary.rundir.document import MeshRecord, RunDocument
    from commands import loading
    from loadtest.load import LoadResult

    run = RunDocument(status="finished", mesh=MeshRecord(
        local=True, counters_reset=True, counters_reset_evidence=["25 completed but the counters changed by +5"]))
    run_dir = Path(str(tmp_path))
    outcome = loading.LoadOutcome(LoadResult(exit_code=0, run_dir=run_dir, log=run_dir / "locust.log", run=run), None)
    monkeypatch.setattr(loading, "load_and_report", lambda *_a, **_k: outcome)
    assert cli.main(["load", "--requests", "10", "--host", "http://127.0.0.1:9"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "Envoy's counters were reset during the run" in err
    assert "25 completed but the counters changed by +5" in err


def test_the_cluster_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from canary.errors import UsageError
    from loadtest.options import kube_target, options_from_parsed

    kube = options_from_parsed(None).model_copy(update={"kube": True})
    assert kube_target(kube) == kube_target(kube.model_copy(update={"context": None}))
    monkeypatch.setenv("CANARY_KUBE_CONTEXT", "prod")
    monkeypatch.setenv("CANARY_KUBE_NAMESPACE", "models")
    target = kube_target(kube)
    assert target is not None and (target.context, target.namespace) == ("prod", "models")
    given = kube_target(kube.model_copy(update={"context": "staging", "namespace": "other"}))
    assert given is not None and (given.context, given.namespace) == ("staging", "other")  # flags win
    assert kube_target(options_from_parsed(None)) is None  # a default names no cluster by itself
    monkeypatch.setenv("CANARY_KUBE_NAMESPACE", "Not_A_Name")
    with pytest.raises(UsageError, match=r"\$CANARY_KUBE_NAMESPACE"):
        kube_target(kube)
