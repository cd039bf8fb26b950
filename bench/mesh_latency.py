"""The mesh's added latency: p50 through Envoy and the model server minus a raw SavedModel call.

For a 224×224×3 input, on the tiny model and on ResNet50, over REST (JSON
``instances`` to ``serving_default``) and gRPC (``tensor_content``), each
request sent alone from one client thread on keep-alive connections. Every
figure is measured in the same run, so the differences are on one machine:

    raw        the SavedModel's signature called in-process (the peer)
    direct     the model server's own port, no Envoy
    mesh       through the Envoy ingress, as clients see it

Run: ``make bench`` or ``python -m bench.mesh_latency [--requests N] [--skip-full]``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson

from mesh.api import default_manifests, mesh_apply, mesh_down, mesh_up, model_store
from mesh.local import procs
from mesh.local.state import MeshState


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def timed(call: Callable[[], object], n: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        call()
    out = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000)
    return out


def raw_model_ms(version_dir: Path, image: np.ndarray, n: int) -> list[float]:
    import tensorflow as tf

    fn = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    batch = image[None].astype(np.float32)
    return timed(lambda: fn(input_image=tf.constant(batch))["probabilities"].numpy(), n)


def rest_ms(port: int, body: bytes, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call() -> None:
        conn.request("POST", "/v1/models/image_classifier:predict", body=body,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status == 200, data[:200]

    try:
        return timed(call, n)
    finally:
        conn.close()


def grpc_ms(port: int, image: np.ndarray, n: int) -> list[float]:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "image_classifier"
    request.inputs["input_image"].CopyFrom(tf.make_tensor_proto(image[None].astype(np.float32)))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return timed(lambda: stub.Predict(request, timeout=60), n)


def measure(label: str, state: MeshState, store: Path, image: np.ndarray, n: int) -> list[tuple[str, ...]]:
    pod = next(p for p in state.pods if p.labels.get("version") == "resnet50")
    rest_port, grpc_port = pod.ports[8501], pod.ports[8500]
    ingress = state.ingress_ports[80]
    body = orjson.dumps({"instances": [image.tolist()]})
    raw = p50(raw_model_ms(store / "resnet50" / "1", image, n))
    rows = []
    for proto, direct, mesh in (
        ("REST", lambda: rest_ms(rest_port, body, n), lambda: rest_ms(ingress, body, n)),
        ("gRPC", lambda: grpc_ms(grpc_port, image, n), lambda: grpc_ms(ingress, image, n)),
    ):
        d, m = p50(direct()), p50(mesh())
        rows.append((label, proto, f"{raw:.2f}", f"{d:.2f}", f"{m:.2f}", f"{m - raw:.2f}", f"{m - d:.2f}"))
    return rows


def run(label: str, tiny: bool, n: int, image: np.ndarray) -> list[tuple[str, ...]]:
    home = Path(tempfile.mkdtemp(prefix="canary-bench-"))
    (home / "models").mkdir()
    shared = model_store(tiny)  # reuse the project's cached export
    shared.parent.mkdir(parents=True, exist_ok=True)
    from serving.export import ensure_models

    ensure_models(shared, tiny=tiny)
    (home / "models" / ("tiny" if tiny else "full")).symlink_to(shared)
    state = mesh_up([default_manifests("base")], tiny=tiny, port=procs.free_port(), home=home)
    try:
        mesh_apply([default_manifests("routing", "virtualservice-weight-100.yaml")], home=home)
        return measure(label, state, shared, image, n)
    finally:
        mesh_down(home=home)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests per figure on the tiny model")
    parser.add_argument("--full-requests", type=int, default=40, help="requests per figure on ResNet50")
    parser.add_argument("--skip-full", action="store_true", help="tiny model only")
    args = parser.parse_args()
    image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    rows = run("tiny", True, args.requests, image)
    if not args.skip_full:
        rows += run("ResNet50", False, args.full_requests, image)
    header = ("model", "protocol", "raw p50 ms", "direct p50 ms", "mesh p50 ms", "added ms", "Envoy ms")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("added = mesh p50 - raw p50 (targets: REST <= 3 ms, gRPC <= 1 ms); Envoy = mesh p50 - direct p50")


if __name__ == "__main__":
    main()
