"""The status and metadata answers, as TF Serving's protos and their JSON.

gRPC sends these protos as they are; REST sends their JSON with proto field
names and default values printed, as TF Serving's REST handler does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from serving.registry import VersionStatus
from serving.servable import Servable
from serving.status import Code, RequestError

__all__ = [
    "CANARY_MODEL_FIELD",
    "SIGNATURE_DEF_FIELD",
    "canary_model_json",
    "check_metadata_fields",
    "metadata_json",
    "metadata_response",
    "status_json",
    "status_response",
]

SIGNATURE_DEF_FIELD = "signature_def"
CANARY_MODEL_FIELD = "canary_model"


def status_response(entries: Sequence[VersionStatus]) -> Any:
    """A ``GetModelStatusResponse`` for these versions."""
    from tensorflow_serving.apis import get_model_status_pb2, status_pb2

    response = get_model_status_pb2.GetModelStatusResponse()
    for entry in entries:
        item = response.model_version_status.add()
        item.version = entry.version
        item.state = get_model_status_pb2.ModelVersionStatus.State.Value(entry.state.value)
        error = entry.error
        code = error.code if error is not None else Code.OK
        item.status.CopyFrom(
            status_pb2.StatusProto(error_code=int(code), error_message=error.message if error else "")
        )
    return response


def status_json(entries: Sequence[VersionStatus]) -> dict[str, Any]:
    """``{"model_version_status": [{"version": "1", "state": "AVAILABLE", ...}]}``."""
    from google.protobuf import json_format

    result: dict[str, Any] = json_format.MessageToDict(
        status_response(entries),
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=True,
    )
    return result


def metadata_response(servable: Servable, fields: Sequence[str]) -> Any:
    """A ``GetModelMetadataResponse`` with the requested metadata fields.

    ``signature_def`` is TF Serving's field; ``canary_model`` (the export's
    canary_model.json, packed as a ``google.protobuf.Struct``) is this
    server's addition, sent only when asked for.
    """
    from google.protobuf import struct_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    check_metadata_fields(fields)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    if SIGNATURE_DEF_FIELD in fields:
        response.metadata[SIGNATURE_DEF_FIELD].Pack(servable.signature_def_map)
    if CANARY_MODEL_FIELD in fields:
        info = struct_pb2.Struct()
        info.update(servable.model_info or {})
        response.metadata[CANARY_MODEL_FIELD].Pack(info)
    return response


def check_metadata_fields(fields: Sequence[str]) -> None:
    """Refuse a metadata request as TF Serving does, before the model is looked up."""
    if not fields:
        raise RequestError(Code.INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one metadata_field")
    for name in fields:
        if name not in (SIGNATURE_DEF_FIELD, CANARY_MODEL_FIELD):
            raise RequestError(
                Code.INVALID_ARGUMENT,
                f"Metadata field {name} is not supported (use '{SIGNATURE_DEF_FIELD}' or '{CANARY_MODEL_FIELD}')",
            )


def metadata_json(servable: Servable) -> dict[str, Any]:
    """REST metadata exactly as TF Serving answers it: ``model_spec`` and ``metadata.signature_def``."""
    return {
        "model_spec": _model_spec_json(servable),
        "metadata": {SIGNATURE_DEF_FIELD: servable.metadata_json()},
    }


def canary_model_json(servable: Servable) -> dict[str, Any]:
    """This server's own record of a version (``GET /canary/v1/models/<name>[/versions/<v>]``).

    ``{"model_spec": {...}, "canary_model": {...}}``: the export's
    canary_model.json (architecture, weights, seed), or null when the
    version has none. TF Serving serves no such path (it answers 404), so
    TF Serving's own answers stay exactly its own.
    """
    return {"model_spec": _model_spec_json(servable), CANARY_MODEL_FIELD: servable.model_info}


def _model_spec_json(servable: Servable) -> dict[str, Any]:
    return {"name": servable.name, "signature_name": "", "version": str(servable.version)}
