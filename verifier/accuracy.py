"""Top-1 and top-5 accuracy per subset, and agreement between subsets per payload. Pure.

* Accuracy: over successful, attributed responses whose payload has a known
  label, the share whose top-1 class is the label (top-5: the label is among
  the five most probable), each with a Wilson score interval
  (``statsmodels.stats.proportion.proportion_confint``). Responses, not
  payloads, are the unit: a payload sent often weighs more. Classes are
  named (:func:`canary.classes.class_name`), not only numbered.
* Agreement: per payload and format, each subset's top-1 (its most frequent
  top-1 for that payload; a subset that answered one payload with different
  classes is flagged), and whether the stable subset and each other subset
  agree; the share of payloads that agree, with a Wilson interval.

With seeded (random) weights the classes mean nothing: accuracy is then
reported but flagged as meaningless (``meaningful`` False). When the weights
are not recorded, ``meaningful`` is None and the report says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import proportion_confint

from canary.classes import class_name
from canary.jsonable import jsonable
from canary.rundir.records import answered

__all__ = [
    "AccuracyReport",
    "PairAgreement",
    "PayloadTop1",
    "SubsetAccuracy",
    "accuracy_report",
    "wilson_interval",
]


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of ``successes / n``; (0, 1) for n = 0."""
    if n <= 0:
        return 0.0, 1.0
    low, high = proportion_confint(successes, n, alpha=1 - confidence, method="wilson")
    return float(low), float(high)


@dataclass(frozen=True)
class SubsetAccuracy:
    subset: str
    n: int  # responses with a known label
    correct: int
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    unlabelled: int  # responses whose payload has no label
    top5_correct: int = 0
    top5_accuracy: float | None = None
    top5_ci_low: float | None = None
    top5_ci_high: float | None = None


@dataclass(frozen=True)
class PayloadTop1:
    """One payload (and format): each subset's top-1 class."""

    payload_id: str
    format: str
    label: int | None
    top1: Mapping[str, int]  # subset -> its most frequent top-1
    unstable: tuple[str, ...]  # subsets that answered with more than one top-1
    top5: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # subset -> its most frequent top-5

    @property
    def label_name(self) -> str | None:
        return None if self.label is None else class_name(self.label)

    def names(self, subset: str) -> tuple[str, ...]:
        """The subset's top-5 as class names (its top-1 alone when no top-5 was kept)."""
        classes = self.top5.get(subset) or ((self.top1[subset],) if subset in self.top1 else ())
        return tuple(class_name(c) for c in classes)


@dataclass(frozen=True)
class PairAgreement:
    """How often two subsets give the same top-1 for the same payload."""

    first: str
    second: str
    payloads: int  # payloads (x format) both answered
    agree: int
    share: float | None
    ci_low: float | None
    ci_high: float | None
    disagreeing: tuple[str, ...]  # "payload [format]" where they differ


@dataclass(frozen=True)
class AccuracyReport:
    subsets: tuple[SubsetAccuracy, ...]
    payloads: tuple[PayloadTop1, ...]
    agreement: tuple[PairAgreement, ...]
    weights: Mapping[str, str]  # subset -> "seeded" / "imagenet", where recorded
    meaningful: bool | None
    note: str
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return dict(jsonable(self))


def _note(weights: Mapping[str, str], subsets: Sequence[str]) -> tuple[bool | None, str]:
    seeded = [s for s in subsets if weights.get(s) == "seeded"]
    if seeded:
        return False, (
            f"the weights of {', '.join(seeded)} are seeded (random), not trained: accuracy and "
            "agreement measure nothing about the models' quality, only that each subset answers "
            "consistently"
        )
    if subsets and all(s in weights for s in subsets):
        return True, "weights: " + ", ".join(f"{s} {weights[s]}" for s in subsets)
    return None, (
        "the run does not record whether the models' weights are trained or seeded; read "
        "accuracy with that in mind"
    )


