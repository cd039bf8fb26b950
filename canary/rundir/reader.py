"""One run directory read back whole: the one reader every command uses.

:func:`read_run` gives a :class:`Run`: the typed run.json, the calibration's
subsets, every record (each request once, in time order) and what follows
from them: the canary header and model name the run used, the subsets that
answered, the protocol x group cells that had users or records, the paths
each cell sent, the models' weights, and notes on anything a reader should
know (an interrupted run, problems the load test reported).

Records the run cannot be judged by are unreadable input (a
:class:`~canary.errors.UsageError`, exit code 3), never an empty run that
some verdict is made of: no chunk at all under ``records/``, a damaged or
foreign chunk, or fewer records or chunks than run.json says were written.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from canary.conventions import ERROR, UNKNOWN, Cell, ExitCode, order_cells, parse_header
from canary.errors import UsageError
from canary.rundir.document import ModelRecord, RunDocument, parse_run_document
from canary.rundir.layout import CALIBRATION_FILE, RECORDS_DIR, RUN_FILE, read_json
from canary.rundir.records import chunk_files, read_records

__all__ = ["Run", "read_run"]


@dataclass(frozen=True)
class Run:
    """Everything a reader needs from one run directory."""

    root: Path
    document: RunDocument
    calibration: Mapping[str, Any] | None  # calibration.json as read (loadtest.fingerprint's format)
    records: pd.DataFrame  # canary.rundir.records.SCHEMA, each request once, in time order
    header: tuple[str, str]  # the canary group's header (name lower-cased, value)
    model_name: str
    subsets: tuple[str, ...]  # calibrated subsets (their file order), then any others answering
    cells: tuple[Cell, ...]  # protocol x group that had users or records
    paths: Mapping[Cell, tuple[str, ...]]  # request paths seen per cell
    weights: Mapping[str, str] = field(default_factory=dict)  # subset -> "seeded" / "imagenet"
    notes: tuple[str, ...] = ()

    @property
    def run_id(self) -> str:
        return self.document.run_id or self.root.name

    @property
    def started_at(self) -> dt.datetime | None:
        return self.document.started

    @property
    def ended_at(self) -> dt.datetime | None:
        return self.document.ended

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end (the last record when the end is not recorded)."""
        start, end = self.started_at, self.ended_at
        if end is None and len(self.records):
            end = pd.Timestamp(self.records["time"].max()).to_pydatetime()
        if start is None or end is None:
            return None
        return max(0.0, (end - start).total_seconds())


def _weights(document: RunDocument, calibration: Mapping[str, Any] | None) -> dict[str, str]:
    """Where the models' weights are recorded ("seeded" / "imagenet"), per subset.

    First found wins: run.json ``models.<subset>``, calibration.json
    ``meta.models.<subset>`` likewise, then
    ``meta.model_dirs.<subset>/assets.extra/canary_model.json`` (a calibration
    made from the SavedModels).
    """
    found = {s: w for s, m in document.models.items() if (w := m.weights_kind)}
    meta = calibration.get("meta") if calibration else None
    if not isinstance(meta, Mapping):
        return found
    models = meta.get("models")
    for subset, info in (models.items() if isinstance(models, Mapping) else ()):
        if not isinstance(info, Mapping):
            continue
        try:
            weights = ModelRecord.model_validate(info).weights_kind  # the same lookup as run.json's models
        except ValueError:
            continue
        if weights:
            found.setdefault(str(subset), weights)
    dirs = meta.get("model_dirs")
    for subset, directory in (dirs.items() if isinstance(dirs, Mapping) else ()):
        info_file = Path(str(directory)) / "assets.extra" / "canary_model.json"
        if subset in found or not info_file.is_file():
            continue
        try:
            info = json.loads(info_file.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(info, Mapping) and isinstance(info.get("weights"), str):
            found[str(subset)] = str(info["weights"])
    return found


def _whole_records(root: Path, document: RunDocument) -> pd.DataFrame:
    """The run's records, refusing a folder that lacks what run.json says was written."""
    records = read_records(root)  # no records/ folder, a damaged or foreign chunk: UsageError
    folder = root / RECORDS_DIR
    said = document.records
    parts = chunk_files(root)
    if not parts:
        written = f"run.json says {said.rows} were written" if said.rows else "run.json counts none"
        raise UsageError(
            f"{folder} holds no record chunk (part-*.parquet; {written}), so the run has nothing to judge: "
            "give the run directory that `canary load` wrote, whole, or load again"
        )
    if len(parts) < said.chunks or len(records) < said.rows:
        raise UsageError(
            f"{folder} is incomplete: {len(records)} records in {len(parts)} chunk(s), but run.json says "
            f"{said.rows} records in {said.chunks} chunk(s) were written; copy the whole run directory, "
            "or load again"
        )
    return records


def _interruption_note(document: RunDocument, records: int) -> str | None:
    """What a reader should know of a run that did not finish."""
    if document.status == "finished":
        return None
    stop = document.interrupted
    if document.status == "interrupted" and stop is not None:
        how = f"by {stop.signal}" if stop.signal else "before its end"
        when = f" at {stop.at}" if stop.at else ""
        cut = (f"; {stop.in_flight} request(s) in flight were cut short by the stop timeout (status 'interrupted', "
               "counted as failed, never as answered)") if stop.in_flight else ""
        return (f"the run was interrupted {how}{when} (the load test exited {int(ExitCode.INTERRUPTED)}): the verdicts cover the {records} requests "
                f"it made before it stopped{cut}")
    return f"run.json says the run is {document.status!r}: the verdicts cover the records written so far"


def read_run(run_dir: Path) -> Run:
    """Read one run directory; :class:`~canary.errors.UsageError` naming the file when
    something is missing or unreadable."""
    root = Path(run_dir)
    document = parse_run_document(read_json(root / RUN_FILE), where=str(root / RUN_FILE))
    calibration = read_json(root / CALIBRATION_FILE) if (root / CALIBRATION_FILE).is_file() else None
    records = _whole_records(root, document)
    options = document.options
    notes: list[str] = []
    if "canary_header" not in options.model_fields_set:
        notes.append("run.json does not record the canary header; assumed 'user-group: canary'")
    header = parse_header(options.canary_header)

    subsets: list[str] = []
    for source in ((calibration or {}).get("subsets"), document.calibration.subsets):
        for name in source or ():
            if str(name) not in subsets:
                subsets.append(str(name))
    answered = sorted(set(records["subset"].astype(str)) - {UNKNOWN, ERROR, ""}) if len(records) else []
    extra = [s for s in answered if s not in subsets]
    if extra and subsets:
        notes.append(f"subset(s) {', '.join(extra)} answered but are not in the calibration")
    subsets.extend(extra)

    cells: set[Cell] = {(protocol, group) for protocol, groups in document.users.items()
                        for group, n in groups.items() if n}
    paths: dict[Cell, tuple[str, ...]] = {}
    if len(records):
        for (protocol, group), seen in records.groupby(["protocol", "group"], sort=True)["path"]:
            cell = (str(protocol), str(group))
            cells.add(cell)
            paths[cell] = tuple(sorted({str(p) for p in seen.dropna() if str(p)}))
    if (stopped := _interruption_note(document, len(records))) is not None:
        notes.append(stopped)
    notes.extend(f"the load test reported: {problem}" for problem in document.problems)
    return Run(
        root=root,
        document=document,
        calibration=calibration,
        records=records,
        header=header,
        model_name=options.model_name,
        subsets=tuple(subsets),
        cells=order_cells(cells),
        paths=paths,
        weights=_weights(document, calibration),
        notes=tuple(notes),
    )
