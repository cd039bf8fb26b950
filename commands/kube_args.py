"""``--kube [--context C] [--namespace N] [--prometheus URL]``: one spelling for every command
that touches a mesh, parsed into the cluster they name (the options are the load test's own,
:data:`loadtest.options.KUBE_FLAGS`, so ``canary load`` and Locust take the same)."""

from __future__ import annotations

import argparse

from loadtest.options import KUBE_FLAGS, add_arguments, kube_target, options_from_parsed
from mesh.target import KubeTarget

__all__ = ["add_kube", "kube_of"]


def add_kube(parser: argparse.ArgumentParser, *, prometheus: bool = True, namespace: bool = True) -> None:
    """Add the cluster options (``--prometheus`` only where the mesh's counts are read;
    ``--namespace`` only where the namespace is read, not where manifests name their own)."""
    left_out = {"--prometheus"} if not prometheus else set()
    left_out |= {"--namespace"} if not namespace else set()
    add_arguments(parser, locust=False, only=[f for f in KUBE_FLAGS if f not in left_out])


def kube_of(args: argparse.Namespace, ingress: str | None = None) -> KubeTarget | None:
    """The cluster ``--kube`` names, or None (the local mesh); the others without ``--kube``
    are a usage error."""
    return kube_target(options_from_parsed(args), ingress=ingress)
