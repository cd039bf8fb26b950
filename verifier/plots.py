"""The reports' charts as inline SVG, drawn by matplotlib (strings out).

matplotlib is the field's well-kept plotting library; its SVG backend writes
self-contained vector charts that open offline (no script, no network), with
text kept as text (``svg.fonttype: none``) and stable ids (``svg.hashsalt``),
so a page is small, searchable and the same for the same data. It replaces
the hand-written SVG of the first report, which would have had to grow time
axes, legends, marks and log scales.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .latency import LatencyStats
from .timeline import Timeline

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["PALETTE", "cdf_pair_figure", "colors_for", "latency_figure", "timeline_figure"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#7f7f7f")
_STYLE: dict[Any, Any] = {"svg.fonttype": "none", "svg.hashsalt": "canary", "font.size": 9, "axes.spines.top": False,
          "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3, "legend.frameon": False}


def colors_for(names: Sequence[str]) -> dict[str, str]:
    """One colour per subset, in the report's order; failed and unattributed in grey."""
    colors = {name: PALETTE[i % (len(PALETTE) - 1)] for i, name in enumerate(n for n in names
                                                                             if n not in ("error", "unknown"))}
    return {**colors, "error": "#7f7f7f", "unknown": "#bcbd22"}


def _figure(rows: int, cols: int, size: tuple[float, float]) -> tuple[Figure, Any]:
    import matplotlib

    matplotlib.use("svg", force=False)
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=size, layout="constrained")
        axes = figure.subplots(rows, cols, squeeze=False)
    return figure, axes


def _svg(figure: Figure, title: str) -> str:
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context(_STYLE):
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Title": title})
    text = re.sub(r"^.*?(<svg)", r"\1", buffer.getvalue(), count=1, flags=re.DOTALL)  # no XML prolog: inline
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.DOTALL)  # RDF with the creator's address
    return re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)


def latency_figure(title: str, stats: Sequence[LatencyStats], edges: Sequence[float],
                   colors: Mapping[str, str]) -> str:
    """Histogram (share of each subset's responses per bin) and CDF of one protocol × format."""
    import matplotlib

    with matplotlib.rc_context(_STYLE):
        figure, axes = _figure(1, 2, (9.0, 3.0))
        hist, cdf = axes[0][0], axes[0][1]
        mids = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
        for s in stats:
            total = sum(s.histogram) or 1
            hist.step(mids, [c / total for c in s.histogram], where="mid", color=colors.get(s.subset, "#444"),
                      label=f"{s.subset} (n={s.n})")
            cdf.plot(s.cdf, [i / 100 for i in range(len(s.cdf))], color=colors.get(s.subset, "#444"),
                     label=s.subset)
        hist.set(title=f"{title}: histogram", xlabel="latency (ms)", ylabel="share of responses")
        cdf.set(title=f"{title}: CDF", xlabel="latency (ms)", ylabel="share at or below")
        hist.legend(loc="upper right")
        return _svg(figure, f"{title} latency")


def timeline_figure(line: Timeline, colors: Mapping[str, str]) -> str:
    """Requests per second, share and median latency per subset over the run, with a dashed
    line at each routing change labelled with how long it took to take effect."""
    import matplotlib

    with matplotlib.rc_context(_STYLE):
        figure, axes = _figure(3, 1, (9.0, 6.6))
        rps_ax, share_ax, latency_ax = axes[0][0], axes[1][0], axes[2][0]
        x = [b.start_s + line.width_s / 2 for b in line.buckets]
        for subset in line.subsets:
            color = colors.get(subset, "#444")
            rps_ax.plot(x, [b.requests.get(subset, 0) / line.width_s for b in line.buckets], color=color,
                        label=subset, marker=".", markersize=3)
            if subset in ("error", "unknown"):
                continue
            share_ax.plot(x, [100 * b.shares().get(subset, 0.0) if b.shares() else float("nan")
                              for b in line.buckets], color=color, label=subset, marker=".", markersize=3)
            latency_ax.plot(x, [b.p50_ms.get(subset, float("nan")) for b in line.buckets], color=color,
                            label=subset, marker=".", markersize=3)
        rps_ax.set(title=f"requests per second per subset ({line.width_s:g} s buckets)", ylabel="req/s")
        share_ax.set(title="share of attributed responses", ylabel="%", ylim=(-2, 102))
        latency_ax.set(title="median latency per subset", ylabel="ms", xlabel="seconds since the first request")
        for mark in line.marks:
            for ax in (rps_ax, share_ax, latency_ax):
                ax.axvline(mark.at_s, color="#555", linestyle="--", linewidth=1)
            share_ax.annotate(f"v{mark.version}: took effect {mark.took_effect}", (mark.at_s, 100), fontsize=8,
                              xytext=(3, -10), textcoords="offset points")
        rps_ax.legend(loc="upper left", ncols=4)
        return _svg(figure, "the run over time")


def cdf_pair_figure(title: str, samples: Mapping[str, Any]) -> str:
    """The CDFs of two (or more) samples of one subset × protocol × format, e.g. run A against run B."""
    import matplotlib
    import numpy as np

    with matplotlib.rc_context(_STYLE):
        figure, axes = _figure(1, 1, (5.0, 2.8))
        ax = axes[0][0]
        for i, (name, values) in enumerate(samples.items()):
            ordered = np.sort(np.asarray(values, dtype=float))
            ax.plot(ordered, np.arange(1, ordered.size + 1) / ordered.size, color=PALETTE[i % len(PALETTE)],
                    label=f"{name} (n={ordered.size})")
        ax.set(title=title, xlabel="latency (ms)", ylabel="share at or below")
        ax.legend(loc="lower right")
        return _svg(figure, title)
