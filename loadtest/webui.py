"""The "Canary" tab of Locust's web UI: one row per protocol × group, live, and its charts.

It uses only the extension points Locust documents (its ``examples/extend_web_ui.py``
and "Adding Web Routes" in "Extending Locust"):

* ``web_ui.template_args["extended_tabs"]`` adds the tab and
  ``web_ui.template_args["extended_tables"]`` gives its columns (the page
  camel-cases these keys into ``extendedTabs`` / ``extendedTables``);
* an ``after_request`` hook on ``web_ui.app`` adds
  ``{"key": "canary", "data": rows}`` to the ``extended_stats`` list of the
  ``/stats/requests`` JSON the page polls every two seconds while a test runs;
* ``template_args["extended_csv_files"]`` links, under "Download Data", a CSV of
  the rows (``/canary/live.csv``; JSON at ``/canary/live``) and the charts page
  (``/canary/charts``, :mod:`loadtest.charts`): an extension tab renders only
  text cells, so the charts are a page of their own, drawn as inline SVG.

Data flow: the plugin calls every hook in ``loadtest.plugin.on_records`` with
each batch of records the master receives; :func:`register` appends
:meth:`LiveCounts.add` there. At start-up and at each test start the tab reads
the canary options from ``environment.parsed_options`` (where Locust's start
form writes them), so an Expected, canary share, header, protocol or request
budget typed into the form is what the rows are judged against; a value that
cannot be read leaves the previous settings and shows a note row instead. A
new test or the UI's "reset stats" clears the counts.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from flask import Response, jsonify, request

from canary.errors import CanaryError

from .charts import charts_fragment, charts_page
from .latency import LatencySummary
from .live import (
    CellRow,
    LiveCounts,
    LiveSnapshot,
    Progress,
    ShareView,
    settings_from_options,
    snapshot_json,
)
from .options import options_from_parsed

__all__ = [
    "COLUMNS",
    "TAB_KEY",
    "TAB_TITLE",
    "RecordHook",
    "cell_label",
    "display_rows",
    "register",
    "register_on_init",
]

logger = logging.getLogger(__name__)

RecordHook = Callable[[list[dict[str, Any]]], None]
"""What the plugin calls with each batch of records the master receives."""

TAB_KEY = "canary"
TAB_TITLE = "Canary"
COLUMNS: tuple[tuple[str, str], ...] = (
    ("protocol", "Protocol"),
    ("group", "Group"),
    ("requests", "Requests"),
    ("shares", "Share (95% interval)"),
    ("expected", "Expected"),
    ("verdict", "Verdict so far"),
    ("progress", "Progress"),
    ("p50", "p50 ms"),
    ("p95", "p95 ms"),
    ("p99", "p99 ms"),
)
"""(row key, column title) of the tab's table, in order."""

_PROTOCOLS = {"rest": "REST", "grpc": "gRPC"}
_MISSING = "-"
_SEP = " · "
_STATS_PATH = "/stats/requests"
_JSON_PATH = "/canary/live"
_CSV_PATH = "/canary/live.csv"
_CHARTS_PATH = "/canary/charts"
_CHARTS_SVG_PATH = "/canary/charts/svg"
_REGISTERED = "_canary_live_counts"
_NOTE_NAME, _TOTAL_NAME = "00000", "99999"


# --- display --------------------------------------------------------------------------


def cell_label(protocol: str, group: str, header: str = "") -> str:
    """``REST``, ``REST, no header``, ``gRPC, user-group: canary``."""
    name = _PROTOCOLS.get(protocol, protocol)
    if not group:
        return name
    return f"{name}, {_group_label(group, header)}"


def _group_label(group: str, header: str) -> str:
    if group == "default":
        return "no header"
    if group == "canary":
        return header or "canary header"
    return group


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def _share_text(share: ShareView) -> str:
    if share.share is None or share.low is None or share.high is None:
        return f"{share.subset} {_MISSING}"
    return f"{share.subset} {_percent(share.share)}% ({_percent(share.low)}–{_percent(share.high)})"


def _ms(value: float | None) -> str:
    if value is None:
        return _MISSING
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _latency_text(row: CellRow, which: str) -> str:
    items = [(s.subset, row.latency.get(s.subset)) for s in row.shares]
    shown = [f"{subset} {_ms(getattr(summary, which))}" for subset, summary in items
             if isinstance(summary, LatencySummary) and summary.n]
    return _SEP.join(shown) or _MISSING


def _requests_text(counts: Sequence[tuple[str, int]], unknown: int, error: int) -> str:
    """``resnet50 412 · resnet101 176``, then unknown and error only where non-zero."""
    items = [f"{subset} {n:,}" for subset, n in counts]
    items += [f"{name} {n:,}" for name, n in (("unknown", unknown), ("error", error)) if n]
    return _SEP.join(items) or "0"


def _progress_text(progress: Progress) -> str:
    if progress.target is None:
        return f"{progress.done:,}"
    return f"{progress.done:,} / {progress.target:,} ({100 * (progress.fraction or 0.0):.0f}%)"


