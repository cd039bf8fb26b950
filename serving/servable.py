"""One loaded SavedModel version: its signatures, metadata, and how to run them.

The signature definitions come from ``saved_model.pb`` itself (what TF
Serving reports and validates against); the callables are the loaded
concrete functions. Running one is synchronous: the servers call
:meth:`Servable.run` from a worker thread, never on the event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from canary.errors import ServingError
from serving.export import read_model_info
from serving.signatures import DEFAULT_SIGNATURE
from serving.status import Code, RequestError, from_exception
from serving.tensors import DType, TensorSpec, shape_text

__all__ = ["Servable", "Signature", "check_input_aliases", "load_servable"]

log = logging.getLogger("serving.servable")


@dataclass(frozen=True)
class Signature:
    """A serving signature: named inputs and outputs, and its concrete function."""

    name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    method_name: str
    function: Any = field(repr=False, default=None)


@dataclass
class Servable:
    """A loaded model version."""

    name: str
    version: int
    path: Path
    signatures: dict[str, Signature]
    signature_def_map: Any = field(repr=False)  # tensorflow.serving.SignatureDefMap
    model_info: dict[str, Any] | None = None
    loaded: Any = field(default=None, repr=False)  # the tf.saved_model.load result: keeps variables alive
    _metadata_json: dict[str, Any] | None = field(default=None, repr=False)

    def signature(self, name: str) -> Signature:
        """The runnable signature ``name`` ("" means serving_default)."""
        key = name or DEFAULT_SIGNATURE
        found = self.signatures.get(key)
        if found is None or found.function is None:
            runnable = sorted(k for k, s in self.signatures.items() if s.function is not None)
            raise RequestError(
                Code.FAILED_PRECONDITION,
                f'Serving signature key "{key}" not found. This model has: {", ".join(runnable)}',
            )
        return found

    def run(
        self, signature: Signature, inputs: Mapping[str, Any], *, consume: bool = False
    ) -> tuple[dict[str, Any], float]:
        """Run ``signature``; returns numpy outputs and the seconds spent in the model.

        ``consume=True``: the caller hands the dict ``inputs`` over; each array
        in it is replaced by its tensor as soon as TensorFlow has copied it, so
        that the array's memory is free before the model runs.
        """
        _check_inputs(signature, inputs)
        started = time.perf_counter()
        refusal = None
        try:
            results = signature.function(**_as_tensors(inputs, consume=consume))
            outputs = {alias: np.asarray(tensor) for alias, tensor in results.items()}
        except Exception as error:  # TF op errors carry their own code; the rest are internal
            refusal = _model_refused(signature, inputs, error)
        if refusal is not None:
            # raised here, out of the except block: no __context__ keeping TF's error, its
            # traceback and the tensors its frames hold alive with the answer
            raise refusal
        return outputs, time.perf_counter() - started

    def metadata_json(self) -> dict[str, Any]:
        """TF Serving's JSON of the SignatureDefMap (proto field names, defaults printed)."""
        if self._metadata_json is None:
            from google.protobuf import json_format

            self._metadata_json = json_format.MessageToDict(
                self.signature_def_map,
                always_print_fields_with_no_presence=True,
                preserving_proto_field_name=True,
            )
        return self._metadata_json


def check_input_aliases(signature: Signature, aliases: Collection[str]) -> None:
    """Refuse inputs that are not the signature's, as TF Serving's PreProcessPrediction does:
    a different count first (VerifyRequestInputsSize), then an unknown alias (GetInputValues)."""
    expected, given = set(signature.inputs), set(aliases)
    if len(expected) != len(given):
        raise RequestError(
            Code.INVALID_ARGUMENT,
            f"input size does not match signature: {len(given)}!={len(expected)} "
            f"len({{{','.join(sorted(given))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{','.join(sorted(given - expected))}}}. "
            f"Missing but required: {{{','.join(sorted(expected - given))}}}.",
        )
    unknown = sorted(given - expected)
    if unknown:
        raise RequestError(
            Code.INVALID_ARGUMENT,
            f"input tensor alias not found in signature: {unknown[0]}. Inputs expected to be in the "
            f"set {{{','.join(sorted(expected))}}}.",
        )


def _check_inputs(signature: Signature, inputs: Mapping[str, Any]) -> None:
    check_input_aliases(signature, inputs.keys())
    for alias, spec in signature.inputs.items():
        array = inputs[alias]
        if spec.dtype is not DType.DT_STRING and array.dtype != spec.dtype.numpy:
            raise RequestError(
                Code.INVALID_ARGUMENT,
                f"Expects arg '{alias}' to be {spec.dtype.short} but {_dtype_name(array)} is provided",
            )


def _as_tensors(inputs: Mapping[str, Any], *, consume: bool) -> Mapping[str, Any]:
    """``inputs`` as tensors, converted once; with ``consume`` in place, each array freed once copied.

    TF Serving feeds the tensors to the graph and lets its ops decide
    (TF Serving's own REST example sends half_plus_two, declared x [-1,1], a
    rank-1 ``[1.0, 2.0, 5.0]``). A loaded function refuses a numpy array whose
    shape is not the declared one while binding it to its TensorSpec, but
    takes the same values as a tensor and runs them: the ops decide. Dtypes
    were checked by the caller.
    """
    import tensorflow as tf

    if consume and isinstance(inputs, dict):
        for alias in list(inputs):
            inputs[alias] = tf.convert_to_tensor(inputs[alias])
        return inputs
    return {alias: tf.convert_to_tensor(value) for alias, value in inputs.items()}


