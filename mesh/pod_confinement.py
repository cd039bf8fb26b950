"""What a local pod may reach: the environment names it may set and the paths it may name.

The local mesh runs each pod as a process of this machine's Python, with the
container's env and a map from its volume mounts to local folders
(``CANARY_VOLUME_MAP``: a persistentVolumeClaim is the model store, a hostPath
the host folder as it is, an emptyDir a folder of the pod; the server maps a
container path through the longest mount it lies under). So a manifest must
not change how that process starts (interpreter and loader variables, the
mesh's own ``CANARY_*`` settings), and every path it names must stay inside
its mounts, whose host folders stay inside the model store.

These checks are pure (but for resolving a hostPath's symbolic links against
the store) and return a problem, or ``""``: the manifest parser and
:func:`mesh.pods.plan_pods` raise it naming the file, the object and the field.
They hold for the local target only; a cluster's containers have their own
filesystem and environment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

__all__ = [
    "MAPPED_PATH_FLAGS",
    "REFUSED_SERVER_FLAGS",
    "RESERVED_ENV_NAMES",
    "RESERVED_ENV_PREFIXES",
    "container_path_problem",
    "env_name_problem",
    "env_prefix_problem",
    "host_path_problem",
    "host_path_shape_problem",
    "mount_path_problem",
    "path_flag_values",
    "reserved_env",
    "surely_given_after",
]

_LOADS = "loads shared libraries (code) {} into the model server process"

# Environment names a local pod may not set, with why (the one list: the parser refuses
# them in env, envFrom prefixes and, once the ConfigMap is known, envFrom keys).
RESERVED_ENV_PREFIXES: Mapping[str, str] = {
    "CANARY_": "CANARY_* names are the local mesh's own settings for its pods "
    "(bind host, volume map, pod marker)",
    "PYTHON": "PYTHON* variables configure the Python interpreter that runs the model server "
    "(module search path, startup code)",
    "LD_": "LD_* variables configure the dynamic loader of the model server "
    "(preloaded libraries, library search path)",
}
RESERVED_ENV_NAMES: Mapping[str, str] = {
    "GLIBC_TUNABLES": "it configures glibc's dynamic loader in the model server process",
    "GCONV_PATH": "glibc " + _LOADS.format("for character-set conversion from it"),
    "OPENSSL_CONF": "OpenSSL " + _LOADS.format("named by it (engines, providers)"),
    "OPENSSL_ENGINES": "OpenSSL " + _LOADS.format("from it (engines)"),
    "OPENSSL_MODULES": "OpenSSL " + _LOADS.format("from it (providers)"),
    "PATH": "it decides which programs the model server and its libraries run",
    "TF_PLUGGABLE_DEVICE_LIBRARY_PATH": "TensorFlow " + _LOADS.format("from it (device plugins)"),
}

# tensorflow_model_server's flags that name a file or folder (serving/flags.py has them
# all; the server reads --model_base_path, --model_config_file (and the base paths in it)
# and --monitoring_config_file through the volume map and refuses --ssl_config_file; the
# rest it ignores).
MAPPED_PATH_FLAGS = (
    "model_base_path",
    "model_config_file",
    "monitoring_config_file",
    "batching_parameters_file",
    "platform_config_file",
    "ssl_config_file",
    "tensorflow_session_config_file",
    "thread_pool_factory_config_file",
)
# Path flags a local pod may not give at all, with why.
REFUSED_SERVER_FLAGS: Mapping[str, str] = {
    "grpc_socket_path": "the local mesh serves gRPC on a loopback TCP port only "
    "(a socket path is not mapped into the model store)",
}


def reserved_env(name: str) -> str:
    """Why the local mesh keeps ``name`` to itself, or ``""`` when a pod may set it."""
    if name in RESERVED_ENV_NAMES:
        return RESERVED_ENV_NAMES[name]
    for prefix, reason in RESERVED_ENV_PREFIXES.items():
        if name.startswith(prefix):
            return reason
    return ""


def env_name_problem(name: str) -> str:
    """The message for setting ``name`` in a local pod, or ``""``."""
    reason = reserved_env(name)
    if not reason:
        return ""
    return (
        f"environment variable {name} cannot be set on the local mesh: {reason}; remove it "
        "(ordinary variables such as MODEL_NAME, TF_CPP_MIN_LOG_LEVEL or OMP_NUM_THREADS are fine)"
    )


def env_prefix_problem(prefix: str) -> str:
    """The message for an envFrom ``prefix`` that makes every name it sets reserved, or ``""``."""
    for reserved, reason in RESERVED_ENV_PREFIXES.items():
        if prefix.startswith(reserved):
            return (
                f"the prefix {prefix!r} makes every variable it sets a {reserved}* name, which "
                f"cannot be set on the local mesh: {reason}; choose another prefix"
            )
    return ""


def _shape_problem(path: str, what: str) -> str:
    """An absolute path without '..' segments (and no NUL), or why not."""
    if "\0" in path:
        return f"{what} {path!r} holds a NUL character"
    if not path.startswith("/"):
        return f"{what} {path!r} is not an absolute path"
    if ".." in PurePosixPath(path).parts:
        return f"{what} {path!r} has a '..' segment"
    return ""


def mount_path_problem(mount_path: str) -> str:
    """A volumeMount's mountPath for the local mesh, or ``""``."""
    problem = _shape_problem(mount_path, "the mount path")
    return f"{problem}; mount at an absolute path without '..', such as /models" if problem else ""


