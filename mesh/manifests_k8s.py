"""Kubernetes core objects (Namespace, ConfigMap, PVC, Service, Deployment) from manifests.

Each ``parse_*`` function takes the whole object as a :class:`Node` and its
identity, checks what Kubernetes would check, and rejects what the local mesh
cannot honour. Fields that only matter to a scheduler or a kubelet's resource
accounting (resources, affinity, tolerations, ...) are accepted and ignored.
"""

from __future__ import annotations

import re

from mesh.manifest_fields import Node
from mesh.model import (
    ConfigMap,
    Container,
    ContainerPort,
    Deployment,
    EnvFromSource,
    EnvVar,
    Namespace,
    ObjectRef,
    PersistentVolumeClaim,
    Probe,
    Service,
    ServicePort,
    Volume,
    VolumeMount,
)

__all__ = [
    "check_dns_label",
    "parse_config_map",
    "parse_deployment",
    "parse_namespace",
    "parse_pvc",
    "parse_service",
]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

# Accepted and ignored: they place or limit pods, they do not change what a pod serves.
_POD_SPEC_IGNORED = {
    "affinity",
    "automountServiceAccountToken",
    "dnsPolicy",
    "enableServiceLinks",
    "imagePullSecrets",
    "nodeSelector",
    "priorityClassName",
    "restartPolicy",
    "schedulerName",
    "securityContext",
    "serviceAccount",
    "serviceAccountName",
    "terminationGracePeriodSeconds",
    "tolerations",
    "topologySpreadConstraints",
}
_CONTAINER_IGNORED = {
    "imagePullPolicy",
    "livenessProbe",
    "resources",
    "securityContext",
    "startupProbe",
    "stdin",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "tty",
}


def check_dns_label(value: str) -> str:
    """Why ``value`` is not an RFC 1123 label (namespace, port and subset names), or ""."""
    if len(value) > 63:
        return "at most 63 characters"
    if not _DNS_LABEL.match(value):
        return "lower-case alphanumerics or '-', starting and ending with an alphanumeric"
    return ""


def parse_namespace(root: Node, ref: ObjectRef, source: str) -> Namespace:
    root.only({"apiVersion", "kind", "metadata"}, ignored={"spec", "status"})
    labels = _metadata_labels(root)
    return Namespace(ref=ref, source=source, raw=root.as_map(), labels=labels)


def parse_config_map(root: Node, ref: ObjectRef, source: str) -> ConfigMap:
    root.only(
        {"apiVersion", "kind", "metadata", "data"},
        ignored={"immutable"},
        unsupported={"binaryData": "the local mesh passes ConfigMap values as text only"},
    )
    data: dict[str, str] = {}
    node = root.get("data")
    for key, child in node.items() if node else ():
        if not _CONFIG_KEY.match(key) or len(key) > 253:
            child.fail("invalid key: alphanumerics, '-', '_' or '.', at most 253 characters")
        data[key] = child.as_str(empty=True)
    return ConfigMap(ref=ref, source=source, raw=root.as_map(), data=data)


def parse_pvc(root: Node, ref: ObjectRef, source: str) -> PersistentVolumeClaim:
    # The local mesh maps every claim to its model store; size and access modes do not apply.
    root.only({"apiVersion", "kind", "metadata"}, ignored={"spec", "status"})
    return PersistentVolumeClaim(ref=ref, source=source, raw=root.as_map())


# --- Service ---------------------------------------------------------------------------


def parse_service(root: Node, ref: ObjectRef, source: str) -> Service:
    root.only({"apiVersion", "kind", "metadata", "spec"}, ignored={"status"})
    spec = root.req("spec")
    spec.only(
        {"selector", "ports", "type"},
        ignored={
            "allocateLoadBalancerNodePorts",
            "clusterIP",
            "clusterIPs",
            "externalTrafficPolicy",
            "healthCheckNodePort",
            "internalTrafficPolicy",
            "ipFamilies",
            "ipFamilyPolicy",
            "loadBalancerClass",
            "loadBalancerIP",
            "loadBalancerSourceRanges",
            "sessionAffinity",
            "sessionAffinityConfig",
        },
        unsupported={
            "externalName": "ExternalName Services have no endpoints in the local mesh",
            "externalIPs": "the local mesh reaches Services through the ingress only",
            "publishNotReadyAddresses": "the local mesh routes to ready pods only",
        },
    )
    service_type = spec.get("type")
    if service_type and service_type.as_str() not in ("ClusterIP", "NodePort", "LoadBalancer"):
        service_type.fail(
            f"Service type {service_type.value!r} is not supported "
            "(supported: ClusterIP, NodePort, LoadBalancer)"
        )
    cluster_ip = spec.get("clusterIP")
    if cluster_ip and cluster_ip.value == "None":
        cluster_ip.fail("headless Services (clusterIP: None) are not supported by the local mesh")
    selector = spec.get("selector")
    ports = tuple(_service_port(node) for node in spec.req("ports").as_list())
    _check_service_ports(spec.req("ports"), ports)
    return Service(
        ref=ref,
        source=source,
        raw=root.as_map(),
        selector=selector.labels() if selector else {},
        ports=ports,
    )


