"""The load test on the local mesh with tiny models: attribution, run directory, distributed, CLI.

One mesh for the module (tiny models, base manifests, then the routing each
test applies). Locust always runs in a subprocess (it monkey-patches the
interpreter), as ``canary load`` runs it; each run is bounded in requests
and time.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from canary.rundir import read_records
from commands.cli import main
from loadtest.load import LOCUSTFILE
from mesh.api import default_manifests, mesh_apply, mesh_down, mesh_status, mesh_up
from mesh.local import procs

pytestmark = pytest.mark.integration

FOCUSED = ("routing", "virtualservice-focused-routing.yaml")
PREFLIGHT = 2  # `canary load` asks the model status through the ingress once per protocol before it starts
WEIGHT_100 = ("routing", "virtualservice-weight-100.yaml")
HOOK_LOCUSTFILE = '''
import os
from locust import events
from loadtest import plugin
from loadtest.locustfile import GrpcUser, RestUser

def _count(rows):
    with open(os.environ["CANARY_TEST_HOOK_FILE"], "a") as out:
        out.write(f"{len(rows)}\\n")

plugin.on_records.append(_count)

@events.init.add_listener
def _expected(environment, runner=None, **_):
    if type(runner).__name__ != "WorkerRunner":
        expected = getattr(environment, "canary_expected", {})
        with open(os.environ["CANARY_TEST_HOOK_FILE"] + ".expected", "w") as out:
            out.write(",".join(f"{g}={e.label()}" for g, e in sorted(expected.items())))
'''


@dataclass
class Mesh:
    home: Path
    url: str

    def apply(self, parts: tuple[str, ...]) -> None:
        mesh_apply([default_manifests(*parts)], home=self.home)

    def counts(self) -> dict[str, int]:
        return {k: v.requests for k, v in mesh_status(home=self.home).counters.items()}


@dataclass
class Run:
    code: int
    output: str
    run: dict[str, Any]
    records: pd.DataFrame
    envoy: dict[str, int]  # Envoy's per-subset counter change over the run, measured here


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    from serving.export import ensure_models

    home = tmp_path_factory.mktemp("loadtest-home")
    ensure_models(home / "models" / "tiny", tiny=True)
    state = mesh_up([default_manifests("base")], tiny=True, port=procs.free_port(), home=home)
    try:
        yield Mesh(home, state.ingress_url)
    finally:
        mesh_down(home=home)


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after) if after.get(k, 0) != before.get(k, 0)}


def _locust(mesh: Mesh, run_dir: Path, *args: str, locustfile: Path = LOCUSTFILE, timeout: float = 120,
            interrupt_after_requests: int | None = None, interrupt_with: signal.Signals = signal.SIGINT,
            interrupt_delay_s: float = 0.0, env: dict[str, str] | None = None) -> Run:
    """Run Locust headless in its own process group; optionally signal the whole group (what Ctrl-C in a
    terminal does, or ``kill -TERM -- -PGID``) ``interrupt_delay_s`` after it has made that many requests."""
    argv = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "--host", mesh.url,
            "--run-dir", str(run_dir), "--only-summary", *args]
    before = mesh.counts()
    child = subprocess.Popen(argv, env={**os.environ, "CANARY_HOME": str(mesh.home), **(env or {})},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                             cwd=run_dir.parent)
    try:
        if interrupt_after_requests is not None:
            _when_requests(child, run_dir, interrupt_after_requests)
            time.sleep(interrupt_delay_s)
            os.killpg(child.pid, interrupt_with)
        output, _ = child.communicate(timeout=timeout)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
    text = output.decode(errors="replace") if output else ""
    if not (run_dir / "records").is_dir():
        pytest.fail(f"Locust (exit {child.returncode}) wrote no records; its output ends with:\n{text[-4000:]}")
    document = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    return Run(child.returncode, text, document, read_records(run_dir), _delta(before, mesh.counts()))


def _when_requests(child: subprocess.Popen[bytes], run_dir: Path, requests: int, within_s: float = 60) -> None:
    """Return once the run's progress.json counts ``requests`` (bounded; fails if it never does)."""
    progress = run_dir / "progress.json"
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and child.poll() is None:
        try:
            if progress.exists() and orjson.loads(progress.read_bytes()).get("requests", 0) >= requests:
                return
        except orjson.JSONDecodeError:  # replaced while read
            pass
        time.sleep(0.05)
    pytest.fail(f"the run never counted {requests} requests (exit {child.poll()})")