def host_path_shape_problem(path: str) -> str:
    """A hostPath volume's path as written: absolute, without '..'; ``""`` when fine."""
    problem = _shape_problem(path, "the hostPath")
    return f"{problem}; give the absolute path of a folder of the model store" if problem else ""


def host_path_problem(path: str, store: Path | None) -> str:
    """A hostPath volume's path: absolute, no '..', and inside the model ``store`` once
    symbolic links are resolved; ``""`` when fine. With no ``store`` known, no hostPath is."""
    problem = host_path_shape_problem(path)
    if problem:
        return problem
    use_claim = (
        "the local mesh serves files from its model store only; use a persistentVolumeClaim "
        "(the local mesh maps it to the model store)"
    )
    if store is None:
        return f"{path} cannot be checked against the model store here: {use_claim}"
    root = store.resolve()
    resolved = Path(path).resolve()
    if resolved == root or root in resolved.parents:
        return ""
    shown = path if str(resolved) == path else f"{path} (that is {resolved})"
    return f"{shown} is outside the model store {root}: {use_claim}, or a hostPath inside the store"


def container_path_problem(path: str, mount_paths: Sequence[str]) -> str:
    """A path the container names: absolute, no '..', under one of its mounts; ``""`` when fine."""
    mounts = ", ".join(mount_paths) or "none"
    problem = _shape_problem(path, "the path")
    if problem:
        return f"{problem}; name a path under one of the container's volumeMounts ({mounts}) without '..'"
    target = PurePosixPath(path)
    for mount in mount_paths:
        mount_path = PurePosixPath(mount)
        if target == mount_path or mount_path in target.parents:
            return ""
    return (
        f"the path {path!r} is not under any of the container's volumeMounts ({mounts}): "
        "the local mesh serves files from its model store only; mount the model store "
        "(a persistentVolumeClaim) and name a path under it"
    )


def path_flag_values(argv: Sequence[str], flags: Sequence[str]) -> list[tuple[int, str, str]]:
    """``(index, flag, value)`` for every place in ``argv`` that may give one of ``flags``.

    tensorflow_model_server reads ``-name=value``, ``--name=value`` and ``--name value``
    (any number of leading dashes). This reads every argument as a possible flag, the
    argument after ``--name`` as its value, so it finds every value the server can take
    for these flags (and perhaps more): checking them all leaves the server none unchecked.
    ``index`` is where the flag is.
    """
    found: list[tuple[int, str, str]] = []
    for index, arg in enumerate(argv):
        if not arg.startswith("-"):
            continue
        name, has_value, value = arg.lstrip("-").partition("=")
        if name not in flags:
            continue
        if has_value:
            found.append((index, name, value))
        elif index + 1 < len(argv):
            found.append((index, name, argv[index + 1]))
    return found


def surely_given_after(argv: Sequence[str], flag: str, start: int) -> bool:
    """Whether the server surely reads ``--flag`` at or after ``argv[start]``: an argument
    naming it that the one before cannot have taken as its value (that one is not a
    ``--name`` without ``=``). Then a value given before ``start`` is not the one used."""
    for index in range(max(start, 0), len(argv)):
        arg = argv[index]
        if not arg.startswith("-") or arg.lstrip("-").partition("=")[0] != flag:
            continue
        before = argv[index - 1] if index > 0 else ""
        if not (before.startswith("-") and "=" not in before and before not in ("-", "--")):
            return True
    return False
