"""Deployments → the processes a kubelet would start, as pure data.

``plan_pods`` turns each Deployment replica into a :class:`PodPlan`: the model
server's argv (the image's entrypoint followed by the container's own
``args``), its environment (``envFrom`` then ``env``, with ``$(VAR)``
expanded as the kubelet does), the volume mounts and the container ports. It
performs no I/O (but for resolving hostPaths against the model store): the
local backend decides host ports, starts and watches the processes.

It is also the last check before a pod starts: what is known only with the
whole set (the keys an envFrom ConfigMap sets, the server's flags once
``$(VAR)`` is expanded) and with the model store is confined here, as
:mod:`mesh.pod_confinement` says, raising :class:`ManifestError` naming the
file, the Deployment and the field.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from canary.errors import ManifestError, MeshError
from mesh.model import ConfigMap, Container, Deployment, MeshObject, Probe, Volume
from mesh.pod_confinement import (
    MAPPED_PATH_FLAGS,
    REFUSED_SERVER_FLAGS,
    container_path_problem,
    env_name_problem,
    host_path_problem,
    path_flag_values,
    surely_given_after,
)

__all__ = [
    "SUPPORTED_IMAGES",
    "PodPlan",
    "expand_vars",
    "listening_ports",
    "plan_pods",
]

# The one image the local mesh can run, and what its entrypoint does
# (tensorflow/serving's tf_serving_entrypoint.sh):
#   tensorflow_model_server --port=8500 --rest_api_port=8501 \
#     --model_name=${MODEL_NAME} --model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME} "$@"
SUPPORTED_IMAGES = ("tensorflow/serving", "docker.io/tensorflow/serving")
_IMAGE_ENV = {"MODEL_NAME": "model", "MODEL_BASE_PATH": "/models"}
_SERVER_BINARIES = ("tensorflow_model_server", "/usr/bin/tensorflow_model_server")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_VAR_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")
_CONTAINER = "spec.template.spec.containers[0]"  # plan_pods runs pods of one container only


@dataclass(frozen=True)
class PodPlan:
    """One pod of a Deployment, ready to be started by a backend."""

    namespace: str
    name: str  # <deployment>-<template hash>-<replica index>
    deployment: str
    labels: dict[str, str]
    container: str
    server_args: tuple[str, ...]  # TF Serving flags, entrypoint first then the container's args
    env: dict[str, str]
    mounts: dict[str, Volume]  # container mount path → the volume mounted there
    container_ports: dict[str, int]  # port name (or str(port)) → container port
    readiness_probe: Probe | None
    template_hash: str


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Expand ``$(VAR)`` references as the kubelet does.

    ``$$`` becomes ``$`` (so ``$$(VAR)`` stays literal) and references to
    undefined variables are left untouched.
    """

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR_REF.sub(sub, text)


def _container_env(
    deployment: Deployment, container: Container, config_maps: Mapping[tuple[str, str], ConfigMap]
) -> dict[str, str]:
    """envFrom first, then env in order (later entries see earlier ones)."""
    ns = deployment.ref.namespace
    env: dict[str, str] = {}
    for position, source in enumerate(container.env_from):
        cm = config_maps.get((ns, source.config_map))
        if cm is None:
            if source.optional:
                continue
            raise MeshError(
                f"{deployment.ref}: container {container.name!r} needs ConfigMap "
                f"{ns}/{source.config_map} (envFrom), which does not exist; apply it first "
                "(the kubelet would report CreateContainerConfigError)"
            )
        for key, value in cm.data.items():
            name = source.prefix + key
            if not _ENV_NAME.match(name):  # the kubelet skips invalid names
                continue
            problem = env_name_problem(name)
            if problem:
                raise ManifestError(
                    deployment.source,
                    str(deployment.ref),
                    f"{_CONTAINER}.envFrom[{position}]",
                    f"ConfigMap {ns}/{source.config_map} has the key {key!r}: {problem}",
                )
            env[name] = value
    for position, var in enumerate(container.env):
        problem = env_name_problem(var.name)  # refused when parsed too: this is the last check
        if problem:
            raise ManifestError(
                deployment.source, str(deployment.ref), f"{_CONTAINER}.env[{position}].name", problem
            )
        if var.value is not None:
            env[var.name] = expand_vars(var.value, env)
        elif var.config_map is not None:
            cm = config_maps.get((ns, var.config_map))
            if cm is None or var.config_map_key not in cm.data:
                if var.optional:
                    continue
                raise MeshError(
                    f"{deployment.ref}: env {var.name} refers to ConfigMap key "
                    f"{ns}/{var.config_map}[{var.config_map_key}], which does not exist; apply it first"
                )
            env[var.name] = cm.data[str(var.config_map_key)]
        else:
            env[var.name] = ""
    return env


def _image_name(image: str) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: name.rfind(":")]
    return name


def _server_args(
    deployment: Deployment, container: Container, env: Mapping[str, str]
) -> tuple[list[str], list[str], int]:
    """The server's argv, the field each argument comes from, and where the container's own
    arguments start (before them: the image entrypoint's defaults, or the command's)."""
    if _image_name(container.image) not in SUPPORTED_IMAGES:
        raise ManifestError(
            deployment.source,
            str(deployment.ref),
            f"{_CONTAINER}.image",
            f"the local mesh runs only the tensorflow/serving image, not {container.image!r}; "
            "use --kube for other images",
        )
    image_env = {**_IMAGE_ENV, **env}
    if container.command:
        if container.command[0] not in _SERVER_BINARIES:
            raise ManifestError(
                deployment.source,
                str(deployment.ref),
                f"{_CONTAINER}.command",
                f"the local mesh can run tensorflow_model_server only, not {container.command[0]!r}",
            )
        argv = [expand_vars(a, env) for a in container.command[1:]]
        fields = [f"{_CONTAINER}.command[{i}]" for i in range(1, len(container.command))]
        own = 0
    else:
        argv = [
            "--port=8500",
            "--rest_api_port=8501",
            f"--model_name={image_env['MODEL_NAME']}",
            f"--model_base_path={image_env['MODEL_BASE_PATH']}/{image_env['MODEL_NAME']}",
        ]
        fields = [f"{_CONTAINER}.env"] * len(argv)  # the entrypoint's, from MODEL_* variables
        own = len(argv)
    argv += [expand_vars(a, env) for a in container.args]
    fields += [f"{_CONTAINER}.args[{i}]" for i in range(len(container.args))]
    return argv, fields, own