def _check_focused(records: pd.DataFrame) -> None:
    """Canary header -> resnet101, no header -> resnet50, for every protocol x format x path."""
    assert not records.empty
    _check_focused_subsets(records)
    seen = set(records[["protocol", "group", "format", "versioned"]].itertuples(index=False, name=None))
    assert seen == {(p, g, f, v) for p in ("rest", "grpc") for g in ("default", "canary")
                    for f in ("instances", "b64") for v in (False, True)}


def test_focused_routing_every_response_attributed(mesh: Mesh, tmp_path: Path) -> None:
    mesh.apply(FOCUSED)
    run = _locust(mesh, tmp_path / "run", "-u", "10", "-r", "10", "--requests", "240")
    assert run.code == 0, run.output[-3000:]
    records = run.records
    assert len(records) == 240
    _check_focused(records)
    assert set(records["status"]) == {"200", "OK"} and records["ok"].all()
    assert (records.loc[records["protocol"] == "grpc", "model_version"] == 1).all()
    assert records.loc[records["protocol"] == "rest", "model_version"].isna().all()
    assert set(records.loc[records["group"] == "canary", "header"]) == {"user-group: canary"}
    assert set(records.loc[records["group"] == "default", "header"]) == {""}
    photo = records[records["payload_id"] == "grace_hopper"]
    assert (photo["label"] == 652).all() and len(photo) > 0
    assert (records["distance"] <= 1e-5).all() and records["top5"].map(len).eq(5).all()
    # one user in five per protocol carries the header
    assert run.run["users"] == {"grpc": {"canary": 1, "default": 4}, "rest": {"canary": 1, "default": 4}}
    # Envoy counted exactly these requests, per subset
    assert run.envoy == {"resnet101": int((records["subset"] == "resnet101").sum()),
                         "resnet50": int((records["subset"] == "resnet50").sum())}


def test_run_directory_is_complete(mesh: Mesh, tmp_path: Path) -> None:
    mesh.apply(FOCUSED)
    run_dir = tmp_path / "run"
    run = _locust(mesh, run_dir, "-u", "4", "-r", "4", "-t", "3s", "--expected", "default: 100/0; canary: 0/100")
    assert run.code == 0, run.output[-3000:]
    doc = run.run
    assert sorted(p.name for p in run_dir.iterdir()) == ["calibration.json", "progress.json", "records", "run.json"]
    assert doc["format"] == 1 and doc["status"] == "finished" and doc["host"] == mesh.url
    assert doc["started_at"] < doc["ended_at"]
    assert doc["arguments"]["canary"]["canary_share"] == 0.2 and "--expected" in doc["arguments"]["argv"]
    assert set(doc["versions"]) >= {"canary", "locust", "grpcio", "tensorflow-serving-api", "python"}
    assert doc["calibration"]["file"] == "calibration.json" and doc["calibration"]["usable"] > 0
    assert set(doc["calibration"]["subsets"]) == {"resnet50", "resnet101"}
    assert doc["expected"]["canary"]["shares"] == {"resnet50": 0.0, "resnet101": 1.0}
    assert {s: m["canary_model"]["weights"] for s, m in doc["models"].items()} == {"resnet50": "seeded",
                                                                                  "resnet101": "seeded"}
    local = doc["mesh"]
    assert local["local"] and local["ingress_url"] == mesh.url
    applied = {Path(a["path"]).name: a["sha256"] for a in local["applied"]}
    assert "virtualservice-focused-routing.yaml" in applied and all(len(h) == 64 for h in applied.values())
    assert local["delta"]["resnet50"] + local["delta"]["resnet101"] == len(run.records)
    assert {k: v for k, v in local["delta"].items() if v} == run.envoy
    total = doc["requests"]
    assert total["total"] == len(run.records) == total["locust"]["requests"] > 0
    assert total["by_outcome"] == {"attributed": len(run.records)}
    assert doc["records"]["lost"] == {} and doc["records"]["duplicates_dropped"] == 0
    assert doc["problems"] == [] and doc["exit_code"] is None
    progress = json.loads((run_dir / "progress.json").read_text())
    assert progress["state"] == "finished" and progress["requests"] == len(run.records)


