"""tensorflow_model_server's command-line flags, and container path mapping.

The local mesh starts this server with a Deployment's container ``args``
unchanged (``--model_name=... --model_base_path=/models/resnet50``) plus port
overrides appended at the end, so flags parse as the real binary parses them:
``--name=value`` (or ``--name value``), booleans as ``--name``,
``--name=true|false`` or ``--noname``, and a repeated flag's last value wins.
Flags the real server has but that mean nothing here are accepted and
ignored (:attr:`ServerFlags.ignored` names those given, and the server logs
them); an unknown flag is an error. Flags named ``canary_*`` are this
server's own (see :func:`flag_help`).

``CANARY_VOLUME_MAP`` (a JSON object: container mount path -> local
directory) turns container paths into local ones; the longest matching mount
wins, as with Kubernetes volume mounts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from canary.errors import ServingError
from serving.limits import DEFAULT_MAX_REQUEST_BYTES

__all__ = [
    "VOLUME_MAP_ENV",
    "FlagError",
    "ServerFlags",
    "flag_help",
    "map_container_path",
    "parse_flags",
]

VOLUME_MAP_ENV = "CANARY_VOLUME_MAP"

# name -> (kind, default); kind is "int", "float", "str" or "bool".
_FLAGS: dict[str, tuple[str, object]] = {
    "port": ("int", 8500),
    "grpc_socket_path": ("str", ""),
    "rest_api_port": ("int", 8501),
    "rest_api_num_threads": ("int", 0),
    "rest_api_timeout_in_ms": ("int", 30000),
    "rest_api_enable_cors_support": ("bool", False),
    "model_name": ("str", "default"),
    "model_base_path": ("str", ""),
    "file_system_poll_wait_seconds": ("int", 1),
    "saved_model_tags": ("str", "serve"),
    "tensorflow_session_parallelism": ("int", 0),
    "tensorflow_intra_op_parallelism": ("int", 0),
    "tensorflow_inter_op_parallelism": ("int", 0),
    "enable_model_warmup": ("bool", True),
    "monitoring_config_file": ("str", ""),
    "grpc_max_threads": ("int", 0),
    "enable_signature_method_name_check": ("bool", False),
    "enable_serialization_as_tensor_content": ("bool", False),
    "model_config_file": ("str", ""),
    "model_config_file_poll_wait_seconds": ("int", 0),
    "allow_version_labels_for_unavailable_models": ("bool", False),
    "version": ("bool", False),
    # canary's own.
    "canary_max_request_bytes": ("int", DEFAULT_MAX_REQUEST_BYTES),
    # Accepted for compatibility; they change nothing here.
    "enable_batching": ("bool", False),
    "batching_parameters_file": ("str", ""),
    "enable_per_model_batching_parameters": ("bool", False),
    "num_request_iterations_for_warmup": ("int", 0),
    "xla_gpu_compilation_enabled": ("bool", False),
    "num_load_threads": ("int", 0),
    "num_unload_threads": ("int", 0),
    "max_num_load_retries": ("int", 5),
    "load_retry_interval_micros": ("int", 60_000_000),
    "flush_filesystem_caches": ("bool", True),
    "tensorflow_session_config_file": ("str", ""),
    "platform_config_file": ("str", ""),
    "per_process_gpu_memory_fraction": ("float", 0.0),
    "grpc_channel_arguments": ("str", ""),
    "remove_unused_fields_from_bundle_metagraph": ("bool", True),
    "prefer_tflite_model": ("bool", False),
    "num_tflite_pools": ("int", 1),
    "num_tflite_interpreters_per_pool": ("int", 1),
    "xla_cpu_compilation_enabled": ("bool", False),
    "enable_profiler": ("bool", True),
    "thread_pool_factory_config_file": ("str", ""),
    "mixed_precision": ("str", ""),
    "skip_initialize_tpu": ("bool", False),
    "enable_grpc_healthcheck_service": ("bool", False),
    # Real flags this server cannot honour: refused with a reason.
    "ssl_config_file": ("str", ""),
    "use_alts_credentials": ("bool", False),
}
_UNSUPPORTED = {
    "ssl_config_file": "the local mesh speaks plaintext on loopback; terminate TLS at the ingress",
    "use_alts_credentials": "the local mesh speaks plaintext on loopback",
}
_HELP = {
    "canary_max_request_bytes": (
        "canary's own: the largest REST body and gRPC message accepted, in bytes; a larger "
        "REST body is answered 413 before it is read, a larger gRPC message RESOURCE_EXHAUSTED "
        f"(1 to {2**31 - 1}; TF Serving has no such limit)"
    ),
    "enable_signature_method_name_check": "Classify/Regress/MultiInference check each signature's method_name",
    "rest_api_timeout_in_ms": "REST deadline from the request's arrival (body upload included) to the answer",
}
_MAX_MESSAGE_BYTES = 2**31 - 1  # gRPC's ceiling
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


class FlagError(ServingError):
    """Bad command line: the server exits with status 2."""

    exit_code = 2


@dataclass(frozen=True)
class ServerFlags:
    """The flags this server acts on (see the module docstring for the rest)."""

    port: int = 8500
    grpc_socket_path: str = ""
    rest_api_port: int = 8501
    rest_api_num_threads: int = 0
    rest_api_timeout_in_ms: int = 30000
    rest_api_enable_cors_support: bool = False
    model_name: str = "default"
    model_base_path: str = ""
    file_system_poll_wait_seconds: int = 1
    saved_model_tags: str = "serve"
    tensorflow_session_parallelism: int = 0
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    enable_model_warmup: bool = True
    monitoring_config_file: str = ""
    grpc_max_threads: int = 0
    enable_signature_method_name_check: bool = False
    enable_serialization_as_tensor_content: bool = False
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    allow_version_labels_for_unavailable_models: bool = False
    version: bool = False
    canary_max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    ignored: tuple[str, ...] = ()  # flags given that are accepted for compatibility and change nothing here


def parse_flags(argv: Sequence[str]) -> ServerFlags:
    """Parse tensorflow_model_server flags; raise :class:`FlagError` on a bad one."""
    values: dict[str, object] = {}
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            raise FlagError(f"unexpected argument {arg!r}: tensorflow_model_server takes only --flag=value options")
        body = arg.lstrip("-")
        name, has_value, text = body.partition("=")
        kind_default = _FLAGS.get(name)
        if kind_default is None and name.startswith("no") and _FLAGS.get(name[2:], ("", None))[0] == "bool":
            if has_value:
                raise FlagError(f"flag --{name} takes no value")
            values[name[2:]] = False
            continue
        if kind_default is None:
            raise FlagError(f"unknown flag --{name}. {_suggest(name)}")
        kind = kind_default[0]
        if not has_value:
            if kind == "bool" and (index >= len(args) or args[index].startswith("-")
                                   or args[index].lower() not in _TRUE | _FALSE):
                values[name] = True
                continue
            if index >= len(args):
                raise FlagError(f"flag --{name} needs a value: --{name}=VALUE")
            text = args[index]
            index += 1
        values[name] = _convert(name, kind, text)
    for name, reason in _UNSUPPORTED.items():
        if values.get(name) not in (None, "", False):
            raise FlagError(f"--{name} is not supported by canary's model server: {reason}")
    known = set(ServerFlags.__dataclass_fields__)
    ignored = tuple(sorted(name for name in values if name not in known))
    flags = ServerFlags(
        **{k: v for k, v in values.items() if k in known}, ignored=ignored  # type: ignore[arg-type]
    )
    _validate(flags)
    return flags


def _convert(name: str, kind: str, text: str) -> object:
    if kind == "str":
        return text
    if kind == "bool":
        lowered = text.lower()
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise FlagError(f"flag --{name} expects true or false, got {text!r}")
    try:
        return int(text) if kind == "int" else float(text)
    except ValueError:
        raise FlagError(f"flag --{name} expects {'an integer' if kind == 'int' else 'a number'}, got {text!r}") from None


def _validate(flags: ServerFlags) -> None:
    if flags.version:
        return
    if not flags.model_base_path and not flags.model_config_file:
        raise FlagError(
            "--model_base_path (the directory holding numbered version directories, <base>/1/saved_model.pb) "
            "or --model_config_file (TF Serving's ModelServerConfig in text format) is required"
        )
    for name in ("port", "rest_api_port"):
        port = getattr(flags, name)
        if not 0 <= port <= 65535:
            raise FlagError(f"--{name}={port} is not a TCP port (0-65535)")
    if not 1 <= flags.canary_max_request_bytes <= _MAX_MESSAGE_BYTES:
        raise FlagError(
            f"--canary_max_request_bytes={flags.canary_max_request_bytes} must lie between 1 and "
            f"{_MAX_MESSAGE_BYTES} (gRPC's largest message)"
        )
    if flags.rest_api_port and flags.rest_api_port == flags.port:
        raise FlagError(
            f"--rest_api_port cannot be the same as --port ({flags.port}); "
            "use a different port for the HTTP/REST API"
        )


def _suggest(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(_FLAGS), n=1)
    hint = f"Did you mean --{close[0]}? " if close else ""
    return hint + "Run with --help to list the flags tensorflow_model_server accepts."


def flag_help() -> str:
    """One line per accepted flag, for ``--help``."""
    lines = [
        "usage: python -m serving.server --model_base_path=DIR [--model_name=NAME] [flags]",
        "       python -m serving.server --model_config_file=FILE [flags]",
        "",
    ]
    for name, (kind, default) in _FLAGS.items():
        known = name in ServerFlags.__dataclass_fields__
        note = " (not supported)" if name in _UNSUPPORTED else "" if known else " (accepted, ignored here)"
        lines.append(f"  --{name}={kind} (default {default!r}){note}")
        if name in _HELP:
            lines.append(f"      {_HELP[name]}")
    return "\n".join(lines)


def map_container_path(path: str, env: Mapping[str, str] | None = None) -> Path:
    """Map a container path through ``CANARY_VOLUME_MAP``; the longest mount wins.

    Without the variable the path is used as given. With it, a path under none of the
    mounts, or whose symbolic links lead out of its volume, is a :class:`FlagError`: a
    pod reads files from its volumes only (this also holds the base paths a
    ``--model_config_file`` names, which the local mesh cannot check in the manifest).
    """
    environ = os.environ if env is None else env
    raw = environ.get(VOLUME_MAP_ENV, "")
    if not raw:
        return Path(path)
    try:
        mounts = json.loads(raw)
    except json.JSONDecodeError as error:
        raise FlagError(f"{VOLUME_MAP_ENV} is not valid JSON ({error}); expected {{\"/models\": \"/local/dir\"}}") from None
    if not isinstance(mounts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mounts.items()):
        raise FlagError(f"{VOLUME_MAP_ENV} must be a JSON object of container path -> local directory")
    target = PurePosixPath(path)
    best: tuple[int, str, str] | None = None
    for mount, local in mounts.items():
        mount_path = PurePosixPath(mount)
        if target == mount_path or mount_path in target.parents:
            depth = len(mount_path.parts)
            if best is None or depth > best[0]:
                best = (depth, mount, local)
    if best is None:
        raise FlagError(
            f"{path} lies under none of the pod's volumes ({', '.join(sorted(mounts)) or 'none'}): the local "
            "mesh serves files from the pod's volumes only; mount the model store there or use a path under it"
        )
    _, mount, local = best
    relative = target.relative_to(PurePosixPath(mount))
    mapped = Path(local) / relative
    root, resolved = Path(local).resolve(), mapped.resolve()
    if not resolved.is_relative_to(root):  # in a container a link cannot leave its root either
        raise FlagError(
            f"{path} resolves to {resolved}, outside its volume {mount} ({root}): a symbolic link in the "
            "volume points out of it; the local mesh serves files from the volume only"
        )
    return mapped
