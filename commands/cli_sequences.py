"""The ``canary`` subcommands that string the layers together: ``demo``, ``rollout``, ``compare``.

Each handler calls one library function and prints what it returns; :func:`add_commands`
adds their parsers to ``canary``'s (commands.cli).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from commands.console import Consoles
from commands.kube_args import add_kube, kube_of

__all__ = ["add_commands"]


# --- demo ------------------------------------------------------------------------


def _demo(args: argparse.Namespace, io: Consoles) -> int:
    from commands.demo import demo_plan, run_demo
    from commands.sequence_output import load_bar, print_sequence_end, step_line

    plan = demo_plan(args.tiny)
    plan = replace(plan, **{k: v for k, v in (("tolerance", args.tolerance), ("users", args.users),
                                               ("max_requests", args.max_requests)) if v is not None})
    io.out.print(f"canary demo: {'tiny test models' if args.tiny else 'ResNet50 + ResNet101'}; each step "
                 f"verified at {plan.describe()}")
    kube = kube_of(args, ingress=args.ingress)
    result = run_demo(tiny=args.tiny, port=args.port, keep=args.keep, plan=plan, weights_dir=args.weights_dir,
                      progress=io.progress, load_progress=load_bar(io), kube=kube,
                      step_done=lambda step, total: io.out.print(step_line(step.record, total)))
    print_sequence_end(io, result, result.plan)
    if kube is not None:
        io.out.print(f"the cluster keeps what the demo applied ({kube.describe()}): the focused routing and "
                     "both Deployments; `canary mesh status --kube` shows them")
    elif result.kept_running:
        io.out.print(f"the mesh is still running at {result.ingress_url}: "
                     f"locust -f loadtest/locustfile.py --host {result.ingress_url}   (web UI on :8089); "
                     "stop it with `canary mesh down`")
    else:
        io.out.print("the mesh was taken down; `canary demo --keep` leaves it running for "
                     "`locust -f loadtest/locustfile.py --host http://127.0.0.1:8080` (web UI on :8089)")
    return result.exit_code


# --- rollout ---------------------------------------------------------------------


def _rollout(args: argparse.Namespace, io: Consoles) -> int:
    from commands.rollout import RolloutRequest, parse_steps, run_rollout
    from commands.sequence_output import load_bar, print_sequence_end, step_line
    from commands.steps import LoadPlan
    from verifier.gates import GateLimits, parse_duration_ms

    plan = LoadPlan(users=args.users, tolerance=args.tolerance, max_requests=args.max_requests,
                    max_seconds=args.max_seconds, canary_share=args.canary_share)
    limits = GateLimits(max_error_rate=args.max_error_rate, max_latency_shift_ms=parse_duration_ms(args.max_latency_shift),
                        max_p99_ratio=args.max_p99_ratio)
    request = RolloutRequest(steps=parse_steps(args.steps), limits=limits, plan=plan,
                             from_manifest=args.from_manifest, stable=args.stable, canary=args.canary,
                             kube=kube_of(args, ingress=args.ingress))
    io.out.print(f"canary rollout: steps {args.steps} (% to the canary); each step verified at {plan.describe()}; "
                 f"gates: error rate ≤ {100 * limits.max_error_rate:g}%, latency shift ≤ "
                 f"{limits.max_latency_shift_ms:g} ms, p99 ratio ≤ ×{limits.max_p99_ratio:g}")
    result = run_rollout(request, progress=io.progress, load_progress=load_bar(io),
                         step_done=lambda step, total: io.out.print(step_line(step.record, total)))
    print_sequence_end(io, result, plan)
    return result.exit_code


# --- compare ---------------------------------------------------------------------


def _compare(args: argparse.Namespace, io: Consoles) -> int:
    from verifier.gates import GateLimits, parse_duration_ms
    from verifier.latency import stratum_key
    from verifier.report_compare import compare_and_write

    limits = GateLimits(max_latency_shift_ms=parse_duration_ms(args.max_latency_shift),
                        max_p99_ratio=args.max_p99_ratio)
    result, paths = compare_and_write(args.run_a, args.run_b, limits, out=args.out)
    table = Table("subset", "protocol / format", "B against A", "regression",
                  title=f"run B {result.b} against run A {result.a}: {result.status}")
    for s in result.strata:
        table.add_row(escape(s.subset), escape(stratum_key(s.protocol, s.format)), escape(s.comparison.line),
                      "[red]yes[/]" if s.regression else "no")
    io.out.print(table)
    for missing in result.not_compared:
        io.warn(f"not compared: {missing}")
    for path in paths:
        io.out.print(f"wrote {path}")
    return result.exit_code


def _add_cluster(parser: argparse.ArgumentParser, *, namespace: bool = True) -> None:
    add_kube(parser, namespace=namespace)
    parser.add_argument("--ingress", metavar="URL", help="with --kube: the ingress URL (default: found from "
                                                          "istio-system/istio-ingressgateway)")


def add_commands(add: Callable[..., argparse.ArgumentParser],
                 add_tiny: Callable[[argparse.ArgumentParser], None],
                 add_port: Callable[[argparse.ArgumentParser], None],
                 add_weights_dir: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``demo``, ``rollout`` and ``compare`` to ``canary``'s subcommands."""
    demo = add("demo", _demo, "both walkthroughs on the local mesh, each step verified by the load test and "
                              "verify-split: stable only, weight-100 with the canary deployed, weight-70, "
                              "focused routing; writes reports/<time>-demo-<id>/")
    add_tiny(demo)
    add_port(demo)
    add_weights_dir(demo)
    demo.add_argument("--keep", action="store_true", help="leave the mesh running afterwards (default: take it down)")
    demo.add_argument("--tolerance", type=float,
                      help="each verdict's tolerance (default 0.05 with --tiny, 0.10 with the ResNets)")
    demo.add_argument("-u", "--users", type=int, help="Locust users per step (default 8 with --tiny, 6 otherwise)")
    demo.add_argument("--max-requests", type=int,
                      help="the most requests a step may take (default 5000 with --tiny, 1500 otherwise)")
    _add_cluster(demo, namespace=False)  # the demo's manifests name their namespace (tf-serving)

    rollout = add("rollout", _rollout, "progressive delivery on the running local mesh: at each step set the "
                                       "canary's weight, verify the split, gate the canary against the stable "
                                       "model; roll back to 100/0 on a failed gate (exit 1)")
    rollout.add_argument("--steps", default="10,30,50,100",
                         help="the canary's percentage at each step (default 10,30,50,100)")
    rollout.add_argument("--from-manifest", type=Path, metavar="FILE",
                         help="the VirtualService under test (default: the one live on the mesh)")
    rollout.add_argument("--stable", help="the stable subset (default: the first subset of the route the default "
                                          "group's REST requests take in the VirtualService under test)")
    rollout.add_argument("--canary", help="the canary subset (default: the DestinationRule's other subset)")
    rollout.add_argument("--max-error-rate", type=float, default=0.01,
                         help="fail a step whose failed requests are shown above this fraction (default 0.01)")
    rollout.add_argument("--max-latency-shift", default="20ms",
                         help="fail a step where the canary is shown slower than the stable model by more "
                              "(Hodges-Lehmann shift; default 20ms)")
    rollout.add_argument("--max-p99-ratio", type=float, default=1.5,
                         help="fail a step whose canary p99 / stable p99 is shown above this (default 1.5)")
    rollout.add_argument("--tolerance", type=float, default=0.05,
                         help="each step's split verified within ± this (default 0.05)")
    rollout.add_argument("-u", "--users", type=int, default=8, help="Locust users per step (default 8)")
    rollout.add_argument("--canary-share", type=float, default=0.2,
                         help="share of users that send the canary header (default 0.2)")
    rollout.add_argument("--max-requests", type=int, default=6000,
                         help="the most requests a step may take (default 6000)")
    rollout.add_argument("--max-seconds", type=int, default=180,
                         help="the most seconds a step's load may take (default 180)")
    _add_cluster(rollout)

    compare = add("compare", _compare, "compare two runs (before and after a change): latency per subset x "
                                       "protocol x format, the splits, accuracy; exit 1 when a regression "
                                       "beyond the limits is shown with confidence")
    compare.add_argument("run_a", type=Path, metavar="RUN_A", help="the run before the change")
    compare.add_argument("run_b", type=Path, metavar="RUN_B", help="the run after the change")
    compare.add_argument("--max-latency-shift", default="20ms",
                         help="a regression: B slower than A by more (Hodges-Lehmann shift; default 20ms)")
    compare.add_argument("--max-p99-ratio", type=float, default=1.5,
                         help="a regression: B's p99 / A's p99 above this (default 1.5)")
    compare.add_argument("-o", "--out", type=Path,
                         help="where to write compare.html and compare.json (default reports/<time>-compare-<id>/)")

