"""Classify, Regress and MultiInference, run as TF Serving runs them.

A Classify/Regress signature is looked up and checked before anything runs
(tensorflow_serving/servables/tensorflow/classifier.cc
``GetClassificationSignatureDef`` / ``PreProcessClassification``,
regressor.cc ``GetRegressionSignatureDef`` / ``PreProcessRegression``,
multi_inference.cc ``TensorFlowMultiInferenceRunner::Infer``), so on a
model whose signatures are predict-only it answers INVALID_ARGUMENT with the
reason: with ``--enable_signature_method_name_check``, "Expected
classification signature method_name to be tensorflow/serving/classify.
Was: tensorflow/serving/predict"; without it (TF Serving's default), the
first structural check that fails, "No classification inputs found in
SignatureDef: ..." for canary's models.

A signature that passes runs on the request's serialized tf.Examples as its
single string input (:mod:`serving.examples`); its outputs are checked as
``PostProcessClassificationResult`` / ``PostProcessRegressionResult`` check
them (classes string and scores float ``[batch, k]``; regression outputs
float ``[batch]`` or ``[batch, 1]``), with TF Serving's error texts, and
become a ClassificationResult / RegressionResult. MultiInference runs every
task's signature on the same examples. Running is synchronous: callers run
:func:`run_examples` and :func:`run_multi_inference` in a worker thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    input_pb2,
    model_pb2,
    regression_pb2,
)

from serving.examples import classification_result, regression_result, serialized_examples
from serving.servable import Servable, Signature
from serving.signatures import DEFAULT_SIGNATURE
from serving.status import Code, RequestError
from serving.tensors import shape_text

__all__ = [
    "CLASSIFY_METHOD",
    "REGRESS_METHOD",
    "InferenceTask",
    "Method",
    "Result",
    "classify_or_regress",
    "examples_signature",
    "fill_model_spec",
    "plan_multi_inference",
    "run_examples",
    "run_multi_inference",
]

Method = Literal["classify", "regress"]
Result: TypeAlias = classification_pb2.ClassificationResult | regression_pb2.RegressionResult
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
_METHOD_NAMES: dict[str, Method] = {CLASSIFY_METHOD: "classify", REGRESS_METHOD: "regress"}
_INPUT = "inputs"  # TF Serving's kClassifyInputs / kRegressInputs


@dataclasses.dataclass(frozen=True)
class InferenceTask:
    """One checked task of a MultiInference: its model spec as asked, and the signature it runs."""

    model_name: str
    signature_name: str  # as the request gave it ("" means serving_default)
    method: Method
    signature: Signature


def examples_signature(servable: Servable, method: Method, signature_name: str, *, check_method_name: bool) -> Signature:
    """The classify/regress signature ``signature_name`` of ``servable``, checked as TF Serving checks it."""
    key = signature_name or DEFAULT_SIGNATURE
    signature = servable.signatures.get(key)
    if signature is None:
        raise _invalid(f"No signature was found with the name: {key}")
    _preprocess(servable, signature, method, check_method_name=check_method_name)
    return signature


def run_examples(
    servable: Servable, signature: Signature, method: Method, request_input: input_pb2.Input
) -> tuple[Result, float]:
    """Run a checked signature on the Input's examples; the result, and the seconds spent in the model."""
    batch = serialized_examples(request_input)
    outputs, seconds = _run(servable, signature, batch)
    return _result(method, outputs, len(batch)), seconds


def classify_or_regress(
    servable: Servable,
    method: Method,
    signature_name: str,
    request_input: input_pb2.Input,
    *,
    check_method_name: bool,
) -> tuple[Result, float]:
    """Classify or Regress ``request_input`` with ``signature_name`` of ``servable`` (checks, then runs)."""
    signature = examples_signature(servable, method, signature_name, check_method_name=check_method_name)
    return run_examples(servable, signature, method, request_input)


