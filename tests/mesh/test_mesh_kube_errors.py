"""Cluster errors through the command, as a user meets them: one line on stderr, exit 3.

``canary mesh apply --kube`` against a closed port, a host name that
does not resolve, a server that never accepts or never answers, an unknown
context, no kubeconfig at all, a server that refuses the credentials (401),
forbids the apply (403), fails (503) or presents a certificate the kubeconfig
does not trust, and a kubeconfig with a YAML alias bomb. Every kubeconfig
carries a token, a client key and a client certificate: none of them may be in
any output or in any file canary writes.
"""

from __future__ import annotations

import base64
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from commands import cli
from mesh import kube_client
from mesh.api import default_manifests
from tests.mesh.fake_apiserver import FakeApiServer, self_signed

ROUTING = default_manifests("routing", "virtualservice-weight-70.yaml")
APPLY = ["mesh", "apply", "--kube", "-f", str(ROUTING)]
TOKEN = "s3cr3t-t0ken-0123456789"
VS = "virtualservices.networking.istio.io"
RBAC_DENIAL = (
    f'{VS} "image-classifier" is forbidden: User "alice@example.com" cannot patch resource '
    '"virtualservices" in API group "networking.istio.io" in the namespace "tf-serving"'
)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def secrets(cert: tuple[Path, Path]) -> dict[str, str]:
    """A user entry with every kind of credential (the key and certificate are real PEM)."""
    crt, key = cert
    return {
        "token": TOKEN,
        "client-certificate-data": base64.b64encode(crt.read_bytes()).decode(),
        "client-key-data": base64.b64encode(key.read_bytes()).decode(),
    }


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No kubeconfig anywhere, no in-cluster service account; canary's and the client's
    files (CANARY_HOME, the discovery cache) in tmp_path."""
    for name in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CANARY_HOME", str(tmp_path / "canary"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return tmp_path


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    seconds: float

    @property
    def line(self) -> str:
        """The one line on stderr, without the ``canary:`` prefix; fails unless it is one line."""
        assert self.code == 3, (self.code, self.err)
        assert "Traceback" not in self.err + self.out
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("canary: "), lines[0]
        return lines[0].removeprefix("canary: ")


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Outcome:
    start = time.monotonic()
    code = cli.main(argv)
    seconds = time.monotonic() - start
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err, seconds)


@contextmanager
def _closed_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port


@contextmanager
def _listening(*, accepting: bool) -> Iterator[int]:
    """A port that never answers: its backlog full (a connect times out), or a backlog that
    takes connections (the kernel completes them) nobody ever reads from."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0 if not accepting else 16)
    port = server.getsockname()[1]
    filler = socket.socket()
    if not accepting:
        filler.connect(("127.0.0.1", port))  # the one place a backlog of 0 has
    try:
        yield port
    finally:
        filler.close()
        server.close()


def _kubeconfig(path: Path, server: str, user: dict[str, Any], ca: Path | None = None) -> Path:
    cluster: dict[str, str] = {"server": server}
    if ca is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake-cluster", "cluster": cluster}],
        "users": [{"name": "fake-user", "user": user}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake-cluster", "user": "fake-user"}}],
        "current-context": "fake",
    }
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def _check_no_secret(outcome: Outcome, secrets: dict[str, str], written: list[Path]) -> None:
    key_pem = base64.b64decode(secrets["client-key-data"]).decode()
    leaks = [*secrets.values(), *(line for line in key_pem.splitlines() if "-----" not in line)]
    shown = outcome.out + outcome.err
    for leak in leaks:
        assert leak not in shown
    for path in written:
        text = path.read_text(errors="replace")
        for leak in leaks:
            assert leak not in text, path


# name → a generator that sets the scene, yields (argv, the expected line), then tidies up
Scene = Callable[
    [Path, dict[str, str], pytest.MonkeyPatch, tuple[Path, Path]], Iterator[tuple[list[str], str]]
]
SCENES: dict[str, Scene] = {}


