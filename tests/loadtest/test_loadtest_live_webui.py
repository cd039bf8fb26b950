"""The Canary tab's server side: template args, the /stats/requests feed, resets.

Most tests use a Flask app standing in for Locust's (importing Locust here would
monkey-patch the whole test process with gevent); the last one runs a real
Locust web UI in a subprocess and reads the feed the page reads.
"""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask, jsonify

from canary.stats import parse_expected
from loadtest import webui
from loadtest.live import LiveCounts
from loadtest.webui import COLUMNS, TAB_KEY, display_rows, register
from tests.browser.locust_web import running_locust_web

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


def fake_environment(*, web: bool = True) -> SimpleNamespace:
    app = Flask("fake_locust")

    @app.route("/stats/requests")
    def stats() -> Any:
        return jsonify({"stats": [], "extended_stats": [{"key": "other", "data": [1]}]})

    web_ui = SimpleNamespace(app=app, template_args={"extended_tabs": [{"key": "x", "title": "X"}]})
    return SimpleNamespace(
        web_ui=web_ui if web else None,
        events=SimpleNamespace(test_start=Hook(), reset_stats=Hook()),
    )


def rows(protocol: str, group: str, **counts: int) -> list[dict[str, str]]:
    return [
        {"protocol": protocol, "group": group, "subset": s}
        for s, n in counts.items()
        for _ in range(n)
    ]


def canary_feed(environment: SimpleNamespace) -> list[dict[str, Any]]:
    body = environment.web_ui.app.test_client().get("/stats/requests").get_json()
    assert body["stats"] == []
    assert {"key": "other", "data": [1]} in body["extended_stats"]
    (mine,) = [x for x in body["extended_stats"] if x["key"] == TAB_KEY]
    return list(mine["data"])


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
    assert [f["href"] for f in args["extended_csv_files"]] == ["./canary/live.csv"]
    with pytest.raises(RuntimeError):
        register(environment, LiveCounts(), hooks=hooks)


def test_feed_moves_and_shows_expectations_once_the_plugin_sets_them() -> None:
    environment = fake_environment()
    hooks: list[Any] = []
    register(environment, LiveCounts(), hooks=hooks)
    for hook in hooks:
        hook(rows("rest", "default", resnet50=70, resnet101=30))
    first = {r["id"]: r for r in canary_feed(environment)}
    assert first["rest/default/resnet50"]["requests"] == 70
    assert first["rest/default/resnet50"]["observed_share"] == "70.0%"
    assert first["rest/default/resnet50"]["expected_share"] == "-"
    assert first["rest/default/resnet50"]["p_value"] == "-"

    environment.canary_expected = {"default": parse_expected("70/30", SUBSETS)}
    for hook in hooks:
        hook(rows("rest", "default", resnet50=7, resnet101=3))
    second = {r["id"]: r for r in canary_feed(environment)}
    assert second["rest/default/resnet50"]["requests"] == 77
    assert second["rest/default/resnet50"]["expected_share"] == "70%"
    assert second["rest/default/resnet101"]["p_value"] == "1"
    assert second["rest/default/resnet101"]["verdict"] == "inconclusive"


def test_new_test_and_reset_stats_clear_the_counts() -> None:
    environment = fake_environment()
    live = LiveCounts()
    register(environment, live, hooks=[])
    for event in (environment.events.test_start, environment.events.reset_stats):
        live.add(rows("grpc", "canary", resnet101=3))
        assert live.total() == 3
        event.fire(environment=environment)
        assert live.total() == 0
        assert canary_feed(environment) == []


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


def test_json_and_csv_routes() -> None:
    environment = fake_environment()
    live = LiveCounts()
    register(environment, live, hooks=[])
    live.add(rows("rest", "canary", resnet101=2))
    client = environment.web_ui.app.test_client()
    data = client.get("/canary/live").get_json()
    assert {(r["subset"], r["count"]) for r in data} >= {("resnet101", 2), ("error", 0)}
    csv = client.get("/canary/live.csv")
    assert csv.mimetype == "text/csv"
    lines = csv.get_data(as_text=True).splitlines()
    assert lines[0].startswith("protocol,group,subset,count,observed_share")
    assert "rest,canary,resnet101,2,1.0,,,,2,0,0,2" in lines


def test_display_order_and_labels() -> None:
    live = LiveCounts()
    live.set_expected({"default": parse_expected("70/30", SUBSETS)})
    live.add(rows("grpc", "canary", resnet101=1))
    live.add(rows("rest", "canary", resnet101=1))
    live.add(rows("rest", "default", resnet50=1, error=1))
    displayed = display_rows(live.snapshot())
    names = [r["name"] for r in displayed]
    assert names == sorted(names)  # Locust's table sorts by name until a header is clicked
    shown = [(r["protocol"], r["group"], r["subset"]) for r in displayed]
    assert shown == [
        ("REST", "no header", "resnet50"),
        ("REST", "no header", "resnet101"),
        ("REST", "no header", "error"),
        ("REST", "no header", "unknown"),
        ("REST", "canary header", "resnet101"),
        ("REST", "canary header", "error"),
        ("REST", "canary header", "unknown"),
        ("gRPC", "canary header", "resnet101"),
        ("gRPC", "canary header", "error"),
        ("gRPC", "canary header", "unknown"),
    ]


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
        assert web.swarm(users=2, spawn_rate=2)["success"] is True
        deadline = time.monotonic() + 20
        counts: list[int] = []
        while time.monotonic() < deadline and len(counts) < 2:
            data = {r["id"]: r for r in web.canary_rows()}
            row = data.get("rest/default/resnet50")
            if row and row["requests"] > (counts[-1] if counts else 0):
                counts.append(int(row["requests"]))
            time.sleep(0.5)
        assert len(counts) == 2 and counts[1] > counts[0], web.read_log()
        assert data["rest/default/resnet50"]["expected_share"] == "70%"
        assert data["rest/canary/resnet101"]["expected_share"] == "100%"
        assert float(data["rest/default/resnet50"]["p_value"]) >= 0.0
        assert data["rest/default/resnet50"]["observed_share"].endswith("%")


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
        by_id = {r["id"]: r for r in entry["data"]}
        assert by_id["rest/default/resnet50"]["requests"] == expected
