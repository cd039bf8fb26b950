"""The ``canary`` command. Each subcommand parses its arguments and calls one library function.

Exit codes, the same in every command (``verify-split`` included): 0 verified
or done, 1 refuted or failed, 2 inconclusive, 3 bad usage or unreadable input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
from rich.markup import escape
from rich.table import Table

from canary.commandline import ArgumentParser
from canary.conventions import DEFAULT_PAYLOAD_SIZE, parse_header, parse_payload_size
from canary.errors import UsageError
from canary.rundir.document import SequentialRecord
from canary.rundir.layout import REPORTS_DIR
from commands.cli_sequences import add_commands
from commands.console import Consoles, run_command
from commands.kube_args import add_kube, kube_of

if TYPE_CHECKING:
    from mesh.api import KubeStatus
    from mesh.local.backend import MeshStatus

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace, Consoles], int]


# --- mesh ------------------------------------------------------------------------


def _mesh_up(args: argparse.Namespace, io: Consoles) -> int:
    from mesh.api import mesh_up

    state = mesh_up(args.filename, tiny=args.tiny, port=args.port, weights_dir=args.weights_dir,
                    progress=io.progress)
    io.out.print(f"local mesh ready: {len(state.pods)} model server pod(s) behind Envoy")
    io.out.print(f"ingress: {state.ingress_url}")
    return 0


def _mesh_apply(args: argparse.Namespace, io: Consoles) -> int:
    from mesh.api import kube_apply, mesh_apply

    if args.backend == "kube":  # the older spelling of --kube
        args.kube = True
    kube = kube_of(args)
    if kube is not None:
        on_cluster = kube_apply(args.filename, context=kube.context)
        for ref in on_cluster.applied:
            io.out.print(f"{ref} serverside-applied")
        for ref in on_cluster.rolled_out:
            io.out.print(f"{ref} rolled out")
        return 0
    result = mesh_apply(args.filename, progress=io.progress)
    for applied in result.files:
        for obj in applied.objects:
            io.out.print(f"{obj} applied ({Path(applied.path).name}, sha256 {applied.sha256[:12]})")
    for pod in result.started:
        io.out.print(f"pod {pod} started")
    for pod in result.stopped:
        io.out.print(f"pod {pod} stopped")
    io.out.print(f"configuration version {result.version} is live in Envoy")
    return 0


def _mesh_status(args: argparse.Namespace, io: Consoles) -> int:
    from mesh.api import kube_status, mesh_status

    kube = kube_of(args)
    if kube is not None:
        return _print_kube_status(kube_status(kube), args.json, io)
    status = mesh_status()
    if args.json:
        sys.stdout.write(orjson.dumps(status.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    st = status.state
    io.out.print(f"ingress {st.ingress_url}   Envoy pid {st.envoy_pid} "
                 f"({'running' if status.envoy_running else 'NOT RUNNING'}), admin socket {st.admin_socket or '(none)'}, "
                 f"config version {st.version}")
    if status.interrupted_push is not None:
        io.warn(f"version {status.interrupted_push}'s push never finished (the command that pushed it was "
                "killed), so Envoy may hold part of it; the next `canary mesh apply` puts the last "
                "acknowledged configuration back before it applies anything")
    objects = Table("kind", "namespace", "name", "from", title="objects")
    for obj in status.view.objects:
        objects.add_row(obj.ref.kind, obj.ref.namespace or "-", obj.ref.name, Path(obj.source).name)
    io.out.print(objects)
    pods = Table("pod", "version", "pid", "server pid", "ports (container→host)", "state", "restarts",
                 "last exit", title="pods")
    for p in st.pods:
        ports = ", ".join(f"{c}→{h}" for c, h in sorted(p.ports.items()))
        c = status.containers.get(p.name)
        if c is not None and c.state == "waiting":
            state = f"restarting at {c.restart_at} (back-off)"
        else:
            state = "running" if status.pods_running.get(p.name) else "EXITED"
        last = "–" if c is None or c.last_exit is None else f"{c.last_exit.describe()}, at {c.last_exit.finished_at}"
        pods.add_row(f"{p.namespace}/{p.name}", p.labels.get("version", ""), str(p.pid),
                     str(c.server_pid) if c and c.server_pid else "–", ports, state,
                     "–" if c is None else str(c.restarts), last)
    io.out.print(pods)
    io.out.print(_counters_table(status))
    return 0


def _print_kube_status(status: KubeStatus, as_json: bool, io: Consoles) -> int:
    from mesh.kube_status import pods_by_subset

    if as_json:
        sys.stdout.write(orjson.dumps(status.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    io.out.print(f'cluster {escape(status.server)} (context "{escape(status.context)}"), namespace '
                 f'"{status.namespace}"; ingress {escape(status.ingress_url) or "NOT FOUND"}')
    for problem in status.problems:
        io.warn(problem)
    objects = Table("kind", "namespace", "name", title="objects")
    for obj in status.view.objects:
        objects.add_row(obj.ref.kind, obj.ref.namespace or "-", obj.ref.name)
    io.out.print(objects)
    pods = Table("subset", "pod", "address", "ports", "ready", title="pods")
    for subset, members in pods_by_subset(status.view).items():
        for pod in members or ():
            pods.add_row(subset or "(no subset)", pod.name, pod.address or "–",
                         ", ".join(map(str, sorted(pod.ports))), "yes" if pod.ready else "NO")
        if not members:
            pods.add_row(subset, "(none)", "–", "–", "NO")
    io.out.print(pods)
    if not status.counters_from:
        return 0
    table = Table("subset", "requests", "share", "by class",
                  title=f"requests per subset (istio_requests_total, {escape(status.counters_from)})")
    for subset, row in status.subset_counts().items():
        table.add_row(subset or "(no version)", str(row["requests"]), _share_text(row["share"]),
                      ", ".join(f"{k}: {n}" for k, n in row["by_class"].items()))
    io.out.print(table)
    return 0


def _counters_table(status: MeshStatus) -> Table:
    """Per subset: Envoy's totals and share, and the same since the last routing change."""
    since = status.since_change
    caption = None
    if since is not None:
        caption = f"since v{since.version}: after routing version {since.version} was acknowledged at {since.applied_at}"
    elif status.counters:
        caption = "the counts since the last routing change are unknown (none were kept when it was applied)"
    table = Table("subset", "requests", "share", f"since v{since.version}" if since else "since change",
                  "share since", "by port", "by class", title="requests per subset (Envoy's counters)",
                  caption=caption)
    for subset, row in status.subset_counts().items():
        recent = row["since_change"]
        table.add_row(subset or "(no subset)", str(row["requests"]), _share_text(row["share"]),
                      "–" if recent is None else str(recent["requests"]),
                      "–" if recent is None else _share_text(recent["share"]),
                      ", ".join(f"{p}: {n}" for p, n in row["by_port"].items()),
                      ", ".join(f"{k}: {n}" for k, n in row["by_class"].items()))
    return table