def _expected_text(row: CellRow) -> str:
    if row.expected is None:
        return _MISSING
    return _SEP.join(f"{s} {100 * share:g}%" for s, share in row.expected.shares.items())


def _cell_display(position: int, row: CellRow, header: str) -> dict[str, str]:
    return {
        "name": f"{position:05d}",
        "protocol": _PROTOCOLS.get(row.protocol, row.protocol),
        "group": _group_label(row.group, header),
        "requests": _requests_text([(s.subset, s.count) for s in row.shares], row.unknown, row.error),
        "shares": _SEP.join(_share_text(s) for s in row.shares) or _MISSING,
        "expected": _expected_text(row),
        "verdict": row.verdict or _MISSING,
        "progress": _progress_text(row.progress),
        "p50": _latency_text(row, "p50"),
        "p95": _latency_text(row, "p95"),
        "p99": _latency_text(row, "p99"),
    }


def _blank_row(name: str, **values: str) -> dict[str, str]:
    return {"name": name, **{key: "" for key, _ in COLUMNS}, **values}


def _total_display(snapshot: LiveSnapshot) -> dict[str, str]:
    per_subset: dict[str, int] = {}
    for row in snapshot.rows:
        for share in row.shares:
            per_subset[share.subset] = per_subset.get(share.subset, 0) + share.count
    unknown = sum(row.unknown for row in snapshot.rows)
    error = sum(row.error for row in snapshot.rows)
    return _blank_row(_TOTAL_NAME, protocol="Aggregated", group="all groups",
                      requests=_requests_text(list(per_subset.items()), unknown, error),
                      progress=_progress_text(snapshot.run))


def display_rows(snapshot: LiveSnapshot, note: str | None = None) -> list[dict[str, str]]:
    """The snapshot as the tab shows it: a note row first when the options could not be read,
    one row per protocol × group (REST before gRPC, the group without header first), and an
    "Aggregated" row last (requests per subset, and the run's progress toward its planned
    requests). Text only: the subsets with their counts, shares (exact interval), latency.

    Locust's table sorts rows by their ``name`` until a header is clicked, so ``name`` is
    the zero-padded display position.
    """
    header = snapshot.settings.header
    rows = [_cell_display(i + 1, row, header) for i, row in enumerate(snapshot.rows)]
    if snapshot.rows:
        rows.append(_total_display(snapshot))
    if note:
        rows.insert(0, _blank_row(_NOTE_NAME, protocol="⚠", group="options", requests=note))
    return rows


def _csv(snapshot: LiveSnapshot) -> str:
    """One line per protocol × group × subset."""
    out = io.StringIO()
    fields = ["protocol", "group", "subset", "count", "share", "share_low", "share_high", "expected_share",
              "verdict", "cell_total", "cell_unknown", "cell_error", "cell_target", "p50_ms", "p95_ms", "p99_ms"]
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in snapshot.rows:
        for share in row.shares:
            latency = row.latency.get(share.subset)
            values = {
                "protocol": row.protocol, "group": row.group, "subset": share.subset, "count": share.count,
                "share": share.share, "share_low": share.low, "share_high": share.high,
                "expected_share": share.expected, "verdict": row.verdict, "cell_total": row.total,
                "cell_unknown": row.unknown, "cell_error": row.error, "cell_target": row.progress.target,
                "p50_ms": latency.p50 if latency else None, "p95_ms": latency.p95 if latency else None,
                "p99_ms": latency.p99 if latency else None,
            }
            writer.writerow({k: "" if v is None else v for k, v in values.items()})
    return out.getvalue()


# --- registration ---------------------------------------------------------------------


def _plugin_hooks() -> list[RecordHook] | None:
    """``loadtest.plugin.on_records``, or None while the plugin does not exist."""
    try:
        module = importlib.import_module("loadtest.plugin")
    except ModuleNotFoundError as exc:
        if exc.name != "loadtest.plugin":
            raise
        return None
    hooks = getattr(module, "on_records", None)
    return hooks if isinstance(hooks, list) else None


def _append_unique(args: dict[str, Any], name: str, item: dict[str, Any]) -> None:
    current = [x for x in args.get(name) or [] if x.get("key", x.get("href")) != item["key"]]
    args[name] = [*current, item]


