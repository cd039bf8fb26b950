"""The load test's own command-line options, added to Locust's, and their validation.

``locust -f loadtest/locustfile.py --help`` lists them with Locust's custom options. The
values the web UI may change (protocol, canary share and header, request
budget) are re-read at each test start; the rest are fixed at start-up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canary.errors import UsageError

__all__ = [
    "DEFAULT_HEADER",
    "DEFAULT_SHARE",
    "GROUPS",
    "PROTOCOLS",
    "CanaryOptions",
    "add_arguments",
    "parse_expected_groups",
    "parse_header",
    "parse_size",
]

PROTOCOLS = ("rest", "grpc", "both")
GROUPS = ("default", "canary")
DEFAULT_SHARE = 0.2
DEFAULT_HEADER = "user-group: canary"
MODEL_NAME = "image_classifier"


def add_arguments(parser: Any) -> None:
    """Add the canary options to Locust's parser (``init_command_line_parser``)."""
    group = parser  # Locust's own parser: its argument groups do not take include_in_web_ui
    group.add_argument("--protocol", choices=PROTOCOLS, default="both",
                       help="REST users, gRPC users, or both (half each; default both)")
    group.add_argument("--canary-share", type=float, default=DEFAULT_SHARE,
                       help="share of users that send the canary header (default 0.2)")
    group.add_argument("--canary-header", default=DEFAULT_HEADER,
                       help="the canary header as 'name: value' (default 'user-group: canary'); "
                            "gRPC users send it as metadata")
    group.add_argument("--requests", type=int, default=0,
                       help="stop after exactly this many requests (0: no limit; --run-time still applies)")
    group.add_argument("--payloads", default="", include_in_web_ui=False,
                       help="folder of payload JPEGs (default payloads/images)")
    group.add_argument("--payload-size", default="224", include_in_web_ui=False,
                       help="pixels of the instances payloads, or 'original' (default 224; as `canary calibrate --size`)")
    group.add_argument("--calibration", default="", include_in_web_ui=False,
                       help="calibration file from `canary calibrate` (default: calibrate against the local mesh's pods)")
    group.add_argument("--run-dir", default="", include_in_web_ui=False,
                       help="where to write the run directory (default reports/<UTC timestamp>-<id>)")
    group.add_argument("--expected", default="",
                       help="expected split, e.g. '70/30', or per group 'default: 100/0; canary: 0/100'")
    group.add_argument("--until-verified", action="store_true", default=False, include_in_web_ui=False,
                       help="stop as soon as the anytime-valid sequential test decides the split of every "
                            "protocol and group (needs --expected or --from-manifest); exit 0 verified, "
                            "1 refuted, 2 undecided when --requests or --run-time ran out")
    group.add_argument("--from-manifest", default="", include_in_web_ui=False,
                       help="with --until-verified: derive each group's expected split from this VirtualService")
    group.add_argument("--tolerance", type=float, default=0.03, include_in_web_ui=False,
                       help="with --until-verified: allowed deviation of each share (default 0.03: ±3 points)")
    group.add_argument("--model-name", default=MODEL_NAME, include_in_web_ui=False,
                       help="the served model's name (default image_classifier)")
    group.add_argument("--model-version", type=int, default=1, include_in_web_ui=False,
                       help="the version the versioned paths ask for (default 1)")


def parse_header(text: str) -> tuple[str, str]:
    """``'user-group: canary'`` -> ``("user-group", "canary")``."""
    name, sep, value = str(text).partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value or any(c.isspace() for c in name):
        raise UsageError(f"--canary-header {text!r} must be 'name: value', e.g. 'user-group: canary'")
    return name, value


def parse_size(text: str | int | None) -> int | None:
    """``"224"`` -> 224; ``"original"`` -> None (the images as they are)."""
    if text is None or str(text).strip().lower() == "original":
        return None
    try:
        size = int(str(text).strip())
    except ValueError:
        raise UsageError(f"--payload-size takes a number of pixels or 'original', not {text!r}") from None
    if not 1 <= size <= 4096:
        raise UsageError(f"--payload-size must be between 1 and 4096 pixels, got {size}")
    return size


