"""What the users send and how each response becomes a record (no Locust in this process).

Locust monkey-patches the interpreter when imported, so the Locust-bound
modules (users, worker, master, plugin) are exercised by the integration
tests in subprocesses; here: the prepared requests, groups, the request
budget, the options and :func:`loadtest.recording.make_row`.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest

from canary.conventions import GRPC_PREDICT_METHOD as PREDICT_METHOD
from canary.errors import UsageError
from loadtest.budget import BudgetClient, Ledger
from loadtest.fingerprint import Fingerprinter, build_calibration
from loadtest.items import build_items, group_of, grpc_target
from loadtest.options import CanaryOptions, options_from_parsed
from loadtest.recording import RequestMeta, make_row
from payloads import load_payloads
from payloads.wire import _key, _len_field, _varint, response_model_version


def _response(vector: np.ndarray, version: int | None) -> bytes:
    """A serialised PredictResponse: outputs["probabilities"] (tensor_content) and model_spec."""
    tensor = _key(1, 0) + _varint(1) + _len_field(4, np.asarray(vector, "<f4").tobytes())
    out = _len_field(1, _len_field(1, b"probabilities") + _len_field(2, tensor))
    spec = _len_field(1, b"image_classifier")
    if version is not None:
        spec += _len_field(2, _key(1, 0) + _varint(version))
    return out + _len_field(2, spec)


# --- groups and prepared requests ------------------------------------------------------


@pytest.mark.parametrize("share", [0.2, 0.25, 0.3, 0.5, 1 / 3, 0.7, 0.9, 0.999, 1.0])
def test_group_share_is_exact_at_every_prefix(share: float) -> None:
    """The smaller group holds ceil(n * its share) of any first n users; user 0 is in it and user 1
    in the larger, so two users give both groups one."""
    groups = [group_of(i, share) for i in range(200)]
    smaller, p = ("canary", share) if share <= 0.5 else ("default", 1 - share)
    for n in range(1, 201):
        assert groups[:n].count(smaller) == int(np.ceil(n * p - 1e-9)), (share, n)
    if share < 1:
        assert groups[0] == smaller and groups[1] != smaller
    else:
        assert set(groups) == {"canary"}


def test_group_share_zero_sends_no_header() -> None:
    assert {group_of(i, 0.0) for i in range(50)} == {"default"}


def test_items_cover_payloads_formats_and_paths() -> None:
    payloads = load_payloads()
    rest = build_items(payloads, "rest", "image_classifier", 1)
    grpc = build_items(payloads, "grpc", "image_classifier", 1)
    assert len(rest) == len(grpc) == len(payloads) * 2 * 2
    assert {(i.fmt, i.path) for i in rest} == {
        (fmt, path) for fmt in ("instances", "b64") for path in
        ("/v1/models/image_classifier:predict", "/v1/models/image_classifier/versions/1:predict")}
    first = payloads.items[0]
    assert next(i for i in rest if i.fmt == "b64").body is first.rest_body["b64"]  # serialised once, shared
    assert {i.path for i in grpc} == {PREDICT_METHOD}


def test_grpc_items_set_model_spec_version_only_when_versioned() -> None:
    from tensorflow_serving.apis import predict_pb2

    for item in build_items(load_payloads(), "grpc", "image_classifier", 3):
        request = predict_pb2.PredictRequest.FromString(item.body)
        assert request.model_spec.name == "image_classifier"
        assert request.model_spec.HasField("version") == item.versioned
        if item.versioned:
            assert request.model_spec.version.value == 3
        expected = "serving_default" if item.fmt == "instances" else "serving_preprocess"
        assert request.model_spec.signature_name == expected


def test_response_model_version_reads_the_real_proto() -> None:
    from tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    response.model_spec.name = "image_classifier"
    response.model_spec.version.value = 7
    response.outputs["probabilities"].dtype = 1
    response.outputs["probabilities"].tensor_content = np.ones(1000, "<f4").tobytes()
    assert response_model_version(response.SerializeToString()) == 7
    assert response_model_version(_response(np.ones(3), 1)) == 1
    assert response_model_version(_response(np.ones(3), None)) is None
    assert response_model_version(b"\xff") is None


def test_grpc_target_is_the_ingress_host_and_port() -> None:
    assert grpc_target("http://127.0.0.1:8080") == "127.0.0.1:8080"
    assert grpc_target("http://localhost") == "localhost:80"
    with pytest.raises(UsageError, match="h2c"):
        grpc_target("https://example.test")
    with pytest.raises(UsageError):
        grpc_target(None)


# --- records from request events -----------------------------------------------------------


@pytest.fixture(scope="module")
def fingerprinter() -> Fingerprinter:
    stable = np.full(5, 0.2, dtype=np.float32)
    stable[0] = 0.6
    stable[1:] = 0.1
    canary = stable[::-1].copy()
    return Fingerprinter(build_calibration({"p": {"b64": {"resnet50": stable, "resnet101": canary}}}))


def _meta(protocol: str = "rest", group: str = "default") -> RequestMeta:
    return RequestMeta(protocol=protocol, group=group, header="user-group: canary" if group == "canary" else "",
                       user=4, payload_id="p", fmt="b64", path="/v1/models/image_classifier:predict",
                       versioned=False, label=652)


def _event(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"request_type": "POST", "name": "x", "response_time": 12.0, "response_length": 10,
                            "response": None, "exception": None, "start_time": 1_800_000_000.5,
                            "worker": "w", "seq": 9}
    base.update(kw)
    return base


def test_rest_response_is_attributed(fingerprinter: Fingerprinter) -> None:
    vector = fingerprinter.calibration.references["p"]["b64"]["resnet101"]
    body = orjson.dumps({"predictions": [vector.tolist()]})
    row = make_row(_meta(group="canary"), fingerprinter=fingerprinter,
                   **_event(response=SimpleNamespace(status_code=200, content=body)))
    assert row["subset"] == "resnet101" and row["status"] == "200" and row["ok"]
    assert row["group"] == "canary" and row["header"] == "user-group: canary" and row["label"] == 652
    assert row["top1"] == 4 and row["top5"][0] == 4 and row["distance"] == 0.0
    assert (row["worker"], row["seq"], row["error"]) == ("w", 9, None)


def test_grpc_response_is_attributed_with_its_model_version(fingerprinter: Fingerprinter) -> None:
    vector = fingerprinter.calibration.references["p"]["b64"]["resnet50"]
    row = make_row(_meta("grpc"), fingerprinter=fingerprinter,
                   **_event(request_type="grpc", response=_response(vector, 1)))
    assert (row["subset"], row["status"], row["model_version"]) == ("resnet50", "OK", 1)


def test_unattributable_response_keeps_its_top5(fingerprinter: Fingerprinter) -> None:
    odd = np.array([0.05, 0.05, 0.8, 0.05, 0.05], dtype=np.float32)
    row = make_row(_meta("grpc"), fingerprinter=fingerprinter,
                   **_event(request_type="grpc", response=_response(odd, 1)))
    assert row["subset"] == "unknown" and row["ok"]
    assert row["top1"] == 2 and row["top5"][0] == 2 and "tolerance" in row["error"]


def test_failed_requests_are_subset_error(fingerprinter: Fingerprinter) -> None:
    rest = make_row(_meta(), fingerprinter=fingerprinter,
                    **_event(response=SimpleNamespace(status_code=503, content=b"no"), exception=OSError("503")))
    assert (rest["subset"], rest["status"], rest["ok"]) == ("error", "503", False)
    refused = make_row(_meta(), fingerprinter=fingerprinter,
                       **_event(response=SimpleNamespace(status_code=0, content=b""),
                                exception=ConnectionRefusedError()))
    assert refused["status"] == "ConnectionRefusedError"

    class RpcError(Exception):
        def code(self) -> Any:
            return SimpleNamespace(name="UNAVAILABLE")

        def details(self) -> str:
            return "upstream connect error"

    grpc = make_row(_meta("grpc"), fingerprinter=fingerprinter,
                    **_event(request_type="grpc", exception=RpcError()))
    assert (grpc["subset"], grpc["status"]) == ("error", "UNAVAILABLE")
    assert "upstream connect error" in grpc["error"]


def test_a_failure_says_why_as_the_server_put_it(fingerprinter: Fingerprinter) -> None:
    """The error is what `canary load` prints at the end: the status and the server's own message."""
    body = b'{"error": "Servable not found for request: Latest(image_classifer)"}'
    wrong = make_row(_meta(), fingerprinter=fingerprinter,
                     **_event(response=SimpleNamespace(status_code=404, content=body),
                              exception=ConnectionError("URL http://h/v1/models/image_classifer:predict: code=404")))
    assert wrong["error"] == "404 Not Found: Servable not found for request: Latest(image_classifer)"
    aborted = make_row(_meta(), fingerprinter=fingerprinter,
                       **_event(response=SimpleNamespace(status_code=503, content=b"fault filter abort"),
                                exception=ConnectionError("code=503")))
    assert aborted["error"] == "503 Service Unavailable: fault filter abort"
    empty = make_row(_meta(), fingerprinter=fingerprinter,
                     **_event(response=SimpleNamespace(status_code=502, content=b""), exception=ConnectionError()))
    assert empty["error"] == "502 Bad Gateway"

    class RpcError(Exception):
        def code(self) -> Any:
            return SimpleNamespace(name="NOT_FOUND")

        def details(self) -> str:
            return "Could not find any versions of model image_classifer"

    grpc = make_row(_meta("grpc"), fingerprinter=fingerprinter, **_event(request_type="grpc", exception=RpcError()))
    assert grpc["error"] == "NOT_FOUND: Could not find any versions of model image_classifer"
    refused = make_row(_meta(), fingerprinter=fingerprinter,
                       **_event(response=SimpleNamespace(status_code=0, content=b""),
                                exception=ConnectionRefusedError(111, "Connection refused")))
    assert refused["error"] == "ConnectionRefusedError: [Errno 111] Connection refused"


