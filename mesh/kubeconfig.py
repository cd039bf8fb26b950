"""The kubeconfig, read as kubectl reads it, strictly, and what error messages may say of it.

The files are ``config_file``, else ``$KUBECONFIG`` (a list of files, as
kubectl reads it; missing ones are skipped), else ``~/.kube/config``. Each is
read here, not by the ``kubernetes`` client, with the tool's strict YAML reader
(:func:`mesh.manifest_yaml.load_yaml_documents`: no anchors or aliases, so an
alias bomb is refused before anything is built; no key twice; bounded size),
then merged as kubectl merges them: the first file to name
a cluster, context or user wins, and so does the first ``current-context``.
Relative file paths (``certificate-authority``, ``client-certificate``,
``client-key``, ``tokenFile``, an exec plugin's ``command`` with a slash) are
resolved against the folder of the file that holds them. The client gets the
merged dict (``kubernetes.config.load_kube_config_from_dict``).

:class:`ClusterTarget` is what a message about the cluster names: the context,
its server URL and the name of its user entry. Credentials never leave this
module in a message: :meth:`ClusterTarget.redact` blanks every credential
value of the kubeconfig from any text, the API server's own words included.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from canary.errors import ManifestError, MeshError
from mesh.manifest_yaml import load_yaml_documents

__all__ = ["DEFAULT_KUBECONFIG", "ClusterTarget", "Kubeconfig", "load_kubeconfig"]

DEFAULT_KUBECONFIG = "~/.kube/config"
REDACTED = "[redacted]"

# user fields whose values are credentials (auth-provider config and exec env: every value)
_SECRET_USER_KEYS = ("token", "password", "client-key-data", "client-certificate-data")
# fields holding a file path, resolved against the kubeconfig's folder as kubectl does
_PATH_KEYS = {
    "clusters": ("cluster", ("certificate-authority",)),
    "users": ("user", ("client-certificate", "client-key", "tokenFile")),
}


@dataclass(frozen=True)
class ClusterTarget:
    """The cluster a command talks to, as messages name it (never with a credential)."""

    context: str
    server: str
    user: str
    secrets: frozenset[str] = field(default=frozenset(), repr=False)
    auth_notes: tuple[str, ...] = ()  # what the client logged while loading credentials

    def redact(self, text: str) -> str:
        """``text`` on one line, with every credential value of the kubeconfig blanked."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return " ".join(text.split())

    @property
    def who(self) -> str:
        """``user "u" of context "c"``: the kubeconfig's names, which kubectl shows too."""
        return f'user "{self.user or "(none)"}" of context "{self.context}"'


@dataclass(frozen=True)
class Kubeconfig:
    """The merged kubeconfig and the files it came from."""

    config: dict[str, Any]
    files: tuple[str, ...]
    where: str  # how a message names it: a path, or $KUBECONFIG with its value

    def contexts(self) -> list[str]:
        return [str(c.get("name")) for c in self.config.get("contexts") or [] if isinstance(c, dict)]

    def target(self, context: str | None) -> ClusterTarget:
        """The context ``context`` (default: the current one); MeshError naming the contexts there are."""
        names = self.contexts()
        listed = ", ".join(names) if names else "none"
        name = context or self.config.get("current-context") or ""
        if not name:
            raise MeshError(
                f"the kubeconfig {self.where} sets no current-context: pass --context "
                f"(its contexts: {listed})"
            )
        entry = _named(self.config, "contexts", name)
        if entry is None:
            raise MeshError(
                f'the kubeconfig {self.where} has no context "{name}": its contexts are {listed}'
                + (f' (current: {self.config.get("current-context")})'
                   if self.config.get("current-context") else "")
            )
        found = entry.get("context")
        ctx: dict[str, Any] = found if isinstance(found, dict) else {}
        cluster_name, user = str(ctx.get("cluster") or ""), str(ctx.get("user") or "")
        cluster = _named(self.config, "clusters", cluster_name)
        inner = cluster.get("cluster") if cluster else None
        server = inner.get("server") if isinstance(inner, dict) else None
        if not server:
            raise MeshError(
                f'the kubeconfig {self.where}: context "{name}" names cluster "{cluster_name}", '
                "which it does not define with a server URL; fix the kubeconfig "
                f"(`kubectl config view --context {name}`)"
            )
        return ClusterTarget(name, str(server).rstrip("/"), user, frozenset(_secrets(self.config)))


