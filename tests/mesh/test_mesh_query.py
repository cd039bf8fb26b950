"""The mesh's queries: subsets stable first, and the endpoints serving each, as Envoy's clusters select them."""

from __future__ import annotations

import dataclasses

import pytest

from canary.errors import MeshError
from mesh.api import default_manifests
from mesh.manifests import load_manifests
from mesh.query import MeshView
from mesh.xds_types import PodEndpoint

ROUTING = default_manifests("routing")


def pod(name: str, version: str, rest: int, grpc: int, **changes) -> PodEndpoint:
    base = PodEndpoint(
        namespace="tf-serving",
        name=name,
        labels={"app": "image-classifier", "version": version},
        address="127.0.0.1",
        ports={8501: rest, 8500: grpc},
        port_names={"http": 8501, "grpc": 8500},
        ready=True,
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def base():
    return tuple(load_manifests([default_manifests("base")]))


def view(objects, pods, *routing: str) -> MeshView:
    extra = tuple(load_manifests([ROUTING / name for name in routing])) if routing else ()
    replaced = {o.ref for o in extra}
    return MeshView(tuple(o for o in objects if o.ref not in replaced) + extra, tuple(pods))


def test_each_subset_gets_its_first_ready_pod_selected_by_service_and_subset_labels(base) -> None:
    pods = [
        pod("rn101-b", "resnet101", 9003, 9004),
        pod("rn50-a", "resnet50", 9001, 9002),
        pod("rn101-a", "resnet101", 9005, 9006),
        pod("rn101-0", "resnet101", 9011, 9012, ready=False),  # not ready: no endpoint, as in Envoy
        pod("other", "resnet50", 9007, 9008, namespace="default"),
        pod("stray", "resnet50", 9009, 9010, labels={"app": "else", "version": "resnet50"}),
    ]
    mesh = view(base, pods)
    assert mesh.subset_servers() == {
        "resnet101": {"rest": "http://127.0.0.1:9005", "grpc": "127.0.0.1:9006"},
        "resnet50": {"rest": "http://127.0.0.1:9001", "grpc": "127.0.0.1:9002"},
    }
    assert [e.pod for e in mesh.endpoints("resnet101", 8500)] == ["tf-serving/rn101-a", "tf-serving/rn101-b"]
    assert [(e.port, e.grpc) for e in mesh.endpoints("resnet101", 8500)] == [(9006, True), (9004, True)]
    assert mesh.endpoints("resnet50", 8501)[0].target == "http://127.0.0.1:9001"
    assert mesh.endpoints("resnet50", 9999) == ()
    assert mesh.endpoints("nosuchsubset", 8501) == ()


@pytest.mark.parametrize(
    ("pods", "host", "error"),
    [
        ([pod("rn50", "resnet50", 1, 2)], None,
         r"subset resnet101 of image-classifier\.tf-serving\.svc\.cluster\.local has no ready pod"),
        ([], "nothing", "exactly one DestinationRule host matching 'nothing'"),
        ([pod("a", "resnet50", 1, 2, ports={}), pod("b", "resnet101", 3, 4)], None,
         "subset resnet50 .* has no ready pod serving the Service's ports"),
    ],
)
def test_missing_pods_and_hosts_say_what_to_do(base, pods, host, error) -> None:
    with pytest.raises(MeshError, match=error):
        view(base, pods).subset_servers(host)


def test_the_host_can_be_named_short_or_in_full(base) -> None:
    mesh = view(base, [pod("a", "resnet50", 1, 2), pod("b", "resnet101", 3, 4, ports={8501: 3})])
    for host in ("image-classifier", "image-classifier.tf-serving.svc.cluster.local"):
        assert mesh.subset_servers(host)["resnet101"] == {"rest": "http://127.0.0.1:3"}  # no gRPC port


@pytest.mark.parametrize(
    ("routing", "order"),
    [
        ((), ("resnet101", "resnet50")),  # the base routing names no subset: the DestinationRule's order
        (("virtualservice-weight-70.yaml",), ("resnet50", "resnet101")),
        (("virtualservice-weight-100.yaml",), ("resnet50", "resnet101")),
        (("virtualservice-focused-routing.yaml",), ("resnet50", "resnet101")),  # header routes do not count
    ],
)
def test_subsets_come_stable_first(base, routing, order) -> None:
    assert view(base, [], *routing).subsets() == order
