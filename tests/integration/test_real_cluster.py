"""On a real cluster with Istio: skipped unless ``CANARY_TEST_KUBECONFIG`` names its kubeconfig.

What it does to that cluster (in its current context, or ``CANARY_TEST_CONTEXT``): server-side
applies ``manifests/base`` and the weight-70 VirtualService to the ``tf-serving`` namespace
(the models' images must be pullable there: see the README's "On a cluster"), then reads the
mesh, loads it with 300 requests through its ingress (``CANARY_TEST_INGRESS`` when the ingress
gateway's Service has no address reachable from here) and verifies 70/30 within ±10 points.
With ``CANARY_TEST_LOADGEN_IMAGE`` it also runs the load from inside the cluster. It leaves the
applied manifests in place. Never run here: this machine has no cluster.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from commands import cli
from commands.verify_split import main as verify_split

KUBECONFIG = os.environ.get("CANARY_TEST_KUBECONFIG")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not KUBECONFIG, reason="CANARY_TEST_KUBECONFIG names no cluster with Istio"),
]
ROOT = Path(__file__).resolve().parents[2]


def _kube() -> list[str]:
    context = os.environ.get("CANARY_TEST_CONTEXT")
    return ["--kube", *(["--context", context] if context else [])]


def _ingress() -> list[str]:
    ingress = os.environ.get("CANARY_TEST_INGRESS")
    return ["--host", ingress] if ingress else []


@pytest.fixture(autouse=True)
def kubeconfig(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(KUBECONFIG))


def test_the_walkthrough_on_a_real_cluster(tmp_path: Path) -> None:
    for manifest in ("manifests/base", "manifests/routing/virtualservice-weight-70.yaml"):  # one VirtualService each
        assert cli.main(["mesh", "apply", *_kube(), "-f", str(ROOT / manifest)]) == 0
    assert cli.main(["mesh", "status", *_kube()]) == 0
    run = tmp_path / "run"
    assert cli.main(["load", *_kube(), *_ingress(), "--requests", "300", "-u", "4", "-t", "300s",
                     "--run-dir", str(run)]) == 0
    assert verify_split([str(run), "--expected", "70/30", "--tolerance", "0.1", "--no-write"]) == 0


@pytest.mark.skipif(not os.environ.get("CANARY_TEST_LOADGEN_IMAGE"), reason="CANARY_TEST_LOADGEN_IMAGE not set")
def test_the_load_from_inside_the_cluster(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli.main(["load", *_kube(), "--in-cluster", "--workers", "2", "--image",
                     str(os.environ["CANARY_TEST_LOADGEN_IMAGE"]), "--requests", "300", "-u", "4", "-t", "300s",
                     "--run-dir", str(run)]) == 0
    assert verify_split([str(run), "--expected", "70/30", "--tolerance", "0.1", "--no-write"]) == 0