def load_kubeconfig(config_file: str | os.PathLike[str] | None = None) -> Kubeconfig | None:
    """The kubeconfig (see the module's notes); None when there is none and none was named.

    ``config_file`` may name several files, as ``$KUBECONFIG`` does. MeshError when a
    named file is missing, a file cannot be read or is not a kubeconfig.
    """
    if config_file is not None:
        value = os.fspath(config_file)
        where = value
    elif os.environ.get("KUBECONFIG"):
        value = os.environ["KUBECONFIG"]
        where = f"$KUBECONFIG ({value})"
    else:
        value = DEFAULT_KUBECONFIG
        where = f"{DEFAULT_KUBECONFIG} ({Path(value).expanduser()})"
    files = [str(Path(p).expanduser()) for p in value.split(os.pathsep) if p]
    found = [p for p in files if Path(p).is_file()]
    if not found:
        if config_file is not None:
            raise MeshError(f"no kubeconfig at {where}: no such file")
        return None
    merged: dict[str, Any] = {"clusters": [], "contexts": [], "users": []}
    for path in found:
        _merge(merged, _read(path), Path(path).parent)
    return Kubeconfig(merged, tuple(found), where if len(found) > 1 or config_file else found[0])


def _read(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise MeshError(f"cannot read the kubeconfig {path}: {error}") from error
    try:
        docs = [d for d in load_yaml_documents(text, path) if d is not None]
    except ManifestError as error:
        raise MeshError(f"the kubeconfig {path} cannot be read: {error.message}") from error
    if not docs:
        return {}
    doc = docs[0]
    if len(docs) > 1 or not isinstance(doc, dict):
        raise MeshError(f"the kubeconfig {path} is not a kubeconfig (a mapping with clusters, contexts, users)")
    return doc


def _merge(merged: dict[str, Any], doc: dict[str, Any], folder: Path) -> None:
    for key in ("clusters", "contexts", "users"):
        entries = doc.get(key) or []
        if not isinstance(entries, list):
            raise MeshError(f"the kubeconfig in {folder} has {key} that is not a list")
        known = {e.get("name") for e in merged[key]}
        for entry in entries:
            if isinstance(entry, dict) and entry.get("name") not in known:
                merged[key].append(_resolved(key, entry, folder))
                known.add(entry.get("name"))
    if doc.get("current-context") and not merged.get("current-context"):
        merged["current-context"] = doc["current-context"]


def _resolved(key: str, entry: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``entry`` with its relative file paths made absolute against ``folder``."""
    if key not in _PATH_KEYS:
        return entry
    inner_key, path_keys = _PATH_KEYS[key]
    inner = entry.get(inner_key)
    if not isinstance(inner, dict):
        return entry
    inner = dict(inner)
    for path_key in path_keys:
        value = inner.get(path_key)
        if isinstance(value, str) and value and not os.path.isabs(os.path.expanduser(value)):
            inner[path_key] = str(folder / value)
    plugin = inner.get("exec")
    if isinstance(plugin, dict):
        command = plugin.get("command")
        if isinstance(command, str) and "/" in command and not os.path.isabs(command):
            inner["exec"] = {**plugin, "command": str(folder / command)}
    return {**entry, inner_key: inner}


def _named(config: dict[str, Any], key: str, name: str) -> dict[str, Any] | None:
    for entry in config.get(key) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    return None


def _secrets(config: dict[str, Any]) -> Iterator[str]:
    """Every credential value of every user entry (tokens, passwords, keys, auth-provider
    config, exec plugin environment), at least 4 characters long."""
    for entry in config.get("users") or []:
        user = entry.get("user") if isinstance(entry, dict) else None
        if not isinstance(user, dict):
            continue
        values: list[object] = [user.get(k) for k in _SECRET_USER_KEYS]
        provider = user.get("auth-provider")
        if isinstance(provider, dict) and isinstance(provider.get("config"), dict):
            values.extend(provider["config"].values())
        plugin = user.get("exec")
        if isinstance(plugin, dict) and isinstance(plugin.get("env"), list):
            values.extend(e.get("value") for e in plugin["env"] if isinstance(e, dict))
        for value in values:
            if isinstance(value, str) and len(value.strip()) >= 4:
                yield value.strip()