def test_weight_100_sends_both_groups_to_resnet50(mesh: Mesh, tmp_path: Path) -> None:
    mesh.apply(WEIGHT_100)
    try:
        run = _locust(mesh, tmp_path / "run", "-u", "10", "-r", "10", "--requests", "120")
    finally:
        mesh.apply(FOCUSED)
    assert run.code == 0, run.output[-3000:]
    assert len(run.records) == 120 and set(run.records["subset"]) == {"resnet50"}
    assert set(run.records["group"]) == {"default", "canary"}
    assert run.envoy == {"resnet50": 120}


def test_two_processes_lose_no_record(mesh: Mesh, tmp_path: Path) -> None:
    mesh.apply(FOCUSED)
    locustfile = tmp_path / "hooked_locustfile.py"
    locustfile.write_text(HOOK_LOCUSTFILE)
    hook = tmp_path / "hook.txt"
    stats = tmp_path / "stats"  # Locust adds .json
    run = _locust(mesh, tmp_path / "run", "--processes", "2", "-u", "10", "-r", "10", "-t", "5s",
                  "--json-file", str(stats), "--expected", "default: 100/0; canary: 0/100",
                  locustfile=locustfile, env={"CANARY_TEST_HOOK_FILE": str(hook)})
    assert run.code == 0, run.output[-3000:]
    records = run.records
    locust_total = sum(entry["num_requests"] for entry in json.loads(stats.with_suffix(".json").read_text()))
    assert len(records) == locust_total == run.run["requests"]["locust"]["requests"] > 0
    assert sum(run.envoy.values()) == len(records)  # Envoy's count for the run
    assert sum(int(n) for n in hook.read_text().split()) == len(records)  # each row reached the web UI hook once
    assert "canary=resnet50=0%,resnet101=100%" in Path(f"{hook}.expected").read_text()
    workers = records.groupby("worker")["seq"].apply(sorted)
    assert len(workers) == 2 and "local" not in workers.index
    for seqs in workers:
        assert seqs == list(range(len(seqs)))  # none lost, none twice
    assert run.run["records"]["lost"] == {} and sorted(run.run["records"]["workers_flushed"]) == sorted(workers.index)
    _check_focused(records)


def _canary_load(mesh: Mesh, run_dir: Path, *args: str, interrupt_after_requests: int,
                 interrupt_with: signal.Signals = signal.SIGINT, interrupt_delay_s: float = 0.0) -> Run:
    """`canary load` in a subprocess, signalled (to canary only: Locust runs in its own session, so a
    terminal's Ctrl-C reaches nothing else) once the run has made that many requests."""
    before = mesh.counts()
    child = subprocess.Popen([sys.executable, "-m", "commands.cli", "load", "--run-dir", str(run_dir), *args],
                             env={**os.environ, "CANARY_HOME": str(mesh.home)}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True, cwd=run_dir.parent)
    try:
        _when_requests(child, run_dir, interrupt_after_requests)
        time.sleep(interrupt_delay_s)
        child.send_signal(interrupt_with)
        output, _ = child.communicate(timeout=180)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
    text = output.decode(errors="replace") if output else ""
    document = json.loads((run_dir / "run.json").read_text())
    return Run(child.returncode, text, document, read_records(run_dir), _delta(before, mesh.counts()))


def _check_interrupted(run: Run, signalled: signal.Signals, *, locust_counted: int | None = None,
                       before_the_run: int = 0) -> None:
    """Exit code 130, run.json says interrupted (by what, when), and records = Locust's count = Envoy's
    count over the run (run.json's mesh record, and as measured here) = the records run.json counts."""
    assert run.code == 130, run.output[-3000:]
    doc = run.run
    assert doc["status"] == "interrupted" and doc["exit_code"] == 130
    assert doc["interrupted"]["signal"] == signalled.name and doc["interrupted"]["at"] >= doc["started_at"]
    assert doc["interrupted"]["in_flight"] == 0  # the tiny models answer long before the stop timeout
    records = len(run.records)
    assert records == doc["requests"]["total"] == doc["records"]["rows"]
    assert records == doc["requests"]["locust"]["requests"] == (locust_counted if locust_counted is not None
                                                                else records)
    assert records == sum(doc["mesh"]["delta"].values()) == sum(run.envoy.values()) - before_the_run
    assert doc["records"]["lost"] == {} and doc["records"]["missing"] == 0 and doc["problems"] == []
    if records:
        _check_focused_subsets(run.records)


