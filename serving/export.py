"""Export the classifiers as TF SavedModels into a TF-Serving-style model store.

Layout: ``<store>/<name>/<version>/saved_model.pb`` (+ ``variables/``), with
``assets.extra/canary_model.json`` describing what was exported::

    {"architecture": "ResNet50", "weights": "seeded", "seed": 50,
     "exporter": 1, "key": "<sha256>"}

(plus ``"perturb": 0.001`` for a near-twin, see :mod:`serving.models`).

Export is cached and idempotent: when the version directory already holds a
``canary_model.json`` with the same key (architecture, weights, seed,
exporter format and library versions), nothing happens. Otherwise the model
is built in a temporary directory beside the target and renamed into place,
so a killed export never leaves a half-written model behind.

CLI: ``python -m serving.export --store DIR [--tiny] [--weights-dir DIR] [--twin EPS]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from canary.errors import CanaryError, ExportError
from canary.quiet_import import quiet_tensorflow
from serving.models import ARCHITECTURES, check_perturbation, find_imagenet_weights

__all__ = [
    "EXPORTER_VERSION",
    "MODEL_INFO_FILE",
    "MODEL_NAMES",
    "default_seed",
    "ensure_models",
    "export_model",
    "main",
    "read_model_info",
]

EXPORTER_VERSION = 1
MODEL_INFO_FILE = Path("assets.extra") / "canary_model.json"
MODEL_NAMES = {"resnet50": "ResNet50", "resnet101": "ResNet101"}
_DEFAULT_SEEDS = {"resnet50": 50, "resnet101": 101}
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_TEMP_RE = re.compile(r"^\.(?P<version>\d+)\.(?:tmp|old)-(?P<pid>\d+)-[0-9a-f]+$")

log = logging.getLogger("serving.export")


@dataclass(frozen=True)
class _Plan:
    """What one export will produce."""

    name: str
    arch: str
    seed: int | None
    weights_file: Path | None
    key: str
    perturb: float | None = None

    @property
    def weights(self) -> str:
        return "imagenet" if self.weights_file is not None else "seeded"

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "architecture": self.arch,
            "weights": self.weights,
            "seed": self.seed,
            "exporter": EXPORTER_VERSION,
            "key": self.key,
        }
        if self.perturb is not None:
            info["perturb"] = self.perturb
        return info


def default_seed(name: str, arch: str) -> int:
    """The fixed seed of a model: 50 for resnet50, 101 for resnet101, else from the name."""
    if name in _DEFAULT_SEEDS:
        return _DEFAULT_SEEDS[name]
    digits = re.findall(r"\d+", name) or re.findall(r"\d+", arch)
    return int(digits[-1]) if digits else int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


def export_model(
    store: Path,
    name: str,
    arch: str,
    *,
    version: int = 1,
    seed: int | None = None,
    weights_dir: Path | None = None,
    perturb: float | None = None,
) -> Path:
    """Export one model to ``<store>/<name>/<version>`` and return that directory.

    ``arch`` is ``ResNet50``, ``ResNet101`` or ``TinyResNet``. With ``seed``
    None, full ResNets use local ImageNet weights when the Keras weight file
    is found (``weights_dir``, ``$KERAS_HOME/models``, ``~/.keras/models``)
    and seeded weights with the model's default seed otherwise; an explicit
    ``seed`` always means seeded weights. ``perturb`` (e.g. 1e-3) exports a
    near-twin of that model: the same weights with every kernel scaled by
    ``1 + perturb * z``; it is part of the cache key.
    """
    if not _NAME_RE.match(name):
        raise ExportError(f"model name {name!r} must be letters, digits, '_', '-' or '.', and not a path")
    if arch not in ARCHITECTURES:
        raise ExportError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    if version < 0:
        raise ExportError(f"version must be a non-negative integer, got {version}")
    check_perturbation(perturb)
    plan = _plan(name, arch, seed, weights_dir, perturb)
    target = Path(store) / name / str(version)
    if _cached_key(target) == plan.key:
        log.info("%s: %s is up to date (%s weights)", name, target, plan.weights)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target.parent)
    temporary = target.parent / f".{version}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    try:
        _build_and_save(plan, temporary)
        _move_into_place(temporary, target, plan.key)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return target


def ensure_models(
    store: Path, *, tiny: bool, weights_dir: Path | None = None, twin: float | None = None
) -> dict[str, Path]:
    """Export ``resnet50`` and ``resnet101`` (tiny stand-ins with ``tiny``) under ``store``.

    With ``twin`` (e.g. 1e-3), ``resnet101`` is instead a near-twin of
    ``resnet50``: its architecture and weights, perturbed by ``twin``.
    Returns model name -> version directory. Cheap when they are up to date.
    """
    paths = {}
    for name, arch in MODEL_NAMES.items():
        perturb = twin if twin is not None and name != "resnet50" else None
        source = "resnet50" if perturb is not None else name
        if tiny:
            paths[name] = export_model(store, name, "TinyResNet", seed=_DEFAULT_SEEDS[source], perturb=perturb)
        elif perturb is not None:
            paths[name] = export_model(
                store, name, MODEL_NAMES[source], weights_dir=weights_dir, perturb=perturb,
                seed=None if find_imagenet_weights(MODEL_NAMES[source], weights_dir) else _DEFAULT_SEEDS[source],
            )
        else:
            paths[name] = export_model(store, name, arch, weights_dir=weights_dir)
    return paths


def read_model_info(version_dir: Path) -> dict[str, Any] | None:
    """The ``canary_model.json`` of an exported version, or None if absent/unreadable."""
    try:
        info = json.loads((Path(version_dir) / MODEL_INFO_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _plan(name: str, arch: str, seed: int | None, weights_dir: Path | None, perturb: float | None = None) -> _Plan:
    weights_file = None
    if seed is None and arch != "TinyResNet":
        weights_file = find_imagenet_weights(arch, weights_dir)
    if weights_file is None and seed is None:
        seed = default_seed(name, arch)
    source: dict[str, Any] = {
        "exporter": EXPORTER_VERSION,
        "architecture": arch,
        "seed": seed,
        "libraries": {lib: _version(lib) for lib in ("tensorflow", "keras", "numpy")},
    }
    if weights_file is not None:
        stat = weights_file.stat()
        source["weights_file"] = {"name": weights_file.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if perturb is not None:  # absent otherwise, so plain exports keep their cache keys
        source["perturb"] = perturb
    key = hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()
    return _Plan(name=name, arch=arch, seed=seed, weights_file=weights_file, key=key, perturb=perturb)


def _version(distribution: str) -> str:
    for candidate in (distribution, f"{distribution}-cpu"):
        try:
            return metadata.version(candidate)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def _cached_key(target: Path) -> str | None:
    info = read_model_info(target)
    if info is None or not (target / "saved_model.pb").is_file():
        return None
    key = info.get("key")
    return key if isinstance(key, str) else None


def _build_and_save(plan: _Plan, directory: Path) -> None:
    started = time.monotonic()
    log.info(
        "%s: building %s (%s weights%s%s)%s",
        plan.name,
        plan.arch,
        plan.weights,
        f", seed {plan.seed}" if plan.seed is not None else f", {plan.weights_file}",
        f", near-twin perturbed by {plan.perturb:g}" if plan.perturb is not None else "",
        "" if plan.arch == "TinyResNet" else "; a full-size export takes a minute or two",
    )
    with quiet_tensorflow():
        import tensorflow as tf
    import keras

    from serving.models import build_model
    from serving.signatures import build_serving_module

    try:
        model = build_model(plan.arch, seed=plan.seed, weights_file=plan.weights_file, perturb=plan.perturb)
        module, signatures = build_serving_module(model)
        log.info("%s: writing SavedModel (%.1f s so far)", plan.name, time.monotonic() - started)
        absl_logger = logging.getLogger("absl")
        absl_level = absl_logger.level
        absl_logger.setLevel(logging.ERROR)  # renamed-resource warnings are noise here
        try:
            tf.saved_model.save(module, str(directory), signatures=signatures)
        finally:
            absl_logger.setLevel(absl_level)
    except CanaryError:
        raise
    except Exception as error:  # TensorFlow raises many types; report them all the same way
        raise ExportError(f"exporting {plan.name} ({plan.arch}) failed: {type(error).__name__}: {error}") from error
    finally:
        keras.backend.clear_session()
    info_path = directory / MODEL_INFO_FILE
    info_path.parent.mkdir(parents=True, exist_ok=True)
    info_path.write_text(json.dumps(plan.info(), indent=2) + "\n")
    log.info("%s: exported in %.1f s", plan.name, time.monotonic() - started)


def _move_into_place(temporary: Path, target: Path, key: str) -> None:
    """Rename ``temporary`` to ``target``, replacing an outdated export."""
    if target.exists():
        if _cached_key(target) == key:
            return  # a concurrent export finished first
        old = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        os.rename(target, old)
        try:
            os.rename(temporary, target)
        finally:
            shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.rename(temporary, target)
    except OSError:
        if _cached_key(target) != key:
            raise
    log.info("%s ready", target)


def _remove_stale_temporaries(model_dir: Path) -> None:
    """Delete temporaries left by exports whose process is gone."""
    for entry in model_dir.iterdir():
        match = _TEMP_RE.match(entry.name)
        if match is None or not entry.is_dir():
            continue
        if not _process_alive(int(match.group("pid"))):
            shutil.rmtree(entry, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m serving.export``: export resnet50 and resnet101 into a model store."""
    parser = argparse.ArgumentParser(
        prog="python -m serving.export",
        description="Export ResNet50 and ResNet101 (or tiny test stand-ins) as TF SavedModels.",
    )
    parser.add_argument("--store", type=Path, required=True, help="model store root (<store>/<name>/<version>)")
    parser.add_argument("--tiny", action="store_true", help="export tiny test models instead of full ResNets")
    parser.add_argument(
        "--weights-dir",
        type=Path,
        default=None,
        help="folder with Keras ImageNet weight files (resnet50_weights_tf_dim_ordering_tf_kernels.h5, ...)",
    )
    parser.add_argument(
        "--twin",
        type=float,
        default=None,
        metavar="EPS",
        help="export resnet101 as a near-twin of resnet50 (weights perturbed by EPS, e.g. 1e-3)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        paths = ensure_models(args.store, tiny=args.tiny, weights_dir=args.weights_dir, twin=args.twin)
    except CanaryError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    for name, path in paths.items():
        info = read_model_info(path) or {}
        print(f"{name}\t{path}\t{info.get('architecture')}\t{info.get('weights')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
