"""The inputs of the golden translations, shared by the golden and the Envoy tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from mesh.manifests import apply, load_manifests
from mesh.model import MeshObject
from mesh.translate import (
    EnvoyResources,
    IngressSettings,
    PodEndpoint,
    XdsLayout,
    XdsPaths,
    translate,
)

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
DATA = Path(__file__).resolve().parent / "data"
GOLDEN = ROOT / "tests" / "golden"

# subset → (gRPC host port, REST host port) of its one pod, as the local backend would remap them
DEFAULT_PORTS = {"resnet50": (31001, 31002), "resnet101": (31003, 31004)}
FEATURE_PORTS = {"echo-v1-0": 32001, "echo-v2-0": 32002, "shadow-0": 32003}


@dataclass(frozen=True)
class Scenario:
    name: str
    objects: list[MeshObject]
    endpoints: list[PodEndpoint]
    ingress: IngressSettings

    def translate(self, xds: XdsLayout | None = None) -> EnvoyResources:
        return translate(
            self.objects, self.endpoints, self.ingress, xds or XdsPaths("/var/run/canary/xds")
        )


def base_objects(*routing: str) -> list[MeshObject]:
    return list(_base_objects(routing))


@cache
def _base_objects(routing: tuple[str, ...]) -> tuple[MeshObject, ...]:
    objects = apply([], load_manifests([MANIFESTS / "base"]))
    for name in routing:
        objects = apply(objects, load_manifests([MANIFESTS / "routing" / name]))
    return tuple(objects)


@cache
def _feature_objects() -> tuple[MeshObject, ...]:
    return tuple(apply([], load_manifests([DATA / "features.yaml"])))


def classifier_pods(ports: Mapping[str, tuple[int, int]] = DEFAULT_PORTS) -> list[PodEndpoint]:
    return [
        PodEndpoint(
            namespace="tf-serving",
            name=f"image-classifier-{version}-0",
            labels={"app": "image-classifier", "version": version},
            address="127.0.0.1",
            ports={8500: grpc, 8501: rest},
            port_names={"grpc": 8500, "http": 8501},
            ready=True,
        )
        for version, (grpc, rest) in sorted(ports.items())
    ]


def feature_pods(ports: Mapping[str, int] = FEATURE_PORTS) -> list[PodEndpoint]:
    def pod(
        name: str, labels: dict[str, str], ready: bool = True, namespace: str = "features"
    ) -> PodEndpoint:
        port = ports.get(name, 1)
        return PodEndpoint(
            namespace, name, labels, "127.0.0.1", {8080: port, 9000: port}, {"web": 8080}, ready
        )

    return [
        pod("echo-v1-0", {"app": "echo", "version": "v1"}),
        pod("echo-v2-0", {"app": "echo", "version": "v2"}),
        pod("echo-v2-1", {"app": "echo", "version": "v2"}, ready=False),  # not ready: no endpoint
        pod(
            "echo-elsewhere", {"app": "echo", "version": "v1"}, namespace="other"
        ),  # other namespace
        pod("shadow-0", {"app": "shadow"}),
    ]


def scenarios(
    classifier_ports: Mapping[str, tuple[int, int]] = DEFAULT_PORTS,
    feature_ports: Mapping[str, int] = FEATURE_PORTS,
    ingress_ports: Mapping[int, int] | None = None,
) -> dict[str, Scenario]:
    """Base manifests, each routing manifest applied over them, and the feature showcase."""
    ingress = IngressSettings(ports=dict(ingress_ports or {80: 8080}))
    pods = classifier_pods(classifier_ports)
    out = {"base": Scenario("base", base_objects(), pods, ingress)}
    for name in ("weight-100", "weight-70", "focused-routing"):
        out[name] = Scenario(name, base_objects(f"virtualservice-{name}.yaml"), pods, ingress)
    features = list(_feature_objects())
    feature_ingress = IngressSettings(ports=dict(ingress_ports or {80: 8080, 8080: 8081}))
    out["features"] = Scenario("features", features, feature_pods(feature_ports), feature_ingress)
    return out
