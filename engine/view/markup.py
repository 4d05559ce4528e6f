"""HTML building blocks of the viewer: escaping, the page frame, tables, charts (inline SVG).

The one rule: every value that comes from a run (model text, ids, tool names, configs, report
fields) passes through ``esc`` (text and attribute values alike, quotes included) or ``url``
(query values). Markup is only ever made here from constants. Pages carry no script at all, and
the server's Content-Security-Policy forbids scripts, so a string that slipped through would
still not run; the tests check the escaping itself.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlencode

_PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]

CSS = """
:root { --fg:#1d1d1f; --muted:#6b6b70; --line:#d9d9de; --bg:#fafafa; --card:#fff; --acc:#2f5fb3;
        --ok:#237a3b; --bad:#b3261e; --warn:#8a6100; --hl:#fff3c4; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); margin: 0; }
header { background: #20232a; color: #fff; padding: 8px 16px; display: flex; gap: 18px; align-items: baseline; flex-wrap: wrap; }
header a { color: #cfd8ff; text-decoration: none; } header a:hover { text-decoration: underline; }
header .run { color: #9aa; font-family: ui-monospace, monospace; font-size: 12px; }
main { padding: 12px 16px 40px; max-width: 1500px; }
h1 { font-size: 20px; margin: 8px 0 12px; } h2 { font-size: 16px; margin: 22px 0 8px; } h3 { font-size: 14px; margin: 14px 0 6px; }
a { color: var(--acc); }
table { border-collapse: collapse; background: var(--card); margin: 4px 0 10px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f3; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: var(--muted); } .ok { color: var(--ok); font-weight: 600; } .bad { color: var(--bad); font-weight: 600; }
.warn { color: var(--warn); }
.note { background: #eef3ff; border-left: 3px solid var(--acc); padding: 6px 10px; margin: 8px 0; }
.notice { background: #fff4e5; border-left: 3px solid var(--warn); padding: 6px 10px; margin: 8px 0; }
pre, code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; }
pre { white-space: pre-wrap; word-break: break-word; margin: 0; }
.bar { display: inline-block; height: 10px; background: var(--acc); vertical-align: middle; margin-right: 6px; }
.bar.target { background: none; border: 1px dashed var(--muted); height: 10px; }
.pill { display: inline-block; border-radius: 9px; padding: 0 7px; font-size: 12px; background: #eceef3; margin: 1px 2px; }
.pill.ok { background: #dff3e4; } .pill.bad { background: #fbe0de; }
form.filters { display: flex; flex-wrap: wrap; gap: 8px 14px; align-items: end; background: var(--card);
               border: 1px solid var(--line); padding: 8px 10px; margin-bottom: 8px; }
form.filters label { display: flex; flex-direction: column; font-size: 12px; color: var(--muted); }
.pager { margin: 8px 0; display: flex; gap: 16px; }
.tabs a { margin-right: 10px; } .tabs a.on { font-weight: 700; text-decoration: none; color: var(--fg); }
.msg { border: 1px solid var(--line); border-radius: 6px; background: var(--card); margin: 6px 0; padding: 6px 9px; }
.msg .role { font-size: 11px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); margin-bottom: 2px; }
.msg.system { background: #f4f4f6; } .msg.user { border-left: 4px solid #4e79a7; }
.msg.assistant { border-left: 4px solid #59a14f; } .msg.tool { border-left: 4px solid #b07aa1; background: #fbf8fc; }
.call { background: #f1f7ef; border: 1px solid #cfe5c8; border-radius: 4px; padding: 3px 6px; margin: 3px 0; }
.call .fn { font-weight: 700; }
.turn { display: grid; grid-template-columns: minmax(0, 1fr) 300px; gap: 12px; border-top: 1px solid var(--line); padding-top: 6px; }
.side { font-size: 13px; } .side .box { background: #fffdf2; border: 1px dashed #d9c98a; padding: 5px 8px; border-radius: 6px; margin: 6px 0; }
.pair { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 10px; }
.pair .head { font-weight: 700; }
.row-shared { grid-column: 1 / span 2; opacity: .85; }
.parting { outline: 3px solid #e0a800; background: var(--hl); border-radius: 6px; padding: 4px; }
.empty { color: var(--muted); font-style: italic; padding: 6px; }
details > summary { cursor: pointer; color: var(--acc); }
img.graph { max-width: 100%; border: 1px solid var(--line); background: #fff; }
svg text { font: 11px system-ui, sans-serif; }
"""

NAV = [("/", "overview"), ("/list/trajectories", "trajectories"), ("/list/pairs", "pairs"), ("/list/paths", "paths"),
       ("/list/episodes", "episodes"), ("/list/dead_letters", "dead letters"), ("/reports", "reports")]


def esc(value: Any) -> str:
    """Text for HTML content or a quoted attribute value: <, >, &, " and ' become entities."""
    return html.escape(value if isinstance(value, str) else str(value), quote=True)


def url(path: str, **query: Any) -> str:
    """A link into the viewer; query values are URL-encoded (and the whole escaped for the attribute)."""
    q = {k: v for k, v in query.items() if v not in (None, "")}
    return esc(path + ("?" + urlencode(q) if q else ""))


def link(path: str, text: Any, **query: Any) -> str:
    return f'<a href="{url(path, **query)}">{esc(text)}</a>'


def record_link(kind: str, record_id: str, text: Any = None, **query: Any) -> str:
    return link(f"/record/{kind}", record_id if text is None else text, id=record_id, **query)


def pretty_json(value: Any) -> str:
    return f"<pre>{esc(json.dumps(value, indent=2, ensure_ascii=False, default=str))}</pre>"


def details(summary: str, body: str, *, open_: bool = False) -> str:
    """``summary`` is markup (callers escape), ``body`` markup."""
    return f"<details{' open' if open_ else ''}><summary>{summary}</summary>{body}</details>"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, cls: str = "", numeric: Sequence[int] = ()) -> str:
    """Cells are markup (callers escape); ``numeric`` columns align right."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    attr = f' class="{esc(cls)}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def kv_table(items: Iterable[tuple[str, str]]) -> str:
    """Key (text) / value (markup) rows."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in items)
    return f"<table>{rows}</table>"


def bar(fraction: float, width: int = 160, *, cls: str = "bar") -> str:
    w = max(0, min(width, round(width * (fraction if math.isfinite(fraction) else 0))))
    return f'<span class="{cls}" style="width:{w}px"></span>'


def pill(text: Any, cls: str = "") -> str:
    return f'<span class="pill {esc(cls)}">{esc(text)}</span>'


def num(value: Any, digits: int = 2) -> str:
    if isinstance(value, bool) or value is None:
        return esc("" if value is None else value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return esc(value)


def page(title: str, body: str, *, run: str, refresh_s: int | None = None) -> str:
    """The frame of every page: title, navigation, the run folder, and ``body`` (markup)."""
    nav = "".join(f'<a href="{esc(href)}">{esc(name)}</a>' for href, name in NAV)
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if refresh_s else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">{refresh}'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)} · magnet view</title><link rel=\"stylesheet\" href=\"/style.css\"></head>"
            f'<body><header><strong>magnet view</strong>{nav}<span class="run">{esc(run)}</span></header>'
            f"<main><h1>{esc(title)}</h1>{body}</main></body></html>")


def line_chart(series: dict[str, list[tuple[float, float]]], *, x_label: str, y_label: str, width: int = 640,
               height: int = 260, y_range: tuple[float, float] | None = None, x_ticks: Sequence[str] | None = None) -> str:
    """Inline SVG of one or more (x, y) series with a legend; ``x_ticks`` labels x = 0, 1, ...
    (rounds). Series of more than 400 points are thinned to 400 (evenly, ends kept)."""
    series = {k: _thin(v) for k, v in series.items() if v}
    if not series:
        return '<p class="empty">nothing to plot</p>'
    pad_l, pad_r, pad_t, pad_b = 52, 150, 12, 36
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = y_range or (min(ys), max(ys))
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    pw, ph = width - pad_l - pad_r, height - pad_t - pad_b

    def sx(x: float) -> float:
        return pad_l + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return pad_t + (1 - (y - y0) / (y1 - y0)) * ph

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<rect x="{pad_l}" y="{pad_t}" width="{pw}" height="{ph}" fill="#fff" stroke="#ccc"/>']
    for k in range(5):
        y = y0 + (y1 - y0) * k / 4
        parts.append(f'<line x1="{pad_l}" x2="{pad_l + pw}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#eee"/>'
                     f'<text x="{pad_l - 4}" y="{sy(y) + 4:.1f}" text-anchor="end">{esc(_short(y))}</text>')
    if x_ticks:
        for i, label in enumerate(x_ticks):
            parts.append(f'<text x="{sx(i):.1f}" y="{pad_t + ph + 14}" text-anchor="middle">{esc(label)}</text>')
    else:
        for k in range(5):
            x = x0 + (x1 - x0) * k / 4
            parts.append(f'<text x="{sx(x):.1f}" y="{pad_t + ph + 14}" text-anchor="middle">{esc(_short(x))}</text>')
    parts.append(f'<text x="{pad_l + pw / 2:.1f}" y="{height - 4}" text-anchor="middle">{esc(x_label)}</text>')
    parts.append(f'<text x="12" y="{pad_t + ph / 2:.1f}" transform="rotate(-90 12 {pad_t + ph / 2:.1f})" '
                 f'text-anchor="middle">{esc(y_label)}</text>')
    for i, (name, pts) in enumerate(series.items()):
        color = _PALETTE[i % len(_PALETTE)]
        d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{d}"><title>{esc(name)}</title></polyline>')
        if len(pts) <= 30:
            parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"><title>{esc(name)}: {esc(_short(y))}</title></circle>'
                      for x, y in pts]
        ly = pad_t + 12 + 14 * i
        parts.append(f'<rect x="{width - pad_r + 10}" y="{ly - 8}" width="10" height="10" fill="{color}"/>'
                     f'<text x="{width - pad_r + 24}" y="{ly + 1}">{esc(name[:22])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _thin(points: list[tuple[float, float]], limit: int = 400) -> list[tuple[float, float]]:
    if len(points) <= limit:
        return points
    step = (len(points) - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]


def _short(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"
