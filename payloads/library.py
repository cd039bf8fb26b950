"""Payloads for the load test: images, their labels, and prepared request bodies.

Import-light on purpose (numpy, Pillow, orjson; never TensorFlow): every
Locust worker loads the payloads once at start-up and then only sends bytes.

Two request formats, as in the two walkthroughs:

* ``instances`` (minikube): ``{"instances": [<H x W x 3 nested list of uint8>]}``
  for the ``serving_default`` signature (``input_image``); over gRPC the same
  pixels as a float32 ``tensor_content``.
* ``b64`` (GKE): ``{"signature_name": "serving_preprocess", "instances":
  [{"b64": "<whole JPEG>"}]}``; over gRPC ``bytes_inputs`` as a string tensor.
  For the walkthrough photo this body is byte-for-byte the GKE walkthrough's
  ``request-body.json``.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson

from canary.classes import CLASS_COUNT, class_name
from canary.conventions import DEFAULT_PAYLOAD_SIZE, MODEL_NAME
from canary.errors import PayloadError
from payloads.wire import Tensor, encode_predict_request

__all__ = [
    "DEFAULT_SIZE",
    "FORMATS",
    "IMAGES_DIR",
    "LABELS_FILE",
    "MODEL_NAME",
    "REQUEST_BODY",
    "Payload",
    "PayloadSet",
    "grpc_request_bytes",
    "grpc_request_from_body",
    "load_payload",
    "load_payloads",
    "read_labels",
]

PACKAGE_DIR = Path(__file__).resolve().parent
IMAGES_DIR = PACKAGE_DIR / "images"
LABELS_FILE = PACKAGE_DIR / "labels.csv"
REQUEST_BODY = PACKAGE_DIR / "request-body.json"
"""The GKE walkthrough's ``request-body.json``: the photo's ``b64`` body, byte for byte."""
FORMATS = ("instances", "b64")
DEFAULT_SIZE = DEFAULT_PAYLOAD_SIZE
_SIGNATURES = {"instances": "serving_default", "b64": "serving_preprocess"}
_INPUTS = {"instances": "input_image", "b64": "bytes_inputs"}
_INPUT_OF_SIGNATURE = {_SIGNATURES[fmt]: _INPUTS[fmt] for fmt in FORMATS}
_SUFFIXES = (".jpg", ".jpeg")
_DIGEST_VERSION = 1  # bump when the bodies built from the same images change


@dataclass(frozen=True, eq=False)
class Payload:
    """One image and its prepared REST bodies (``rest_body[fmt]``, serialised once)."""

    id: str
    image: Path
    label: int | None
    rest_body: Mapping[str, bytes]
    pixels: npt.NDArray[np.uint8]  # H x W x 3, what the ``instances`` format sends
    jpeg: bytes  # the file as it is, what the ``b64`` format sends
    digests: Mapping[str, str] = field(default_factory=dict)  # fmt -> sha256 of the REST body

    @property
    def label_name(self) -> str | None:
        return None if self.label is None else class_name(self.label)

    def body(self, fmt: str) -> bytes:
        """The REST body of ``fmt`` ("instances" or "b64")."""
        try:
            return self.rest_body[fmt]
        except KeyError:
            raise PayloadError(
                f"unknown payload format {fmt!r}; choose one of {', '.join(FORMATS)}"
            ) from None


@dataclass(frozen=True)
class PayloadSet:
    """The payloads of one images folder, sorted by id."""

    items: list[Payload]
    images_dir: Path
    size: int | None  # None: the images as they are
    digest: str  # identifies the images, labels and body format

    def __iter__(self) -> Iterator[Payload]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.items]

    def get(self, payload_id: str) -> Payload:
        for payload in self.items:
            if payload.id == payload_id:
                return payload
        raise PayloadError(f"no payload {payload_id!r}; the payloads are {', '.join(self.ids)}")


def read_labels(path: Path) -> dict[str, int | None]:
    """``image file name -> ImageNet class index`` (None: no known label) from a labels CSV.

    Columns ``image,class_index,class_name``; the class name, when given, must
    be the index's name (a guard against off-by-one indices).
    """
    labels: dict[str, int | None] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PayloadError(f"cannot read labels file {path}: {error.strerror}") from error
    rows = csv.DictReader(io.StringIO(text))
    if rows.fieldnames is None or not {"image", "class_index"} <= set(rows.fieldnames):
        raise PayloadError(f"{path}: the header must be image,class_index,class_name")
    for line, row in enumerate(rows, start=2):
        image, index = (row.get("image") or "").strip(), (row.get("class_index") or "").strip()
        if not image:
            raise PayloadError(f"{path}:{line}: empty image name")
        if not index:
            labels[image] = None
            continue
        if not index.isdigit() or int(index) >= CLASS_COUNT:
            raise PayloadError(
                f"{path}:{line}: class_index {index!r} is not an ImageNet class (0..999)"
            )
        name = (row.get("class_name") or "").strip()
        if name and name != class_name(int(index)):
            raise PayloadError(
                f"{path}:{line}: class {index} is {class_name(int(index))!r}, not {name!r}; fix the index or the name"
            )
        labels[image] = int(index)
    return labels


def load_payloads(
    images_dir: Path | None = None, *, size: int | None = DEFAULT_SIZE, labels: Path | None = None
) -> PayloadSet:
    """Every JPEG in ``images_dir`` (default: ``payloads/images``) as a :class:`Payload`.

    ``size`` resizes the ``instances`` pixels to ``size x size`` (bilinear);
    ``None`` keeps each image as it is, as the minikube walkthrough sends its
    photo. The ``b64`` body always carries the original JPEG. Labels come
    from ``labels`` or else the first ``labels.csv`` found in ``images_dir``
    or its parent; images without a row have no label.
    """
    folder = Path(images_dir) if images_dir is not None else IMAGES_DIR
    if size is not None and not 1 <= size <= 4096:
        raise PayloadError(f"payload size must be between 1 and 4096 pixels, got {size}")
    files = _image_files(folder)
    label_map = read_labels(labels) if labels is not None else _default_labels(folder)
    items = [_payload(path, label_map.get(path.name), size) for path in files]
    digest = hashlib.sha256(
        orjson.dumps(
            {
                "version": _DIGEST_VERSION,
                "size": size,
                "items": [[p.id, hashlib.sha256(p.jpeg).hexdigest(), p.label] for p in items],
            }
        )
    ).hexdigest()
    return PayloadSet(items=items, images_dir=folder, size=size, digest=digest)


def load_payload(
    image: Path, *, label: int | None = None, size: int | None = DEFAULT_SIZE
) -> Payload:
    """One JPEG as a :class:`Payload` (id: its file stem), as :func:`load_payloads` makes each."""
    path = Path(image)
    if not path.is_file():
        raise PayloadError(f"payload image {path} does not exist")
    if size is not None and not 1 <= size <= 4096:
        raise PayloadError(f"payload size must be between 1 and 4096 pixels, got {size}")
    return _payload(path, label, size)


def grpc_request_bytes(
    payload: Payload, fmt: str, model_name: str = MODEL_NAME, *, version: int | None = None
) -> bytes:
    """A serialised ``tensorflow.serving.PredictRequest`` for ``payload`` in ``fmt``.

    ``instances``: ``serving_default`` with ``input_image`` float32
    ``[1, H, W, 3]`` (``tensor_content``); ``b64``: ``serving_preprocess``
    with ``bytes_inputs`` string ``[1]``. Build it once and send the bytes
    with an identity serializer; no TensorFlow is imported.
    """
    if fmt == "instances":
        tensor = Tensor.floats(payload.pixels[np.newaxis])
    elif fmt == "b64":
        tensor = Tensor.string_list([payload.jpeg])
    else:
        raise PayloadError(f"unknown payload format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return encode_predict_request(
        model_name, {_INPUTS[fmt]: tensor}, signature_name=_SIGNATURES[fmt], version=version
    )


def grpc_request_from_body(
    body: bytes | str, model_name: str = MODEL_NAME, *, version: int | None = None
) -> bytes:
    """The serialised ``PredictRequest`` asking what a REST body of either format asks.

    ``{"signature_name": "serving_preprocess", "instances": [{"b64": ...}, ...]}``
    becomes ``bytes_inputs`` (string ``[n]``, the decoded JPEGs);
    ``{"instances": [<H x W x 3 numbers>, ...]}`` (``serving_default``) becomes
    ``input_image`` (float32 ``[n, H, W, 3]``). For a payload's own bodies it
    is :func:`grpc_request_bytes`. Raises :class:`PayloadError` for any other body.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise PayloadError(f"the request body is not JSON ({error})") from None
    instances = doc.get("instances") if isinstance(doc, dict) else None
    if not isinstance(instances, list) or not instances:
        raise PayloadError(
            'the request body must be a JSON object with a non-empty "instances" list '
            "(TF Serving's row format, as both walkthroughs send)"
        )
    signature = doc.get("signature_name", _SIGNATURES["instances"])
    alias = _INPUT_OF_SIGNATURE.get(signature) if isinstance(signature, str) else None
    if alias is None:
        raise PayloadError(
            f"signature_name {signature!r} is not one the models serve "
            f"({', '.join(_INPUT_OF_SIGNATURE)})"
        )
    if alias == _INPUTS["b64"]:
        tensor = Tensor.string_list([_b64_instance(item) for item in instances])
    else:
        tensor = Tensor.floats(_image_instances(instances))
    return encode_predict_request(
        model_name, {alias: tensor}, signature_name=signature, version=version
    )