def _share_text(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.1f}%"


def _mesh_down(args: argparse.Namespace, io: Consoles) -> int:
    from mesh.api import mesh_down

    stopped = mesh_down()
    for name in stopped:
        io.out.print(f"stopped {name}")
    if not stopped:
        io.out.print("no local mesh was running")
    return 0


# --- calibrate -------------------------------------------------------------------


def _calibrate(args: argparse.Namespace, io: Consoles) -> int:
    from loadtest.calibration import parse_endpoint, run_calibrate
    from payloads import class_name

    endpoints = dict(parse_endpoint(text) for text in args.endpoint)
    result = run_calibrate(args.out, source=args.source, protocol=args.protocol, endpoints=endpoints,
                           store=args.store, tiny=args.tiny, images_dir=args.images, size=args.size,
                           tolerance=args.tolerance, host=args.host, kube=kube_of(args))
    cal = result.calibration
    table = Table("payload", "format", *(f"{s}: top-1" for s in cal.subsets), "separation", "attribution",
                  title=f"calibration from {cal.source} (tolerance {cal.tolerance:g}; separable above {2 * cal.tolerance:g})")
    for row in cal.rows():
        tops = [f"{class_name(row.top[s][0])} ({row.top[s][0]}) {row.top[s][1]:.4f}" if s in row.top else "-"
                for s in cal.subsets]
        table.add_row(row.payload_id, row.fmt, *tops, f"{row.separation:.3g}", "excluded" if row.excluded else "ok")
    io.out.print(table)
    for warning in cal.warnings:
        io.warn(warning)
    io.out.print(f"{len(cal.usable)} of {len(cal.pairs)} payload/format pairs tell the subsets apart; "
                 f"wrote {result.path}")
    return 0


