"""The load test's own command-line options, added to Locust's, and their validation.

``locust -f loadtest/locustfile.py --help`` lists them with Locust's custom options. The
values the web UI may change (protocol, canary share and header, request
budget) are re-read at each test start; the rest are fixed at start-up.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from canary.conventions import (
    DEFAULT_HEADER_TEXT,
    KUBE_CONTEXT_ENV,
    KUBE_NAMESPACE,
    KUBE_NAMESPACE_ENV,
    MODEL_NAME,
    parse_payload_size,
)
from canary.errors import UsageError
from canary.rundir.document import LOAD_PROTOCOLS, CanaryOptions, validated
from mesh.target import KubeTarget

__all__ = [
    "KUBE_FLAGS",
    "OPTIONS",
    "CanaryOptions",
    "OptionSpec",
    "add_arguments",
    "kube_target",
    "option_argv",
    "options_from_parsed",
]

_DEFAULTS = CanaryOptions()


@dataclass(frozen=True)
class OptionSpec:
    """One canary option, as both Locust's parser and ``canary load`` take it."""

    flag: str
    help: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    web_ui: bool = True  # shown (and editable) in Locust's start form

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


def _default(name: str) -> str:
    value = getattr(_DEFAULTS, name)
    return "none" if value is None else str(value)


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("--protocol", "REST users, gRPC users, or both (half each; default both)",
               {"choices": LOAD_PROTOCOLS, "default": _DEFAULTS.protocol}),
    OptionSpec("--canary-share", f"share of users that send the canary header (default {_default('canary_share')})",
               {"type": float, "default": _DEFAULTS.canary_share}),
    OptionSpec("--canary-header", f"the canary header as 'name: value' (default '{DEFAULT_HEADER_TEXT}'); "
               "gRPC users send it as metadata", {"default": DEFAULT_HEADER_TEXT}),
    OptionSpec("--requests", "stop after exactly this many requests over every worker "
               "(default 0: no limit; --run-time still applies)", {"type": int, "default": 0}),
    OptionSpec("--payloads", "folder of payload JPEGs (default: the bundled payloads/images)",
               {"default": ""}, web_ui=False),
    OptionSpec("--payload-size", "pixels of the instances payloads, or 'original' (default 224; as "
               "`canary calibrate --size`)", {"default": str(_DEFAULTS.payload_size)}, web_ui=False),
    OptionSpec("--calibration", "calibration file from `canary calibrate` (default: calibrate against the "
               "local mesh's pods at start)", {"default": ""}, web_ui=False),
    OptionSpec("--run-dir", "where to write the run directory (default reports/<UTC timestamp>-<id>)",
               {"default": ""}, web_ui=False),
    OptionSpec("--expected", "expected split, e.g. '70/30' (stable subset first), 'resnet50=70,resnet101=30', "
               "or per group 'default: 100/0; canary: 0/100' (default: none)", {"default": ""}),
    OptionSpec("--until-verified", "stop as soon as the anytime-valid sequential test decides the split of every "
               "protocol and group (needs --expected or --from-manifest; default off); exit 0 verified, "
               "1 refuted, 2 undecided when --requests or --run-time ran out",
               {"action": "store_true", "default": False}, web_ui=False),
    OptionSpec("--from-manifest", "with --until-verified: derive each group's expected split from this "
               "VirtualService (default: none)", {"default": ""}, web_ui=False),
    OptionSpec("--tolerance", "with --until-verified: allowed deviation of each share "
               f"(default {_default('tolerance')}: ±3 points)", {"type": float, "default": _DEFAULTS.tolerance},
               web_ui=False),
    OptionSpec("--model-name", f"the served model's name (default {MODEL_NAME})", {"default": MODEL_NAME},
               web_ui=False),
    OptionSpec("--model-version", f"the version the versioned paths ask for (default {_default('model_version')})",
               {"type": int, "default": _DEFAULTS.model_version}, web_ui=False),
    OptionSpec("--kube", "work on the cluster of your kubeconfig (Kubernetes with Istio) instead of the local "
               "mesh (default off)", {"action": "store_true", "default": False}, web_ui=False),
    OptionSpec("--context", "with --kube: the kubeconfig context (default: $CANARY_KUBE_CONTEXT, else the "
               "kubeconfig's current context)",
               {"default": ""}, web_ui=False),
    OptionSpec("--namespace", f"with --kube: the namespace of the model Services (default $CANARY_KUBE_NAMESPACE, "
               f"else {KUBE_NAMESPACE})",
               {"default": KUBE_NAMESPACE}, web_ui=False),
    OptionSpec("--prometheus", "with --kube: Prometheus' base URL, for the mesh's own counts per subset "
               "(default: Istio's Prometheus Service in istio-system, through the API server, if there is one)",
               {"default": ""}, web_ui=False),
)
"""Every canary option of the load test, defined once."""


