"""A picture of a function's neighbourhood in the dependency graph: PNG (matplotlib) or HTML.

The HTML page is one self-contained file (inline SVG, no scripts, no network): hovering a node
shows its description, hovering an edge the output->parameter fields that made it.
"""

from __future__ import annotations

import difflib
import html
from collections import deque
from pathlib import Path

import networkx as nx

from engine.errors import UserInputError

_PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]
_W, _H, _PAD = 1000, 750, 60


def neighbourhood(graph: nx.DiGraph, node: str, depth: int = 2, max_nodes: int = 80) -> nx.DiGraph:
    """Functions within ``depth`` edges of ``node`` (either direction), nearest first, at most ``max_nodes``."""
    if node not in graph:
        close = difflib.get_close_matches(node, [str(n) for n in graph.nodes], n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "run `magnet graph stats` to list functions"
        raise UserInputError(f"function {node!r} is not in the graph; {hint}")
    if depth < 0 or max_nodes < 1:
        raise UserInputError(f"--depth must be >= 0 and --max-nodes >= 1 (got {depth}, {max_nodes})")
    seen = {node: 0}
    queue = deque([node])
    while queue and len(seen) < max_nodes:
        cur = queue.popleft()
        if seen[cur] == depth:
            continue
        for nxt in (*graph.successors(cur), *graph.predecessors(cur)):
            if nxt not in seen and len(seen) < max_nodes:
                seen[nxt] = seen[cur] + 1
                queue.append(nxt)
    return graph.subgraph(seen).copy()


def _colors(sub: nx.DiGraph) -> dict[str, str]:
    toolkits = sorted({str(sub.nodes[n].get("toolkit", "")) for n in sub})
    by_tk = {tk: _PALETTE[i % len(_PALETTE)] for i, tk in enumerate(toolkits)}
    return {n: by_tk[str(sub.nodes[n].get("toolkit", ""))] for n in sub}


def _layout(sub: nx.DiGraph, center: str) -> dict[str, tuple[float, float]]:
    if len(sub) == 1:
        return {center: (_W / 2, _H / 2)}
    pos = nx.spring_layout(sub, seed=0)
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    sx = (_W - 2 * _PAD) / ((max(xs) - min(xs)) or 1.0)
    sy = (_H - 2 * _PAD) / ((max(ys) - min(ys)) or 1.0)
    return {n: (_PAD + (p[0] - min(xs)) * sx, _PAD + (p[1] - min(ys)) * sy) for n, p in pos.items()}


def render_html(sub: nx.DiGraph, center: str, out: Path) -> Path:
    pos, colors, esc = _layout(sub, center), _colors(sub), html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" font-family="sans-serif" font-size="11">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="18" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#777"/></marker></defs>']
    for u, v, data in sub.edges(data=True):
        (x1, y1), (x2, y2) = pos[u], pos[v]
        tip = f"{u} -> {v}: {', '.join(data.get('fields') or [])} (score {data.get('score', '')}, {data.get('how', '')})"
        parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="#999" stroke-width="1.2" '
                     f'marker-end="url(#arrow)"><title>{esc(tip)}</title></line>')
    for n in sub:
        x, y = pos[n]
        attrs = sub.nodes[n]
        tip = f"{n} [{attrs.get('toolkit', '')}]: {attrs.get('description', '')}"
        ring = ' stroke="#000" stroke-width="3"' if n == center else ' stroke="#fff" stroke-width="1"'
        parts.append(f'<g><title>{esc(tip)}</title><circle cx="{x:.1f}" cy="{y:.1f}" r="{11 if n == center else 8}" '
                     f'fill="{colors[n]}"{ring}/><text x="{x + 12:.1f}" y="{y + 4:.1f}">{esc(str(n))}</text></g>')
    parts.append("</svg>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(center)}: dependency neighbourhood</title></head>"
            f"<body><h3>{esc(center)}: {len(sub)} functions, {sub.number_of_edges()} dependencies "
            f"(arrow: output feeds input; colour: toolkit)</h3>{''.join(parts)}</body></html>")
    out.write_text(page, encoding="utf-8")
    return out


def render_png(sub: nx.DiGraph, center: str, out: Path) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserInputError("PNG output needs matplotlib (pip install matplotlib); or write --out NAME.html") from None
    pos, colors = _layout(sub, center), _colors(sub)
    pos = {n: (x, _H - y) for n, (x, y) in pos.items()}
    fig, ax = plt.subplots(figsize=(12, 9), dpi=100)
    nx.draw_networkx_edges(sub, pos, ax=ax, edge_color="#999", arrows=True, arrowsize=12, node_size=300)
    nx.draw_networkx_nodes(sub, pos, ax=ax, node_color=[colors[n] for n in sub],
                           node_size=[500 if n == center else 250 for n in sub])
    nx.draw_networkx_labels(sub, pos, ax=ax, font_size=8)
    legend = {str(sub.nodes[n].get("toolkit", "")) or "(none)": colors[n] for n in sub}
    ax.legend(handles=[plt.Line2D([], [], marker="o", linestyle="", color=c, label=tk) for tk, c in sorted(legend.items())],
              loc="best", fontsize=8, title="toolkit")
    ax.set_title(f"{center}: {len(sub)} functions, {sub.number_of_edges()} dependencies (arrow: output feeds input)")
    ax.margins(0.08)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def render(graph: nx.DiGraph, node: str, out: str | Path, *, depth: int = 2, max_nodes: int = 80) -> Path:
    """Write the neighbourhood of ``node`` to ``out`` (.png or .html)."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".html", ".htm"):
        raise UserInputError(f"--out {out}: picture must end in .png or .html")
    sub = neighbourhood(graph, node, depth, max_nodes)
    out.parent.mkdir(parents=True, exist_ok=True)
    return render_png(sub, node, out) if suffix == ".png" else render_html(sub, node, out)
