"""`canary predict` without a mesh: reading the input, a fake ingress, the errors, the output.

The mesh-backed cases (fingerprinting the subset that answered, over REST and
gRPC, with and without the canary header) are in tests/integration/test_local_mesh.py.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import orjson
import pytest

from canary.errors import (
    CanaryError,
    MeshNotRunningError,
    PayloadError,
    RequestFailedError,
    UsageError,
)
from commands.cli import main as canary
from loadtest.predict import (
    ClassScore,
    Identification,
    PredictInput,
    PredictResult,
    predict,
    read_input,
    result_lines,
)
from mesh.local.procs import free_port
from payloads import REQUEST_BODY, grpc_request_bytes, load_payloads

PHOTO = load_payloads().get("grace_hopper")
PATH = "/v1/models/image_classifier:predict"


@dataclass
class FakeIngress:
    """A REST predict endpoint on loopback answering ``status`` and ``answer``; it keeps what it got."""

    status: int = 200
    answer: bytes = b""
    got: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def ingress() -> Iterator[FakeIngress]:
    fake = FakeIngress(answer=orjson.dumps({"predictions": [_vector().tolist()]}))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            fake.got.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(fake.status)
            self.send_header("Content-Length", str(len(fake.answer)))
            self.end_headers()
            self.wfile.write(fake.answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _vector() -> np.ndarray:
    v = np.full(1000, 0.0005, dtype=np.float32)
    v[[652, 457, 834]] = [0.453, 0.209, 0.194]  # the walkthrough's top-3 for the photo
    return v


# ---------------------------------------------------------------- input


def test_the_default_input_is_the_committed_walkthrough_body() -> None:
    rest = read_input()
    assert (rest.source, rest.kind, rest.protocol) == (REQUEST_BODY, "json", "rest")
    assert rest.body == REQUEST_BODY.read_bytes() == PHOTO.body("b64")
    assert read_input(protocol="grpc").body == grpc_request_bytes(PHOTO, "b64")


def test_a_jpeg_goes_as_its_b64_body(tmp_path: Path) -> None:
    image = shutil.copy(PHOTO.image, tmp_path / "photo.jpeg")
    rest = read_input(Path(image))
    assert (rest.kind, rest.body) == ("jpeg", PHOTO.body("b64"))
    assert read_input(Path(image), "grpc").body == grpc_request_bytes(PHOTO, "b64")


def test_a_minikube_style_body_goes_over_grpc_as_pixels(tmp_path: Path) -> None:
    body = tmp_path / "minikube.json"
    body.write_bytes(PHOTO.body("instances"))
    assert read_input(body).body == PHOTO.body("instances")
    assert read_input(body, "grpc").body == grpc_request_bytes(PHOTO, "instances")


@pytest.mark.parametrize(
    ("name", "content", "protocol", "error", "message"),
    [
        ("missing.json", None, "rest", UsageError, "cannot read"),
        ("notes.txt", b"hello", "rest", UsageError, "neither a JSON request body nor a JPEG"),
        ("body.json", b'{"instances": [', "rest", UsageError, "not valid JSON"),
        ("body.json", b"[1, 2]", "rest", UsageError, "a predict body is a JSON object"),
        ("body.json", b'{"instances": [[1], [2]]}', "rest", UsageError, "holds 2 instances"),
        ("body.json", b'{"inputs": [[1]]}', "grpc", PayloadError, "body.json: the request body must"),
        ("broken.jpg", b"\xff\xd8\xff\xe0 not really", "rest", PayloadError, "cannot decode"),
    ],
)
def test_unreadable_input_is_a_usage_error(
    tmp_path: Path, name: str, content: bytes | None, protocol, error: type[CanaryError], message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(error, match=message) as info:
        read_input(path, protocol)
    assert info.value.exit_code == 3


# ---------------------------------------------------------------- a fake ingress


def test_one_request_as_the_curl_step_sends_it(ingress: FakeIngress, tmp_path: Path) -> None:
    result = predict(read_input(), host=ingress.url, headers=[("user-group", "canary")], home=tmp_path)
    [(path, headers, body)] = ingress.got
    assert (path, headers["user-group"], body) == (PATH, "canary", REQUEST_BODY.read_bytes())
    assert headers["content-type"] == "application/json"
    assert result.status == "200" and result.target == f"POST {ingress.url}{PATH}"
    assert [(s.index, s.name) for s in result.top] == [
        (652, "military uniform"), (457, "bow tie"), (834, "suit"), (0, "tench"), (1, "goldfish"),
    ]
    assert result.top[0].probability == pytest.approx(0.453)
    assert result.identity.subset is None and "not the running local mesh's ingress" in (
        result.identity.reason or ""
    )
    assert result.weights == {} and result.labels_note is None


def test_top_asks_for_more_or_fewer_classes(ingress: FakeIngress, tmp_path: Path) -> None:
    assert len(predict(read_input(), host=ingress.url, top=2, home=tmp_path).top) == 2
    with pytest.raises(UsageError, match="--top must be at least 1"):
        predict(read_input(), host=ingress.url, top=0, home=tmp_path)
    assert len(ingress.got) == 1  # a refused --top sends nothing


@pytest.mark.parametrize(
    ("status", "answer", "message"),
    [
        (404, b'{ "error": "Servable not found for request: Latest(nope)" }',
         "answered HTTP 404 Not Found: Servable not found for request: Latest(nope)"),
        (503, b"upstream connect error or disconnect/reset before headers\n", "HTTP 503 Service Unavailable: upstream"),
        (200, b'{"predictions": [[0.1], [0.2]]}', "answered 200, but not with one prediction"),
        (200, b"<html>", "answered 200, but not with one prediction"),
    ],
)
def test_an_error_answer_is_a_failed_request(
    ingress: FakeIngress, tmp_path: Path, status: int, answer: bytes, message: str
) -> None:
    ingress.status, ingress.answer = status, answer
    with pytest.raises(RequestFailedError, match=re.escape(message)) as info:
        predict(read_input(), host=ingress.url, home=tmp_path)
    assert info.value.exit_code == 1 and "\n" not in str(info.value)


def test_grpc_to_a_server_that_does_not_speak_it_is_a_failed_request(
    ingress: FakeIngress, tmp_path: Path
) -> None:
    with pytest.raises(RequestFailedError, match=r"gRPC .* failed: ") as info:
        predict(read_input(protocol="grpc"), host=ingress.url, home=tmp_path, timeout=10)
    assert info.value.exit_code == 1


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_nothing_listening_is_said_at_once(tmp_path: Path, protocol) -> None:
    host = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UsageError, match=r"nothing answers at 127\.0\.0\.1:.*canary mesh up") as info:
        predict(read_input(protocol=protocol), host=host, home=tmp_path, timeout=10)
    assert info.value.exit_code == 3


def test_without_host_it_needs_the_local_mesh(tmp_path: Path) -> None:
    with pytest.raises(MeshNotRunningError, match="no local mesh is running") as info:
        predict(read_input(), home=tmp_path)
    assert info.value.exit_code == 3


# ---------------------------------------------------------------- the command line


def test_the_command_prints_the_classes_and_exits_by_outcome(
    ingress: FakeIngress, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CANARY_HOME", str(tmp_path))
    assert canary(["predict", "--host", ingress.url, "--header", "User-Group: canary", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert f"POST {ingress.url}{PATH} (user-group: canary) -> 200" in out
    assert "1. military uniform (652)" in out and "3. suit (834)" in out and "tench" not in out
    assert ingress.got[0][1]["user-group"] == "canary"
    ingress.status = 500
    assert canary(["predict", "--host", ingress.url]) == 1
    assert canary(["predict", "--host", ingress.url, str(tmp_path / "missing.json")]) == 3
    assert canary(["predict", "--header", "no-colon"]) == 3
    err = capsys.readouterr().err
    assert "HTTP 500" in err and "cannot read" in err and "--header 'no-colon'" in err
    assert len(ingress.got) == 2  # nothing sent for bad input


# ---------------------------------------------------------------- output


def _result(identity: Identification, weights: dict[str, str]) -> PredictResult:
    request = PredictInput(REQUEST_BODY, "json", "rest", b"{}")
    top = (ClassScore(652, "military uniform", 0.453), ClassScore(457, "bow tie", 0.0209))
    return PredictResult(request, f"POST http://127.0.0.1:8080{PATH}", (("user-group", "canary"),), "200",
                         12.3, top, identity, weights)


def test_the_output_names_classes_subset_and_caveat() -> None:
    lines = result_lines(_result(Identification("resnet101", 0.0, "exact"), {"resnet101": "seeded"}))
    assert lines == [
        f"POST http://127.0.0.1:8080{PATH} (user-group: canary) -> 200 in 12 ms",
        f"input: {REQUEST_BODY} (a JSON body)",
        "top 2:",
        "   1. military uniform (652)  0.453",
        "   2. bow tie (457)           0.0209",
        "answered by: resnet101 (the answer is bit-identical to resnet101's own answer to this request)",
        "note: the weights of resnet101 are seeded (random), not trained on ImageNet: "
        "these class names mean nothing",
    ]


@pytest.mark.parametrize(
    ("identity", "weights", "answered", "note"),
    [
        (Identification("resnet50", 3e-7, "tolerance"), {"resnet50": "imagenet", "resnet101": "seeded"},
         "resnet50 (the answer is within 3e-07 (tolerance 1e-05) of resnet50's own answer", None),
        (Identification(None, reason="cannot tell: alike"), {"resnet50": "seeded", "resnet101": "seeded"},
         "unknown (cannot tell: alike)", "resnet101, resnet50 are seeded (random), not trained on ImageNet: these"),
        (Identification(None, reason="why"), {"resnet50": "imagenet", "resnet101": "seeded"},
         "unknown (why)", "resnet101 are seeded (random), not trained on ImageNet: if it answered"),
        (Identification(None, reason="not the local mesh"), {}, "unknown (not the local mesh)", None),
    ],
)
def test_the_caveat_follows_the_weights_of_who_answered(identity, weights, answered: str, note) -> None:
    lines = result_lines(_result(identity, weights))
    assert lines[5].startswith(f"answered by: {answered}")
    if note is None:
        assert len(lines) == 6
    else:
        assert note in lines[6] and lines[6].startswith("note: ")