def plan_multi_inference(
    tasks: Iterable[tuple[str, str, str]],
    resolve: Callable[[], Servable],
    *,
    check_method_name: bool,
) -> tuple[Servable, list[InferenceTask]]:
    """The servable and checked tasks of a MultiInference of ``(model, signature, method_name)`` tasks.

    ``resolve`` gives the servable of the first task's model spec (TF Serving
    resolves it before it looks at the tasks).
    """
    tasks = list(tasks)
    servable = resolve()
    model_name = ""
    seen: set[str] = set()
    planned = []
    for name, signature_name, method_name in tasks:
        if not name:
            raise _invalid("Found ModelSpec with an empty model name.")
        if model_name and name != model_name:
            raise _invalid("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        model_name = name
        key = signature_name or DEFAULT_SIGNATURE
        if key in seen:
            raise _invalid(f"Duplicate evaluation of signature: {key}")
        seen.add(key)
        signature = servable.signatures.get(key)
        if signature is None:
            raise _invalid(f"Requested signature not found in model graph: {key}")
        method = _METHOD_NAMES.get(method_name)
        if method is None:
            raise RequestError(Code.UNIMPLEMENTED, f"Unsupported signature method_name: {method_name}")
        _preprocess(servable, signature, method, check_method_name=check_method_name)
        planned.append(InferenceTask(name, signature_name, method, signature))
    return servable, planned


def run_multi_inference(
    servable: Servable, tasks: Iterable[InferenceTask], request_input: input_pb2.Input
) -> inference_pb2.MultiInferenceResponse:
    """Run every task on the same examples, then check each task's outputs in order; TF Serving's response."""
    tasks = list(tasks)
    batch = serialized_examples(request_input)
    outputs = [_run(servable, task.signature, batch)[0] for task in tasks]
    response = inference_pb2.MultiInferenceResponse()
    for task, produced in zip(tasks, outputs, strict=True):
        entry = response.results.add()
        result = _result(task.method, produced, len(batch))
        if isinstance(result, classification_pb2.ClassificationResult):
            entry.classification_result.CopyFrom(result)
        else:
            entry.regression_result.CopyFrom(result)
        fill_model_spec(entry.model_spec, task.model_name, task.signature_name, servable.version)
    return response


def fill_model_spec(spec: model_pb2.ModelSpec, name: str, signature_name: str, version: int) -> None:
    """The model spec of an answer, as TF Serving's ``MakeModelSpec`` writes it."""
    spec.Clear()
    spec.name = name
    spec.signature_name = signature_name or DEFAULT_SIGNATURE
    spec.version.value = version


def _run(servable: Servable, signature: Signature, batch: list[bytes]) -> tuple[dict[str, Any], float]:
    """Feed the serialized examples to the signature's single input, as one string tensor ``[batch]``."""
    if signature.function is None:
        raise RequestError(
            Code.FAILED_PRECONDITION,
            f"signature {signature.name} of model {servable.name} version {servable.version} has no loaded "
            "function to run (TensorFlow's loader did not restore it); re-export the model",
        )
    examples = np.empty(len(batch), dtype=object)
    examples[:] = batch
    return servable.run(signature, {_INPUT: examples}, consume=True)


def _result(method: Method, outputs: dict[str, Any], examples: int) -> Result:
    if method == "classify":
        return _classification(outputs.get("classes"), outputs.get("scores"), examples)
    return _regression(outputs["outputs"], examples)


def _classification(
    classes: npt.NDArray[Any] | None, scores: npt.NDArray[Any] | None, examples: int
) -> classification_pb2.ClassificationResult:
    """Check the outputs as ``PostProcessClassificationResult`` does, then convert them."""
    for name, tensor, dtype in (("classes", classes, "DT_STRING"), ("scores", scores, "DT_FLOAT")):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise _invalid(f"Expected Tensor shape: [batch_size num_classes] but got {shape_text(tensor.shape)}")
        if _dtype(tensor) != dtype:
            raise _invalid(f"Expected {name} Tensor of {dtype}. Got: {_dtype(tensor)}")
        if tensor.shape[0] != examples:
            raise _invalid(f"Expected {name} output batch size of {examples}. Got: {tensor.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise _invalid(
            f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    return classification_result(classes, scores)


def _regression(values: npt.NDArray[Any], examples: int) -> regression_pb2.RegressionResult:
    """Check the output as ``PostProcessRegressionResult`` does, then convert it."""
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise _invalid(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got {shape_text(values.shape)}"
        )
    if values.shape[0] != examples:
        raise _invalid(f"Input batch size did not match output batch size: {examples} vs. {values.shape[0]}")
    if _dtype(values) != "DT_FLOAT":
        raise _invalid(f"Expected output Tensor of DT_FLOAT.  Got: {_dtype(values)}")
    return regression_result(values)


def _dtype(tensor: npt.NDArray[Any]) -> str:
    """TensorFlow's DataType name of an output (``DT_FLOAT``, ``DT_STRING``...)."""
    if tensor.dtype.kind in "OSU":
        return "DT_STRING"
    import tensorflow as tf

    try:
        return str(types_pb2.DataType.Name(tf.as_dtype(tensor.dtype).as_datatype_enum))
    except TypeError:
        return str(tensor.dtype)


def _preprocess(servable: Servable, signature: Signature, method: Method, *, check_method_name: bool) -> None:
    """TF Serving's PreProcessClassification / PreProcessRegression checks of a signature."""
    kind = "classification" if method == "classify" else "regression"
    expected = CLASSIFY_METHOD if method == "classify" else REGRESS_METHOD
    if check_method_name and signature.method_name != expected:
        raise _invalid(f"Expected {kind} signature method_name to be {expected}. Was: {signature.method_name}")
    if len(signature.inputs) != 1:
        raise _invalid("Expected one input Tensor.")
    outputs = len(signature.outputs)
    if method == "classify" and outputs not in (1, 2):
        raise _invalid(f"Expected one or two output Tensors, found {outputs}")
    if method == "regress" and outputs != 1:
        raise _invalid("Expected one output Tensor.")
    if _INPUT not in signature.inputs:
        raise _invalid(f"No {kind} inputs found in SignatureDef: {_debug(servable, signature)}")
    if method == "classify" and not {"classes", "scores"} & set(signature.outputs):
        raise _invalid(
            'Expected classification signature outputs to contain at least one of "classes" or "scores". '
            f"Signature was: {_debug(servable, signature)}"
        )
    if method == "regress" and "outputs" not in signature.outputs:
        raise _invalid(f"No regression outputs found in SignatureDef: {_debug(servable, signature)}")


def _debug(servable: Servable, signature: Signature) -> str:
    """The SignatureDef as text, like the C++ ``DebugString()`` TF Serving quotes."""
    return str(servable.signature_def_map.signature_def[signature.name])


def _invalid(message: str) -> RequestError:
    return RequestError(Code.INVALID_ARGUMENT, message)
