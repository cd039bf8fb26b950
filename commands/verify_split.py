"""``verify-split``: does the mesh split traffic as expected? Parses arguments, calls one function, prints.

Examples::

    verify-split --expected 70/30                      # the newest run under reports/
    verify-split reports/<run> --expected resnet50=70,resnet101=30
    verify-split --expected 'default: 100/0; canary: 0/100'
    verify-split --from-manifest manifests/routing/virtualservice-focused-routing.yaml
    verify-split --plan --expected 70/30 --tolerance 0.03
    verify-split --expected 70/30 --prometheus http://127.0.0.1:9090 --junit junit.xml

Exit codes: 0 verified, 1 refuted, 2 inconclusive, 3 bad usage or unreadable
input (argparse's own errors included: they are usage errors too).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.markup import escape

from canary.commandline import ArgumentParser
from canary.conventions import DEFAULT_HEADER_TEXT, EXIT_CODES_HELP, parse_header
from canary.rundir.document import DEFAULT_CANARY_SHARE, LOAD_PROTOCOLS, CanaryOptions
from canary.rundir.layout import REPORTS_DIR
from canary.stats import SplitPolicy
from commands.console import Consoles, run_command
from verifier.crosscheck import DEFAULT_SERVICE
from verifier.latency import DEFAULT_CONFIDENCE, DEFAULT_MARGIN
from verifier.planning import plan_checks
from verifier.report_console import print_plan, print_verification
from verifier.report_files import verify_and_report
from verifier.report_json import write_summary
from verifier.verify import VerifyRequest

__all__ = ["build_parser", "main"]

_EPILOG = f"{EXIT_CODES_HELP}. Writes summary.json and report.html into the run directory."


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="verify-split",
        description="Verify that the mesh splits traffic between the model subsets as expected, "
        "from a run directory written by `canary load` (or `locust -f loadtest/locustfile.py`).",
        epilog=_EPILOG,
    )
    parser.add_argument("run_dir", nargs="?", type=Path,
                        help="the run directory (default: the newest run under reports/)")
    what = parser.add_argument_group("what to expect")
    what.add_argument("--expected", metavar="SPLIT",
                      help="expected split in percent, stable subset first: 70/30, resnet50=70,resnet101=30, "
                           "or per group 'default: 100/0; canary: 0/100' (default: the load test's own --expected)")
    what.add_argument("--from-manifest", dest="manifests", type=Path, action="append", default=[],
                      metavar="FILE", help="derive each group's expected split from this VirtualService (default: none)")
    what.add_argument("--stable", metavar="NAME",
                      help="the stable subset (default: the VirtualService's default route, else resnet50)")
    stats = parser.add_argument_group("statistics")
    stats.add_argument("--alpha", type=float, default=0.01,
                       help="false-refutation rate of the whole run, divided over its pools and cells (default 0.01)")
    stats.add_argument("--tolerance", type=float, default=0.03,
                       help="allowed deviation of each share, as a fraction (default 0.03: ±3 points)")
    stats.add_argument("--confidence", type=float, default=0.95, help="interval coverage (default 0.95)")
    stats.add_argument("--power", type=float, default=0.95, help="target power for --plan (default 0.95)")
    stats.add_argument("--max-unknown-rate", type=float, default=0.005,
                       help="largest share of unattributable responses (default 0.005)")
    stats.add_argument("--max-error-rate", type=float, default=0.001,
                       help="largest share of failed requests (default 0.001)")
    plan = parser.add_argument_group("planning")
    plan.add_argument("--plan", action="store_true",
                      help="print the requests needed for alpha and power, then exit; reads no run (default off)")
    plan.add_argument("--detect", type=float,
                      help="with --plan: the deviation to refute with --power, a fraction above the tolerance "
                           "(default: the tolerance + 0.02)")
    plan.add_argument("--protocol", choices=LOAD_PROTOCOLS, default=CanaryOptions().protocol,
                      help=f"with --plan: the load test's protocols (default {CanaryOptions().protocol})")
    plan.add_argument("--canary-share", type=float, default=DEFAULT_CANARY_SHARE,
                      help=f"with --plan: the load test's share of canary-header users (default {DEFAULT_CANARY_SHARE:g})")
    plan.add_argument("--canary-header", default=DEFAULT_HEADER_TEXT,
                      help=f"with --plan --from-manifest: the canary group's header (default '{DEFAULT_HEADER_TEXT}')")
    cross = parser.add_argument_group("cross-check")
    cross.add_argument("--prometheus", metavar="URL",
                       help="cross-check against istio_requests_total in this Prometheus, on a cluster (default: the local mesh's counters in run.json)")
    cross.add_argument("--prometheus-service", default=DEFAULT_SERVICE,
                       help=f"destination_service_name to count (default {DEFAULT_SERVICE})")
    cross.add_argument("--prometheus-timeout", type=float, default=10.0, help="seconds (default 10)")
    cross.add_argument("--crosscheck-slack", type=float,
                       help="relative slack of the cross-check (default 0 for Envoy, 0.05 for Prometheus)")
    lat = parser.add_argument_group("latency")
    lat.add_argument("--latency-confidence", type=float, default=DEFAULT_CONFIDENCE,
                     help="confidence of the Hodges-Lehmann interval (default 0.98, as Kayenta)")
    lat.add_argument("--latency-margin", default=DEFAULT_MARGIN,
                     help="smallest shift that matters: '5ms' or a share of the stable median (default 10%%)")
    out = parser.add_argument_group("output")
    out.add_argument("--json", type=Path, metavar="FILE", help="also write the summary JSON here (default: only summary.json in the run directory)")
    out.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML here, one testcase per group (default: none)")
    out.add_argument("--no-write", action="store_true",
                     help="do not write summary.json and report.html into the run directory (default: write them)")
    out.add_argument("--reports", type=Path, default=REPORTS_DIR, help="where runs are found (default reports)")
    return parser


def _policy(args: argparse.Namespace) -> SplitPolicy:
    return SplitPolicy(
        alpha=args.alpha, tolerance=args.tolerance, confidence=args.confidence,
        max_unknown_rate=args.max_unknown_rate, max_error_rate=args.max_error_rate,
        power=args.power,
    )


def _run(args: argparse.Namespace, io: Consoles) -> int:
    policy = _policy(args)
    if args.plan:
        plan = plan_checks(
            expected=args.expected, manifests=args.manifests, policy=policy, stable=args.stable,
            protocols=CanaryOptions(protocol=args.protocol).protocols, canary_share=args.canary_share,
            header=parse_header(args.canary_header), detect=args.detect,
        )
        print_plan(plan, io.out)
        if args.json:
            write_summary(args.json, {"format": "canary.verify-split.plan/2", **plan.to_dict()})
        return 0
    request = VerifyRequest(
        run_dir=args.run_dir, reports=args.reports, expected=args.expected,
        manifests=tuple(args.manifests), stable=args.stable, policy=policy,
        prometheus=args.prometheus, prometheus_service=args.prometheus_service,
        prometheus_timeout=args.prometheus_timeout, crosscheck_slack=args.crosscheck_slack,
        latency_confidence=args.latency_confidence, latency_margin=args.latency_margin,
    )
    result, written = verify_and_report(
        request, into_run_dir=not args.no_write, json_path=args.json, junit_path=args.junit
    )
    print_verification(result, io.out)
    for warning in written.warnings:
        io.warn(warning)
    for path in written.paths:
        io.out.print(f"wrote {escape(str(path))}")
    if len(written.checks) > 1:
        io.out.print(f"this run has been checked {len(written.checks)} times; report.html lists every check, newest first")
    return result.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``verify-split`` with ``argv``; returns the exit code."""
    return run_command("verify-split", build_parser(), argv, _run)


if __name__ == "__main__":
    sys.exit(main())