def scene(fn: Scene) -> Scene:
    SCENES[fn.__name__] = fn
    return fn


def _config_env(monkeypatch: pytest.MonkeyPatch, config: Path) -> None:
    monkeypatch.setenv("KUBECONFIG", str(config))


@scene
def refused(tmp: Path, user: dict[str, str], mp: pytest.MonkeyPatch, cert: tuple[Path, Path]) -> Iterator[tuple[list[str], str]]:
    with _closed_port() as port:
        _config_env(mp, _kubeconfig(tmp / "kubeconfig", f"http://127.0.0.1:{port}", user))
        yield APPLY, (
            f'cannot reach the API server http://127.0.0.1:{port} of context "fake": connection '
            "refused; is the cluster running, and is this the right context? (check with "
            "`kubectl --context fake cluster-info`)"
        )


@scene
def unresolvable(tmp: Path, user: dict[str, str], mp: pytest.MonkeyPatch, cert: tuple[Path, Path]) -> Iterator[tuple[list[str], str]]:
    _config_env(mp, _kubeconfig(tmp / "kubeconfig", "https://canary-test.invalid:6443", user))
    yield APPLY, (
        'cannot reach the API server https://canary-test.invalid:6443 of context "fake": its host '
        "name canary-test.invalid does not resolve; check the server URL in the kubeconfig and "
        "your network or VPN (check with `kubectl --context fake cluster-info`)"
    )


@scene
def connect_timeout(tmp: Path, user: dict[str, str], mp: pytest.MonkeyPatch, cert: tuple[Path, Path]) -> Iterator[tuple[list[str], str]]:
    mp.setattr(kube_client, "CONNECT_TIMEOUT", 0.5)
    with _listening(accepting=False) as port:
        _config_env(mp, _kubeconfig(tmp / "kubeconfig", f"http://127.0.0.1:{port}", user))
        yield APPLY, (
            f'cannot reach the API server http://127.0.0.1:{port} of context "fake": no '
            "connection within 0.5 s; check your network, VPN or the cluster's authorized "
            "networks (check with `kubectl --context fake cluster-info`)"
        )


@scene
def read_timeout(tmp: Path, user: dict[str, str], mp: pytest.MonkeyPatch, cert: tuple[Path, Path]) -> Iterator[tuple[list[str], str]]:
    mp.setattr(kube_client, "READ_TIMEOUT", 0.5)
    with _listening(accepting=True) as port:
        _config_env(mp, _kubeconfig(tmp / "kubeconfig", f"http://127.0.0.1:{port}", user))
        yield APPLY, (
            f'the API server http://127.0.0.1:{port} of context "fake" did not answer within '
            "0.5 s while canary tried to get the API discovery (/api, /apis); retry, or check "
            "the cluster's control plane (`kubectl --context fake get --raw /readyz`)"
        )


@scene
def unknown_context(tmp: Path, user: dict[str, str], mp: pytest.MonkeyPatch, cert: tuple[Path, Path]) -> Iterator[tuple[list[str], str]]:
    config = _kubeconfig(tmp / "kubeconfig", "http://127.0.0.1:1", user)
    _config_env(mp, config)
    yield [*APPLY, "--context", "nosuch"], (
        f'the kubeconfig {config} has no context "nosuch": its contexts are fake (current: fake)'
    )


@scene
def no_kubeconfig(tmp: Path, user: dict[str, str], mp: pytest.MonkeyPatch, cert: tuple[Path, Path]) -> Iterator[tuple[list[str], str]]:
    yield [*APPLY, "--context", "nosuch"], (
        f'no kubeconfig found with the context "nosuch": looked at ~/.kube/config '
        f"({tmp}/home/.kube/config); set KUBECONFIG to your cluster's kubeconfig (e.g. "
        "`gcloud container clusters get-credentials`), or leave out --kube to use the "
        "local mesh"
    )


