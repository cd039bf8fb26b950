"""The classifiers the exporter builds, and their deterministic seeded weights.

* ``ResNet50`` / ``ResNet101``: the real ``keras.applications`` networks,
  with ImageNet weights when the standard Keras weight file is on disk, or
  seeded weights otherwise (nothing is ever downloaded).
* ``TinyResNet``: a few-layer residual conv net with the same input and
  output (224x224x3 caffe-preprocessed pixels -> 1000 softmax), for tests.

Seeded weights come from numpy's PCG64 generator, layer by layer, so one
seed gives bit-identical weights on every export. An untrained ResNet's
softmax is almost uniform, which would make two models indistinguishable;
so after seeding, the classifier head is rescaled (by a power of two) and
centred on a fixed set of synthetic calibration images, giving confident,
image-dependent and seed-dependent probabilities. The calibration only ever
picks a power of two and a bias rounded to 1/64, so tiny floating-point
noise cannot change the exported weights.

A *near-twin* (``perturb=eps``) is the same network with every kernel
multiplied by ``1 + eps * z`` (``z`` standard normal, from a fixed stream
derived from the seed), after seeding or loading: a stand-in for a lightly
fine-tuned canary. With ``eps=1e-3`` the tiny model's largest probability
change per image is of order 1e-3 (1.2e-3 on the walkthrough photo, 1e-4 to
6e-4 on the synthetic payloads) and its top-1 class stays the same except
on near-ties.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from canary.errors import ExportError
from serving.signatures import IMAGE_SIZE

__all__ = [
    "ARCHITECTURES",
    "IMAGENET_WEIGHT_FILES",
    "build_model",
    "check_perturbation",
    "find_imagenet_weights",
]

ARCHITECTURES = ("ResNet50", "ResNet101", "TinyResNet")
IMAGENET_WEIGHT_FILES = {
    "ResNet50": "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
    "ResNet101": "resnet101_weights_tf_dim_ordering_tf_kernels.h5",
}
CLASSES = 1000
_RESIDUAL_GAMMA = 0.3  # last BN of each residual branch: keeps activations bounded
_TARGET_LOGIT_STD = 3.0
_BIAS_STEP = 2.0**-6
_CALIBRATION_SEED = 20240229
_CALIBRATION_IMAGES = 8
_TWIN_STREAM = 0x7417  # keeps the twin's noise apart from the seeding stream


def find_imagenet_weights(arch: str, weights_dir: Path | None) -> Path | None:
    """The local Keras ImageNet weight file for ``arch``, if there is one.

    Looks in ``weights_dir``, then ``$KERAS_HOME/models``, then ``~/.keras/models``.
    """
    filename = IMAGENET_WEIGHT_FILES.get(arch)
    if filename is None:
        return None
    candidates = []
    if weights_dir is not None:
        candidates.append(Path(weights_dir))
    if os.environ.get("KERAS_HOME"):
        candidates.append(Path(os.environ["KERAS_HOME"]) / "models")
    candidates.append(Path.home() / ".keras" / "models")
    for folder in candidates:
        path = folder / filename
        if path.is_file():
            return path
    return None


def check_perturbation(perturb: float | None) -> None:
    """Raise ExportError unless ``perturb`` is None or a relative size in (0, 0.1]."""
    if perturb is not None and not (math.isfinite(perturb) and 0.0 < perturb <= 0.1):
        raise ExportError(
            f"perturbation {perturb!r} must be a relative weight change between 0 and 0.1 "
            "(1e-3 gives a near-twin whose probabilities differ by about 1e-3)"
        )


def build_model(
    arch: str, *, seed: int | None, weights_file: Path | None, perturb: float | None = None
) -> Any:
    """A Keras classifier: ImageNet weights from ``weights_file``, else seeded with ``seed``.

    ``perturb`` makes a near-twin: every kernel scaled by ``1 + perturb * z``.
    """
    check_perturbation(perturb)
    model = _build(arch, seed=seed, weights_file=weights_file)
    if perturb is not None:
        _perturb_kernels(model, perturb, seed)
    return model


def _build(arch: str, *, seed: int | None, weights_file: Path | None) -> Any:
    import keras

    if arch == "TinyResNet":
        model = _tiny_resnet()
    elif arch in IMAGENET_WEIGHT_FILES:
        factory = getattr(keras.applications, arch)
        weights = str(weights_file) if weights_file is not None else None
        try:
            model = factory(weights=weights, include_top=True, classes=CLASSES)
        except (OSError, ValueError) as error:
            raise ExportError(
                f"could not load ImageNet weights for {arch} from {weights_file}: {error}; "
                "delete or replace the file to use seeded weights instead"
            ) from error
        if weights_file is not None:
            return model
    else:
        raise ExportError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    if seed is None:
        raise ExportError(f"{arch} needs a seed when no ImageNet weights are used")
    _seed_weights(model, seed)
    _calibrate_head(model, seed)
    return model


def _perturb_kernels(model: Any, perturb: float, seed: int | None) -> None:
    """Multiply every kernel by ``1 + perturb * z``, z ~ N(0, 1) from a stream fixed by ``seed``."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([_TWIN_STREAM, seed or 0])))
    factor = np.float32(perturb)
    for layer in model.layers:
        if not layer.weights:
            continue
        values = []
        for weight, value in zip(layer.weights, layer.get_weights(), strict=True):
            if weight.path.rsplit("/", 1)[-1] == "kernel":
                noise = rng.standard_normal(value.shape, dtype=np.float32)
                value = (value * (np.float32(1.0) + factor * noise)).astype(np.float32)
            values.append(value)
        layer.set_weights(values)


