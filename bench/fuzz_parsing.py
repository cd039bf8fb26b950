"""Request-parsing fuzzing, longer than the test suite's brief run.

The properties of tests/serving/test_serving_fuzz.py (strategies and checks in
tests/serving/fuzz_kit.py), with as many examples as asked:

    decode       any body through ``decode_json_request``: tensors, or a
                 RequestError with a client's code; no other exception
    fast=general a rectangular numeric array decodes alike on the fast path
                 (serving.jsonarray) and the general one
    rest         bodies POSTed to a real model server (the tiny model, started
                 here): an answer below 500, in JSON, ``{"error": ...}`` when refused

For each: examples run (hypothesis calls, shrinking included), failures (distinct
bugs, each with its falsifying example), seconds. Exit status 1 when any failed.

Run: ``python -m bench.fuzz_parsing [--examples N] [--rest-examples N] [--seed S] [--no-server]``.
"""

from __future__ import annotations

import argparse
import http.client
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hypothesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serving.conftest import MODEL_NAME, free_port, serving
from tests.serving.fuzz_kit import (
    bodies,
    check_decode,
    check_paths_agree,
    check_rest,
    numeric_arrays,
    rest_paths,
)


def run(name: str, check: Callable[..., Any], strategies: list[Any], examples: int, seed: int | None) -> bool:
    """Run one property for ``examples`` examples; print a line (and each failure); True when it held."""
    calls = 0

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=True,
    )
    @given(st.tuples(*strategies))
    def prop(args: tuple[Any, ...]) -> None:
        nonlocal calls
        calls += 1
        check(*args)

    if seed is not None:
        prop = hypothesis.seed(seed)(prop)
    failures: list[BaseException] = []
    started = time.perf_counter()
    try:
        prop()
    except BaseExceptionGroup as group:
        failures = list(group.exceptions)
    except Exception as error:
        failures = [error]
    seconds = time.perf_counter() - started
    print(f"{name:<13} {calls:>9,} {len(failures):>9} {seconds:>9.1f}")
    for failure in failures:
        notes = "\n".join(getattr(failure, "__notes__", []))
        print(f"  {type(failure).__name__}: {str(failure)[:500]}\n  {notes}")
    return not failures


@contextmanager
def tiny_server() -> Iterator[int]:
    """A model server on the tiny model, on free loopback ports; yields its REST port."""
    from serving.export import ensure_models

    with tempfile.TemporaryDirectory(prefix="canary-fuzz-") as folder:
        store = Path(folder) / "store"
        ensure_models(store, tiny=True)
        log = Path(folder) / "server.log"
        flags = [f"--model_name={MODEL_NAME}", f"--model_base_path={store / 'resnet50'}",
                 f"--port={free_port()}", f"--rest_api_port={free_port()}"]
        with serving(flags, {}, log) as running:
            yield running.rest_port
        if "Traceback" in log.read_text():
            print(f"the server logged a traceback:\n{log.read_text()[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="examples per in-process property")
    parser.add_argument("--rest-examples", type=int, default=None, help="examples sent to the server (default examples/4)")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed, to replay a run")
    parser.add_argument("--no-server", action="store_true", help="skip the REST property (no TensorFlow needed)")
    args = parser.parse_args(argv)
    rest_examples = args.rest_examples if args.rest_examples is not None else max(1, args.examples // 4)
    print(f"machine: {platform.machine()}, Python {platform.python_version()}, hypothesis {hypothesis.__version__}")
    print(f"{'property':<13} {'examples':>9} {'failures':>9} {'seconds':>9}")
    held = run("decode", check_decode, [bodies()], args.examples, args.seed)
    held &= run(
        "fast=general",
        check_paths_agree,
        [numeric_arrays(), st.sampled_from(["instances", "inputs"]), st.sampled_from(["floats", "doubles", "ints", "bytes", ""])],
        args.examples,
        args.seed,
    )
    if not args.no_server:
        with tiny_server() as port:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            held &= run(
                "rest",
                lambda path, body: check_rest(connection, path, body),
                [rest_paths(), bodies()],
                rest_examples,
                args.seed,
            )
            connection.close()
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