@contextmanager
def _fake(
    tmp: Path, user: dict[str, str], mp: pytest.MonkeyPatch, tls: tuple[Path, Path] | None = None
) -> Iterator[FakeApiServer]:
    server = FakeApiServer(namespaces=["default", "tf-serving"], tls=tls)
    server.start()
    try:
        _config_env(mp, _kubeconfig(tmp / "kubeconfig", server.url, user))
        yield server
    finally:
        server.stop()


@scene
def in_cluster_without_service_account(tmp: Path, user: dict[str, str], mp: pytest.MonkeyPatch, cert: tuple[Path, Path]) -> Iterator[tuple[list[str], str]]:
    mp.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    mp.setenv("KUBERNETES_SERVICE_PORT", "443")
    yield APPLY, (
        f"no kubeconfig at ~/.kube/config ({tmp}/home/.kube/config), and the in-cluster service "
        "account cannot be used: Service token file does not exist."
    )


@scene
def not_an_api_server(tmp: Path, user: dict[str, str], mp: pytest.MonkeyPatch, cert: tuple[Path, Path]) -> Iterator[tuple[list[str], str]]:
    with _fake(tmp, user, mp) as server:
        server.fail("GET", 404, "NotFound", "404 page not found")
        yield APPLY, (
            f'the server {server.url} of context "fake" answers, but not as a Kubernetes API '
            "server (404 page not found on the API discovery); check the server URL in the "
            "kubeconfig"
        )


@scene
def unauthorized(tmp: Path, user: dict[str, str], mp: pytest.MonkeyPatch, cert: tuple[Path, Path]) -> Iterator[tuple[list[str], str]]:
    with _fake(tmp, user, mp) as server:
        server.required_token = "another-token"
        yield APPLY, (
            f'the API server {server.url} refuses the credentials of user "fake-user" of context '
            '"fake" (401 Unauthorized: missing, wrong or expired); renew them (e.g. `gcloud '
            "container clusters get-credentials`, or log in again) and check with `kubectl "
            "--context fake auth whoami`"
        )


@scene
def credential_plugin_fails(tmp: Path, user: dict[str, str], mp: pytest.MonkeyPatch, cert: tuple[Path, Path]) -> Iterator[tuple[list[str], str]]:
    """An exec plugin (as GKE's) that fails: the client logs its error instead of raising; the
    401 that follows says what the plugin said (its secret environment blanked)."""
    folder = tmp / "kube"
    folder.mkdir()
    plugin = folder / "auth-plugin"
    plugin.write_text('#!/bin/sh\necho "no active account (key $PLUGIN_KEY)" >&2\nexit 1\n')
    plugin.chmod(0o755)
    with _fake(tmp, user, mp) as server:
        server.required_token = "another-token"
        exec_user = {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1beta1",
                "command": "./auth-plugin",  # beside the kubeconfig, not in the working directory
                "env": [{"name": "PLUGIN_KEY", "value": TOKEN}],
            }
        }
        _config_env(mp, _kubeconfig(folder / "config", server.url, exec_user))
        yield APPLY, (
            f'the API server {server.url} refuses the credentials of user "fake-user" of context '
            '"fake" (401 Unauthorized: missing, wrong or expired); renew them (e.g. `gcloud '
            "container clusters get-credentials`, or log in again) and check with `kubectl "
            "--context fake auth whoami` (the kubeconfig's credential plugin: exec: process "
            "returned 1. no active account (key [redacted]))"
        )


@scene
def forbidden(tmp: Path, user: dict[str, str], mp: pytest.MonkeyPatch, cert: tuple[Path, Path]) -> Iterator[tuple[list[str], str]]:
    with _fake(tmp, user, mp) as server:
        server.fail("PATCH", 403, "Forbidden", RBAC_DENIAL)
        yield APPLY, (
            f"{ROUTING}: VirtualService/tf-serving/image-classifier: forbidden: user "
            f'"fake-user" of context "fake" may not patch {VS} in namespace "tf-serving" (the '
            f"API server {server.url} says: {RBAC_DENIAL}); ask for that permission or use "
            f"another context (check with `kubectl --context fake auth can-i patch {VS} -n "
            "tf-serving`); nothing was applied"
        )


