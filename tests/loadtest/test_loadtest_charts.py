"""The Canary charts page: small inline-SVG line charts drawn from the live snapshot."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from types import SimpleNamespace
from typing import Any

import pytest

from loadtest.charts import (
    Series,
    charts_fragment,
    charts_page,
    line_chart,
    nice_ticks,
    subset_colors,
)
from loadtest.live import LiveCounts, settings_from_options
from loadtest.options import options_from_parsed

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def polylines(svg: str) -> dict[str, list[tuple[float, ...]]]:
    return {
        line.attrib["data-series"]: [tuple(float(v) for v in p.split(",")) for p in line.attrib["points"].split()]
        for line in parse(svg).iter(f"{SVG}polyline")
    }


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(0, 100, [0, 25, 50, 75, 100]), (0, 7.3, [0, 2, 4, 6, 8]), (3, 3.4, [3.0, 3.1, 3.2, 3.3, 3.4])],
)
def test_nice_ticks(low: float, high: float, expected: list[float]) -> None:
    assert nice_ticks(low, high, 5) == pytest.approx(expected)


def test_nice_ticks_of_an_empty_range() -> None:
    assert nice_ticks(2.0, 2.0) == [2.0]


def test_line_chart_maps_points_into_the_plot_area() -> None:
    svg = line_chart(
        [Series("a", ((0.0, 0.0), (10.0, 100.0)), "#111"),
         Series("b <expected>", ((0.0, 50.0), (10.0, 50.0)), "#222", dashed=True)],
        y_format=lambda v: f"{v:g}%",
        y_range=(0.0, 100.0),
        label="share",
    )
    lines = polylines(svg)
    assert set(lines) == {"a", "b <expected>"}  # names are escaped, and parse back
    (x0, y0), (x1, y1) = lines["a"]
    assert x0 < x1 and y0 > y1  # time to the right, larger values up
    (_, mid), _ = lines["b <expected>"]
    assert mid == pytest.approx((y0 + y1) / 2)
    root = parse(svg)
    assert [t.text for t in root.iter(f"{SVG}text") if t.text and t.text.endswith("%")] == [
        "0%", "25%", "50%", "75%", "100%",
    ]
    assert next(t.text for t in root.iter(f"{SVG}text") if t.text and t.text.endswith(" s")) == "0 s"
    assert len(list(root.iter(f"{SVG}circle"))) == 1  # the last point of the solid line


def test_line_chart_without_points_says_so() -> None:
    svg = line_chart([Series("a", (), "#111")], y_format=str)
    assert parse(svg).find(f"{SVG}polyline") is None
    assert "no data yet" in svg


def test_a_single_point_still_draws() -> None:
    lines = polylines(line_chart([Series("a", ((5.0, 3.0),), "#111")], y_format=str))
    assert len(lines["a"]) == 1


def test_subset_colors_are_stable_and_distinct() -> None:
    colors = subset_colors(["resnet50", "resnet101", "resnet50", "resnet152"])
    assert list(colors) == ["resnet50", "resnet101", "resnet152"]
    assert colors["resnet50"] == "#15803d" and len(set(colors.values())) == 3


def live_with_history(points: int = 4) -> LiveCounts:
    clock = SimpleNamespace(now=0.0)
    options = options_from_parsed(SimpleNamespace(expected="default: 70/30; canary: 0/100"))
    live = LiveCounts(settings_from_options(options, ("resnet50", "resnet101")),
                      sample_interval_s=1.0, clock=lambda: clock.now)
    for _ in range(points + 1):
        batch: list[dict[str, Any]] = []
        for protocol in ("rest", "grpc"):
            batch += [{"protocol": protocol, "group": "canary", "subset": "resnet101", "latency_ms": 40.0}] * 2
            batch += [{"protocol": protocol, "group": "default", "subset": "resnet50", "latency_ms": 20.0}] * 7
            batch += [{"protocol": protocol, "group": "default", "subset": "resnet101", "latency_ms": 40.0}] * 3
        live.add(batch)
        clock.now += 1.0
    return live


def test_fragment_has_a_share_chart_per_cell_and_a_latency_chart_per_protocol() -> None:
    fragment = charts_fragment(live_with_history().snapshot(), None, lambda p, g: f"{p}/{g}")
    figures = re.findall(r'data-chart="([^"]+)"', fragment)
    assert figures == ["share:rest/default", "share:rest/canary", "share:grpc/default", "share:grpc/canary",
                       "latency:rest", "latency:grpc"]
    svgs = re.findall(r"<svg.*?</svg>", fragment)
    share = polylines(svgs[0])
    assert len(share["resnet50"]) == 4 and len(share["resnet50 expected"]) == 2
    latency = polylines(svgs[4])
    assert list(latency) == ["resnet50 p50", "resnet50 p95", "resnet101 p50", "resnet101 p95"]  # stable first
    assert "note" not in fragment


def test_fragment_before_any_data_and_with_a_note() -> None:
    fragment = charts_fragment(LiveCounts().snapshot(), "bad <value>", lambda p, g: p)
    assert '<p class="note">⚠ bad &lt;value&gt;</p>' in fragment
    assert "No data yet" in fragment
    assert "<polyline" not in fragment


def test_page_is_self_contained() -> None:
    page = charts_page("<p>x</p>")
    assert page.startswith("<!doctype html>") and '<main id="charts"><p>x</p></main>' in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing from the network
    assert 'fetch("charts/svg"' in page
