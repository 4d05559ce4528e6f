"""Reading the pipeline's prompts the way the simulator teacher needs to: sections, function lines
and the clipped JSON snapshots they quote.

The simulator only sees prompt text (and, with structured outputs, a JSON schema), exactly as a
real teacher does. The distill prompts have stable ``[Section]`` headers and one line per
function (``distill.translate.describe``); the JSON they quote (toolkit state, call outputs)
is clipped mid-way, so it is read with a tolerant scanner rather than ``json.loads``.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import msgspec

_HEADER = re.compile(r"^\[([A-Z][\w ]*)\]\s*$", re.M)
_ANSWER = re.compile(r"\n\s*\n(?=Answer with )")
_PARAM_START = re.compile(r"(?:^|, )(\w+): (string|number|integer|boolean|array|object|null|any)\b")
_ENUM = re.compile(r"^ one of (\[.*?\])")
_COLON = re.compile(r"\s*:")
_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|([{}\[\]:,])|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|(true|false|null)')


def sections(text: str) -> dict[str, str]:
    """``[Header]`` -> the text up to the next header or the closing "Answer with ..." paragraph."""
    found = list(_HEADER.finditer(text))
    return {m.group(1): _ANSWER.split(text[m.end(): found[i + 1].start() if i + 1 < len(found) else len(text)])[0].strip()
            for i, m in enumerate(found)}


class Param(msgspec.Struct, kw_only=True):
    name: str
    type: str = "string"
    required: bool = True
    enum: list[Any] = []
    description: str = ""
    schema: dict[str, Any] = {}  # the full JSON schema when the prompt came with one


class Function(msgspec.Struct, kw_only=True):
    name: str
    description: str = ""
    params: list[Param] = []


def parse_functions(block: str) -> list[Function]:
    """``- name(p: type (optional) one of [...] - desc, ...): description`` lines -> Functions."""
    out = []
    for line in block.splitlines():
        line = line.strip()
        m = re.match(r"-\s*([\w.\-]+)\(", line)
        if m is None:
            continue
        close = _closing_paren(line, m.end() - 1)
        inner, rest = line[m.end(): close], line[close + 1:]
        out.append(Function(name=m.group(1), description=rest.lstrip(":").strip(), params=_params(inner)))
    return out


def _closing_paren(line: str, start: int) -> int:
    depth = 0
    for i in range(start, len(line)):
        depth += {"(": 1, ")": -1}.get(line[i], 0)
        if depth == 0 and line.startswith("):", i):
            return i
    return line.rfind(")") if line.rfind(")") > start else len(line)


def _params(inner: str) -> list[Param]:
    starts = list(_PARAM_START.finditer(inner))
    params = []
    for i, m in enumerate(starts):
        tail = inner[m.end(): starts[i + 1].start() if i + 1 < len(starts) else len(inner)]
        required = not tail.startswith(" (optional)")
        tail = tail.removeprefix(" (optional)")
        enum: list[Any] = []
        if (e := _ENUM.match(tail)) is not None:
            try:  # a Python list literal written by describe(); literal_eval never runs code
                enum = list(ast.literal_eval(e.group(1)))
            except (ValueError, SyntaxError):
                enum = []
            tail = tail[e.end():]
        desc = tail.removeprefix(" - ").strip()
        params.append(Param(name=m.group(1), type=m.group(2), required=required, enum=enum, description=desc))
    return params


def with_schema(fn: Function, schema: dict[str, Any]) -> Function:
    """The function's params completed (types, enums, order) from its JSON parameter schema."""
    props = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    known = {p.name: p for p in fn.params}
    params = []
    for name, sub in props.items():
        sub = sub if isinstance(sub, dict) else {}
        kind = sub.get("type", "string")
        kind = next((k for k in kind if k != "null"), "string") if isinstance(kind, list) else kind
        base = known.get(name)
        params.append(Param(name=name, type=kind, required=name in required, enum=list(sub.get("enum") or []),
                            description=sub.get("description") or (base.description if base else ""), schema=sub))
    return Function(name=fn.name, description=fn.description, params=params)


# -- clipped JSON -------------------------------------------------------------------------------


