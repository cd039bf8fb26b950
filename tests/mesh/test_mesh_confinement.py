"""What a local pod may reach, checked before any pod starts (mesh/pod_confinement.py).

What the parser alone can judge (env names, path shapes) is in the tables of
test_mesh_validation.py and test_mesh_targets.py. Here is what needs the whole
set and the model store: ConfigMap keys an envFrom sets, the server's path flags
once ``$(VAR)`` is expanded, hostPaths against the store. Each case edits the
walkthrough's manifests and states where the error must point; a refused apply
starts nothing and changes nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from canary.errors import ManifestError
from mesh.local import procs
from mesh.local.backend import LocalMesh
from mesh.local.state import MeshHome, MeshState
from mesh.manifests import apply
from mesh.pod_confinement import (
    MAPPED_PATH_FLAGS,
    REFUSED_SERVER_FLAGS,
    path_flag_values,
    surely_given_after,
)
from mesh.pods import PodPlan, plan_pods
from tests.mesh.docs import edit, manifest, parse
from tests.mesh.scenarios import MANIFESTS, base_objects

DEP_FILE, DEP = "base/deployment-resnet50.yaml", "Deployment/tf-serving/image-classifier-resnet50"
C = "spec.template.spec.containers[0]"
VOLUME = "spec.template.spec.volumes[0]"
STORE = "{store}"  # stands for the test's model store in a value

Edits = dict[str, object]

# (edits of the resnet50 Deployment, edits of its ConfigMap's data, field named, message
# fragment); an empty field: valid, the pods are planned.
CASES: list[tuple[Edits, Edits, str, str]] = [
    # --- hostPath volumes: inside the model store, symbolic links resolved
    (
        {VOLUME: {"name": "models", "hostPath": {"path": "/etc"}}},
        {},
        f"{VOLUME}.hostPath.path",
        "/etc is outside the model store",
    ),
    ({VOLUME: {"name": "models", "hostPath": {"path": STORE}}}, {}, "", ""),
    ({VOLUME: {"name": "models", "hostPath": {"path": f"{STORE}/resnet50"}}}, {}, "", ""),
    # --- the server's path flags: under one of the container's mounts, no '..'
    (
        {f"{C}.args[1]": "--model_base_path=/models/../../../etc"},
        {},
        f"{C}.args[1]",
        "--model_base_path: the path '/models/../../../etc' has a '..' segment",
    ),
    (
        {f"{C}.args[1]": "--model_base_path=/srv/models/resnet50"},
        {},
        f"{C}.args[1]",
        "the path '/srv/models/resnet50' is not under any of the container's volumeMounts (/models)",
    ),
    (
        {f"{C}.args": ["--model_name=m", "--model_base_path", "/etc"]},  # the value as the next arg
        {},
        f"{C}.args[1]",
        "'/etc' is not under any",
    ),
    (
        {f"{C}.args": ["---model_base_path=/etc"]},  # any number of dashes, as the server reads
        {},
        f"{C}.args[0]",
        "'/etc' is not under any",
    ),
    (
        {f"{C}.args": ["--model_base_path=$(MODEL_PATH)", "--monitoring_config_file=/etc/passwd"]},
        {},
        f"{C}.args[1]",
        "--monitoring_config_file: the path '/etc/passwd' is not under any",
    ),
    (
        {f"{C}.args": ["--model_base_path=$(MODEL_PATH)", "--batching_parameters_file=models/b"]},
        {},
        f"{C}.args[1]",
        "'models/b' is not an absolute path",
    ),
    (
        {f"{C}.args": ["--model_base_path=$(MODEL_PATH)", "--grpc_socket_path=/tmp/s.sock"]},
        {},
        f"{C}.args[1]",
        "--grpc_socket_path: not supported on the local mesh",
    ),
    (
        {},
        {"MODEL_PATH": "/models/../../etc"},  # through $(MODEL_PATH)
        f"{C}.args[1]",
        "the path '/models/../../etc' has a '..' segment",
    ),
    # the entrypoint's --model_base_path=$(MODEL_BASE_PATH)/$(MODEL_NAME), when it is the one used
    (
        {f"{C}.args": ["--model_name=$(MODEL_NAME)"]},
        {"MODEL_NAME": "../../etc"},
        f"{C}.env",
        "the image's entrypoint gives --model_base_path=$(MODEL_BASE_PATH)/$(MODEL_NAME): "
        "the path '/models/../../etc' has a '..' segment",
    ),
    (
        {
            f"{C}.env": [{"name": "MODEL_BASE_PATH", "value": "/etc"}],
            # the server may take the second arg as --saved_model_tags' value: the default counts
            f"{C}.args": ["--saved_model_tags", "--model_base_path=$(MODEL_PATH)"],
        },
        {},
        f"{C}.env",
        "'/etc/image_classifier' is not under any",
    ),
    (
        {f"{C}.env": [{"name": "MODEL_BASE_PATH", "value": "/etc"}]},  # replaced by the args
        {},
        "",
        "",
    ),
    ({f"{C}.args": ["--model_name=$(MODEL_NAME)"]}, {}, "", ""),  # /models/image_classifier
    # --- names an envFrom ConfigMap sets
    (
        {},
        {"PYTHONPATH": "/tmp/site"},
        f"{C}.envFrom[0]",
        "ConfigMap tf-serving/resnet50-configs has the key 'PYTHONPATH': environment variable "
        "PYTHONPATH cannot be set on the local mesh",
    ),
    (
        {f"{C}.envFrom[0].prefix": "PY"},
        {"THONSTARTUP": "/tmp/start.py"},
        f"{C}.envFrom[0]",
        "has the key 'THONSTARTUP': environment variable PYTHONSTARTUP cannot be set",
    ),
    (
        {},
        {"CANARY_VOLUME_MAP": "{}"},
        f"{C}.envFrom[0]",
        "CANARY_VOLUME_MAP cannot be set on the local mesh: CANARY_* names",
    ),
    ({}, {"TF_CPP_MIN_LOG_LEVEL": "1", "OMP_NUM_THREADS": "2"}, "", ""),
]


def _fill(value: object, store: Path) -> object:
    if isinstance(value, str):
        return value.replace(STORE, str(store))
    if isinstance(value, dict):
        return {k: _fill(v, store) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, store) for v in value]
    return value


def _edited(deployment: Edits, config: Edits, store: Path) -> list[dict[str, Any]]:
    dep = manifest(DEP_FILE)
    for path, value in deployment.items():
        dep = edit(dep, path, _fill(value, store))
    cm = manifest("base/configmaps.yaml")  # resnet50-configs
    for key, value in config.items():
        cm = edit(cm, f"data.{key}", value)
    return [dep, cm]


def _plan(deployment: Edits, config: Edits, store: Path) -> list[PodPlan]:
    dep, cm = _edited(deployment, config, store)
    new = parse(dep, source=f"manifests/{DEP_FILE}") + parse(cm, source="manifests/base/configmaps.yaml")
    return plan_pods(apply(base_objects(), new), store=store)


def _id(case: tuple[Edits, Edits, str, str]) -> str:
    return f"{case[0]}{case[1]}"[:90]


@pytest.mark.parametrize(("deployment", "config", "field", "fragment"), CASES, ids=[_id(c) for c in CASES])
def test_each_way_out_is_refused_naming_file_object_and_field(
    deployment: Edits, config: Edits, field: str, fragment: str, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    (store / "resnet50").mkdir(parents=True)
    if not field:
        assert len(_plan(deployment, config, store)) == 2
        return
    with pytest.raises(ManifestError) as caught:
        _plan(deployment, config, store)
    error = caught.value
    assert (error.file, error.obj, error.field) == (f"manifests/{DEP_FILE}", DEP, field), error
    assert fragment in error.message, error.message
    assert str(error).startswith(f"manifests/{DEP_FILE}: {DEP}: {field}: ")


def test_a_hostpath_is_judged_where_its_links_lead(tmp_path: Path) -> None:
    store, outside = tmp_path / "store", tmp_path / "outside"
    store.mkdir()
    outside.mkdir()
    (store / "models").symlink_to(outside)
    (tmp_path / "store-link").symlink_to(store)
    volume = {VOLUME: {"name": "models", "hostPath": {"path": str(store / "models")}}}
    with pytest.raises(ManifestError) as caught:
        _plan(volume, {}, store)
    assert caught.value.field == f"{VOLUME}.hostPath.path"
    assert f"{store / 'models'} (that is {outside}) is outside the model store" in caught.value.message
    # a store reached through a link is the store
    linked = {VOLUME: {"name": "models", "hostPath": {"path": str(tmp_path / "store-link")}}}
    assert len(_plan(linked, {}, store)) == 2


def test_without_the_store_no_hostpath_is_accepted(tmp_path: Path) -> None:
    dep, cm = _edited({VOLUME: {"name": "models", "hostPath": {"path": str(tmp_path)}}}, {}, tmp_path)
    objects = apply(base_objects(), parse(dep, source="d.yaml") + parse(cm, source="c.yaml"))
    with pytest.raises(ManifestError) as caught:
        plan_pods(objects)
    assert caught.value.field == f"{VOLUME}.hostPath.path"
    assert "cannot be checked against the model store here" in caught.value.message
    assert len(plan_pods(objects, store=tmp_path)) == 2


def test_every_path_flag_of_the_server_is_confined() -> None:
    from serving.flags import flag_help  # the server's own flag table

    names = re.findall(r"^  --(\w+)=str ", flag_help(), re.MULTILINE)
    paths = {n for n in names if n.endswith(("_file", "_path"))}
    assert paths and paths == set(MAPPED_PATH_FLAGS) | set(REFUSED_SERVER_FLAGS)


@pytest.mark.parametrize(
    ("argv", "found"),
    [
        (["--model_base_path=/a"], [(0, "model_base_path", "/a")]),
        (["-model_base_path", "/a"], [(0, "model_base_path", "/a")]),
        (["--model_base_path"], []),  # no value: the server refuses it
        (["--model_base_pathx=/a", "model_base_path=/b"], []),
        # every reading: as a flag, and as the value of the one before
        (
            ["--monitoring_config_file", "--model_base_path=/b"],
            [(0, "monitoring_config_file", "--model_base_path=/b"), (1, "model_base_path", "/b")],
        ),
    ],
)
def test_path_flags_are_found_in_every_reading_the_server_may_have(
    argv: list[str], found: list[tuple[int, str, str]]
) -> None:
    assert path_flag_values(argv, ("model_base_path", "monitoring_config_file")) == found


@pytest.mark.parametrize(
    ("argv", "surely"),
    [
        (["--model_base_path=/a", "--model_base_path=/b"], True),
        (["--model_base_path=/a", "--port=1", "--model_base_path=/b"], True),
        (["--model_base_path=/a", "--saved_model_tags", "x", "--model_base_path=/b"], True),
        (["--model_base_path=/a", "--saved_model_tags", "--model_base_path=/b"], False),
        (["--model_base_path=/a", "--nomodel_base_path"], False),
        (["--model_base_path=/a"], False),
    ],
)
def test_a_default_counts_unless_surely_replaced(argv: list[str], surely: bool) -> None:
    assert surely_given_after(argv, "model_base_path", 1) is surely


# --- through the local mesh: refused before anything starts or changes ------------------------


@pytest.fixture
def no_process(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every process the mesh tries to start (none may be)."""
    spawned: list[list[str]] = []

    def spawn(argv: list[str], *_: object, **__: object) -> int:
        spawned.append(list(argv))
        raise AssertionError(f"a process was started: {argv}")

    monkeypatch.setattr(procs, "spawn", spawn)
    return spawned


