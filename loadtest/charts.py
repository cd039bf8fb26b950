"""The Canary charts page: share and latency per subset over time, as inline SVG.

Locust's React web UI renders an extension tab's rows as plain text (the
``extended_tables`` mechanism has no chart), so the charts are a page of their
own, served beside the tab (``/canary/charts``, linked from "Download Data"
through ``extended_csv_files``). The drawing is here, in Python, as a pure
function of the live snapshot (:func:`charts_fragment`); the page's only
script fetches the fragment again every two seconds, as Locust's own pages
poll. No script library, no font or file from the network.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .live import LiveSnapshot, cell_name

__all__ = ["Series", "charts_fragment", "charts_page", "line_chart", "nice_ticks", "subset_colors"]

PALETTE = ("#15803d", "#266798", "#f64e56", "#ff9800", "#8e24aa", "#00897b", "#6d4c41")
"""Line colours: Locust's primary green for the stable subset, then distinct hues."""

_W, _H = 520, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 12, 10, 26


@dataclass(frozen=True)
class Series:
    """One line of a chart: ``(x, y)`` points in order of x."""

    name: str
    points: tuple[tuple[float, float], ...]
    color: str
    dashed: bool = False


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (steps of 1, 2, 2.5 or 5 × 10ⁿ) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    rough = (high - low) / max(1, count - 1)
    power = 10.0 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= rough)
    ticks = [math.floor(low / step + 1e-9) * step]
    while ticks[-1] < high - step * 1e-9:
        ticks.append(ticks[-1] + step)
    return [round(t, 12) for t in ticks]


def _scale(lo: float, hi: float, out_lo: float, out_hi: float) -> Callable[[float], float]:
    span = hi - lo or 1.0
    return lambda v: out_lo + (v - lo) / span * (out_hi - out_lo)


