"""What a group of requests should see: the expected share of each subset.

An :class:`Expectation` holds, for one header group, the share of attributed
responses each subset should answer (a ``dict`` subset → fraction summing to
1, in the order given, stable subset first). :func:`parse_expected` reads the
two command-line spellings::

    70/30                       shares in the order of ``subsets_in_order``
    resnet50=70,resnet101=30    shares named explicitly

Both are percentages summing to 100. A subset listed with share 0 (``100/0``)
is a subset that must receive nothing: any response from it is a wrong-subset
response. :func:`parse_group_spec` reads the per-group form every command
takes (``default: 100/0; canary: 0/100``), and :func:`expectations_by_group`
turns it into one :class:`Expectation` per group.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from canary.conventions import ERROR, GROUPS, RESERVED_SUBSETS, UNKNOWN
from canary.errors import UsageError
from canary.jsonable import jsonable

__all__ = [
    "ERROR",
    "RESERVED",
    "UNKNOWN",
    "Expectation",
    "expectations_by_group",
    "parse_expected",
    "parse_group_spec",
]

RESERVED = RESERVED_SUBSETS

_SUM_TOLERANCE = 1e-6  # on fractions; percentages are checked at 1e-4 points
_EXAMPLES = "e.g. '70/30' (stable subset first) or 'resnet50=70,resnet101=30'"
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Expectation:
    """Expected share (a fraction in [0, 1]) of each subset, summing to 1.

    ``shares`` keeps its order: the first subset is the stable one. Subsets with
    share 0 are allowed (they must receive nothing). The reserved keys
    ``"unknown"`` and ``"error"`` cannot be subsets.
    """

    shares: Mapping[str, float]

    def __post_init__(self) -> None:
        shares = dict(self.shares)
        if not shares:
            raise UsageError(f"an expected split needs at least one subset ({_EXAMPLES})")
        for name, share in shares.items():
            if not isinstance(name, str) or not _NAME.match(name):
                raise UsageError(
                    f"invalid subset name {name!r} in the expected split ({_EXAMPLES})"
                )
            if name in RESERVED:
                raise UsageError(f"{name!r} is reserved for unattributed responses, not a subset")
            if not math.isfinite(share) or share < 0 or share > 1:
                raise UsageError(
                    f"expected share of {name!r} must be a fraction in [0, 1], got {share!r}"
                )
        total = math.fsum(shares.values())
        if abs(total - 1.0) > _SUM_TOLERANCE:
            raise UsageError(f"expected shares must sum to 1 (100%), they sum to {total:.6g}")
        normalised = {name: share / total for name, share in shares.items()}
        object.__setattr__(self, "shares", normalised)

    def __hash__(self) -> int:
        return hash(tuple(self.shares.items()))

    def __iter__(self) -> Iterator[str]:
        return iter(self.shares)

    @property
    def subsets(self) -> tuple[str, ...]:
        """Every subset named, in order (stable first), including zero shares."""
        return tuple(self.shares)

    @property
    def positive(self) -> tuple[str, ...]:
        """Subsets with a non-zero expected share, in order."""
        return tuple(name for name, share in self.shares.items() if share > 0)

    @property
    def deterministic(self) -> bool:
        """One subset is expected to answer everything (``100/0``, a header match)."""
        return len(self.positive) == 1

    def share(self, subset: str) -> float:
        """Expected share of ``subset``; 0 for a subset the expectation does not name."""
        return self.shares.get(subset, 0.0)

    def label(self) -> str:
        """``resnet50=70%,resnet101=30%``: the expectation as a user would write it."""
        return ",".join(f"{name}={100 * share:g}%" for name, share in self.shares.items())

    def to_dict(self) -> dict[str, Any]:
        return {"shares": jsonable(self.shares), "label": self.label()}


def _percent(token: str, text: str) -> float:
    token = token.strip().removesuffix("%").strip()
    try:
        value = float(token)
    except ValueError:
        raise UsageError(
            f"cannot read {token!r} in expected split {text!r} as a percentage ({_EXAMPLES})"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise UsageError(
            f"expected split {text!r}: shares are percentages between 0 and 100, got {token!r}"
        )
    return value


def parse_expected(text: str, subsets_in_order: Sequence[str] | None = None) -> Expectation:
    """Read an expected split written as percentages summing to 100.

    * ``"70/30"`` (or ``"100"``, ``"50/25/25"``): one percentage per subset of
      ``subsets_in_order`` (the DestinationRule's subsets, stable first); the
      counts must match.
    * ``"resnet50=70,resnet101=30"``: shares by name. When ``subsets_in_order``
      is given, every name must be one of them, and the ones not named are
      expected to receive 0%; the result follows ``subsets_in_order``.

    Raises :class:`canary.errors.UsageError` saying what a valid value looks
    like when the text is empty, malformed, negative, or does not sum to 100.
    """
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"empty expected split; write it as {_EXAMPLES}")
    order = list(subsets_in_order) if subsets_in_order is not None else None
    if order is not None and len(set(order)) != len(order):
        raise UsageError(f"subsets listed twice in {order!r}")
    body = text.strip()
    named: dict[str, float] = {}
    if "=" in body:
        for item in body.split(","):
            if item.count("=") != 1:
                raise UsageError(
                    f"cannot read {item.strip()!r} in expected split {text!r}; "
                    f"write subset=percent pairs separated by commas ({_EXAMPLES})"
                )
            name, value = (part.strip() for part in item.split("="))
            if name in named:
                raise UsageError(f"subset {name!r} is given twice in expected split {text!r}")
            named[name] = _percent(value, text)
        if order is not None:
            unknown = [name for name in named if name not in order]
            if unknown:
                raise UsageError(
                    f"expected split {text!r} names {', '.join(map(repr, unknown))}, "
                    f"which is not a subset; the subsets are {', '.join(order)}"
                )
            named = {name: named.get(name, 0.0) for name in order}
    elif re.fullmatch(r"[0-9.%\s]+(/[0-9.%\s]+)*", body):
        values = [_percent(token, text) for token in body.split("/")]
        if order is None:
            raise UsageError(
                f"expected split {text!r} gives shares by position, so the subsets must be known; "
                f"name them instead, e.g. 'resnet50=70,resnet101=30'"
            )
        if len(values) != len(order):
            example = "/".join(["70", "30"] + ["0"] * (len(order) - 2)) if len(order) > 1 else "100"
            raise UsageError(
                f"expected split {text!r} has {len(values)} share(s) but there are "
                f"{len(order)} subset(s) ({', '.join(order)}); give one percentage per subset, "
                f"stable first, e.g. '{example}'"
            )
        named = dict(zip(order, values, strict=True))
    else:
        raise UsageError(f"cannot read expected split {text!r}; write it as {_EXAMPLES}")
    total = math.fsum(named.values())
    if abs(total - 100.0) > 1e-4:
        raise UsageError(
            f"expected split {text!r} sums to {total:g}%, not 100%; write it as {_EXAMPLES}"
        )
    return Expectation({name: value / 100.0 for name, value in named.items()})


def parse_group_spec(text: str, *, option: str = "--expected") -> dict[str | None, str]:
    """Split an expectation into its groups: the one grammar every command reads.

    ``'70/30'`` → ``{None: '70/30'}`` (every group); ``'default: 100/0; canary: 0/100'``
    → ``{'default': '100/0', 'canary': '0/100'}`` (a group left out has no
    expectation). A group named twice, an unknown group, or two splits for
    every group are usage errors.
    """
    out: dict[str | None, str] = {}
    for part in str(text).split(";"):
        part = part.strip()
        if not part:
            continue
        group, sep, spec = part.partition(":")
        if sep:
            name = group.strip()
            if name not in GROUPS:
                raise UsageError(
                    f"{option}: unknown group {name!r} in {text!r}; the groups are "
                    f"{', '.join(GROUPS)} (e.g. 'default: 100/0; canary: 0/100')"
                )
            if name in out:
                raise UsageError(f"{option}: group {name!r} is given twice in {text!r}")
            out[name] = spec.strip()
        else:
            if None in out:
                raise UsageError(f"{option} {text!r}: give one split, or one per group")
            out[None] = part
    if not out:
        raise UsageError(
            f"empty {option}; write e.g. 70/30, resnet50=70,resnet101=30 or 'default: 100/0; canary: 0/100'"
        )
    return out


def expectations_by_group(
    text: str, subsets_in_order: Sequence[str] | None, *, option: str = "--expected"
) -> dict[str, Expectation]:
    """``--expected`` as ``{group: Expectation}`` (empty text: no expectation at all).

    A split without a group applies to every group; a group's own split
    overrides it. Positional shares follow ``subsets_in_order`` (stable first).
    """
    if not str(text).strip():
        return {}
    spec = parse_group_spec(text, option=option)
    every = spec.get(None)
    out: dict[str, Expectation] = {}
    for group in GROUPS:
        chosen = spec.get(group, every)
        if chosen is not None:
            out[group] = parse_expected(chosen, subsets_in_order)
    return out
