"""Function calls out of whatever a model wrote, without ever executing its text.

Accepted forms, tried in this order:
- OpenAI ``tool_calls`` already on the message (the HTTP teacher decoded them);
- Hermes ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks (one or many);
- BFCL's python-list syntax ``[f(a=1), g(b="x", c=[1, 2])]``, parsed with ``ast`` and read
  literal by literal (a call nested as an argument value is rejected: BFCL answers are flat);
- JSON, bare, in a code fence or inside prose: ``{"name": ..., "arguments": ...}`` or a list.

Text with no call in it is a plain answer (empty list). Text that tries to call and fails
raises ``BadAnswer`` quoting the text, so the caller can retry and then dead-letter it.
"""

from __future__ import annotations

import ast
import json
import math
import re
from typing import Any

from engine.errors import BadAnswer
from engine.records import FunctionSpec, Message, ToolCall
from graph.schema import ArgumentError, validate_arguments

_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)(?:```|$)", re.S)
# A BFCL list starts with `[name(` ; a bare call is `name(...)` filling the whole text.
# No space before "(" so prose such as "[see (1)]" or "Sure (done)" stays text.
_BFCL_START = re.compile(r"\[\s*[A-Za-z_][\w.]*\(")
_BARE_CALL = re.compile(r"^[A-Za-z_][\w.]*\((?:\s*\)|.*=.*\))$", re.S)
_JSON_CALL_HINT = re.compile(r"\"(?:arguments|parameters)\"\s*:")
_ARG_KEYS = ("arguments", "parameters", "args")
_QUOTE_LIMIT = 400


def quote(text: str) -> str:
    """The bad text as it goes into an error message: one line, bounded."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= _QUOTE_LIMIT else flat[: _QUOTE_LIMIT - 3] + "..."


def _bad(reason: str, text: str) -> BadAnswer:
    return BadAnswer(f"{reason}: {quote(text)!r}", text=text)


# ---------------------------------------------------------------- BFCL python-list syntax

_NAME_LITERALS = {"true": True, "false": False, "null": None, "none": None, "True": True, "False": False, "None": None}


def _literal(node: ast.AST, text: str) -> Any:
    """A literal value from an AST node; anything else (a call, a name, an operator) is rejected."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, (str, int, float, bool)) or node.value is None:
            return node.value
        raise _bad(f"unsupported literal {type(node.value).__name__}", text)
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [_literal(e, text) for e in node.elts]
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise _bad("dict unpacking (**) in an argument", text)
        out = {}
        for k, v in zip(node.keys, node.values):
            key = _literal(k, text)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise _bad("unhashable dict key", text)
            out[str(key) if not isinstance(key, str) else key] = _literal(v, text)
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand, text)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad("sign applied to a non-number", text)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Name) and node.id in _NAME_LITERALS:
        return _NAME_LITERALS[node.id]
    if isinstance(node, ast.Call):
        raise _bad("a call nested as an argument value; make the calls one at a time", text)
    raise _bad(f"argument is not a literal ({type(node).__name__})", text)


def _dotted(node: ast.AST, text: str) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value, text)}.{node.attr}"
    raise _bad("call target is not a function name", text)


def _positional(name: str, args: list[Any], specs: dict[str, FunctionSpec] | None, text: str) -> dict[str, Any]:
    """Map positional arguments onto the schema's parameter order, the only safe reading of them."""
    spec = (specs or {}).get(name)
    if spec is None:
        raise _bad(f"positional arguments to {name!r}, whose parameters are unknown; use keyword arguments", text)
    params = list(spec.parameters.get("properties", {}))
    if len(args) > len(params):
        raise _bad(f"{name!r} takes at most {len(params)} arguments, got {len(args)} positional", text)
    return dict(zip(params, args))


def parse_bfcl(text: str, specs: dict[str, FunctionSpec] | None = None) -> list[ToolCall]:
    """``[f(a=1), g(b="x")]`` (or one bare ``f(a=1)``) -> calls; BadAnswer if it is not that."""
    src = text.strip()
    try:
        tree = ast.parse(src, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise _bad("not valid python-list call syntax", text) from None
    body = tree.body
    items = body.elts if isinstance(body, (ast.List, ast.Tuple)) else [body]
    calls = []
    for item in items:
        if not isinstance(item, ast.Call):
            raise _bad("list item is not a function call", text)
        name = _dotted(item.func, text)
        if any(isinstance(a, ast.Starred) for a in item.args) or any(k.arg is None for k in item.keywords):
            raise _bad("star arguments in a call", text)
        arguments = _positional(name, [_literal(a, text) for a in item.args], specs, text) if item.args else {}
        for kw in item.keywords:
            if kw.arg in arguments:
                raise _bad(f"argument {kw.arg!r} given twice", text)
            arguments[kw.arg] = _literal(kw.value, text)
        calls.append(ToolCall(name=name, arguments=arguments))
    return calls


# ---------------------------------------------------------------- JSON forms


def _from_json_obj(obj: Any, text: str) -> list[ToolCall]:
    """One call object, a list of them, or an OpenAI-ish wrapper -> calls."""
    if isinstance(obj, list):
        return [c for o in obj for c in _from_json_obj(o, text)]
    if not isinstance(obj, dict):
        raise _bad("JSON call is not an object", text)
    for wrapper in ("tool_calls", "calls", "function_calls"):
        if isinstance(obj.get(wrapper), list):
            return _from_json_obj(obj[wrapper], text)
    if isinstance(obj.get("function"), dict):  # {"type": "function", "function": {...}}
        return _from_json_obj(obj["function"], text)
    name = obj.get("name", obj.get("function"))
    if not isinstance(name, str) or not name:
        raise _bad("JSON call without a function name", text)
    args = obj.get("arguments", obj.get("parameters", obj.get("args", {})))
    if isinstance(args, str):  # OpenAI's wire form: arguments is a JSON string
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            raise _bad(f"arguments of {name!r} are not valid JSON", text) from None
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise _bad(f"arguments of {name!r} are not an object", text)
    return [ToolCall(name=name, arguments=args)]


def _json_values(text: str) -> list[Any]:
    """Every top-level JSON object or array embedded in ``text`` (prose around them is skipped)."""
    decoder = json.JSONDecoder()
    found, i = [], 0
    while True:
        starts = [p for p in (text.find("{", i), text.find("[", i)) if p >= 0]
        if not starts:
            return found
        start = min(starts)
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            i = start + 1
            continue
        found.append(value)
        i = end


def _looks_like_call(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and all(_looks_like_call(v) for v in value)
    # A bare {"name": ...} is too often data (a summarised output); a call also carries its arguments.
    return isinstance(value, dict) and (
        ("name" in value and any(k in value for k in _ARG_KEYS))
        or isinstance(value.get("function"), dict)
        or isinstance(value.get("tool_calls"), list)
        or isinstance(value.get("calls"), list)
    )


# ---------------------------------------------------------------- entry points


def _is_bfcl(block: str) -> bool:
    return bool(_BFCL_START.match(block) or (_BARE_CALL.match(block) and "\n" not in block))


def parse_text(text: str, specs: dict[str, FunctionSpec] | None = None) -> list[ToolCall]:
    """Calls written in the content of a message; [] for a plain-text answer."""
    if not text or not text.strip():
        return []
    if "<tool_call>" in text:
        calls = []
        for block in _HERMES.findall(text):
            try:
                calls += _from_json_obj(json.loads(block), text)
            except ValueError:
                calls += _parse_block(block, specs, text, strict=True)
        return calls
    stripped = text.strip()
    if "```" in stripped:
        blocks = [body.strip() for _lang, body in _FENCE.findall(stripped)]
        python = [b for b in blocks if _is_bfcl(b)]
        if python:
            try:
                return [c for b in python for c in parse_bfcl(b, specs)]
            except BadAnswer:
                pass  # a string value holding ``` may have cut the block short: read the whole text
    return _parse_block(stripped, specs, text, strict=False)


def _parse_block(block: str, specs: dict[str, FunctionSpec] | None, text: str, *, strict: bool) -> list[ToolCall]:
    """One candidate block: BFCL syntax when it starts like it, else JSON calls anywhere in it (fences
    and prose are skipped by the JSON scan), else a BFCL list inside prose; strict: it must be a call."""
    block = block.strip()
    if _is_bfcl(block):
        return parse_bfcl(block, specs)
    values = [v for v in _json_values(block) if _looks_like_call(v)]
    if values:
        return [c for v in values for c in _from_json_obj(v, text)]
    found = _BFCL_START.search(block)
    if found:
        end = block.rfind("]")
        if end > found.start():
            return parse_bfcl(block[found.start() : end + 1], specs)
        raise _bad("unterminated python-list call", text)
    if strict or _JSON_CALL_HINT.search(block):
        raise _bad("tool_call block holds no call" if strict else "broken JSON function call", text)
    return []


def parse_message(message: Message, specs: dict[str, FunctionSpec] | None = None) -> list[ToolCall]:
    """Calls from an assistant message: its ``tool_calls`` first, else what its text says."""
    if message.tool_calls:
        return [ToolCall(name=c.name, arguments=dict(c.arguments or {}), id=c.id) for c in message.tool_calls]
    return parse_text(message.content or "", specs)


# ---------------------------------------------------------------- writing calls


def _py_literal(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"cannot write non-finite float {value!r} as a literal")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)}: {_py_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_py_literal(v) for v in value) + "]"
    raise ValueError(f"cannot write {type(value).__name__} as a literal")


def format_call(call: ToolCall) -> str:
    """``name(a=1, b="x")``: BFCL's string form of one call (keyword arguments only)."""
    return f"{call.name}(" + ", ".join(f"{k}={_py_literal(v)}" for k, v in call.arguments.items()) + ")"


def format_bfcl(calls: list[ToolCall]) -> str:
    """``[f(a=1), g(b="x")]``: what hints carry and what BFCL's decoders read."""
    return "[" + ", ".join(format_call(c) for c in calls) + "]"


def format_hermes(calls: list[ToolCall]) -> str:
    return "\n".join(
        "<tool_call>\n" + json.dumps({"name": c.name, "arguments": c.arguments}, ensure_ascii=False) + "\n</tool_call>"
        for c in calls
    )


# ---------------------------------------------------------------- schema validation


def validate_call(call: ToolCall, specs: dict[str, FunctionSpec]) -> ToolCall:
    """The call with its arguments checked and safely coerced against its function's schema.

    Raises ``ArgumentError`` (from graph.schema) with an API-style message: an unknown function
    or arguments that do not fit. Callers decide whether that is a retry or a tool error.
    """
    spec = specs.get(call.name)
    if spec is None:
        raise ArgumentError(f"unknown function '{call.name}'; available: {', '.join(sorted(specs)) or 'none'}")
    return ToolCall(name=call.name, arguments=validate_arguments(spec.parameters, call.arguments), id=call.id)
