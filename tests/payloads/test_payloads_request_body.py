"""The committed walkthrough body (payloads/request-body.json), one image as a payload, and
REST bodies turned into the gRPC requests that ask the same."""

from __future__ import annotations

import base64
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from canary.errors import PayloadError
from payloads import (
    FORMATS,
    REQUEST_BODY,
    grpc_request_bytes,
    grpc_request_from_body,
    load_payload,
    load_payloads,
)
from payloads.gen import build_bodies
from payloads.wire import Tensor, encode_predict_request
from tests.seed import GKE_BODY

REPO = Path(__file__).resolve().parents[2]
REGENERATE = (
    "python -c \"from payloads import load_payloads, REQUEST_BODY; "
    "REQUEST_BODY.write_bytes(load_payloads().get('grace_hopper').body('b64'))\""
)


@pytest.fixture(scope="module")
def photo():
    return load_payloads().get("grace_hopper")


def test_the_committed_body_is_what_the_payload_library_builds(photo) -> None:
    assert REQUEST_BODY == REPO / "payloads" / "request-body.json"
    assert REQUEST_BODY.read_bytes() == photo.body("b64"), f"stale; regenerate with {REGENERATE}"


def test_the_committed_body_is_the_gke_walkthroughs_byte_for_byte() -> None:
    if not GKE_BODY.is_file():
        pytest.skip(f"seed fixture {GKE_BODY} not available (only a development checkout has it)")
    assert REQUEST_BODY.read_bytes() == GKE_BODY.read_bytes()


def test_the_committed_body_ships_with_the_package() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "request-body.json" in project["tool"]["setuptools"]["package-data"]["payloads"]


def test_the_generator_writes_the_same_body_under_its_own_name(tmp_path: Path) -> None:
    out = build_bodies(out=tmp_path / "bodies")
    assert (out / "grace_hopper.b64.json").read_bytes() == REQUEST_BODY.read_bytes()
    assert not (out / REQUEST_BODY.name).exists()


def test_one_image_is_the_payload_its_folder_makes(photo) -> None:
    one = load_payload(photo.image)
    assert (one.id, one.label) == ("grace_hopper", None)
    assert all(one.body(fmt) == photo.body(fmt) for fmt in FORMATS)
    assert load_payload(photo.image, size=None).pixels.shape == (600, 512, 3)
    with pytest.raises(PayloadError, match="does not exist"):
        load_payload(photo.image.with_name("nope.jpg"))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("version", [None, 1])
def test_a_rest_body_becomes_the_grpc_request_of_the_same_payload(photo, fmt: str, version) -> None:
    assert grpc_request_from_body(photo.body(fmt), version=version) == grpc_request_bytes(
        photo, fmt, version=version
    )


def test_wrapped_base64_and_several_instances_are_read() -> None:
    jpegs = [b"\xff\xd8\xff one", b"\xff\xd8\xff two"]
    wrapped = [base64.encodebytes(j * 20).decode() for j in jpegs]  # line breaks, as `base64` prints
    assert all("\n" in w.strip() for w in wrapped)
    body = json.dumps({"signature_name": "serving_preprocess", "instances": [{"b64": w} for w in wrapped]})
    expected = encode_predict_request(
        "image_classifier", {"bytes_inputs": Tensor.string_list([j * 20 for j in jpegs])}, signature_name="serving_preprocess"
    )
    assert grpc_request_from_body(body) == expected
    pixels = np.arange(2 * 2 * 3, dtype=np.float32).reshape(1, 2, 2, 3)
    assert grpc_request_from_body(f'{{"instances": {pixels.tolist()}}}') == encode_predict_request(
        "image_classifier", {"input_image": Tensor.floats(pixels)}, signature_name="serving_default"
    )


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("{", "not JSON"),
        ("[1]", "non-empty \"instances\""),
        ('{"inputs": [[[[1, 2, 3]]]]}', "non-empty \"instances\""),
        ('{"instances": []}', "non-empty \"instances\""),
        ('{"signature_name": "other", "instances": [1]}', "signature_name 'other'"),
        ('{"signature_name": "serving_preprocess", "instances": [{"b64": "!!"}]}', "not base64"),
        ('{"signature_name": "serving_preprocess", "instances": [[[[1, 2, 3]]]]}', '"b64"'),
        ('{"instances": [{"b64": "aGk="}]}', "H x W x 3"),
        ('{"instances": [[1, 2, 3]]}', "H x W x 3"),
        ('{"instances": [[[[1, 2]]]]}', "H x W x 3"),
    ],
)
def test_other_bodies_are_refused_with_the_reason(body: str, error: str) -> None:
    with pytest.raises(PayloadError, match=error.replace("(", r"\(")) as info:
        grpc_request_from_body(body)
    assert info.value.exit_code == 3