@scene
def server_error(tmp: Path, user: dict[str, str], mp: pytest.MonkeyPatch, cert: tuple[Path, Path]) -> Iterator[tuple[list[str], str]]:
    with _fake(tmp, user, mp) as server:
        server.fail("PATCH", 503, "ServiceUnavailable", "etcdserver: leader changed")
        yield APPLY, (
            f'the API server {server.url} of context "fake" failed with 503 Service Unavailable '
            f'while trying to patch {VS} in namespace "tf-serving": etcdserver: leader changed; '
            "retry, or check the cluster's control plane (`kubectl --context fake get --raw "
            "/readyz`); nothing was applied"
        )


@scene
def server_quotes_a_credential(tmp: Path, user: dict[str, str], mp: pytest.MonkeyPatch, cert: tuple[Path, Path]) -> Iterator[tuple[list[str], str]]:
    with _fake(tmp, user, mp) as server:
        server.fail("PATCH", 500, "InternalError", f"webhook got\nAuthorization: Bearer {TOKEN}")
        yield APPLY, (
            f'the API server {server.url} of context "fake" failed with 500 Internal Server Error '
            f'while trying to patch {VS} in namespace "tf-serving": webhook got Authorization: '
            "Bearer [redacted]; retry, or check the cluster's control plane (`kubectl --context "
            "fake get --raw /readyz`); nothing was applied"
        )


@scene
def untrusted_certificate(tmp: Path, user: dict[str, str], mp: pytest.MonkeyPatch, cert: tuple[Path, Path]) -> Iterator[tuple[list[str], str]]:
    with _fake(tmp, user, mp, tls=cert) as server:  # the kubeconfig does not trust it
        yield APPLY, (
            f'the API server {server.url} of context "fake" failed TLS verification (certificate '
            "verify failed: self-signed certificate); check the cluster's "
            "certificate-authority(-data) and server URL in the kubeconfig, or fetch them again "
            "(e.g. `gcloud container clusters get-credentials`)"
        )