def _b64_instance(item: object) -> bytes:
    if not (isinstance(item, dict) and list(item) == ["b64"] and isinstance(item["b64"], str)):
        raise PayloadError(
            f'each instance of the {_SIGNATURES["b64"]} signature must be {{"b64": "<JPEG, base64>"}}'
        )
    try:
        return base64.b64decode("".join(item["b64"].split()), validate=True)  # line breaks allowed
    except binascii.Error as error:
        raise PayloadError(f"an instance's b64 is not base64 ({error})") from None


def _image_instances(instances: list[object]) -> npt.NDArray[np.float32]:
    try:
        pixels = np.asarray(instances, dtype=np.float32)
    except (TypeError, ValueError):
        pixels = np.empty(0, dtype=np.float32)
    if pixels.ndim != 4 or pixels.shape[-1] != 3 or not pixels.size:
        raise PayloadError(
            f"each instance of the {_SIGNATURES['instances']} signature must be an H x W x 3 image "
            "(nested lists of numbers), all of one size"
        )
    return pixels


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise PayloadError(f"payload images folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _SUFFIXES and p.is_file())
    if not files:
        raise PayloadError(
            f"no JPEG images in {folder}; add some, or run `python -m payloads.gen synthesize --out {folder}`"
        )
    stems: dict[str, Path] = {}
    for path in files:
        if path.stem in stems:
            raise PayloadError(
                f"{stems[path.stem].name} and {path.name} would both be payload {path.stem!r}; rename one"
            )
        stems[path.stem] = path
    return files


def _default_labels(folder: Path) -> dict[str, int | None]:
    for candidate in (folder / "labels.csv", folder.parent / "labels.csv"):
        if candidate.is_file():
            return read_labels(candidate)
    return {}


def _payload(path: Path, label: int | None, size: int | None) -> Payload:
    from PIL import Image, UnidentifiedImageError

    jpeg = path.read_bytes()
    try:
        with Image.open(io.BytesIO(jpeg)) as image:
            if image.format != "JPEG":
                raise PayloadError(
                    f"{path} is a {image.format} file; the b64 format needs JPEG images"
                )
            rgb = image.convert("RGB")
            if size is not None and rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            pixels = np.asarray(rgb, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as error:
        raise PayloadError(f"cannot decode {path}: {error}") from error
    bodies = {
        "instances": orjson.dumps(
            {"instances": pixels[np.newaxis]}, option=orjson.OPT_SERIALIZE_NUMPY
        ),
        # json.dumps' separators: for the walkthrough photo, the GKE walkthrough's body byte for byte
        "b64": json.dumps(
            {
                "signature_name": _SIGNATURES["b64"],
                "instances": [{"b64": base64.b64encode(jpeg).decode()}],
            }
        ).encode(),
    }
    return Payload(
        id=path.stem,
        image=path,
        label=label,
        rest_body=bodies,
        pixels=pixels,
        jpeg=jpeg,
        digests={fmt: hashlib.sha256(body).hexdigest() for fmt, body in bodies.items()},
    )