def _check_focused_subsets(records: pd.DataFrame) -> None:
    """Canary header -> resnet101, no header -> resnet50."""
    wanted = {"canary": "resnet101", "default": "resnet50"}
    wrong = records[records["subset"] != records["group"].map(wanted)]
    assert wrong.empty, wrong[["protocol", "group", "subset", "status", "error"]].head()


def test_ctrl_c_on_canary_load_keeps_every_record_received(mesh: Mesh, tmp_path: Path) -> None:
    """Ctrl-C to `canary load` reaches Locust's master, which stops its workers: every request made has
    its record, counted by Locust and Envoy alike, and the run exits 130 saying it was interrupted."""
    mesh.apply(FOCUSED)
    run_dir = tmp_path / "run"
    run = _canary_load(mesh, run_dir, "--processes", "2", "-u", "6", "-t", "60s", interrupt_after_requests=150)
    _check_interrupted(run, signal.SIGINT, before_the_run=PREFLIGHT)
    assert len(run.records) >= 150 and len(set(run.records["worker"])) == 2
    assert "the run was interrupted by SIGINT" in run.output and "exit code 130" in run.output
    _check_focused(run.records)
    # nothing of Locust is left running (a stray worker would join the next test's master)
    assert _processes_mentioning(str(run_dir)) == []


def test_runs_interrupted_at_random_moments_keep_every_request(mesh: Mesh, tmp_path: Path) -> None:
    """Ten runs stopped at random moments (seeded) by SIGINT or SIGTERM: plain Locust (the whole process
    group signalled, as a terminal's Ctrl-C or `kill -- -PGID` does; one process or --processes 2) and
    `canary load`. Each: exit code 130, and records = Locust's count = Envoy's count for the run."""
    mesh.apply(FOCUSED)
    rng = random.Random(20261201)
    ways = ["locust"] * 5 + ["locust --processes 2"] * 3 + ["canary load"] * 2
    rng.shuffle(ways)
    for i, way in enumerate(ways):
        sig = (signal.SIGINT, signal.SIGTERM)[i % 2]
        after, delay = rng.randrange(0, 300), rng.uniform(0.0, 0.5)
        run_dir = tmp_path / f"run-{i}"
        started = time.monotonic()
        if way == "canary load":
            run = _canary_load(mesh, run_dir, "-u", "4", "-t", "60s", interrupt_after_requests=after,
                               interrupt_with=sig, interrupt_delay_s=delay)
            counted = None
        else:
            stats = tmp_path / f"stats-{i}"  # Locust's own final count, as it prints it (Locust adds .json)
            processes = ("--processes", "2") if "processes" in way else ()
            run = _locust(mesh, run_dir, "-u", "4", "-r", "4", "-t", "60s", *processes, "--json-file", str(stats),
                          interrupt_after_requests=after, interrupt_with=sig, interrupt_delay_s=delay)
            counted = sum(entry["num_requests"] for entry in json.loads(stats.with_suffix(".json").read_text()))
        took = time.monotonic() - started
        print(f"{way}: {sig.name} after {after} requests + {delay:.2f} s: {len(run.records)} records, {took:.1f} s")
        _check_interrupted(run, sig, locust_counted=counted, before_the_run=PREFLIGHT if way == "canary load" else 0)
        assert _processes_mentioning(str(run_dir)) == []


