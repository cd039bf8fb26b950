"""Reading one manifest field by field, with the field path at hand for every error.

A :class:`Node` wraps a value parsed from YAML together with where it sits
(``spec.http[0].route[1].weight``) and which object and file it belongs to, so
that every check can fail with a :class:`~canary.errors.ManifestError` naming
all three. The value checks Kubernetes and Istio apply (names, labels,
durations, percentages, RE2 regexes) live here too.

Every node also knows its :class:`Target`, the validation profile: the local
mesh refuses whatever it does not implement, a cluster accepts whatever
Kubernetes and Istio define. Each field list is written once, with the two
kinds of refusal apart (:meth:`Node.only`'s ``unsupported`` and ``refused``,
:meth:`Node.refuse_locally` for values); unknown fields are refused for both.
"""

from __future__ import annotations

import enum
import re
import warnings
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import NoReturn

from canary.errors import ManifestError

__all__ = [
    "CLUSTER",
    "LOCAL",
    "Node",
    "Target",
    "Where",
    "check_label_key",
    "check_label_value",
    "parse_duration_ms",
    "re2_problem",
]


class Target(enum.Enum):
    """Who runs the manifests, and so what the parser accepts.

    ``LOCAL``: the local mesh. Everything it does not implement faithfully is
    refused, naming the file, the object and the field.

    ``CLUSTER``: Kubernetes with Istio (``mesh apply --kube``).
    Everything Kubernetes or Istio define is accepted; what the local mesh does
    not implement stays in the object's raw document, which is what gets
    applied, and is not modelled. Kinds the local mesh does not know become
    :class:`~mesh.model.OtherObject`. The API server's dry run judges the rest.

    Both refuse unknown fields and values Kubernetes or Istio refuse too.
    """

    LOCAL = "local"
    CLUSTER = "cluster"


LOCAL = Target.LOCAL
CLUSTER = Target.CLUSTER