def _service_port(node: Node) -> ServicePort:
    node.only({"port", "targetPort", "name", "protocol", "appProtocol"}, ignored={"nodePort"})
    port = node.req("port").as_int(1, 65535)
    target = node.get("targetPort")
    target_port: int | str = port
    if target is not None:
        target_port = _port_reference(target)
    protocol = node.get("protocol")
    if protocol and protocol.as_str() != "TCP":
        protocol.fail(f"protocol {protocol.value!r} is not supported (the mesh routes TCP only)")
    name = node.get("name")
    app_protocol = node.get("appProtocol")
    return ServicePort(
        port=port,
        target_port=target_port,
        name=name.as_str() if name else "",
        app_protocol=app_protocol.as_str() if app_protocol else "",
    )


def _check_service_ports(node: Node, ports: tuple[ServicePort, ...]) -> None:
    items = node.as_list()
    if not ports:
        node.fail("a Service needs at least one port")
    seen_numbers: set[int] = set()
    seen_names: set[str] = set()
    for item, port in zip(items, ports, strict=True):
        if len(ports) > 1 and not port.name:
            item.fail("name is required when a Service has more than one port")
        if port.name:
            problem = check_dns_label(port.name)
            if problem:
                item.req("name").fail(f"invalid port name: {problem}")
        if port.port in seen_numbers:
            item.req("port").fail(f"duplicate port {port.port}")
        if port.name and port.name in seen_names:
            item.req("name").fail(f"duplicate port name {port.name!r}")
        seen_numbers.add(port.port)
        seen_names.add(port.name)


def _port_reference(node: Node) -> int | str:
    """A port number, or an IANA service name naming a container port."""
    if isinstance(node.value, str):
        name = node.value
        if len(name) > 15 or not _PORT_NAME.match(name) or not re.search("[a-z]", name):
            node.fail(
                f"invalid port name {name!r}: at most 15 lower-case alphanumerics or '-', "
                "with at least one letter"
            )
        return name
    return node.as_int(1, 65535)


# --- Deployment ------------------------------------------------------------------------


def parse_deployment(root: Node, ref: ObjectRef, source: str) -> Deployment:
    root.only({"apiVersion", "kind", "metadata", "spec"}, ignored={"status"})
    labels = _metadata_labels(root)
    spec = root.req("spec")
    spec.only(
        {"replicas", "selector", "template"},
        ignored={
            "minReadySeconds",
            "paused",
            "progressDeadlineSeconds",
            "revisionHistoryLimit",
            "strategy",
        },
    )
    replicas = spec.get("replicas")
    selector_node = spec.req("selector")
    selector_node.only(
        {"matchLabels"},
        unsupported={"matchExpressions": "the local mesh selects pods by matchLabels only"},
    )
    selector = selector_node.req("matchLabels").labels()
    if not selector:
        selector_node.req("matchLabels").fail("must select at least one label")
    template = spec.req("template")
    template.only({"metadata", "spec"})
    pod_labels = _template_labels(template)
    for key, value in selector.items():
        if pod_labels.get(key) != value:
            template.req("metadata").req("labels").fail(
                f"selector does not match template labels: spec.selector.matchLabels "
                f"has {key}={value}, the template has {key}={pod_labels.get(key)!r}"
            )
    pod_spec = template.req("spec")
    pod_spec.only(
        {"containers", "volumes"},
        ignored=_POD_SPEC_IGNORED,
        unsupported={
            "initContainers": "the local mesh starts each container's server directly",
            "hostNetwork": "local pods always listen on loopback",
        },
    )
    volumes = _volumes(pod_spec.get("volumes"))
    containers = _containers(pod_spec.req("containers"), {v.name for v in volumes})
    return Deployment(
        ref=ref,
        source=source,
        raw=root.as_map(),
        labels=labels,
        replicas=replicas.as_int(0, 1000) if replicas else 1,
        selector=selector,
        pod_labels=pod_labels,
        containers=containers,
        volumes=volumes,
    )