def _model_refused(signature: Signature, inputs: Mapping[str, Any], error: Exception) -> RequestError:
    """The status for ``error`` raised by the model, naming each input whose shape is not the declared one."""
    failure = from_exception(error)
    if not isinstance(getattr(error, "error_code", None), int):  # not a TF op error: ours, or internal
        return failure
    odd = [
        _shape_hint(alias, tuple(inputs[alias].shape), spec.shape)
        for alias, spec in sorted(signature.inputs.items())
        if spec.shape is not None and not _fits(tuple(inputs[alias].shape), spec.shape)
    ]
    if not odd:
        return failure
    return RequestError(failure.code, f"{failure.message} (the model refused {'; '.join(odd)})")


def _shape_hint(alias: str, shape: tuple[int, ...], declared: tuple[int, ...]) -> str:
    hint = f"input '{alias}': the signature declares shape {shape_text(declared)} (-1: any size) but got {shape_text(shape)}"
    if len(declared) == len(shape) + 1:
        hint += ", missing the batch dimension? In row format each element of 'instances' is one example"
    return hint


def _fits(shape: tuple[int, ...], declared: tuple[int, ...]) -> bool:
    return len(shape) == len(declared) and all(d in (-1, n) for d, n in zip(declared, shape, strict=True))


def _dtype_name(array: Any) -> str:
    return "string" if array.dtype.kind in "OSU" else str(array.dtype).replace("float32", "float")


def load_servable(name: str, version: int, path: Path, *, tags: str = "serve", warmup: bool = True) -> Servable:
    """Load ``path`` (a version directory) with TensorFlow; raise ServingError on failure."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    tag_set = {t.strip() for t in tags.split(",") if t.strip()}
    try:
        saved = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    except Exception as error:  # OSError, or protobuf's DecodeError for a corrupt file
        raise ServingError(f"cannot read {path / 'saved_model.pb'}: {error}; re-export this version") from error
    graphs = [g for g in saved.meta_graphs if set(g.meta_info_def.tags) == tag_set]
    if not graphs:
        found = [",".join(g.meta_info_def.tags) for g in saved.meta_graphs]
        raise ServingError(f"{path} has no MetaGraph tagged {sorted(tag_set)} (it has {found}); check --saved_model_tags")
    signature_defs = graphs[0].signature_def
    try:
        loaded = tf.saved_model.load(str(path), tags=sorted(tag_set))
    except Exception as error:  # TF raises many error types for a bad model
        raise ServingError(f"loading model {name} version {version} from {path} failed: {error}") from error
    signatures = {}
    for key, definition in signature_defs.items():
        function = loaded.signatures.get(key)  # Predict runs any signature, as TF Serving's predict_util.cc
        signatures[key] = Signature(
            name=key,
            inputs={alias: _spec(alias, info) for alias, info in definition.inputs.items()},
            outputs={alias: _spec(alias, info) for alias, info in definition.outputs.items()},
            method_name=definition.method_name,
            function=function,
        )
    signature_def_map = get_model_metadata_pb2.SignatureDefMap()
    for key, definition in signature_defs.items():
        signature_def_map.signature_def[key].CopyFrom(definition)
    servable = Servable(
        name=name,
        version=version,
        path=path,
        signatures=signatures,
        signature_def_map=signature_def_map,
        model_info=read_model_info(path),
        loaded=loaded,
    )
    if warmup:
        _warm_up(servable)
    return servable


def _spec(alias: str, info: Any) -> TensorSpec:
    try:
        dtype = DType(info.dtype)
    except ValueError:
        dtype = DType.DT_INVALID
    shape = None if info.tensor_shape.unknown_rank else tuple(int(d.size) for d in info.tensor_shape.dim)
    return TensorSpec(alias=alias, dtype=dtype, shape=shape)


def _warm_up(servable: Servable) -> None:
    """Run each signature once so the first real request does not pay for tracing."""
    for signature in servable.signatures.values():
        if signature.function is None:
            continue
        try:
            inputs = {alias: _dummy(spec) for alias, spec in signature.inputs.items()}
            servable.run(signature, inputs)
        except (RequestError, ValueError, TypeError) as error:
            log.debug("warm-up of %s skipped: %s", signature.name, error)


def _dummy(spec: TensorSpec) -> Any:
    if spec.shape is None:
        raise ValueError("unknown rank")
    shape = tuple(1 if i == 0 or d < 0 else d for i, d in enumerate(spec.shape))
    if len(shape) == 4 and shape[1:3] == (1, 1):
        shape = (shape[0], 224, 224, shape[3])
    if spec.dtype is DType.DT_STRING:
        import tensorflow as tf

        jpeg = tf.io.encode_jpeg(np.zeros((8, 8, 3), np.uint8)).numpy()
        array = np.empty(shape, dtype=object)
        array.fill(jpeg)
        return array
    return np.zeros(shape, dtype=spec.dtype.numpy)