def test_rows_without_meta_or_calibration_are_unknown(fingerprinter: Fingerprinter) -> None:
    other = make_row(None, fingerprinter=fingerprinter, **_event(response=SimpleNamespace(status_code=200, content=b"{}")))
    assert other["subset"] == "unknown" and "not a canary predict request" in other["error"]
    uncalibrated = make_row(_meta(), fingerprinter=None,
                            **_event(response=SimpleNamespace(status_code=200, content=b"{}")))
    assert uncalibrated["subset"] == "unknown" and "calibration" in uncalibrated["error"]
    garbage = make_row(_meta(), fingerprinter=fingerprinter,
                       **_event(response=SimpleNamespace(status_code=200, content=b"<html>")))
    assert garbage["subset"] == "unknown" and "not JSON" in garbage["error"]


# --- options and the request budget ----------------------------------------------------


def test_options_are_validated_with_messages_that_say_what_to_do() -> None:
    with pytest.raises(UsageError, match="--payload-size"):
        options_from_parsed(SimpleNamespace(payload_size="big"))
    with pytest.raises(UsageError, match="--canary-share"):
        options_from_parsed(SimpleNamespace(canary_share=1.5))
    with pytest.raises(UsageError, match="--protocol"):
        options_from_parsed(SimpleNamespace(protocol="soap"))
    options = options_from_parsed(SimpleNamespace(protocol="grpc", requests=10, run_dir="r", payloads="",
                                                  payload_size="original"))
    assert (options.protocol, options.requests, str(options.run_dir), options.payloads) == ("grpc", 10, "r", None)
    assert options.payload_size is None