def _template_labels(template: Node) -> dict[str, str]:
    metadata = template.req("metadata")
    metadata.only({"labels"}, ignored={"annotations", "name", "namespace", "creationTimestamp"})
    return metadata.req("labels").labels()


def _metadata_labels(root: Node) -> dict[str, str]:
    labels = root.req("metadata").get("labels")
    return labels.labels() if labels else {}


def _volumes(node: Node | None) -> tuple[Volume, ...]:
    volumes: list[Volume] = []
    for item in node.as_list() if node else ():
        volume = _volume(item)
        if any(v.name == volume.name for v in volumes):
            item.req("name").fail(f"duplicate volume name {volume.name!r}")
        volumes.append(volume)
    return tuple(volumes)


def _volume(item: Node) -> Volume:
    sources = ("persistentVolumeClaim", "hostPath", "emptyDir", "configMap")
    item.only({"name", *sources})
    name = item.req("name").as_str()
    present = [key for key in sources if key in item.as_map()]
    if len(present) != 1:
        item.fail(f"a volume needs exactly one source (supported: {', '.join(sources)})")
    kind = present[0]
    source = item.req(kind) if kind != "emptyDir" else item.get(kind)
    reference = ""
    if kind == "persistentVolumeClaim" and source is not None:
        source.only({"claimName", "readOnly"})
        reference = source.req("claimName").as_str()
    elif kind == "hostPath" and source is not None:
        source.only({"path", "type"})
        reference = source.req("path").as_str()
    elif kind == "configMap" and source is not None:
        source.only(
            {"name", "optional"},
            ignored={"defaultMode"},
            unsupported={"items": "the local mesh mounts a ConfigMap's keys as they are"},
        )
        reference = source.req("name").as_str()
    elif source is not None:
        source.only(set(), ignored={"medium", "sizeLimit"})
    return Volume(name=name, kind=kind, reference=reference)  # type: ignore[arg-type]


def _containers(node: Node, volume_names: set[str]) -> tuple[Container, ...]:
    items = node.as_list()
    if not items:
        node.fail("a pod needs at least one container")
    containers: list[Container] = []
    for item in items:
        container = _container(item, volume_names)
        if any(c.name == container.name for c in containers):
            item.req("name").fail(f"duplicate container name {container.name!r}")
        containers.append(container)
    return tuple(containers)


def _container(item: Node, volume_names: set[str]) -> Container:
    item.only(
        {
            "name",
            "image",
            "command",
            "args",
            "env",
            "envFrom",
            "ports",
            "readinessProbe",
            "volumeMounts",
        },
        ignored=_CONTAINER_IGNORED,
        unsupported={
            "workingDir": "the local mesh runs the server from its own directory",
            "lifecycle": "the local mesh runs no lifecycle hooks",
            "volumeDevices": "block devices are not available locally",
        },
    )
    name_node = item.req("name")
    name = name_node.as_str()
    problem = check_dns_label(name)
    if problem:
        name_node.fail(f"invalid container name: {problem}")
    command, args = item.get("command"), item.get("args")
    ports = _container_ports(item.get("ports"))
    probe = item.get("readinessProbe")
    return Container(
        name=name,
        image=item.req("image").as_str(),
        command=command.str_list() if command else (),
        args=args.str_list() if args else (),
        env=_env(item.get("env")),
        env_from=_env_from(item.get("envFrom")),
        ports=ports,
        readiness_probe=_probe(probe, ports) if probe else None,
        volume_mounts=_volume_mounts(item.get("volumeMounts"), volume_names),
    )


def _container_ports(node: Node | None) -> tuple[ContainerPort, ...]:
    ports: list[ContainerPort] = []
    for item in node.as_list() if node else ():
        item.only({"containerPort", "name", "protocol"}, ignored={"hostIP", "hostPort"})
        number = item.req("containerPort").as_int(1, 65535)
        name_node = item.get("name")
        name = ""
        if name_node is not None:
            name_value = _port_reference(name_node)
            if not isinstance(name_value, str):
                name_node.fail("a port name must be a string")
            name = name_value
        protocol = item.get("protocol")
        if protocol and protocol.as_str() != "TCP":
            protocol.fail(f"protocol {protocol.value!r} is not supported (TCP only)")
        if any(p.container_port == number for p in ports):
            item.req("containerPort").fail(f"duplicate containerPort {number}")
        if name and any(p.name == name for p in ports):
            item.req("name").fail(f"duplicate port name {name!r}")
        ports.append(ContainerPort(container_port=number, name=name))
    return tuple(ports)


