"""Every model the server serves: lookups, version labels and config reloads, as TF Serving's ServerCore.

:class:`ServedModels` holds one :class:`serving.registry.ModelManager` per
model of a :class:`serving.model_config.ServerConfig` (``--model_config_file``,
or the one model ``--model_name``/``--model_base_path`` stand for) and
answers the REST and gRPC layers:

* :meth:`ServedModels.resolve` -- the servable a request names (newest
  AVAILABLE version, a specific one, or the one a version label points at),
  or TF Serving's error (``Servable not found for request: Latest(m)``,
  ``Unrecognized servable version label: x``);
* :meth:`ServedModels.status` -- every version and its state, newest first;
* :meth:`ServedModels.reload` -- TF Serving's ``ServerCore::ReloadConfig``
  (model_servers/server_core.cc): models added are loaded (and awaited),
  models removed are unloaded (their states stay, END), policies and labels
  change; a config TF Serving refuses changes nothing and raises its error.

Labels follow ``UpdateModelVersionLabelMap``: a label may point only at an
AVAILABLE version, unless ``--allow_version_labels_for_unavailable_models``
and the label is new or keeps its version. Labels are checked before models
load, so a config that labels versions at start-up needs that flag (as in
TF Serving).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from canary.errors import ServingError
from serving.flags import FlagError
from serving.model_config import ModelConfigError, ServerConfig, validate
from serving.registry import ModelManager, State, VersionStatus
from serving.servable import Servable
from serving.status import Code, RequestError

__all__ = ["ServedModels"]

log = logging.getLogger("serving.models")

_LABELS_AT_START = (
    " (labels are checked before any version loads: to label versions in the config the server starts "
    "with, pass --allow_version_labels_for_unavailable_models=true, or add the labels by a later config "
    "reload once the versions are AVAILABLE)"
)


class ServedModels:
    """The models of one server, their versions and labels."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        map_path: Callable[[str], Path] = Path,
        tags: str = "serve",
        warmup: bool = True,
        allow_unavailable_labels: bool = False,
    ) -> None:
        self._initial = config
        self._map_path = map_path
        self._tags = tags
        self._warmup = warmup
        self._allow_unavailable_labels = allow_unavailable_labels
        self._config = ServerConfig(None)
        # Both replaced, never mutated: request threads read them without a lock.
        self._managers: Mapping[str, ModelManager] = {}
        self._labels: Mapping[str, Mapping[str, int]] = {}
        self._apply_lock = threading.RLock()  # one reload or poll at a time
        self._generation = 0

    @property
    def config(self) -> ServerConfig:
        """The config in force."""
        return self._config

    @property
    def generation(self) -> int:
        """Counts the changes of the served versions (the server re-freezes its heap after one)."""
        return self._generation

    def check(self) -> None:
        """Fail fast, before TensorFlow loads: the start-up config's checks, its labels and that each
        base path has a version to serve. ModelConfigError (exit 2) or ServingError (exit 1)."""
        config = self._initial
        validate(config)
        if config.models is None:
            return
        paths = self._paths(config)
        try:
            self._label_map(config)
        except RequestError as error:
            raise ModelConfigError(error.message + _LABELS_AT_START, error.code) from None
        for model in config.models:
            ModelManager(model.name, paths[model.name], shown_base_path=model.base_path, policy=model.policy)\
                .check_base_path()

    def load_initial(self) -> None:
        """Load every model of the start-up config (blocking); ServingError when one cannot be loaded."""
        self.check()
        try:
            self._apply(self._initial, first=True)
        except RequestError as error:
            raise ServingError(error.message) from None

    def reload(self, config: ServerConfig) -> None:
        """Apply ``config`` as TF Serving's ReloadConfig does (blocking); RequestError with its status."""
        self._apply(config, first=False)

    def poll_once(self) -> bool:
        """Look for version changes on disk in every model (blocking); True if the served versions changed."""
        with self._apply_lock:
            changed = False
            for model in self._config.models or ():
                try:
                    changed = self._managers[model.name].poll_once() or changed
                except Exception:  # one model's trouble never stops the others' polls
                    log.exception("looking for new versions of %s failed", model.name)
            if changed:
                self._generation += 1
            return changed

    def resolve(self, model_name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request names, or the RequestError TF Serving answers (``ServableRequestFromModelSpec``)."""
        if not model_name:
            raise RequestError(Code.INVALID_ARGUMENT, "ModelSpec has no name specified.")
        if label is not None:
            labelled = self._labels.get(model_name, {}).get(label)
            if labelled is None:
                raise RequestError(Code.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
            version = labelled
        manager = self._managers.get(model_name)
        servable = manager.servable(version) if manager is not None else None
        if servable is None:
            request = f"Latest({model_name})" if version is None else f"Specific({model_name}, {version})"
            raise RequestError(Code.NOT_FOUND, f"Servable not found for request: {request}")
        return servable

    def status(self, model_name: str, version: int | None = None) -> list[VersionStatus]:
        """Version states, newest first, or NOT_FOUND as GetModelStatus answers (get_model_status_impl.cc)."""
        manager = self._managers.get(model_name)
        states = manager.states() if manager is not None else {}
        if version is not None:
            if version not in states:
                raise RequestError(Code.NOT_FOUND, f"Could not find version {version} of model {model_name}")
            return [states[version]]
        if not states:
            raise RequestError(Code.NOT_FOUND, f"Could not find any versions of model {model_name}")
        return [states[v] for v in sorted(states, reverse=True)]

    def labels(self, model_name: str) -> dict[str, int]:
        """The version labels of ``model_name`` in force."""
        return dict(self._labels.get(model_name, {}))

    def _apply(self, config: ServerConfig, *, first: bool) -> None:
        with self._apply_lock:
            if config.models is None and self._config.models is not None:  # ServerCore::ReloadConfig
                raise RequestError(
                    Code.FAILED_PRECONDITION,
                    "Cannot transition to requested config. It is only legal to transition from one "
                    "ModelConfigList to another.",
                )
            if config.models is None:
                log.info("Taking no action for empty config.")
                return
            try:
                validate(config)
                paths = self._paths(config)
            except ModelConfigError as error:
                raise RequestError(error.code, error.message) from None
            except FlagError as error:
                raise RequestError(Code.INVALID_ARGUMENT, str(error)) from None
            self._labels = self._label_map(config)
            served_before = {name: manager.served for name, manager in self._managers.items()}
            before = {m.name for m in self._config.models or ()}
            level = logging.DEBUG if config == self._config else logging.INFO  # a poll of an unchanged file
            self._config = config
            log.log(level, "Adding/updating models.")
            managers = dict(self._managers)
            for model in config.models:
                log.log(level, " (Re-)adding model: %s", model.name)
                existing = managers.get(model.name)
                if existing is None:
                    managers[model.name] = ModelManager(
                        model.name, paths[model.name], shown_base_path=model.base_path, policy=model.policy,
                        tags=self._tags, warmup=self._warmup,
                    )
                else:
                    existing.configure(paths[model.name], model.base_path, model.policy)
            self._managers = managers
            listed = {m.name for m in config.models}
            for name in sorted(before - listed):
                managers[name].retire()
            failures: dict[str, list[ServingError]] = {}
            for model in config.models:
                try:
                    errors = managers[model.name].sync()
                except ServingError as missing:  # its base path is missing
                    errors = [missing]
                except Exception as error:  # never leave the others unsynced
                    log.exception("loading versions of %s failed", model.name)
                    errors = [ServingError(f"loading versions of {model.name} failed: {error}")]
                for failure in errors:
                    log.error("%s", failure)
                if errors:
                    failures[model.name] = errors
            if any(manager.served is not served_before.get(name) for name, manager in managers.items()):
                self._generation += 1
            awaited = [m.name for m in config.models if first or m.name not in before]
            unavailable = [name for name in awaited if managers[name].current is None]
            if unavailable:
                if first and failures.get(unavailable[0]):
                    raise RequestError(Code.UNKNOWN, str(failures[unavailable[0]][0]))
                raise RequestError(Code.UNKNOWN, self._not_available(unavailable, failures))
            log.log(level, "Finished adding/updating models")

    def _paths(self, config: ServerConfig) -> dict[str, Path]:
        return {model.name: self._map_path(model.base_path) for model in config.models or ()}

    def _label_map(self, config: ServerConfig) -> dict[str, dict[str, int]]:
        """TF Serving's ``UpdateModelVersionLabelMap`` checks, against the versions' states now."""
        labels: dict[str, dict[str, int]] = {}
        for model in config.models or ():
            manager = self._managers.get(model.name)
            states = manager.states() if manager is not None else {}
            for label, version in model.labels:
                allowed = False
                if self._allow_unavailable_labels:
                    existing = self._labels.get(model.name, {}).get(label)
                    allowed = existing is None or existing == version
                status = states.get(version)
                if not allowed and (status is None or status.state is not State.AVAILABLE):
                    raise RequestError(
                        Code.FAILED_PRECONDITION,
                        f"Request to assign label to version {version} of model {model.name}, "
                        "which is not currently available for inference",
                    )
                labels.setdefault(model.name, {})[label] = version
        return labels

    def _not_available(self, names: list[str], failures: Mapping[str, list[ServingError]]) -> str:
        """TF Serving's ``WaitUntilModelsAvailable`` error text: each model's newest failed version.

        A model with no version at all fails here with the reason, where TF Serving would wait for one."""
        parts: list[str] = []
        for name in names:
            manager = self._managers[name]
            failed = [s for s in manager.states().values() if s.state is State.END and s.error is not None]
            newest = max(failed, key=lambda s: s.version, default=None)  # one entry per model, as TF Serving
            if newest is not None and newest.error is not None:
                parts.append(
                    f"{{{{name: {name} version: {newest.version}}} due to error: "
                    f"{newest.error.code.name}: {newest.error.message}}}, "
                )
            else:
                parts.append(f"{{{{name: {name}}} due to error: {_no_version(manager, failures.get(name))}}}, ")
        return f"{len(names)} model(s) did not become available: {{{''.join(parts)}}}"


def _no_version(manager: ModelManager, failures: list[ServingError] | None) -> str:
    if failures:
        return str(failures[0])
    try:
        manager.check_base_path()
    except ServingError as error:
        return str(error)
    return "no version became available"
