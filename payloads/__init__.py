"""Payloads: images with labels where known, and request bodies in both walkthrough formats.

Import-light (numpy, Pillow, orjson): no TensorFlow. See ``payloads/README.md``.
"""

from __future__ import annotations

from canary.classes import class_name, class_names
from payloads.library import (
    DEFAULT_SIZE,
    FORMATS,
    IMAGES_DIR,
    LABELS_FILE,
    REQUEST_BODY,
    Payload,
    PayloadSet,
    grpc_request_bytes,
    grpc_request_from_body,
    load_payload,
    load_payloads,
    read_labels,
)

__all__ = [
    "DEFAULT_SIZE",
    "FORMATS",
    "IMAGES_DIR",
    "LABELS_FILE",
    "REQUEST_BODY",
    "Payload",
    "PayloadSet",
    "class_name",
    "class_names",
    "grpc_request_bytes",
    "grpc_request_from_body",
    "load_payload",
    "load_payloads",
    "read_labels",
]
