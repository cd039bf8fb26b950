"""What every canary page shares: the style sheet, tables, status badges, number formats. Pure."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from html import escape

__all__ = ["CSS", "badge", "css_class", "ms", "page", "table"]

CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}h3{margin-bottom:.3em}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}
.verified,.agree,.pass,.passed,.promoted{color:#126b12}.refuted,.mismatch,.fail,.failed,.regression{color:#b00020}
.inconclusive,.unavailable,.not-judged,.rolled-back{color:#9a6700}
.badge{font-weight:bold;text-transform:uppercase}.muted{color:#666}
.charts{display:flex;flex-wrap:wrap;gap:1em}.chart svg{max-width:100%;height:auto}
"""


def css_class(status: str) -> str:
    return status.replace(" ", "-")


def badge(status: str) -> str:
    return f'<span class="badge {css_class(status)}">{escape(status)}</span>'


def ms(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.2f}"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], left: int = 1) -> str:
    """A table; cells are HTML already (escape before); the first ``left`` columns align left."""
    head = "".join(f'<th class="l">{h}</th>' if i < left else f"<th>{h}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, body: str) -> str:
    """A whole self-contained page: inline style, no script, no network."""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>{body}</body></html>\n"
    )
