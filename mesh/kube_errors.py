"""What went wrong between canary and an API server, in one line that says what to do.

:func:`cluster_problem` reads what the ``kubernetes`` client and urllib3
raise (``MaxRetryError`` and the connection, timeout and TLS errors it
carries; ``ApiException`` with the API server's status) and names the server
URL, the kubeconfig context and user, and for a refusal the verb, resource and
namespace of the call. It returns None for what is the object's own fault
(a 4xx other than 401, 403 and 429: invalid, conflict, missing namespace ...),
which the caller reports against the manifest. Every text that came from the
server or the client passes :meth:`~mesh.kubeconfig.ClusterTarget.redact`, so
no credential of the kubeconfig is ever in a message.

Pure: the exception classes are only looked at by name and attribute, so this
module does not import the client.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import urlsplit

import orjson

from mesh.kubeconfig import ClusterTarget

__all__ = ["Call", "ClusterProblem", "api_message", "cluster_problem"]

Kind = Literal["unreachable", "timeout", "tls", "unauthorized", "forbidden", "server"]


@dataclass(frozen=True)
class Call:
    """What canary was asking: an RBAC verb, a resource (``deployments.apps``), a namespace."""

    verb: str
    resource: str
    namespace: str = ""

    @property
    def text(self) -> str:
        return f"{self.verb} {self.resource}" + (
            f' in namespace "{self.namespace}"' if self.namespace else ""
        )

    @property
    def can_i(self) -> str:
        return f"auth can-i {self.verb} {self.resource}" + (
            f" -n {self.namespace}" if self.namespace else ""
        )


@dataclass(frozen=True)
class ClusterProblem:
    kind: Kind
    message: str


def api_message(exc: BaseException) -> str:
    """The API server's own reason: the ``message`` of a ``Status`` body when there is one."""
    body = getattr(exc, "body", None)
    if body:
        try:
            found = orjson.loads(body)
        except (ValueError, TypeError):
            found = None
        if isinstance(found, dict) and found.get("message"):
            return str(found["message"])
        text = " ".join(str(body).split())  # not a Status: a proxy's page, say
        return text if len(text) <= 300 else f"{text[:300]}…"
    status, reason = getattr(exc, "status", None), getattr(exc, "reason", None)
    if isinstance(status, int):  # an ApiException: its str() holds the client's traceback
        return f"{status} {reason or ''}".strip()
    return str(reason) if reason and not isinstance(reason, BaseException) else str(exc)


def cluster_problem(
    exc: BaseException,
    target: ClusterTarget,
    call: Call,
    read_timeout: float,
    connect_timeout: float,
) -> ClusterProblem | None:
    """The problem ``exc`` is, as one redacted line; None when it is a refusal of the object."""
    status = getattr(exc, "status", None)
    if isinstance(status, int) and hasattr(exc, "body"):  # an ApiException
        problem = _answered(exc, status, target, call)
    else:
        reason = getattr(exc, "reason", None)
        if type(exc).__name__ == "MaxRetryError" and isinstance(reason, BaseException):
            exc = reason
        problem = _not_answered(exc, target, call, read_timeout, connect_timeout)
    return None if problem is None else replace(problem, message=target.redact(problem.message))


