"""A deterministic simulator teacher: the same (messages, tools, seed) always gives the same answer.

It exists so the whole pipeline and the throughput benchmarks run without a model. It is not
a quality claim; it only follows the protocol the real teacher is prompted with:

- the last user message ends with ``[Hint]: [f(a=1), g(b="x")]`` (BFCL python-list syntax):
  emit the next hinted call not yet made since that message, one per step, then a text
  summary of the tool outputs;
- ``[Hint]: miss function`` / ``miss param`` / ``irrelevant``: a text answer saying so;
- ``response_format`` with a JSON schema: a small JSON object valid for that schema;
- tools and no hint: call the first tool (or the one ``tool_choice`` names) with
  schema-valid placeholder arguments, then summarise its output;
- otherwise a short deterministic text.

A script (``sim:FILE.json``) can pin answers: a list of ``{"match": "substring of the last
user message", "content": ..., "tool_calls": [{"name": ..., "arguments": {...}}]}``, first
match wins, anything unmatched falls back to the rules above.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import math
import re
from pathlib import Path
from typing import Any

import msgspec
import orjson

from engine.errors import UserInputError
from engine.records import FunctionSpec, Message, ToolCall
from engine.teacher import Completion, Usage

_HINT = re.compile(r"\[Hint\]\s*:?\s*(.*)\Z", re.S | re.I)
_MISS_FUNC = re.compile(r"^miss(?:ed|ing)?[\s_-]*func", re.I)
_MISS_PARAM = re.compile(r"^miss(?:ed|ing)?[\s_-]*param(?:eter)?s?\s*[:(]?\s*([\w\s,]*)", re.I)
_FORMATS = {"date": "2025-03-14", "date-time": "2025-03-14T09:30:00Z", "time": "09:30:00", "email": "alex@example.com",
            "uri": "https://example.com/item", "uuid": "123e4567-e89b-42d3-a456-426614174000"}
_WORDS = ("alpha", "bravo", "delta", "echo", "lima", "nova", "orion", "pixel", "quartz", "river", "sierra", "tango")


class Hint(msgspec.Struct, kw_only=True, frozen=True):
    """What a ``[Hint]`` block asks for: calls to make, or a labelled non-call answer."""

    label: str = "call"  # call | miss_func | miss_param | irrelevant
    calls: tuple[ToolCall, ...] = ()
    missing: tuple[str, ...] = ()


def parse_hint(text: str) -> Hint | None:
    """The hint at the end of a user message, or None. Parses with ``ast``, never evaluates."""
    m = _HINT.search(text)
    if m is None:
        return None
    body = m.group(1).strip()
    if _MISS_FUNC.match(body):
        return Hint(label="miss_func")
    if (mp := _MISS_PARAM.match(body)) is not None:
        names = tuple(n for n in re.split(r"[\s,]+", mp.group(1)) if n)
        return Hint(label="miss_param", missing=names)
    if body.lower().startswith(("irrelevan", "none", "no function")):
        return Hint(label="irrelevant")
    return Hint(calls=tuple(parse_calls(body)))


def parse_calls(text: str) -> list[ToolCall]:
    """``[f(a=1), mod.g(b=[1, 2])]`` -> ToolCalls. Non-literal values (``x=other(1)``, ``y=unknown``)
    are kept as their source text: a hint may be imperfect, the answer is still data."""
    text = text.strip()
    if not text.startswith("["):
        text = f"[{text}]"
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        return []
    nodes = tree.elts if isinstance(tree, (ast.List, ast.Tuple)) else [tree]
    calls = []
    for node in nodes:
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name is None:
            continue
        args = {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg is not None}
        calls.append(ToolCall(name=name, arguments=args))
    return calls


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return ast.unparse(node)


# -- schema-valid values ----------------------------------------------------------------------


def _digest(*parts: Any) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def example_value(schema: Any, key: str = "", salt: int = 0, root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A value valid for a (JSON Schema) ``schema``: const/enum/default first, required object
    keys only, at least one array item, bounds respected; other values drawn from ``salt``."""
    root = root if root is not None else schema if isinstance(schema, dict) else {}
    if not isinstance(schema, dict) or depth > 12:
        return None
    if "$ref" in schema:
        return example_value(_resolve(root, schema["$ref"]), key, salt, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][_digest(key, salt) % len(schema["enum"])]
    if "default" in schema:
        return schema["default"]
    for combo in ("anyOf", "oneOf", "allOf"):
        if schema.get(combo):
            options = [s for s in schema[combo] if not (isinstance(s, dict) and s.get("type") == "null")]
            return example_value((options or schema[combo])[0], key, salt, root, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    h = _digest(key, salt)
    if kind == "object":
        props = schema.get("properties") or {}
        required = schema.get("required") or []
        return {k: example_value(props.get(k, {}), k, salt, root, depth + 1) for k in required}
    if kind == "array":
        n = max(int(schema.get("minItems", 1)), 1) if schema.get("maxItems", 1) else 0
        return [example_value(schema.get("items", {}), f"{key}[{i}]", salt, root, depth + 1) for i in range(n)]
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer", h)
    if kind == "boolean":
        return bool(h & 1)
    if kind == "null":
        return None
    if schema.get("format") in _FORMATS:
        return _FORMATS[schema["format"]]
    word = f"{_WORDS[h % len(_WORDS)]}_{key}" if key else _WORDS[h % len(_WORDS)]
    min_len = int(schema.get("minLength", 0))
    word = word.ljust(min_len, "x")
    return word[: schema["maxLength"]] if "maxLength" in schema else word


def _number(schema: dict[str, Any], integer: bool, h: int) -> int | float:
    lo = schema.get("minimum", schema["exclusiveMinimum"] + 1 if "exclusiveMinimum" in schema else 0)
    hi = schema.get("maximum", schema["exclusiveMaximum"] - 1 if "exclusiveMaximum" in schema else lo + 100)
    if integer:
        lo, hi = math.ceil(lo), math.floor(hi)
    if hi < lo:  # a range narrower than 1: its middle (exclusive bounds included)
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        high = schema.get("maximum", schema.get("exclusiveMaximum", low))
        return math.ceil(low) if integer else (low + high) / 2
    value = lo + h % (int(hi - lo) + 1)
    return int(value) if integer else float(value)


def _resolve(root: dict[str, Any], ref: str) -> Any:
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node


# -- the teacher ------------------------------------------------------------------------------


class ScriptRule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    match: str  # substring of the last user message
    content: str | None = None
    tool_calls: list[ToolCall] = []


def load_script(path: str | Path) -> list[ScriptRule]:
    path = Path(path)
    try:
        return msgspec.json.decode(path.read_bytes(), type=list[ScriptRule])
    except FileNotFoundError:
        raise UserInputError(f"sim script {str(path)!r} does not exist; pass a JSON file of [{{\"match\": ..., \"content\": ...}}] rules or a seed (sim:42)") from None
    except msgspec.ValidationError as err:
        raise UserInputError(f"sim script {str(path)!r} is invalid ({err}); each rule needs \"match\" and \"content\" and/or \"tool_calls\"") from None
    except msgspec.DecodeError as err:
        raise UserInputError(f"sim script {str(path)!r} is not valid JSON ({err}); fix the file") from None


def count_tokens(text: str | None) -> int:
    """The simulator's token count: whitespace-separated words."""
    return len(text.split()) if text else 0


class SimTeacher:
    """Deterministic teacher; see the module docstring for its rules."""

    def __init__(self, *, seed: int = 0, latency_ms: float = 0.0, script: str | Path | list[ScriptRule] | None = None,
                 model: str = "sim"):
        self.seed = seed
        self.latency_s = latency_ms / 1000.0
        self.rules = load_script(script) if isinstance(script, (str, Path)) else list(script or [])
        self.model = model
        self.name = model if seed == 0 else f"{model}:{seed}"

    def __repr__(self) -> str:
        return f"SimTeacher(name={self.name!r}, latency_ms={self.latency_s * 1000:g}, rules={len(self.rules)})"

    async def chat(self, messages: list[Message], tools: list[FunctionSpec] | None = None, *,
                   tool_choice: str | dict[str, Any] | None = None, response_format: dict[str, Any] | None = None,
                   temperature: float = 0.0, max_tokens: int = 512, seed: int | None = None) -> Completion:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return self.answer(messages, tools, tool_choice=tool_choice, response_format=response_format, seed=seed)

    async def aclose(self) -> None:
        """Nothing to release; present because the Teacher protocol requires it."""

    def answer(self, messages: list[Message], tools: list[FunctionSpec] | None = None, *,
               tool_choice: str | dict[str, Any] | None = None, response_format: dict[str, Any] | None = None,
               seed: int | None = None) -> Completion:
        """The synchronous core of ``chat`` (the loopback server calls it directly)."""
        salt = self.seed * 1_000_003 + (seed or 0)
        last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
        query = (messages[last_user].content or "") if last_user >= 0 else ""
        since = messages[last_user + 1:]
        made = [c for m in since if m.role == "assistant" for c in m.tool_calls]
        msg = self._decide(query, since, made, tools or [], tool_choice, response_format, salt, len(messages))
        prompt_tokens = sum(count_tokens(m.content) for m in messages)
        completion_tokens = count_tokens(msg.content) + sum(1 + len(c.arguments) for c in msg.tool_calls)
        return Completion(message=msg, finish_reason="tool_calls" if msg.tool_calls else "stop",
                          usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens), model=self.model)

    def _decide(self, query: str, since: list[Message], made: list[ToolCall], tools: list[FunctionSpec],
                tool_choice: Any, response_format: dict[str, Any] | None, salt: int, step: int) -> Message:
        for rule in self.rules:
            if rule.match in query:
                return Message(role="assistant", content=rule.content, tool_calls=[_with_id(c, salt, step, i) for i, c in enumerate(rule.tool_calls)])
        if response_format is not None:
            return Message(role="assistant", content=orjson.dumps(_format_value(response_format, query, salt)).decode())
        hint = parse_hint(query)
        if hint is not None and hint.label != "call":
            return Message(role="assistant", content=_label_text(hint))
        if hint is not None and len(made) < len(hint.calls):
            return Message(role="assistant", tool_calls=[_with_id(hint.calls[len(made)], salt, step, 0)])
        forced = _forced_tool(tool_choice, tools)
        if tools and tool_choice != "none" and not made and hint is None:
            spec = forced or tools[0]
            call = ToolCall(name=spec.name, arguments=example_value(spec.parameters, "", salt) or {})
            return Message(role="assistant", tool_calls=[_with_id(call, salt, step, 0)])
        outputs = [m for m in since if m.role == "tool"]
        if outputs:
            return Message(role="assistant", content=_summary(outputs))
        words = " ".join(query.split()[:12])
        return Message(role="assistant", content=f"Here is my answer ({_WORDS[_digest(query, salt) % len(_WORDS)]}): {words}".rstrip(": "))