@pytest.mark.parametrize("name", SCENES)
def test_a_cluster_error_is_one_line_exit_3_and_shows_no_credential(
    name: str,
    home: Path,
    secrets: dict[str, str],
    cert: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with contextmanager(SCENES[name])(home, secrets, monkeypatch, cert) as (argv, expected):
        outcome = _run(argv, capsys)
    line = outcome.line
    if name == "untrusted_certificate":  # OpenSSL 1.1 spells it "self signed"
        line = line.replace("self signed certificate", "self-signed certificate")
    assert line == expected
    # 0.5 s timeouts: urllib3's default retries would take 2 s
    assert outcome.seconds < (1.2 if name.endswith("timeout") else 5), outcome.seconds
    written = [p for p in (home / "canary").rglob("*") if p.is_file()]
    written += list((home / "tmp").glob("osrcp-*.json"))  # the client's discovery cache
    _check_no_secret(outcome, secrets, written)


def test_the_client_does_not_retry_a_connection_that_times_out(
    home: Path, secrets: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """At the real default connect timeout: urllib3's own 3 retries would make it 4 times longer."""
    assert kube_client.CONNECT_TIMEOUT <= 5
    with _listening(accepting=False) as port:
        _config_env(monkeypatch, _kubeconfig(home / "kubeconfig", f"http://127.0.0.1:{port}", secrets))
        outcome = _run(APPLY, capsys)
    assert f"no connection within {kube_client.CONNECT_TIMEOUT:g} s" in outcome.line
    assert kube_client.CONNECT_TIMEOUT - 0.2 < outcome.seconds < kube_client.CONNECT_TIMEOUT + 2


@pytest.mark.parametrize("ca", ["data", "relative path"])
def test_a_trusted_certificate_applies_over_https(
    ca: str, home: Path, secrets: dict[str, str], cert: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """The kubeconfig handed to the client as a dict keeps its certificate authority: as data,
    or as a path relative to the kubeconfig's folder (not to the working directory)."""
    server = FakeApiServer(namespaces=["default", "tf-serving"], tls=cert)
    server.start()
    try:
        server.required_token = TOKEN
        folder = home / "kube"
        folder.mkdir()
        if ca == "data":
            config = _kubeconfig(folder / "config", server.url, secrets, ca=cert[0])
        else:
            (folder / "ca.crt").write_bytes(cert[0].read_bytes())
            config = _kubeconfig(folder / "config", server.url, secrets)
            doc = yaml.safe_load(config.read_text())
            doc["clusters"][0]["cluster"]["certificate-authority"] = "ca.crt"
            config.write_text(yaml.safe_dump(doc))
        assert not (Path.cwd() / "ca.crt").exists()
        _config_env(monkeypatch, config)
        outcome = _run(APPLY, capsys)
        assert outcome.code == 0, outcome.err
        assert "VirtualService/tf-serving/image-classifier serverside-applied" in outcome.out
        assert len(server.applies(dry_run=False)) == 1
    finally:
        server.stop()


ALIAS_BOMB = """\
apiVersion: v1
kind: Config
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
contexts: [{name: fake, context: {cluster: c, user: u}}]
users: [{name: u, user: {token: s3cr3t-t0ken-0123456789}}]
current-context: fake
"""


def test_a_kubeconfig_alias_bomb_is_refused_at_once(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = home / "kubeconfig"
    config.write_text(ALIAS_BOMB, encoding="utf-8")
    _config_env(monkeypatch, config)
    outcome = _run(APPLY, capsys)
    # the words after "invalid YAML" are the manifests' strict reader's (mesh.manifest_yaml)
    assert outcome.line.startswith(
        f"the kubeconfig {config} cannot be read: invalid YAML: line 3, column 4: the anchor &a"
    )
    assert outcome.seconds < 1
    assert TOKEN not in outcome.err


def test_kubeconfig_files_merge_as_kubectl_merges_them(
    home: Path, secrets: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """$KUBECONFIG as a list: missing files skipped, the first file's current-context and
    entries win (the second file's server for the same cluster name is never asked)."""
    server = FakeApiServer(namespaces=["default", "tf-serving"])
    server.start()
    try:
        first = _kubeconfig(home / "first", server.url, secrets)
        second = yaml.safe_load(first.read_text())
        second["clusters"][0]["cluster"]["server"] = "http://127.0.0.1:1"  # shadowed by first
        second["current-context"] = "other"
        second["contexts"].append({"name": "other", "context": {"cluster": "fake-cluster"}})
        (home / "second").write_text(yaml.safe_dump(second))
        monkeypatch.setenv("KUBECONFIG", f"{home / 'missing'}:{first}:{home / 'second'}")
        assert _run(APPLY, capsys).code == 0
        outcome = _run([*APPLY, "--context", "nosuch"], capsys)
        assert outcome.line == (
            f"the kubeconfig $KUBECONFIG ({home / 'missing'}:{first}:{home / 'second'}) has no "
            'context "nosuch": its contexts are fake, other (current: fake)'
        )
    finally:
        server.stop()


def test_a_server_gone_after_discovery_was_cached_is_unreachable_not_a_rejected_manifest(
    home: Path, secrets: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With the discovery cached by an earlier run, the first request is the dry run itself."""
    with _fake(home, secrets, monkeypatch) as server:
        assert _run(APPLY, capsys).code == 0
    assert list((home / "tmp").glob("osrcp-*.json"))
    outcome = _run(APPLY, capsys)
    assert outcome.line == (
        f'cannot reach the API server {server.url} of context "fake": connection refused; is the '
        "cluster running, and is this the right context? (check with `kubectl --context fake "
        "cluster-info`); nothing was applied"
    )