def test_requests_the_stop_timeout_cuts_short_are_recorded_as_interrupted(mesh: Mesh, tmp_path: Path) -> None:
    """The canary group's route holds each request 30 s (an Istio delay fault) and --stop-timeout is 1 s: on
    SIGTERM the canary users' requests in flight are killed, yet each has its record (status 'interrupted',
    never an answer) and Locust's count: records = Locust's count; Envoy, whose delay filter held them
    before any upstream, counts the others; verify-split's cross-check accounts for them."""
    import yaml

    from commands.verify_split import main as verify_split

    routing = yaml.safe_load(default_manifests(*FOCUSED).read_text())
    for route in routing["spec"]["http"]:
        if route["name"].endswith("-canary"):
            route["fault"] = {"delay": {"fixedDelay": "30s", "percentage": {"value": 100}}}
    held = tmp_path / "virtualservice-canary-held.yaml"
    held.write_text(yaml.safe_dump(routing))
    mesh_apply([held], home=mesh.home)
    try:
        stats = tmp_path / "stats"
        run = _locust(mesh, tmp_path / "run", "-u", "4", "-r", "4", "-t", "60s", "--stop-timeout", "1",
                      "--json-file", str(stats), interrupt_after_requests=60, interrupt_with=signal.SIGTERM)
    finally:
        mesh.apply(FOCUSED)
    assert run.code == 130, run.output[-3000:]
    records, doc = run.records, run.run
    cut = records[records["status"] == "interrupted"]
    assert len(cut) == 2 and set(cut["group"]) == {"canary"} and set(cut["protocol"]) == {"rest", "grpc"}
    assert not cut["ok"].any() and set(cut["subset"]) == {"error"} and cut["error"].str.contains("stop timeout").all()
    answered = records[records["status"] != "interrupted"]
    assert answered["ok"].all() and set(answered["group"]) == {"default"}
    locust_counted = sum(entry["num_requests"] for entry in json.loads(stats.with_suffix(".json").read_text()))
    assert len(records) == locust_counted == doc["requests"]["locust"]["requests"]
    assert doc["interrupted"]["signal"] == "SIGTERM" and doc["interrupted"]["in_flight"] == 2
    assert doc["requests"]["by_outcome"] == {"attributed": len(answered), "interrupted": 2}
    assert sum(run.envoy.values()) == sum(doc["mesh"]["delta"].values()) == len(answered)
    assert any("2 requests were still in flight when the stop timeout ran out" in p for p in doc["problems"])
    summary = tmp_path / "summary.json"
    verify_split([str(tmp_path / "run"), "--expected", "default: 100/0; canary: 0/100", "--json", str(summary),
                  "--no-write"])
    judged = json.loads(summary.read_text())
    assert judged["crosscheck"]["status"] == "agree", judged["crosscheck"]
    assert any(n.startswith("the run was interrupted by SIGTERM") for n in judged["notes"])


