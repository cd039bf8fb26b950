"""The Canary tab's server side: template args, the /stats/requests feed, options, charts, resets.

Most tests use a Flask app standing in for Locust's (importing Locust here would
monkey-patch the whole test process with gevent); the last one runs a real
Locust web UI in a subprocess and reads the feed the page reads.
"""

from __future__ import annotations

import re
import sys
import time
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask, jsonify

from loadtest import webui
from loadtest.live import LiveCounts
from loadtest.webui import COLUMNS, TAB_KEY, register
from tests.browser.locust_web import EXPECTED, running_locust_web

SUBSETS = ("resnet50", "resnet101")


class Hook:
    """The part of Locust's EventHook that register() uses."""

    def __init__(self) -> None:
        self.listeners: list[Any] = []

    def add_listener(self, listener: Any) -> Any:
        self.listeners.append(listener)
        return listener

    def fire(self, **kwargs: Any) -> None:
        for listener in self.listeners:
            listener(**kwargs)


def fake_environment(*, web: bool = True, **options: Any) -> SimpleNamespace:
    app = Flask("fake_locust")

    @app.route("/stats/requests")
    def stats() -> Any:
        return jsonify({"stats": [], "extended_stats": [{"key": "other", "data": [1]}]})

    web_ui = SimpleNamespace(app=app, template_args={"extended_tabs": [{"key": "x", "title": "X"}]})
    return SimpleNamespace(
        web_ui=web_ui if web else None,
        events=SimpleNamespace(test_start=Hook(), reset_stats=Hook()),
        parsed_options=SimpleNamespace(**options),
    )


def rows(protocol: str, group: str, **counts: int) -> list[dict[str, Any]]:
    return [
        {"protocol": protocol, "group": group, "subset": s, "latency_ms": 12.0}
        for s, n in counts.items()
        for _ in range(n)
    ]


def canary_feed(environment: SimpleNamespace) -> list[dict[str, Any]]:
    body = environment.web_ui.app.test_client().get("/stats/requests").get_json()
    assert body["stats"] == []
    assert {"key": "other", "data": [1]} in body["extended_stats"]
    (mine,) = [x for x in body["extended_stats"] if x["key"] == TAB_KEY]
    return list(mine["data"])


def by_group(feed: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["protocol"], r["group"]): r for r in feed}


def test_without_web_ui_nothing_is_installed() -> None:
    environment = fake_environment(web=False)
    hooks: list[Any] = []
    assert register(environment, LiveCounts(), hooks=hooks) is False
    assert hooks == []
    assert environment.events.test_start.listeners == []


def test_register_adds_tab_table_csv_and_feed_once() -> None:
    environment = fake_environment()
    live = LiveCounts()
    hooks: list[Any] = []
    assert register(environment, live, hooks=hooks) is True
    assert register(environment, live, hooks=hooks) is True
    assert hooks == [live.add]
    args = environment.web_ui.template_args
    assert args["extended_tabs"] == [
        {"key": "x", "title": "X"},
        {"key": TAB_KEY, "title": "Canary"},
    ]
    (table,) = args["extended_tables"]
    assert table["key"] == TAB_KEY
    assert [c["key"] for c in table["structure"]] == [k for k, _ in COLUMNS]
    assert [f["href"] for f in args["extended_csv_files"]] == ["./canary/live.csv", "./canary/charts"]
    with pytest.raises(RuntimeError):
        register(environment, LiveCounts(), hooks=hooks)


def test_feed_shows_one_row_per_protocol_and_group() -> None:
    environment = fake_environment(expected="default: 70/30; canary: 0/100", requests=1000)
    hooks: list[Any] = []
    register(environment, LiveCounts(), hooks=hooks, subsets=SUBSETS)
    for hook in hooks:
        hook(rows("rest", "default", resnet50=70, resnet101=30, error=2))
        hook(rows("grpc", "canary", resnet101=5))
    feed = canary_feed(environment)
    assert [r["name"] for r in feed] == sorted(r["name"] for r in feed)
    assert [(r["protocol"], r["group"]) for r in feed] == [
        ("REST", "no header"),
        ("REST", "user-group: canary"),
        ("gRPC", "no header"),
        ("gRPC", "user-group: canary"),
        ("Aggregated", "all groups"),
    ]
    rest = by_group(feed)[("REST", "no header")]
    assert rest["requests"] == "resnet50 70 · resnet101 30 · error 2"
    assert rest["shares"] == "resnet50 70.0% (60.0–78.8) · resnet101 30.0% (21.2–40.0)"
    assert rest["expected"] == "resnet50 70% · resnet101 30%"
    assert rest["verdict"] == "refuted"  # 2 failures in 102 requests: above the error gate
    assert rest["progress"] == "102 / 400 (26%)"
    for column in ("p50", "p95", "p99"):  # 12 ms, within the histogram's 1%
        assert re.fullmatch(r"resnet50 1[12]\.\d · resnet101 1[12]\.\d", rest[column]), rest[column]
    canary = by_group(feed)[("gRPC", "user-group: canary")]
    assert canary["requests"] == "resnet50 0 · resnet101 5"  # no unknown or error: not listed
    assert re.fullmatch(r"resnet101 1[12]\.\d", canary["p50"])
    assert by_group(feed)[("Aggregated", "all groups")]["progress"] == "107 / 1,000 (11%)"


