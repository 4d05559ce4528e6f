"""Is every argument value of a call grounded in what the model could know?

A value is grounded when the user said it or an earlier tool output holds it. A model that
fills a parameter from nowhere (an invented id, a made-up amount) learns to hallucinate, and
a reference call with such a value teaches the student the same; both are refused.

Rules, per scalar leaf of the arguments:
- booleans, nulls, enum members and the schema's default are choices, not facts: exempt;
- numbers: equal to a number written in the context (``250`` matches ``250.0``; a few
  number words count), or to its percent form;
- strings: a case-insensitive substring of the context; free text (several words) passes
  when most of its words occur in the context (a message body the user dictated loosely).
"""

from __future__ import annotations

import json
import re
from typing import Any

from engine.records import FunctionSpec, Message, ToolCall

_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*(?:\.\d+)?")
_WORD = re.compile(r"[a-z0-9]+")
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
                 "ten": 10, "eleven": 11, "twelve": 12, "a couple": 2, "a pair": 2, "double": 2, "twice": 2}
_FREE_TEXT_SHARE = 0.5


class Context:
    """The texts a call may draw on, prepared once for many lookups."""

    def __init__(self, texts: list[str]):
        self.text = " ".join(" ".join(t.split()) for t in texts).lower()
        self.numbers = {_as_number(n) for n in _NUMBER.findall(self.text)} - {None}
        self.numbers |= {v for w, v in _NUMBER_WORDS.items() if re.search(rf"\b{w}\b", self.text)}
        self.words = set(_WORD.findall(self.text))

    def holds(self, value: Any) -> bool:
        if isinstance(value, bool) or value is None:
            return True
        if isinstance(value, (int, float)):
            return float(value) in self.numbers or float(value) * 100 in self.numbers
        text = " ".join(str(value).split()).lower()
        if not text or text in self.text:
            return True
        words = [w for w in _WORD.findall(text) if len(w) >= 3]
        if len(words) >= 3:
            return sum(w in self.words for w in words) / len(words) >= _FREE_TEXT_SHARE
        return False


def _as_number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def _leaves(value: Any, schema: dict[str, Any], path: str) -> list[tuple[str, Any, dict[str, Any]]]:
    """(where, scalar, its schema) for every scalar under ``value``."""
    if isinstance(value, dict):
        props = schema.get("properties", {}) if isinstance(schema, dict) else {}
        return [leaf for k, v in value.items() for leaf in _leaves(v, props.get(k, {}), f"{path}.{k}")]
    if isinstance(value, list):
        items = schema.get("items", {}) if isinstance(schema, dict) else {}
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, items, f"{path}[{i}]")]
    return [(path, value, schema if isinstance(schema, dict) else {})]


def ungrounded(call: ToolCall, spec: FunctionSpec | None, context: Context) -> list[str]:
    """``name.param=value`` for each argument value of ``call`` the context does not hold."""
    schema = spec.parameters if spec is not None else {}
    out = []
    for where, value, sub in _leaves(call.arguments, schema, call.name):
        if value in (sub.get("enum") or ()) or ("default" in sub and value == sub["default"]):
            continue
        if not context.holds(value):
            out.append(f"{where}={json.dumps(value, ensure_ascii=False)[:60]}")
    return out


def conversation_gaps(messages: list[Message], specs: dict[str, FunctionSpec]) -> list[str]:
    """Ungrounded values of every call in a stored conversation, each checked against the user
    messages and tool outputs that came before it."""
    seen: list[str] = []
    gaps: list[str] = []
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            context = Context(seen)
            for call in m.tool_calls:
                gaps += ungrounded(call, specs.get(call.name), context)
        elif m.role in ("user", "tool") and m.content:
            seen.append(m.content)
    return gaps
