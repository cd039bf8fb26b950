"""Request parsing under hypothesis: no exception escapes, no 5xx, a JSON error for every refusal.

Brief here (a few seconds); ``python -m bench.fuzz_parsing --examples N`` runs the same
properties longer. The strategies and properties live in tests/serving/fuzz_kit.py.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.serving.conftest import RunningServer
from tests.serving.fuzz_kit import (
    bodies,
    check_decode,
    check_paths_agree,
    check_rest,
    numeric_arrays,
    rest_paths,
)

BRIEF = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@BRIEF
@given(bodies())
@example(b'{"signature_name": "bytes", "inputs": []}')  # found by bench.fuzz_parsing: argmax of nothing
@example(b'{"instances": [' + b"0," * 600_000 + b"]}")  # numbers only, malformed, too large for the general parser
def test_decoding_any_body_refuses_or_decodes(body: bytes) -> None:
    check_decode(body)


@BRIEF
@given(numeric_arrays(), st.sampled_from(["instances", "inputs"]), st.sampled_from(["floats", "doubles", "ints", "bytes", ""]))
def test_fast_and_general_paths_agree_on_numeric_arrays(text: bytes, key: str, signature: str) -> None:
    check_paths_agree(text, key, signature)


@pytest.fixture(scope="module")
def connection(server: RunningServer) -> Iterator[http.client.HTTPConnection]:
    opened = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    yield opened
    opened.close()


@settings(BRIEF, max_examples=100)
@given(rest_paths(), bodies())
def test_the_rest_api_answers_every_body_in_json(
    server: RunningServer, connection: http.client.HTTPConnection, path: str, body: bytes
) -> None:
    check_rest(connection, path, body)


def test_the_server_logged_no_traceback(server: RunningServer, connection: http.client.HTTPConnection) -> None:
    check_rest(connection, "/v1/models/image_classifier:predict", b'{"instances": [[[[1, 2, 3]]]]}')
    assert "Traceback" not in server.log.read_text()
    assert server.process.poll() is None
