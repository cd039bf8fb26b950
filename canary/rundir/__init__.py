"""The run directory: the one contract between the load test and everything that reads a run.

* :mod:`canary.rundir.layout` — names and paths (:class:`RunDir`), finding the newest run, atomic JSON
* :mod:`canary.rundir.document` — run.json as typed data (:class:`RunDocument`)
* :mod:`canary.rundir.records` — the records' schema, chunk writing, :func:`read_records`
* :mod:`canary.rundir.reader` — :func:`read_run`: a whole run read back as a :class:`Run`
* :mod:`canary.rundir.checks` — every check made of a run, kept (:func:`record_check`, :func:`read_checks`)

The format is described for users in ``reports/README.md``.
"""

from .checks import CHECKS_DIR, read_checks, record_check
from .document import (
    RUN_FORMAT,
    CanaryOptions,
    RunDocument,
    parse_run_document,
)
from .layout import (
    CALIBRATION_FILE,
    LOCUST_LOG,
    PROGRESS_FILE,
    RECORDS_DIR,
    REPORTS_DIR,
    RUN_FILE,
    RunDir,
    default_run_dir,
    find_newest_run,
    read_json,
    resolve_run_dir,
    utc_now,
    write_json_atomic,
)
from .reader import Run, read_run
from .records import SCHEMA, cell_counts, failure_counts, read_records, rows_to_table, write_chunk

__all__ = [
    "CALIBRATION_FILE",
    "CHECKS_DIR",
    "LOCUST_LOG",
    "PROGRESS_FILE",
    "RECORDS_DIR",
    "REPORTS_DIR",
    "RUN_FILE",
    "RUN_FORMAT",
    "SCHEMA",
    "CanaryOptions",
    "Run",
    "RunDir",
    "RunDocument",
    "cell_counts",
    "default_run_dir",
    "failure_counts",
    "find_newest_run",
    "parse_run_document",
    "read_checks",
    "read_json",
    "read_records",
    "read_run",
    "record_check",
    "resolve_run_dir",
    "rows_to_table",
    "utc_now",
    "write_chunk",
    "write_json_atomic",
]