class Facts(msgspec.Struct, kw_only=True):
    """What a (possibly clipped) JSON text states, indexed by name.

    fields: key -> scalar values under it, in text order (``"balance": 12.0``);
    members: container key -> the keys of the object under it (``"accounts": {"ACC-1": ...}``);
    items: container key -> the scalars of the array under it (``"tokens": ["AUTH-1"]``);
    entries: container key -> member key -> the member's scalar value, or its scalar fields and
    its lists of scalars (a note's ``"tags": [...]``: what a removal must pick from);
    closed: containers whose text ended before the clip (absent ids there truly do not exist);
    toolkit: container key -> the top-level key it sits under (``"passwords"`` -> ``"messaging"``)."""

    fields: dict[str, list[Any]] = {}
    members: dict[str, list[str]] = {}
    items: dict[str, list[Any]] = {}
    entries: dict[str, dict[str, Any]] = {}
    closed: set[str] = set()
    toolkit: dict[str, str] = {}

    def field(self, name: str) -> list[Any]:
        return self.fields.get(name, [])


def scan(text: str) -> Facts:
    """Facts from JSON text that may be cut anywhere: tokens are read until the text ends."""
    facts = Facts(fields={}, members={}, items={}, entries={}, closed=set(), toolkit={})
    # Each frame: [kind, its key in the parent, pending key, the member it belongs to (container, key)]
    stack: list[list[Any]] = []
    pos = 0
    while (m := _TOKEN.search(text, pos)) is not None:
        pos = m.end()
        string, punct, number, word = m.groups()
        top = stack[-1] if stack else None
        if punct in ("{", "["):
            # An object inside an array is a record ({"flight_id": ...}), not a keyed collection.
            key = top[2] if top and top[0] == "obj" else (top[1] if top and punct == "[" else None)
            owner = (top[1], top[2]) if top and top[0] == "obj" and top[1] is not None else None
            stack.append(["obj" if punct == "{" else "arr", key, None, owner])
            if len(stack) == 3 and stack[0][0] == "obj" and key is not None and stack[1][1] is not None:
                facts.toolkit.setdefault(key, stack[1][1])
            if top and top[0] == "obj":
                top[2] = None
            continue
        if punct in ("}", "]"):
            if stack and stack[-1][1] is not None:
                facts.closed.add(stack[-1][1])
            if stack:
                stack.pop()
            continue
        if punct is not None:
            continue
        if string is not None:
            try:
                value: Any = msgspec.json.decode(f'"{string}"'.encode())
            except msgspec.DecodeError:
                value = string
        elif number is not None:
            value = float(number) if any(c in number for c in ".eE") else int(number)
        else:
            value = {"true": True, "false": False, "null": None}[word]
        if top is None:
            continue
        if top[0] == "obj" and top[2] is None and string is not None and _COLON.match(text, pos):
            top[2] = value
            if top[1] is not None and len(stack) > 2 - (stack[0][0] == "arr"):
                # (the keys right under a root object name toolkits, not members of a collection)
                facts.members.setdefault(top[1], []).append(value)
            continue
        if top[0] == "arr":
            if top[1] is not None and value is not None:
                facts.items.setdefault(top[1], []).append(value)
                parent = stack[-2] if len(stack) > 1 else None
                if parent is not None and parent[0] == "obj" and parent[3] is not None:  # a member's own list
                    container, member = parent[3]
                    entry = facts.entries.setdefault(container, {}).setdefault(member, {})
                    if isinstance(entry, dict):
                        entry.setdefault(top[1], []).append(value)
            continue
        key, top[2] = top[2], None
        if key is None or value is None:
            continue
        facts.fields.setdefault(key, []).append(value)
        if top[1] is not None:  # a member whose value is a scalar: {"alice": "alice-pass"}
            facts.entries.setdefault(top[1], {})[key] = value
        if top[3] is not None:  # a field of a member: {"ACC-1": {"balance": 3.0}}
            container, member = top[3]
            entry = facts.entries.setdefault(container, {}).setdefault(member, {})
            if isinstance(entry, dict):
                entry[key] = value
    return facts
