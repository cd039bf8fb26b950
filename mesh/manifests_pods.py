"""Deployments and their pod templates (containers, env, probes, volumes) from manifests.

Fields that only matter to a scheduler or a kubelet's resource accounting
(resources, affinity, tolerations, ...) are accepted and ignored. Fields that
change what a pod runs or serves and that the local mesh does not reproduce
(init containers, exec probes, Secrets, the downward API, ...) are refused for
the local target and accepted, unmodelled, for the cluster target (see
:class:`~mesh.manifest_fields.Target`): the model then holds what the local
mesh would run, the raw document everything the cluster gets.

For the local target, what a pod may reach is confined too (see
:mod:`mesh.pod_confinement`): env names that change how the local mesh runs its
processes are refused, and mount and hostPath paths must be absolute without
``..``; :func:`mesh.pods.plan_pods` checks the rest (hostPaths inside the model
store, the server's path flags under the container's mounts).
"""

from __future__ import annotations

import re

from mesh.manifest_fields import Node
from mesh.manifests_k8s import check_dns_label, metadata_labels, port_protocol, port_reference
from mesh.model import (
    Container,
    ContainerPort,
    Deployment,
    EnvFromSource,
    EnvVar,
    ObjectRef,
    Probe,
    Volume,
    VolumeMount,
)
from mesh.pod_confinement import (
    env_name_problem,
    env_prefix_problem,
    host_path_shape_problem,
    mount_path_problem,
)

__all__ = ["parse_deployment"]

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_NOT_LOCAL = "not implemented by the local mesh"

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
# PodSpec fields Kubernetes defines that the local mesh does not implement.
_POD_SPEC_UNSUPPORTED = {
    "initContainers": "the local mesh starts each container's server directly",
    "hostNetwork": "local pods always listen on loopback",
    **{
        key: _NOT_LOCAL
        for key in (
            "activeDeadlineSeconds",
            "dnsConfig",
            "ephemeralContainers",
            "hostAliases",
            "hostIPC",
            "hostPID",
            "hostUsers",
            "hostname",
            "hostnameOverride",
            "nodeName",
            "os",
            "overhead",
            "preemptionPolicy",
            "priority",
            "readinessGates",
            "resourceClaims",
            "resources",
            "runtimeClassName",
            "schedulingGates",
            "setHostnameAsFQDN",
            "shareProcessNamespace",
            "subdomain",
        )
    },
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
_CONTAINER_UNSUPPORTED = {
    "workingDir": "the local mesh runs the server from its own directory",
    "lifecycle": "the local mesh runs no lifecycle hooks",
    "volumeDevices": "block devices are not available locally",
    "resizePolicy": _NOT_LOCAL,
    "stdinOnce": _NOT_LOCAL,
}
_LOCAL_VOLUME_SOURCES = ("persistentVolumeClaim", "hostPath", "emptyDir", "configMap")
# Every other volume source Kubernetes defines.
_CLUSTER_VOLUME_SOURCES = (
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "csi",
    "downwardAPI",
    "ephemeral",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "gitRepo",
    "glusterfs",
    "image",
    "iscsi",
    "nfs",
    "photonPersistentDisk",
    "portworxVolume",
    "projected",
    "quobyte",
    "rbd",
    "scaleIO",
    "secret",
    "storageos",
    "vsphereVolume",
)
_PROBE_HANDLERS = ("tcpSocket", "httpGet", "grpc")  # the local mesh's; + exec


def parse_deployment(root: Node, ref: ObjectRef, source: str) -> Deployment:
    root.only({"apiVersion", "kind", "metadata", "spec"}, ignored={"status"})
    labels = metadata_labels(root)
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
    selector = _selector(spec.req("selector"))
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
        {"containers", "volumes"}, ignored=_POD_SPEC_IGNORED, unsupported=_POD_SPEC_UNSUPPORTED
    )
    volumes, volume_names = _volumes(pod_spec.get("volumes"))
    containers = _containers(pod_spec.req("containers"), volume_names)
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


