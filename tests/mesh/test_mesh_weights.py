"""A rollout's weights set on the VirtualService under test: table-driven over the repository's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from canary.errors import UsageError
from mesh.manifests import read_documents
from mesh.routing import expectations_from_virtual_service, recorded_virtual_service
from mesh.weights import canary_routes, with_canary_weight

ROOT = Path(__file__).resolve().parents[2]
ROUTING = ROOT / "manifests" / "routing"
DELAYED = ROOT / "tests" / "integration" / "manifests" / "virtualservice-canary-delayed.yaml"
CELLS = [("rest", "default"), ("rest", "canary"), ("grpc", "default"), ("grpc", "canary")]


def _document(path: Path) -> dict:
    return next(d for d in read_documents(path) if isinstance(d, dict))


def _shares(document: dict) -> dict[tuple[str, str], dict[str, float]]:
    service = recorded_virtual_service([("test", document)], "test")
    found = expectations_from_virtual_service(service, CELLS, header=("user-group", "canary"),
                                              model_name="image_classifier", known_subsets=["resnet50", "resnet101"])
    return {cell: dict(found.expectation(cell).shares) for cell in CELLS}


@pytest.mark.parametrize(("source", "percent", "expected"), [
    ("virtualservice-weight-70.yaml", 10, {cell: {"resnet50": 0.9, "resnet101": 0.1} for cell in CELLS}),
    ("virtualservice-weight-100.yaml", 100, {cell: {"resnet50": 0.0, "resnet101": 1.0} for cell in CELLS}),
    ("virtualservice-weight-70.yaml", 0, {cell: {"resnet50": 1.0, "resnet101": 0.0} for cell in CELLS}),
    # focused routing: the header routes stay on the canary, the others are split
    ("virtualservice-focused-routing.yaml", 30, {
        ("rest", "default"): {"resnet50": 0.7, "resnet101": 0.3}, ("grpc", "default"): {"resnet50": 0.7, "resnet101": 0.3},
        ("rest", "canary"): {"resnet50": 0.0, "resnet101": 1.0}, ("grpc", "canary"): {"resnet50": 0.0, "resnet101": 1.0},
    }),
])
def test_weights_reach_every_stable_route_rest_and_grpc_alike(source: str, percent: int, expected: dict) -> None:
    original = _document(ROUTING / source)
    weighted = with_canary_weight(original, "resnet50", "resnet101", percent)
    shares = _shares(weighted)
    assert set(shares) == set(expected)
    for cell, want in expected.items():
        assert shares[cell] == pytest.approx(want), cell
    assert original == _document(ROUTING / source)  # the input is not changed


def test_everything_else_of_a_route_is_kept() -> None:
    original = _document(DELAYED)
    weighted = with_canary_weight(original, "resnet50", "resnet101", 40)
    assert canary_routes(original, "resnet50", "resnet101") == [1, 3]
    for index in (0, 2):  # header routes to the canary, with their fault: untouched
        assert weighted["spec"]["http"][index] == original["spec"]["http"][index]
    rest = weighted["spec"]["http"][3]
    assert rest["name"] == "rest" and [d["weight"] for d in rest["route"]] == [60, 40]
    assert [d["destination"]["port"]["number"] for d in rest["route"]] == [8501, 8501]
    assert weighted["spec"]["http"][1]["match"] == original["spec"]["http"][1]["match"]


def test_a_stable_only_route_gains_the_canary_on_the_same_host_and_port() -> None:
    weighted = with_canary_weight(_document(ROUTING / "virtualservice-focused-routing.yaml"), "resnet50",
                                  "resnet101", 25)
    grpc = weighted["spec"]["http"][1]["route"]
    assert [(d["destination"]["subset"], d["destination"]["port"]["number"], d["weight"]) for d in grpc] == [
        ("resnet50", 8500, 75), ("resnet101", 8500, 25)]


@pytest.mark.parametrize(("document", "percent", "message"), [
    ("virtualservice-weight-70.yaml", 101, "whole percentage"),
    ("virtualservice-weight-70.yaml", 12.5, "whole percentage"),
    ("base", 10, "no http route that sends to subset"),
])
def test_refused(document: str, percent: float, message: str) -> None:
    path = ROOT / "manifests" / "base" / "virtualservice.yaml" if document == "base" else ROUTING / document
    with pytest.raises(UsageError, match=message):
        with_canary_weight(_document(path), "resnet50", "resnet101", percent)  # type: ignore[arg-type]


def test_only_a_virtual_service() -> None:
    with pytest.raises(UsageError, match="needs a VirtualService"):
        with_canary_weight({"kind": "DestinationRule"}, "resnet50", "resnet101", 10)