def line_chart(
    series: Sequence[Series],
    *,
    y_format: Callable[[float], str],
    y_range: tuple[float, float] | None = None,
    label: str = "",
) -> str:
    """An SVG line chart: x in seconds, y axis ticks by ``y_format``; ``y_range`` fixes the y
    axis (else 0 to the largest y). Each series is a ``<polyline class="series">`` (its last
    point also a dot); an empty chart says so."""
    points = [p for s in series for p in s.points]
    head = (f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" '
            f'aria-label="{html.escape(label)}" xmlns="http://www.w3.org/2000/svg">')
    if not points:
        return f'{head}<text class="empty" x="{_W / 2}" y="{_H / 2}">no data yet</text></svg>'
    x_lo, x_hi = min(p[0] for p in points), max(p[0] for p in points)
    if x_hi <= x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    y_lo, y_hi = y_range if y_range else (0.0, max(p[1] for p in points) * 1.1 or 1.0)
    y_ticks = nice_ticks(y_lo, y_hi, 5)
    y_hi = max(y_hi, y_ticks[-1])
    fx = _scale(x_lo, x_hi, _LEFT, _W - _RIGHT)
    fy = _scale(y_lo, y_hi, _H - _BOTTOM, _TOP)
    parts = [head]
    for tick in y_ticks:
        y = fy(tick)
        parts.append(f'<line class="grid" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="tick" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f"{html.escape(y_format(tick))}</text>")
    for tick in nice_ticks(x_lo, x_hi, 6):
        if x_lo <= tick <= x_hi:
            parts.append(f'<text class="tick" x="{fx(tick):.1f}" y="{_H - 8}" text-anchor="middle">'
                         f"{tick:g} s</text>")
    for line in series:
        if not line.points:
            continue
        coords = " ".join(f"{fx(x):.1f},{fy(y):.1f}" for x, y in line.points)
        dash = ' stroke-dasharray="6 4"' if line.dashed else ""
        name = html.escape(line.name)
        parts.append(f'<polyline class="series" data-series="{name}" points="{coords}" fill="none" '
                     f'stroke="{line.color}" stroke-width="2"{dash}><title>{name}</title></polyline>')
        x, y = line.points[-1]
        if not line.dashed:
            parts.append(f'<circle cx="{fx(x):.1f}" cy="{fy(y):.1f}" r="3" fill="{line.color}"/>')
    parts.append("</svg>")
    return "".join(parts)


def subset_colors(subsets: Sequence[str]) -> dict[str, str]:
    """A colour per subset, in order (the stable subset first gets Locust's green)."""
    return {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(dict.fromkeys(subsets))}


def _legend(items: Sequence[tuple[str, str, bool]]) -> str:
    keys = "".join(
        f'<span class="key"><span class="swatch{" dashed" if dashed else ""}" '
        f'style="border-color:{color}"></span>{html.escape(name)}</span>'
        for name, color, dashed in items
    )
    return f'<div class="legend">{keys}</div>'


def _figure(title: str, chart: str, legend: Sequence[tuple[str, str, bool]], key: str) -> str:
    return (f'<figure class="card" data-chart="{html.escape(key)}"><figcaption>{html.escape(title)}'
            f"</figcaption>{chart}{_legend(legend)}</figure>")


def _percent(v: float) -> str:
    return f"{v:g}%"


def _ms(v: float) -> str:
    return f"{v:g} ms"


def _share_figures(snapshot: LiveSnapshot, colors: dict[str, str], label: Callable[[str, str], str]) -> list[str]:
    figures = []
    t_range = (snapshot.history[0].t, snapshot.history[-1].t) if snapshot.history else (0.0, 0.0)
    for row in snapshot.rows:
        cell = (row.protocol, row.group)
        series: list[Series] = []
        legend: list[tuple[str, str, bool]] = []
        for share in row.shares:
            color = colors.get(share.subset, PALETTE[-1])
            points = tuple((p.t, 100 * p.shares[cell].get(share.subset, 0.0)) for p in snapshot.history
                           if p.shares.get(cell))
            series.append(Series(share.subset, points, color))
            legend.append((share.subset, color, False))
            if share.expected is not None and snapshot.history:
                e = 100 * share.expected
                series.append(Series(f"{share.subset} expected", ((t_range[0], e), (t_range[1], e)), color, True))
                legend.append((f"{share.subset} expected {e:g}%", color, True))
        title = f"Share per subset, {label(row.protocol, row.group)}"
        chart = line_chart(series, y_format=_percent, y_range=(0.0, 100.0), label=title)
        figures.append(_figure(title, chart, legend, f"share:{cell_name(cell)}"))
    return figures


def _latency_figures(snapshot: LiveSnapshot, colors: dict[str, str], label: Callable[[str, str], str]) -> list[str]:
    protocols = dict.fromkeys(row.protocol for row in snapshot.rows)
    figures = []
    for protocol in protocols:
        seen = {s for p in snapshot.history for s in p.latency.get(protocol, {})}
        subsets = [s for s in colors if s in seen] + sorted(seen - set(colors))
        series: list[Series] = []
        legend: list[tuple[str, str, bool]] = []
        for subset in subsets:
            color = colors.get(subset, PALETTE[-1])
            for which, dashed in (("p50", False), ("p95", True)):
                points = tuple(
                    (p.t, float(getattr(p.latency[protocol][subset], which)))
                    for p in snapshot.history
                    if subset in p.latency.get(protocol, {})
                )
                series.append(Series(f"{subset} {which}", points, color, dashed))
                legend.append((f"{subset} {which}", color, dashed))
        title = f"Latency per subset, {label(protocol, '')}"
        chart = line_chart(series, y_format=_ms, label=title)
        figures.append(_figure(title, chart, legend, f"latency:{protocol}"))
    return figures


def charts_fragment(snapshot: LiveSnapshot, note: str | None, label: Callable[[str, str], str]) -> str:
    """The charts (and the tab's note, if any) as an HTML fragment. ``label(protocol, group)``
    names a cell as the tab does (``group`` empty: the protocol alone)."""
    subsets = [s.subset for row in snapshot.rows for s in row.shares]
    colors = subset_colors([*snapshot.settings.subsets, *subsets])
    parts = [f'<p class="note">⚠ {html.escape(note)}</p>'] if note else []
    if not snapshot.history:
        parts.append('<p class="empty">No data yet: the charts fill in while a test runs.</p>')
    parts.append('<h2>Share per subset over time</h2><div class="grid">')
    parts += _share_figures(snapshot, colors, label)
    parts.append('</div><h2>Latency per subset over time</h2>'
                 '<p class="empty">Each point: the requests answered since the previous point.</p>'
                 '<div class="grid">')
    parts += _latency_figures(snapshot, colors, label)
    parts.append("</div>")
    return "".join(parts)


_STYLE = """
:root { color-scheme: light dark; --bg: #fafafa; --paper: #fff; --text: rgba(0,0,0,.87);
  --muted: rgba(0,0,0,.6); --line: #e0e0e0; --primary: #15803d; }
@media (prefers-color-scheme: dark) { :root { --bg: #121212; --paper: #1e1e1e; --text: #fff;
  --muted: rgba(255,255,255,.7); --line: #424242; } }
body { margin: 0; background: var(--bg); color: var(--text);
  font-family: Roboto, "Helvetica Neue", Helvetica, Arial, sans-serif; font-size: 14px; }
header { display: flex; align-items: center; gap: 24px; padding: 16px 48px; background: var(--primary);
  color: #fff; box-shadow: 0 2px 4px -1px rgba(0,0,0,.2), 0 4px 5px 0 rgba(0,0,0,.14); }
header h1 { font-size: 20px; font-weight: 500; margin: 0; }
header a { color: #fff; text-transform: uppercase; font-size: 14px; text-decoration: none; }
main { padding: 8px 48px 24px; }
h2 { font-size: 18px; font-weight: 500; margin: 24px 0 8px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 16px; }
.card { margin: 0; padding: 12px 16px; background: var(--paper); border-radius: 4px;
  box-shadow: 0 2px 1px -1px rgba(0,0,0,.2), 0 1px 1px 0 rgba(0,0,0,.14), 0 1px 3px 0 rgba(0,0,0,.12); }
figcaption { font-weight: 500; margin-bottom: 4px; }
svg.chart { width: 100%; height: auto; display: block; }
svg .grid { stroke: var(--line); stroke-width: 1; }
svg text { fill: var(--muted); font-size: 11px; }
svg text.empty { text-anchor: middle; font-size: 13px; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; color: var(--muted); font-size: 12px; }
.key { display: inline-flex; align-items: center; gap: 6px; }
.swatch { width: 18px; border-top: 2px solid; }
.swatch.dashed { border-top-style: dashed; }
.note { color: #d32f2f; font-weight: 500; }
.empty { color: var(--muted); }
"""

_SCRIPT = """
const refresh = () => fetch("charts/svg", {cache: "no-store"})
  .then((r) => r.ok ? r.text() : Promise.reject(r.status))
  .then((t) => { document.getElementById("charts").innerHTML = t; })
  .catch(() => {});
setInterval(refresh, 2000);
"""


def charts_page(fragment: str) -> str:
    """The whole page: Locust-like header, the fragment, and the two-second refresh."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Canary charts · Locust</title><style>{_STYLE}</style></head><body>"
        '<header><h1>Canary charts</h1><a href="../?tab=canary">Back to the Canary tab</a></header>'
        f'<main id="charts">{fragment}</main><script>{_SCRIPT}</script></body></html>'
    )
