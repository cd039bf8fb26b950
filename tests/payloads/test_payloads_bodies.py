"""Payloads: images and labels, both REST body formats, class names, the generator."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from PIL import Image

from canary.errors import PayloadError
from payloads import (
    FORMATS,
    IMAGES_DIR,
    class_name,
    class_names,
    load_payloads,
    read_labels,
)
from payloads.gen import INDEX_FILE, build_bodies, main
from payloads.synth import SCENES, SIZE, render
from tests.seed import GKE_BODY

REPO = Path(__file__).resolve().parents[2]
GCP_BODY = GKE_BODY
SYNTHETIC = sorted(SCENES)


@pytest.fixture(scope="module")
def payloads():
    return load_payloads()


def test_the_committed_payloads_and_their_labels(payloads) -> None:
    assert payloads.ids == ["grace_hopper", *SYNTHETIC]
    labels = {p.id: (p.label, p.label_name) for p in payloads}
    assert labels["grace_hopper"] == (652, "military uniform")
    assert all(labels[name] == (None, None) for name in SYNTHETIC)
    assert payloads.get("grace_hopper").image == IMAGES_DIR / "grace_hopper.jpg"
    assert payloads.size == 224 and len(payloads) == 5
    with pytest.raises(PayloadError, match="no payload 'nope'"):
        payloads.get("nope")


@pytest.mark.parametrize("payload_id", ["grace_hopper", *SYNTHETIC])
def test_both_bodies_parse_to_what_the_walkthroughs_send(payloads, payload_id: str) -> None:
    payload = payloads.get(payload_id)
    instances = orjson.loads(payload.rest_body["instances"])
    assert list(instances) == ["instances"]  # serving_default, as the minikube walkthrough
    pixels = np.asarray(instances["instances"])
    assert pixels.shape == (1, 224, 224, 3) and pixels.dtype.kind == "i"
    assert np.array_equal(pixels[0], payload.pixels) and payload.pixels.dtype == np.uint8
    b64 = orjson.loads(payload.rest_body["b64"])
    assert b64["signature_name"] == "serving_preprocess"
    assert (
        base64.b64decode(b64["instances"][0]["b64"]) == payload.jpeg == payload.image.read_bytes()
    )
    for fmt in FORMATS:
        assert payload.body(fmt) is payload.rest_body[fmt]
        assert payload.digests[fmt] == hashlib.sha256(payload.rest_body[fmt]).hexdigest()
    with pytest.raises(PayloadError, match="unknown payload format"):
        payload.body("protobuf")


def test_the_photo_b64_body_is_the_gke_walkthrough_body(payloads) -> None:
    if not GCP_BODY.is_file():
        pytest.skip(f"seed fixture {GCP_BODY} not available")
    expected = GCP_BODY.read_bytes()
    body = payloads.get("grace_hopper").rest_body["b64"]
    assert orjson.loads(body) == orjson.loads(expected)  # the same structure...
    assert body == expected.rstrip(b"\n")  # ...and the same bytes


def test_original_size_keeps_the_photo_as_the_minikube_walkthrough_sends_it() -> None:
    payloads = load_payloads(size=None)
    photo = payloads.get("grace_hopper")
    assert photo.pixels.shape == (600, 512, 3)
    instances = np.asarray(orjson.loads(photo.rest_body["instances"])["instances"])
    assert instances.shape == (1, 600, 512, 3)
    assert payloads.digest != load_payloads().digest
    assert payloads.digest == load_payloads(size=None).digest  # deterministic


def test_class_names_come_in_keras_index_order() -> None:
    names = class_names()
    assert len(names) == 1000
    assert (class_name(0), class_name(652), class_name(999)) == (
        "tench",
        "military uniform",
        "toilet tissue",
    )
    assert class_name(0, full=True) == "tench, Tinca tinca"
    for bad in (-1, 1000):
        with pytest.raises(PayloadError, match=r"outside 0\.\.999"):
            class_name(bad)


@pytest.mark.parametrize(
    ("rows", "error"),
    [
        ("image,class_index,class_name\na.jpg,652,military uniform\nb.jpg,,\n", None),
        ("image,class_index,class_name\na.jpg,653,military uniform\n", "class 653 is 'milk can'"),
        ("image,class_index,class_name\na.jpg,1000,\n", "not an ImageNet class"),
        ("image,class_index,class_name\na.jpg,x,\n", "not an ImageNet class"),
        ("name,label\na.jpg,1\n", "header must be"),
        ("image,class_index,class_name\n,1,\n", "empty image name"),
    ],
)
def test_labels_csv_is_checked(tmp_path: Path, rows: str, error: str | None) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(rows)
    if error is None:
        assert read_labels(path) == {"a.jpg": 652, "b.jpg": None}
    else:
        with pytest.raises(PayloadError, match=error):
            read_labels(path)


def _png_named_jpg(path: Path) -> None:
    Image.new("RGB", (8, 8)).save(path, format="PNG")


@pytest.mark.parametrize(
    ("setup", "error"),
    [
        (lambda d: None, "no JPEG images"),
        (lambda d: _png_named_jpg(d / "x.jpg"), "is a PNG file"),
        (lambda d: (d / "x.jpg").write_bytes(b"not an image"), "cannot decode"),
        (
            lambda d: [(d / n).write_bytes(render("synthetic_rings")) for n in ("x.jpg", "x.jpeg")],
            "both be payload 'x'",
        ),
    ],
)
def test_unusable_image_folders_are_refused(tmp_path: Path, setup, error: str) -> None:
    setup(tmp_path)
    with pytest.raises(PayloadError, match=error):
        load_payloads(tmp_path)
    with pytest.raises(PayloadError, match="does not exist"):
        load_payloads(tmp_path / "missing")


def test_a_folder_of_own_images_with_labels_beside_it(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "cat.jpg").write_bytes(render("synthetic_clouds"))
    (tmp_path / "labels.csv").write_text("image,class_index,class_name\ncat.jpg,281,tabby\n")
    payloads = load_payloads(images, size=64)
    assert payloads.ids == ["cat"] and payloads.get("cat").label == 281
    assert payloads.get("cat").pixels.shape == (64, 64, 3)


def test_synthetic_scenes_are_deterministic_and_match_the_committed_files() -> None:
    for name in SYNTHETIC:
        jpeg = render(name)
        assert jpeg == render(name)
        fresh = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.float64)
        committed = np.asarray(
            Image.open(IMAGES_DIR / f"{name}.jpg").convert("RGB"), dtype=np.float64
        )
        assert fresh.shape == committed.shape == (SIZE, SIZE, 3)
        assert np.abs(fresh - committed).mean() < 1.0, name  # equal but for a JPEG library change


def test_build_writes_the_bodies_once_into_a_content_addressed_cache(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("CANARY_HOME", str(tmp_path / "home"))
    folder = build_bodies()
    assert folder.parent == tmp_path / "home" / "payloads"
    index = json.loads((folder / INDEX_FILE).read_text())
    assert [p["id"] for p in index["payloads"]] == ["grace_hopper", *SYNTHETIC]
    payloads = load_payloads()
    for entry in index["payloads"]:
        for fmt, name in entry["bodies"].items():
            body = (folder / name).read_bytes()
            assert body == payloads.get(entry["id"]).rest_body[fmt]
            assert hashlib.sha256(body).hexdigest() == entry["sha256"][fmt]
    stamp = (folder / INDEX_FILE).stat().st_mtime_ns
    assert (
        build_bodies() == folder and (folder / INDEX_FILE).stat().st_mtime_ns == stamp
    )  # built once
    assert build_bodies(size=None) != folder


def test_the_generator_command_line(tmp_path: Path, capsys) -> None:
    assert main(["build", "--size", "original", "--out", str(tmp_path / "bodies")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "bodies")
    photo = orjson.loads((tmp_path / "bodies" / "grace_hopper.instances.json").read_bytes())
    assert np.asarray(photo["instances"]).shape == (1, 600, 512, 3)
    assert main(["synthesize", "--out", str(tmp_path / "synth")]) == 0
    assert sorted(p.stem for p in (tmp_path / "synth").iterdir()) == SYNTHETIC
    assert main(["build", "--images", str(tmp_path / "empty")]) == 3
    assert "does not exist" in capsys.readouterr().err


def test_payloads_do_not_import_tensorflow() -> None:
    code = (
        "import sys, payloads, loadtest.fingerprint; p = payloads.load_payloads(); "
        "[payloads.grpc_request_bytes(x, f) for x in p for f in payloads.FORMATS]; "
        "print('tensorflow' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
