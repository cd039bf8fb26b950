"""gRPC tensors (serving.tensor_proto): TensorProto <-> numpy as TF Serving fills and reads them."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import predict_pb2

from payloads.wire import decode_predict_output
from serving.status import RequestError
from serving.tensor_proto import (
    decode_string_list,
    encode_string_list,
    fill_tensor_proto,
    ndarray_to_tensor_proto,
    tensor_proto_to_ndarray,
)
from serving.tensors import DType

VALUE_FIELDS = [f.name for f in tensor_pb2.TensorProto.DESCRIPTOR.fields if f.name.endswith("_val")]

# dtype, values, the field Tensor::AsProtoField fills, what it holds
TYPED = [
    (np.float32, [0.5, -1.25, np.inf], "float_val", [0.5, -1.25, np.inf]),
    (np.float64, [0.1, -2.0, 1e300], "double_val", [0.1, -2.0, 1e300]),
    (np.int32, [-(2**31), 0, 2**31 - 1], "int_val", [-(2**31), 0, 2**31 - 1]),
    (np.int16, [-32768, 7, 32767], "int_val", [-32768, 7, 32767]),
    (np.int8, [-128, 0, 127], "int_val", [-128, 0, 127]),
    (np.uint8, [0, 128, 255], "int_val", [0, 128, 255]),
    (np.uint16, [0, 40000, 65535], "int_val", [0, 40000, 65535]),
    (np.int64, [-(2**63), 1, 2**63 - 1], "int64_val", [-(2**63), 1, 2**63 - 1]),
    (np.bool_, [True, False, True], "bool_val", [True, False, True]),
    (np.float16, [1.0, -2.0, 0.5], "half_val", [0x3C00, 0xC000, 0x3800]),  # the bits, as an int32
    (np.complex64, [1 + 2j, -3j, 0.5], "scomplex_val", [1.0, 2.0, 0.0, -3.0, 0.5, 0.0]),
    (np.complex128, [1 + 2j, -3j, 0.5], "dcomplex_val", [1.0, 2.0, 0.0, -3.0, 0.5, 0.0]),
    (np.uint32, [0, 7, 2**32 - 1], "uint32_val", [0, 7, 2**32 - 1]),
    (np.uint64, [0, 7, 2**64 - 1], "uint64_val", [0, 7, 2**64 - 1]),
]


@pytest.mark.parametrize(("dtype", "values", "field", "held"), TYPED, ids=[np.dtype(t[0]).name for t in TYPED])
def test_outputs_fill_the_typed_field_tf_serving_fills(dtype: type, values: list, field: str, held: list) -> None:
    array = np.array(values, dtype=dtype).reshape(3, 1)
    proto = ndarray_to_tensor_proto(array)
    assert proto.dtype == DType(tf.as_dtype(array.dtype).as_datatype_enum)
    assert [d.size for d in proto.tensor_shape.dim] == [3, 1]
    assert not proto.tensor_content
    assert list(getattr(proto, field)) == held
    assert [f for f in VALUE_FIELDS if f != field and len(getattr(proto, f))] == []
    for back in (tensor_proto_to_ndarray(proto), tf.make_ndarray(proto)):  # ours, and TensorFlow's reader
        assert back.dtype == array.dtype and back.shape == array.shape
        np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize(("dtype", "values"), [(t[0], t[1]) for t in TYPED], ids=[np.dtype(t[0]).name for t in TYPED])
def test_outputs_as_tensor_content_with_the_flag(dtype: type, values: list) -> None:
    array = np.array(values, dtype=dtype).reshape(1, 3)
    proto = ndarray_to_tensor_proto(array, tensor_content=True)
    assert proto.tensor_content == array.astype(array.dtype.newbyteorder("<")).tobytes()
    assert [f for f in VALUE_FIELDS if len(getattr(proto, f))] == []
    np.testing.assert_array_equal(tensor_proto_to_ndarray(proto), array)
    np.testing.assert_array_equal(tf.make_ndarray(proto), array)
    by_tf = tf.make_tensor_proto(array)  # TensorFlow's layout, where its Python writes tensor_content
    if by_tf.tensor_content:  # (for uint16 it writes int_val)
        assert proto == by_tf


@pytest.mark.parametrize("requested_by_tf", [False, True])
def test_inputs_of_every_dtype_are_read_from_typed_fields_and_content(requested_by_tf: bool) -> None:
    for dtype, values, _, _ in TYPED:
        array = np.array(values, dtype=dtype).reshape(3, 1)
        proto = tf.make_tensor_proto(array) if requested_by_tf else ndarray_to_tensor_proto(array)
        back = tensor_proto_to_ndarray(proto)
        assert back.dtype == array.dtype, dtype
        np.testing.assert_array_equal(back, array)


def test_strings_go_as_string_val_or_as_tensorflows_string_list() -> None:
    array = np.array([[b"cat", b""], [b"\x00\xff", "d\u00e9j\u00e0".encode()]], dtype=object)
    typed = ndarray_to_tensor_proto(array)
    assert list(typed.string_val) == array.reshape(-1).tolist() and not typed.tensor_content
    content = ndarray_to_tensor_proto(array, tensor_content=True)
    assert not content.string_val
    # EncodeStringList: every length as a varint32, then the bytes
    assert content.tensor_content == bytes([3, 0, 2, 6]) + b"cat\x00\xffd\xc3\xa9j\xc3\xa0"
    for proto in (typed, content):
        back = tensor_proto_to_ndarray(proto)
        assert back.shape == (2, 2) and back.tolist() == array.tolist()
    long = [b"x" * 300, b"y"]
    assert encode_string_list(long)[:3] == bytes([0xAC, 0x02, 1])
    assert decode_string_list(encode_string_list(long), 2).tolist() == long
    with pytest.raises(RequestError, match="string-list encoding"):
        decode_string_list(bytes([5]) + b"abc", 1)


def test_repeated_values_broadcast_and_bad_content_is_refused() -> None:
    proto = tf.make_tensor_proto([1.0, 2.0, 3.0], dtype=tf.float32)
    proto.ClearField("tensor_content")
    proto.float_val.extend([1.0, 2.0, 3.0])
    assert tensor_proto_to_ndarray(proto).tolist() == [1.0, 2.0, 3.0]
    proto.ClearField("float_val")
    proto.float_val.append(7.0)  # Tensor::FromProto repeats the last value
    assert tensor_proto_to_ndarray(proto).tolist() == [7.0, 7.0, 7.0]
    bad = tf.make_tensor_proto(np.zeros((2, 2), np.float32))
    bad.tensor_content = bad.tensor_content[:-4]
    with pytest.raises(RequestError, match="tensor_content has 12 bytes"):
        tensor_proto_to_ndarray(bad)


@pytest.mark.parametrize("tensor_content", [False, True])
def test_fill_writes_into_a_response_and_the_load_tests_reader_reads_it(tensor_content: bool) -> None:
    """payloads.wire (the load test's TensorFlow-free reader) reads what the server sends, both ways."""
    probabilities = np.random.default_rng(3).random((1, 1000), dtype=np.float32)
    response = predict_pb2.PredictResponse()
    response.model_spec.name = "m"
    fill_tensor_proto(response.outputs["probabilities"], probabilities, tensor_content=tensor_content)
    fill_tensor_proto(response.outputs["classes"], np.array([[3]], np.int64), tensor_content=tensor_content)
    data = response.SerializeToString()
    output = predict_pb2.PredictResponse.FromString(data).outputs["probabilities"]
    assert bool(output.tensor_content) is tensor_content and len(output.float_val) == (0 if tensor_content else 1000)
    np.testing.assert_array_equal(decode_predict_output(data), probabilities.reshape(-1))


def test_empty_and_scalar_outputs() -> None:
    for array in (np.zeros((0, 3), np.float32), np.float32(2.5) * np.ones((), np.float32), np.array([], np.int32)):
        proto = ndarray_to_tensor_proto(array)
        back = tensor_proto_to_ndarray(proto)
        assert back.shape == array.shape and back.dtype == array.dtype
        np.testing.assert_array_equal(back, array)