def test_locust_and_canary_load_take_the_same_options() -> None:
    """One definition: every option reaches Locust's parser and ``canary load``'s, and round-trips."""
    import argparse

    from loadtest.options import OPTIONS, add_arguments, option_argv

    parser = argparse.ArgumentParser()
    add_arguments(parser, locust=False)
    given = CanaryOptions(protocol="rest", canary_share=0.5, canary_header="x-team: beta", requests=7,
                          payload_size=None, expected="70/30", until_verified=True, tolerance=0.05,
                          model_name="m", model_version=2, run_dir=Path("r"))
    assert options_from_parsed(parser.parse_args(option_argv(given))) == given
    assert options_from_parsed(parser.parse_args([])) == CanaryOptions()
    assert all(spec.help and "default" in spec.help for spec in OPTIONS)


def test_ledger_hands_out_exactly_the_budget_in_shrinking_leases() -> None:
    ledger = Ledger(100)
    grants = []
    while (n := ledger.grant("w1" if len(grants) % 2 else "w2", 64, workers=2)) > 0:
        grants.append(n)
    assert sum(grants) == 100 and grants[0] == 25 and grants[-1] == 1
    assert ledger.grant("w1", 5, 2) == 0 and sum(ledger.granted.values()) == 100


def test_budget_client_takes_exactly_its_tokens() -> None:
    ledger = Ledger(7)
    client: BudgetClient

    def lease(want: int) -> None:
        client.on_grant(ledger.grant("local", want, 1))

    client = BudgetClient(lease, lease_timeout=0.05)
    client.reset(limited=True)
    taken = [client.take(4) for _ in range(10)]
    assert taken.count(True) == 7 and client.exhausted
    client.reset(limited=False)
    assert all(client.take() for _ in range(100))


def test_budget_client_gives_up_when_no_lease_comes() -> None:
    client = BudgetClient(lambda want: None, lease_timeout=0.01)
    client.reset(limited=True)
    assert client.take() is False and not client.exhausted
