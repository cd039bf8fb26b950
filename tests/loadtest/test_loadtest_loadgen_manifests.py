"""The in-cluster load generator's manifests: valid for Kubernetes, least privilege, filled in per run."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from canary.errors import ManifestError, UsageError
from loadtest.loadgen_manifests import (
    APPLY_ORDER,
    LOADGEN_DIR,
    MASTER,
    MAX_RUN_FILES_BYTES,
    RUN_CONFIG,
    RUN_ID_KEY,
    WORKERS,
    as_yaml,
    image_problem,
    read_templates,
    render,
    role_rules,
)
from mesh.kube import KubeMesh, connect
from mesh.kube_query import READS
from mesh.manifest_fields import Target
from mesh.manifest_yaml import load_yaml_documents
from mesh.manifests import kind_rank, load_manifests, parse_objects, read_documents, validate_set
from mesh.model import OtherObject, Service
from tests.mesh.fake_apiserver import FakeApiServer

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())
FILES = {"settings.json": '{"users": 10}', "calibration.json": '{"resnet50": {}}'}
IMAGE = "registry.example.com:5000/team/canary-loadgen:0.1.0"


@pytest.fixture(scope="module")
def templates() -> list[dict[str, Any]]:
    return read_templates()


def rendered(templates: list[dict[str, Any]], **overrides: Any) -> list[dict[str, Any]]:
    arguments: dict[str, Any] = {
        "run_id": "20260131t120000z-3f9a1c", "image": IMAGE, "workers": 3,
        "namespace": "models", "files": FILES,
    }
    return render(templates, **{**arguments, **overrides})


def the(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def pod(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def strictly_valid(document: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(document, version, strict=True)


# --- valid for Kubernetes, and for the project's own cluster reading -----------------------


def test_the_templates_are_the_folder_canary_reads(templates: list[dict[str, Any]]) -> None:
    assert LOADGEN_DIR == ROOT / "manifests" / "loadgen"
    strictly_read = [doc for path in sorted(LOADGEN_DIR.glob("*.yaml")) for doc in read_documents(path)]
    assert templates == [doc for doc in strictly_read if doc is not None]


def test_read_templates_refuses_what_is_no_template(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no load generator templates"):
        read_templates(tmp_path)
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: ServiceAccount\n")
    with pytest.raises(ManifestError, match="document 1: not a Kubernetes object"):
        read_templates(tmp_path)
    (tmp_path / "a.yaml").write_text("kind: [\n")
    with pytest.raises(ManifestError, match="cannot read"):
        read_templates(tmp_path)


def test_the_apply_order_is_the_clusters(templates: list[dict[str, Any]]) -> None:
    assert list(APPLY_ORDER) == sorted(APPLY_ORDER, key=kind_rank)
    assert {d["kind"] for d in rendered(templates)} <= set(APPLY_ORDER)


def test_every_template_and_rendered_document_validates_strictly(templates: list[dict[str, Any]]) -> None:
    documents = rendered(templates)
    assert {d["kind"] for d in documents} == {
        "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Service", "Job"}
    for document in [*templates, *documents]:
        strictly_valid(document)
    for objects in (parse_objects([("rendered", d) for d in documents], target=Target.CLUSTER),
                    load_manifests([LOADGEN_DIR], target=Target.CLUSTER)):
        assert any(isinstance(o, Service) for o in objects)  # read as the local mesh's model
        validate_set([o for o in objects if not isinstance(o, OtherObject)], target=Target.CLUSTER)


def test_the_strict_validation_refuses_unknown_fields(templates: list[dict[str, Any]]) -> None:
    job = copy.deepcopy(the(rendered(templates), "Job", MASTER))
    pod(job)["containers"][0]["securityContext"]["runAsRoot"] = False
    with pytest.raises(kubernetes_validate.ValidationError, match="runAsRoot"):
        strictly_valid(job)


def test_the_yaml_written_reads_back_with_the_strict_reader(templates: list[dict[str, Any]]) -> None:
    documents = rendered(templates)
    text = as_yaml(documents)
    assert "&id" not in text and "*id" not in text
    assert load_yaml_documents(text, "rendered.yaml") == documents


# --- least privilege -------------------------------------------------------------------------


def test_the_role_grants_exactly_the_namespaced_reads(templates: list[dict[str, Any]]) -> None:
    def rule(resource: str) -> tuple[str, str]:
        name, _, group = resource.partition(".")
        return group, name

    needed = {(*rule(call.resource), call.verb) for call in READS if call.namespace == "NAMESPACE"}
    assert needed == {(group, resource, "list") for group, resource in [
        ("networking.istio.io", "gateways"), ("networking.istio.io", "virtualservices"),
        ("networking.istio.io", "destinationrules"), ("", "services"), ("", "pods")]}
    assert role_rules(templates) == needed
    assert role_rules(rendered(templates)) == needed


def test_nothing_is_granted_cluster_wide_and_only_the_master_gets_a_token(
    templates: list[dict[str, Any]],
) -> None:
    documents = rendered(templates)
    assert not {"ClusterRole", "ClusterRoleBinding"} & {d["kind"] for d in documents}
    binding = the(documents, "RoleBinding", "canary-loadgen")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "canary-loadgen"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "canary-loadgen", "namespace": "models"}]
    assert the(documents, "ServiceAccount", "canary-loadgen")["automountServiceAccountToken"] is False
    assert pod(the(documents, "Job", MASTER))["automountServiceAccountToken"] is True
    assert pod(the(documents, "Job", WORKERS))["automountServiceAccountToken"] is False


def test_every_pod_is_hardened_and_outside_the_mesh(templates: list[dict[str, Any]]) -> None:
    for name in (MASTER, WORKERS):
        job = the(rendered(templates), "Job", name)
        assert job["spec"]["backoffLimit"] == 0 and 0 < job["spec"]["activeDeadlineSeconds"] <= 86400
        assert job["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
        spec = pod(job)
        assert spec["restartPolicy"] == "Never" and spec["serviceAccountName"] == "canary-loadgen"
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        [container] = spec["containers"]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
        assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/etc/canary-run", "/tmp"}


# --- the contract with loadtest.incluster ----------------------------------------------------


def test_the_master_runs_as_the_contract_says(templates: list[dict[str, Any]]) -> None:
    documents = rendered(templates)
    job = the(documents, "Job", MASTER)
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (1, 1)
    assert job["spec"]["template"]["metadata"]["labels"]["role"] == "master"
    [container] = pod(job)["containers"]
    assert container["command"] == ["python", "-m", "loadtest.incluster", "master"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CANARY_RUN_CONFIG"] == "/etc/canary-run"
    assert env["CANARY_RUNS"] == "/runs"
    assert env["CANARY_RESULTS_PORT"] == "8089"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"locust": 5557, "results": 8089}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod(job)["volumes"]}
    assert mounts["run-config"] == {"name": "run-config", "mountPath": "/etc/canary-run", "readOnly": True}
    assert volumes["run-config"]["configMap"]["name"] == RUN_CONFIG
    assert mounts["runs"]["mountPath"] == "/runs" and "emptyDir" in volumes["runs"]
    service = the(documents, "Service", MASTER)
    assert service["spec"]["selector"] == {"app": "canary-loadgen", "role": "master"}
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("locust", 5557)]


def test_the_workers_reach_the_master_by_its_service(templates: list[dict[str, Any]]) -> None:
    [container] = pod(the(rendered(templates), "Job", WORKERS))["containers"]
    assert container["command"] == ["python", "-m", "loadtest.incluster", "worker"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CANARY_RUN_CONFIG"] == "/etc/canary-run"
    assert env["LOCUST_MASTER_NODE_HOST"] == MASTER
    assert "ports" not in container


# --- filled in for one run -------------------------------------------------------------------


def test_render_fills_in_one_run(templates: list[dict[str, Any]]) -> None:
    before = copy.deepcopy(templates)
    documents = rendered(templates, workers=3)
    assert templates == before  # the templates are left as they are
    assert [d["kind"] for d in documents] == sorted((d["kind"] for d in documents), key=kind_rank)
    assert [d["metadata"]["name"] for d in documents if d["kind"] == "Job"] == [MASTER, WORKERS]
    for document in documents:
        assert document["metadata"]["namespace"] == "models"
        assert document["metadata"]["labels"][RUN_ID_KEY] == "20260131t120000z-3f9a1c"
        assert document["metadata"]["annotations"][RUN_ID_KEY] == "20260131t120000z-3f9a1c"
    workers = the(documents, "Job", WORKERS)
    assert (workers["spec"]["parallelism"], workers["spec"]["completions"]) == (3, 3)
    for name in (MASTER, WORKERS):
        job = the(documents, "Job", name)
        assert job["spec"]["suspend"] is False
        assert [c["image"] for c in pod(job)["containers"]] == [IMAGE]
        assert job["spec"]["template"]["metadata"]["labels"][RUN_ID_KEY] == "20260131t120000z-3f9a1c"
    assert the(documents, "ConfigMap", RUN_CONFIG)["data"] == FILES
    assert the(rendered(templates, workers=1), "Job", WORKERS)["spec"]["parallelism"] == 1


def test_the_templates_alone_start_nothing(templates: list[dict[str, Any]]) -> None:
    jobs = [d for d in templates if d["kind"] == "Job"]
    assert {d["metadata"]["name"] for d in jobs} == {MASTER, WORKERS}
    assert all(job["spec"]["suspend"] is True for job in jobs)
    assert RUN_CONFIG not in {d["metadata"]["name"] for d in templates if d["kind"] == "ConfigMap"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"workers": 0}, "workers must be"),
        ({"workers": True}, "workers must be"),
        ({"image": ""}, "not an image reference"),
        ({"image": "Registry/Loadgen:1"}, "not an image reference"),
        ({"image": "canary loadgen:1"}, "not an image reference"),
        ({"image": "loadgen:bad tag"}, "not an image reference"),
        ({"run_id": "20260131T120000Z-3f9a1c"}, "'20260131t120000z-3f9a1c'"),
        ({"run_id": "x" * 64}, "at most 63 characters"),
        ({"namespace": "Tf_Serving"}, "not a namespace name"),
        ({"files": {"../settings.json": "{}"}}, "cannot be a ConfigMap key"),
    ],
)
def test_render_refuses_bad_input(templates: list[dict[str, Any]], overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        rendered(templates, **overrides)


def test_images_that_runtimes_pull_are_accepted() -> None:
    for image in ("canary-loadgen:latest", "python", "localhost:5000/canary-loadgen",
                  "ghcr.io/org/team/canary-loadgen:v1.2.3-rc.1",
                  "canary-loadgen@sha256:" + "a" * 64, "[::1]:5000/loadgen:1"):
        assert image_problem(image) == "", image


def test_the_run_files_fit_in_one_configmap(templates: list[dict[str, Any]]) -> None:
    name = "records.json"
    at_bound = {name: "x" * (MAX_RUN_FILES_BYTES - len(name))}
    assert len(the(rendered(templates, files=at_bound), "ConfigMap", RUN_CONFIG)["data"][name]) > 1000
    with pytest.raises(UsageError, match=r"more than the 1048576 bytes \(1 MiB\)"):
        rendered(templates, files={name: "é" * (MAX_RUN_FILES_BYTES // 2)})  # counted in UTF-8 bytes


def test_templates_without_the_jobs_are_refused(templates: list[dict[str, Any]]) -> None:
    without = [d for d in templates if d["metadata"]["name"] != WORKERS]
    with pytest.raises(ManifestError, match=WORKERS):
        rendered(without)


def test_canary_mesh_apply_kube_applies_a_run_in_order(
    templates: list[dict[str, Any]], tmp_path: Path
) -> None:
    server = FakeApiServer()
    server.add_namespace("tf-serving")
    server.start()
    try:
        config = server.write_kubeconfig(tmp_path / "kubeconfig", "fake")
        api = connect("fake", config_file=config, discovery_cache=tmp_path / "discovery.json")
        run = tmp_path / "loadgen.yaml"
        run.write_text(as_yaml(rendered(templates, namespace="tf-serving")), encoding="utf-8")
        KubeMesh(api).apply([run])
        applied = [r.object_name for r in server.applies(dry_run=False)]
        bodies = [r.body for r in server.applies(dry_run=False)]
    finally:
        server.stop()
    assert len(server.applies(dry_run=True)) == len(applied) == 7
    documents = rendered(templates, namespace="tf-serving")
    assert applied == [f"{d['kind']}/{d['metadata']['name']}" for d in documents]
    assert bodies == documents  # applied as rendered