def _selector(node: Node) -> dict[str, str]:
    """``matchLabels``; a cluster also takes ``matchExpressions`` (not modelled)."""
    node.only(
        {"matchLabels"},
        unsupported={"matchExpressions": "the local mesh selects pods by matchLabels only"},
    )
    match_labels = node.req("matchLabels") if node.local else node.get("matchLabels")
    selector = match_labels.labels() if match_labels else {}
    if not selector and (node.local or node.get("matchExpressions") is None):
        (match_labels or node).fail("must select at least one label")
    return selector


def _template_labels(template: Node) -> dict[str, str]:
    metadata = template.req("metadata")
    metadata.only(
        {"labels"},
        ignored={"annotations", "name", "namespace", "creationTimestamp"},
        unsupported={key: _NOT_LOCAL for key in ("generateName", "finalizers", "ownerReferences")},
    )
    return metadata.req("labels").labels()


def _volumes(node: Node | None) -> tuple[tuple[Volume, ...], set[str]]:
    """The volumes the local mesh models, and the names of all of them (for mounts)."""
    volumes: list[Volume] = []
    names: set[str] = set()
    for item in node.as_list() if node else ():
        name, volume = _volume(item)
        if name in names:
            item.req("name").fail(f"duplicate volume name {name!r}")
        names.add(name)
        if volume is not None:
            volumes.append(volume)
    return tuple(volumes), names


def _volume(item: Node) -> tuple[str, Volume | None]:
    sources = _LOCAL_VOLUME_SOURCES
    item.only(
        {"name", *sources},
        unsupported={
            key: f"the local mesh mounts {', '.join(sources)} volumes only"
            for key in _CLUSTER_VOLUME_SOURCES
        },
    )
    name = item.req("name").as_str()
    known = sources if item.local else sources + _CLUSTER_VOLUME_SOURCES
    present = [key for key in known if key in item.as_map()]
    if len(present) != 1:
        item.fail(f"a volume needs exactly one source (supported: {', '.join(sources)})")
    kind = present[0]
    if kind not in sources:
        return name, None  # a cluster's volume source, left to the API server
    source = item.req(kind) if kind != "emptyDir" else item.get(kind)
    reference = ""
    if kind == "persistentVolumeClaim" and source is not None:
        source.only({"claimName", "readOnly"})
        reference = source.req("claimName").as_str()
    elif kind == "hostPath" and source is not None:
        source.only({"path", "type"})
        path = source.req("path")
        reference = path.as_str()
        problem = host_path_shape_problem(reference)  # plan_pods checks it against the store
        if problem:
            path.refuse_locally(problem)
    elif kind == "configMap" and source is not None:
        source.only(
            {"name", "optional"},
            ignored={"defaultMode"},
            unsupported={"items": "the local mesh mounts a ConfigMap's keys as they are"},
        )
        reference = source.req("name").as_str()
    elif source is not None:
        source.only(set(), ignored={"medium", "sizeLimit"})
    return name, Volume(name=name, kind=kind, reference=reference)  # type: ignore[arg-type]


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
        unsupported=_CONTAINER_UNSUPPORTED,
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
            name_value = port_reference(name_node)
            if not isinstance(name_value, str):
                name_node.fail("a port name must be a string")
            name = name_value
        protocol = port_protocol(item.get("protocol"), "TCP only")
        if any(p.container_port == number and p.protocol == protocol for p in ports):
            item.req("containerPort").fail(f"duplicate containerPort {number}")
        if name and any(p.name == name for p in ports):
            item.req("name").fail(f"duplicate port name {name!r}")
        ports.append(ContainerPort(container_port=number, name=name, protocol=protocol))
    return tuple(ports)


def _one_of(node: Node, keys: tuple[str, ...], what: str) -> str:
    """The one key of ``keys`` that ``node`` has (Kubernetes' one-of fields)."""
    present = [key for key in keys if key in node.as_map()]
    if len(present) != 1:
        node.fail(f"{what} needs exactly one of {', '.join(keys)}")
    return present[0]


