"""The ``canary`` command. Each subcommand parses its arguments and calls one library function."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from canary.errors import CanaryError
from mesh.counters import SubsetCounters

__all__ = ["main"]

# Wide enough for pod names and cluster names when output is piped (rich assumes 80 columns).
_WIDTH = None if sys.stdout.isatty() else 200
console = Console(stderr=False, highlight=False, width=_WIDTH, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _progress(message: str) -> None:
    err.print(f"[dim]canary:[/dim] {message}")


# --- mesh ------------------------------------------------------------------------


def _mesh_up(args: argparse.Namespace) -> int:
    from mesh.api import mesh_up

    state = mesh_up(args.filename, tiny=args.tiny, port=args.port, weights_dir=args.weights_dir, progress=_progress)
    console.print(f"local mesh ready: {len(state.pods)} model server pod(s) behind Envoy")
    console.print(f"ingress: {state.ingress_url}")
    return 0


def _mesh_apply(args: argparse.Namespace) -> int:
    from mesh.api import kube_apply, mesh_apply

    if args.backend == "kube":
        on_cluster = kube_apply(args.filename, context=args.context)
        for ref in on_cluster.applied:
            console.print(f"{ref} serverside-applied")
        for ref in on_cluster.rolled_out:
            console.print(f"{ref} rolled out")
        return 0
    result = mesh_apply(args.filename, progress=_progress)
    for applied in result.files:
        for obj in applied.objects:
            console.print(f"{obj} applied ({Path(applied.path).name}, sha256 {applied.sha256[:12]})")
    for pod in result.started:
        console.print(f"pod {pod} started")
    for pod in result.stopped:
        console.print(f"pod {pod} stopped")
    console.print(f"configuration version {result.version} is live in Envoy")
    return 0


def _mesh_status(args: argparse.Namespace) -> int:
    from mesh.api import mesh_status

    status = mesh_status()
    st = status.state
    if args.json:
        doc = {
            "ingress_url": st.ingress_url,
            "admin_port": st.admin_port,
            "envoy": {"pid": st.envoy_pid, "running": status.envoy_running},
            "version": st.version,
            "store": st.store,
            "objects": sorted({f"{o.document.get('kind')}/{o.document.get('metadata', {}).get('namespace', 'default')}/"
                               f"{o.document.get('metadata', {}).get('name')}" for o in st.objects}),
            "pods": [
                {
                    "namespace": p.namespace,
                    "name": p.name,
                    "deployment": p.deployment,
                    "labels": p.labels,
                    "pid": p.pid,
                    "ports": {str(k): v for k, v in p.ports.items()},
                    "running": status.pods_running.get(p.name, False),
                }
                for p in st.pods
            ],
            "counters": {k or "(no subset)": v.to_dict() for k, v in status.counters.items()},
        }
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    console.print(f"ingress {st.ingress_url}   Envoy pid {st.envoy_pid} "
                  f"({'running' if status.envoy_running else 'NOT RUNNING'}), admin 127.0.0.1:{st.admin_port}, "
                  f"config version {st.version}")
    objects = Table("kind", "namespace", "name", "from", title="objects")
    for o in st.objects:
        meta = o.document.get("metadata", {})
        objects.add_row(str(o.document.get("kind")), str(meta.get("namespace", "default")),
                        str(meta.get("name")), Path(o.source).name)
    console.print(objects)
    pods = Table("pod", "version", "pid", "ports (container→host)", "state", title="pods")
    for p in st.pods:
        ports = ", ".join(f"{c}→{h}" for c, h in sorted(p.ports.items()))
        pods.add_row(f"{p.namespace}/{p.name}", p.labels.get("version", ""), str(p.pid), ports,
                     "running" if status.pods_running.get(p.name) else "EXITED")
    console.print(pods)
    console.print(_counters_table(status.counters))
    return 0


def _counters_table(counters: dict[str, SubsetCounters]) -> Table:
    table = Table("subset", "requests", "by port", "by class", title="requests per subset (Envoy's counters)")
    for subset, c in counters.items():
        table.add_row(subset or "(no subset)", str(c.requests),
                      ", ".join(f"{p}: {n}" for p, n in sorted(c.by_port.items())),
                      ", ".join(f"{k}: {n}" for k, n in sorted(c.by_class.items())))
    return table


def _mesh_down(args: argparse.Namespace) -> int:
    from mesh.api import mesh_down

    stopped = mesh_down()
    for name in stopped:
        console.print(f"stopped {name}")
    if not stopped:
        console.print("no local mesh was running")
    return 0


# --- demo ------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from canary.demo import run_demo

    result = run_demo(tiny=args.tiny, port=args.port, rest_requests=args.rest_requests,
                      grpc_requests=args.grpc_requests, keep=args.keep, progress=_progress)
    total = sum(result.delta.values())
    table = Table("subset", "requests", "share", "configured", title="weight-70: requests per subset, as Envoy counted them")
    expected = {"resnet50": "70%", "resnet101": "30%"}
    for subset, n in sorted(result.delta.items()):
        if not subset and not n:
            continue  # the plain service cluster: unused once a subset route is applied
        share = f"{100 * n / total:.1f}%" if total else "-"
        table.add_row(subset or "(no subset)", str(n), share, expected.get(subset, "0%"))
    console.print(table)
    console.print(f"REST: {result.rest.sent} sent, {result.rest.failures} failed; "
                  f"gRPC: {result.grpc.sent} sent, {result.grpc.failures} failed")
    if result.kept_running:
        console.print(f"the mesh is still running at {result.ingress_url}; stop it with `canary mesh down`")
    return 0 if result.rest.failures == 0 and result.grpc.failures == 0 else 1


# --- calibrate -------------------------------------------------------------------


def _size_arg(text: str) -> int | None:
    if text == "original":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size takes a number of pixels or 'original', not {text!r}") from None


def _calibrate(args: argparse.Namespace) -> int:
    from loadtest.calibration import parse_endpoint, run_calibrate
    from payloads import class_name

    endpoints = dict(parse_endpoint(text) for text in args.endpoint)
    result = run_calibrate(args.out, source=args.source, protocol=args.protocol, endpoints=endpoints,
                           store=args.store, tiny=args.tiny, images_dir=args.images, size=args.size,
                           tolerance=args.tolerance, host=args.host)
    cal = result.calibration
    table = Table("payload", "format", *(f"{s}: top-1" for s in cal.subsets), "separation", "attribution",
                  title=f"calibration from {cal.source} (tolerance {cal.tolerance:g}; separable above {2 * cal.tolerance:g})")
    for row in cal.rows():
        tops = [f"{class_name(row.top[s][0])} ({row.top[s][0]}) {row.top[s][1]:.4f}" if s in row.top else "-"
                for s in cal.subsets]
        table.add_row(row.payload_id, row.fmt, *tops, f"{row.separation:.3g}", "excluded" if row.excluded else "ok")
    console.print(table)
    for warning in cal.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    console.print(f"{len(cal.usable)} of {len(cal.pairs)} payload/format pairs tell the subsets apart; "
                  f"wrote {result.path}")
    return 0


# --- load ------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> int:
    from loadtest.load import LoadRequest, RichProgress, run_load

    request = LoadRequest(
        host=args.host, protocol=args.protocol, canary_share=args.canary_share, canary_header=args.canary_header,
        payloads=args.payloads, users=args.users, spawn_rate=args.spawn_rate, run_time=args.run_time,
        requests=args.requests, processes=args.processes, run_dir=args.run_dir, calibration=args.calibration,
        expected=args.expected, until_verified=args.until_verified, from_manifest=args.from_manifest,
        tolerance=args.tolerance,
    )
    request.validate()
    with RichProgress(request, console=err) as bar:
        result = run_load(request, progress=bar)
    run = result.run or {}
    table = Table("subset", "requests", title=f"responses by subset ({run.get('status', 'no run.json')})")
    for subset, n in (run.get("requests", {}).get("by_subset") or {}).items():
        table.add_row(subset, str(n))
    console.print(table)
    if run.get("sequential"):
        _print_sequential(run["sequential"])
    for problem in run.get("problems") or []:
        err.print(f"[yellow]problem:[/yellow] {escape(str(problem))}")
    console.print(f"run directory: {result.run_dir}   (Locust's log: {result.log.name}; exit code {result.exit_code})")
    return result.exit_code


def _print_sequential(section: dict[str, Any]) -> None:
    from loadtest.sequential import summary_rows

    table = Table("protocol", "group", "expected", "status", "n", "decided at request",
                  title=f"--until-verified: {section.get('status')} ({section.get('expected_from')}, "
                        f"±{100 * float(section.get('policy', {}).get('tolerance', 0.03)):g} points)")
    for row in summary_rows(section):
        table.add_row(*(escape(cell) for cell in row))
    console.print(table)
    took = section.get("requests_to_decide")
    console.print(f"decided after {took} requests" if took else f"undecided: {escape(str(section.get('ended')))}")


# --- report ----------------------------------------------------------------------


def _report(args: argparse.Namespace) -> int:
    from verifier.report_console import print_verification
    from verifier.report_files import verify_and_report
    from verifier.verify import VerifyRequest

    request = VerifyRequest(run_dir=args.run_dir, expected=args.expected, manifests=tuple(args.from_manifest),
                            stable=args.stable, require_expectation=False)
    result, written = verify_and_report(request, json_path=args.json)
    print_verification(result, console)
    for warning in written.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    for path in written.paths:
        console.print(f"wrote {path}")
    return 0


# --- export ----------------------------------------------------------------------


def _export(args: argparse.Namespace) -> int:
    from mesh.api import model_store
    from serving.export import ensure_models

    store = args.store or model_store(args.tiny)
    for name, path in ensure_models(store, tiny=args.tiny, weights_dir=args.weights_dir).items():
        console.print(f"{name}: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="canary",
        description="Load-test ML models behind an Istio mesh and verify the canary split.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str,
            parent: argparse._SubParsersAction[argparse.ArgumentParser] = sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    demo = add("demo", _demo, "bring up the local mesh, split 70/30, send traffic, show the counts")
    demo.add_argument("--tiny", action="store_true", help="tiny test models instead of ResNet50/101")
    demo.add_argument("--port", type=int, default=8080, help="ingress port on 127.0.0.1 (default 8080)")
    demo.add_argument("--rest-requests", type=int, default=240)
    demo.add_argument("--grpc-requests", type=int, default=60)
    demo.add_argument("--keep", action="store_true", help="leave the mesh running afterwards")

    mesh = add("mesh", lambda a: 3, "the local mesh: up, apply, status, down")
    msub = mesh.add_subparsers(dest="mesh_command", required=True)
    up = add("up", _mesh_up, "start the local mesh and apply the base manifests", msub)
    up.add_argument("-f", "--filename", type=Path, action="append", default=[],
                    help="manifest file or directory (default: manifests/base)")
    up.add_argument("--tiny", action="store_true", help="tiny test models instead of ResNet50/101")
    up.add_argument("--port", type=int, default=8080, help="ingress port on 127.0.0.1 (default 8080)")
    up.add_argument("--weights-dir", type=Path, help="directory holding the Keras ImageNet weight files")
    apply = add("apply", _mesh_apply, "apply manifests like kubectl apply", msub)
    apply.add_argument("-f", "--filename", type=Path, action="append", required=True,
                       help="manifest file or directory (repeatable)")
    apply.add_argument("--backend", choices=["local", "kube"], default="local",
                       help="local mesh (default) or the cluster of your kubeconfig (server-side apply)")
    apply.add_argument("--context", help="kubeconfig context for --backend kube")
    status = add("status", _mesh_status, "objects, processes and per-subset counters", msub)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    add("down", _mesh_down, "stop everything the local mesh started", msub)

    calibrate = add("calibrate", _calibrate,
                    "record each subset's answers to the payloads, to tell later which subset answered")
    calibrate.add_argument("--source", choices=("mesh", "endpoints", "savedmodel"), default="mesh",
                           help="ask the local mesh's pods directly (default), given --endpoint servers, "
                                "or run the SavedModels in-process")
    calibrate.add_argument("--protocol", choices=("rest", "grpc", "both"), default="both",
                           help="how to ask the servers (default both, checking that they agree)")
    calibrate.add_argument("--endpoint", action="append", default=[], metavar="SUBSET=REST_URL,GRPC_TARGET",
                           help="a subset's own server, for --source endpoints (repeatable)")
    calibrate.add_argument("-o", "--out", type=Path, help="where to write it (default .canary/calibration.json)")
    calibrate.add_argument("--images", type=Path, help="payload images folder (default payloads/images)")
    calibrate.add_argument("--size", type=_size_arg, default=224,
                           help="pixels of the instances payloads (default 224), or 'original'")
    calibrate.add_argument("--tolerance", type=float, default=1e-5,
                           help="largest distance (max abs probability difference) still attributed (default 1e-5)")
    calibrate.add_argument("--tiny", action="store_true", help="with --source savedmodel: the tiny test models")
    calibrate.add_argument("--store", type=Path, help="with --source savedmodel: the model store")
    calibrate.add_argument("--host", help="the DestinationRule host, when the mesh has several")

    load = add("load", _load, "drive REST and gRPC predict traffic through the ingress with Locust, "
                              "attribute every response, write a run directory under reports/")
    load.add_argument("--host", help="the ingress URL (default: the running local mesh's)")
    load.add_argument("--protocol", choices=("rest", "grpc", "both"), default="both",
                      help="REST users, gRPC users or both (default both)")
    load.add_argument("--canary-share", type=float, default=0.2, help="share of users sending the canary header")
    load.add_argument("--canary-header", default="user-group: canary", help="'name: value' (default 'user-group: canary')")
    load.add_argument("--payloads", type=Path, help="folder of payload JPEGs (default payloads/images)")
    load.add_argument("-u", "--users", type=int, default=10, help="concurrent users (default 10)")
    load.add_argument("-r", "--spawn-rate", type=float, help="users started per second (default: all at once)")
    budget = load.add_mutually_exclusive_group()
    budget.add_argument("-t", "--run-time", help="how long, e.g. 60s or 5m (default 60s)")
    budget.add_argument("--requests", type=int, help="stop after exactly this many requests")
    load.add_argument("--processes", type=int, help="Locust worker processes (default: one process)")
    load.add_argument("--run-dir", type=Path, help="the run directory (default reports/<UTC timestamp>-<id>)")
    load.add_argument("--calibration", type=Path,
                      help="calibration file (default: calibrate against the local mesh's pods)")
    load.add_argument("--expected", help="expected split for the live view, e.g. 70/30 or 'default: 100/0; canary: 0/100'")
    load.add_argument("--until-verified", action="store_true",
                      help="stop as soon as the anytime-valid sequential test decides every protocol and group "
                           "(needs --expected or --from-manifest; exit 0 verified, 1 refuted, 2 undecided when "
                           "--requests or --run-time ran out)")
    load.add_argument("--from-manifest", type=Path, metavar="FILE",
                      help="with --until-verified: each group's expected split from this VirtualService")
    load.add_argument("--tolerance", type=float,
                      help="with --until-verified: allowed deviation of each share (default 0.03: ±3 points)")

    report = add("report", _report, "write summary.json and report.html (split, latency, accuracy) into a run "
                                     "directory; exits 0 once written, whatever the verdict (verify-split gates)")
    report.add_argument("run_dir", nargs="?", type=Path, help="the run directory (default: the newest under reports/)")
    report.add_argument("--expected", help="expected split (default: the one the load test was given, if any)")
    report.add_argument("--from-manifest", type=Path, action="append", default=[], metavar="FILE",
                        help="derive each group's expected split from this VirtualService")
    report.add_argument("--stable", help="the stable subset (default: the VirtualService's default route, else resnet50)")
    report.add_argument("--json", type=Path, metavar="FILE", help="also write the summary JSON here")

    export = add("export", _export, "export the SavedModels into the model store (cached)")
    export.add_argument("--tiny", action="store_true")
    export.add_argument("--store", type=Path)
    export.add_argument("--weights-dir", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CanaryError as exc:
        err.print(f"[bold red]canary:[/bold red] {escape(str(exc))}", soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("canary: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