def _write(folder: Path, deployment: Edits, config: Edits, store: Path) -> Path:
    """The walkthrough's base manifests in ``folder``, the resnet50 Deployment and the
    ConfigMaps edited; returns the Deployment's file."""
    folder.mkdir()
    for path in (MANIFESTS / "base").iterdir():
        (folder / path.name).write_text(path.read_text())
    dep, cm = _edited(deployment, config, store)
    configmaps = list(yaml.safe_load_all((MANIFESTS / "base" / "configmaps.yaml").read_text()))
    (folder / "configmaps.yaml").write_text(yaml.safe_dump_all([cm, *configmaps[1:]]))
    (folder / "deployment-resnet50.yaml").write_text(yaml.safe_dump(dep))
    return folder / "deployment-resnet50.yaml"


def test_mesh_up_refuses_a_reserved_env_before_starting_anything(tmp_path: Path, no_process: list[list[str]]) -> None:
    home = MeshHome(tmp_path / "home")
    bad = _write(tmp_path / "m", {f"{C}.env": [{"name": "PYTHONPATH", "value": "/x"}]}, {}, tmp_path)
    with pytest.raises(ManifestError) as caught:
        LocalMesh(home).up([bad.parent], store=tmp_path, tiny=True, port=procs.free_port())
    assert (caught.value.file, caught.value.obj, caught.value.field) == (str(bad), DEP, f"{C}.env[0].name")
    assert no_process == [] and not home.exists()


