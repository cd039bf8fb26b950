"""``verify-split --plan``: the requests a run needs, in ``canary load --requests`` terms. Pure
but for reading a VirtualService.

The cells of the run follow the load test's mix (:func:`canary.stats.cell_weights`:
the protocols and the canary share); each cell's expectation comes from
``--expected`` (one split for every group, or one per group) or from a
VirtualService (``--from-manifest``: then each cell also has its route, and
only cells on one route are pooled). :func:`canary.stats.plan_run` pools them
as the verifier will and sizes the run for the pool that needs the most.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from canary.conventions import DEFAULT_HEADER, MODEL_NAME, Cell
from canary.errors import UsageError
from canary.stats import (
    Expectation,
    RunPlan,
    SplitPolicy,
    cell_weights,
    parse_expected,
    parse_group_spec,
    plan_run,
)
from mesh.routing import expectations_from_manifest

from .resolve import CONVENTIONAL_STABLE

__all__ = ["plan_checks"]


def _expectation(text: str, stable: str | None) -> Expectation:
    if "=" in text:
        return parse_expected(text)
    count = len([t for t in text.split("/") if t.strip()])
    first = stable or CONVENTIONAL_STABLE
    others = ["resnet101"] if count == 2 and first != "resnet101" else []
    others = others or [f"canary{i}" for i in range(1, count)]
    return parse_expected(text, [first, *others][:count])


def plan_checks(
    *,
    expected: str | None,
    manifests: Sequence[Path] = (),
    policy: SplitPolicy,
    protocols: Sequence[str],
    canary_share: float,
    stable: str | None = None,
    header: tuple[str, str] = DEFAULT_HEADER,
    detect: float | None = None,
) -> RunPlan:
    """The run's plan for ``expected`` (or the VirtualService in ``manifests``) and this mix."""
    if bool(expected) == bool(manifests):
        raise UsageError("--plan needs either --expected (e.g. 70/30) or --from-manifest FILE")
    weights = cell_weights(protocols, canary_share)
    names: dict[str, Cell] = {name: (name.split("/")[0], name.split("/")[1]) for name in weights}
    cells: dict[str, tuple[Expectation, str | None]] = {}
    if manifests:
        found = expectations_from_manifest(manifests, list(names.values()), header=header, model_name=MODEL_NAME)
        for name, cell in names.items():
            item = found.cells[cell]
            cells[name] = (item.expectation, item.route)
    else:
        spec = parse_group_spec(str(expected))
        parsed = {group: _expectation(text, stable) for group, text in spec.items()}
        for name, cell in names.items():
            chosen = parsed.get(cell[1], parsed.get(None))
            if chosen is not None:
                cells[name] = (chosen, None)
    return plan_run(cells, weights, policy, protocols=protocols, canary_share=canary_share, detect=detect)
