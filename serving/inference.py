"""Classify, Regress and MultiInference, answered as TF Serving answers them.

canary's model server runs predict signatures only. TF Serving looks a
Classify/Regress signature up and checks it before running anything
(tensorflow_serving/servables/tensorflow/classifier.cc
``GetClassificationSignatureDef`` / ``PreProcessClassification``,
regressor.cc ``GetRegressionSignatureDef`` / ``PreProcessRegression``,
multi_inference.cc ``TensorFlowMultiInferenceRunner::Infer``), so on a
model whose signatures are predict-only it answers INVALID_ARGUMENT with the
reason: with ``--enable_signature_method_name_check``, "Expected
classification signature method_name to be tensorflow/serving/classify.
Was: tensorflow/serving/predict"; without it (TF Serving's default), the
first structural check that fails, "No classification inputs found in
SignatureDef: ..." for canary's models. Those checks are reproduced here; a
signature that passes them (a real classify or regress signature) is
answered UNIMPLEMENTED, since this server cannot run it.

The REST bodies are read first, as TF Serving's handler does
(tensorflow_serving/util/json_tensor.cc ``FillClassifyRegressRequestFromJson``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal, NoReturn

from serving.jsondoc import json_type, parse_json_object, snippet
from serving.servable import Servable, Signature
from serving.signatures import DEFAULT_SIGNATURE
from serving.status import Code, RequestError

__all__ = ["CLASSIFY_METHOD", "REGRESS_METHOD", "Method", "check_examples_body", "classify_or_regress", "multi_inference"]

Method = Literal["classify", "regress"]
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
_METHOD_NAMES: dict[str, Method] = {CLASSIFY_METHOD: "classify", REGRESS_METHOD: "regress"}


def check_examples_body(body: bytes | bytearray) -> str:
    """Check a REST :classify/:regress body as TF Serving parses it; returns the signature name."""
    doc = parse_json_object(body)
    signature_name = doc.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise _invalid(
            f"JSON Value: {snippet(doc)} not formatted correctly. 'signature_name' key must be a string value."
        )
    if "context" in doc:
        _example(doc["context"])
    if "examples" not in doc:
        # TF Serving's text says "classify" for :regress too.
        raise _invalid(f"JSON Value: {snippet(doc)} When method is classify, key 'examples' is expected and was not found")
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise _invalid(f"JSON Value: {snippet(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise _invalid(f"JSON Value: {snippet(doc)} 'examples' value is an empty array")
    for example in examples:
        _example(example)
    return signature_name


def _example(value: Any) -> None:
    if not isinstance(value, dict):
        raise _invalid(f"Example must be JSON object but got JSON {json_type(value)}")


def classify_or_regress(servable: Servable, method: Method, signature_name: str, *, check_method_name: bool) -> NoReturn:
    """Raise what TF Serving answers for ``method`` on ``signature_name`` of ``servable``."""
    key = signature_name or DEFAULT_SIGNATURE
    signature = servable.signatures.get(key)
    if signature is None:
        raise _invalid(f"No signature was found with the name: {key}")
    _preprocess(servable, signature, method, check_method_name=check_method_name)
    raise _cannot_run(method)


def multi_inference(
    tasks: Iterable[tuple[str, str, str]],
    resolve: Callable[[], Servable],
    *,
    check_method_name: bool,
) -> NoReturn:
    """Raise what TF Serving answers for a MultiInference of ``(model, signature, method_name)`` tasks.

    ``resolve`` gives the servable of the first task's model spec (TF Serving
    resolves it before it looks at the tasks).
    """
    tasks = list(tasks)
    servable = resolve()
    model_name = ""
    seen: set[str] = set()
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
    raise _cannot_run("MultiInference")


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
    if "inputs" not in signature.inputs:
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


def _cannot_run(what: str) -> RequestError:
    return RequestError(
        Code.UNIMPLEMENTED,
        f"{what} signatures cannot be run by canary's model server, which runs predict signatures "
        "only; use Predict (REST :predict)",
    )


def _invalid(message: str) -> RequestError:
    return RequestError(Code.INVALID_ARGUMENT, message)