@pytest.mark.parametrize(
    ("deployment", "config", "field"),
    [
        ({}, {"LD_PRELOAD": "/tmp/x.so"}, f"{C}.envFrom[0]"),
        ({f"{C}.args[1]": "--model_base_path=/models/../../etc"}, {}, f"{C}.args[1]"),
        ({VOLUME: {"name": "models", "hostPath": {"path": "/etc"}}}, {}, f"{VOLUME}.hostPath.path"),
    ],
)
def test_mesh_apply_refuses_before_starting_or_changing_anything(
    deployment: Edits,
    config: Edits,
    field: str,
    tmp_path: Path,
    no_process: list[list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = MeshHome(tmp_path / "home")
    home.root.mkdir(parents=True)
    home.save(MeshState(ingress_address="127.0.0.1", ingress_ports={80: 1}, store=str(tmp_path), tiny=True))
    before = home.state_file.read_bytes()
    monkeypatch.setattr(procs, "is_running", lambda pid, marker: True)  # an Envoy "runs"
    bad = _write(tmp_path / "m", deployment, config, tmp_path)
    with pytest.raises(ManifestError) as caught:
        LocalMesh(home).apply([bad.parent])
    assert (caught.value.file, caught.value.obj, caught.value.field) == (str(bad), DEP, field)
    assert no_process == []
    assert home.state_file.read_bytes() == before