def _in_top5(label: Any, top5: Any) -> bool:
    if top5 is None or not len(top5):
        return False
    return int(label) in {int(c) for c in top5}


def accuracy_report(
    records: pd.DataFrame,
    *,
    subsets: Sequence[str],
    stable: str | None,
    weights: Mapping[str, str] | None = None,
    confidence: float = 0.95,
) -> AccuracyReport:
    """Accuracy and agreement from the records' ``subset``, ``ok``, ``top1``, ``label``,
    ``payload_id`` and ``format`` columns."""
    weights = dict(weights or {})
    if len(records):
        found = answered(records)
        columns = [c for c in ("subset", "top1", "top5", "label", "payload_id", "format") if c in records]
        rows = found.loc[found["top1"].notna(), columns]
    else:
        rows = pd.DataFrame(columns=["subset", "top1", "top5", "label", "payload_id", "format"])
    if "top5" not in rows:
        rows = rows.assign(top5=None)
    names = list(dict.fromkeys([*subsets, *sorted(set(rows["subset"].astype(str)))]))
    per_subset: list[SubsetAccuracy] = []
    for name in names:
        mine = rows[rows["subset"] == name]
        labelled = mine[mine["label"].notna()]
        n = len(labelled)
        correct = int((labelled["top1"].astype("int64") == labelled["label"].astype("int64")).sum())
        correct5 = sum(_in_top5(label, top5) for label, top5 in zip(labelled["label"], labelled["top5"], strict=True))
        low, high = wilson_interval(correct, n, confidence) if n else (None, None)
        low5, high5 = wilson_interval(correct5, n, confidence) if n else (None, None)
        per_subset.append(
            SubsetAccuracy(
                subset=name, n=n, correct=correct, accuracy=correct / n if n else None,
                ci_low=low, ci_high=high, unlabelled=len(mine) - n, top5_correct=correct5,
                top5_accuracy=correct5 / n if n else None, top5_ci_low=low5, top5_ci_high=high5,
            )
        )

    payloads: list[PayloadTop1] = []
    for (pid, fmt), group in rows.groupby(["payload_id", "format"], sort=True, dropna=False):
        top: dict[str, int] = {}
        top5: dict[str, tuple[int, ...]] = {}
        unstable: list[str] = []
        for name in names:
            mine = group[group["subset"] == name]
            classes = mine["top1"].astype("int64")
            if not len(classes):
                continue
            counts = classes.value_counts()
            top[name] = int(counts.index[np.argmax(counts.to_numpy())])
            lists = [tuple(int(c) for c in t) for t in mine["top5"] if t is not None and len(t)]
            if lists:
                top5[name] = max(set(lists), key=lists.count)
            if len(counts) > 1:
                unstable.append(name)
        labels = group["label"].dropna()
        payloads.append(
            PayloadTop1(
                payload_id=str(pid), format=str(fmt),
                label=int(labels.iloc[0]) if len(labels) else None,
                top1=top, unstable=tuple(unstable), top5=top5,
            )
        )

    agreement: list[PairAgreement] = []
    if stable is not None and stable in names:
        for other in names:
            if other == stable:
                continue
            both = [p for p in payloads if stable in p.top1 and other in p.top1]
            agree = sum(p.top1[stable] == p.top1[other] for p in both)
            low, high = wilson_interval(agree, len(both), confidence) if both else (None, None)
            agreement.append(
                PairAgreement(
                    first=stable, second=other, payloads=len(both), agree=agree,
                    share=agree / len(both) if both else None, ci_low=low, ci_high=high,
                    disagreeing=tuple(
                        f"{p.payload_id} [{p.format}]" for p in both if p.top1[stable] != p.top1[other]
                    ),
                )
            )
    meaningful, note = _note(weights, names)
    return AccuracyReport(
        subsets=tuple(per_subset),
        payloads=tuple(payloads),
        agreement=tuple(agreement),
        weights=weights,
        meaningful=meaningful,
        note=note,
        confidence=confidence,
    )
