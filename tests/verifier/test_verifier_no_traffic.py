"""A protocol x group that sent nothing: `verify-split` lists it, and the stable subset stays the
VirtualService's default route (or the first of the expectation) whichever group had traffic.
Also: where `verify-split` and `canary report` looked when they picked the newest run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from commands.cli import main as canary
from commands.verify_split import main as verify_split
from tests.verifier.synthetic import make_run

ROOT = Path(__file__).resolve().parents[2]
FOCUSED = "manifests/routing/virtualservice-focused-routing.yaml"
CANARY_ONLY = {("rest", "canary"): {"resnet101": 200}, ("grpc", "canary"): {"resnet101": 200}}
DEFAULT_ONLY = {("rest", "default"): {"resnet50": 200}, ("grpc", "default"): {"resnet50": 200}}


def _options(**canary: Any) -> dict[str, Any]:
    """run.json's arguments with these load test options (the header and model as make_run has them)."""
    return {"arguments": {"canary": {"canary_header": "user-group: canary", "model_name": "image_classifier",
                                     **canary}}}


def _summary(root: Path, *argv: str) -> tuple[int, dict[str, Any]]:
    out = root.parent / f"{root.name}-summary.json"
    code = verify_split([str(root), *argv, "--json", str(out), "--no-write"])
    return code, json.loads(out.read_text())


def test_groups_without_traffic_are_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_run(tmp_path / "run", DEFAULT_ONLY, run_extra=_options(protocol="both", canary_share=0.2))
    code, doc = _summary(root, "--expected", "100/0")
    assert code == 0
    note = ("no traffic from rest/canary, grpc/canary, so nothing was judged for them: rest/canary, grpc/canary "
            "got no user (-u too small for --protocol both and --canary-share 0.2)")
    assert note in doc["notes"]
    assert f"note: {note}" in " ".join(capsys.readouterr().out.split())


def test_a_group_with_users_but_no_request_is_told_apart(tmp_path: Path) -> None:
    users = {"users": {"rest": {"default": 3, "canary": 1}}}
    root = make_run(tmp_path / "run", {("rest", "default"): {"resnet50": 200}},
                    run_extra={**_options(protocol="rest", canary_share=0.25), **users})
    _, doc = _summary(root, "--expected", "100/0")
    assert ("no traffic from rest/canary, so nothing was judged for it: rest/canary had users but sent no request"
            in doc["notes"])


@pytest.mark.parametrize(("options", "argv", "silent"), [
    ({"protocol": "both", "canary_share": 0.0}, ("--expected", "100/0"), None),  # the canary group was not asked for
    ({"protocol": "rest", "canary_share": 0.0}, ("--expected", "100/0"), None),  # nor gRPC
    ({"protocol": "rest", "canary_share": 0.0}, ("--expected", "default: 100/0; canary: 0/100"), "rest/canary"),
    ({"protocol": "rest", "canary_share": 0.0, "expected": "canary: 0/100"}, ("--expected", "100/0"), "rest/canary"),
])
def test_which_groups_the_run_asked_for(tmp_path: Path, options: dict[str, Any], argv: tuple[str, ...],
                                        silent: str | None) -> None:
    counts = {cell: n for cell, n in DEFAULT_ONLY.items() if cell[0] in (("rest", "grpc") if options["protocol"]
                                                                        == "both" else ("rest",))}
    root = make_run(tmp_path / "run", counts, run_extra=_options(**options))
    _, doc = _summary(root, *argv)
    found = [n for n in doc["notes"] if n.startswith("no traffic")]
    assert found == ([] if silent is None else [found[0]])
    if silent is not None:
        assert found[0].startswith(f"no traffic from {silent}, ")


def test_the_stable_subset_stays_the_first_of_the_expectation(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run", CANARY_ONLY, run_extra=_options(canary_share=1.0))
    code, doc = _summary(root, "--expected", "default: 100/0; canary: 0/100")
    assert code == 0 and doc["stable"] == "resnet50"


def test_the_stable_subset_stays_the_default_route_of_the_manifest(tmp_path: Path) -> None:
    """Only the canary group sent requests: focused routing's default route still names the stable subset."""
    root = make_run(tmp_path / "run", CANARY_ONLY, run_extra=_options(canary_share=1.0))
    code, doc = _summary(root, "--from-manifest", str(ROOT / FOCUSED))
    assert code == 0 and doc["stable"] == "resnet50"
    assert [g["verdict"]["expected"] for g in doc["groups"]] == [{"resnet101": 1.0, "resnet50": 0.0}] * 2


def test_the_stable_subset_stays_the_default_route_of_the_recorded_routing(tmp_path: Path) -> None:
    objects = [{"source": f, "document": d} for f in ("manifests/base/destinationrule.yaml", FOCUSED)
               for d in yaml.safe_load_all((ROOT / f).read_text()) if d]
    routing = [{"phase": 0, "version": 2, "sha256": "s0", "started_at": None,
                "applied_at": "2026-01-31T11:00:00.000000Z", "objects": objects}]
    root = make_run(tmp_path / "run", CANARY_ONLY, mesh={"routing": routing}, run_extra=_options(canary_share=1.0))
    code, doc = _summary(root)
    assert code == 0 and doc["stable"] == "resnet50"
    assert doc["expected_source"].startswith("the routing recorded as applied")


# --- which run was judged ---------------------------------------------------------------------


@pytest.mark.parametrize("command", ["verify-split", "canary report"])
def test_the_newest_run_says_where_it_was_found(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    run = lambda *argv: verify_split(list(argv)) if command == "verify-split" else canary(["report", *argv])  # noqa: E731
    assert run("--expected", "100/0") == 3
    error = capsys.readouterr().err
    assert f"no run directory to read: {tmp_path / 'reports'} does not exist" in " ".join(error.split())
    assert "`canary load` writes each run into reports/" in " ".join(error.split())
    (tmp_path / "reports").mkdir()
    assert run("--expected", "100/0") == 3
    assert f"no run directory (a folder with run.json) under {tmp_path / 'reports'}" in " ".join(
        capsys.readouterr().err.split())
    make_run(Path("reports/20260131T120000Z-000001"), {("rest", "default"): {"resnet50": 300}})
    newest = make_run(Path("reports/20260131T130000Z-000002"), {("rest", "default"): {"resnet50": 300}})
    assert run("--expected", "100/0") == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"judging the newest run under {tmp_path / 'reports'}: {newest}"
    assert run(str(newest), "--expected", "100/0") == 0
    assert "judging the newest run" not in capsys.readouterr().out  # a run given is not searched for