@dataclass(frozen=True)
class Where:
    """The file and the object (``Kind/namespace/name``) a node belongs to, and its target."""

    file: str
    obj: str
    target: Target = Target.LOCAL


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Node:
    """A value at a field path of a manifest."""

    __slots__ = ("path", "value", "where")

    def __init__(self, where: Where, path: str, value: object) -> None:
        self.where = where
        self.path = path
        self.value = value

    # --- navigation -----------------------------------------------------------------

    @property
    def local(self) -> bool:
        """Whether the manifest is read for the local mesh (the strict target)."""
        return self.where.target is Target.LOCAL

    def fail(self, message: str) -> NoReturn:
        raise ManifestError(self.where.file, self.where.obj, self.path, message)

    def refuse_locally(self, message: str) -> None:
        """Fail for the local target only: Kubernetes or Istio accept this value,
        the local mesh does not implement it. On a cluster it is left to the API
        server, and the caller goes on without modelling it."""
        if self.local:
            self.fail(message)

    def key_path(self, key: str) -> str:
        part = f".{key}" if _IDENTIFIER.match(key) else f"[{key!r}]"
        return f"{self.path}{part}" if self.path else part.lstrip(".")

    def as_map(self) -> dict[str, object]:
        if not isinstance(self.value, dict):
            self.fail(f"must be a mapping, not {_kind_of(self.value)}")
        for key in self.value:
            if not isinstance(key, str):
                self.fail(f"keys must be strings, not {_kind_of(key)} ({key!r})")
        return self.value

    def get(self, key: str) -> Node | None:
        """The child at ``key``; None when absent or null (as Kubernetes reads YAML)."""
        value = self.as_map().get(key)
        return None if value is None else Node(self.where, self.key_path(key), value)

    def req(self, key: str) -> Node:
        child = self.get(key)
        if child is None:
            Node(self.where, self.key_path(key), None).fail("is required")
        return child

    def items(self) -> Iterator[tuple[str, Node]]:
        for key, value in self.as_map().items():
            yield key, Node(self.where, self.key_path(key), value)

    def as_list(self) -> list[Node]:
        if not isinstance(self.value, list):
            self.fail(f"must be a list, not {_kind_of(self.value)}")
        return [Node(self.where, f"{self.path}[{i}]", v) for i, v in enumerate(self.value)]

    def only(
        self,
        supported: Collection[str],
        ignored: Collection[str] = (),
        unsupported: Mapping[str, str] | None = None,
        *,
        refused: Mapping[str, str] | None = None,
    ) -> None:
        """Reject every key that is neither supported nor known to be harmless.

        ``unsupported`` maps keys Kubernetes or Istio define but the local mesh
        does not implement to the reason: the local target refuses them with it,
        the cluster target accepts them (they stay in the raw document, not
        modelled). ``refused`` maps keys no target accepts (Kubernetes or Istio
        refuse them too) to the reason. Any other key is unknown, and refused
        for every target.
        """
        local_reasons = unsupported or {}
        reasons = refused or {}
        for key, value in self.as_map().items():
            if key in supported or key in ignored:
                continue
            if key in local_reasons and not self.local:
                continue
            child = Node(self.where, self.key_path(key), value)
            reason = reasons.get(key) or local_reasons.get(key)
            if reason:
                child.fail(f"is not supported: {reason}")
            listed = ", ".join(sorted(supported))
            child.fail(f"unknown or unsupported field (supported here: {listed})")

    # --- scalars --------------------------------------------------------------------

    def as_str(self, *, empty: bool = False) -> str:
        if not isinstance(self.value, str):
            hint = " (quote it in YAML)" if isinstance(self.value, int | float | bool) else ""
            self.fail(f"must be a string, not {_kind_of(self.value)}{hint}")
        if not empty and not self.value:
            self.fail("must not be empty")
        return self.value

    def as_int(self, low: int | None = None, high: int | None = None) -> int:
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            self.fail(f"must be an integer, not {_kind_of(self.value)}")
        self._check_range(self.value, low, high)
        return self.value

    def as_number(self, low: float, high: float) -> float:
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            self.fail(f"must be a number, not {_kind_of(self.value)}")
        self._check_range(self.value, low, high)
        return float(self.value)

    def as_bool(self) -> bool:
        if not isinstance(self.value, bool):
            self.fail(f"must be true or false, not {_kind_of(self.value)}")
        return self.value

    def str_list(self) -> tuple[str, ...]:
        return tuple(item.as_str(empty=True) for item in self.as_list())

    def str_map(self) -> dict[str, str]:
        return {key: child.as_str(empty=True) for key, child in self.items()}

    def labels(self) -> dict[str, str]:
        """A Kubernetes label map: valid keys, valid string values."""
        out: dict[str, str] = {}
        for key, child in self.items():
            problem = check_label_key(key)
            if problem:
                child.fail(f"invalid label key: {problem}")
            value = child.as_str(empty=True)
            problem = check_label_value(value)
            if problem:
                child.fail(f"invalid label value {value!r}: {problem}")
            out[key] = value
        return out

    def duration_ms(self, *, minimum_ms: int = 0) -> int:
        text = self.as_str()
        ms = parse_duration_ms(text)
        if ms is None:
            self.fail(
                f"{text!r} is not a duration: write a number and a unit, "
                "e.g. '1.5s', '100ms', '2m' (units h, m, s, ms, us, ns)"
            )
        if ms < 0:
            self.fail(f"{text!r} is not a whole number of milliseconds (Istio's precision)")
        if ms < minimum_ms:
            self.fail(f"{text!r} is too short: the minimum is {minimum_ms}ms")
        return ms

    def percentage(self) -> float:
        """Istio's ``Percent`` message: ``{value: 0..100}``."""
        self.only({"value"})
        value = self.get("value")
        return 0.0 if value is None else value.as_number(0.0, 100.0)

    def _check_range(self, value: float, low: float | None, high: float | None) -> None:
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"{low}..{high}" if high is not None else f">= {low}"
            self.fail(f"{value} is out of range ({bounds})")


