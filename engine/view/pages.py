"""The viewer's pages other than conversations: overview, record lists, paths, episodes, dead
letters, reports. Each function returns the page body as markup; values from the run go through
``esc`` (see markup.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.records import DeadLetter, Episode, PreferencePair, SignaturePath, Trajectory
from engine.view.conversation import call_html
from engine.view.index import FILTERS, KindIndex, Page
from engine.view.markup import bar, details, esc, kv_table, line_chart, link, num, pill, pretty_json, record_link, table, url
from engine.view.runinfo import Report, RunFacts, rounds_table, scores_of

LIST_KINDS = ("trajectories", "pairs", "paths", "episodes", "dead_letters")
FIELD_LABEL = {"path_kind": "path kind", "stratum": "stratum", "polarity": "polarity", "verified": "verification",
               "teacher": "teacher", "source": "source", "toolkit": "toolkit", "function": "function called",
               "error_type": "error type", "stage": "stage", "reason": "reason"}
_MAX_OPTIONS = 300  # values listed in one filter menu (the most frequent)
_SNIPPET = 140


def _snippet(text: Any, limit: int = _SNIPPET) -> str:
    text = " ".join(str(text or "").split())
    return esc(text if len(text) <= limit else text[: limit - 1] + "…")


def _first_query(messages: list[Any]) -> str:
    return next((m.content or "" for m in messages if m.role == "user"), "")


# -- overview ----------------------------------------------------------------------------------------

def overview(facts: RunFacts, run_dir: Path, indexes: dict[str, KindIndex]) -> str:
    m, s = facts.manifest or {}, facts.summary or {}
    out = []
    if facts.live:
        out.append('<div class="notice" id="live"><strong>live:</strong> a writer holds this run; counts below come from '
                   "the shards as they grow, and this page reloads every 5 s.</div>")
    if facts.manifest_note:
        out.append(f'<div class="notice">manifest.json {esc(facts.manifest_note)}</div>')
    code = m.get("code_version") or {}
    out.append(kv_table([
        ("run folder", f'<span class="mono">{esc(run_dir)}</span>'),
        ("state", pill("being written", "bad") if facts.live else pill("not being written", "ok")),
        ("created / updated", esc(f"{m.get('created', '?')} / {m.get('updated', '?')}")),
        ("code version", esc(f"{code.get('package', '')} {code.get('version') or ''} {(code.get('git_commit') or '')[:12]}".strip())),
        ("config fingerprint", f'<span class="mono">{esc(m.get("config_fingerprint", ""))}</span>'),
        ("teacher", esc(s.get("teacher") or (m.get("config") or {}).get("teacher", ""))),
    ]))
    counts, sizes = m.get("counts") or {}, m.get("bytes") or {}
    rows = []
    for kind in (*LIST_KINDS, "done"):
        ix = indexes.get(kind)
        live = (f"{ix.n:,}" + ("" if ix.complete else " (indexing…)")) if ix else '<span class="muted">not indexed yet</span>'
        name = link(f"/list/{kind}", kind) if kind in LIST_KINDS else esc(kind)
        rows.append([name, f'<span data-count="{esc(kind)}">{num(counts.get(kind, ""))}</span>', live, num(sizes.get(kind, ""))])
    out.append("<h2>records</h2>" + table(["kind", "in manifest", "in shards now", "bytes"], rows, numeric=(1, 2, 3)))
    if facts.live:
        out.append(_live_progress(m, indexes))
    out.append(_generate_summary(s, facts.summary_note))
    card = s.get("data_card") if isinstance(s.get("data_card"), dict) else None
    if card:
        out.append(_data_card(card))
    out.append(_dead_letter_reasons(s))
    damage = [(kind, c) for kind, ix in indexes.items() for c in ix.damage]
    if damage:
        out.append("<h2>damaged spans skipped</h2>" + table(["kind", "file", "offset", "bytes", "reason"],
                                                          ([esc(k), esc(c.path), num(c.offset), num(c.length), esc(c.reason)] for k, c in damage)))
    config = m.get("config")
    if isinstance(config, dict):
        out.append("<h2>config</h2>" + details(f"{len(config)} settings (secrets removed by the store)", table(
            ["setting", "value"], ([esc(k), f"<code>{esc(json.dumps(v, ensure_ascii=False, default=str))}</code>"]
                                   for k, v in sorted(config.items())))))
    return "".join(out)


def _live_progress(m: dict[str, Any], indexes: dict[str, KindIndex]) -> str:
    traj, done, dead = indexes.get("trajectories"), indexes.get("done"), indexes.get("dead_letters")
    positives = traj.count({"polarity": "positive"}) if traj else 0
    target = (m.get("config") or {}).get("paths") or 0
    rows = [("positives stored", f"{positives:,}" + (f" of {target:,} wanted " + bar(positives / target) if target else "")),
            ("work items finished", f"{done.n:,}" if done else "?"), ("dead letters", f"{dead.n:,}" if dead else "?")]
    return '<h2>progress</h2><div id="progress">' + kv_table(rows) + "</div>"


def _generate_summary(s: dict[str, Any], note: str | None) -> str:
    if not s:
        return (f'<h2>generation</h2><p class="muted">no generate_summary.json {esc(note or "")} '
                "(a run still going, or not made by `magnet generate`)</p>")
    keys = [("positives", "positives"), ("pairs", "pairs"), ("negatives stored", "negatives_stored"),
            ("dead letters", "dead_letters"), ("paths finished / planned", None), ("yield of positives per path", "yield_positive"),
            ("teacher calls", "teacher_calls"), ("prompt tokens", "prompt_tokens"), ("completion tokens", "completion_tokens"),
            ("cost estimate (USD)", "cost_usd_estimate"), ("wall time (s)", "wall_s"), ("negatives", "negatives"),
            ("interrupted", "interrupted")]
    rows = []
    for label, key in keys:
        if key is None:
            rows.append((label, f"{num(s.get('paths_finished', '?'))} / {num(s.get('paths_planned', '?'))}"))
        elif key in s:
            rows.append((label, f'<span data-summary="{esc(key)}">{num(s[key], 4 if key == "cost_usd_estimate" else 2)}</span>'))
    return "<h2>generation: tokens, cost, yield</h2>" + kv_table(rows)


def _data_card(card: dict[str, Any]) -> str:
    out = ["<h2>data card</h2>"]
    strata = card.get("strata") or {}
    if isinstance(strata, dict) and strata:
        rows = []
        for name, row in strata.items():
            if not isinstance(row, dict):
                continue
            y = row.get("yield") if isinstance(row.get("yield"), (int, float)) else 0.0
            died = ", ".join(f"{esc(k)} {num(v)}" for k, v in (row.get("died") or {}).items()) or '<span class="muted">-</span>'
            rows.append([link("/list/trajectories", name, stratum=name), num(row.get("target", "")), num(row.get("drawn", "")),
                         num(row.get("stored", "")), bar(y, 100) + f"{100 * y:.0f}%", died,
                         pill("filled", "ok") if row.get("filled") else pill("unfilled", "bad")])
        out.append('<h3>yield per stratum (where paths died)</h3><div id="strata">'
                   + table(["stratum", "target", "drawn", "stored", "yield", "died at", ""], rows, numeric=(1, 2, 3)) + "</div>")
    mixture = card.get("mixture_pct") or {}
    if isinstance(mixture, dict) and mixture:
        top = max([1.0] + [float(v.get(k) or 0) for v in mixture.values() if isinstance(v, dict) for k in ("target", "positives", "pairs")])
        rows = []
        for name, row in mixture.items():
            if not isinstance(row, dict):
                continue
            stored, target = float(row.get("positives") or 0), float(row.get("target") or 0)
            rows.append([esc(name), bar(target / top, 200, cls="bar target") + f"{target:.1f}%",
                         bar(stored / top, 200) + f"{stored:.1f}%", f"{float(row.get('pairs') or 0):.1f}%"])
        out.append('<h3>path mixture: stored positives against the target</h3><div id="mixture">'
                   + table(["stratum", "target", "stored positives", "pairs"], rows) + "</div>")
    kinds = card.get("kinds") or {}
    if isinstance(kinds, dict) and kinds:
        cols = sorted({k for v in kinds.values() if isinstance(v, dict) for k in v})
        out.append("<h3>per positive, by path kind</h3>" + table(
            ["kind", *[c.replace("_", " ") for c in cols]],
            ([link("/list/trajectories", k, path_kind=k)] + [num(v.get(c, "")) for c in cols] for k, v in kinds.items() if isinstance(v, dict)),
            numeric=tuple(range(1, len(cols) + 1))))
    if card.get("unfilled"):
        out.append(f'<div class="notice">strata short of their target: {esc(", ".join(map(str, card["unfilled"])))}</div>')
    rest = {k: v for k, v in card.items() if k not in ("strata", "mixture_pct", "kinds", "unfilled")}
    if rest:
        out.append(details("rest of the data card", pretty_json(rest)))
    return "".join(out)


def _dead_letter_reasons(s: dict[str, Any]) -> str:
    reasons = s.get("dead_letters_by_reason") or {}
    if not isinstance(reasons, dict) or not reasons:
        return ""
    rows = []
    for key, n in sorted(reasons.items(), key=lambda kv: -kv[1] if isinstance(kv[1], int) else 0):
        stage, _, reason = str(key).partition(": ")
        rows.append([link("/list/dead_letters", stage, stage=stage), link("/list/dead_letters", reason, stage=stage, reason=reason), num(n)])
    return '<h2>dead letters by reason</h2><div id="dead-reasons">' + table(["stage", "reason", "count"], rows, numeric=(2,)) + "</div>"


# -- record lists ------------------------------------------------------------------------------------

def filter_form(kind: str, ix: KindIndex, filters: dict[str, str], text: str) -> str:
    parts = [f'<form class="filters" method="get" action="{url(f"/list/{kind}")}">']
    for field in FILTERS[kind]:
        values = ix.values(field)[:_MAX_OPTIONS]
        chosen = filters.get(field, "")
        if chosen and chosen not in {v for v, _ in values}:
            values.append((chosen, 0))
        options = ['<option value="">(any)</option>'] + [
            f'<option value="{esc(v)}"{" selected" if v == chosen else ""}>{esc(v[:70])} ({c:,})</option>' for v, c in values]
        parts.append(f'<label>{esc(FIELD_LABEL.get(field, field))}<select name="{esc(field)}">{"".join(options)}</select></label>')
    parts.append(f'<label>text contains<input type="search" name="q" value="{esc(text)}" size="24"></label>'
                 f'<button type="submit">show</button> {link(f"/list/{kind}", "clear")}</form>')
    return "".join(parts)


def _row(kind: str, rec: Any) -> list[str]:
    if isinstance(rec, Trajectory):
        v = rec.verification
        calls = sum(len(m.tool_calls) for m in rec.messages)
        return [record_link("trajectories", rec.id), esc(rec.polarity),
                pill("unverified") if v is None else pill("passed" if v.ok else "failed", "ok" if v.ok else "bad"),
                esc(rec.teacher), esc(rec.source), _snippet(_first_query(rec.messages)),
                num(sum(m.role == "user" for m in rec.messages)), num(calls)]
    if isinstance(rec, PreferencePair):
        return [record_link("pairs", rec.id), esc(rec.rejected.source), "".join(pill(e, "bad") for e in rec.rejected.error_types),
                _snippet(_first_query(rec.chosen.messages)), num(sum(m.role == "user" for m in rec.chosen.messages))]
    if isinstance(rec, SignaturePath):
        turns = " | ".join(", ".join(t.functions) + ("" if t.label == "call" else f" [{t.label}]") for t in rec.turns)
        return [record_link("paths", rec.id), esc(rec.kind), _snippet(turns, 200), esc(", ".join(rec.ops)), esc(", ".join(rec.toolkits))]
    if isinstance(rec, Episode):
        return [record_link("episodes", rec.id), esc(rec.kind), _snippet(rec.turns[0].query if rec.turns else ""),
                num(len(rec.turns)), num(sum(len(t.calls) for t in rec.turns))]
    if isinstance(rec, DeadLetter):
        return [record_link("dead_letters", rec.id), esc(rec.stage), _snippet(rec.error, 220), num(rec.attempts)]
    return [esc(getattr(rec, "id", ""))]


_HEADERS = {
    "trajectories": (["id", "polarity", "verification", "teacher", "source", "first user turn", "turns", "calls"], (6, 7)),
    "pairs": (["id", "rejected made by", "judge's error types", "first user turn", "turns"], (4,)),
    "paths": (["id", "kind", "turns: functions", "ops", "toolkits"], ()),
    "episodes": (["id", "kind", "first query", "turns", "reference calls"], (3, 4)),
    "dead_letters": (["id", "stage", "error", "attempts"], (3,)),
}


def record_list(kind: str, ix: KindIndex, filters: dict[str, str], text: str, start: int, pg: Page, records: list[Any]) -> str:
    out = [filter_form(kind, ix, filters, text)]
    if text:
        total = f"{len(records)} shown; text search pages through the records in order"
    elif ix.complete:
        total = f"{ix.count(filters):,} matching of {ix.n:,}"
    else:
        total = f"{ix.count(filters):,} matching among the first {ix.n:,} indexed (indexing continues; reload for more)"
    out.append(f'<p class="muted" id="total">{esc(total)}</p>')
    headers, numeric = _HEADERS[kind]
    rows = [[f'<span class="muted">{p:,}</span>', *_row(kind, r)] for p, r in zip(pg.positions, records)]
    out.append(table(["#", *headers], rows, cls="records", numeric=(0, *(n + 1 for n in numeric))) if rows
               else '<p class="empty" id="no-match">no record matches</p>')
    query = {**filters, "q": text}
    pager = []
    if start > 0:
        pager.append(f'<a id="first" href="{url(f"/list/{kind}", **query)}">« first</a>')
    if pg.prev_start is not None:
        pager.append(f'<a id="prev" href="{url(f"/list/{kind}", **query, start=pg.prev_start)}">‹ previous</a>')
    if pg.search_stopped_at is not None:
        pager.append(f'<a id="next" href="{url(f"/list/{kind}", **query, start=pg.search_stopped_at)}">search on from record '
                     f"{pg.search_stopped_at:,} ›</a>")
    elif pg.next_start is not None:
        pager.append(f'<a id="next" href="{url(f"/list/{kind}", **query, start=pg.next_start)}">next ›</a>')
    out.append(f'<div class="pager">{"".join(pager)}</div>')
    return "".join(out)


# -- single records ----------------------------------------------------------------------------------

def path_svg(path: SignaturePath, graph: Any) -> str:
    """The path as a picture: one column per turn, its functions in call order, arrows along the walk
    (hover an arrow: the output->parameter fields of the graph edge, when the graph has one)."""
    col_w, row_h, box_w, box_h = 210, 46, 180, 30
    height = 40 + row_h * max([len(t.functions) for t in path.turns] + [1])
    width = 20 + col_w * max(len(path.turns), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" id="path-svg" role="img">',
             '<defs><marker id="arr" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto">'
             '<path d="M0,0 L10,5 L0,10 z" fill="#777"/></marker></defs>']
    centers = []
    for t, turn in enumerate(path.turns):
        x = 10 + t * col_w
        parts.append(f'<text x="{x}" y="14">turn {t} · {esc(turn.label)}'
                     f'{esc(" (missing: " + ", ".join(turn.missing) + ")") if turn.missing else ""}</text>')
        for k, fn in enumerate(turn.functions):
            y = 24 + k * row_h
            missing = fn in turn.missing
            parts.append(f'<g data-function="{esc(fn)}"><title>{esc(fn)}</title><rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="5" '
                         f'fill="{"#fbe0de" if missing else "#e8eefb"}" stroke="#4e79a7"/>'
                         f'<text x="{x + 8}" y="{y + 19}">{esc(fn[:26])}</text></g>')
            centers.append((fn, x, y))
    for (a, xa, ya), (b, xb, yb) in zip(centers, centers[1:]):
        fields = ""
        if graph is not None and graph.has_edge(a, b):
            fields = ", ".join(graph.edges[a, b].get("fields") or [])
        x1, y1 = (xa + box_w, ya + box_h / 2) if xb > xa else (xa + box_w / 2, ya + box_h)
        x2, y2 = (xb, yb + box_h / 2) if xb > xa else (xb + box_w / 2, yb)
        parts.append(f'<line x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" y2="{y2:.0f}" stroke="#777" marker-end="url(#arr)">'
                     f"<title>{esc(a)} → {esc(b)}{esc(': ' + fields) if fields else ''}</title></line>")
    parts.append("</svg>")
    return "".join(parts)


def path_body(path: SignaturePath, graph: Any, graph_note: str | None) -> str:
    ep = f"ep-{path.id}"
    out = [kv_table([
        ("id", f'<span class="mono">{esc(path.id)}</span>'), ("kind", esc(path.kind)), ("ops", esc(", ".join(path.ops) or "-")),
        ("toolkits", esc(", ".join(path.toolkits))), ("distractors", esc(", ".join(path.distractors) or "-")), ("seed", num(path.seed)),
        ("made from it", record_link("episodes", ep, "episode") + " · " + link("/list/trajectories", "trajectories", q=ep)
         + " · " + link("/list/pairs", "pairs", q=ep) + " · " + link("/list/dead_letters", "dead letters", q=path.id)),
    ])]
    out.append("<h2>turns</h2>" + table(["turn", "label", "functions (in order)", "missing"],
                                        ([num(i), esc(t.label), f'<span class="mono">{esc(", ".join(t.functions))}</span>',
                                          esc(", ".join(t.missing))] for i, t in enumerate(path.turns))))
    out.append("<h2>the path</h2>" + path_svg(path, graph))
    out.append("<h2>its neighbourhood in the dependency graph</h2>")
    if graph is None:
        out.append(f'<div class="notice">no graph picture: {esc(graph_note or "graph.json.gz not found")}</div>')
    else:
        out.append(f'<p class="muted">functions within reach of the path\'s functions (arrow: an output feeds an input; colour: '
                   f'toolkit; ringed: the path\'s first function)</p><img class="graph" id="graph-img" alt="dependency graph '
                   f'neighbourhood of {esc(path.id)}" src="{url("/graph/path.png", id=path.id)}">')
    return "".join(out)


def episode_body(ep: Episode) -> str:
    out = [kv_table([
        ("id", f'<span class="mono">{esc(ep.id)}</span>'), ("kind", esc(ep.kind)), ("signature path", record_link("paths", ep.path_id)),
        ("toolkits", esc(", ".join(ep.toolkits))), ("records of it", link("/list/trajectories", "trajectories", q=ep.id)
                                                     + " · " + link("/list/pairs", "pairs", q=ep.id)),
    ])]
    out.append(details(f"tools: {len(ep.tools)} functions", table(
        ["function", "toolkit", "description"], ([esc(t.name), esc(t.toolkit), esc(t.description)] for t in ep.tools))))
    out.append(details("initial toolkit state", pretty_json(ep.initial_state)))
    for i, t in enumerate(ep.turns):
        calls = "".join(call_html(c) for c in t.calls) or '<span class="muted">no reference call</span>'
        outputs = "".join(pretty_json(o) for o in t.outputs)
        out.append(f'<h3>turn {i} · {esc(t.label)}{esc(" (missing: " + ", ".join(t.missing) + ")") if t.missing else ""}</h3>'
                   f'<div class="msg user"><div class="role">query</div><pre>{esc(t.query)}</pre></div>'
                   f"<div>{calls}</div>" + (details("reference outputs", outputs) if outputs else ""))
    return "".join(out)


def dead_letter_body(dl: DeadLetter, reason: str) -> str:
    item = dl.item
    item_id = item.get("id") if isinstance(item, dict) else None
    out = [kv_table([
        ("id", f'<span class="mono">{esc(dl.id)}</span>'), ("stage", esc(dl.stage)), ("reason (grouped)", esc(reason)),
        ("attempts", num(dl.attempts)),
        ("work item", record_link("paths", item_id) if isinstance(item_id, str) and dl.stage in ("translate", "verify")
         else f'<span class="mono">{esc(dl.item_id)}</span>'),
    ])]
    out.append('<h2>error (the model text quoted as stored)</h2>'
               f'<blockquote class="msg" id="dl-error"><pre>{esc(dl.error)}</pre></blockquote>')
    out.append("<h2>work item</h2>" + pretty_json(item))
    return "".join(out)


# -- reports -----------------------------------------------------------------------------------------

def reports_body(reports: list[Report], roots: list[Path]) -> str:
    where = ", ".join(str(r) for r in roots)
    if not reports:
        return (f'<p class="empty" id="no-reports">no reports found under {esc(where)}. Reports are the report.json of '
                "`magnet eval bfcl` / `magnet eval paths`, the rounds.json of `magnet improve` and the metrics.jsonl of "
                "`magnet train`; point at their folders with `magnet view RUN --reports DIR ...`.</p>")
    out = [f'<p class="muted">searched: {esc(where)}</p>']
    for r in reports:
        if r.note and r.data is None:
            out.append(f'<div class="notice">{esc(r.path)} {esc(r.note)}</div>')
    rounds = rounds_table(reports)
    if rounds:
        cats = sorted({c for _, s in rounds for c in s})
        series = {c: [(i, s[c]) for i, (_, s) in enumerate(rounds) if c in s] for c in cats}
        top = max([v for _, s in rounds for v in s.values()] + [0.0])
        out.append('<h2>self-improvement rounds: score per category</h2><div id="rounds-chart">'
                   + line_chart(series, x_label="round", y_label="score", x_ticks=[label for label, _ in rounds],
                                y_range=(0.0, 1.0) if top <= 1 else None) + "</div>")
        out.append(table(["category", *[f"round {label}" for label, _ in rounds]],
                         ([esc(c)] + [num(s.get(c, "")) if c in s else "" for _, s in rounds] for c in cats),
                         numeric=tuple(range(1, len(rounds) + 1))))
    for r in reports:
        if r.data is None:
            continue
        if r.kind == "bfcl":
            out.append(_bfcl(r))
        elif r.kind == "metrics":
            out.append(_metrics(r))
        elif r.kind == "eval":
            out.append(_eval(r))
    return "".join(out)


def _bfcl(r: Report) -> str:
    d = r.data
    out = [f'<h2 class="report">BFCL: {esc(d.get("model", "?"))} ({esc(d.get("mode", "?"))} mode)</h2>'
           f'<p class="muted mono">{esc(r.path)}</p>']
    cov = d.get("coverage") or {}
    if cov.get("partial"):
        out.append(f'<div class="notice">partial run: not run {esc(", ".join(cov.get("not_run") or []) or "-")}</div>')
    cols = d.get("columns") or {}
    out.append(table(list(cols), [[_pct(v) for v in cols.values()]], numeric=tuple(range(len(cols)))))
    cats = d.get("categories") or {}
    rows = []
    for name, v in cats.items():
        if isinstance(v, dict):
            acc = v.get("accuracy")
            rows.append([esc(name), num(v.get("correct_count", "")), num(v.get("total_count", "")),
                         (bar(acc, 120) if isinstance(acc, (int, float)) else "") + _pct(acc)])
    out.append(table(["category", "correct", "total", "accuracy"], rows, numeric=(1, 2)))
    bad = [e for e in d.get("entries") or [] if isinstance(e, dict) and not e.get("valid", True)]
    if bad:
        out.append(details(f"{len(bad)} failed entries (first 50, raw model output quoted)", table(
            ["id", "error type", "error", "raw output"],
            ([esc(e.get("id", "")), esc(e.get("error_type", "")), _snippet(json.dumps(e.get("error"), default=str), 200),
              f"<code>{_snippet(json.dumps(e.get('result'), default=str), 300)}</code>"] for e in bad[:50]))))
    return "".join(out)


def _score_cell(v: Any) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1:
        return bar(v, 120) + num(float(v), 4)
    return num(v, 4)


def _pct(v: Any) -> str:
    return f"{100 * v:.2f}%" if isinstance(v, (int, float)) and not isinstance(v, bool) else esc(v)


def _metrics(r: Report) -> str:
    rows = r.data
    out = [f'<h2 class="report">training metrics</h2><p class="muted mono">{esc(r.path)}'
           + (f" · {esc(r.note)}" if r.note else "") + "</p>"]
    keys = [k for k in ("loss", "reward_margin", "reward_accuracy") if any(k in x for x in rows)]
    charts = []
    for k in keys:
        pts = [(float(x["step"]), float(x[k])) for x in rows if isinstance(x.get(k), (int, float))]
        charts.append(f'<div class="metric-chart" data-metric="{esc(k)}">'
                      + line_chart({k.replace("_", " "): pts}, x_label="optimizer step", y_label=k.replace("_", " "), width=460) + "</div>")
    out.append('<div style="display:flex;flex-wrap:wrap;gap:12px">' + "".join(charts) + "</div>")
    if rows:
        out.append(details("last logged step", pretty_json(rows[-1])))
    return "".join(out)


def _eval(r: Report) -> str:
    d = r.data
    title = d.get("model") or d.get("name") or r.path.parent.name
    out = [f'<h2 class="report">evaluation: {esc(title)}</h2><p class="muted mono">{esc(r.path)}</p>']
    scalars = [(k, v) for k, v in d.items() if isinstance(v, (str, int, float, bool)) and len(str(v)) < 200]
    if scalars:
        out.append(kv_table((k, num(v, 4)) for k, v in scalars))
    overall = d.get("overall")
    if isinstance(overall, dict):
        out.append("<h3>overall</h3>" + kv_table((k, num(v, 4)) for k, v in overall.items() if not isinstance(v, (dict, list))))
    for key, label in (("by_kind", "path kind"), ("by_toolkit", "toolkit")):  # `magnet eval paths`
        block = d.get(key)
        if isinstance(block, dict) and block:
            out.append(table([label, "episodes", "passed", "accuracy", "failure reasons"], (
                [esc(k), num(v.get("n", "")), num(v.get("passed", "")), _score_cell(v.get("accuracy")),
                 esc(", ".join(f"{r} {n}" for r, n in (v.get("reasons") or {}).items()))]
                for k, v in block.items() if isinstance(v, dict)), numeric=(1, 2)))
    scores = scores_of(d)
    if scores and not isinstance(d.get("by_kind"), dict):
        out.append(table(["category", "score"], ([esc(k), _score_cell(v)] for k, v in scores.items())))
    failures = [f for f in d.get("failures") or [] if isinstance(f, dict)]
    if failures:
        out.append(details(f"{len(failures)} failed episodes: the first wrong step (first 50)", table(
            ["episode", "kind", "reason", "turn", "expected", "got"],
            ([esc(f.get("episode", "")), esc(f.get("kind", "")), esc(f.get("reason", "")), esc(f.get("turn", "")),
              f"<code>{_snippet(f.get('expected'), 300)}</code>", f"<code>{_snippet(f.get('got'), 300)}</code>"]
             for f in failures[:50]))))
    text = json.dumps(d, indent=2, ensure_ascii=False, default=str)
    out.append(details("the whole report", f"<pre>{esc(text[:200_000])}</pre>" + ('<p class="muted">(cut at 200,000 characters)</p>'
                                                                                 if len(text) > 200_000 else "")))
    return "".join(out)
