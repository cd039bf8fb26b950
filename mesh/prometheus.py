"""The mesh's own request counts from Prometheus: Istio's ``istio_requests_total``.

One owner for talking to Prometheus, reached two ways:

* :func:`prometheus_at`: a URL (``--prometheus http://127.0.0.1:9090``), HTTP
  GET ``{url}/api/v1/query``;
* :func:`prometheus_via_api`: through the Kubernetes API server's service
  proxy, ``GET /api/v1/namespaces/{ns}/services/{service}:{port}/proxy/api/v1/query``,
  with the cluster client of :mod:`mesh.kube_client` (its credentials, TLS and
  bounded timeouts); a refusal is one line from :mod:`mesh.kube_errors`
  (``get services/proxy`` in the namespace), never with a credential.
  :func:`find_prometheus` finds Istio's Prometheus addon (the Service
  ``prometheus`` in ``istio-system``, port ``http`` / 9090), or None.

Both are a :class:`Prometheus`: ``where`` names it in messages, and
:meth:`Prometheus.query_by` evaluates an instant query (``/api/v1/query``)
and sums its vector by the labels asked for.

The queries (pure) count requests as the destination's sidecar reports them
(``reporter="destination"``: the ingress gateway reports each one again as
``reporter="source"``); ``destination_version`` is the pod's ``version``
label, which the DestinationRule's subsets select on:

* :func:`window_query`: the requests per version over the last ``window``
  seconds (``increase()``), what ``verify-split --prometheus`` compares with
  the fingerprints;
* :func:`total_query`: the cumulative requests per version and response code,
  what ``canary mesh status --kube`` shows (codes folded into classes,
  :func:`response_class`; gRPC requests carry ``response_code`` 200 with a
  ``grpc_response_status`` label, which is not looked at).

Every failure is a :class:`~canary.errors.MeshError` (exit code 3) saying what
to do: Prometheus unreachable, an answer that is not JSON, not an instant
vector, or Prometheus' own error.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from canary.errors import MeshError
from mesh.kube_errors import Call, ClusterProblem, api_message
from mesh.kubeconfig import ClusterTarget
from mesh.model import DestinationRule

__all__ = [
    "DEFAULT_SERVICE",
    "PROMETHEUS_NAMESPACE",
    "PROMETHEUS_PORT",
    "PROMETHEUS_SERVICE",
    "ClusterApi",
    "Prometheus",
    "by_subset",
    "cluster_prometheus",
    "find_prometheus",
    "parse_prometheus_answer",
    "parse_vector",
    "prometheus_at",
    "prometheus_via_api",
    "requests_by_class",
    "response_class",
    "total_query",
    "version_subsets",
    "window_query",
]

DEFAULT_SERVICE = "image-classifier"  # the walkthrough's Service (destination_service_name)
PROMETHEUS_NAMESPACE = "istio-system"  # Istio's Prometheus addon (samples/addons/prometheus.yaml)
PROMETHEUS_SERVICE = "prometheus"
PROMETHEUS_PORT = 9090
VERSION = "destination_version"
CODE = "response_code"
URL_HINT = "is --prometheus the server's base URL (e.g. http://prometheus.istio-system:9090)?"
PORT_FORWARD = (
    "kubectl -n istio-system port-forward svc/prometheus 9090 and --prometheus "
    "http://127.0.0.1:9090"
)

Params = list[tuple[str, str]]


# --- queries (pure) ----------------------------------------------------------------------


def _quoted(value: str) -> str:
    """A PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _selector(service: str, namespace: str | None) -> str:
    ns = f"destination_service_namespace={_quoted(namespace)}," if namespace else ""
    return f'reporter="destination",{ns}destination_service_name={_quoted(service)}'


def window_query(window_s: float, service: str = DEFAULT_SERVICE, namespace: str | None = None) -> str:
    """The requests per ``destination_version`` over the last ``window_s`` (rounded up to whole
    seconds, at least 1)."""
    window = max(1, math.ceil(window_s))
    return (
        f"sum by ({VERSION}) (increase(istio_requests_total{{"
        f"{_selector(service, namespace)}}}[{window}s]))"
    )


def total_query(service: str, namespace: str) -> str:
    """The requests per ``destination_version`` and ``response_code`` since each counter began."""
    return (
        f"sum by ({VERSION}, {CODE}) (istio_requests_total{{{_selector(service, namespace)}}})"
    )


# --- answers (pure) ----------------------------------------------------------------------


def parse_vector(
    document: Mapping[str, Any], labels: Sequence[str], hint: str = URL_HINT
) -> dict[tuple[str, ...], float]:
    """``{label values: value}`` from an ``/api/v1/query`` answer (an instant vector), samples
    with the same values of ``labels`` summed (a missing label is ``""``; NaN and ±Inf are left
    out). MeshError for Prometheus' own error or an answer that is not a vector."""
    if document.get("status") != "success":
        raise MeshError(
            f"Prometheus answered {document.get('errorType') or 'an error'}: "
            f"{document.get('error') or document}; check the URL and the query"
        )
    data = document.get("data")
    if not isinstance(data, Mapping) or data.get("resultType") != "vector":
        raise MeshError(f"Prometheus' answer is not an instant vector; {hint}")
    out: dict[tuple[str, ...], float] = {}
    for sample in data.get("result") or ():
        try:
            key = tuple(str(sample["metric"].get(label, "")) for label in labels)
            value = float(sample["value"][1])
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise MeshError(f"cannot read the Prometheus sample {sample!r}") from None
        if math.isfinite(value):
            out[key] = out.get(key, 0.0) + value
    return out


