"""run.json as typed data: what the load test writes reads back the same, bad documents say where."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from canary.errors import UsageError
from canary.rundir import RunDir, RunDocument, parse_run_document
from canary.rundir.document import CanaryOptions, MeshRecord, SubsetCounts

FORMAT_1 = {  # a run.json as the previous version wrote it (keys the reader does not know included)
    "format": 1,
    "run_id": "20260131T120000Z-abcdef",
    "status": "finished",
    "started_at": "2026-01-31T12:00:00.000000Z",
    "ended_at": "2026-01-31T12:00:30.500000Z",
    "host": "http://127.0.0.1:8080",
    "runner": "local",
    "arguments": {"argv": ["locust"], "canary": {"protocol": "both", "canary_share": 0.2,
                                                 "canary_header": "user-group: canary", "requests": 200,
                                                 "payloads": None, "payload_size": 224, "expected": "70/30",
                                                 "model_name": "image_classifier", "model_version": 1,
                                                 "until_verified": False, "from_manifest": None,
                                                 "tolerance": 0.03, "calibration": None, "run_dir": None},
                  "locust": {"num_users": 10}, "user_classes": ["GrpcUser", "RestUser"]},
    "calibration": {"file": "calibration.json", "given": None, "endpoints": {"resnet50": {"rest": "http://x"}},
                    "source": "endpoints", "tolerance": 1e-5, "subsets": ["resnet101", "resnet50"],
                    "pairs": 10, "usable": 10, "excluded": []},
    "models": {"resnet50": {"endpoint": "http://x", "version": "1", "canary_model": {"weights": "seeded"}}},
    "expected": {"default": {"shares": {"resnet50": 0.7, "resnet101": 0.3}, "label": "resnet50=70%,resnet101=30%"}},
    "users": {"rest": {"default": 4, "canary": 1}},
    "mesh": {"local": True, "home": "/h", "ingress_url": "http://127.0.0.1:8080",
             "applied": [{"path": "vs.yaml", "sha256": "ab", "objects": ["VirtualService/tf-serving/x"]}],
             "counters_before": {"resnet50": {"subset": "resnet50", "requests": 5, "by_class": {"2xx": 5},
                                              "by_port": {"8501": 5}, "clusters": ["c"]}},
             "counters_after": {"resnet50": {"subset": "resnet50", "requests": 12}}, "delta": None},
    "requests": {"total": 7, "target": 200, "by_outcome": {"attributed": 7}, "by_subset": {"resnet50": 7},
                 "locust": {"requests": 7, "failures": 0}},
    "records": {"dir": "records", "rows": 7, "chunks": 1, "workers": {"local": {"received": 7, "last_seq": 6,
                                                                             "missing": 0, "duplicates": 0}}},
    "sequential": None,
    "problems": [],
    "exit_code": None,
    "something_newer": {"kept": True},
}


def test_a_format_1_document_reads_typed_and_writes_back_whole(tmp_path: Path) -> None:
    document = parse_run_document(FORMAT_1)
    assert document.options.header == ("user-group", "canary")
    assert document.options.requests == 200 and document.options.expected == "70/30"
    assert document.models["resnet50"].weights_kind == "seeded" and document.models["resnet50"].version == 1
    assert document.mesh.requests_during_run() == {"resnet50": 7}  # after - before, no delta recorded
    assert document.started is not None and document.ended is not None
    assert (document.ended - document.started).total_seconds() == pytest.approx(30.5)
    run = RunDir(tmp_path / "r").create()
    run.write_run(document)
    again = parse_run_document(run.read_run_json())
    assert again == document
    assert run.read_run_json()["something_newer"] == {"kept": True}


def test_a_document_built_in_code_round_trips() -> None:
    document = RunDocument(run_id="r", status="running", mesh=MeshRecord(
        local=True, counters_before={"resnet50": SubsetCounts(requests=1)},
        counters_after={"resnet50": SubsetCounts(requests=4)}, delta={"resnet50": 3}))
    data = orjson.loads(orjson.dumps(document.to_json_dict()))
    assert parse_run_document(data) == document
    assert data["format"] == 1 and data["mesh"]["delta"] == {"resnet50": 3}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": 2}, "format 2, which this version of canary cannot read"),
        ({"users": {"rest": {"default": "many"}}}, r"users\.rest\.default"),
        ({"arguments": {"canary": {"tolerance": 0.9}}}, "--tolerance must be a fraction between 0 and 0.5"),
        ({"arguments": {"canary": {"canary_header": "nocolon"}}}, "must be 'name: value'"),
        ({"requests": []}, r"run.json: requests"),
    ],
)
def test_a_bad_document_names_the_field(change: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_run_document({**FORMAT_1, **change})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"protocol": "udp"}, "--protocol 'udp' must be one of rest, grpc, both"),
        ({"canary_share": 1.5}, "--canary-share must be between 0 and 1"),
        ({"requests": -1}, "--requests must be 0"),
        ({"payload_size": 0}, "--payload-size must be between 1 and 4096"),
        ({"model_version": 0}, "--model-version must be 1 or more"),
    ],
)
def test_options_are_validated_as_the_command_line_says(values: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        CanaryOptions.model_validate(values)


def test_option_defaults_and_normalisation() -> None:
    options = CanaryOptions.model_validate({"canary_header": "X-Team:  Beta ", "requests": 0, "payloads": "",
                                            "expected": "  "})
    assert options.canary_header == "x-team: Beta" and options.header == ("x-team", "Beta")
    assert options.requests is None and options.payloads is None and options.expected is None
    assert CanaryOptions(protocol="grpc").protocols == ("grpc",)
    assert CanaryOptions().protocols == ("rest", "grpc")