def test_each_test_start_reads_the_options_the_start_form_set() -> None:
    environment = fake_environment(expected="70/30")
    live = LiveCounts()
    register(environment, live, hooks=[], subsets=SUBSETS)
    live.add(rows("rest", "default", resnet50=6, resnet101=4))
    assert by_group(canary_feed(environment))[("REST", "no header")]["expected"] == (
        "resnet50 70% · resnet101 30%"
    )
    environment.parsed_options.expected = "resnet50=60,resnet101=40"
    environment.parsed_options.canary_header = "x-canary: yes"
    environment.parsed_options.protocol = "grpc"
    environment.events.test_start.fire(environment=environment)
    live.add(rows("grpc", "x", resnet50=6, resnet101=4))
    feed = by_group(canary_feed(environment))
    assert set(feed) == {("gRPC", "no header"), ("gRPC", "x-canary: yes"), ("gRPC", "x"), ("Aggregated", "all groups")}
    assert feed[("gRPC", "no header")]["expected"] == "resnet50 60% · resnet101 40%"
    assert feed[("gRPC", "x")]["expected"] == "-"  # a group the options do not know


def test_an_invalid_typed_value_shows_a_note_and_keeps_the_previous_settings() -> None:
    environment = fake_environment(expected="70/30")
    live = LiveCounts()
    register(environment, live, hooks=[], subsets=SUBSETS)
    environment.parsed_options.expected = "70/40"
    environment.events.test_start.fire(environment=environment)  # no exception
    live.add(rows("rest", "default", resnet50=7, resnet101=3))
    feed = canary_feed(environment)
    assert feed[0]["protocol"] == "⚠"
    assert "sum" in feed[0]["requests"] and "keeps its previous settings" in feed[0]["requests"]
    assert by_group(feed)[("REST", "no header")]["expected"] == "resnet50 70% · resnet101 30%"
    assert environment.web_ui.app.test_client().get("/canary/live").get_json()["note"] == feed[0]["requests"]
    environment.parsed_options.expected = "60/40"
    environment.events.test_start.fire(environment=environment)
    assert all(r["protocol"] != "⚠" for r in canary_feed(environment))


def test_new_test_and_reset_stats_clear_the_counts() -> None:
    environment = fake_environment()
    live = LiveCounts()
    register(environment, live, hooks=[])
    for event in (environment.events.test_start, environment.events.reset_stats):
        live.add(rows("grpc", "canary", resnet101=3))
        assert live.total() == 3
        event.fire(environment=environment)
        assert live.total() == 0
        feed = canary_feed(environment)
        assert [r["requests"] for r in feed] == ["0"] * 5  # the options' four cells, and the total
        assert by_group(feed)[("Aggregated", "all groups")]["progress"] == "0"


def test_other_responses_are_left_alone_and_errors_never_break_the_stats() -> None:
    environment = fake_environment()
    live = LiveCounts()
    register(environment, live, hooks=[])
    client = environment.web_ui.app.test_client()
    assert client.get("/nowhere").status_code == 404

    def broken() -> Any:
        raise ValueError("boom")

    live.snapshot = broken  # type: ignore[method-assign]
    body = client.get("/stats/requests").get_json()
    assert body == {"stats": [], "extended_stats": [{"key": "other", "data": [1]}]}