def parse_prometheus_answer(
    document: Mapping[str, Any], label: str = VERSION, hint: str = URL_HINT
) -> dict[str, float]:
    """``{label value: value}`` from an ``/api/v1/query`` answer (see :func:`parse_vector`)."""
    return {key[0]: value for key, value in parse_vector(document, (label,), hint).items()}


def response_class(code: str) -> str:
    """``"2xx"`` .. ``"5xx"`` for an HTTP status; ``"other"`` for anything else (Istio's ``0``:
    no response was sent, the connection was reset)."""
    return f"{code[0]}xx" if len(code) == 3 and code.isdigit() and code[0] in "12345" else "other"


def requests_by_class(
    counts: Mapping[tuple[str, ...], float] | Mapping[tuple[str, str], float],
) -> dict[tuple[str, str], float]:
    """``{(version, code): n}`` (:func:`total_query`'s answer) as ``{(version, class): n}``."""
    out: dict[tuple[str, str], float] = {}
    for (version, code), value in counts.items():
        key = (version, response_class(code))
        out[key] = out.get(key, 0.0) + value
    return out


# --- one Prometheus, however it is reached -----------------------------------------------


@dataclass(frozen=True)
class Prometheus:
    """A Prometheus to query; ``fetch`` sends ``/api/v1/query``'s parameters and returns the
    answer's body (MeshError when no answer came). Make one with :func:`prometheus_at`,
    :func:`prometheus_via_api` or :func:`find_prometheus`."""

    where: str  # for messages: the URL, or the Service and the API server's context
    fetch: Callable[[Params], bytes] = field(repr=False, compare=False)
    hint: str = URL_HINT  # what to check when the answer is not Prometheus'

    def answer(self, promql: str, at: dt.datetime | None = None) -> Mapping[str, Any]:
        """The JSON answer to ``promql`` evaluated at ``at`` (default: Prometheus' now)."""
        params: Params = [("query", promql)]
        if at is not None:
            params.append(("time", f"{at.timestamp():.3f}"))
        body = self.fetch(params)
        try:
            document = json.loads(body)
        except ValueError:
            raise MeshError(f"Prometheus at {self.where} did not answer JSON; {self.hint}") from None
        if not isinstance(document, Mapping):
            raise MeshError(f"Prometheus at {self.where} answered {document!r}, not a JSON object")
        return document

    def query_by(
        self, promql: str, labels: Sequence[str], at: dt.datetime | None = None
    ) -> dict[tuple[str, ...], float]:
        """``promql``'s instant vector summed by ``labels`` (:func:`parse_vector`)."""
        return parse_vector(self.answer(promql, at), labels, self.hint)

    def query(self, promql: str, at: dt.datetime | None = None) -> dict[str, float]:
        """``promql``'s instant vector by ``destination_version``."""
        return {k[0]: v for k, v in self.query_by(promql, (VERSION,), at).items()}


def _without_password(url: str) -> str:
    """``url`` as a message may show it: a password in it (``http://user:pw@host``) blanked."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:[redacted]@{netloc}"))


def prometheus_at(url: str, timeout: float = 10.0) -> Prometheus:
    """The Prometheus at ``url`` (its base URL; ``http://`` when no scheme is given; a password
    in it is never in a message)."""
    base = (url if "://" in url else f"http://{url}").rstrip("/")
    url = _without_password(url)

    def fetch(params: Params) -> bytes:
        target = f"{base}/api/v1/query?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(target, timeout=timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as error:
            body = error.read()  # a bad query: 400 with Prometheus' JSON error
            if not body:
                raise MeshError(
                    f"Prometheus at {url} answered HTTP {error.code}; check --prometheus"
                ) from None
            return bytes(body)
        except (urllib.error.URLError, OSError) as error:
            raise MeshError(
                f"cannot reach Prometheus at {url} ({getattr(error, 'reason', error)}); "
                f"check --prometheus (e.g. {PORT_FORWARD})"
            ) from None

    return Prometheus(where=url, fetch=fetch)


class ClusterApi(Protocol):
    """What this module asks of :class:`~mesh.kube_client.ClusterClient`."""

    @property
    def target(self) -> ClusterTarget: ...

    def problem(self, exc: BaseException, call: Call) -> ClusterProblem | None: ...

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any: ...


def _get(api: ClusterApi, path: str, params: Params, timeout: float | None) -> bytes:
    """The body of ``GET path`` on the API server; the client's ApiException is raised."""
    answer = api.request(
        "GET", path, query_params=list(params), header_params={"Accept": "application/json"},
        _request_timeout=timeout,  # None: the client's own (mesh.kube_client)
        serialize=False,  # the body as sent, not a ResourceInstance
    )
    return bytes(answer.data)


