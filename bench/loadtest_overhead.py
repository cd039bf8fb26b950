"""The load tester's own cost: canary's REST user against a bare Locust user, through Envoy.

The upstream is trivial on purpose, so the client is the bottleneck: a real
Envoy (one worker thread) answers every ``POST /v1/models/...:predict`` itself
with a route ``direct_response``: a fixed, realistic 1000-class
``{"predictions": [[...]]}`` body (a seeded softmax, printed as our model
server prints float32). A buffer filter makes Envoy read the whole request
body first, as a model server would. Every figure is measured in the same run,
on the same cores:

    bare     a ``FastHttpUser`` posting the same prebuilt bodies in the same
             order (every payload x format x path), discarding the responses
    canary   ``loadtest/locustfile.py`` REST users: attribution of every
             response (a calibration whose reference is the upstream's vector)
             and every record shipped, written to Parquet and checked at the end
    hey      Debian's ``hey`` (Go) with one of those bodies, for scale

Each Locust peer runs as one process (no ``--processes``) with the same users
and run time, in rounds of one bare and one canary run (which goes first
alternates); the headline is the median over rounds of canary/bare requests/s,
each canary run against the bare run beside it in time, since the load of a
shared machine drifts. The CPU the client, Envoy and every other process used
in each run is printed too, to show who was busy. Then the Fingerprinter's
paths are timed on a 1000-class response with ``timeit``.

Run: ``make bench`` or ``python -m bench.loadtest_overhead [--users 10] [--seconds 8] [--rounds 4]``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import orjson

from canary.conventions import UNKNOWN
from loadtest.calibration import save_calibration
from loadtest.fingerprint import Fingerprinter, build_calibration, rest_probabilities
from loadtest.items import PredictItem, build_items
from mesh.local import procs
from mesh.local.envoy import ADMIN_SOCKET_MODE, EnvoyAdmin, envoy_binary
from payloads import load_payloads

ROOT = Path(__file__).resolve().parents[1]
MODEL = "image_classifier"
STABLE, CANARY = "resnet50", "resnet101"
RATIO_TARGET = 0.90
ATTRIBUTION_TARGET_US = 20.0
TICKS = os.sysconf("SC_CLK_TCK")
# Locust's final summary: "Aggregated  <reqs>  <fails>(<pct>%) | avg min max med | <req/s>  <failures/s>"
SUMMARY = re.compile(r"^\s+Aggregated\s+(\d+)\s+(\d+)\([\d.]+%\)\s+\|[^|]*\|\s+([\d.]+)\s+[\d.]+\s*$", re.M)

BARE_LOCUSTFILE = '''\
"""The peer: a bare FastHttpUser posting canary's prebuilt bodies, responses discarded."""
import itertools
import os

from locust import FastHttpUser, constant, task

from loadtest.items import build_items
from payloads import load_payloads

_SIZE = os.environ.get("BENCH_PAYLOAD_SIZE", "224")
_ITEMS = build_items(load_payloads(size=None if _SIZE == "original" else int(_SIZE)),
                     "rest", "image_classifier", 1)
_START = itertools.count()


class BareUser(FastHttpUser):
    wait_time = constant(0)
    network_timeout = 60.0
    connection_timeout = 30.0

    def on_start(self):
        self._cursor = next(_START) % len(_ITEMS)
        self._headers = {"Content-Type": "application/json"}

    @task
    def predict(self):
        item = _ITEMS[self._cursor]
        self._cursor = (self._cursor + 1) % len(_ITEMS)
        self.client.post(item.path, data=item.body, headers=self._headers, name=item.name)
