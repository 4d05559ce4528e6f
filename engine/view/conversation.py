"""The conversation view (one trajectory) and the pair view (chosen and rejected side by side).

A record stores structure (messages, ToolCalls); what a model is trained on is that structure
rendered in a mode (engine/render.py). The views show the rendering in prompt mode (the
default, the paper's: system prompt listing the functions, calls as Python text), in fc mode
(the tools block and native tool calls), or the stored structure, and keep what is not part of
the conversation (hints, the functions offered per turn, verification) in a side column next to
the turn it belongs to.

Pair alignment: both sides are rendered in the chosen mode and their messages aligned with
difflib on (role, content, calls), the equality engine/render.py's ``split_pair`` uses, so
shared messages (the prompt, later user turns) line up across the columns and the first block
that differs is where the sides part.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from typing import Any

from engine.records import Episode, Message, PreferencePair, ToolCall, Trajectory
from engine.render import RenderError, conversation, offered_per_turn, render
from engine.view.markup import details, esc, kv_table, pill, pretty_json, record_link, table, url

MODES = ("prompt", "fc", "stored")
_TURN_ERROR = re.compile(r"^turn (\d+)(?: step \d+)?: ")


# -- rendering a record in a mode ----------------------------------------------------------------------

def rendered(traj: Trajectory, mode: str) -> tuple[list[Message], list[Any], str | None]:
    """(messages, fc tools block, why the mode failed). Stored mode and a record the mode cannot
    render show the record's own messages."""
    if mode != "stored":
        try:
            segments = render(traj, mode)  # type: ignore[arg-type]
            return segments[-1].messages, segments[-1].tools, None
        except RenderError as err:
            return conversation(traj.messages), [], f"cannot be rendered in {mode} mode ({err}); showing the stored messages"
    return conversation(traj.messages), [], None


def turn_starts(traj: Trajectory, mode: str, failed: bool) -> list[int]:
    """Index in the rendered messages where each user turn begins. Prompt mode adds a system
    message first and folds each run of tool messages into one user message; fc and stored
    mode keep the record's messages one to one."""
    msgs = conversation(traj.messages)
    prompt = mode == "prompt" and not failed
    starts, i, out = [], 0, 1 if prompt else 0
    while i < len(msgs):
        if msgs[i].role == "user":
            starts.append(out)
        if prompt and msgs[i].role == "tool":
            while i + 1 < len(msgs) and msgs[i + 1].role == "tool":
                i += 1
        out += 1
        i += 1
    return starts


def _args(arguments: dict[str, Any]) -> str:
    if not arguments:
        return '<span class="muted">(no arguments)</span>'
    return table(["argument", "value"], ([esc(k), f"<code>{esc(json.dumps(v, ensure_ascii=False))}</code>"]
                                         for k, v in arguments.items()))


def call_html(call: ToolCall) -> str:
    ident = f' <span class="muted mono">{esc(call.id)}</span>' if call.id else ""
    return f'<div class="call"><span class="fn mono">{esc(call.name)}</span>{ident}{_args(call.arguments)}</div>'


def _content(text: str | None) -> str:
    if not text:
        return ""
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return f"<pre>{esc(text)}</pre>"
    return pretty_json(value) if isinstance(value, (dict, list)) else f"<pre>{esc(text)}</pre>"


def message_html(msg: Message, index: int, *, tool_results: bool = False) -> str:
    """One message; ``tool_results`` marks a prompt-mode user message that carries tool outputs."""
    role = "tool" if tool_results else msg.role if msg.role in ("system", "user", "assistant", "tool") else "user"
    head = esc(msg.role) + (" · tool results (how prompt mode returns them)" if tool_results else "")
    if msg.role == "tool":
        head += f' · <span class="mono">{esc(msg.name or "")}</span> <span class="muted mono">{esc(msg.tool_call_id or "")}</span>'
    if msg.role == "system":
        body = details(f"system prompt ({len(msg.content or ''):,} characters)", f"<pre>{esc(msg.content or '')}</pre>")
    else:
        body = _content(msg.content) if msg.role == "tool" else (f"<pre>{esc(msg.content)}</pre>" if msg.content else "")
        body += "".join(call_html(c) for c in msg.tool_calls)
        if msg.role == "assistant" and msg.tool_calls:
            head += f" · {len(msg.tool_calls)} call{'s' if len(msg.tool_calls) != 1 else ''}"
    return f'<div class="msg {role}" data-role="{esc(msg.role)}" data-index="{index}"><div class="role">{head}</div>{body}</div>'


def _tools_table(tools: list[Any]) -> str:
    rows = [[f'<span class="mono">{esc(t.name)}</span>', esc(t.toolkit), esc(t.description), pretty_json(t.parameters)]
            for t in tools]
    return table(["function", "toolkit", "description", "parameters"], rows)


