"""Inline SVG charts for ``report.html``: latency histograms and CDFs. Pure (strings out)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["PALETTE", "Series", "cdf_svg", "histogram_svg", "nice_ticks"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
_W, _H = 520, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 16, 28, 40


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]  # histogram counts, or the CDF's 101 percentiles
    color: str


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high]."""
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10)), key=lambda s: abs(math.log(s / raw)))
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _fmt(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e5 else f"{value:.3g}"


class _Frame:
    """Coordinates of a plot area and its axes."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float) -> None:
        self.x0, self.x1 = x0, (x1 if x1 > x0 else x0 + 1)
        self.y0, self.y1 = y0, (y1 if y1 > y0 else y0 + 1)

    def x(self, value: float) -> float:
        return _LEFT + (value - self.x0) / (self.x1 - self.x0) * (_W - _LEFT - _RIGHT)

    def y(self, value: float) -> float:
        return _H - _BOTTOM - (value - self.y0) / (self.y1 - self.y0) * (_H - _TOP - _BOTTOM)

    def axes(self, x_label: str, y_label: str, y_percent: bool = False) -> list[str]:
        parts = [
            f'<line x1="{_LEFT}" y1="{_H - _BOTTOM}" x2="{_W - _RIGHT}" y2="{_H - _BOTTOM}" stroke="#444"/>',
            f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_H - _BOTTOM}" stroke="#444"/>',
        ]
        for tick in nice_ticks(self.x0, self.x1):
            x = self.x(tick)
            parts.append(f'<line x1="{x:.1f}" y1="{_H - _BOTTOM}" x2="{x:.1f}" y2="{_H - _BOTTOM + 4}" stroke="#444"/>')
            parts.append(f'<text x="{x:.1f}" y="{_H - _BOTTOM + 16}" text-anchor="middle">{_fmt(tick)}</text>')
        for tick in nice_ticks(self.y0, self.y1, 4):
            y = self.y(tick)
            label = f"{100 * tick:g}%" if y_percent else _fmt(tick)
            parts.append(f'<line x1="{_LEFT - 4}" y1="{y:.1f}" x2="{_W - _RIGHT}" y2="{y:.1f}" stroke="#ddd"/>')
            parts.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
        parts.append(
            f'<text x="{(_LEFT + _W - _RIGHT) / 2}" y="{_H - 6}" text-anchor="middle">{escape(x_label)}</text>'
        )
        parts.append(
            f'<text x="14" y="{(_TOP + _H - _BOTTOM) / 2}" text-anchor="middle" '
            f'transform="rotate(-90 14 {(_TOP + _H - _BOTTOM) / 2})">{escape(y_label)}</text>'
        )
        return parts


def _legend(series: Sequence[Series]) -> list[str]:
    parts = []
    x = _LEFT + 8
    for item in series:
        parts.append(f'<rect x="{x}" y="8" width="12" height="12" fill="{item.color}" fill-opacity="0.6"/>')
        parts.append(f'<text x="{x + 16}" y="18">{escape(item.name)}</text>')
        x += 24 + 8 * len(item.name)
    return parts


def _svg(title: str, parts: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" '
        f'role="img" aria-label="{escape(title)}" font-family="sans-serif" font-size="11">'
        f"<title>{escape(title)}</title>" + "".join(parts) + "</svg>"
    )


def histogram_svg(title: str, edges: Sequence[float], series: Sequence[Series]) -> str:
    """Overlaid step histograms, each normalised to its own total (share per bin)."""
    shares = []
    for item in series:
        total = sum(item.values) or 1
        shares.append([v / total for v in item.values])
    top = max((max(s) for s in shares if s), default=1.0) or 1.0
    frame = _Frame(edges[0], edges[-1], 0.0, top * 1.05)
    parts = frame.axes("latency (ms)", "share of responses", y_percent=True)
    for item, values in zip(series, shares, strict=True):
        points = [f"{frame.x(edges[0]):.1f},{frame.y(0):.1f}"]
        for i, value in enumerate(values):
            points.append(f"{frame.x(edges[i]):.1f},{frame.y(value):.1f}")
            points.append(f"{frame.x(edges[i + 1]):.1f},{frame.y(value):.1f}")
        points.append(f"{frame.x(edges[-1]):.1f},{frame.y(0):.1f}")
        parts.append(
            f'<polygon points="{" ".join(points)}" fill="{item.color}" fill-opacity="0.35" '
            f'stroke="{item.color}" stroke-width="1"/>'
        )
    return _svg(title, parts + _legend(series))


def cdf_svg(title: str, series: Sequence[Series]) -> str:
    """Empirical CDFs from each series' 101 percentiles (0th..100th)."""
    values = [v for item in series for v in item.values if math.isfinite(v)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    frame = _Frame(low, high, 0.0, 1.0)
    parts = frame.axes("latency (ms)", "cumulative share", y_percent=True)
    for item in series:
        count = len(item.values)
        points = " ".join(
            f"{frame.x(v):.1f},{frame.y(i / (count - 1) if count > 1 else 1.0):.1f}"
            for i, v in enumerate(item.values)
        )
        parts.append(f'<polyline points="{points}" fill="none" stroke="{item.color}" stroke-width="2"/>')
    return _svg(title, parts + _legend(series))