KUBE_FLAGS = ("--kube", "--context", "--namespace", "--prometheus")
"""The options that name a cluster; every command that touches a mesh takes them."""


def add_arguments(parser: Any, *, locust: bool = True, skip: Collection[str] = (),
                  only: Collection[str] | None = None) -> None:
    """Add the canary options to a parser: Locust's (``init_command_line_parser``), or
    ``canary load``'s (``locust=False``: plain argparse, no web-UI flag, and an option left
    out is absent from the namespace, so :func:`options_from_parsed` can tell given from
    default). ``skip`` names flags the caller defines itself."""
    for spec in OPTIONS:
        if spec.flag in skip or (only is not None and spec.flag not in only):
            continue
        kwargs = dict(spec.kwargs)
        if locust:
            if not spec.web_ui:
                kwargs["include_in_web_ui"] = False
        else:
            kwargs["default"] = argparse.SUPPRESS
        parser.add_argument(spec.flag, help=spec.help, **kwargs)


def options_from_parsed(parsed: Any) -> CanaryOptions:
    """The validated options from a parsed namespace (missing attributes take their defaults).

    Bad values are a :class:`~canary.errors.UsageError` (exit code 3) saying which option.
    """
    values: dict[str, Any] = {}
    for spec in OPTIONS:
        value = getattr(parsed, spec.dest, None) if parsed is not None else None
        if value is not None:
            values[spec.dest] = value
    values["payload_size"] = parse_payload_size(values.get("payload_size", _DEFAULTS.payload_size))
    options: CanaryOptions = validated(CanaryOptions, values, "the canary options")
    return options


def option_argv(options: CanaryOptions) -> list[str]:
    """The command-line flags that give ``options`` (those that differ from the defaults)."""
    argv: list[str] = []
    for spec in OPTIONS:
        value = getattr(options, spec.dest)
        if value == getattr(_DEFAULTS, spec.dest):
            continue
        if spec.kwargs.get("action") == "store_true":
            argv += [spec.flag] if value else []
        elif value is None:  # only the payload size has a meaningful None: the images as they are
            argv += [spec.flag, "original"]
        else:
            argv += [spec.flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return argv


def kube_target(options: CanaryOptions, ingress: str | None = None) -> KubeTarget | None:
    """The cluster ``--kube`` names (None without it); ``--context`` and the others without
    ``--kube`` are a usage error. ``$CANARY_KUBE_CONTEXT`` and ``$CANARY_KUBE_NAMESPACE`` are
    the configured defaults of ``--context`` and ``--namespace``."""
    if not options.kube:
        given = [f for f, v in (("--context", options.context), ("--prometheus", options.prometheus),
                                ("--namespace", options.namespace != KUBE_NAMESPACE)) if v]
        if given:
            raise UsageError(f"{' and '.join(given)} {'goes' if len(given) == 1 else 'go'} with --kube (a cluster); "
                             "add --kube, or leave it out for the local mesh")
        return None
    namespace = options.namespace
    if namespace == KUBE_NAMESPACE and os.environ.get(KUBE_NAMESPACE_ENV):
        try:
            namespace = CanaryOptions(namespace=os.environ[KUBE_NAMESPACE_ENV]).namespace
        except (UsageError, ValueError) as error:
            raise UsageError(f"${KUBE_NAMESPACE_ENV} ({os.environ[KUBE_NAMESPACE_ENV]!r}) must be a Kubernetes namespace "
                             "name (lower-case letters, digits, '-')") from error
    return KubeTarget(context=options.context or os.environ.get(KUBE_CONTEXT_ENV) or None, namespace=namespace,
                      prometheus=options.prometheus, ingress=ingress)
