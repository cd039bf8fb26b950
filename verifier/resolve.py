"""Which outcome each protocol x group should see, and which subset is the stable one. Pure.

Four sources, in this order of precedence:

1. ``--from-manifest FILE``: per cell, from the VirtualService
   (:mod:`mesh.routing`); the stable subset is the first destination of
   the route the default group takes.
2. ``--expected SPEC``: ``70/30`` or ``resnet50=70,resnet101=30`` for every
   group, or per group ``default: 100/0; canary: 0/100`` (a group left out is
   not judged). The same expectation holds for REST and gRPC.
3. Neither: the expectation the load test was given (run.json ``expected``).
4. None of those: the routing the run recorded as live on the mesh (run.json
   ``mesh.routing``, the VirtualService applied when the load test started),
   evaluated per cell as ``--from-manifest`` would.

Sources 1 and 4 also give each cell its route, so only cells on one route
are pooled.

``70/30`` names the stable subset first. The stable subset is, first found:
``--stable NAME``; the first subset a named spec writes
(``resnet50=70,...``); the first subset of the load test's own expectation in
run.json (the local mesh orders them stable first); ``resnet50`` when it is
one of the subsets (the project's stable model); the only subset. Otherwise
it is ambiguous and :class:`UsageError` asks for ``--stable``. The other
subsets follow in the order the load test recorded, else the calibration's;
with more than two subsets a positional spec must name its subsets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from canary.conventions import Cell
from canary.errors import UsageError
from canary.rundir import RunDocument
from canary.stats import Expectation, parse_expected, parse_group_spec
from mesh.routing import ManifestExpectations

__all__ = [
    "CONVENTIONAL_STABLE",
    "Resolved",
    "choose_stable",
    "from_manifest",
    "from_run",
    "from_spec",
    "run_expected",
    "subset_order",
]

CONVENTIONAL_STABLE = "resnet50"


@dataclass(frozen=True)
class Resolved:
    """The expectation per judged cell, and the names around it."""

    source: str
    stable: str | None
    subsets: tuple[str, ...]  # stable first
    cells: Mapping[Cell, Expectation]
    routes: Mapping[Cell, str] = field(default_factory=dict)  # the VirtualService route per cell
    notes: tuple[str, ...] = ()


def run_expected(document: RunDocument) -> dict[str, Expectation]:
    """The load test's own expectation per group (run.json ``expected``), if any."""
    return {group: Expectation(dict(split.shares)) for group, split in document.expected.items() if split.shares}


def choose_stable(
    subsets: Sequence[str],
    *,
    flag: str | None = None,
    named_first: str | None = None,
    recorded: Sequence[str] = (),
) -> str:
    """The stable subset (see the module docstring for the order of the rules)."""
    if flag:
        if subsets and flag not in subsets:
            raise UsageError(f"--stable {flag!r} is not one of the run's subsets ({', '.join(subsets)})")
        return flag
    for candidate in (named_first, recorded[0] if recorded else None):
        if candidate:
            return candidate
    if CONVENTIONAL_STABLE in subsets:
        return CONVENTIONAL_STABLE
    if len(subsets) == 1:
        return subsets[0]
    raise UsageError(
        f"cannot tell which subset is the stable one among {', '.join(subsets) or 'none'}: "
        "give --stable NAME, name the shares (e.g. resnet50=70,resnet101=30), "
        "or give the VirtualService with --from-manifest FILE"
    )


def subset_order(subsets: Sequence[str], stable: str | None, recorded: Sequence[str] = ()) -> tuple[str, ...]:
    """``stable`` first, then the recorded order, then the rest as given."""
    names = list(dict.fromkeys([*recorded, *subsets]))
    if stable is not None:
        names = [stable, *(s for s in names if s != stable)]
    return tuple(names)


def _first_named(spec: Mapping[str | None, str]) -> str | None:
    for text in spec.values():
        if "=" in text:
            return text.split(",")[0].split("=")[0].strip() or None
    return None


def from_spec(
    text: str,
    cells: Sequence[Cell],
    subsets: Sequence[str],
    *,
    stable: str | None = None,
    recorded: Mapping[str, Expectation] | None = None,
) -> Resolved:
    """Expectations per cell from ``--expected`` (see the module docstring)."""
    spec = parse_group_spec(text)
    order_hint = list(next(iter(recorded.values())).subsets) if recorded else []
    known = list(dict.fromkeys([*subsets, *order_hint]))
    named = _first_named(spec)
    chosen = choose_stable(known, flag=stable, named_first=named, recorded=order_hint)
    order = subset_order(known, chosen, order_hint)
    positional = any("=" not in s for s in spec.values())
    if positional and len(order) > 2 and not (set(order_hint) >= set(order)):
        raise UsageError(
            f"--expected {text!r} gives shares by position, but the order of the subsets after the "
            f"stable one ({chosen}) is not known; name them, e.g. "
            + ",".join(f"{s}=..." for s in order)
        )
    parsed = {group: parse_expected(s, order if order else None) for group, s in spec.items()}
    out: dict[Cell, Expectation] = {}
    notes: list[str] = []
    for cell in cells:
        expectation = parsed.get(cell[1], parsed.get(None))
        if expectation is not None:
            out[cell] = expectation
    skipped = sorted({cell[1] for cell in cells if cell not in out})
    if skipped:
        notes.append(f"no expected split for group(s) {', '.join(skipped)}: not judged")
    return Resolved(
        source=f"--expected {text}",
        stable=chosen,
        subsets=order,
        cells=out,
        notes=tuple(notes),
    )


def from_manifest(
    found: ManifestExpectations, subsets: Sequence[str], *, stable: str | None = None
) -> Resolved:
    """Expectations per cell from a VirtualService (already evaluated)."""
    chosen = choose_stable(list(subsets) or [found.stable], flag=stable, named_first=found.stable)
    names: list[str] = []
    for cell in found.cells.values():
        names.extend(cell.expectation.subsets)
    return Resolved(
        source=f"{found.source} ({found.name})",
        stable=chosen,
        subsets=subset_order([*subsets, *names], chosen),
        cells={cell: c.expectation for cell, c in found.cells.items()},
        routes={cell: c.route for cell, c in found.cells.items()},
    )


def from_run(
    recorded: Mapping[str, Expectation], cells: Sequence[Cell], subsets: Sequence[str], *, stable: str | None = None
) -> Resolved:
    """Expectations per cell from the load test's own ``--expected`` (run.json)."""
    order_hint = list(next(iter(recorded.values())).subsets) if recorded else []
    chosen = choose_stable(list(dict.fromkeys([*subsets, *order_hint])), flag=stable, recorded=order_hint)
    cells_out = {cell: recorded[cell[1]] for cell in cells if cell[1] in recorded}
    label = "; ".join(f"{g}: {e.label()}" for g, e in recorded.items())
    return Resolved(
        source=f"run.json (the load test's --expected: {label})",
        stable=chosen,
        subsets=subset_order(subsets, chosen, order_hint),
        cells=cells_out,
    )