def _listening_on(pid: int, port: int, within_s: float = 60) -> set[str]:
    """The addresses process ``pid`` listens on at ``port``, once it does (bounded)."""
    import psutil

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        found = {c.laddr.ip for c in psutil.Process(pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
        if found:
            return found
        time.sleep(0.1)
    pytest.fail(f"nothing listened on port {port} within {within_s:g} s")


@pytest.mark.parametrize(("web_host", "address"), [(None, "127.0.0.1"), ("0.0.0.0", "0.0.0.0")])
def test_the_web_ui_listens_on_loopback_unless_asked(mesh: Mesh, tmp_path: Path, web_host: str | None,
                                                     address: str) -> None:
    """`locust -f loadtest/locustfile.py --host URL`, as the README starts it: the web UI listens on
    127.0.0.1 only; `--web-host 0.0.0.0` still opens it to every interface. Ctrl-C then quits (exit 0)."""
    port = procs.free_port()  # the default 8089 may be taken on a shared machine; the host is the point
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", mesh.url, "--web-port", str(port),
            *(("--web-host", web_host) if web_host else ())]
    child = subprocess.Popen(argv, env={**os.environ, "CANARY_HOME": str(mesh.home)}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path)
    try:
        assert _listening_on(child.pid, port) == {address}
        child.send_signal(signal.SIGINT)
        output, _ = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
    assert child.returncode == 0, output.decode(errors="replace")[-3000:]


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_unattributable_responses_fail_the_run(mesh: Mesh, tmp_path: Path) -> None:
    """A calibration from other models: every response is 'unknown' (top-5 kept) and Locust exits 1."""
    mesh.apply(FOCUSED)
    first = _locust(mesh, tmp_path / "first", "-u", "2", "-r", "2", "--requests", "4")
    assert first.code == 0, first.output[-3000:]
    doc = json.loads((tmp_path / "first" / "calibration.json").read_text())
    for formats in doc["payloads"].values():
        for entry in formats.values():
            for subset, vector in entry["references"].items():
                entry["references"][subset] = (np.asarray(vector) * 0.5 + 0.5 / len(vector)).tolist()
    other = tmp_path / "other-models.json"
    other.write_text(json.dumps(doc))
    run = _locust(mesh, tmp_path / "run", "-u", "2", "-r", "2", "--requests", "12", "--calibration", str(other))
    assert run.code == 1, run.output[-3000:]
    assert len(run.records) == 12 and set(run.records["subset"]) == {"unknown"}
    assert run.records["top5"].map(len).eq(5).all() and run.records["error"].str.contains("tolerance").all()
    assert any("could not be attributed" in p for p in run.run["problems"])


def test_failed_requests_are_errors_and_fail_the_run(mesh: Mesh, tmp_path: Path) -> None:
    mesh.apply(FOCUSED)
    run = _locust(mesh, tmp_path / "run", "-u", "2", "-r", "2", "--requests", "8", "--model-name", "no_such_model")
    assert run.code == 1, run.output[-3000:]
    assert set(run.records["subset"]) == {"error"} and not run.records["ok"].any()
    assert set(run.records["status"]) == {"404", "NOT_FOUND"}


def test_canary_load_requests_through_main(mesh: Mesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No --host: the local mesh's ingress; --requests 60 stops after exactly 60 requests."""
    mesh.apply(FOCUSED)
    monkeypatch.setenv("CANARY_HOME", str(mesh.home))
    monkeypatch.chdir(tmp_path)
    before = mesh.counts()
    assert main(["load", "--requests", "60", "-u", "4", "--processes", "2"]) == 0
    [run_dir] = list((tmp_path / "reports").iterdir())
    records = read_records(run_dir)
    doc = json.loads((run_dir / "run.json").read_text())
    assert len(records) == 60 and doc["requests"]["target"] == 60 and doc["host"] == mesh.url
    assert sum(_delta(before, mesh.counts()).values()) == 60 + PREFLIGHT
    assert (run_dir / "locust.log").exists()


def test_another_host_needs_its_own_calibration(mesh: Mesh, tmp_path: Path) -> None:
    """The local pods only calibrate the local mesh: elsewhere, Locust stops at start-up and says what to give."""
    other = f"http://127.0.0.1:{procs.free_port()}"
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", other,
            "--run-dir", str(tmp_path / "run"), "--requests", "5"]
    done = subprocess.run(argv, env={**os.environ, "CANARY_HOME": str(mesh.home)}, capture_output=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 3
    assert "--calibration FILE" in done.stdout.decode() + done.stderr.decode()
    assert not (tmp_path / "run" / "run.json").exists()


def test_master_and_separate_workers(mesh: Mesh, tmp_path: Path) -> None:
    """--master with two --worker processes (as on separate machines): the calibration travels by message."""
    mesh.apply(FOCUSED)
    port = str(procs.free_port())
    env = {**os.environ, "CANARY_HOME": str(tmp_path / "not-the-mesh")}  # workers find nothing locally
    workers = [subprocess.Popen([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker",
                                 "--master-host", "127.0.0.1", "--master-port", port],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, cwd=tmp_path) for _ in range(2)]
    try:
        run = _locust(mesh, tmp_path / "run", "--master", "--master-bind-host", "127.0.0.1",
                      "--master-bind-port", port, "--expect-workers", "2", "--expect-workers-max-wait", "60",
                      "-u", "6", "-r", "6", "-t", "4s")
        for worker in workers:
            assert worker.wait(timeout=60) == 0
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=30)
    assert run.code == 0, run.output[-3000:]
    assert run.run["runner"] == "master" and len(set(run.records["worker"])) == 2
    assert len(run.records) == run.run["requests"]["locust"]["requests"] == sum(run.envoy.values()) > 0
    _check_focused(run.records)