def _check_server_paths(
    deployment: Deployment, container: Container, argv: list[str], fields: list[str], own: int
) -> None:
    """Every path the server's flags can name lies under one of the container's mounts
    (and so in its volume map); a flag the local mesh cannot confine is refused."""
    mount_paths = [m.mount_path for m in container.volume_mounts]
    for index, flag, value in path_flag_values(argv, (*MAPPED_PATH_FLAGS, *REFUSED_SERVER_FLAGS)):
        if index < own and surely_given_after(argv, flag, own):
            continue  # the entrypoint's default, replaced by the container's own args
        if flag in REFUSED_SERVER_FLAGS:
            problem = f"not supported on the local mesh: {REFUSED_SERVER_FLAGS[flag]}" if value else ""
        else:
            problem = container_path_problem(value, mount_paths)
        if problem:
            given = (
                "the image's entrypoint gives --model_base_path=$(MODEL_BASE_PATH)/$(MODEL_NAME)"
                if index < own and not container.command
                else f"--{flag}"
            )
            raise ManifestError(
                deployment.source, str(deployment.ref), fields[index], f"{given}: {problem}"
            )


def _check_host_paths(deployment: Deployment, store: Path | None) -> None:
    for position, volume in enumerate(deployment.volumes):
        if volume.kind != "hostPath":
            continue
        problem = host_path_problem(volume.reference, store)
        if problem:
            raise ManifestError(
                deployment.source,
                str(deployment.ref),
                f"spec.template.spec.volumes[{position}].hostPath.path",
                problem,
            )


def listening_ports(server_args: Sequence[str]) -> tuple[int, int]:
    """The (gRPC, REST) ports the server will listen on: the last flag of each wins."""
    grpc, rest = 8500, 0
    for arg in server_args:
        key, _, value = arg.partition("=")
        if key in ("--port", "-port") and value.isdigit():
            grpc = int(value)
        elif key in ("--rest_api_port", "-rest_api_port") and value.isdigit():
            rest = int(value)
    return grpc, rest


def _template_hash(deployment: Deployment) -> str:
    """Kubernetes' pod-template-hash: changes exactly when the pod template does.

    As on a cluster, a changed ConfigMap does not replace running pods; its
    values reach a pod when the pod (re)starts.
    """
    spec = deployment.raw.get("spec")
    template = spec.get("template") if isinstance(spec, dict) else None
    canonical = orjson.dumps(
        template if template is not None else repr((deployment.pod_labels, deployment.containers)),
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()[:10]


def plan_pods(objects: Sequence[MeshObject], *, store: Path | None = None) -> list[PodPlan]:
    """Every pod the Deployments in ``objects`` ask for, sorted by namespace and name.

    Raises :class:`ManifestError` for what a local pod may not do (see
    :mod:`mesh.pod_confinement`): a reserved name set through envFrom, a server path
    outside the container's mounts, a hostPath volume outside the model ``store``
    (every hostPath when the store is not given).
    """
    config_maps = {(o.ref.namespace, o.ref.name): o for o in objects if isinstance(o, ConfigMap)}
    pods: list[PodPlan] = []
    for deployment in (o for o in objects if isinstance(o, Deployment)):
        if len(deployment.containers) != 1:
            raise ManifestError(
                deployment.source,
                str(deployment.ref),
                "spec.template.spec.containers",
                "the local mesh runs pods with exactly one container (the model server); "
                "Istio's sidecar is the mesh itself",
            )
        container = deployment.containers[0]
        env = _container_env(deployment, container, config_maps)
        argv, fields, own = _server_args(deployment, container, env)
        volumes = {v.name: v for v in deployment.volumes}
        mounts: dict[str, Volume] = {}
        for mount in container.volume_mounts:
            if mount.name not in volumes:
                raise ManifestError(
                    deployment.source,
                    str(deployment.ref),
                    f"{_CONTAINER}.volumeMounts",
                    f"volume {mount.name!r} is mounted but not declared in spec.template.spec.volumes",
                )
            mounts[mount.mount_path] = volumes[mount.name]
        _check_host_paths(deployment, store)
        _check_server_paths(deployment, container, argv, fields, own)
        args = tuple(argv)
        template_hash = _template_hash(deployment)
        ports = {(p.name or str(p.container_port)): p.container_port for p in container.ports}
        for index in range(deployment.replicas):
            pods.append(
                PodPlan(
                    namespace=deployment.ref.namespace,
                    name=f"{deployment.ref.name}-{template_hash}-{index}",
                    deployment=deployment.ref.name,
                    labels=dict(deployment.pod_labels),
                    container=container.name,
                    server_args=args,
                    env=env,
                    mounts=mounts,
                    container_ports=ports,
                    readiness_probe=container.readiness_probe,
                    template_hash=template_hash,
                )
            )
    return sorted(pods, key=lambda p: (p.namespace, p.name))