def parse_expected_groups(text: str, subsets_in_order: Sequence[str] | None) -> dict[str, Any]:
    """``--expected`` as ``{group: verifier.Expectation}``.

    ``'70/30'`` or ``'resnet50=70,resnet101=30'`` applies to both groups;
    ``'default: 100/0; canary: 0/100'`` sets each group (a group left out has
    no expectation). Positional shares follow ``subsets_in_order`` (the
    DestinationRule's subsets, stable first).
    """
    from verifier import parse_expected

    if not text.strip():
        return {}
    result: dict[str, Any] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        group, sep, spec = part.partition(":")
        if sep and group.strip() in GROUPS:
            result[group.strip()] = parse_expected(spec.strip(), subsets_in_order)
        elif sep:
            raise UsageError(f"--expected: unknown group {group.strip()!r}; the groups are {', '.join(GROUPS)}")
        else:
            expectation = parse_expected(part, subsets_in_order)
            result.update({g: expectation for g in GROUPS})
    return result


@dataclass(frozen=True)
class CanaryOptions:
    """The validated canary options of one test."""

    protocol: str = "both"
    canary_share: float = DEFAULT_SHARE
    header: tuple[str, str] = ("user-group", "canary")
    requests: int = 0
    payloads: Path | None = None
    payload_size: int | None = 224
    calibration: Path | None = None
    run_dir: Path | None = None
    expected: str = ""
    model_name: str = MODEL_NAME
    model_version: int = 1
    until_verified: bool = False
    from_manifest: Path | None = None
    tolerance: float = 0.03

    @property
    def header_text(self) -> str:
        return f"{self.header[0]}: {self.header[1]}"

    @classmethod
    def from_parsed(cls, options: Any) -> CanaryOptions:
        """From Locust's parsed options (missing attributes take their defaults)."""

        def get(name: str, default: Any) -> Any:
            value = getattr(options, name, default) if options is not None else default
            return default if value is None else value

        protocol = str(get("protocol", "both")).lower()
        if protocol not in PROTOCOLS:
            raise UsageError(f"--protocol {protocol!r} must be one of {', '.join(PROTOCOLS)}")
        try:
            share = float(get("canary_share", DEFAULT_SHARE))
        except (TypeError, ValueError):
            raise UsageError(f"--canary-share must be a number between 0 and 1, got {get('canary_share', '')!r}") from None
        if not (math.isfinite(share) and 0.0 <= share <= 1.0):
            raise UsageError(f"--canary-share must be between 0 and 1 (0.2 is 20%), got {share}")
        try:
            requests = int(get("requests", 0))
        except (TypeError, ValueError):
            raise UsageError(f"--requests must be a whole number, got {get('requests', '')!r}") from None
        if requests < 0:
            raise UsageError(f"--requests must be 0 (no limit) or more, got {requests}")
        version = int(get("model_version", 1))
        if version < 1:
            raise UsageError(f"--model-version must be 1 or more, got {version}")

        try:
            tolerance = float(get("tolerance", 0.03))
        except (TypeError, ValueError):
            raise UsageError(f"--tolerance must be a fraction, got {get('tolerance', '')!r}") from None
        if not (math.isfinite(tolerance) and 0.0 < tolerance < 0.5):
            raise UsageError(f"--tolerance must be a fraction between 0 and 0.5 (0.03 is ±3 points), got {tolerance}")

        def path(name: str) -> Path | None:
            text = str(get(name, "")).strip()
            return Path(text) if text else None

        return cls(
            protocol=protocol,
            canary_share=share,
            header=parse_header(str(get("canary_header", DEFAULT_HEADER))),
            requests=requests,
            payloads=path("payloads"),
            payload_size=parse_size(get("payload_size", "224")),
            calibration=path("calibration"),
            run_dir=path("run_dir"),
            expected=str(get("expected", "")),
            model_name=str(get("model_name", MODEL_NAME)) or MODEL_NAME,
            model_version=version,
            until_verified=bool(get("until_verified", False)),
            from_manifest=path("from_manifest"),
            tolerance=tolerance,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "canary_share": self.canary_share,
            "canary_header": self.header_text,
            "requests": self.requests or None,
            "payloads": str(self.payloads) if self.payloads else None,
            "payload_size": self.payload_size,
            "calibration": str(self.calibration) if self.calibration else None,
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "expected": self.expected or None,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "until_verified": self.until_verified,
            "from_manifest": str(self.from_manifest) if self.from_manifest else None,
            "tolerance": self.tolerance,
        }