class _Tab:
    """The tab's state on one environment: the live view and the note about the options."""

    def __init__(self, environment: Any, live: LiveCounts, subsets: Sequence[str] | None) -> None:
        self.environment = environment
        self.live = live
        self.subsets = subsets
        self.note: str | None = None

    def _subsets(self) -> Sequence[str] | None:
        if self.subsets is not None:
            return self.subsets
        master = getattr(self.environment, "canary_master", None)
        found = getattr(master, "subsets", None)
        return list(found) if found else None

    def read_options(self) -> None:
        """Judge against the options as they are now; on a bad value keep the previous settings."""
        try:
            options = options_from_parsed(getattr(self.environment, "parsed_options", None))
            settings = settings_from_options(options, self._subsets())
        except CanaryError as error:
            self.note = f"{error} (the Canary tab keeps its previous settings)"
            logger.warning("canary: %s", self.note)
        except Exception as error:  # a web UI extension must never stop a test from starting
            self.note = f"could not read the canary options: {error}"
            logger.exception("canary: could not read the canary options")
        else:
            self.note = None
            self.live.configure(settings)

    def on_test_start(self, **_: Any) -> None:
        self.live.reset()
        self.read_options()

    def on_reset_stats(self, **_: Any) -> None:
        self.live.reset()

    def label(self, protocol: str, group: str) -> str:
        return cell_label(protocol, group, self.live.settings.header)

    def extend_stats(self, response: Response) -> Response:
        # Locust memoizes /stats/requests (up to 2 s): the same Response object may
        # pass here again, so our entry is replaced, never appended twice.
        if (
            not request.path.endswith(_STATS_PATH)
            or response.status_code != 200
            or not response.is_json
        ):
            return response
        try:
            data = response.get_json()
            extended = [x for x in data.get("extended_stats") or [] if x.get("key") != TAB_KEY]
            extended.append({"key": TAB_KEY, "data": display_rows(self.live.snapshot(), self.note)})
            data["extended_stats"] = extended
            response.set_data(json.dumps(data))
        except Exception:  # never break Locust's own stats feed
            logger.exception("could not add the Canary tab's rows to %s", request.path)
        return response

    def live_json(self) -> Response:
        return jsonify({"note": self.note, **snapshot_json(self.live.snapshot())})

    def live_csv(self) -> Response:
        return Response(
            _csv(self.live.snapshot()),
            mimetype="text/csv",
            headers={"Content-Disposition": "attachment; filename=canary_live.csv"},
        )

    def fragment(self) -> str:
        return charts_fragment(self.live.snapshot(), self.note, self.label)

    def charts(self) -> Response:
        return Response(charts_page(self.fragment()), mimetype="text/html")

    def charts_svg(self) -> Response:
        return Response(self.fragment(), mimetype="text/html", headers={"Cache-Control": "no-store"})


def register(
    environment: Any,
    live: LiveCounts,
    *,
    hooks: list[RecordHook] | None = None,
    subsets: Sequence[str] | None = None,
) -> bool:
    """Install the Canary tab, its data feed and its charts page on ``environment.web_ui``.

    ``hooks`` is the list the plugin calls with each batch of records (default:
    ``loadtest.plugin.on_records``); ``live.add`` is appended to it once.
    ``subsets`` orders a positional ``--expected`` (``70/30``: stable first);
    default: the subsets of the mesh the plugin found (``environment.canary_master``).
    Returns False, changing nothing, when the environment has no web UI
    (headless runs, workers). Calling it again with the same ``live`` is a no-op.
    """
    web_ui = getattr(environment, "web_ui", None)
    if web_ui is None:
        return False
    if getattr(environment, _REGISTERED, None) is live:
        return True
    if getattr(environment, _REGISTERED, None) is not None:
        raise RuntimeError("a Canary tab is already registered on this environment")
    setattr(environment, _REGISTERED, live)

    feed = hooks if hooks is not None else _plugin_hooks()
    if feed is None:
        logger.warning(
            "loadtest.plugin.on_records is not available: the Canary tab shows only "
            "the records given to LiveCounts.add directly"
        )
    elif live.add not in feed:
        feed.append(live.add)

    tab = _Tab(environment, live, subsets)
    tab.read_options()
    args: dict[str, Any] = web_ui.template_args
    _append_unique(args, "extended_tabs", {"key": TAB_KEY, "title": TAB_TITLE})
    _append_unique(
        args,
        "extended_tables",
        {"key": TAB_KEY, "structure": [{"key": k, "title": t} for k, t in COLUMNS]},
    )
    _append_unique(
        args,
        "extended_csv_files",
        {"key": TAB_KEY, "href": f".{_CSV_PATH}", "title": "Download canary live counts CSV"},
    )
    _append_unique(
        args,
        "extended_csv_files",
        {"key": f"{TAB_KEY}-charts", "href": f".{_CHARTS_PATH}",
         "title": "Canary charts: share and latency per subset over time"},
    )

    app = web_ui.app
    app.after_request(tab.extend_stats)
    app.add_url_rule(_JSON_PATH, "canary_live_json", tab.live_json)
    app.add_url_rule(_CSV_PATH, "canary_live_csv", tab.live_csv)
    app.add_url_rule(_CHARTS_PATH, "canary_charts", tab.charts)
    app.add_url_rule(_CHARTS_SVG_PATH, "canary_charts_svg", tab.charts_svg)
    environment.events.test_start.add_listener(tab.on_test_start)
    environment.events.reset_stats.add_listener(tab.on_reset_stats)
    return True


def register_on_init(live: LiveCounts | None = None, events: Any = None) -> LiveCounts:
    """For a locustfile: register the tab from Locust's ``init`` event.

    ``events`` defaults to ``locust.events``. Returns the :class:`LiveCounts`
    the tab shows (a new one unless given).
    """
    if events is None:
        from locust import events as locust_events

        events = locust_events
    counts = live if live is not None else LiveCounts()

    def on_init(environment: Any, **_: Any) -> None:
        register(environment, counts)

    events.init.add_listener(on_init)
    return counts
