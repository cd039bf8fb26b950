"""What the in-cluster load generator runs: ``settings.json``, and the Locust command lines of its pods.

``settings.json`` (in the run's ConfigMap) holds ``run_id``, ``locust_args`` (Locust's
arguments after ``-f locustfile``), ``workers`` and ``keep_s``. The master's command line
adds ``--master --expect-workers N``, the mounted ``calibration.json`` and the run
directory (and a mounted ``from-manifest.yaml`` for ``--from-manifest``); a worker's adds
``--worker --master-host`` and leaves out what only a master takes (a worker ignores
``--headless``, ``-u``, ``-r`` and ``-t``, so they stay). Flags the wrapper gives itself
are refused in ``locust_args``, ``--processes`` too: for more load, run more worker pods.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import ConfigDict, Field

from canary.errors import UsageError
from canary.rundir.document import Section, validated

__all__ = ["DEFAULT_MASTER", "LOCUSTFILE", "RunSettings", "checked_settings", "locust_master_argv",
           "locust_worker_argv", "option_value", "read_settings"]

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
DEFAULT_MASTER = "canary-loadgen-master"  # the master's Service, unless $LOCUST_MASTER_NODE_HOST says otherwise
WORKERS_WAIT_S = 600.0  # --expect-workers-max-wait, unless the run's arguments give one
OWNED = ("-f", "--locustfile", "--master", "--worker", "--master-host", "--expect-workers", "--calibration",
         "--run-dir", "--processes")  # the wrapper gives these; --processes: run more worker pods instead
MASTER_ONLY = {"--master-bind-host": 1, "--master-bind-port": 1, "--expect-workers-max-wait": 1, "--csv": 1,
               "--csv-full-history": 0, "--html": 1, "--json": 0, "--json-file": 1}  # flag -> values it takes


class RunSettings(Section):
    """``settings.json``: the run's id, Locust's arguments after ``-f locustfile``, workers, how long to keep."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    run_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    locust_args: tuple[str, ...] = ()
    workers: int = Field(ge=1)
    keep_s: float = Field(default=3600.0, gt=0)


def _flag(arg: str) -> str:
    return arg.split("=", 1)[0] if arg.startswith("--") else ("-f" if arg.startswith("-f") else arg)


def read_settings(config: Path) -> RunSettings:
    """``config/settings.json``, checked: refuses the Locust arguments the wrapper gives itself."""
    path = Path(config) / "settings.json"
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {path} ({error}); mount the run's ConfigMap at $CANARY_RUN_CONFIG") from None
    return checked_settings(data, str(path))


def checked_settings(data: object, where: str) -> RunSettings:
    """``data`` as settings, refusing the Locust arguments the wrapper gives itself (the local
    command checks what it ships, the wrapper what it reads)."""
    settings: RunSettings = validated(RunSettings, data, where)
    if owned := sorted({_flag(a) for a in settings.locust_args} & set(OWNED)):
        raise UsageError(f"{where}: the Locust arguments hold {', '.join(owned)}, which the in-cluster wrapper "
                         "gives itself (for more load, run more workers); leave it out")
    return settings


def option_value(args: tuple[str, ...] | list[str], flag: str) -> str | None:
    """The value ``flag`` is given in ``args`` (``--flag V`` or ``--flag=V``; the first), or None."""
    for i, arg in enumerate(args):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
    return None


def locust_master_argv(settings: RunSettings, config: Path, run_dir: Path) -> list[str]:
    """The master's Locust command line; a mounted ``from-manifest.yaml`` replaces any ``--from-manifest``."""
    args, manifest = list(settings.locust_args), Path(config) / "from-manifest.yaml"
    if manifest.is_file():
        args = [*_without(args, {"--from-manifest": 1}), "--from-manifest", str(manifest)]
    if option_value(settings.locust_args, "--expect-workers-max-wait") is None:
        args += ["--expect-workers-max-wait", f"{WORKERS_WAIT_S:g}"]
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--master", "--expect-workers",
            str(settings.workers), *args, "--calibration", str(Path(config) / "calibration.json"),
            "--run-dir", str(run_dir)]


def _without(args: list[str], flags: dict[str, int]) -> list[str]:
    out, skip = [], 0
    for arg in args:
        if skip:
            skip -= 1
        elif _flag(arg) in flags:
            skip = 0 if "=" in arg else flags[_flag(arg)]
        else:
            out.append(arg)
    return out


def locust_worker_argv(settings: RunSettings, env: dict[str, str]) -> list[str]:
    """A worker's Locust command line: the run's arguments less those only a master takes."""
    args = _without(list(settings.locust_args), MASTER_ONLY)
    port = option_value(settings.locust_args, "--master-bind-port")
    if port is not None and "LOCUST_MASTER_NODE_PORT" not in env:
        args += ["--master-port", port]
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker", "--master-host",
            env.get("LOCUST_MASTER_NODE_HOST", DEFAULT_MASTER), *args]
