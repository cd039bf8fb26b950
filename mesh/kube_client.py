"""The official ``kubernetes`` dynamic client, bounded in time, for one kubeconfig context.

The client itself waits forever by default (no socket timeout) and lets
urllib3 retry a refused or timed-out connection three times. Here every
request has a connect timeout (:data:`CONNECT_TIMEOUT`) and a read timeout
(:data:`READ_TIMEOUT`) unless the call names its own, and nothing is retried
(:data:`RETRIES`), so an unreachable API server is reported within
:data:`CONNECT_TIMEOUT` seconds (at once when it refuses).

The kubeconfig is read by :mod:`mesh.kubeconfig` (strict YAML, merged as
kubectl merges) and handed to the client as a dict; what the client cannot
make of it, and whatever fails while it reads the API server's discovery, is
one :class:`~canary.errors.MeshError` line (:mod:`mesh.kube_errors`).

This module imports ``kubernetes``: import it where a cluster is used, not at
the top of a module the local mesh loads.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import urllib3
import urllib3.exceptions
from kubernetes import client, config, dynamic
from kubernetes.config.config_exception import ConfigException

from canary.errors import MeshError
from mesh.kube_errors import Call, ClusterProblem, api_message, cluster_problem
from mesh.kubeconfig import DEFAULT_KUBECONFIG, ClusterTarget, load_kubeconfig

__all__ = ["CONNECT_TIMEOUT", "IN_CLUSTER", "READ_TIMEOUT", "BoundedApiClient", "ClusterClient", "open_cluster"]

CONNECT_TIMEOUT = 5.0  # seconds to open a connection to the API server
READ_TIMEOUT = 60.0  # seconds to wait for an answer (admission webhooks may take 30)
# nothing is retried: not a connection that cannot be made (that would multiply the
# connect timeout), not a read (urllib3 would also log each retry on stderr)
RETRIES = urllib3.Retry(total=0, connect=0, read=0, redirect=0, status=0, other=0)

DISCOVERY = Call("get", "the API discovery (/api, /apis)")
IN_CLUSTER = "(in-cluster)"  # the context's name when canary runs in a pod, on its service account


class BoundedApiClient(client.ApiClient):
    """``ApiClient`` whose requests time out (:data:`CONNECT_TIMEOUT`, :data:`READ_TIMEOUT`)
    unless a call passes its own ``_request_timeout``."""

    connect_timeout = CONNECT_TIMEOUT
    read_timeout = READ_TIMEOUT

    def call_api(
        self,
        method: Any,
        url: Any,
        header_params: Any = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> Any:
        if _request_timeout is None:
            _request_timeout = (self.connect_timeout, self.read_timeout)
        return super().call_api(
            method, url, header_params, body, post_params, _request_timeout=_request_timeout
        )


class ClusterClient(dynamic.DynamicClient):
    """The dynamic client, knowing which cluster it talks to (for error messages)."""

    target: ClusterTarget

    def problem(self, exc: BaseException, call: Call) -> ClusterProblem | None:
        """What ``exc`` means for this cluster (:func:`~mesh.kube_errors.cluster_problem`)."""
        bounded = self.client
        return cluster_problem(exc, self.target, call, bounded.read_timeout, bounded.connect_timeout)


def open_cluster(
    context: str | None = None,
    *,
    config_file: str | os.PathLike[str] | None = None,
    discovery_cache: str | os.PathLike[str] | None = None,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
) -> ClusterClient:
    """The dynamic client for ``context`` of the kubeconfig (see :func:`mesh.kube.connect`)."""
    configuration = client.Configuration()
    configuration.retries = RETRIES
    kubeconfig = load_kubeconfig(config_file)
    if kubeconfig is None:
        target = _in_cluster(configuration, context)
    else:
        target = kubeconfig.target(context)
        with _logged_errors() as notes:
            try:
                config.load_kube_config_from_dict(
                    kubeconfig.config,
                    context=target.context,
                    client_configuration=configuration,
                    persist_config=False,
                )
            except (ConfigException, ValueError, KeyError, TypeError, OSError) as exc:
                raise MeshError(
                    f'the kubeconfig {kubeconfig.where}, context "{target.context}": '
                    f"{target.redact(str(exc))}; fix it (`kubectl config view --context "
                    f'{target.context}`)'
                ) from exc
        target = replace(target, auth_notes=tuple(target.redact(n) for n in notes))
    if not configuration.verify_ssl:  # the kubeconfig's insecure-skip-tls-verify: as kubectl, no warning per request
        warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
    api_client = BoundedApiClient(configuration)
    api_client.connect_timeout = CONNECT_TIMEOUT if connect_timeout is None else connect_timeout
    api_client.read_timeout = READ_TIMEOUT if read_timeout is None else read_timeout
    cache = os.fspath(discovery_cache) if discovery_cache is not None else None
    try:
        api = ClusterClient(api_client, cache_file=cache)
    except Exception as exc:
        problem = cluster_problem(exc, target, DISCOVERY, api_client.read_timeout,
                                  api_client.connect_timeout)
        if problem is None:
            raise MeshError(
                f'the server {target.server} of context "{target.context}" answers, but not as '
                f"a Kubernetes API server ({target.redact(api_message(exc))} on the API "
                "discovery); check the server URL in the kubeconfig"
            ) from exc
        raise MeshError(problem.message) from exc
    api.target = target
    return api


def _in_cluster(configuration: client.Configuration, context: str | None) -> ClusterTarget:
    """The pod's service account, when canary runs in a cluster and no kubeconfig exists."""
    looked = (
        f"$KUBECONFIG ({os.environ['KUBECONFIG']})" if os.environ.get("KUBECONFIG")
        else f"{DEFAULT_KUBECONFIG} ({os.path.expanduser(DEFAULT_KUBECONFIG)})"
    )
    if context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise MeshError(f"no kubeconfig at {looked}, and the in-cluster service account "
                            f"cannot be used: {exc}") from exc
        return ClusterTarget(IN_CLUSTER, configuration.host, "(service account)")
    wanted = f' with the context "{context}"' if context else ""
    raise MeshError(
        f"no kubeconfig found{wanted}: looked at {looked}; set KUBECONFIG to your cluster's "
        "kubeconfig (e.g. `gcloud container clusters get-credentials`), or leave out "
        "--kube to use the local mesh"
    )


@contextmanager
def _logged_errors() -> Iterator[list[str]]:
    """What the client logs instead of raising while it loads credentials (a failing exec
    plugin), kept for the message a 401 gets rather than printed on stderr."""
    notes: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            notes.append(record.getMessage())

    root = logging.getLogger()
    handler = _Keep(logging.WARNING)
    root.addHandler(handler)
    try:
        yield notes
    finally:
        root.removeHandler(handler)
