"""TF Serving's ModelServerConfig (``--model_config_file``) as plain data, and its checks.

The file is TF Serving's ``ModelServerConfig`` in protobuf text format,
parsed with the ``tensorflow_serving.config.model_server_config_pb2`` the
tensorflow-serving-api package ships (no TensorFlow import)::

    model_config_list {
      config {
        name: "half_plus_two"
        base_path: "/models/half_plus_two"
        model_platform: "tensorflow"
        model_version_policy { specific { versions: 123 versions: 124 } }
        version_labels { key: "stable" value: 123 }
        version_labels { key: "canary" value: 124 }
      }
    }

Everything here is pure: text or a proto in, frozen dataclasses out, and
:class:`ModelConfigError` (exit status 2, with TF Serving's status code and
text where TF Serving has one) for what TF Serving's ServerCore refuses
(model_servers/server_core.cc ``ValidateModelConfigList``, ``GetPlatform``,
``CreateStoragePathRoutes``). :meth:`VersionPolicy.select` applies a
``ServableVersionPolicy`` to the versions found on disk as
sources/storage_path/file_system_storage_path_source.cc does.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from serving.flags import FlagError
from serving.status import Code

__all__ = [
    "TENSORFLOW_PLATFORM",
    "ModelConfig",
    "ModelConfigError",
    "ServerConfig",
    "VersionPolicy",
    "from_proto",
    "parse_config_text",
    "single_model",
    "to_proto",
    "validate",
]

TENSORFLOW_PLATFORM = "tensorflow"
PolicyKind = Literal["latest", "all", "specific"]
_EXAMPLE = (
    'model_config_list { config { name: "my_model" base_path: "/models/my_model" '
    'model_platform: "tensorflow" } }'
)


class ModelConfigError(FlagError):
    """A model config TF Serving would refuse; ``code`` is the status TF Serving answers it with."""

    def __init__(self, message: str, code: Code = Code.INVALID_ARGUMENT) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class VersionPolicy:
    """``ServableVersionPolicy``: ``latest {num_versions}`` (the default, 1), ``all {}`` or ``specific {versions}``."""

    kind: PolicyKind = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, found: Iterable[int]) -> list[int]:
        """The versions to serve among ``found``, ascending (TF Serving: ``AspireLatestVersions``,
        ``AspireAllVersions``, ``AspireSpecificVersions``)."""
        ordered = sorted(set(found))
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            wanted = set(self.versions)
            return [version for version in ordered if version in wanted]
        return ordered[-max(self.num_versions, 1):] if ordered else []

    def describe(self) -> str:
        """The policy in text format, for messages."""
        if self.kind == "all":
            return "all {}"
        if self.kind == "specific":
            return "specific { " + " ".join(f"versions: {v}" for v in self.versions) + " }"
        return f"latest {{ num_versions: {max(self.num_versions, 1)} }}"


@dataclass(frozen=True)
class ModelConfig:
    """One ``model_config_list.config`` entry; ``base_path`` is as written (a container path)."""

    name: str
    base_path: str
    platform: str = TENSORFLOW_PLATFORM
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    labels: tuple[tuple[str, int], ...] = ()  # sorted (label, version) pairs


@dataclass(frozen=True)
class ServerConfig:
    """A ``ModelServerConfig``: ``models`` is None when no ``model_config_list`` is set (TF Serving
    then takes no action), and an empty tuple for an empty list (which serves no models)."""

    models: tuple[ModelConfig, ...] | None


def single_model(name: str, base_path: str) -> ServerConfig:
    """The config ``--model_name``/``--model_base_path`` stand for (TF Serving's ``BuildSingleModelConfig``)."""
    return ServerConfig((ModelConfig(name=name, base_path=base_path),))


def parse_config_text(text: str, source: str = "--model_config_file") -> ServerConfig:
    """Parse a ModelServerConfig in text format; ModelConfigError names ``source``, line, column and the fix."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    message = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise ModelConfigError(_parse_error(error, source)) from None
    return from_proto(message, source)


def from_proto(message: Any, source: str = "ModelServerConfig") -> ServerConfig:
    """A ``ModelServerConfig`` message as data; ModelConfigError for what this server cannot serve."""
    which = message.WhichOneof("config")
    if which is None:
        return ServerConfig(None)
    if which != "model_config_list":
        raise ModelConfigError(
            f"{source}: custom_model_config is not supported (TF Serving's ModelServer does not support it "
            f"either); list the models in model_config_list, e.g. {_EXAMPLE}"
        )
    models = []
    for index, entry in enumerate(message.model_config_list.config):
        models.append(
            ModelConfig(
                name=entry.name,
                base_path=entry.base_path,
                platform=_platform(entry, f"{source}: model_config_list.config[{index}]"),
                policy=_policy(entry.model_version_policy),
                labels=tuple(sorted((str(k), int(v)) for k, v in entry.version_labels.items())),
            )
        )
    return ServerConfig(tuple(models))


def to_proto(config: ServerConfig) -> Any:
    """``config`` as a ``ModelServerConfig`` message (the inverse of :func:`from_proto`)."""
    from tensorflow_serving.config import model_server_config_pb2

    message = model_server_config_pb2.ModelServerConfig()
    if config.models is None:
        return message
    listed = message.model_config_list
    listed.SetInParent()
    for model in config.models:
        entry = listed.config.add(name=model.name, base_path=model.base_path, model_platform=model.platform)
        policy = entry.model_version_policy
        if model.policy.kind == "all":
            policy.all.SetInParent()
        elif model.policy.kind == "specific":
            policy.specific.versions.extend(model.policy.versions)
        elif model.policy.num_versions != 1:
            policy.latest.num_versions = model.policy.num_versions
        for label, version in model.labels:
            entry.version_labels[label] = version
    return message


def validate(config: ServerConfig) -> None:
    """TF Serving's checks of a model list (server_core.cc), in its order, plus what only this server needs."""
    names: set[str] = set()
    for index, model in enumerate(config.models or ()):
        if not model.name:
            raise ModelConfigError(
                f"model_config_list.config[{index}] has no name: give each model the name clients ask for "
                '(name: "my_model")'
            )
        if model.name in names:
            raise ModelConfigError(f"Illegal to list model {model.name} multiple times in config list")
        names.add(model.name)
    for model in config.models or ():
        if _is_relative(model.base_path):
            raise ModelConfigError(
                f"Expected model {model.name} to have an absolute path or URI; got base_path()={model.base_path}"
            )
    for model in config.models or ():
        if model.platform != TENSORFLOW_PLATFORM:
            raise ModelConfigError(
                f"Model {model.name} requests unsupported platform {model.platform}: canary's model server "
                f'serves TensorFlow SavedModels only (model_platform: "{TENSORFLOW_PLATFORM}")'
            )
        if "://" in model.base_path:
            raise ModelConfigError(
                f"Model {model.name} has base_path {model.base_path}: canary's model server reads local "
                "directories only; copy the model into a local directory (or a volume) and point base_path at it"
            )


def _platform(entry: Any, where: str) -> str:
    """TF Serving's ``GetPlatform``: model_platform, or the deprecated model_type, never both or neither."""
    model_type = int(entry.model_type)
    if model_type != 0:  # MODEL_TYPE_UNSPECIFIED
        if entry.model_platform:
            raise ModelConfigError(
                "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                f"ModelServerConfig::model_platform, model name is {entry.name}"
            )
        if model_type == 1:  # TENSORFLOW
            return TENSORFLOW_PLATFORM
        raise ModelConfigError(
            f"ModelServerConfig::model_type choice {model_type} not supported. ({where}: use "
            f'model_platform: "{TENSORFLOW_PLATFORM}")'
        )
    if not entry.model_platform:
        raise ModelConfigError(
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            f"ModelServerConfig::model_platform, model name is {entry.name} "
            f'({where}: add model_platform: "{TENSORFLOW_PLATFORM}")'
        )
    return str(entry.model_platform)


def _policy(message: Any) -> VersionPolicy:
    which = message.WhichOneof("policy_choice")
    if which == "all":
        return VersionPolicy("all")
    if which == "specific":
        return VersionPolicy("specific", versions=tuple(int(v) for v in message.specific.versions))
    if which == "latest":
        return VersionPolicy("latest", num_versions=max(int(message.latest.num_versions), 1))
    return VersionPolicy()


def _is_relative(path: str) -> bool:
    """TF Serving's ``UriIsRelativePath``: no scheme, no host, and a path not starting with '/'."""
    return "://" not in path and not path.startswith("/")


_NO_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "(\w+)"')


def _parse_error(error: Any, source: str) -> str:
    line, column = error.GetLine(), error.GetColumn()
    reason = re.sub(r"^\d+:\d+ : ", "", str(error))
    hint = ""
    unknown = _NO_FIELD.search(reason)
    if unknown is not None:
        hint = _field_hint(unknown.group(1), unknown.group(2))
    where = f"{source}:{line}:{column}" if line else source
    return (  # TF Serving's ParseProtoTextFile says "Error parsing text-format <message type>"
        f"Error parsing text-format tensorflow.serving.ModelServerConfig: {where}: {reason}{hint} The file must be TF Serving's ModelServerConfig in protobuf text format, "
        f"e.g. {_EXAMPLE}"
    )


def _field_hint(message_type: str, name: str) -> str:
    from google.protobuf import descriptor_pool

    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(message_type)
    except KeyError:
        return ""
    fields: Mapping[str, Any] = descriptor.fields_by_name
    close = difflib.get_close_matches(name, list(fields), n=1)
    if close:
        return f' Did you mean "{close[0]}"?'
    return f" Its fields are: {', '.join(sorted(fields))}."
