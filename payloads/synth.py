"""Deterministic synthetic test images (224x224 RGB JPEGs), made with numpy and Pillow.

They add payloads nobody has to license, with varied colour, texture and
structure, so that the two models' outputs differ on several inputs and a
calibration does not hang on one photo. Each scene is a pure function of its
name (fixed PCG64 seeds), and the JPEG settings are fixed, so
``python -m payloads.gen synthesize`` reproduces the committed files.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["SCENES", "SIZE", "render", "synthesize"]

SIZE = 224
_JPEG_QUALITY = 90
_SEED = 20240601

Image8 = npt.NDArray[np.uint8]
Float = npt.NDArray[np.float64]


def _grid() -> tuple[Float, Float]:
    """Pixel-centre coordinates in [0, 1): ``y`` down, ``x`` across."""
    axis = (np.arange(SIZE, dtype=np.float64) + 0.5) / SIZE
    y, x = np.meshgrid(axis, axis, indexing="ij")
    return y, x


def _to_uint8(rgb: Float) -> Image8:
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def _sunset() -> Image8:
    """A sky gradient, a sun disc, a dark sea with rippled reflections."""
    y, x = _grid()
    top, horizon = np.array([0.25, 0.12, 0.45]), np.array([1.0, 0.55, 0.2])
    sky = top + (horizon - top) * (y[..., None] / 0.62)
    sun = ((x - 0.62) ** 2 + (y - 0.5) ** 2) < 0.11**2
    sky[sun] = [1.0, 0.9, 0.55]
    sea = np.array([0.05, 0.1, 0.25]) + 0.12 * np.sin(
        140 * y[..., None] + 9 * np.sin(11 * x[..., None])
    )
    glow = np.exp(-((x - 0.62) ** 2) / 0.004)[..., None] * np.array([0.7, 0.45, 0.15])
    image = np.where((y < 0.62)[..., None], sky, sea + glow * (np.sin(90 * y) > 0)[..., None])
    return _to_uint8(image)


def _checker() -> Image8:
    """A rotated checkerboard whose two colours drift across the image."""
    y, x = _grid()
    angle = np.deg2rad(22.0)
    u = x * np.cos(angle) - y * np.sin(angle)
    v = x * np.sin(angle) + y * np.cos(angle)
    cells = (np.floor(u * 9) + np.floor(v * 9)) % 2
    light = np.stack([0.9 - 0.5 * x, 0.85 * np.ones_like(x), 0.3 + 0.6 * y], axis=-1)
    dark = np.stack([0.1 + 0.3 * y, 0.15 * np.ones_like(x), 0.35 - 0.25 * x], axis=-1)
    return _to_uint8(np.where(cells[..., None] > 0, light, dark))


def _rings() -> Image8:
    """Concentric rings cycling through hues around an off-centre point."""
    y, x = _grid()
    radius = np.hypot(x - 0.42, y - 0.55)
    phase = 2 * np.pi * radius * 7
    rgb = np.stack([np.sin(phase), np.sin(phase + 2.1), np.sin(phase + 4.2)], axis=-1)
    fade = np.exp(-radius * 1.5)[..., None]
    return _to_uint8(0.5 + 0.45 * rgb * fade)


def _clouds() -> Image8:
    """Smooth colour noise at several scales from a fixed seed (Pillow bilinear upsampling)."""
    from PIL import Image

    rng = np.random.Generator(np.random.PCG64(_SEED))
    total = np.zeros((SIZE, SIZE, 3))
    for cells, amplitude in ((3, 1.0), (9, 0.5), (28, 0.25), (SIZE, 0.08)):
        field = rng.standard_normal((cells, cells, 3))
        layers = []
        for channel in range(3):
            small = Image.fromarray(np.ascontiguousarray(field[..., channel], dtype=np.float32))
            layers.append(
                np.asarray(small.resize((SIZE, SIZE), Image.Resampling.BILINEAR), dtype=np.float64)
            )
        total += amplitude * np.stack(layers, axis=-1)
    low, high = total.min(), total.max()
    return _to_uint8((total - low) / (high - low))


SCENES: dict[str, Callable[[], Image8]] = {
    "synthetic_checker": _checker,
    "synthetic_clouds": _clouds,
    "synthetic_rings": _rings,
    "synthetic_sunset": _sunset,
}


def render(name: str) -> bytes:
    """The JPEG bytes of scene ``name`` (fixed quality, baseline, no metadata)."""
    from PIL import Image

    pixels = SCENES[name]()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=_JPEG_QUALITY, optimize=False)
    return buffer.getvalue()


def synthesize(out: Path) -> list[Path]:
    """Write every scene as ``<out>/<name>.jpg``; returns the paths, sorted."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in sorted(SCENES):
        path = out / f"{name}.jpg"
        path.write_bytes(render(name))
        paths.append(path)
    return paths
