"""tensorflow_model_server flags, container path mapping, status codes and metrics text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from canary.errors import ServingError
from serving.flags import FlagError, flag_help, map_container_path, parse_flags
from serving.limits import DEFAULT_MAX_REQUEST_BYTES
from serving.metrics import LATENCY_BUCKETS_US, Metrics
from serving.status import Code, RequestError, from_exception, http_status

BASE = ["--model_base_path=/models/m"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (BASE, {"port": 8500, "rest_api_port": 8501, "model_name": "default"}),
        (["--port=9000", "--model_name=x", *BASE], {"port": 9000, "model_name": "x"}),
        (["--port", "9000", *BASE], {"port": 9000}),
        (["--port=8500", "--rest_api_port=8501", *BASE, "--port=1234", "--rest_api_port=0"],
         {"port": 1234, "rest_api_port": 0}),
        (["-port=7", *BASE], {"port": 7}),
        (["--enable_batching", *BASE], {}),
        (["--enable_model_warmup=false", *BASE], {"enable_model_warmup": False}),
        (["--noenable_model_warmup", *BASE], {"enable_model_warmup": False}),
        (["--rest_api_enable_cors_support", "true", *BASE], {"rest_api_enable_cors_support": True}),
        (["--file_system_poll_wait_seconds=0", *BASE], {"file_system_poll_wait_seconds": 0}),
        (["--per_process_gpu_memory_fraction=0.5", "--grpc_channel_arguments=a=1", *BASE], {}),
        (["--version"], {"version": True}),
        # TF Serving's flags that change nothing here are accepted and named as ignored.
        (["--enable_per_model_batching_parameters", "--num_request_iterations_for_warmup=3",
          "--xla_gpu_compilation_enabled=false", "--enable_batching", *BASE],
         {"ignored": ("enable_batching", "enable_per_model_batching_parameters",
                      "num_request_iterations_for_warmup", "xla_gpu_compilation_enabled")}),
        (["--enable_serialization_as_tensor_content=true", *BASE],
         {"enable_serialization_as_tensor_content": True, "ignored": ()}),
        (["--model_config_file=/c.conf", "--model_config_file_poll_wait_seconds=5"],
         {"model_config_file": "/c.conf", "model_config_file_poll_wait_seconds": 5, "model_base_path": ""}),
        (BASE, {"canary_max_request_bytes": 64 * 2**20, "enable_signature_method_name_check": False}),
        (["--canary_max_request_bytes=1048576", "--enable_signature_method_name_check", *BASE],
         {"canary_max_request_bytes": 1048576, "enable_signature_method_name_check": True}),
    ],
)
def test_parses_tf_serving_flags(argv: list[str], expected: dict[str, object]) -> None:
    flags = parse_flags(argv)
    for name, value in expected.items():
        assert getattr(flags, name) == value


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--model_nme=x", *BASE], "Did you mean --model_name?"),
        (["--bogus", *BASE], "unknown flag --bogus"),
        (["positional", *BASE], "unexpected argument 'positional'"),
        (["--port=abc", *BASE], "expects an integer"),
        (["--port=70000", *BASE], "not a TCP port"),
        (["--enable_batching=maybe", *BASE], "expects true or false"),
        ([], "--model_base_path (the directory holding numbered version directories"),
        (["--port=9000", "--rest_api_port=9000", *BASE], "cannot be the same as --port"),
        (["--ssl_config_file=/s.conf", *BASE], "--ssl_config_file is not supported"),
        (["--port"], "needs a value"),
        (["--canary_max_request_bytes=0", *BASE], "must lie between 1 and 2147483647"),
        (["--canary_max_request_bytes=2147483648", *BASE], "must lie between 1 and 2147483647"),
        (["--canary_max_request_bytes=64MiB", *BASE], "expects an integer"),
    ],
)
def test_bad_flags_are_usage_errors(argv: list[str], fragment: str) -> None:
    with pytest.raises(FlagError) as caught:
        parse_flags(argv)
    assert fragment in str(caught.value)
    assert caught.value.exit_code == 2
    assert isinstance(caught.value, ServingError)


@pytest.mark.parametrize(
    ("mounts", "path", "expected"),
    [
        (None, "/models/resnet50", "/models/resnet50"),
        ({"/models": "/store"}, "/models/resnet50", "/store/resnet50"),
        ({"/models": "/store"}, "/models", "/store"),
        ({"/models": "/a", "/models/resnet50": "/b"}, "/models/resnet50/1", "/b/1"),
        ({"/": "/root"}, "/models/x", "/root/models/x"),
    ],
)
def test_container_paths_map_through_the_longest_mount(
    mounts: dict[str, str] | None, path: str, expected: str
) -> None:
    env = {} if mounts is None else {"CANARY_VOLUME_MAP": json.dumps(mounts)}
    assert map_container_path(path, env) == Path(expected)


@pytest.mark.parametrize("path", ["/models2/x", "/etc/passwd", "/"])
def test_a_path_under_no_volume_is_refused_when_volumes_are_mapped(path: str) -> None:
    # a pod reads its volumes only: this holds a --model_config_file's base paths too
    with pytest.raises(FlagError, match=r"lies under none of the pod's volumes \(/models\)"):
        map_container_path(path, {"CANARY_VOLUME_MAP": json.dumps({"/models": "/store"})})


@pytest.mark.parametrize("raw", ["{not json", '["/models"]', '{"/models": 3}'])
def test_bad_volume_map_is_a_usage_error(raw: str) -> None:
    with pytest.raises(FlagError, match="CANARY_VOLUME_MAP"):
        map_container_path("/models/x", {"CANARY_VOLUME_MAP": raw})


def test_server_cli_rejects_unknown_flags_with_exit_code_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "serving.server", "--model_base_path=/x", "--frobnicate=1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "unknown flag --frobnicate" in result.stderr


def test_server_cli_fails_fast_on_a_missing_base_path(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "serving.server", f"--model_base_path={tmp_path / 'missing'}", "--port=0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Could not find base path" in result.stderr


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (Code.OK, 200),
        (Code.INVALID_ARGUMENT, 400),
        (Code.FAILED_PRECONDITION, 400),
        (Code.OUT_OF_RANGE, 400),
        (Code.NOT_FOUND, 404),
        (Code.DEADLINE_EXCEEDED, 504),
        (Code.RESOURCE_EXHAUSTED, 429),
        (Code.UNIMPLEMENTED, 501),
        (Code.INTERNAL, 500),
        (Code.UNAVAILABLE, 503),
        (Code.UNAUTHENTICATED, 401),
        (Code.CANCELLED, 499),
    ],
)
def test_http_status_mapping_is_tf_servings(code: Code, status: int) -> None:
    assert http_status(code) == status


def test_tensorflow_op_errors_keep_their_code() -> None:
    import tensorflow as tf

    try:
        tf.io.decode_jpeg(b"not a jpeg")
    except tf.errors.OpError as error:
        mapped = from_exception(error)
    assert mapped.code is Code.INVALID_ARGUMENT
    assert mapped.message.startswith("Unknown image file format"), mapped.message
    internal = from_exception(ValueError("boom"))
    assert internal.code is Code.INTERNAL
    assert "boom" in internal.message and "ValueError" not in internal.message  # no Python class names
    original = RequestError(Code.NOT_FOUND, "x")
    assert from_exception(original) is original


def test_metrics_render_with_tf_serving_names() -> None:
    metrics = Metrics()
    metrics.record_request("m", Code.OK)
    metrics.record_request("m", Code.OK)
    metrics.record_request("m", Code.INVALID_ARGUMENT)
    metrics.record_latency("m", "predict", "REST", Code.OK, 15.0)
    metrics.record_latency("m", "predict", "REST", Code.OK, 5e9)
    metrics.record_runtime('we"ird\\name', "Predict", 12.0)
    text = metrics.render()
    assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 2' in text
    assert "request_count_total" not in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    counts = {
        (s.labels["model_name"], s.labels["status"]): s.value
        for s in families[":tensorflow:serving:request_count"].samples
    }
    assert counts == {("m", "OK"): 2, ("m", "INVALID_ARGUMENT"): 1}
    latency = families[":tensorflow:serving:request_latency"]
    assert latency.type == "histogram"
    buckets = [s for s in latency.samples if s.name.endswith("_bucket")]
    assert len(buckets) == len(LATENCY_BUCKETS_US) + 1
    assert {s.labels["le"]: s.value for s in buckets}["18"] == 1  # 15 us falls in le=18
    assert buckets[-1].value == 2
    assert {s.labels["API"] for s in buckets} == {"predict"}
    runtime = families[":tensorflow:serving:runtime_latency"]
    assert {s.labels["model_name"] for s in runtime.samples} == {'we"ird\\name'}


def test_help_documents_the_request_size_limit() -> None:
    text = flag_help()
    line = f"--canary_max_request_bytes=int (default {DEFAULT_MAX_REQUEST_BYTES!r})"
    assert line in text
    explained = text.split(line, 1)[1].splitlines()[1]
    assert "413" in explained and "RESOURCE_EXHAUSTED" in explained and "canary's own" in explained
    assert "--enable_signature_method_name_check=bool (default False)\n" in text


def test_a_link_out_of_the_volume_is_refused_and_one_inside_followed(tmp_path: Path) -> None:
    store, outside = tmp_path / "store", tmp_path / "outside"
    (store / "real").mkdir(parents=True)
    outside.mkdir()
    (store / "evil").symlink_to(outside)
    (store / "alias").symlink_to(store / "real")
    linked_store = tmp_path / "linked-store"
    linked_store.symlink_to(store)  # the volume itself may be a link (the tests' model store is)
    env = {"CANARY_VOLUME_MAP": json.dumps({"/models": str(linked_store)})}
    assert map_container_path("/models/alias/resnet50", env) == linked_store / "alias" / "resnet50"
    with pytest.raises(FlagError, match="outside its volume /models"):
        map_container_path("/models/evil/resnet50", env)
