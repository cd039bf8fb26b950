"""VirtualService → expected outcome per protocol x group, table-driven over the real manifests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from canary.conventions import GRPC_PREDICT_METHOD
from canary.errors import UsageError
from mesh.routing import (
    RequestShape,
    expectations_from_manifest,
    load_virtual_service,
    matches,
    route_for,
)

ROOT = Path(__file__).resolve().parents[2]
ROUTING = ROOT / "manifests" / "routing"
BASE_VS = ROOT / "manifests" / "base" / "virtualservice.yaml"
WEIGHT_70 = ROUTING / "virtualservice-weight-70.yaml"
WEIGHT_100 = ROUTING / "virtualservice-weight-100.yaml"
FOCUSED = ROUTING / "virtualservice-focused-routing.yaml"
HEADER = ("user-group", "canary")
CELLS = [("rest", "default"), ("rest", "canary"), ("grpc", "default"), ("grpc", "canary")]
KNOWN = ("resnet101", "resnet50")  # the DestinationRule's order: not the stable-first order


def _expect(path: Path, **kwargs):
    return expectations_from_manifest([path], CELLS, header=HEADER, model_name="image_classifier",
                                      known_subsets=KNOWN, **kwargs)


@pytest.mark.parametrize(
    ("manifest", "cell", "shares", "route"),
    [
        (WEIGHT_70, ("rest", "default"), {"resnet50": 0.7, "resnet101": 0.3}, "rest"),
        (WEIGHT_70, ("rest", "canary"), {"resnet50": 0.7, "resnet101": 0.3}, "rest"),
        (WEIGHT_70, ("grpc", "default"), {"resnet50": 0.7, "resnet101": 0.3}, "grpc"),
        (WEIGHT_70, ("grpc", "canary"), {"resnet50": 0.7, "resnet101": 0.3}, "grpc"),
        (WEIGHT_100, ("rest", "default"), {"resnet50": 1.0, "resnet101": 0.0}, "rest"),
        (WEIGHT_100, ("rest", "canary"), {"resnet50": 1.0, "resnet101": 0.0}, "rest"),
        (WEIGHT_100, ("grpc", "default"), {"resnet50": 1.0, "resnet101": 0.0}, "grpc"),
        (WEIGHT_100, ("grpc", "canary"), {"resnet50": 1.0, "resnet101": 0.0}, "grpc"),
        (FOCUSED, ("rest", "default"), {"resnet50": 1.0, "resnet101": 0.0}, "rest"),
        (FOCUSED, ("rest", "canary"), {"resnet101": 1.0, "resnet50": 0.0}, "rest-canary"),
        (FOCUSED, ("grpc", "default"), {"resnet50": 1.0, "resnet101": 0.0}, "grpc"),
        (FOCUSED, ("grpc", "canary"), {"resnet101": 1.0, "resnet50": 0.0}, "grpc-canary"),
    ],
)
def test_expectation_per_cell(manifest: Path, cell: tuple[str, str], shares: dict[str, float], route: str) -> None:
    found = _expect(manifest)
    item = found.cells[cell]
    assert dict(item.expectation.shares) == pytest.approx(shares)
    assert list(item.expectation.shares) == list(shares)  # the answering subset first
    assert item.route == route
    assert found.stable == "resnet50"  # the default route's first destination
    assert found.name == "VirtualService/tf-serving/image-classifier"


def test_focused_routing_is_deterministic_per_group() -> None:
    found = _expect(FOCUSED)
    assert found.expectation(("rest", "canary")).deterministic
    assert found.expectation(("grpc", "canary")).positive == ("resnet101",)
    assert found.expectation(("grpc", "default")).positive == ("resnet50",)


def test_base_virtual_service_cannot_be_verified() -> None:
    with pytest.raises(UsageError, match=r"without a subset.*no subset split to verify") as info:
        _expect(BASE_VS)
    assert "virtualservice-weight-70.yaml" in str(info.value)
    assert info.value.exit_code == 3


def _write_vs(tmp_path: Path, http: list[dict], name: str = "vs.yaml") -> Path:
    doc = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "image-classifier", "namespace": "tf-serving"},
        "spec": {"hosts": ["*"], "gateways": ["image-classifier-gateway"], "http": http},
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def _dest(subset: str, weight: int | None = None, port: int = 8501) -> dict:
    out: dict = {"destination": {"host": "image-classifier", "subset": subset, "port": {"number": port}}}
    if weight is not None:
        out["weight"] = weight
    return out


def test_custom_header_and_regex_and_case(tmp_path: Path) -> None:
    path = _write_vs(tmp_path, [
        {"name": "beta", "match": [{"headers": {"X-Team": {"regex": "be.a"}}}], "route": [_dest("resnet101")]},
        {"name": "grpc", "match": [{"uri": {"prefix": "/TENSORFLOW.serving."}, "ignoreUriCase": True}],
         "route": [_dest("resnet50", 90, 8500), _dest("resnet101", 10, 8500)]},
        {"name": "rest", "route": [_dest("resnet50")]},
    ])
    found = expectations_from_manifest([path], CELLS, header=("x-team", "beta"), model_name="m")
    assert found.expectation(("rest", "canary")).positive == ("resnet101",)
    assert found.expectation(("grpc", "canary")).positive == ("resnet101",)  # the header route comes first
    assert dict(found.expectation(("grpc", "default")).shares) == pytest.approx({"resnet50": 0.9, "resnet101": 0.1})
    assert found.cells[("rest", "default")].route == "rest"


def test_weights_to_one_subset_on_several_destinations_add_up(tmp_path: Path) -> None:
    path = _write_vs(tmp_path, [{"route": [_dest("resnet50", 40), _dest("resnet101", 30, 8500), _dest("resnet50", 30, 8500)]}])
    found = expectations_from_manifest([path], [("rest", "default")], header=HEADER, model_name="m")
    assert dict(found.expectation(("rest", "default")).shares) == pytest.approx({"resnet50": 0.7, "resnet101": 0.3})


def test_no_route_matches(tmp_path: Path) -> None:
    path = _write_vs(tmp_path, [{"name": "only-grpc", "match": [{"uri": {"prefix": "/tensorflow."}}],
                                 "route": [_dest("resnet50", port=8500)]}])
    with pytest.raises(UsageError, match=r"no http route matches rest requests of the default group.*404"):
        expectations_from_manifest([path], [("rest", "default")], header=HEADER, model_name="m")


def test_paths_that_take_different_routes_are_refused(tmp_path: Path) -> None:
    path = _write_vs(tmp_path, [
        {"name": "versioned", "match": [{"uri": {"regex": "/v1/models/[^/]+/versions/.*"}}], "route": [_dest("resnet101")]},
        {"name": "rest", "route": [_dest("resnet50")]},
    ])
    cells = {("rest", "default"): ["/v1/models/m:predict", "/v1/models/m/versions/1:predict"]}
    with pytest.raises(UsageError, match=r"take different routes.*versioned"):
        expectations_from_manifest([path], cells, header=HEADER, model_name="m")
    one = expectations_from_manifest([path], {("rest", "default"): ["/v1/models/m/versions/1:predict"]},
                                     header=HEADER, model_name="m")
    assert one.cells[("rest", "default")].route == "versioned"


def test_load_virtual_service_messages(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="holds no VirtualService"):
        load_virtual_service([ROOT / "manifests" / "base" / "destinationrule.yaml"])
    first = _write_vs(tmp_path, [{"route": [_dest("resnet50")]}], "a.yaml")
    text = first.read_text().replace("name: image-classifier", "name: other")
    (tmp_path / "b.yaml").write_text(text)
    with pytest.raises(UsageError, match="holds 2 VirtualServices"):
        load_virtual_service([tmp_path])
    with pytest.raises(UsageError, match=r"cannot read the manifest.*no such file"):
        load_virtual_service([tmp_path / "missing.yaml"])


def test_match_semantics_follow_istio() -> None:
    service = load_virtual_service([FOCUSED])
    grpc_canary = RequestShape("grpc", GRPC_PREDICT_METHOD, {"user-group": "canary"})
    found = route_for(service, grpc_canary)
    assert found is not None and found[1].name == "grpc-canary"
    other_value = RequestShape("grpc", GRPC_PREDICT_METHOD, {"user-group": "canary2"})  # exact, not prefix
    assert route_for(service, other_value)[1].name == "grpc"  # type: ignore[index]
    first_match = service.http[0].match[0]
    assert matches(first_match, grpc_canary)
    assert not matches(first_match, RequestShape("rest", "/v1/models/m:predict", {"user-group": "canary"}))