'''


# ---------------------------------------------------------------- processes


@dataclass
class Children:
    """Every process this benchmark started; :meth:`stop_all` ends them by pid."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=ROOT, env=env)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(grace_s)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(grace_s)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.procs)):
            self.stop(proc)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the ``finally`` blocks stop the children."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def busy_s() -> float:
    """CPU seconds the whole machine has spent busy (every core, every process) so far."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICKS  # all but idle and iowait


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


# ---------------------------------------------------------------- the trivial upstream


def predictions_body(seed: int = 20240601) -> bytes:
    """A realistic one-instance predict response: a seeded 1000-class softmax, float32 shortest repr."""
    logits = np.random.default_rng(seed).normal(0.0, 2.5, 1000)
    probs = np.exp(logits - logits.max())
    probs = (probs / probs.sum()).astype(np.float32)
    return orjson.dumps({"predictions": probs[None]}, option=orjson.OPT_SERIALIZE_NUMPY)


def envoy_bootstrap(port: int, admin_socket: Path, body: bytes) -> dict[str, Any]:
    """A static Envoy: predict paths answered by ``direct_response`` after the whole request is read;
    its admin on a Unix socket only this user may open, as the mesh's."""
    route_config = {
        "name": "trivial",
        "max_direct_response_body_size_bytes": max(len(body) + 1024, 4096),
        "virtual_hosts": [{
            "name": "trivial",
            "domains": ["*"],
            "routes": [{
                "match": {"safe_regex": {"regex": r"/v1/models/[^/]+(/versions/\d+)?:predict"}},
                "direct_response": {"status": 200, "body": {"inline_string": body.decode()}},
                "response_headers_to_add": [
                    {"header": {"key": "content-type", "value": "application/json"}},
                ],
            }],
        }],
    }
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                 "HttpConnectionManager",
        "stat_prefix": "bench",
        "codec_type": "AUTO",
        "route_config": route_config,
        "http_filters": [
            {"name": "envoy.filters.http.buffer", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                "max_request_bytes": 16 << 20}},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    }
    return {
        "node": {"id": "bench-loadtest", "cluster": "bench"},
        "admin": {"address": {"pipe": {"path": str(admin_socket), "mode": ADMIN_SOCKET_MODE}}},
        "static_resources": {"listeners": [{
            "name": "ingress",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "per_connection_buffer_limit_bytes": 16 << 20,
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}],
        }]},
    }


def start_envoy(children: Children, work: Path, body: bytes) -> tuple[subprocess.Popen[bytes], int]:
    port, admin_socket = procs.free_port(), work / "admin.sock"  # work: mkdtemp's, mode 0700
    config = work / "envoy.json"
    config.write_bytes(orjson.dumps(envoy_bootstrap(port, admin_socket, body)))
    argv = [str(envoy_binary()), "-c", str(config), "--disable-hot-restart",
            "--concurrency", "1", "--log-level", "warn"]
    proc = children.start(argv, work / "envoy.log")
    admin = EnvoyAdmin(admin_socket, timeout=1.0)
    deadline = time.monotonic() + 30
    while not admin.is_ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = (work / "envoy.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"Envoy did not become ready; its log says:\n{tail}")
        time.sleep(0.05)
    return proc, port


def check_upstream(port: int, item: PredictItem, expected: bytes) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", item.path, body=item.body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status != 200 or data != expected:
        raise RuntimeError(f"the trivial upstream answered {resp.status} {data[:200]!r}")


# ---------------------------------------------------------------- the peers


@dataclass
class Result:
    requests: int
    failures: int
    rps: float
    client_cpu: float  # % of one core, steady window
    envoy_cpu: float
    other_cpu: float  # every other process on the machine
    note: str = ""


Sample = tuple[float, float, float, float]  # monotonic time, client CPU s, Envoy CPU s, machine busy s


def steady_cpu(samples: list[Sample]) -> tuple[float, float, float]:
    """(client, Envoy, others) in % of one core, over the window where Envoy is busy, its first second left out."""
    nan = float("nan")
    if not samples:
        return nan, nan, nan
    base = samples[0][2]
    busy = [s for s in samples if s[2] > base + 0.02]
    if len(busy) < 2:
        return nan, nan, nan
    window = [s for s in busy if s[0] >= busy[0][0] + 1.0]
    if len(window) < 2:
        window = busy
    (t0, c0, e0, m0), (t1, c1, e1, m1) = window[0], window[-1]
    span = max(t1 - t0, 1e-9)
    client, envoy = 100 * (c1 - c0) / span, 100 * (e1 - e0) / span
    return client, envoy, max(0.0, 100 * (m1 - m0) / span - client - envoy)


def run_locust(children: Children, envoy_pid: int, work: Path, name: str, locustfile: Path,
               url: str, users: int, seconds: int, extra: list[str], env: dict[str, str]) -> Result:
    argv = [str(Path(sys.executable).parent / "locust"), "-f", str(locustfile), "--headless",
            "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--host", url,
            "--only-summary", "--loglevel", "WARNING", *extra]
    proc = children.start(argv, work / f"{name}.log", env)
    samples: list[Sample] = []
    deadline = time.monotonic() + seconds + 90
    try:
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: Locust did not finish within {seconds + 90} s; see {work / name}.log")
            samples.append((time.monotonic(), cpu_s(proc.pid), cpu_s(envoy_pid), busy_s()))
            time.sleep(0.2)
    finally:
        children.stop(proc)
    log = (work / f"{name}.log").read_text(errors="replace")
    total = SUMMARY.findall(log)
    if not total:
        raise RuntimeError(f"{name}: no Locust summary (exit {proc.returncode}); its log:\n{log[-2000:]}")
    requests, failures, rps = total[-1]
    client, envoy, other = steady_cpu(samples)
    note = "" if proc.returncode == 0 else f"Locust exit code {proc.returncode}"
    return Result(int(requests), int(failures), float(rps), client, envoy, other, note)


def canary_outcome(run_dir: Path) -> str:
    """What canary's own run directory says about attribution."""
    try:
        progress = orjson.loads((run_dir / "progress.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return f"no progress.json in {run_dir}"
    subsets = progress.get("by_subset", {})
    return (f"{progress.get('requests')} records: {', '.join(f'{k} {v}' for k, v in subsets.items())}; "
            f"unknown {progress.get('unknown')}, failed {progress.get('failed')}")


def run_hey(children: Children, work: Path, url: str, body: bytes, users: int,
            seconds: int) -> Result | str:
    hey = shutil.which("hey")
    if hey is None:
        return "skipped: `hey` is not installed (apt-get install -y hey)"
    path = work / "body.json"
    path.write_bytes(body)
    argv = [hey, "-z", f"{seconds}s", "-c", str(users), "-m", "POST", "-D", str(path),
            "-T", "application/json", url]
    proc = children.start(argv, work / "hey.log")
    try:
        proc.wait(seconds + 30)
    except subprocess.TimeoutExpired:
        return "skipped: hey did not finish in time"
    finally:
        children.stop(proc)
    text = (work / "hey.log").read_text(errors="replace")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    codes = dict((int(c), int(n)) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text))
    if rps is None:
        return f"skipped: could not read hey's output ({text[-300:]!r})"
    ok = codes.get(200, 0)
    nan = float("nan")
    return Result(sum(codes.values()), sum(codes.values()) - ok, float(rps.group(1)), nan, nan, nan)


# ---------------------------------------------------------------- attribution cost


def attribution_costs(body: bytes, payload_id: str, fmt: str, calibration: Any, number: int) -> list[tuple[str, float]]:
    """Microseconds per call (best of 3 repeats of ``number``) for each Fingerprinter path."""
    memo = Fingerprinter(calibration)
    fresh = Fingerprinter(calibration, memo_limit=0)  # never remembers: every response is new
    vector = rest_probabilities(body)
    other_vector = np.roll(vector, 7)
    other = orjson.dumps({"predictions": other_vector[None]}, option=orjson.OPT_SERIALIZE_NUMPY)
    buf, other_buf = bytearray(body), bytearray(other)
    if memo.attribute_rest(payload_id, fmt, body).subset != STABLE:
        raise RuntimeError("the upstream's response does not attribute to the calibrated subset")
    if fresh.attribute_rest(payload_id, fmt, other).subset != UNKNOWN:
        raise RuntimeError("the unknown response attributes to a subset")
    # bytes(buf): a new bytes object per call, as each response is (its hash is not cached)
    paths: list[tuple[str, Callable[[], object]]] = [
        ("repeat response, raw REST bytes (memo hit)", lambda: memo.attribute_rest(payload_id, fmt, bytes(buf))),
        ("new response, numeric path: decoded vector (nearest)", lambda: fresh.attribute(payload_id, fmt, vector)),
        ("new response, REST body (JSON parse + nearest)",
         lambda: fresh.attribute_rest(payload_id, fmt, bytes(buf))),
        ("unknown response, decoded vector (nearest + top-5)",
         lambda: fresh.attribute(payload_id, fmt, other_vector)),
        ("unknown response, REST body (JSON parse + nearest + top-5)",
         lambda: fresh.attribute_rest(payload_id, fmt, bytes(other_buf))),
    ]
    out = []
    for label, call in paths:
        best = min(timeit.repeat(call, number=number, repeat=3))
        out.append((label, best / number * 1e6))
    return out


# ---------------------------------------------------------------- main


def fmt_pct(value: float) -> str:
    return "–" if value != value else f"{value:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10, help="Locust users and hey connections (default 10)")
    parser.add_argument("--seconds", type=int, default=8, help="seconds per Locust run and for hey (default 8)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="rounds of one bare and one canary run, which first alternating (default 4)")
    parser.add_argument("--iterations", type=int, default=10_000, help="timeit calls per attribution figure")
    parser.add_argument("--payload-size", default="224", help="pixels of the instances payloads (default 224)")
    args = parser.parse_args()
    if not (1 <= args.users <= 200 and 2 <= args.seconds <= 120 and 1 <= args.rounds <= 6
            and 10_000 <= args.iterations <= 1_000_000):
        parser.error("--users 1..200, --seconds 2..120, --rounds 1..6, --iterations 10000..1000000")

    started = time.monotonic()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    work = Path(tempfile.mkdtemp(prefix="canary-bench-load-"))
    children = Children()
    body = predictions_body()
    vector = rest_probabilities(body)
    payloads = load_payloads(size=None if args.payload_size == "original" else int(args.payload_size))
    items = build_items(payloads, "rest", MODEL, 1)
    outputs = {p.id: {fmt: {STABLE: vector, CANARY: np.roll(vector, 1)} for fmt in p.rest_body}
               for p in payloads}
    calibration = build_calibration(outputs, payload_digests={p.id: dict(p.digests) for p in payloads},
                                    meta={"bench": "loadtest_overhead: the trivial upstream's fixed vector"})
    cal_path = save_calibration(calibration, work / "calibration.json")
    env = {**os.environ, "CANARY_HOME": str(work / "home"), "BENCH_PAYLOAD_SIZE": args.payload_size,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    bare_file = work / "bare_locustfile.py"
    bare_file.write_text(BARE_LOCUSTFILE)
    canary_file = ROOT / "loadtest" / "locustfile.py"

    results: dict[str, list[Result]] = {"bare": [], "canary": []}
    outcomes: list[str] = []
    hey: Result | str = "skipped"
    try:
        with sigterm_as_interrupt():
            envoy, port = start_envoy(children, work, body)
            url = f"http://127.0.0.1:{port}"
            check_upstream(port, items[0], body)
            for rnd in range(args.rounds):
                order = ("bare", "canary") if rnd % 2 == 0 else ("canary", "bare")
                for peer in order:
                    name = f"{peer}-{rnd}"
                    if peer == "bare":
                        result = run_locust(children, envoy.pid, work, name, bare_file, url, args.users,
                                            args.seconds, [], env)
                    else:
                        run_dir = work / "runs" / name
                        extra = ["--protocol", "rest", "--calibration", str(cal_path), "--run-dir", str(run_dir),
                                 "--payload-size", args.payload_size]
                        result = run_locust(children, envoy.pid, work, name, canary_file, url, args.users,
                                            args.seconds, extra, env)
                        outcomes.append(canary_outcome(run_dir))
                    results[peer].append(result)
            mean = sum(len(i.body) for i in items) / len(items)
            hey_item = min(items, key=lambda i: abs(len(i.body) - mean))
            hey_url = url + hey_item.path
            hey = run_hey(children, work, hey_url, hey_item.body, args.users, args.seconds)
    finally:
        children.stop_all()
    costs = attribution_costs(body, payloads.items[0].id, "instances", calibration, args.iterations)

    def rps(peer: str) -> float:
        return statistics.fmean(r.rps for r in results[peer])

    bare_rps = rps("bare")
    # each round's canary run against the bare run beside it in time: the machine's load drifts
    pairs = [c.rps / b.rps for b, c in zip(results["bare"], results["canary"], strict=True) if b.rps]
    ratio = statistics.median(pairs) if pairs else float("nan")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}; load average {load_before} before, "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} after")
    print(f"upstream: Envoy direct_response (1 worker thread, buffer filter), {len(body)}-byte 1000-class "
          f"predictions body; request bodies {min(len(i.body) for i in items)}-{max(len(i.body) for i in items)} "
          f"bytes ({len(items)} prebuilt, --payload-size {args.payload_size})")
    print(f"load: one Locust process per run, {args.users} users, -t {args.seconds}s, {args.rounds} round(s) "
          f"alternating bare/canary first; hey -c {args.users} -z {args.seconds}s")
    print()
    header = ("client", "requests", "failed", "req/s (mean)", "req/s per round", "vs bare",
              "client CPU %", "Envoy CPU %", "other processes CPU %")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for peer, label in (("bare", "bare FastHttpUser"), ("canary", "canary RestUser (attribution + records)")):
        rs = results[peer]
        print(f"| {label} | {sum(r.requests for r in rs)} | {sum(r.failures for r in rs)} | {rps(peer):.0f} | "
              f"{' / '.join(f'{r.rps:.0f}' for r in rs)} | {rps(peer) / bare_rps:.2f} | "
              f"{fmt_pct(statistics.fmean(r.client_cpu for r in rs))} | "
              f"{fmt_pct(statistics.fmean(r.envoy_cpu for r in rs))} | "
              f"{fmt_pct(statistics.fmean(r.other_cpu for r in rs))} |")
    if isinstance(hey, Result):
        print(f"| hey (Go), one {len(hey_item.body)}-byte body | {hey.requests} | {hey.failures} | {hey.rps:.0f} | – | "
              f"{hey.rps / bare_rps:.2f} | – | – | – |")
    print("(CPU in % of one core, over each run's steady window; 'other processes' is everything else on the machine)")
    print()
    if isinstance(hey, str):
        print(f"hey: {hey}")
    for r in results["bare"] + results["canary"]:
        if r.note:
            print(f"note: {r.note}")
    for i, outcome in enumerate(outcomes):
        print(f"canary run {i + 1}: {outcome}")
    verdict = "pass" if ratio >= RATIO_TARGET else "MISS"
    print(f"canary / bare requests/s per round: {' '.join(f'{x:.2f}' for x in pairs)}; median {ratio:.2f} "
          f"(target >= {RATIO_TARGET:.2f}): {verdict}")
    print()
    print("| attribution path, 1000 classes | µs per response | target µs | result |")
    print("|---|---|---|---|")
    for label, us in costs:
        print(f"| {label} | {us:.1f} | <= {ATTRIBUTION_TARGET_US:.0f} | "
              f"{'pass' if us <= ATTRIBUTION_TARGET_US else 'MISS'} |")
    print(f"(timeit, best of 3 x {args.iterations} calls; each REST call includes one copy of the body "
          f"into a new bytes object, as a response is)")
    print(f"total {time.monotonic() - started:.0f} s; logs and run directories in {work}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; every process the benchmark started was stopped", file=sys.stderr)
        sys.exit(130)