def _with_id(call: ToolCall, salt: int, step: int, index: int) -> ToolCall:
    return ToolCall(name=call.name, arguments=dict(call.arguments), id=f"call_{_digest(call.name, salt, step, index) % 16**12:012x}")


def _forced_tool(tool_choice: Any, tools: list[FunctionSpec]) -> FunctionSpec | None:
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        return next((t for t in tools if t.name == name), None)
    return None


def _format_value(response_format: dict[str, Any], query: str, salt: int) -> Any:
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        return example_value(spec.get("schema") or {"type": "object"}, "", _digest(query, salt))
    return example_value(response_format.get("schema") or {"type": "object"}, "", _digest(query, salt))


def _label_text(hint: Hint) -> str:
    if hint.label == "miss_func":
        return "I can't do that: none of the available functions provides the functionality this request needs."
    if hint.label == "miss_param":
        what = ", ".join(hint.missing) if hint.missing else "a required value"
        return f"I need more information to do this. Could you tell me the {what}?"
    return "None of the available functions fits this request, so I can't call anything for it."


def _summary(outputs: list[Message]) -> str:
    parts = [f"{m.name or 'the call'} returned {' '.join((m.content or '').split())[:160]}" for m in outputs]
    return "Done. " + "; ".join(parts) + "."