def mode_tabs(path: str, record_id: str, mode: str) -> str:
    tabs = []
    for m in MODES:
        label = {"prompt": "prompt mode", "fc": "fc mode", "stored": "stored structure"}[m]
        cls = ' class="on"' if m == mode else ""
        tabs.append(f'<a{cls} href="{url(path, id=record_id, mode=m)}">{esc(label)}</a>')
    return f'<p class="tabs">show as: {"".join(tabs)}</p>'


def verification_html(traj: Trajectory) -> str:
    v = traj.verification
    if v is None:
        return pill("not verified")
    flags = "".join(pill(name.replace("_", " "), "ok" if getattr(v, name) else "bad")
                    for name in ("parsed", "schema_valid", "executed", "state_match", "outputs_match"))
    return pill("passed" if v.ok else "failed", "ok" if v.ok else "bad") + flags


# -- per-turn facts: hints, offered functions, verification ---------------------------------------------

def _calls_by_turn(traj: Trajectory) -> list[list[ToolCall]]:
    turns: list[list[ToolCall]] = []
    for m in conversation(traj.messages):
        if m.role == "user":
            turns.append([])
        elif m.role == "assistant" and turns:
            turns[-1].extend(m.tool_calls)
    return turns


def _key(call: ToolCall) -> tuple[str, str]:
    return call.name, json.dumps(call.arguments, sort_keys=True, default=str)


def _side_panel(traj: Trajectory, episode: Episode | None, turn: int, offered: list[list[Any]] | None,
                calls: list[list[ToolCall]], errors: dict[int, list[str]]) -> str:
    parts = []
    hint = traj.hints[turn] if turn < len(traj.hints) else None
    parts.append(f'<div class="box hint" data-turn="{turn}"><strong>hint, turn {turn}</strong>'
                 + (f"<pre>{esc(hint)}</pre>" if hint is not None else '<div class="muted">no hint</div>') + "</div>")
    if offered is not None and turn < len(offered):
        names = [s.name for s in offered[turn]]
        before = {s.name for s in offered[turn - 1]} if turn else set(names)
        added = [n for n in names if n not in before]
        shown = ", ".join(f"<b>{esc(n)} (added back)</b>" if n in added else esc(n) for n in names)
        parts.append(f'<div class="box offered"><strong>functions offered</strong> ({len(names)}): <span class="mono">{shown}</span></div>')
    checks = []
    if episode is not None and turn < len(episode.turns):
        ref = episode.turns[turn]
        made = calls[turn] if turn < len(calls) else []
        same = Counter(map(_key, made)) == Counter(map(_key, ref.calls))
        listing = "".join(f"<div class=\"mono\">{esc(c.name)}({esc(json.dumps(c.arguments, ensure_ascii=False))})</div>"
                          for c in ref.calls) or '<div class="muted">no call (label ' + esc(ref.label) + ")</div>"
        verdict = pill("calls match the reference" if same else "calls differ from the reference", "ok" if same else "bad")
        checks.append(f'<div data-check="reference">{verdict}'
                      f"{details('reference calls', listing)}</div>")
    for err in errors.get(turn, []):
        checks.append(f'<div class="bad" data-check="error">{esc(err)}</div>')
    if traj.verification is not None and not checks:
        checks.append(f'<div>{pill("no error at this turn", "ok")}</div>')
    parts.append(f'<div class="box verify" data-turn="{turn}"><strong>verification, turn {turn}</strong>{"".join(checks)}</div>')
    return "".join(parts)


def trajectory_body(traj: Trajectory, episode: Episode | None, mode: str) -> str:
    msgs, fc_tools, failed = rendered(traj, mode)
    starts = turn_starts(traj, mode, failed is not None)
    path_id = traj.episode_id.removeprefix("ep-")
    facts = kv_table([
        ("id", f'<span class="mono">{esc(traj.id)}</span>'),
        ("episode", record_link("episodes", traj.episode_id)),
        ("signature path", record_link("paths", path_id)),
        ("polarity", pill(traj.polarity, "ok" if traj.polarity == "positive" else "bad")),
        ("teacher", esc(traj.teacher)),
        ("source", esc(traj.source)),
        ("error types (judge / rule)", "".join(pill(e, "bad") for e in traj.error_types) or '<span class="muted">none</span>'),
        ("verification", verification_html(traj)),
        ("usage", esc(", ".join(f"{k} {v:,}" for k, v in traj.usage.items())) or '<span class="muted">not recorded</span>'),
    ])
    out = [facts, mode_tabs("/record/trajectories", traj.id, mode)]
    if failed:
        out.append(f'<div class="notice">{esc(failed)}</div>')
    out.append(details(f"tools: {len(traj.tools)} functions offered over the conversation", _tools_table(traj.tools)))
    if mode == "fc" and fc_tools:
        out.append(details("fc tools block of the last turn (what the chat template receives)",
                           pretty_json([t.to_openai_tool() for t in fc_tools])))
    errors: dict[int, list[str]] = {}
    general = []
    for err in traj.verification.errors if traj.verification else []:
        m = _TURN_ERROR.match(err)
        if m:
            errors.setdefault(int(m.group(1)), []).append(err)
        else:
            general.append(err)
    if general:
        out.append('<div class="notice"><strong>verification errors</strong>'
                   + "".join(f'<div class="bad" data-check="error">{esc(e)}</div>' for e in general) + "</div>")
    try:
        offered = offered_per_turn(traj.tools, traj.turn_tools, len(starts), traj.id) if traj.turn_tools else None
    except RenderError as err:
        offered = None
        out.append(f'<div class="notice">{esc(err)}</div>')
    calls = _calls_by_turn(traj)
    head = msgs[: starts[0]] if starts else msgs
    out.append('<div class="conversation">')
    out.extend(message_html(m, i) for i, m in enumerate(head))
    prompt = mode == "prompt" and failed is None
    for turn, begin in enumerate(starts):
        end = starts[turn + 1] if turn + 1 < len(starts) else len(msgs)
        left = "".join(message_html(msgs[i], i, tool_results=prompt and i != begin and msgs[i].role == "user")
                       for i in range(begin, end))
        out.append(f'<section class="turn" data-turn="{turn}"><div>{left}</div>'
                   f'<aside class="side">{_side_panel(traj, episode, turn, offered, calls, errors)}</aside></section>')
    out.append("</div>")
    return "".join(out)


