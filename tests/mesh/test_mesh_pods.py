"""Deployments → pod plans: env resolution, $(VAR) expansion and the image's entrypoint."""

from __future__ import annotations

import dataclasses

import pytest

from canary.errors import ManifestError, MeshError
from mesh.model import (
    ConfigMap,
    Container,
    ContainerPort,
    Deployment,
    EnvFromSource,
    EnvVar,
    ObjectRef,
    Volume,
    VolumeMount,
)
from mesh.pods import expand_vars, listening_ports, plan_pods


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("--model_name=$(MODEL_NAME)", {"MODEL_NAME": "m"}, "--model_name=m"),
        ("$(A)/$(B)", {"A": "x", "B": "y"}, "x/y"),
        ("$(UNDEFINED)", {}, "$(UNDEFINED)"),  # left as is, like the kubelet
        ("$$(A)", {"A": "x"}, "$(A)"),  # escaped
        ("$$$(A)", {"A": "x"}, "$x"),
        ("cost $5", {}, "cost $5"),
        ("$(A", {"A": "x"}, "$(A"),
    ],
)
def test_expand_vars_like_the_kubelet(text: str, env: dict[str, str], expected: str) -> None:
    assert expand_vars(text, env) == expected


def _cm(name: str, data: dict[str, str]) -> ConfigMap:
    return ConfigMap(ref=ObjectRef("ConfigMap", "ns", name), source="cm.yaml", raw={}, data=data)


MODELS = Volume("models", "persistentVolumeClaim", "model-store")


def _deployment(
    container: Container, replicas: int = 1, volumes: tuple[Volume, ...] = (MODELS,)
) -> Deployment:
    return Deployment(
        ref=ObjectRef("Deployment", "ns", "web"),
        source="d.yaml",
        raw={},
        labels={},
        replicas=replicas,
        selector={"app": "a"},
        pod_labels={"app": "a", "version": "v1"},
        containers=(container,),
        volumes=volumes,
    )


def _container(**kw: object) -> Container:
    base: dict[str, object] = {
        "name": "tf",
        "image": "tensorflow/serving:2.21.0",
        "args": ("--model_name=$(MODEL_NAME)", "--model_base_path=$(MODEL_PATH)"),
        "env_from": (EnvFromSource("cfg"),),
        "ports": (ContainerPort(8501, "http"), ContainerPort(8500, "grpc")),
        "volume_mounts": (VolumeMount("models", "/models"),),
    }
    base.update(kw)
    return Container(**base)  # type: ignore[arg-type]


def test_entrypoint_then_args_with_configmap_env() -> None:
    cm = _cm("cfg", {"MODEL_NAME": "image_classifier", "MODEL_PATH": "/models/resnet50", "bad key": "x"})
    [pod] = plan_pods([cm, _deployment(_container())])
    assert pod.server_args == (
        "--port=8500",
        "--rest_api_port=8501",
        "--model_name=image_classifier",
        "--model_base_path=/models/image_classifier",
        "--model_name=image_classifier",
        "--model_base_path=/models/resnet50",
    )
    assert "bad key" not in pod.env
    assert pod.container_ports == {"http": 8501, "grpc": 8500}
    assert listening_ports(pod.server_args) == (8500, 8501)


def test_env_overrides_env_from_and_sees_earlier_values() -> None:
    cm = _cm("cfg", {"MODEL_NAME": "from-cm", "MODEL_PATH": "/models/p"})
    container = _container(env=(EnvVar("MODEL_NAME", value="x-$(MODEL_PATH)"),))
    [pod] = plan_pods([cm, _deployment(container)])
    assert pod.env["MODEL_NAME"] == "x-/models/p"
    assert pod.server_args[-2] == "--model_name=x-/models/p"


def test_replicas_and_the_pod_template_hash() -> None:
    cm_a = _cm("cfg", {"MODEL_NAME": "a", "MODEL_PATH": "/models/a"})
    cm_b = _cm("cfg", {"MODEL_NAME": "b", "MODEL_PATH": "/models/a"})
    d = _deployment(_container(), replicas=2)
    pods_a = plan_pods([cm_a, d])
    assert [p.name.rsplit("-", 1)[1] for p in pods_a] == ["0", "1"]
    # As on a cluster, a ConfigMap change does not replace running pods ...
    assert plan_pods([cm_b, d])[0].template_hash == pods_a[0].template_hash
    # ... but any change to the pod template does.
    changed = dataclasses.replace(d, raw={"spec": {"template": {"spec": {"containers": [{"resources": 1}]}}}})
    assert plan_pods([cm_a, changed])[0].template_hash != pods_a[0].template_hash


def test_missing_configmap_is_a_clear_error() -> None:
    with pytest.raises(MeshError, match="ConfigMap ns/cfg"):
        plan_pods([_deployment(_container())])


def test_optional_missing_configmap_is_fine() -> None:
    container = _container(
        env_from=(EnvFromSource("cfg", optional=True),),
        args=("--model_name=$(MODEL_NAME)", "--model_base_path=/models/m"),
    )
    [pod] = plan_pods([_deployment(container)])
    assert pod.server_args[-2] == "--model_name=$(MODEL_NAME)"


@pytest.mark.parametrize(
    ("container", "field"),
    [
        (_container(image="nginx:1.27"), "image"),
        (_container(command=("/bin/sh", "-c")), "command"),
        (_container(volume_mounts=(VolumeMount("missing", "/models"),)), "volumeMounts"),
    ],
)
def test_what_the_local_mesh_cannot_run_names_the_field(container: Container, field: str) -> None:
    with pytest.raises(ManifestError) as info:
        plan_pods([_cm("cfg", {}), _deployment(container)])
    assert info.value.file == "d.yaml"
    assert info.value.obj == "Deployment/ns/web"
    assert field in info.value.field


def test_mounts_resolve_to_volumes() -> None:
    [pod] = plan_pods([_cm("cfg", {"MODEL_PATH": "/models/m"}), _deployment(_container())])
    assert pod.mounts == {"/models": MODELS}


@pytest.mark.parametrize(
    ("args", "ports"),
    [
        (["--port=9000"], (9000, 0)),
        (["--port=8500", "--rest_api_port=8501", "--rest_api_port=9001"], (8500, 9001)),
        ([], (8500, 0)),
    ],
)
def test_listening_ports_last_flag_wins(args: list[str], ports: tuple[int, int]) -> None:
    assert listening_ports(args) == ports