def test_json_csv_and_charts_routes() -> None:
    environment = fake_environment(expected="default: 70/30; canary: 0/100")
    live = LiveCounts(sample_interval_s=0.001)
    register(environment, live, hooks=[], subsets=SUBSETS)
    live.add(rows("rest", "canary", resnet101=2))
    time.sleep(0.002)  # the history's next point is due
    live.add(rows("rest", "canary", resnet101=1))
    client = environment.web_ui.app.test_client()
    data = client.get("/canary/live").get_json()
    (row,) = [r for r in data["rows"] if r["cell"] == "rest/canary"]
    assert [(s["subset"], s["count"]) for s in row["shares"]] == [("resnet50", 0), ("resnet101", 3)]
    assert data["note"] is None and len(data["history"]) == 1
    csv = client.get("/canary/live.csv")
    assert csv.mimetype == "text/csv"
    lines = csv.get_data(as_text=True).splitlines()
    assert lines[0].startswith("protocol,group,subset,count,share,share_low,share_high,expected_share")
    assert any(line.startswith("rest,canary,resnet101,3,1.0,") for line in lines)
    page = client.get("/canary/charts")
    assert page.mimetype == "text/html" and "<svg" in page.get_data(as_text=True)
    fragment = client.get("/canary/charts/svg").get_data(as_text=True)
    assert 'data-chart="share:rest/canary"' in fragment and "<polyline" in fragment


def test_default_hooks_are_the_plugins_on_records(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = types.ModuleType("loadtest.plugin")
    plugin.on_records = []  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "loadtest.plugin", plugin)
    live = LiveCounts()
    register(fake_environment(), live)
    assert plugin.on_records == [live.add]  # type: ignore[attr-defined]


def test_without_the_plugin_the_tab_still_installs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "loadtest.plugin", None)
    environment = fake_environment()
    assert register(environment, LiveCounts()) is True
    assert "on_records is not available" in caplog.text
    assert environment.web_ui.template_args["extended_tabs"][-1]["key"] == TAB_KEY


def test_register_on_init_registers_from_the_init_event(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = types.ModuleType("loadtest.plugin")
    plugin.on_records = []  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "loadtest.plugin", plugin)
    events = SimpleNamespace(init=Hook())
    live = webui.register_on_init(events=events)
    environment = fake_environment()
    events.init.fire(environment=environment, runner=None, web_ui=environment.web_ui)
    assert plugin.on_records == [live.add]  # type: ignore[attr-defined]
    assert environment.web_ui.template_args["extended_tabs"][-1]["key"] == TAB_KEY


def test_real_locust_web_ui_serves_the_tab_and_live_counts(tmp_path: Path) -> None:
    with running_locust_web(tmp_path) as web:
        page = web.get("").decode()
        assert '"extended_tabs": [{"key": "canary", "title": "Canary"}]' in page
        assert web.swarm(users=2, spawn_rate=2, expected=EXPECTED)["success"] is True
        deadline = time.monotonic() + 20
        counts: list[int] = []
        while time.monotonic() < deadline and len(counts) < 2:
            data = by_group(web.canary_rows())
            row = data.get(("Aggregated", "all groups"))
            done = int(row["progress"].split()[0].replace(",", "")) if row else 0
            if done > (counts[-1] if counts else 0):
                counts.append(done)
            time.sleep(0.5)
        assert len(counts) == 2 and counts[1] > counts[0], web.read_log()
        assert data[("REST", "no header")]["expected"] == "resnet50 70% · resnet101 30%"
        assert data[("REST", "user-group: canary")]["expected"] == "resnet50 0% · resnet101 100%"
        assert data[("REST", "no header")]["p95"].startswith("resnet50 ")

        web.post("stop", {})  # a second test, with a split that does not sum to 100 typed in
        assert web.swarm(users=2, spawn_rate=2, expected="70/40")["success"] is True
        note, *rest = web.canary_rows()
        assert note["protocol"] == "⚠" and "sums to 110%" in note["requests"], note
        assert by_group(rest)[("REST", "no header")]["expected"] == "resnet50 70% · resnet101 30%"
        assert "Traceback" not in web.read_log()


def test_a_memoized_stats_response_gets_one_fresh_canary_entry() -> None:
    # Locust memoizes /stats/requests for up to 2 s: the same Response object
    # comes back through after_request again and again.
    app = Flask("memoized_locust")
    cached: list[Any] = []

    @app.route("/stats/requests")
    def stats() -> Any:
        if not cached:
            cached.append(jsonify({"stats": [], "extended_stats": []}))
        return cached[0]

    environment = SimpleNamespace(
        web_ui=SimpleNamespace(app=app, template_args={}),
        events=SimpleNamespace(test_start=Hook(), reset_stats=Hook()),
    )
    live = LiveCounts()
    register(environment, live, hooks=[])
    client = app.test_client()
    for expected in (1, 2, 3):
        live.add(rows("rest", "default", resnet50=1))
        body = client.get("/stats/requests").get_json()
        (entry,) = body["extended_stats"]
        assert by_group(entry["data"])[("REST", "no header")]["requests"] == f"resnet50 {expected}"