# --- predict ---------------------------------------------------------------------


def _predict(args: argparse.Namespace, io: Consoles) -> int:
    from loadtest.predict import result_lines, run_predict

    result = run_predict(args.file, grpc=args.grpc, host=args.host, headers=args.header, top=args.top,
                         kube=kube_of(args, ingress=args.host))
    for line in result_lines(result):
        io.out.print(escape(line))
    return 0


# --- load ------------------------------------------------------------------------


def _load(args: argparse.Namespace, io: Consoles) -> int:
    from commands.loading import load_and_report
    from loadtest.load import LoadRequest, RichProgress
    from loadtest.options import options_from_parsed

    request = LoadRequest(options=options_from_parsed(args), host=args.host, users=args.users,
                          spawn_rate=args.spawn_rate, run_time=args.run_time, processes=args.processes)
    request.validate()
    in_cluster = None
    if args.in_cluster:
        from loadtest.incluster_load import InClusterLoad

        given = {k: v for k, v in (("workers", args.workers), ("image", args.image)) if v is not None}
        in_cluster = InClusterLoad(load=request, keep=args.keep, **given)
    elif args.workers is not None or args.image is not None or args.keep:
        raise UsageError("--workers, --image and --keep go with --in-cluster")
    with RichProgress(request, console=io.err) as bar:
        outcome = load_and_report(request, progress=bar, warn=io.warn, in_cluster=in_cluster)
    result = outcome.result
    run = result.run
    if run is not None:
        table = Table("subset", "requests", title=f"responses by subset ({run.status})")
        for subset, n in run.requests.by_subset.items():
            table.add_row(subset, str(n))
        io.out.print(table)
    if run is not None and run.sequential is not None:
        _print_sequential(run.sequential, io)
    for problem in run.problems if run else ():
        io.problem(problem)
    _print_failures(result.failures, io)
    if outcome.problem:
        io.warn(outcome.problem)
    if run is not None and run.mesh.counters_reset:
        io.warn("Envoy's counters were reset during the run (POST /reset_counters on its admin): the records "
                "cannot be cross-checked against the mesh's own counts; " + "; ".join(run.mesh.counters_reset_evidence))
    for problem in run.mesh.problems if run is not None else ():
        io.warn(problem)
    if run is not None and run.interrupted is not None:
        stop = run.interrupted
        io.warn(f"the run was interrupted{f' by {stop.signal} at {stop.at}' if stop.signal else ''} after "
                f"{run.requests.total} requests: every record it made is in the run directory (exit code "
                f"{result.exit_code})")
    io.out.print(f"run directory: {result.run_dir}   (Locust's log: {result.log.name}; exit code {result.exit_code})")
    if outcome.report is not None:
        io.out.print(f"report: {outcome.report}")
    return result.exit_code


def _print_failures(failures: Sequence[tuple[str, int]], io: Consoles, shown: int = 5) -> None:
    """Why requests failed, the most common reasons first (every record keeps its own)."""
    if not failures:
        return
    io.out.print(f"why {sum(n for _, n in failures)} requests failed:")
    for reason, n in failures[:shown]:
        io.out.print(f"  {escape(reason)} ×{n}")
    if rest := failures[shown:]:
        io.out.print(f"  … {len(rest)} other reasons ×{sum(n for _, n in rest)} (the records' error column)")


def _print_sequential(section: SequentialRecord, io: Consoles) -> None:
    from loadtest.sequential import summary_rows

    tolerance = float(section.policy.get("tolerance", 0.03))
    table = Table("protocol", "group", "expected", "status", "n", "decided at request",
                  title=f"--until-verified: {section.status} ({section.expected_from}, ±{100 * tolerance:g} points)")
    for row in summary_rows(section):
        table.add_row(*(escape(cell) for cell in row))
    io.out.print(table)
    took = section.requests_to_decide
    io.out.print(f"decided after {took} requests" if took else f"undecided: {escape(str(section.ended))}")


# --- report ----------------------------------------------------------------------