def _kind_of(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


# --- Kubernetes labels -----------------------------------------------------------------

_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def check_label_value(value: str) -> str:
    """Why ``value`` is not a valid Kubernetes label value, or "" when it is."""
    if len(value) > 63:
        return "at most 63 characters"
    if not _LABEL_NAME.match(value):
        return "alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
    return ""


def check_label_key(key: str) -> str:
    """Why ``key`` is not a valid Kubernetes label key (``[prefix/]name``), or ""."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"prefix {prefix!r} must be a DNS subdomain"
    if not name:
        return "the name part must not be empty"
    return check_label_value(name)


# --- durations -------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
_NANOS = {"h": 3_600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3, "µs": 10**3}
_NANOS["ns"] = 1


def parse_duration_ms(text: str) -> int | None:
    """Milliseconds in a Go-style duration (``1.5s``, ``1m30s``, ``100ms``).

    Returns None when ``text`` is not a duration and -1 when it is not a whole
    number of milliseconds (Istio accepts only millisecond precision).
    """
    position, nanos = 0, 0
    if not text:
        return None
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if match is None:
            return None
        number, unit = match.groups()
        whole, _, fraction = number.partition(".")
        scale = _NANOS[unit]
        nanos += int(whole or "0") * scale
        if fraction:
            nanos += int(fraction) * scale // 10 ** len(fraction)
        position = match.end()
    if nanos % 10**6:
        return -1
    return nanos // 10**6


# --- RE2 -------------------------------------------------------------------------------

# Constructs Python accepts but RE2 (Envoy's regex engine) rejects, spotted
# outside character classes: "(?" followed by one of these.
_PYTHON_ONLY_GROUPS = {
    "=": "lookahead",
    "!": "negative lookahead",
    "<=": "lookbehind",
    "<!": "negative lookbehind",
    ">": "atomic group",
    "(": "conditional",
    "#": "comment group",
    "P=": "named backreference",
}


def re2_problem(pattern: str) -> str:
    """Why Envoy's RE2 would reject ``pattern``, or "" when it looks fine.

    Python's ``re`` checks the syntax; RE2-only escapes are rewritten first so
    they do not count against a valid pattern, and a scan catches what Python
    accepts but RE2 does not (lookaround, backreferences, possessive
    quantifiers, ...).
    """
    problem = _re2_only_syntax(pattern)
    if problem:
        return problem
    translated = re.sub(r"\\[pP](\{[^}]*\}|[A-Za-z])", ".", pattern)
    translated = re.sub(r"\[:\^?[a-z]+:\]", "a", translated.replace("\\z", "$"))
    translated = re.sub(r"\(\?<([A-Za-z_]\w*)>", r"(?P<\1>", translated)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            re.compile(translated)
    except re.error as error:
        return f"invalid regular expression: {error}"
    return ""


def _re2_only_syntax(pattern: str) -> str:
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            escaped = pattern[i + 1 : i + 2]
            if not in_class and escaped.isdigit() and escaped != "0":
                return f"backreference \\{escaped} is not supported by RE2"
            if escaped == "Z":
                return "\\Z is not supported by RE2 (use \\z or $)"
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            start = i + 2 if pattern[i + 1 : i + 2] == "^" else i + 1
            i = start + 1 if pattern[start : start + 1] == "]" else start  # "[]..]": literal ]
            continue
        elif char == "(" and pattern[i + 1 : i + 2] == "?":
            rest = pattern[i + 2 :]
            for prefix, name in _PYTHON_ONLY_GROUPS.items():
                if rest.startswith(prefix):
                    return f"{name} (?{prefix}...) is not supported by RE2"
        elif char in "*+?}" and pattern[i + 1 : i + 2] == "+":
            return "possessive quantifiers (*+, ++, ?+) are not supported by RE2"
        i += 1
    return ""
