"""The "Canary" tab of Locust's web UI: live requests per subset, shares and p-values.

It uses only the extension points Locust's React web UI documents (see Locust's
``examples/extend_web_ui.py``):

* ``web_ui.template_args["extended_tabs"]`` adds the tab and
  ``web_ui.template_args["extended_tables"]`` gives its columns (the page
  camel-cases these keys into ``extendedTabs`` / ``extendedTables``);
* an ``after_request`` hook on ``web_ui.app`` adds
  ``{"key": "canary", "data": rows}`` to the ``extended_stats`` list of the
  ``/stats/requests`` JSON the page polls every two seconds while a test runs;
* ``template_args["extended_csv_files"]`` links a CSV of the same rows, served
  with the JSON at ``/canary/live.csv`` and ``/canary/live``.

Data flow: the plugin calls every hook in ``loadtest.plugin.on_records`` with
each batch of records the master receives; :func:`register` appends
:meth:`LiveCounts.add` there. Each poll of ``/stats/requests`` refreshes the
expected shares from ``environment.canary_expected`` (group → Expectation, when
the plugin sets it) and renders :meth:`LiveCounts.snapshot`. A new test
(``test_start``) or the UI's "reset stats" clears the counts.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flask import Response, jsonify, request

from canary.conventions import ERROR, UNKNOWN
from canary.stats import Expectation

from .live import LiveCounts, LiveRow

__all__ = [
    "COLUMNS",
    "TAB_KEY",
    "TAB_TITLE",
    "RecordHook",
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
    ("subset", "Subset"),
    ("requests", "Requests"),
    ("observed_share", "Observed share"),
    ("expected_share", "Expected share"),
    ("p_value", "p-value"),
    ("verdict", "Verdict so far"),
)
"""(row key, column title) of the tab's table, in order."""

_PROTOCOLS = {"rest": "REST", "grpc": "gRPC"}
_GROUPS = {"default": "no header", "canary": "canary header"}
_MISSING = "-"
_STATS_PATH = "/stats/requests"
_JSON_PATH = "/canary/live"
_CSV_PATH = "/canary/live.csv"
_REGISTERED = "_canary_live_counts"


def _percent(value: float | None, spec: str) -> str:
    return _MISSING if value is None else f"{100 * value:{spec}}%"


def _p(value: float | None) -> str:
    if value is None or value != value:  # None or NaN
        return _MISSING
    return f"{value:.3g}"


def _display_order(row: LiveRow) -> tuple[int, str, int, str, bool, float, str]:
    protocol, group, subset = row["protocol"], row["group"], row["subset"]
    return (
        list(_PROTOCOLS).index(protocol) if protocol in _PROTOCOLS else len(_PROTOCOLS),
        protocol,
        list(_GROUPS).index(group) if group in _GROUPS else len(_GROUPS),
        group,
        subset in (UNKNOWN, ERROR),
        -(row["expected_share"] or 0.0),
        subset,
    )


def display_rows(rows: Sequence[LiveRow]) -> list[dict[str, str | int]]:
    """The snapshot as the tab shows it: REST before gRPC, the group without header
    first; in a group the subsets by expected share (largest first), then
    unknown and error; labels, percentages, ``-`` where there is nothing to show.

    Locust's table sorts rows by their ``name`` until a header is clicked, so
    ``name`` is the zero-padded display position; ``id`` is
    ``protocol/group/subset``.
    """
    return [
        {
            "name": f"{position:05d}",
            "id": f"{row['protocol']}/{row['group']}/{row['subset']}",
            "protocol": _PROTOCOLS.get(row["protocol"], row["protocol"]),
            "group": _GROUPS.get(row["group"], row["group"]),
            "subset": row["subset"],
            "requests": row["count"],
            "observed_share": _percent(row["observed_share"], ".1f"),
            "expected_share": _percent(row["expected_share"], "g"),
            "p_value": _p(row["p_value"]),
            "verdict": row["verdict"] or _MISSING,
        }
        for position, row in enumerate(sorted(rows, key=_display_order))
    ]


def _csv(rows: Sequence[LiveRow]) -> str:
    out = io.StringIO()
    fields = list(LiveRow.__annotations__)
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        values: Mapping[str, object] = row
        writer.writerow({k: "" if values[k] is None else values[k] for k in fields})
    return out.getvalue()


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


def _expected_of(environment: Any) -> dict[str, Expectation] | None:
    value = getattr(environment, "canary_expected", None)
    if not isinstance(value, Mapping):
        return None
    return {str(k): v for k, v in value.items() if isinstance(v, Expectation)}


def _append_unique(args: dict[str, Any], name: str, item: dict[str, Any]) -> None:
    current = [x for x in args.get(name) or [] if x.get("key", x.get("href")) != item["key"]]
    args[name] = [*current, item]


def register(environment: Any, live: LiveCounts, *, hooks: list[RecordHook] | None = None) -> bool:
    """Install the Canary tab and its data feed on ``environment.web_ui``.

    ``hooks`` is the list the plugin calls with each batch of records (default:
    ``loadtest.plugin.on_records``); ``live.add`` is appended to it once.
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

    def current() -> list[LiveRow]:
        expected = _expected_of(environment)
        if expected is not None:
            live.set_expected(expected)
        return live.snapshot()

    def extend_stats(response: Response) -> Response:
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
            extended.append({"key": TAB_KEY, "data": display_rows(current())})
            data["extended_stats"] = extended
            response.set_data(json.dumps(data))
        except Exception:  # never break Locust's own stats feed
            logger.exception("could not add the Canary tab's rows to %s", request.path)
        return response

    def live_json() -> Response:
        return jsonify(current())

    def live_csv() -> Response:
        return Response(
            _csv(current()),
            mimetype="text/csv",
            headers={"Content-Disposition": "attachment; filename=canary_live.csv"},
        )

    app = web_ui.app
    app.after_request(extend_stats)
    app.add_url_rule(_JSON_PATH, "canary_live_json", live_json)
    app.add_url_rule(_CSV_PATH, "canary_live_csv", live_csv)

    def reset(**_: Any) -> None:
        live.reset()

    environment.events.test_start.add_listener(reset)
    environment.events.reset_stats.add_listener(reset)
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