def _env(node: Node | None) -> tuple[EnvVar, ...]:
    out: list[EnvVar] = []
    for item in node.as_list() if node else ():
        item.only({"name", "value", "valueFrom"})
        name_node = item.req("name")
        name = name_node.as_str()
        if not _ENV_NAME.match(name):
            name_node.fail(f"invalid environment variable name {name!r}")
        problem = env_name_problem(name)
        if problem:
            name_node.refuse_locally(problem)
        value, value_from = item.get("value"), item.get("valueFrom")
        if value_from is None:
            out.append(EnvVar(name=name, value=value.as_str(empty=True) if value else ""))
            continue
        if value is not None:
            item.fail("value and valueFrom are mutually exclusive")
        unsupported = {
            "secretKeyRef": "Secrets are not part of the local mesh",
            "fieldRef": "downward API fields are not available locally",
            "resourceFieldRef": "resource fields are not available locally",
            "fileKeyRef": "environment files are not available locally",
        }
        value_from.only({"configMapKeyRef"}, unsupported=unsupported)
        if not value_from.local:
            sources = ("configMapKeyRef", *unsupported)
            if _one_of(value_from, sources, "valueFrom") != "configMapKeyRef":
                continue  # not modelled: the API server checks it
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
        if not item.local and _one_of(item, ("configMapRef", "secretRef"), "envFrom") != (
            "configMapRef"
        ):
            continue  # not modelled: the API server checks it
        ref = item.req("configMapRef")
        ref.only({"name", "optional"})
        prefix, optional = item.get("prefix"), ref.get("optional")
        problem = env_prefix_problem(prefix.as_str(empty=True)) if prefix else ""
        if prefix and problem:
            prefix.refuse_locally(problem)
        out.append(
            EnvFromSource(
                config_map=ref.req("name").as_str(),
                prefix=prefix.as_str(empty=True) if prefix else "",
                optional=optional.as_bool() if optional else False,
            )
        )
    return tuple(out)


def _probe(node: Node, ports: tuple[ContainerPort, ...]) -> Probe | None:
    """The readiness probe; None for a cluster's exec probe (not modelled)."""
    handlers = _PROBE_HANDLERS
    timing = ("initialDelaySeconds", "periodSeconds", "timeoutSeconds", "failureThreshold")
    node.only(
        {*handlers, *timing},
        ignored={"successThreshold", "terminationGracePeriodSeconds"},
        unsupported={
            "exec": "the local mesh probes over the network only (tcpSocket, httpGet, grpc)"
        },
    )
    known = handlers if node.local else (*handlers, "exec")
    present = [key for key in known if key in node.as_map()]
    if len(present) != 1:
        node.fail(f"a probe needs exactly one handler (supported: {', '.join(handlers)})")
    kind = present[0]
    handler = node.req(kind)
    if kind == "exec":
        handler.only({"command"})
        return None
    if kind == "httpGet":
        handler.only(
            {"port", "path", "scheme"},
            unsupported={
                "host": "probes go to the pod itself",
                "httpHeaders": "the local mesh's probes send no extra headers",
            },
        )
        scheme = handler.get("scheme")
        if scheme and scheme.as_str() != "HTTP":
            if scheme.value != "HTTPS":
                scheme.fail("the scheme is HTTP or HTTPS")
            scheme.refuse_locally("only HTTP probes are supported")
    elif kind == "tcpSocket":
        handler.only({"port"}, unsupported={"host": "probes go to the pod itself"})
    else:
        handler.only({"port"}, unsupported={"service": "not supported"})
    port_node = handler.req("port")
    port = port_reference(port_node)
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
        item.only(
            {"name", "mountPath", "readOnly", "subPath"},
            ignored={"mountPropagation"},
            unsupported={key: _NOT_LOCAL for key in ("recursiveReadOnly", "subPathExpr")},
        )
        name_node = item.req("name")
        name = name_node.as_str()
        if name not in volume_names:
            name_node.fail(f"no volume named {name!r} in spec.template.spec.volumes")
        read_only, sub_path = item.get("readOnly"), item.get("subPath")
        mount_path = item.req("mountPath")
        problem = mount_path_problem(mount_path.as_str())
        if problem:
            mount_path.refuse_locally(problem)
        out.append(
            VolumeMount(
                name=name,
                mount_path=mount_path.as_str(),
                read_only=read_only.as_bool() if read_only else False,
                sub_path=sub_path.as_str(empty=True) if sub_path else "",
            )
        )
    return tuple(out)