def _tiny_resnet() -> Any:
    """Downsample to 32x32 inside, a conv stem, two residual blocks, a 1000-way head."""
    import keras
    from keras import layers

    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
    x = layers.AveragePooling2D(IMAGE_SIZE // 32, name="downsample")(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="same", name="stem_conv")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for block in (1, 2):
        y = layers.Conv2D(32, 3, padding="same", name=f"block{block}_1_conv")(x)
        y = layers.BatchNormalization(name=f"block{block}_1_bn")(y)
        y = layers.ReLU(name=f"block{block}_1_relu")(y)
        y = layers.Conv2D(32, 3, padding="same", name=f"block{block}_3_conv")(y)
        y = layers.BatchNormalization(name=f"block{block}_3_bn")(y)
        x = layers.ReLU(name=f"block{block}_out")(layers.Add(name=f"block{block}_add")([x, y]))
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(CLASSES, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="tiny_resnet")


def _seed_weights(model: Any, seed: int) -> None:
    """He-normal kernels, zero biases, identity batch norms, from one PCG64 stream."""
    rng = np.random.Generator(np.random.PCG64(seed))
    for layer in model.layers:
        if not layer.weights:
            continue
        values = []
        for weight in layer.weights:
            shape = tuple(int(d) for d in weight.shape)
            leaf = weight.path.rsplit("/", 1)[-1]
            if leaf == "kernel":
                fan_in = math.prod(shape[:-1])
                std = math.sqrt((1.0 if layer.name == "predictions" else 2.0) / fan_in)
                values.append(rng.standard_normal(shape, dtype=np.float32) * np.float32(std))
            elif leaf in ("bias", "beta", "moving_mean"):
                values.append(np.zeros(shape, np.float32))
            elif leaf == "moving_variance":
                values.append(np.ones(shape, np.float32))
            elif leaf == "gamma":
                gamma = _RESIDUAL_GAMMA if layer.name.endswith("_3_bn") else 1.0
                values.append(np.full(shape, gamma, np.float32))
            else:
                raise ExportError(f"cannot seed weight {weight.path} of layer {layer.name}")
        layer.set_weights(values)


def _calibration_images() -> Any:
    """Fixed synthetic RGB images, 0..255: colour fields at several scales.

    Coarse blobs plus finer texture, at random contrast and brightness, spread
    the features about as much as photos do, so the calibrated head is
    neither flat nor one-hot on real images.
    """
    import tensorflow as tf

    count = _CALIBRATION_IMAGES
    rng = np.random.Generator(np.random.PCG64(_CALIBRATION_SEED))
    images = np.zeros((count, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    for cells, amplitude in ((4, 1.0), (14, 0.6), (56, 0.35), (IMAGE_SIZE, 0.15)):
        field = rng.standard_normal((count, cells, cells, 3)).astype(np.float32)
        images += amplitude * tf.image.resize(field, [IMAGE_SIZE, IMAGE_SIZE], method="bilinear").numpy()
    low = images.min(axis=(1, 2, 3), keepdims=True)
    high = images.max(axis=(1, 2, 3), keepdims=True)
    unit = (images - low) / (high - low)
    contrast = rng.uniform(0.15, 1.0, (count, 1, 1, 1)).astype(np.float32)
    offset = rng.uniform(0.0, 1.0, (count, 1, 1, 1)).astype(np.float32) * (1.0 - contrast)
    return np.round(255.0 * (offset + contrast * unit))


def _calibrate_head(model: Any, seed: int) -> None:
    """Scale and centre the softmax head so its outputs are confident and distinct."""
    import keras

    features = keras.Model(model.input, model.get_layer("avg_pool").output)
    pixels = keras.applications.resnet.preprocess_input(_calibration_images())
    f = np.asarray(features(pixels, training=False), dtype=np.float64)
    head = model.get_layer("predictions")
    kernel = np.asarray(head.get_weights()[0], dtype=np.float32)
    mean = f.mean(axis=0)
    spread = float(((f - mean) @ kernel.astype(np.float64)).std())
    if not math.isfinite(spread) or spread <= 0.0:
        raise ExportError(f"seed {seed} gives a degenerate network (feature spread {spread}); pick another seed")
    scale = np.float32(2.0 ** round(math.log2(_TARGET_LOGIT_STD / spread)))
    kernel = kernel * scale  # a power of two: exact in float32
    bias = -(mean @ kernel.astype(np.float64))
    bias = (np.round(bias / _BIAS_STEP) * _BIAS_STEP).astype(np.float32)
    head.set_weights([kernel, bias])
