"""Header group × subset table of responses (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from canary.errors import UsageError
from canary.jsonable import jsonable

from .expectations import ERROR, UNKNOWN

__all__ = ["ConfusionMatrix", "confusion_matrix"]


@dataclass(frozen=True)
class ConfusionMatrix:
    """Responses per header group (rows) and answering subset (columns).

    ``cells[i][j]`` counts group ``groups[i]`` answered by ``subsets[j]``;
    ``"unknown"`` and ``"error"`` are the last columns when present. Shares
    are of each row's total (0 for an empty row).
    """

    groups: tuple[str, ...]
    subsets: tuple[str, ...]
    cells: tuple[tuple[int, ...], ...]

    @property
    def row_totals(self) -> tuple[int, ...]:
        return tuple(sum(row) for row in self.cells)

    @property
    def column_totals(self) -> tuple[int, ...]:
        return (
            tuple(sum(column) for column in zip(*self.cells, strict=True))
            if self.cells
            else tuple(0 for _ in self.subsets)
        )

    @property
    def shares(self) -> tuple[tuple[float, ...], ...]:
        return tuple(
            tuple(cell / total if total else 0.0 for cell in row)
            for row, total in zip(self.cells, self.row_totals, strict=True)
        )

    def count(self, group: str, subset: str) -> int:
        """Responses of ``group`` answered by ``subset`` (0 for names not in the table)."""
        if group not in self.groups or subset not in self.subsets:
            return 0
        return self.cells[self.groups.index(group)][self.subsets.index(subset)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "groups": list(self.groups),
            "subsets": list(self.subsets),
            "cells": jsonable(self.cells),
            "row_totals": list(self.row_totals),
            "shares": jsonable(self.shares),
        }


def confusion_matrix(
    counts: Mapping[tuple[str, str], int],
    *,
    groups: Sequence[str] | None = None,
    subsets: Sequence[str] | None = None,
) -> ConfusionMatrix:
    """Build the group × subset table from ``(group, subset) → count``.

    Rows and columns follow ``groups`` / ``subsets`` when given (more may be
    listed than occur; a count outside them is an error, so nothing is
    dropped silently), else first appearance; ``"unknown"`` and ``"error"``
    always come last.
    """
    row_order = list(groups) if groups is not None else []
    col_order = list(subsets) if subsets is not None else []
    for (group, subset), value in counts.items():
        if int(value) != value or value < 0:
            raise UsageError(
                f"count of ({group!r}, {subset!r}) must be a non-negative whole number"
            )
        if group not in row_order:
            if groups is not None:
                raise UsageError(f"group {group!r} is not one of {list(groups)}")
            row_order.append(group)
        if subset not in col_order:
            if subsets is not None and subset not in (UNKNOWN, ERROR):
                raise UsageError(f"subset {subset!r} is not one of {list(subsets)}")
            col_order.append(subset)
    col_order = [s for s in col_order if s not in (UNKNOWN, ERROR)] + [
        s for s in (UNKNOWN, ERROR) if s in col_order
    ]
    cells = tuple(
        tuple(int(counts.get((group, subset), 0)) for subset in col_order) for group in row_order
    )
    return ConfusionMatrix(groups=tuple(row_order), subsets=tuple(col_order), cells=cells)