def _report(args: argparse.Namespace, io: Consoles) -> int:
    from verifier.report_console import print_verification
    from verifier.report_files import verify_and_report
    from verifier.verify import VerifyRequest

    request = VerifyRequest(run_dir=args.run_dir, reports=args.reports, expected=args.expected,
                            manifests=tuple(args.from_manifest), stable=args.stable, require_expectation=False)
    result, written = verify_and_report(request, json_path=args.json)
    print_verification(result, io.out)
    for warning in written.warnings:
        io.warn(warning)
    for path in written.paths:
        io.out.print(f"wrote {path}")
    return 0


# --- export ----------------------------------------------------------------------


def _export(args: argparse.Namespace, io: Consoles) -> int:
    from mesh.api import model_store
    from serving.export import ensure_models

    store = args.store or model_store(args.tiny)
    for name, path in ensure_models(store, tiny=args.tiny, weights_dir=args.weights_dir).items():
        io.out.print(f"{name}: {path}")
    return 0


# --- the parser ------------------------------------------------------------------

_DESCRIPTION = """\
Load-test ML models behind an Istio mesh and verify the canary split.

Start with `canary demo`. A run is judged by the `verify-split` command
(`verify-split --help`), e.g. `verify-split --expected 70/30` on the newest run."""


def _add_tiny(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tiny", action="store_true",
                        help="tiny test models with the same signatures instead of ResNet50/101 (default off)")


def _add_port(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8080, help="ingress port on 127.0.0.1 (default 8080)")


def _add_weights_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights-dir", type=Path,
                        help="folder holding the Keras ImageNet weight files (default: $KERAS_HOME/models, "
                             "~/.keras/models; else the weights are seeded)")


