"""Accuracy per subset (Wilson intervals) and top-1 agreement between subsets per payload."""

from __future__ import annotations

import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from verifier.accuracy import accuracy_report, wilson_interval


def _records(rows: list[tuple[str, str, str, int | None, int | None, bool]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["subset", "payload_id", "format", "top1", "label", "ok"])


ROWS = (
    [("resnet50", "cat", "b64", 281, 281, True)] * 6
    + [("resnet50", "ship", "b64", 999, 510, True)] * 4
    + [("resnet101", "cat", "b64", 281, 281, True)] * 3
    + [("resnet101", "ship", "b64", 510, 510, True)] * 2
    + [("resnet101", "noise", "b64", 7, None, True)] * 2
    + [("resnet50", "noise", "b64", 7, None, True)]
    + [("resnet101", "ship", "b64", 3, 510, True)]  # one odd answer: flagged unstable
    + [("error", "cat", "b64", None, 281, False), ("unknown", "cat", "b64", 5, 281, True)]
)


def test_accuracy_and_agreement() -> None:
    report = accuracy_report(_records(ROWS), subsets=["resnet50", "resnet101"], stable="resnet50",
                             weights={"resnet50": "imagenet", "resnet101": "imagenet"})
    by = {a.subset: a for a in report.subsets}
    assert (by["resnet50"].n, by["resnet50"].correct, by["resnet50"].unlabelled) == (10, 6, 1)
    assert (by["resnet101"].n, by["resnet101"].correct, by["resnet101"].unlabelled) == (6, 5, 2)
    low, high = proportion_confint(6, 10, alpha=0.05, method="wilson")
    assert (by["resnet50"].ci_low, by["resnet50"].ci_high) == pytest.approx((low, high))
    payloads = {p.payload_id: p for p in report.payloads}
    assert payloads["ship"].top1 == {"resnet50": 999, "resnet101": 510}
    assert payloads["ship"].unstable == ("resnet101",)
    assert payloads["noise"].label is None
    (pair,) = report.agreement
    assert (pair.first, pair.second, pair.payloads, pair.agree) == ("resnet50", "resnet101", 3, 2)
    assert pair.disagreeing == ("ship [b64]",)
    assert report.meaningful is True and "imagenet" in report.note


def test_seeded_weights_make_accuracy_meaningless() -> None:
    report = accuracy_report(_records(ROWS), subsets=["resnet50", "resnet101"], stable="resnet50",
                             weights={"resnet50": "seeded", "resnet101": "seeded"})
    assert report.meaningful is False
    assert "seeded" in report.note and "measure nothing" in report.note
    unknown = accuracy_report(_records(ROWS), subsets=["resnet50", "resnet101"], stable="resnet50")
    assert unknown.meaningful is None and "does not record" in unknown.note


def test_no_labels_and_no_records() -> None:
    unlabelled = _records([("resnet50", "x", "b64", 1, None, True)])
    report = accuracy_report(unlabelled, subsets=["resnet50", "resnet101"], stable="resnet50")
    assert report.subsets[0].accuracy is None and report.subsets[0].unlabelled == 1
    assert report.agreement[0].payloads == 0 and report.agreement[0].share is None
    empty = accuracy_report(unlabelled.iloc[0:0], subsets=["resnet50"], stable=None)
    assert empty.payloads == () and empty.agreement == ()
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert empty.to_dict()["subsets"][0]["subset"] == "resnet50"


def test_top5_accuracy_and_the_names_of_disagreeing_answers() -> None:
    """The ship (label 510, 'container ship') is in resnet50's top-5 though not its top-1."""
    rows = pd.DataFrame(
        [("resnet50", "ship", "b64", 999, [999, 510, 484, 628, 814], 510, True)] * 4
        + [("resnet101", "ship", "b64", 510, [510, 484, 628, 814, 999], 510, True)] * 4
        + [("resnet50", "cat", "b64", 281, [281, 282, 285, 287, 283], 281, True)] * 2
        + [("resnet101", "cat", "b64", 285, [285, 281, 282, 287, 283], 281, True)] * 2,
        columns=["subset", "payload_id", "format", "top1", "top5", "label", "ok"])
    report = accuracy_report(rows, subsets=["resnet50", "resnet101"], stable="resnet50")
    by = {a.subset: a for a in report.subsets}
    assert (by["resnet50"].correct, by["resnet50"].top5_correct, by["resnet50"].n) == (2, 6, 6)
    assert (by["resnet101"].correct, by["resnet101"].top5_correct) == (4, 6)
    assert by["resnet50"].top5_accuracy == 1.0 and by["resnet50"].accuracy == pytest.approx(1 / 3)
    ship = next(p for p in report.payloads if p.payload_id == "ship")
    assert ship.label_name == "container ship"
    assert ship.names("resnet50")[:2] == ("toilet tissue", "container ship")
    assert ship.names("resnet101")[0] == "container ship"
    (pair,) = report.agreement
    assert pair.agree == 0 and set(pair.disagreeing) == {"ship [b64]", "cat [b64]"}
