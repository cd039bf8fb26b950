"""Reading manifests as kubectl does, applying them, and checking references across the set."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from canary.errors import ManifestError
from mesh.manifests import (
    KIND_ORDER,
    MAX_MANIFEST_BYTES,
    MAX_MANIFEST_DOCUMENTS,
    apply,
    load_manifests,
    load_yaml_documents,
    read_documents,
    validate_set,
)
from mesh.model import ConfigMap, DestinationRule, HTTPRouteDestination, Service, VirtualService
from tests.mesh.docs import DELETE, edit, manifest, parse, write
from tests.mesh.scenarios import MANIFESTS, base_objects

VS_FILE = "routing/virtualservice-weight-70.yaml"
VS = "VirtualService/tf-serving/image-classifier"
DESTINATION = "spec.http[0].route[1].destination"


# --- reading files ---------------------------------------------------------------------


def test_the_walkthrough_manifests_load() -> None:
    objects = load_manifests([MANIFESTS / "base"])
    assert [str(o.ref) for o in objects] == [
        "ConfigMap/tf-serving/resnet50-configs",  # files in name order, documents in file order
        "ConfigMap/tf-serving/resnet101-configs",
        "Deployment/tf-serving/image-classifier-resnet101",
        "Deployment/tf-serving/image-classifier-resnet50",
        "DestinationRule/tf-serving/image-classifier",
        "Gateway/tf-serving/image-classifier-gateway",
        "PersistentVolumeClaim/tf-serving/model-store",
        "Namespace/tf-serving",
        "Service/tf-serving/image-classifier",
        "VirtualService/tf-serving/image-classifier",
    ]
    for name in ("weight-100", "weight-70", "focused-routing"):
        apply(objects, load_manifests([MANIFESTS / "routing" / f"virtualservice-{name}.yaml"]))


def test_directories_are_read_like_kubectl_apply_f(tmp_path: Path) -> None:
    write(tmp_path / "b.yml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n")
    write(
        tmp_path / "a.json",
        json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}),
    )
    write(
        tmp_path / "c.yaml",
        "---\n# only a comment\n---\napiVersion: v1\nkind: List\nitems:\n"
        "- {apiVersion: v1, kind: Namespace, metadata: {name: c1}}\n"
        "- {apiVersion: v1, kind: Namespace, metadata: {name: c2}}\n",
    )
    write(tmp_path / "notes.txt", "not a manifest")
    (tmp_path / "nested").mkdir()
    write(tmp_path / "nested" / "d.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: d}\n")
    objects = load_manifests([tmp_path])
    assert [o.ref.name for o in objects] == ["a", "b", "c1", "c2"]  # sorted, non-recursive
    assert [o.source for o in objects][:2] == [str(tmp_path / "a.json"), str(tmp_path / "b.yml")]


def test_yaml_is_read_as_kubernetes_reads_it(tmp_path: Path) -> None:
    path = write(
        tmp_path / "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata:\n  RELEASED: 2024-01-01\n",
    )
    (config,) = load_manifests([path])
    assert isinstance(config, ConfigMap) and config.ref.namespace == "default"
    assert config.data == {"RELEASED": "2024-01-01"}  # a date stays a string


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            "apiVersion: v1\nkind: Namespace\nkind: Service\n",
            "line 3, column 1: mapping key 'kind' appears twice",
        ),
        ("apiVersion: v1\nkind: [unclosed\n", "invalid YAML: line 3"),
    ],
)
def test_yaml_errors_say_where(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ManifestError) as caught:
        load_manifests([path])
    assert caught.value.file == str(path)
    assert fragment in caught.value.message


def _alias_bomb(levels: int = 9) -> str:
    """A valid walkthrough Deployment with a "billion laughs" under status: (10**levels values
    once expanded), under 2 kB."""
    lines = [(MANIFESTS / "base" / "deployment-resnet50.yaml").read_text().rstrip(), "status:"]
    lines.append('  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]')
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    path = write(tmp_path / "bomb.yaml", _alias_bomb())
    started = time.perf_counter()
    with pytest.raises(ManifestError) as caught:
        load_manifests([path])
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"took {elapsed:.3f} s"
    assert (caught.value.file, caught.value.obj, caught.value.field) == (str(path), "", "")
    line = _alias_bomb().splitlines().index("status:") + 2
    assert caught.value.message.startswith(f"invalid YAML: line {line}, column 7: the anchor &l0: ")
    assert "anchors and aliases are not accepted" in caught.value.message
    with pytest.raises(ManifestError, match="anchors and aliases"):
        read_documents(path)  # what rollout reads a VirtualService with


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: &x 1\n", "line 1, column 4: the anchor &x:"),  # an anchor alone, unused
        ("a: 1\nb: *x\n", "line 2, column 4: the alias *x:"),  # an alias to nothing
        ("base: &b {k: v}\nother:\n  <<: *b\n", "line 1, column 7: the anchor &b:"),  # merge key
    ],
)
def test_anchors_and_aliases_are_refused(text: str, fragment: str) -> None:
    with pytest.raises(ManifestError) as caught:
        load_yaml_documents(text, "kubeconfig")
    assert caught.value.file == "kubeconfig"
    assert caught.value.message.startswith(f"invalid YAML: {fragment} YAML anchors and aliases")


def test_anchor_and_alias_characters_in_values_are_fine() -> None:
    text = 'hosts: ["*"]\nregex: "a&b*c"\nplain: a&b\n'
    assert load_yaml_documents(text, "s") == [{"hosts": ["*"], "regex": "a&b*c", "plain": "a&b"}]


def test_a_manifest_file_is_bounded_in_size_and_documents(tmp_path: Path) -> None:
    namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n"
    big = write(tmp_path / "big.yaml", namespace + "#" * MAX_MANIFEST_BYTES + "\n")
    with pytest.raises(ManifestError) as caught:
        load_manifests([big])
    assert caught.value.file == str(big)
    assert "larger than 1024 KiB (1048576 bytes)" in caught.value.message
    assert "split it into several files" in caught.value.message
    with pytest.raises(ManifestError, match="larger than 1024 KiB"):
        load_yaml_documents("é" * (MAX_MANIFEST_BYTES // 2 + 1), "s")  # counted as UTF-8 bytes
    many = write(tmp_path / "many.yaml", "---\n" * (MAX_MANIFEST_DOCUMENTS + 1) + namespace)
    with pytest.raises(ManifestError) as caught:
        load_manifests([many])
    assert caught.value.file == str(many)
    assert f"more than {MAX_MANIFEST_DOCUMENTS} YAML documents" in caught.value.message
    at_bound = write(tmp_path / "ok.yaml", "---\n" * MAX_MANIFEST_DOCUMENTS + namespace)
    assert [o.ref.name for o in load_manifests([at_bound])] == ["a"]


def test_the_repository_manifests_use_no_anchors_or_aliases() -> None:
    for path in sorted(MANIFESTS.rglob("*.yaml")):
        read_documents(path)  # raises on an anchor or alias


def test_missing_paths_and_empty_directories_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such file or directory"):
        load_manifests([tmp_path / "missing.yaml"])
    with pytest.raises(ManifestError, match="no manifests"):
        load_manifests([tmp_path])


def test_one_bad_file_fails_the_whole_batch(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
    write(tmp_path / "b.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: B}\n")
    with pytest.raises(ManifestError) as caught:
        load_manifests([tmp_path])
    assert caught.value.file == str(tmp_path / "b.yaml")


# --- what parsing fills in -------------------------------------------------------------


def test_short_hosts_resolve_in_the_object_namespace() -> None:
    (vs,) = parse(manifest(VS_FILE))
    assert isinstance(vs, VirtualService)
    assert vs.hosts == ("*",)
    assert vs.gateways == ("tf-serving/image-classifier-gateway",)
    assert vs.http[0].route[0].destination.host == "image-classifier.tf-serving.svc.cluster.local"
    (rule,) = parse(manifest("base/destinationrule.yaml"))
    assert (
        isinstance(rule, DestinationRule)
        and rule.host == "image-classifier.tf-serving.svc.cluster.local"
    )


def test_a_lone_destination_always_gets_weight_100() -> None:
    doc = edit(manifest("base/virtualservice.yaml"), "spec.http[1].route[0].weight", 30)
    (vs,) = parse(doc)
    assert isinstance(vs, VirtualService)
    assert [d.weight for d in vs.http[0].route] == [100]  # no weight given
    assert [d.weight for d in vs.http[1].route] == [100]  # 30 given: ignored, as Istio does


def test_header_matches_are_case_insensitive() -> None:
    doc = edit(
        manifest(VS_FILE),
        "spec.http[0].match[0].headers",
        {"X-B": {"exact": "1"}, "x-a": {"prefix": "2"}},
    )
    (vs,) = parse(doc)
    assert isinstance(vs, VirtualService)
    assert [name for name, _ in vs.http[0].match[0].headers] == ["x-a", "x-b"]


def test_a_fault_without_percentage_affects_nothing_as_in_istio() -> None:
    doc = edit(
        manifest(VS_FILE),
        "spec.http[0].fault",
        {"abort": {"httpStatus": 503}, "delay": {"fixedDelay": "1s"}},
    )
    (vs,) = parse(doc)
    assert isinstance(vs, VirtualService)
    fault = vs.http[0].fault
    assert fault is not None and (fault.abort_percent, fault.delay_percent) == (0.0, 0.0)


# --- apply and references --------------------------------------------------------------


def test_apply_creates_and_replaces_by_identity_in_dependency_order() -> None:
    base = base_objects()
    applied = apply(base, parse(manifest(VS_FILE)))
    assert len(applied) == len(base)
    assert [KIND_ORDER.index(o.ref.kind) for o in applied] == sorted(
        KIND_ORDER.index(o.ref.kind) for o in applied
    )
    vs = next(o for o in applied if isinstance(o, VirtualService))
    assert [d.weight for d in vs.http[0].route] == [70, 30]
    extra = edit(manifest("base/configmaps.yaml"), "metadata.name", "extra")
    assert len(apply(applied, parse(extra))) == len(base) + 1


def test_apply_changes_nothing_when_the_result_is_invalid() -> None:
    base = base_objects()
    before = list(base)
    bad = edit(manifest(VS_FILE), f"{DESTINATION}.subset", "resnet152")
    with pytest.raises(ManifestError):
        apply(base, parse(bad))
    assert base == before


def test_an_object_given_twice_in_one_apply() -> None:
    service = manifest("base/service.yaml")
    objects = parse(service, source="a.yaml") + parse(service, source="b.yaml")
    with pytest.raises(ManifestError, match=r"also defined in a\.yaml"):
        apply([], objects)


def _gateway_hosts(hosts: list[str]) -> dict[str, object]:
    return edit(manifest("base/gateway.yaml"), "spec.servers[0].hosts", hosts)


def _rule(**changes: object) -> dict[str, object]:
    doc = manifest("base/destinationrule.yaml")
    for path, value in changes.items():
        doc = edit(doc, path.replace("__", "."), value)
    return doc


# (documents applied over the base manifests, object named, field named, message fragment)
REFERENCE_CASES: list[tuple[list[dict[str, object]], str, str, str]] = [
    (
        [edit(manifest(VS_FILE), f"{DESTINATION}.subset", "resnet152")],
        VS,
        f"{DESTINATION}.subset",
        "DestinationRule DestinationRule/tf-serving/image-classifier has no subset 'resnet152' (subsets: resnet101, resnet50)",
    ),
    (
        [edit(manifest(VS_FILE), f"{DESTINATION}.port.number", 9999)],
        VS,
        f"{DESTINATION}.port.number",
        "has no port 9999 (ports: 8500, 8501)",
    ),
    (
        [edit(manifest(VS_FILE), f"{DESTINATION}.port", DELETE)],
        VS,
        f"{DESTINATION}.port",
        "has several ports (8500, 8501): say which",
    ),
    (
        [edit(manifest(VS_FILE), f"{DESTINATION}.host", "image-classifer")],
        VS,
        f"{DESTINATION}.host",
        "no Service image-classifer.tf-serving.svc.cluster.local",
    ),
    (
        [edit(manifest(VS_FILE), f"{DESTINATION}.host", "image-classifier.tf-serving")],
        VS,
        f"{DESTINATION}.host",
        "no Service image-classifier.tf-serving in this mesh",
    ),
    (
        [edit(manifest(VS_FILE), "spec.gateways", ["nope"])],
        VS,
        "spec.gateways[0]",
        "no Gateway tf-serving/nope",
    ),
    (
        [
            edit(
                manifest(VS_FILE),
                "spec.gateways",
                ["mesh", "istio-system/image-classifier-gateway"],
            )
        ],
        VS,
        "spec.gateways[1]",
        "no Gateway istio-system/image-classifier-gateway",
    ),
    (
        [
            edit(
                manifest(VS_FILE),
                "spec.http[0].mirror",
                {"host": "image-classifier", "subset": "x", "port": {"number": 8500}},
            )
        ],
        VS,
        "spec.http[0].mirror.subset",
        "has no subset 'x'",
    ),
    (
        [
            edit(manifest(VS_FILE), "spec.hosts", ["api.example.com"]),
            _gateway_hosts(["web.example.com"]),
        ],
        VS,
        "spec.hosts",
        "none of the hosts ['api.example.com'] is served by Gateway tf-serving/image-classifier-gateway",
    ),
    (
        [_gateway_hosts(["other/*"])],
        "VirtualService/tf-serving/image-classifier",
        "spec.hosts",
        "is served by",
    ),
    (
        [_rule(spec__host="nope")],
        "DestinationRule/tf-serving/image-classifier",
        "spec.host",
        "no Service nope.tf-serving.svc.cluster.local",
    ),
    (
        [_rule(metadata__name="second")],
        "DestinationRule/tf-serving/second",
        "spec.host",
        "already has a DestinationRule (DestinationRule/tf-serving/image-classifier)",
    ),
    (
        [
            _rule(spec__subsets=[{"name": "resnet50", "labels": {"version": "resnet50"}}]),
            manifest(VS_FILE),
        ],
        VS,
        f"{DESTINATION}.subset",
        "has no subset 'resnet101' (subsets: resnet50)",
    ),
    (
        [edit(manifest("base/service.yaml"), "metadata.namespace", "ghost")],
        "Service/ghost/image-classifier",
        "metadata.namespace",
        "namespace 'ghost' does not exist",
    ),
]


@pytest.mark.parametrize(("docs", "obj", "field", "fragment"), REFERENCE_CASES)
def test_each_broken_reference_is_named(
    docs: list[dict[str, object]], obj: str, field: str, fragment: str
) -> None:
    with pytest.raises(ManifestError) as caught:
        apply(base_objects(), parse(*docs, source="new.yaml"))
    error = caught.value
    assert (error.obj, error.field) == (obj, field), error
    assert fragment in error.message, error.message


def test_an_error_in_an_object_already_applied_names_its_own_file() -> None:
    with pytest.raises(ManifestError) as caught:
        apply(base_objects(), parse(_gateway_hosts(["other/*"]), source="gateway.yaml"))
    assert caught.value.file == str(MANIFESTS / "base" / "virtualservice.yaml")


def test_subsets_need_a_destination_rule() -> None:
    other = edit(manifest("base/service.yaml"), "metadata.name", "other")
    vs = edit(manifest(VS_FILE), f"{DESTINATION}.host", "other")
    with pytest.raises(ManifestError, match="no DestinationRule defines subsets for host other"):
        apply(base_objects(), parse(other, vs))


def test_dangling_config_maps_are_fine_as_in_kubernetes() -> None:
    deployment = edit(
        manifest("base/deployment-resnet50.yaml"),
        "spec.template.spec.containers[0].envFrom",
        [{"configMapRef": {"name": "not-yet"}}],
    )
    applied = apply(base_objects(), parse(deployment))
    validate_set(applied)


def test_a_single_port_service_needs_no_destination_port() -> None:
    one_port = edit(manifest("base/service.yaml"), "spec.ports", [{"port": 8501, "name": "http"}])
    rest_only = [{"name": "rest", "route": [{"destination": {"host": "image-classifier"}}]}]
    vs_doc = edit(manifest("base/virtualservice.yaml"), "spec.http", rest_only)
    objects = apply(base_objects(), parse(one_port, vs_doc))
    service = next(o for o in objects if isinstance(o, Service))
    assert [p.target_port for p in service.ports] == [8501]  # targetPort defaults to port
    vs = next(o for o in objects if isinstance(o, VirtualService))
    assert vs.http[0].route == (HTTPRouteDestination(vs.http[0].route[0].destination, 100),)
    assert vs.http[0].route[0].destination.port is None