def _env(node: Node | None) -> tuple[EnvVar, ...]:
    out: list[EnvVar] = []
    for item in node.as_list() if node else ():
        item.only({"name", "value", "valueFrom"})
        name_node = item.req("name")
        name = name_node.as_str()
        if not _ENV_NAME.match(name):
            name_node.fail(f"invalid environment variable name {name!r}")
        value, value_from = item.get("value"), item.get("valueFrom")
        if value_from is None:
            out.append(EnvVar(name=name, value=value.as_str(empty=True) if value else ""))
            continue
        if value is not None:
            item.fail("value and valueFrom are mutually exclusive")
        value_from.only(
            {"configMapKeyRef"},
            unsupported={
                "secretKeyRef": "Secrets are not part of the local mesh",
                "fieldRef": "downward API fields are not available locally",
                "resourceFieldRef": "resource fields are not available locally",
            },
        )
        ref = value_from.req("configMapKeyRef")
        ref.only({"name", "key", "optional"})
        optional = ref.get("optional")
        out.append(
            EnvVar(
                name=name,
                config_map=ref.req("name").as_str(),
                config_map_key=ref.req("key").as_str(),
                optional=optional.as_bool() if optional else False,
            )
        )
    return tuple(out)


def _env_from(node: Node | None) -> tuple[EnvFromSource, ...]:
    out: list[EnvFromSource] = []
    for item in node.as_list() if node else ():
        item.only(
            {"configMapRef", "prefix"},
            unsupported={"secretRef": "Secrets are not part of the local mesh"},
        )
        ref = item.req("configMapRef")
        ref.only({"name", "optional"})
        prefix, optional = item.get("prefix"), ref.get("optional")
        out.append(
            EnvFromSource(
                config_map=ref.req("name").as_str(),
                prefix=prefix.as_str(empty=True) if prefix else "",
                optional=optional.as_bool() if optional else False,
            )
        )
    return tuple(out)


def _probe(node: Node, ports: tuple[ContainerPort, ...]) -> Probe:
    handlers = ("tcpSocket", "httpGet", "grpc")
    timing = ("initialDelaySeconds", "periodSeconds", "timeoutSeconds", "failureThreshold")
    node.only(
        {*handlers, *timing},
        ignored={"successThreshold", "terminationGracePeriodSeconds"},
        unsupported={
            "exec": "the local mesh probes over the network only (tcpSocket, httpGet, grpc)"
        },
    )
    present = [key for key in handlers if key in node.as_map()]
    if len(present) != 1:
        node.fail(f"a probe needs exactly one handler (supported: {', '.join(handlers)})")
    kind = present[0]
    handler = node.req(kind)
    if kind == "httpGet":
        handler.only(
            {"port", "path", "scheme"}, unsupported={"host": "probes go to the pod itself"}
        )
        scheme = handler.get("scheme")
        if scheme and scheme.as_str() != "HTTP":
            scheme.fail("only HTTP probes are supported")
    else:
        handler.only(
            {"port"},
            unsupported={"host": "probes go to the pod itself", "service": "not supported"},
        )
    port_node = handler.req("port")
    port = _port_reference(port_node)
    if isinstance(port, str) and all(p.name != port for p in ports):
        port_node.fail(f"the container has no port named {port!r}")
    path = handler.get("path")
    values = {key: node.get(key) for key in timing}
    return Probe(
        kind=kind,  # type: ignore[arg-type]
        port=port,
        path=path.as_str() if path else "/",
        initial_delay_seconds=_opt_int(values["initialDelaySeconds"], 0, 0),
        period_seconds=_opt_int(values["periodSeconds"], 10, 1),
        timeout_seconds=_opt_int(values["timeoutSeconds"], 1, 1),
        failure_threshold=_opt_int(values["failureThreshold"], 3, 1),
    )


def _opt_int(node: Node | None, default: int, minimum: int) -> int:
    return node.as_int(minimum) if node else default


def _volume_mounts(node: Node | None, volume_names: set[str]) -> tuple[VolumeMount, ...]:
    out: list[VolumeMount] = []
    for item in node.as_list() if node else ():
        item.only({"name", "mountPath", "readOnly", "subPath"}, ignored={"mountPropagation"})
        name_node = item.req("name")
        name = name_node.as_str()
        if name not in volume_names:
            name_node.fail(f"no volume named {name!r} in spec.template.spec.volumes")
        read_only, sub_path = item.get("readOnly"), item.get("subPath")
        out.append(
            VolumeMount(
                name=name,
                mount_path=item.req("mountPath").as_str(),
                read_only=read_only.as_bool() if read_only else False,
                sub_path=sub_path.as_str(empty=True) if sub_path else "",
            )
        )
    return tuple(out)
