"""The two serving signatures every exported model carries.

* ``serving_default``: ``input_image`` float32 ``[batch, height, width, 3]``
  of RGB pixel values 0..255, any height and width (the minikube walkthrough
  sends its 600x512 photo as is) -> resized to 224x224 -> ResNet's caffe
  preprocessing -> model -> ``probabilities`` float32 ``[batch, 1000]``.
* ``serving_preprocess``: ``bytes_inputs`` string ``[batch]`` of JPEG bytes
  (``{"b64": ...}`` over REST, as in the GKE walkthrough) -> decoded -> the
  same path.

One input and one output each, so TF Serving's row format answers
``{"predictions": [[1000 floats]]}``. TensorFlow is imported by the caller.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DEFAULT_SIGNATURE",
    "IMAGE_SIZE",
    "INPUT_BYTES",
    "INPUT_IMAGE",
    "OUTPUT",
    "PREPROCESS_SIGNATURE",
    "build_serving_module",
]

DEFAULT_SIGNATURE = "serving_default"
PREPROCESS_SIGNATURE = "serving_preprocess"
INPUT_IMAGE = "input_image"
INPUT_BYTES = "bytes_inputs"
OUTPUT = "probabilities"
IMAGE_SIZE = 224


def build_serving_module(model: Any) -> tuple[Any, dict[str, Any]]:
    """A ``tf.Module`` tracking ``model`` and its signatures, ready for ``tf.saved_model.save``.

    ``model`` takes preprocessed ``[batch, 224, 224, 3]`` images and returns
    softmax probabilities.
    """
    import keras
    import tensorflow as tf

    def to_model_size(images: Any) -> Any:
        shape = tf.shape(images)
        already = tf.logical_and(tf.equal(shape[1], IMAGE_SIZE), tf.equal(shape[2], IMAGE_SIZE))
        return tf.cond(
            already,
            lambda: images,
            lambda: tf.image.resize(images, [IMAGE_SIZE, IMAGE_SIZE], method="bilinear"),
        )

    def classify(images: Any) -> Any:
        pixels = keras.applications.resnet.preprocess_input(images)
        return model(pixels, training=False)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name=INPUT_IMAGE)])
    def serve_pixels(input_image: Any) -> dict[str, Any]:
        return {OUTPUT: classify(to_model_size(input_image))}

    def decode(jpeg: Any) -> Any:
        image = tf.cast(tf.io.decode_jpeg(jpeg, channels=3), tf.float32)
        return tf.ensure_shape(to_model_size(image[tf.newaxis])[0], [IMAGE_SIZE, IMAGE_SIZE, 3])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_BYTES)])
    def serve_jpeg(bytes_inputs: Any) -> dict[str, Any]:
        images = tf.map_fn(
            decode,
            bytes_inputs,
            fn_output_signature=tf.TensorSpec([IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32),
        )
        return {OUTPUT: classify(images)}

    module = tf.Module()
    module.model = model
    module.serve_pixels = serve_pixels
    module.serve_jpeg = serve_jpeg
    signatures = {
        DEFAULT_SIGNATURE: serve_pixels.get_concrete_function(),
        PREPROCESS_SIGNATURE: serve_jpeg.get_concrete_function(),
    }
    return module, signatures
