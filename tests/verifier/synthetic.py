"""Synthetic run directories for the verifier's tests, in the load test's format.

Records are drawn from a known truth (a split per protocol x group, latency
distributions per subset) with a seeded generator and written with
``loadtest.records.SCHEMA``, as ``canary load`` writes them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from canary.rundir import SCHEMA

START = dt.datetime(2026, 1, 31, 12, 0, 0, tzinfo=dt.UTC)
PAYLOADS = ("grace_hopper", "cat", "dog", "ship", "noise")
LABELS: dict[str, int | None] = {"grace_hopper": 653, "cat": 281, "dog": 207, "ship": 510, "noise": None}
# each subset's top-1 per payload: resnet50 right on 3 of 4 labelled, resnet101 on 4 of 4
TOP1 = {
    "resnet50": {"grace_hopper": 653, "cat": 281, "dog": 207, "ship": 999, "noise": 1},
    "resnet101": {"grace_hopper": 653, "cat": 281, "dog": 207, "ship": 510, "noise": 2},
}
CELLS = (("rest", "default"), ("rest", "canary"), ("grpc", "default"), ("grpc", "canary"))
WEIGHT_70 = {"resnet50": 0.7, "resnet101": 0.3}
ONLY_50 = {"resnet50": 1.0, "resnet101": 0.0}
ONLY_101 = {"resnet50": 0.0, "resnet101": 1.0}


def draw_counts(shares: Mapping[str, float], n: int, rng: np.random.Generator) -> dict[str, int]:
    names = list(shares)
    drawn = rng.multinomial(n, [shares[s] for s in names])
    return {s: int(c) for s, c in zip(names, drawn, strict=True)}


def make_run(
    root: Path,
    counts: Mapping[tuple[str, str], Mapping[str, int]],
    *,
    seed: int = 0,
    latency: Mapping[str, tuple[float, float]] | None = None,  # subset -> (median ms, log sd)
    mesh: Any = "auto",  # "auto": Envoy delta = fingerprint counts; None: not the local mesh; dict: delta
    header: str = "user-group: canary",
    status: str = "finished",
    calibration_subsets: Sequence[str] = ("resnet101", "resnet50"),
    expected: Mapping[str, Mapping[str, float]] | None = None,
    run_extra: Mapping[str, Any] | None = None,
    chunks: int = 2,
) -> Path:
    """Write a run directory holding exactly ``counts`` (subset, "unknown", "error") per cell
    (keys ``(protocol, group)``, or ``(phase, protocol, group)``); request i starts at
    START + i ms, in the order given."""
    rng = np.random.default_rng(seed)
    latency = latency or {"resnet50": (40.0, 0.25), "resnet101": (40.0, 0.25)}
    columns: dict[str, list[Any]] = {f.name: [] for f in SCHEMA}
    seq = 0
    for key, per_subset in counts.items():
        phase, protocol, group = key if len(key) == 3 else (0, *key)  # type: ignore[misc]
        for subset, n in per_subset.items():
            for _ in range(n):
                payload = PAYLOADS[int(rng.integers(len(PAYLOADS)))]
                ok = subset != "error"
                median, sd = latency.get(subset, (40.0, 0.25))
                columns["time"].append(int((START.timestamp() + seq * 0.001) * 1e6))
                columns["protocol"].append(protocol)
                columns["group"].append(group)
                columns["header"].append(header if group == "canary" else "")
                columns["user"].append(seq % 10)
                columns["payload_id"].append(payload)
                columns["format"].append("instances" if seq % 2 else "b64")
                columns["path"].append(
                    "/tensorflow.serving.PredictionService/Predict" if protocol == "grpc"
                    else "/v1/models/image_classifier:predict"
                )
                columns["versioned"].append(False)
                columns["status"].append(("200" if protocol == "rest" else "OK") if ok else "503")
                columns["ok"].append(ok)
                columns["latency_ms"].append(float(median * np.exp(sd * rng.standard_normal())))
                columns["bytes"].append(4000)
                columns["subset"].append(subset)
                columns["distance"].append(0.0 if subset in TOP1 else None)
                top = TOP1.get(subset, {}).get(payload) if ok else None
                columns["top1"].append(top)
                columns["top5"].append([top] if top is not None else None)
                columns["label"].append(LABELS[payload])
                columns["model_version"].append(1 if ok else None)
                columns["error"].append(None if ok else "HTTP 503")
                columns["worker"].append("local")
                columns["seq"].append(seq)
                columns["phase"].append(phase)
                columns["server_ms"].append(round(0.8 * columns["latency_ms"][-1]) if ok else None)  # Envoy: whole ms
                seq += 1
    table = pa.Table.from_pydict(columns, schema=SCHEMA)
    records = root / "records"
    records.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, table.num_rows, chunks + 1).astype(int)
    for i in range(chunks):
        start, stop = int(bounds[i]), int(bounds[i + 1])
        if i + 1 < chunks and stop > start:
            stop += 1  # one row written twice, as a re-sent batch would be: read once
        pq.write_table(table.slice(start, max(0, min(stop, table.num_rows) - start)), records / f"part-{i:05d}.parquet")
    fingerprint: dict[str, int] = {}
    for per_subset in counts.values():
        for subset, n in per_subset.items():
            if subset not in ("unknown", "error"):
                fingerprint[subset] = fingerprint.get(subset, 0) + n
    if mesh == "auto":
        mesh_doc: dict[str, Any] = {"local": True, "delta": {"": 0, **fingerprint}}
    elif mesh is None:
        mesh_doc = {"local": False}
    else:
        mesh_doc = {"local": True, **mesh}
    users: dict[str, dict[str, int]] = {}
    for key in counts:
        protocol, group = key[-2], key[-1]
        users.setdefault(protocol, {})[group] = 5
    end = START + dt.timedelta(seconds=max(1.0, seq * 0.001))
    run = {
        "format": 1,
        "run_id": root.name,
        "status": status,
        "started_at": START.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "ended_at": end.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "arguments": {"canary": {"canary_header": header, "model_name": "image_classifier"}},
        "calibration": {"subsets": sorted(calibration_subsets)},
        "expected": {g: {"shares": dict(s)} for g, s in (expected or {}).items()},
        "users": users,
        "mesh": mesh_doc,
        "problems": [],
        **(run_extra or {}),
    }
    (root / "run.json").write_bytes(orjson.dumps(run))
    (root / "calibration.json").write_bytes(
        orjson.dumps({"format": 1, "subsets": sorted(calibration_subsets), "meta": {}})
    )
    return root


def drawn_run(
    root: Path,
    truth: Mapping[tuple[str, str], Mapping[str, float]],
    n: int,
    *,
    seed: int = 0,
    **options: Any,
) -> Path:
    """A run whose counts per cell are a multinomial draw of ``n`` from ``truth``."""
    rng = np.random.default_rng(seed)
    counts = {cell: draw_counts(shares, n, rng) for cell, shares in truth.items()}
    return make_run(root, counts, seed=seed + 1, **options)
