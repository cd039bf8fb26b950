"""The client of the in-cluster load generator (:mod:`loadtest.incluster`), through a port-forward.

Each function takes the master pod's results base URL (``http://127.0.0.1:PORT``):
:func:`results_status` and :func:`results_progress` follow the run, :func:`results_stop`
is Ctrl-C to it, and :func:`fetch_run` brings the finished run home: it downloads
``/run.tar`` (checking its length and SHA-256), refuses any member that is a link, a
special file, an absolute path or one with ``..``, extracts it (``filter="data"``) beside
``dest``, reads it with :func:`canary.rundir.read_run` (records present and complete),
renames it to ``dest`` and only then POSTs ``/done`` (:func:`results_done`). A failure
leaves ``dest`` as it was and the master keeps the run. Errors are one-line canary errors.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any

from canary.errors import CanaryError, UsageError
from canary.rundir import LOCUST_LOG, RUN_FILE, read_run

__all__ = ["fetch_run", "results_done", "results_progress", "results_status", "results_stop"]


def _ask(base_url: str, path: str, timeout: float, method: str = "GET") -> http.client.HTTPResponse:
    url = base_url.rstrip("/") + path
    try:
        response: http.client.HTTPResponse = urllib.request.urlopen(
            urllib.request.Request(url, method=method, data=b"" if method == "POST" else None), timeout=timeout)
        return response
    except urllib.error.HTTPError as error:
        body = error.read().decode(errors="replace")[:300]
        if error.code == 409:
            raise CanaryError(f"{method} {url}: the in-cluster run is not at that point yet ({body}); "
                              "wait until its /status says finished") from None
        raise CanaryError(f"{method} {url} answered {error.code} ({body}); is that the load generator's "
                          "results port?") from None
    except (urllib.error.URLError, OSError) as error:
        raise CanaryError(f"cannot reach the load generator's results at {url} ({error}); is the port-forward "
                          "to the master pod up?") from None


def _json(base_url: str, path: str, timeout: float, method: str = "GET") -> dict[str, Any]:
    with _ask(base_url, path, timeout, method) as response:
        document = json.loads(response.read())
    if not isinstance(document, dict):
        raise CanaryError(f"{base_url}{path} did not answer a JSON object; is that the load generator?")
    return document


def results_status(base_url: str, timeout: float = 5.0) -> dict[str, Any]:
    """``{"state": "starting"|"running"|"finished", "exit_code": int|None, "run_id": str}``."""
    return _json(base_url, "/status", timeout)


def results_progress(base_url: str, timeout: float = 5.0) -> dict[str, Any]:
    """The run's progress.json as the master last wrote it (``{"state": "starting"}`` before)."""
    return _json(base_url, "/progress", timeout)


def results_stop(base_url: str, timeout: float = 5.0) -> dict[str, Any]:
    """Ctrl-C to the in-cluster Locust master (it keeps every record and exits 130)."""
    return _json(base_url, "/stop", timeout, "POST")


def results_done(base_url: str, timeout: float = 5.0) -> dict[str, Any]:
    """Tell the master its run is home: it exits with Locust's exit code."""
    return _json(base_url, "/done", timeout, "POST")


def _unsafe(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` has no place in a run directory (None: it has)."""
    name = PurePosixPath(member.name)
    if member.issym() or member.islnk():
        return "a link"
    if not (member.isfile() or member.isdir()):
        return "not a plain file or folder"
    if name.is_absolute():
        return "an absolute path"
    return "a path out of the run ('..')" if ".." in name.parts else None


def _safe_members(tar: tarfile.TarFile, where: str) -> None:
    for member in tar.getmembers():
        if why := _unsafe(member):
            raise UsageError(f"{where} is not a run directory's archive: {member.name!r} is {why}; nothing was "
                             "saved (is the port-forward to canary's load generator?)")


def fetch_run(base_url: str, dest: Path, timeout: float = 300.0) -> Path:
    """Download the finished run into ``dest`` (absent or an empty folder), check that it reads whole, then
    POST /done. A failure leaves ``dest`` as it was (the archive is extracted beside it, then renamed)."""
    dest, where = Path(dest), base_url.rstrip("/") + "/run.tar"
    if (dest / RUN_FILE).exists() or (dest.is_dir() and any(dest.iterdir())) or (dest.exists() and not dest.is_dir()):
        raise UsageError(f"{dest} already holds something (a run?); give a new or empty folder for the run")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.fetch-", dir=dest.parent))
    try:
        with tempfile.TemporaryFile() as archive:
            with _ask(base_url, "/run.tar", timeout) as response:
                digest = hashlib.sha256()
                try:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        digest.update(block)
                        archive.write(block)
                except (http.client.IncompleteRead, OSError) as error:
                    raise CanaryError(f"the download of {where} was cut short ({error}); fetch again") from None
                if (sha := response.headers.get("X-Canary-SHA256")) and sha != digest.hexdigest():
                    raise CanaryError(f"{where} arrived damaged (its SHA-256 differs); fetch again")
            archive.seek(0)
            try:
                with tarfile.open(fileobj=archive, mode="r:") as tar:
                    _safe_members(tar, where)
                    tar.extractall(staging, filter="data")
            except tarfile.TarError as error:
                raise UsageError(f"{where} is not a readable tar ({error}); fetch again") from None
        if not (staging / RUN_FILE).exists():
            log = staging / LOCUST_LOG
            last = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
            raise UsageError(f"the in-cluster Locust wrote no run (its log ends: {last[0] if last else 'nothing'}); "
                             "see the master pod's log, then POST /done (results_done) to end it")
        try:
            read_run(staging)
        except UsageError as error:
            raise UsageError(f"the run from {where} is not whole: {str(error).replace(str(staging), str(dest))}; "
                             "nothing was saved: fetch again") from None
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    results_done(base_url)
    return dest
