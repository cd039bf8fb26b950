"""Typed, validated Kubernetes and Istio objects: what the mesh understands.

``mesh.manifests`` builds these from YAML and rejects anything it cannot
represent faithfully; everything downstream (translation, the local backend)
reads only these types. All are frozen: objects in, objects out.

Read for a cluster (``Target.CLUSTER``), the same types hold what the local
mesh would model, and ``raw`` everything the cluster gets; kinds the local
mesh does not know are :class:`OtherObject`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "CLUSTER_DOMAIN",
    "ConfigMap",
    "Container",
    "ContainerPort",
    "Deployment",
    "Destination",
    "DestinationRule",
    "EnvFromSource",
    "EnvVar",
    "Fault",
    "Gateway",
    "GatewayServer",
    "HTTPMatch",
    "HTTPRoute",
    "HTTPRouteDestination",
    "HeaderOperations",
    "Headers",
    "LoadBalancer",
    "ManifestObject",
    "MeshObject",
    "Mirror",
    "Namespace",
    "ObjectRef",
    "OtherObject",
    "PersistentVolumeClaim",
    "Probe",
    "Retries",
    "Service",
    "ServicePort",
    "StringMatch",
    "Subset",
    "VirtualService",
    "Volume",
    "VolumeMount",
    "service_fqdn",
]


CLUSTER_DOMAIN = "svc.cluster.local"


def service_fqdn(name: str, namespace: str) -> str:
    """``name.namespace.svc.cluster.local``, the FQDN Istio gives a Kubernetes Service."""
    return f"{name}.{namespace}.{CLUSTER_DOMAIN}"


@dataclass(frozen=True, order=True)
class ObjectRef:
    """Identity of an object, as kubectl prints it: ``Kind/namespace/name``."""

    kind: str
    namespace: str  # "" for cluster-scoped objects (Namespace)
    name: str

    def __str__(self) -> str:
        return (
            f"{self.kind}/{self.namespace}/{self.name}"
            if self.namespace
            else f"{self.kind}/{self.name}"
        )


@dataclass(frozen=True)
class _Base:
    ref: ObjectRef
    source: str  # the file it was read from, for messages
    raw: dict[str, object] = field(compare=False, repr=False)  # the manifest as given


# --- Kubernetes core ---------------------------------------------------------------


@dataclass(frozen=True)
class Namespace(_Base):
    labels: dict[str, str]


@dataclass(frozen=True)
class ConfigMap(_Base):
    data: dict[str, str]


@dataclass(frozen=True)
class PersistentVolumeClaim(_Base):
    pass


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str | None = None
    # valueFrom.configMapKeyRef
    config_map: str | None = None
    config_map_key: str | None = None
    optional: bool = False


@dataclass(frozen=True)
class EnvFromSource:
    config_map: str
    prefix: str = ""
    optional: bool = False


@dataclass(frozen=True)
class ContainerPort:
    container_port: int
    name: str = ""
    protocol: str = "TCP"


@dataclass(frozen=True)
class Probe:
    kind: Literal["tcpSocket", "httpGet", "grpc"]
    port: int | str  # a number or a container port name
    path: str = "/"
    initial_delay_seconds: int = 0
    period_seconds: int = 10
    timeout_seconds: int = 1
    failure_threshold: int = 3


@dataclass(frozen=True)
class VolumeMount:
    name: str
    mount_path: str
    read_only: bool = False
    sub_path: str = ""


@dataclass(frozen=True)
class Volume:
    name: str
    kind: Literal["persistentVolumeClaim", "hostPath", "emptyDir", "configMap"]
    reference: str = ""  # claimName, hostPath path or ConfigMap name


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()
    env_from: tuple[EnvFromSource, ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    readiness_probe: Probe | None = None
    volume_mounts: tuple[VolumeMount, ...] = ()


@dataclass(frozen=True)
class Deployment(_Base):
    labels: dict[str, str]
    replicas: int
    selector: dict[str, str]  # matchLabels
    pod_labels: dict[str, str]
    containers: tuple[Container, ...]
    volumes: tuple[Volume, ...]


@dataclass(frozen=True)
class ServicePort:
    port: int
    target_port: int | str
    name: str = ""
    protocol: str = "TCP"
    app_protocol: str = ""

    @property
    def is_grpc(self) -> bool:
        """Istio's protocol selection: appProtocol first, then the port name's prefix."""
        return self._protocol in ("grpc", "grpc-web", "http2", "h2c", "kubernetes.io/h2c")

    @property
    def upstream_protocol(self) -> Literal["http2", "http1", "downstream"]:
        """How Istio's proxies speak to this port: HTTP/2 for declared gRPC/HTTP2, HTTP/1.1
        for other declared protocols, and the client's own protocol when undeclared
        (Istio's protocol sniffing)."""
        if self.is_grpc:
            return "http2"
        declared = ("http", "https", "tcp", "tls", "mongo", "mysql", "redis")
        return "http1" if self._protocol in declared else "downstream"

    @property
    def _protocol(self) -> str:
        return (self.app_protocol or self.name.split("-", 1)[0]).lower()


@dataclass(frozen=True)
class Service(_Base):
    selector: dict[str, str]  # empty: the Service selects no pods (as in Kubernetes)
    ports: tuple[ServicePort, ...]

    @property
    def fqdn(self) -> str:
        """The host name Istio knows the Service by: ``name.namespace.svc.cluster.local``."""
        return service_fqdn(self.ref.name, self.ref.namespace)

    def port(self, number: int) -> ServicePort | None:
        """The port with this number, or None."""
        return next((p for p in self.ports if p.port == number), None)


# --- Istio networking ----------------------------------------------------------------


@dataclass(frozen=True)
class GatewayServer:
    port: int
    port_name: str
    protocol: str  # HTTP, HTTP2, GRPC
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class Gateway(_Base):
    selector: dict[str, str]
    servers: tuple[GatewayServer, ...]


@dataclass(frozen=True)
class LoadBalancer:
    simple: Literal["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"] = "LEAST_REQUEST"


@dataclass(frozen=True)
class Subset:
    name: str
    labels: dict[str, str]
    load_balancer: LoadBalancer | None = None


@dataclass(frozen=True)
class DestinationRule(_Base):
    host: str  # FQDN, resolved against the rule's namespace
    load_balancer: LoadBalancer | None
    subsets: tuple[Subset, ...]


@dataclass(frozen=True)
class StringMatch:
    kind: Literal["exact", "prefix", "regex"]
    value: str


@dataclass(frozen=True)
class HTTPMatch:
    """One ``http[].match[]`` entry: all of its conditions must hold."""

    name: str = ""
    uri: StringMatch | None = None
    method: StringMatch | None = None
    headers: tuple[tuple[str, StringMatch], ...] = ()  # lower-case names, sorted
    ignore_uri_case: bool = False


@dataclass(frozen=True)
class Destination:
    host: str  # FQDN, resolved against the VirtualService's namespace
    subset: str = ""
    port: int | None = None  # None: the Service's only port


@dataclass(frozen=True)
class HeaderOperations:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class Headers:
    request: HeaderOperations = HeaderOperations()
    response: HeaderOperations = HeaderOperations()


@dataclass(frozen=True)
class HTTPRouteDestination:
    destination: Destination
    weight: int  # normalised: a lone destination without weight gets 100
    headers: Headers | None = None


@dataclass(frozen=True)
class Retries:
    attempts: int
    per_try_timeout_ms: int | None = None
    retry_on: str = ""


@dataclass(frozen=True)
class Fault:
    """Istio's fault injection. As in Istio (and Envoy), a fault without a
    ``percentage`` affects no request, hence the 0.0 defaults."""

    # abort
    abort_http_status: int | None = None
    abort_grpc_status: str | None = None  # e.g. "UNAVAILABLE"
    abort_percent: float = 0.0
    # delay
    delay_ms: int | None = None
    delay_percent: float = 0.0


@dataclass(frozen=True)
class Mirror:
    destination: Destination
    percent: float = 100.0


@dataclass(frozen=True)
class HTTPRoute:
    name: str
    match: tuple[HTTPMatch, ...]  # empty: matches everything
    route: tuple[HTTPRouteDestination, ...]
    timeout_ms: int | None = None
    retries: Retries | None = None  # None: Istio's default retry policy
    fault: Fault | None = None
    mirror: Mirror | None = None
    headers: Headers | None = None


@dataclass(frozen=True)
class VirtualService(_Base):
    hosts: tuple[str, ...]  # short names resolved to FQDNs, as Istio does
    gateways: tuple[str, ...]  # "namespace/name", or "mesh"
    http: tuple[HTTPRoute, ...]


MeshObject = (
    Namespace
    | ConfigMap
    | PersistentVolumeClaim
    | Deployment
    | Service
    | Gateway
    | DestinationRule
    | VirtualService
)


# --- anything else a cluster takes -----------------------------------------------------


@dataclass(frozen=True)
class OtherObject(_Base):
    """An object of a kind the local mesh does not know (ServiceAccount, Secret, Role,
    Job, a Gateway API route, a custom resource, ...).

    Only read for a cluster: its identity is checked (apiVersion, kind, a valid
    name and namespace), its content is applied as written and judged by the
    API server's dry run.
    """

    api_version: str


ManifestObject = MeshObject | OtherObject
"""Any object a manifest read for a cluster holds."""
