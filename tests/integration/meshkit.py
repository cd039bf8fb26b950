"""Helpers for the integration tests: where the seed fixtures are, and a handle on a running mesh."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mesh.api import default_manifests, mesh_apply, mesh_status
from mesh.local.state import MeshState

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "payloads" / "images" / "grace_hopper.jpg"


@dataclass
class RunningMesh:
    home: Path
    state: MeshState

    @property
    def url(self) -> str:
        return self.state.ingress_url

    def apply(self, *parts: str) -> None:
        mesh_apply([default_manifests(*parts)], home=self.home)

    def counts(self) -> dict[str, int]:
        return {k: v.requests for k, v in mesh_status(home=self.home).counters.items()}

    def pids(self) -> list[tuple[int, str]]:
        st = self.state
        return [(st.envoy_pid, st.envoy_marker)] + [(p.pid, p.marker) for p in st.pods]