# -- pairs -------------------------------------------------------------------------------------------

def _same_key(m: Message) -> tuple[Any, ...]:
    """What engine/render.py's ``_same`` compares: call ids are bookkeeping, not content."""
    return m.role, m.content, json.dumps([(c.name, c.arguments) for c in m.tool_calls], sort_keys=True, default=str)


def _turn_at(starts: list[int], index: int) -> int:
    return max(0, sum(1 for s in starts if s <= index) - 1)


def pair_body(pair: PreferencePair, mode: str) -> str:
    chosen, rejected = pair.chosen, pair.rejected
    c_msgs, _, c_failed = rendered(chosen, mode)
    r_msgs, _, r_failed = rendered(rejected, mode)
    if (c_failed is None) != (r_failed is None):  # align like with like
        c_msgs, r_msgs = conversation(chosen.messages), conversation(rejected.messages)
        c_failed = r_failed = c_failed or r_failed
    starts = turn_starts(chosen, mode, c_failed is not None)
    c_starts, r_starts = set(starts), set(turn_starts(rejected, mode, c_failed is not None))
    prompt = mode == "prompt" and c_failed is None

    def show(msgs: list[Message], i: int, turn_begins: set[int]) -> str:
        return message_html(msgs[i], i, tool_results=prompt and msgs[i].role == "user" and i not in turn_begins)

    v = rejected.verification
    facts = kv_table([
        ("pair", f'<span class="mono">{esc(pair.id)}</span>'),
        ("episode", record_link("episodes", pair.episode_id)),
        ("chosen", record_link("trajectories", chosen.id) + f" · {esc(chosen.teacher)} · " + verification_html(chosen)),
        ("rejected", record_link("trajectories", rejected.id) + f" · {esc(rejected.teacher)} · {esc(rejected.source)} · "
         + verification_html(rejected)),
        ("judge's error types", '<span class="error-types">' + ("".join(pill(e, "bad") for e in rejected.error_types)
                                                                 or '<span class="muted">none given</span>') + "</span>"),
        ("rejected: verification errors", "".join(f'<div class="bad">{esc(e)}</div>' for e in (v.errors if v else []))
         or '<span class="muted">none</span>'),
    ])
    out = [facts, mode_tabs("/record/pairs", pair.id, mode)]
    if c_failed:
        out.append(f'<div class="notice">{esc(c_failed)}</div>')
    ops = difflib.SequenceMatcher(None, [_same_key(m) for m in c_msgs], [_same_key(m) for m in r_msgs], autojunk=False).get_opcodes()
    parted = False
    rows = ['<div class="pair"><div class="head">chosen</div><div class="head">rejected</div>']
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal":
            rows.extend(f'<div class="row-shared" data-shared="{i}">{show(c_msgs, i, c_starts)}</div>' for i in range(i1, i2))
            continue
        mark = ""
        if not parted:
            parted = True
            turn = _turn_at(starts, i1)
            rows.append(f'<div class="row-shared note" id="parting-note">the sides part here: turn {turn}, '
                        f'message {i1} (chosen) / {j1} (rejected)</div>')
            mark = ' id="parting"'
        cls = "parting" if mark else ""
        left = "".join(show(c_msgs, i, c_starts) for i in range(i1, i2)) or '<div class="empty">(nothing here)</div>'
        right = "".join(show(r_msgs, j, r_starts) for j in range(j1, j2)) or '<div class="empty">(nothing here)</div>'
        rows.append(f'<div class="side-chosen {cls}" data-chosen="{i1}-{i2}"{mark}>{left}</div>'
                    f'<div class="side-rejected {cls}" data-rejected="{j1}-{j2}">{right}</div>')
    rows.append("</div>")
    if not parted:
        out.append('<div class="notice">the two sides are identical in this mode</div>')
    out.extend(rows)
    return "".join(out)