def _answered(
    exc: BaseException, status: int, target: ClusterTarget, call: Call
) -> ClusterProblem | None:
    said = target.redact(api_message(exc))
    ctx, server = target.context, target.server
    if status == 0:  # the client's own wrapping of an SSLError
        return _tls(said, target)
    if status == 401:
        notes = "; ".join(target.auth_notes)
        return ClusterProblem(
            "unauthorized",
            f"the API server {server} refuses the credentials of {target.who} (401 Unauthorized: "
            "missing, wrong or expired); renew them (e.g. `gcloud container clusters "
            f"get-credentials`, or log in again) and check with `kubectl --context {ctx} auth "
            "whoami`" + (f" (the kubeconfig's credential plugin: {notes})" if notes else ""),
        )
    if status == 403:
        return ClusterProblem(
            "forbidden",
            f"forbidden: {target.who} may not {call.text} (the API server {server} says: "
            f"{said}); ask for that permission or use another context (check with "
            f"`kubectl --context {ctx} {call.can_i}`)",
        )
    if status == 429 or status >= 500:
        phrase = getattr(exc, "reason", None) or ""
        return ClusterProblem(
            "server",
            f'the API server {server} of context "{ctx}" failed with {status} {phrase} '
            f"while trying to {call.text}: {said}; retry, or check the cluster's control plane "
            f"(`kubectl --context {ctx} get --raw /readyz`)",
        )
    return None


def _not_answered(
    exc: BaseException,
    target: ClusterTarget,
    call: Call,
    read_timeout: float,
    connect_timeout: float,
) -> ClusterProblem | None:
    names = {cls.__name__ for cls in type(exc).__mro__}
    ctx, server = target.context, target.server
    cannot = f'cannot reach the API server {server} of context "{ctx}"'
    check = f"(check with `kubectl --context {ctx} cluster-info`)"
    if "NameResolutionError" in names:
        host = urlsplit(server).hostname or server
        return ClusterProblem(
            "unreachable",
            f"{cannot}: its host name {host} does not resolve; check the server URL in the "
            f"kubeconfig and your network or VPN {check}",
        )
    if "NewConnectionError" in names:
        cause = exc.__cause__ or exc.__context__
        why = (
            "connection refused" if isinstance(cause, ConnectionRefusedError)
            else (getattr(cause, "strerror", None) or target.redact(str(exc))).lower()
        )
        return ClusterProblem(
            "unreachable",
            f"{cannot}: {why}; is the cluster running, and is this the right context? {check}",
        )
    if "ConnectTimeoutError" in names:
        return ClusterProblem(
            "timeout",
            f"{cannot}: no connection within {connect_timeout:g} s; check your network, VPN or "
            f"the cluster's authorized networks {check}",
        )
    if "ReadTimeoutError" in names:
        return ClusterProblem(
            "timeout",
            f'the API server {server} of context "{ctx}" did not answer within '
            f"{read_timeout:g} s while canary tried to {call.text}; retry, or check the "
            f"cluster's control plane (`kubectl --context {ctx} get --raw /readyz`)",
        )
    if "SSLError" in names:
        return _tls(_tls_reason(exc, target), target)
    if "ProxyError" in names:
        return ClusterProblem(
            "unreachable", f"{cannot} through its proxy: {target.redact(str(exc))} {check}"
        )
    if "ProtocolError" in names or "HTTPError" in names:
        return ClusterProblem(
            "unreachable",
            f"{cannot}: the connection failed ({target.redact(str(exc))}) {check}",
        )
    return None


def _tls_reason(exc: BaseException, target: ClusterTarget) -> str:
    seen: BaseException | None = exc
    while seen is not None:
        for arg in (seen, *getattr(seen, "args", ())):
            if isinstance(arg, ssl.SSLCertVerificationError):
                return f"certificate verify failed: {arg.verify_message}"
        seen = seen.__cause__ or seen.__context__
    return target.redact(str(exc))


def _tls(reason: str, target: ClusterTarget) -> ClusterProblem:
    ctx = target.context
    if "verif" in reason.lower():
        return ClusterProblem(
            "tls",
            f'the API server {target.server} of context "{ctx}" failed TLS verification '
            f"({reason}); check the cluster's certificate-authority(-data) and server URL in "
            "the kubeconfig, or fetch them again (e.g. `gcloud container clusters "
            "get-credentials`)",
        )
    return ClusterProblem(
        "tls",
        f'TLS with the API server {target.server} of context "{ctx}" failed ({reason}); check '
        f"the server URL and the kubeconfig's certificates (`kubectl --context {ctx} cluster-info`)",
    )
