"""Exported tiny models: signatures, cache, determinism, and distinct outputs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from canary.errors import ExportError
from serving.export import MODEL_INFO_FILE, ensure_models, export_model, read_model_info
from serving.servable import Servable, load_servable
from serving.tensors import DType
from tests.serving.conftest import GRACE_HOPPER


@pytest.fixture(scope="module")
def servables(serving_store: Path) -> dict[str, Servable]:
    return {name: load_servable(name, 1, serving_store / name / "1") for name in ("resnet50", "resnet101")}


def photo_pixels() -> np.ndarray:
    import tensorflow as tf

    image = tf.io.decode_jpeg(GRACE_HOPPER.read_bytes(), channels=3).numpy()
    return image[None].astype(np.float32)


def predict(servable: Servable, signature: str, value: np.ndarray) -> np.ndarray:
    found = servable.signature(signature)
    outputs, _ = servable.run(found, {next(iter(found.inputs)): value})
    probabilities: np.ndarray = outputs["probabilities"]
    return probabilities


def test_store_layout_and_model_info(serving_store: Path) -> None:
    for name, seed in (("resnet50", 50), ("resnet101", 101)):
        version = serving_store / name / "1"
        assert (version / "saved_model.pb").is_file()
        info = json.loads((version / MODEL_INFO_FILE).read_text())
        assert info["architecture"] == "TinyResNet"
        assert info["weights"] == "seeded"
        assert info["seed"] == seed
        assert info["exporter"] == 1
        assert isinstance(info["key"], str) and len(info["key"]) == 64
    assert not [p for p in (serving_store / "resnet50").iterdir() if p.name.startswith(".")]


def test_both_signatures_have_one_input_and_one_output(servables: dict[str, Servable]) -> None:
    signatures = servables["resnet50"].signatures
    default, preprocess = signatures["serving_default"], signatures["serving_preprocess"]
    assert list(default.inputs) == ["input_image"]
    assert default.inputs["input_image"].dtype is DType.DT_FLOAT
    assert default.inputs["input_image"].shape == (-1, -1, -1, 3)
    assert list(preprocess.inputs) == ["bytes_inputs"]
    assert preprocess.inputs["bytes_inputs"].dtype is DType.DT_STRING
    assert preprocess.inputs["bytes_inputs"].shape == (-1,)
    for signature in (default, preprocess):
        assert list(signature.outputs) == ["probabilities"]
        assert signature.outputs["probabilities"].shape == (-1, 1000)
        assert signature.method_name == "tensorflow/serving/predict"


def test_cached_export_is_a_no_op(serving_store: Path) -> None:
    pb = serving_store / "resnet50" / "1" / "saved_model.pb"
    before = pb.stat().st_mtime_ns
    started = time.monotonic()
    paths = ensure_models(serving_store, tiny=True)
    assert time.monotonic() - started < 2.0
    assert paths == {"resnet50": serving_store / "resnet50" / "1", "resnet101": serving_store / "resnet101" / "1"}
    assert pb.stat().st_mtime_ns == before


def test_jpeg_and_pixel_paths_agree_on_any_image_size(servables: dict[str, Servable]) -> None:
    pixels = photo_pixels()
    assert pixels.shape == (1, 600, 512, 3)
    for servable in servables.values():
        by_pixels = predict(servable, "serving_default", pixels)
        by_jpeg = predict(servable, "serving_preprocess", np.array([GRACE_HOPPER.read_bytes()], dtype=object))
        assert by_pixels.shape == by_jpeg.shape == (1, 1000)
        assert np.allclose(by_pixels.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(by_pixels, by_jpeg)


def test_the_two_models_clearly_differ_and_are_not_uniform(servables: dict[str, Servable]) -> None:
    rng = np.random.default_rng(3)
    images = [photo_pixels(), rng.uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)]
    for image in images:
        a = predict(servables["resnet50"], "serving_default", image)[0]
        b = predict(servables["resnet101"], "serving_default", image)[0]
        assert np.abs(a - b).sum() > 0.5  # L1 distance between the probability vectors
        assert int(np.argmax(a)) != int(np.argmax(b))
        assert a.max() > 0.05 and b.max() > 0.05  # uniform would be 0.001


def test_same_seed_gives_bit_identical_outputs(
    tmp_path: Path, serving_store: Path, servables: dict[str, Servable]
) -> None:
    again = export_model(tmp_path, "resnet50", "TinyResNet", seed=50)
    info = read_model_info(again)
    assert info is not None and info["key"] == read_model_info(serving_store / "resnet50" / "1")["key"]  # type: ignore[index]
    reloaded = load_servable("resnet50", 1, again)
    image = np.random.default_rng(11).uniform(0, 255, (2, 300, 200, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        predict(reloaded, "serving_default", image), predict(servables["resnet50"], "serving_default", image)
    )


def test_outdated_export_is_replaced_and_stale_temporaries_removed(tmp_path: Path) -> None:
    first = export_model(tmp_path, "tiny", "TinyResNet", seed=5, version=3)
    assert first == tmp_path / "tiny" / "3"
    info_file = first / MODEL_INFO_FILE
    info = json.loads(info_file.read_text())
    info_file.write_text(json.dumps({**info, "key": "outdated"}))
    stale = tmp_path / "tiny" / ".3.tmp-999999999-abcdef"
    (stale / "variables").mkdir(parents=True)
    second = export_model(tmp_path, "tiny", "TinyResNet", seed=5, version=3)
    assert second == first
    assert read_model_info(second) == info
    assert not stale.exists()
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["3"]


@pytest.mark.parametrize(
    ("name", "arch", "fragment"),
    [
        ("resnet50", "VGG16", "unknown architecture"),
        ("../escape", "TinyResNet", "not a path"),
    ],
)
def test_bad_export_requests(tmp_path: Path, name: str, arch: str, fragment: str) -> None:
    with pytest.raises(ExportError, match=fragment):
        export_model(tmp_path, name, arch)


def test_export_cli_on_a_cached_store(serving_store: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "serving.export", "--store", str(serving_store), "--tiny"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr
    assert "resnet50" in result.stdout and "TinyResNet" in result.stdout
    assert "up to date" in result.stderr
