"""Which cluster a command works on, when it is given ``--kube``. Pure.

A :class:`KubeTarget` names a kubeconfig context (None: the current one), the
namespace of the model Services (``tf-serving``, the manifests' own), and
optionally where Prometheus is and where the ingress is, for a cluster whose
ingress gateway cannot be found from its Service. It holds names, never a
credential, so it may be recorded in a run directory.
"""

from __future__ import annotations

from dataclasses import dataclass

from canary.conventions import KUBE_NAMESPACE

__all__ = ["DEFAULT_NAMESPACE", "KubeTarget"]

DEFAULT_NAMESPACE = KUBE_NAMESPACE


@dataclass(frozen=True)
class KubeTarget:
    context: str | None = None  # the kubeconfig's context (None: its current context)
    namespace: str = DEFAULT_NAMESPACE
    prometheus: str | None = None  # Prometheus' base URL (None: Istio's addon Service, if any)
    ingress: str | None = None  # the ingress URL (None: found from istio-ingressgateway)

    def describe(self) -> str:
        """``context "C", namespace "N"`` for messages."""
        context = f'context "{self.context}"' if self.context else "the current context"
        return f'{context}, namespace "{self.namespace}"'