def prometheus_via_api(
    api: ClusterApi,
    namespace: str = PROMETHEUS_NAMESPACE,
    service: str = PROMETHEUS_SERVICE,
    port: int | str = PROMETHEUS_PORT,
    *,
    timeout: float | None = None,
) -> Prometheus:
    """The Prometheus behind the Service ``namespace/service:port``, through the API server's
    service proxy (``timeout``: seconds to wait for its answer; default the client's own)."""
    path = f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy/api/v1/query"
    call = Call("get", "services/proxy", namespace)
    where = (
        f"Service {namespace}/{service}:{port} through the API server of context "
        f'"{api.target.context}"'
    )
    hint = f"is the Service {namespace}/{service} port {port} Prometheus' HTTP API?"

    def fetch(params: Params) -> bytes:
        try:
            return _get(api, path, params, timeout)
        except Exception as exc:
            passed_on = _prometheus_error(getattr(exc, "body", None))
            if passed_on is not None:  # a bad query: Prometheus' 400, through the proxy
                return passed_on
            if getattr(exc, "status", None) in (502, 503):  # the proxy found no Prometheus to ask
                raise MeshError(
                    f"asking Prometheus ({where}): the API server could not reach it "
                    f"({api.target.redact(api_message(exc))}); check its pods "
                    f"(`kubectl --context {api.target.context} -n {namespace} get endpoints "
                    f"{service}` lists none while no pod is ready)"
                ) from exc
            raise _failure(api, exc, call, f"asking Prometheus ({where})") from exc

    return Prometheus(where=where, fetch=fetch, hint=hint)


def _prometheus_error(body: object) -> bytes | None:
    """``body`` when it is Prometheus' own JSON error (``"status": "error"``), else None."""
    if not isinstance(body, str | bytes):
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if isinstance(document, Mapping) and document.get("status") == "error":
        return body.encode() if isinstance(body, str) else body
    return None


def _failure(api: ClusterApi, exc: BaseException, call: Call, doing: str) -> MeshError:
    problem = api.problem(exc, call)
    if problem is not None:
        return MeshError(f"{doing}: {problem.message}")
    status = getattr(exc, "status", None)
    return MeshError(
        f"{doing}: the API server answered {status or ''} {api.target.redact(api_message(exc))}; "
        f"check that Prometheus runs there (`kubectl --context {api.target.context} -n "
        f"{call.namespace} get svc,endpoints`), "
        f"or give its URL ({PORT_FORWARD})"
    )


def find_prometheus(
    api: ClusterApi,
    namespace: str = PROMETHEUS_NAMESPACE,
    service: str = PROMETHEUS_SERVICE,
    *,
    timeout: float | None = None,
) -> Prometheus | None:
    """Istio's Prometheus addon (the Service ``prometheus`` in ``istio-system``; its port named
    ``http``, else 9090, else its first), through the service proxy; None when there is no such
    Service (or namespace); MeshError when the API server cannot be asked."""
    call = Call("get", "services", namespace)
    try:
        body = _get(api, f"/api/v1/namespaces/{namespace}/services/{service}", [], timeout)
    except Exception as exc:
        if getattr(exc, "status", None) == 404:
            return None
        raise _failure(api, exc, call, f"looking for Prometheus ({namespace}/{service})") from exc
    try:
        ports = [p for p in (json.loads(body).get("spec") or {}).get("ports") or []
                 if isinstance(p, Mapping)]
    except (ValueError, AttributeError):
        ports = []
    chosen = (
        next((p for p in ports if p.get("name") == "http"), None)
        or next((p for p in ports if p.get("port") == PROMETHEUS_PORT), None)
        or (ports[0] if ports else None)
    )
    port = chosen.get("port", PROMETHEUS_PORT) if chosen else PROMETHEUS_PORT
    return prometheus_via_api(api, namespace, service, port, timeout=timeout)


def version_subsets(rule: DestinationRule) -> dict[str, str]:
    """``{destination_version: subset}``: Istio reports the pod's ``version`` label, and each of
    the DestinationRule's subsets that selects on it is that version (others keep their label)."""
    return {s.labels["version"]: s.name for s in rule.subsets if "version" in s.labels}


def by_subset(counts: Mapping[str, float], rule: DestinationRule | None) -> dict[str, float]:
    """Counts by ``destination_version`` as counts by subset (:func:`version_subsets`)."""
    names = version_subsets(rule) if rule is not None else {}
    out: dict[str, float] = {}
    for version, value in counts.items():
        name = names.get(version, version)
        out[name] = out.get(name, 0.0) + value
    return out


def cluster_prometheus(context: str | None) -> Prometheus | None:
    """Istio's Prometheus of the kubeconfig's ``context`` (None: its current one), through the
    API server (:func:`find_prometheus`); None when the cluster has none. MeshError, one line,
    when the cluster cannot be asked."""
    from mesh.kube import connect

    return find_prometheus(connect(context))