def _add_load(add: Callable[..., argparse.ArgumentParser]) -> None:
    from loadtest.options import add_arguments

    load = add("load", _load, "drive REST and gRPC predict traffic through the ingress with Locust, "
                              "attribute every response, write a run directory under reports/")
    load.add_argument("--host", "--ingress", help="the ingress URL (default: the running local mesh's, or with "
                                                  "--kube the cluster's istio-ingressgateway)")
    load.add_argument("-u", "--users", type=int, default=10, help="concurrent users (default 10)")
    load.add_argument("-r", "--spawn-rate", type=float, help="users started per second (default: all at once)")
    load.add_argument("-t", "--run-time", help="how long, e.g. 60s, 5m or 1h30m (default 60s, or until --requests)")
    load.add_argument("--processes", type=int, help="Locust worker processes (default: one process)")
    add_arguments(load, locust=False)
    load.add_argument("--in-cluster", action="store_true",
                      help="with --kube: run Locust's master and workers as Jobs in the cluster "
                           "(manifests/loadgen/), then fetch the run directory (default: run here)")
    load.add_argument("--workers", type=int, help="with --in-cluster: worker pods (default 1)")
    load.add_argument("--image", help="with --in-cluster: the load generator's image, pushed where the cluster "
                                      "pulls from (default canary-loadgen:latest; docker/loadgen.Dockerfile)")
    load.add_argument("--keep", action="store_true",
                      help="with --in-cluster: leave the Jobs in the cluster afterwards (default: delete them)")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="canary", description=_DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Handler, help: str,
            parent: argparse._SubParsersAction[ArgumentParser] = sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    add_commands(add, _add_tiny, _add_port, _add_weights_dir)

    mesh = sub.add_parser("mesh", help="the mesh: up, apply, status, down", description="the mesh: up, apply, status, down")
    msub = mesh.add_subparsers(dest="mesh_command", required=True, metavar="MESH_COMMAND")
    up = add("up", _mesh_up, "start the local mesh and apply the base manifests", msub)
    up.add_argument("-f", "--filename", type=Path, action="append", default=[],
                    help="manifest file or directory, repeatable (default manifests/base)")
    _add_tiny(up)
    _add_port(up)
    _add_weights_dir(up)
    apply = add("apply", _mesh_apply, "apply manifests like kubectl apply", msub)
    apply.add_argument("-f", "--filename", type=Path, action="append", required=True,
                       help="manifest file or directory (repeatable; required)")
    apply.add_argument("--backend", choices=["local", "kube"], default="local",
                       help="the older spelling: --backend kube is --kube (default local)")
    add_kube(apply, prometheus=False, namespace=False)  # each object goes to its manifest's namespace
    status = add("status", _mesh_status, "objects, pods and per-subset counters (of the local mesh, or with "
                                         "--kube of the cluster)", msub)
    status.add_argument("--json", action="store_true", help="machine-readable output (default: tables)")
    add_kube(status)
    add("down", _mesh_down, "stop everything the local mesh started", msub)

    calibrate = add("calibrate", _calibrate,
                    "record each subset's answers to the payloads, to tell later which subset answered")
    calibrate.add_argument("--source", choices=("mesh", "endpoints", "savedmodel"), default="mesh",
                           help="ask the mesh's pods directly (default mesh: the local mesh's, or with --kube one "
                                "pod of each subset through a port-forward), given --endpoint servers, "
                                "or run the SavedModels in-process")
    calibrate.add_argument("--protocol", choices=("rest", "grpc", "both"), default="both",
                           help="how to ask the servers (default both, checking that they agree)")
    calibrate.add_argument("--endpoint", action="append", default=[], metavar="SUBSET=REST_URL,GRPC_TARGET",
                           help="a subset's own server, for --source endpoints (repeatable; default none)")
    calibrate.add_argument("-o", "--out", type=Path, help="where to write it (default .canary/calibration.json)")
    calibrate.add_argument("--images", type=Path, help="payload images folder (default: the bundled payloads/images)")
    calibrate.add_argument("--size", type=lambda text: parse_payload_size(text, option="--size"),
                           default=DEFAULT_PAYLOAD_SIZE,
                           help=f"pixels of the instances payloads, or 'original' (default {DEFAULT_PAYLOAD_SIZE})")
    calibrate.add_argument("--tolerance", type=float, default=1e-5,
                           help="largest distance (max abs probability difference) still attributed (default 1e-5)")
    _add_tiny(calibrate)
    calibrate.add_argument("--store", type=Path,
                           help="with --source savedmodel: the model store (default: the local mesh's)")
    calibrate.add_argument("--host", help="the DestinationRule host, when the mesh has several (default: the only one)")
    add_kube(calibrate, prometheus=False)

    _add_load(add)

    predict = add("predict", _predict, "send one predict request through the ingress, as the walkthroughs' "
                                       "curl step does; print the top classes and which subset answered")
    predict.add_argument("file", nargs="?", type=Path, metavar="FILE",
                         help="a JSON request body, or a JPEG sent as its b64 body (default payloads/request-body.json)")
    predict.add_argument("--host", "--ingress", help="the ingress URL (default: the running local mesh's, or "
                                                     "with --kube the cluster's istio-ingressgateway)")
    predict.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                         type=lambda text: parse_header(text, option="--header"),
                         help="a request header, or gRPC metadata, e.g. 'user-group: canary' (repeatable; default none)")
    predict.add_argument("--grpc", action="store_true", help="send a gRPC Predict instead of REST (default REST)")
    predict.add_argument("--top", type=int, default=5, help="how many classes to print (default 5)")
    add_kube(predict, prometheus=False)

    report = add("report", _report, "write summary.json, report.html (the run, over time, split, latency, accuracy, "
                                     "every check) and CSVs into a run "
                                     "directory; exits 0 once written, whatever the verdict (verify-split gates)")
    report.add_argument("run_dir", nargs="?", type=Path, help="the run directory (default: the newest under reports/)")
    report.add_argument("--expected", help="expected split (default: the one the load test was given, if any)")
    report.add_argument("--from-manifest", type=Path, action="append", default=[], metavar="FILE",
                        help="derive each group's expected split from this VirtualService (default: none)")
    report.add_argument("--stable", help="the stable subset (default: the VirtualService's default route, else resnet50)")
    report.add_argument("--json", type=Path, metavar="FILE", help="also write the summary JSON here (default: none)")
    report.add_argument("--reports", type=Path, default=REPORTS_DIR,
                        help=f"where runs are found (default {REPORTS_DIR})")

    export = add("export", _export, "export the SavedModels into the model store (cached)")
    _add_tiny(export)
    export.add_argument("--store", type=Path, help="the model store (default .canary/models/full, or /tiny)")
    _add_weights_dir(export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``canary`` with ``argv``; returns the exit code."""
    return run_command("canary", build_parser(), argv, lambda args, io: int(args.func(args, io)))


if __name__ == "__main__":
    sys.exit(main())
