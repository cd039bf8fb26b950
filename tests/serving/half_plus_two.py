"""TF Serving's test model, half_plus_two, exported here with TensorFlow 2.21.

TF Serving's own tests and documentation exercise ``saved_model_half_plus_two``: ``y = a*x + b`` with
``a = 0.5`` and ``b = 2``. This module writes an equivalent SavedModel so that our compatibility tests
can replay TF Serving's documented exchanges without TF Serving's test data.

Two styles:

* ``"tf1"`` follows the graph of TF Serving's ``saved_model_half_plus_two.py`` (written independently, with
  ``tf.compat.v1`` graph mode): a ``tf_example`` string placeholder parsed into features ``x`` and ``x2``
  (``FixedLenFeature([1], float32)``, ``x2`` defaulting to 0.0), ``y = a*x + b``, ``y2 = a*x + c``,
  ``y3 = a2*x2 + c2``, and the signatures ``serving_default`` (predict, ``x`` -> ``y``), ``classify_x_to_y``
  (``inputs`` -> ``scores``), ``regress_x_to_y`` / ``regress_x_to_y2`` / ``regress_x2_to_y3``
  (``inputs`` -> ``outputs``), saved under the ``serve`` tag by ``SavedModelBuilder`` with an asset
  (``assets/foo.txt``) and a main op, as the original.
* ``"tf2"`` is a ``tf.Module`` whose ``serving_default`` maps ``x`` (float32, ``[-1, 1]``) to ``y``, saved
  with ``tf.saved_model.save``.

``b`` differs per version when asked, so that tests can tell versions apart by their answers.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

Style = Literal["tf1", "tf2"]

A = 0.5
C = 3.0
DEFAULT_B = 2.0
ASSET_NAME = "foo.txt"


def export_half_plus_two(
    base: Path,
    *,
    style: Style = "tf1",
    versions: Sequence[str] = ("00000123",),
    b: Sequence[float] | None = None,
) -> Path:
    """Write ``<base>/<version>/saved_model.pb`` (and variables) for each version dir; return ``base``.

    ``b`` gives each version its own offset (``y = 0.5*x + b``); it defaults to 2.0 for every version.
    """
    offsets = [DEFAULT_B] * len(versions) if b is None else [float(value) for value in b]
    if len(offsets) != len(versions):
        raise ValueError(
            f"give one b per version: {len(versions)} versions, {len(offsets)} values of b"
        )
    if style not in ("tf1", "tf2"):
        raise ValueError(f"unknown style {style!r}: use 'tf1' or 'tf2'")
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    for version, offset in zip(versions, offsets, strict=True):
        target = base / version
        if (target / "saved_model.pb").exists():
            continue
        if style == "tf1":
            _export_tf1(target, offset)
        else:
            _export_tf2(target, offset)
    return base


def _export_tf1(target: Path, offset: float) -> None:
    import tensorflow as tf

    v1 = tf.compat.v1
    constants = v1.saved_model.signature_constants
    build = v1.saved_model.utils.build_tensor_info

    def info(tensor: Any) -> Any:
        built = build(tensor)
        if tensor.dtype == tf.string:
            # TF Serving's checked-in model declares its serialized-Example input with unknown rank.
            built.tensor_shape.Clear()
            built.tensor_shape.unknown_rank = True
        return built

    def signature(inputs: dict[str, Any], outputs: dict[str, Any], method: str) -> Any:
        return v1.saved_model.signature_def_utils.build_signature_def(
            {key: info(tensor) for key, tensor in inputs.items()},
            {key: info(tensor) for key, tensor in outputs.items()},
            method,
        )

    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        a = v1.Variable(A, name="a")
        b = v1.Variable(offset, name="b")
        c = v1.Variable(C, name="c")
        serialized = v1.placeholder(tf.string, shape=[None], name="tf_example")
        features = v1.parse_example(
            serialized,
            {
                "x": v1.FixedLenFeature([1], dtype=tf.float32),
                "x2": v1.FixedLenFeature([1], dtype=tf.float32, default_value=[0.0]),
            },
        )
        x = tf.identity(features["x"], name="x")
        y = tf.identity(tf.add(tf.multiply(a, x), b), name="y")
        y2 = tf.identity(tf.add(tf.multiply(a, x), c), name="y2")
        x2 = tf.identity(features["x2"], name="x2")
        a2 = v1.Variable(A, name="a2")
        c2 = v1.Variable(C, name="c2")
        y3 = tf.identity(tf.add(tf.multiply(a2, x2), c2), name="y3")

        regress_in, regress_out = constants.REGRESS_INPUTS, constants.REGRESS_OUTPUTS
        signatures = {
            constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY: signature(
                {"x": x}, {"y": y}, constants.PREDICT_METHOD_NAME
            ),
            "classify_x_to_y": signature(
                {constants.CLASSIFY_INPUTS: serialized},
                {constants.CLASSIFY_OUTPUT_SCORES: y},
                constants.CLASSIFY_METHOD_NAME,
            ),
            "regress_x_to_y": signature(
                {regress_in: serialized}, {regress_out: y}, constants.REGRESS_METHOD_NAME
            ),
            "regress_x_to_y2": signature(
                {regress_in: serialized}, {regress_out: y2}, constants.REGRESS_METHOD_NAME
            ),
            "regress_x2_to_y3": signature(
                {regress_in: x2}, {regress_out: y3}, constants.REGRESS_METHOD_NAME
            ),
        }
        # An asset file and a main op that assigns its name to an unsaved variable, as the original.
        with tempfile.TemporaryDirectory() as scratch:
            asset = Path(scratch) / ASSET_NAME
            asset.write_text("asset-file-contents")
            v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, tf.constant(str(asset)))
            filename = v1.Variable(
                ASSET_NAME, name="filename_tensor", trainable=False, collections=[]
            )
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(target))
            builder.add_meta_graph_and_variables(
                session,
                [v1.saved_model.tag_constants.SERVING],
                signature_def_map=signatures,
                assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS),
                main_op=tf.group(filename.assign(ASSET_NAME)),
            )
            builder.save()


def _export_tf2(target: Path, offset: float) -> None:
    import tensorflow as tf

    class HalfPlusTwo(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = tf.Variable(A, name="a")
            self.b = tf.Variable(offset, name="b")

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def predict(self, x: Any) -> dict[str, Any]:
            return {"y": tf.add(tf.multiply(self.a, x), self.b)}

    module = HalfPlusTwo()
    tf.saved_model.save(module, str(target), signatures={"serving_default": module.predict})
