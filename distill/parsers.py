"""Function calls out of whatever a model wrote, without ever executing its text.

Formats, each with a strict parser of its own:
- OpenAI ``tool_calls`` already on the message (the HTTP teacher decoded them);
- Hermes (``parse_hermes``): ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks, each
  holding exactly one JSON value; only the last block may lack its closing tag (a model stopped at EOS);
- BFCL's python-list syntax (``parse_bfcl``): ``[f(a=1), g(b="x", c=[1, 2])]`` or one bare ``f(a=1)``,
  parsed with ``ast`` and read literal by literal (a nested call, a variable or ``**kw`` is rejected:
  BFCL answers are flat);
- JSON (``parse_json_calls``): a call object or a list of them, in the shapes models write: the name
  under name / function / tool / tool_name / function_name / action / api / api_name, the arguments
  under arguments / parameters / args / params / input / tool_input / action_input / kwargs (an object,
  or OpenAI's JSON string), or wrapped as ``{"function": {...}}`` / ``{"tool_calls": [...]}``.
  A duplicate key is an error, never last-wins (in python dict literals too).

``parse_text`` reads them all and is never more lenient than the parser of the format it finds: a text
with a ``<tool_call>`` tag is Hermes, wholly; else a text that is one call unit as a whole; else the call
units inside it: a code fence or an inline code span whose content is wholly a call unit, and python
lists, line-leading bare calls and JSON call objects in prose.

A text *attempts a call* (``attempts_call``) when it holds any of:
- a ``<tool_call>`` or ``</tool_call>`` tag;
- ``[name(``: the opening of a python call list, whatever the name;
- ``name(`` at the start of a line (after an optional bullet ``-``, ``*``, ``+``, ``1.``) or right
  after a backtick, when ``name`` is an offered function or the parenthesis opens keyword arguments
  (``name(key=``) or closes at once (``name()``); inside a code fence, an offered ``name(`` anywhere;
- an argument key written as a JSON key: arguments / parameters / args / tool_input / action_input /
  kwargs with a quote on either side and a ``:`` or ``{`` after (``"arguments":``, ``'args':``);
- a quoted name key whose value is the quoted name of an offered function (``"name": "get_weather"``);
- a JSON value in one of the call shapes above.
"Offered" means named in ``specs``; without specs no name is offered. Every such sign must lie inside a
call unit that parses, else the text is a ``BadAnswer`` (re-asked), never a plain answer. A call unit
in prose must not run on into brackets, quotes, ``=`` or ``;``, and a text that calls must carry no
other code: no further code fence and no line of code (an assignment, an import, a statement-level
call, a loop header) around its calls. Text with no sign of a call is a plain answer (empty list).
Tags, fences, code spans and call openings are looked for outside double-quoted strings, so a string
value may hold any of them; a single-quoted python string holding three backticks or one can still be
taken for a fence or span, so a fence with a call in it is tried with each later fence mark as its end.
"""

from __future__ import annotations

import ast
import json
import math
import re
from typing import Any, NamedTuple

from engine.errors import BadAnswer
from engine.records import FunctionSpec, Message, ToolCall
from graph.schema import ArgumentError, check_arguments

Specs = dict[str, FunctionSpec] | None

_NAME = r"[A-Za-z_][\w.]*"
_TAG = re.compile(r"</?tool_call>")
_OPEN_TAG, _CLOSE_TAG = "<tool_call>", "</tool_call>"
_LIST_OPEN = re.compile(rf"\[\s*{_NAME}\(")
# A call that leads its line (after an optional bullet) or an inline code span.
_LEADING_CALL = re.compile(rf"(?:^[ \t]*(?:(?:[-*+\u2022]|\d+[.)])[ \t]+)?|`)({_NAME})\(", re.MULTILINE)
_KEYWORD_OPEN = re.compile(r"\s*(?:[A-Za-z_]\w*\s*=(?!=)|\))")
_SIGNAL_ARG_KEYS = ("arguments", "parameters", "args", "tool_input", "action_input", "kwargs")
_ARG_KEYS = (*_SIGNAL_ARG_KEYS, "params", "input")  # "params"/"input" count only holding an object
_NAME_KEYS = ("name", "function", "tool", "tool_name", "function_name", "action", "api", "api_name")
_WRAPPERS = ("tool_calls", "calls", "function_calls")
_META_KEYS = ("type", "id", "call_id", "index")
_ARG_KEY_SIGN = re.compile(
    rf"""(?:["'](?:{'|'.join(_SIGNAL_ARG_KEYS)})\b["']?|\b(?:{'|'.join(_SIGNAL_ARG_KEYS)})["'])\s*[:{{]""")
_NAME_KEY_SIGN = re.compile(rf"""["'](?:{'|'.join(_NAME_KEYS)})["']\s*:\s*["']([^"'\n]+)["']""")
_TICKS = re.compile("```")
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_FENCE_OPEN = re.compile(r"```(?:[ \t]*[A-Za-z0-9_+-]*[ \t]*\n)?")
_SPAN = re.compile(r"`([^`\n]+)`")
_BRACKET = re.compile(r"[{\[]")
_CALL_LINE = re.compile(rf"\s*{_NAME}\(")
# What may not touch a call unit in prose: it would be part of some larger, broken structure.
_BAD_BEFORE, _BAD_AFTER = "([{,=\"'`", ")]},;=\"'`"
_CODE_STATEMENTS = (ast.Assign, ast.AugAssign, ast.Import, ast.ImportFrom, ast.Return, ast.Delete, ast.Raise,
                    ast.Global, ast.Nonlocal, ast.Assert, ast.For, ast.AsyncFor, ast.While, ast.If, ast.With,
                    ast.AsyncWith, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Try)
_QUOTE_LIMIT = 400


def quote(text: str) -> str:
    """The bad text as it goes into an error message: one line, bounded."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= _QUOTE_LIMIT else flat[: _QUOTE_LIMIT - 3] + "..."


def _bad(reason: str, text: str) -> BadAnswer:
    return BadAnswer(f"{reason}: {quote(text)!r}", text=text)


class _Reject(ValueError):
    """Why a candidate is not a call; public entry points turn it into a BadAnswer quoting the text."""


# ---------------------------------------------------------------- BFCL python-list syntax

_NAME_LITERALS = {"true": True, "false": False, "null": None, "none": None, "True": True, "False": False, "None": None}


def _literal(node: ast.AST) -> Any:
    """A literal value from an AST node; anything else (a call, a name, an operator) is rejected."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, (str, int, float, bool)) or node.value is None:
            return node.value
        raise _Reject(f"unsupported literal {type(node.value).__name__}")
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise _Reject("dict unpacking (**) in an argument")
        out = {}
        for k, v in zip(node.keys, node.values):
            key = _literal(k)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise _Reject("unhashable dict key")
            key = key if isinstance(key, str) else str(key)
            if key in out:  # python keeps the last one; the model said two things
                raise _Reject(f"duplicate key {key!r} in a dict argument")
            out[key] = _literal(v)
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Reject("sign applied to a non-number")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Name) and node.id in _NAME_LITERALS:
        return _NAME_LITERALS[node.id]
    if isinstance(node, ast.Call):
        raise _Reject("a call nested as an argument value; make the calls one at a time")
    raise _Reject(f"argument is not a literal ({type(node).__name__})")


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    raise _Reject("call target is not a function name")


def _positional(name: str, args: list[Any], specs: Specs) -> dict[str, Any]:
    """Map positional arguments onto the schema's parameter order, the only safe reading of them."""
    spec = (specs or {}).get(name)
    if spec is None:
        raise _Reject(f"positional arguments to {name!r}, whose parameters are unknown; use keyword arguments")
    params = list(spec.parameters.get("properties", {}))
    if len(args) > len(params):
        raise _Reject(f"{name!r} takes at most {len(params)} arguments, got {len(args)} positional")
    return dict(zip(params, args))


def _tail(src: str, node: ast.expr) -> str:
    """What follows the parsed expression: comments, which ``ast`` drops silently."""
    lines = re.split(r"\r\n|\r|\n", src)  # python's own line ends (str.splitlines also splits on \x85)
    last = lines[(node.end_lineno or 1) - 1].encode()[node.end_col_offset or 0 :].decode("utf-8", "replace")
    return "\n".join([last, *lines[node.end_lineno or 1 :]])


def _bfcl(src: str, specs: Specs) -> list[ToolCall]:
    src = src.strip()
    try:
        tree = ast.parse(src, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise _Reject("not valid python-list call syntax") from None
    body = tree.body
    if _tail(src, body).strip():
        raise _Reject("text after the call (a comment or code)")
    items = body.elts if isinstance(body, (ast.List, ast.Tuple)) else [body]
    calls = []
    for item in items:
        if not isinstance(item, ast.Call):
            raise _Reject("list item is not a function call")
        name = _dotted(item.func)
        if any(isinstance(a, ast.Starred) for a in item.args) or any(k.arg is None for k in item.keywords):
            raise _Reject("star arguments in a call")
        arguments = _positional(name, [_literal(a) for a in item.args], specs) if item.args else {}
        for kw in item.keywords:
            if kw.arg in arguments:
                raise _Reject(f"argument {kw.arg!r} given twice")
            arguments[kw.arg] = _literal(kw.value)
        calls.append(ToolCall(name=name, arguments=arguments))
    return calls


def parse_bfcl(text: str, specs: Specs = None) -> list[ToolCall]:
    """``[f(a=1), g(b="x")]`` (or one bare ``f(a=1)``) as the whole text -> calls; else BadAnswer."""
    try:
        return _bfcl(text, specs)
    except _Reject as err:
        raise _bad(str(err), text) from None


# ---------------------------------------------------------------- JSON forms


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Reject(f"duplicate key {key!r} in a JSON call")
        out[key] = value
    return out


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def _looks_like_call(value: Any, specs: Specs) -> bool:
    """One of the call shapes (see the module docstring); a bare {"name": ...} is data unless offered."""
    if isinstance(value, list):
        return bool(value) and all(_looks_like_call(v, specs) for v in value)
    if not isinstance(value, dict):
        return False
    if any(isinstance(value.get(k), list) and value[k] for k in _WRAPPERS) or isinstance(value.get("function"), dict):
        return True
    names = [value[k] for k in _NAME_KEYS if isinstance(value.get(k), str)]
    if not names:
        return False
    return (any(k in value for k in _SIGNAL_ARG_KEYS) or any(isinstance(value.get(k), dict) for k in _ARG_KEYS)
            or any(n in (specs or {}) for n in names))


def _from_json_obj(obj: Any, specs: Specs) -> list[ToolCall]:
    """One call object, a list of them, or a wrapper -> calls."""
    if isinstance(obj, list):
        return [c for o in obj for c in _from_json_obj(o, specs)]
    if not isinstance(obj, dict):
        raise _Reject("JSON call is not an object")
    for wrapper in _WRAPPERS:
        if isinstance(obj.get(wrapper), list):
            return _from_json_obj(obj[wrapper], specs)
    if isinstance(obj.get("function"), dict):  # {"type": "function", "function": {...}}
        return _from_json_obj(obj["function"], specs)
    name_keys = [k for k in _NAME_KEYS if k in obj]
    name = obj[name_keys[0]] if len(name_keys) == 1 else None
    if not isinstance(name, str) or not name:
        raise _Reject("a JSON call needs exactly one function name (under name, function or tool)")
    arg_keys = [k for k in _ARG_KEYS if k in obj]
    if len(arg_keys) > 1:
        raise _Reject(f"arguments of {name!r} given twice (under {' and '.join(arg_keys)})")
    if not arg_keys:
        beside = [k for k in obj if k not in name_keys and k not in _META_KEYS]
        if beside:
            raise _Reject(f"arguments of {name!r} written beside its name ({', '.join(beside)}); put them under \"arguments\"")
    args = obj[arg_keys[0]] if arg_keys else {}
    if isinstance(args, str):  # OpenAI's wire form: arguments is a JSON string
        try:
            args = _DECODER.decode(args) if args.strip() else {}
        except ValueError as err:
            raise _Reject(str(err) if isinstance(err, _Reject) else f"arguments of {name!r} are not valid JSON") from None
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise _Reject(f"arguments of {name!r} are not an object")
    return [ToolCall(name=name, arguments=args)]


def _json_calls(src: str, specs: Specs) -> list[ToolCall]:
    try:
        value = _DECODER.decode(src.strip())
    except _Reject:
        raise
    except (ValueError, RecursionError):
        raise _Reject("not valid JSON (keys and strings take double quotes; no trailing commas)") from None
    if not _looks_like_call(value, specs):
        raise _Reject("JSON that is not a function call")
    return _from_json_obj(value, specs)


def parse_json_calls(text: str, specs: Specs = None) -> list[ToolCall]:
    """A JSON call object or list of them as the whole text -> calls; else BadAnswer."""
    try:
        return _json_calls(text, specs)
    except _Reject as err:
        raise _bad(str(err), text) from None


# ---------------------------------------------------------------- what looks like a call


class _Unit(NamedTuple):
    """A stretch of the text [start, end) that parsed as calls."""

    start: int
    end: int
    calls: list[ToolCall]


def _unit_calls(src: str, specs: Specs) -> list[ToolCall]:
    """A code block, code span or whole text that must be exactly one call unit, JSON or python."""
    src = src.strip()
    if src[:1] == "{" or (src[:1] == "[" and not _LIST_OPEN.match(src)):
        return _json_calls(src, specs)
    return _bfcl(src, specs)


def _hide_strings(text: str) -> str:
    """``text`` with the insides of double-quoted strings blanked: where tags, fences, code spans and
    call openings are looked for, so that a string value holding one is not taken for structure."""
    return _STRING.sub(lambda m: '"' + " " * (len(m.group()) - 2) + '"', text)


def _closers(text: str, body: int) -> list[int]:
    """Where a fence opened before ``body`` may close: every later ```, else the end of the text."""
    return [m.start() for m in _TICKS.finditer(text, body)] or [len(text)]


def _fence_end(text: str, close: int) -> int:
    return min(close + 3, len(text))


def _plain_fences(text: str) -> list[tuple[int, int, int]]:
    """(start, body start, end) of each code fence, each closed by the next ```."""
    out, pos = [], 0
    while (start := text.find("```", pos)) >= 0:
        body = _FENCE_OPEN.match(text, start).end()  # type: ignore[union-attr]
        end = _fence_end(text, _closers(text, body)[0])
        out.append((start, body, end))
        pos = end
    return out


def _call_shaped(text: str, specs: Specs) -> list[int]:
    """Starts of JSON values in a call shape; the insides of other JSON values are data, not scanned."""
    found, pos = [], 0
    while (m := _BRACKET.search(text, pos)) is not None:
        try:
            value, end = _DECODER.raw_decode(text, m.start())
        except (ValueError, RecursionError):
            pos = m.start() + 1
            continue
        if _looks_like_call(value, specs):
            found.append(m.start())
        pos = end
    return found


def _leads(shape: str, specs: Specs) -> list[int]:
    """Calls leading a line or a code span whose name is offered or that open keyword arguments."""
    return [m.start(1) for m in _LEADING_CALL.finditer(shape)
            if m.group(1) in (specs or {}) or _KEYWORD_OPEN.match(shape, m.end())]


def _signals(text: str, specs: Specs) -> list[int]:
    """Where the text shows a sign of an attempted call (see the module docstring)."""
    offered, shape = specs or {}, _hide_strings(text)
    found = [m.start() for m in _TAG.finditer(shape)] + [m.start() for m in _LIST_OPEN.finditer(shape)] + _leads(shape, specs)
    found += [m.start() for m in _ARG_KEY_SIGN.finditer(text)] + _call_shaped(text, specs)
    if offered:
        found += [m.start() for m in _NAME_KEY_SIGN.finditer(text) if m.group(1) in offered]
        names = re.compile(r"(?<![\w.])(?:" + "|".join(map(re.escape, sorted(offered, key=len, reverse=True))) + r")\(")
        for _start, body, end in _plain_fences(shape):
            found += [m.start() for m in names.finditer(shape, body, end)]
    return sorted(set(found))


def attempts_call(text: str, specs: Specs = None) -> bool:
    """Whether ``text`` looks like an attempted call (see the module docstring)."""
    return bool(_signals(text or "", specs))


# ---------------------------------------------------------------- finding call units


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with the spans replaced by spaces (newlines kept, so line starts and offsets hold)."""
    chars = list(text)
    for start, end in spans:
        for i in range(start, end):
            if chars[i] != "\n":
                chars[i] = " "
    return "".join(chars)


def _runs_on(text: str, start: int, end: int, bad_before: str, bad_after: str) -> str | None:
    """Why the unit [start, end) is part of a larger broken structure, else None."""
    if re.match(r"[\w.]", text[start - 1 : start]) or re.match(r"\w", text[end : end + 1]):
        return "a call glued to other text (a subscript or a name)"
    before, after = text[:start].rstrip(), text[end:].lstrip()
    key_colon = before[-1:] == ":" and before[:-1].rstrip()[-1:] in ("\"", "'")  # a JSON key: the unit is a value
    if (before and before[-1] in bad_before) or key_colon:
        return f"a call inside something else (after {before[-1]!r})"
    if after and after[0] in bad_after:
        return f"text runs on after a call ({after[0]!r})"
    return None


def _fence_units(text: str, shape: str, specs: Specs, signals: list[int], reasons: list[str]) -> tuple[list[_Unit], list[tuple[int, int]]]:
    """Code fences whose body is wholly a call unit; a single-quoted string holding ``` may close a
    fence early, so each later ``` is tried as its end. Returns the units and every fence's extent."""
    units, extents, pos = [], [], 0
    while (start := shape.find("```", pos)) >= 0:
        body = _FENCE_OPEN.match(shape, start).end()  # type: ignore[union-attr]
        closers = _closers(shape, body)
        plain_end = _fence_end(text, closers[0])
        signed = any(start <= s < plain_end for s in signals)
        unit, why = None, None
        if signed or text[body:closers[0]].lstrip()[:1] in ("{", "["):
            for close in closers:
                try:
                    unit = _Unit(start, _fence_end(text, close), _unit_calls(text[body:close], specs))
                    break
                except _Reject as err:
                    why = why or str(err)
        if unit is not None:
            units.append(unit)
        elif signed and why:
            reasons.append(f"code block: {why}")
        end = unit.end if unit is not None else plain_end
        extents.append((start, end))
        pos = end
    return units, extents


def _span_units(text: str, shape: str, specs: Specs, signals: list[int], reasons: list[str]) -> list[_Unit]:
    """Inline code spans (found in ``shape``, read from ``text``) whose content is wholly a call unit."""
    units = []
    for m in _SPAN.finditer(shape):
        content = text[m.start(1) : m.end(1)]
        signed = any(m.start() <= s < m.end() for s in signals)
        if not signed and content.lstrip()[:1] not in ("{", "["):
            continue
        try:
            units.append(_Unit(m.start(), m.end(), _unit_calls(content, specs)))
        except _Reject as err:
            if signed:
                reasons.append(f"inline code: {err}")
    return units


def _list_unit(text: str, start: int, specs: Specs) -> _Unit:
    """A python call list opening at ``start``: the shortest stretch up to a ``]`` that parses."""
    why: _Reject = _Reject("unterminated python call list")
    for end in (m.end() for m in re.finditer(r"\]", text[start:])):
        try:
            return _Unit(start, start + end, _bfcl(text[start : start + end], specs))
        except _Reject as err:
            why = err
    raise why


def _bare_unit(text: str, start: int, specs: Specs) -> _Unit:
    """A bare call leading its line: it must end its line (a comment or more code after it is not a call)."""
    why: _Reject = _Reject("call not closed at the end of its line")
    for m in re.finditer(r"\)[ \t]*(?:\n|$)", text[start:]):
        end = start + m.start() + 1
        try:
            return _Unit(start, end, _bfcl(text[start:end], specs))
        except _Reject as err:
            why = err
    raise why


def _prose_units(prose: str, specs: Specs, reasons: list[str]) -> list[_Unit]:
    """Python lists, line-leading bare calls and JSON call objects in prose (fences and spans blanked)."""
    shape = _hide_strings(prose)
    lists, leads = {m.start() for m in _LIST_OPEN.finditer(shape)}, set(_leads(shape, specs))
    brackets = {m.start() for m in _BRACKET.finditer(prose)}
    units: list[_Unit] = []
    pos = 0
    for at in sorted(lists | leads | brackets):
        if at < pos:
            continue
        try:
            if at in lists:
                unit = _list_unit(prose, at, specs)
            elif at in leads:
                unit = _bare_unit(prose, at, specs)
            else:
                value, end = _DECODER.raw_decode(prose, at)
                if not _looks_like_call(value, specs):
                    pos = end  # data: its insides are not calls either
                    continue
                unit = _Unit(at, end, _from_json_obj(value, specs))
        except _Reject as err:
            reasons.append(str(err))
            continue
        except (ValueError, RecursionError):
            continue  # not JSON from here
        why = _runs_on(prose, unit.start, unit.end, _BAD_BEFORE, _BAD_AFTER)
        if why:
            reasons.append(why)
            continue
        units.append(unit)
        pos = unit.end
    return units


def _is_code(line: str) -> bool:
    """A line of python code (an assignment, an import, a statement-level call, a block header); prose
    that happens to parse ("Result: ok" is an annotation, "Done" a name) is not."""
    src = line.strip()
    if not src:
        return False
    for candidate in (src, src + "\n    pass"):
        try:
            tree = ast.parse(candidate)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        stmt = tree.body[0] if tree.body else None
        if isinstance(stmt, _CODE_STATEMENTS):
            return True
        return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) and bool(_CALL_LINE.match(src))
    return False


def _finish(text: str, units: list[_Unit], signals: list[int], reasons: list[str]) -> list[ToolCall]:
    """Every sign of a call must lie in a unit that parsed; the calls must carry no other code."""
    missed = [s for s in signals if not any(u.start <= s < u.end for u in units)]
    if missed:
        snippet = " ".join(text[missed[0] : missed[0] + 40].split())
        raise _Reject(reasons[0] if reasons else f"{snippet!r} looks like a function call but does not parse")
    units = sorted(units)
    calls = [c for u in units for c in u.calls]
    if calls:
        rest = _blank(text, [(u.start, u.end) for u in units])
        fences = _plain_fences(_hide_strings(rest))
        if any(rest[body:end].strip("`\n\t ") for _start, body, end in fences):
            raise _Reject("a code block besides the calls; answer with the calls only")
        code = next((ln for ln in _blank(rest, [(s, e) for s, _b, e in fences]).splitlines() if _is_code(ln)), None)
        if code is not None:
            raise _Reject(f"code around the calls ({code.strip()!r}); answer with the calls only")
    return calls


def _hermes(text: str, specs: Specs) -> list[ToolCall]:
    shape = _hide_strings(text)
    opens = [m.start() for m in re.finditer(re.escape(_OPEN_TAG), shape)]
    if not opens:
        raise _Reject("no <tool_call> block")
    units = []
    for k, start in enumerate(opens):
        body = start + len(_OPEN_TAG)
        limit = opens[k + 1] if k + 1 < len(opens) else len(text)
        close = shape.find(_CLOSE_TAG, body, limit)
        if close < 0 and k + 1 < len(opens):
            raise _Reject(f"<tool_call> block {k + 1} is not closed before the next one")
        end = close + len(_CLOSE_TAG) if close >= 0 else len(text)
        try:
            unit = _Unit(start, end, _json_calls(text[body : close if close >= 0 else len(text)], specs))
        except _Reject as err:
            raise _Reject(f"<tool_call> block {k + 1}: {err}") from None
        why = _runs_on(text, start, end, "([{,=", ")]},;=")  # quotes and fences around a block are harmless
        if why:
            raise _Reject(why)
        units.append(unit)
    return _finish(text, units, _signals(text, specs), [])


def parse_hermes(text: str, specs: Specs = None) -> list[ToolCall]:
    """``<tool_call>`` blocks, each exactly one JSON call (or list) -> calls; else BadAnswer."""
    try:
        return _hermes(text, specs)
    except _Reject as err:
        raise _bad(str(err), text) from None


def _any(text: str, specs: Specs) -> list[ToolCall]:
    shape = _hide_strings(text)
    if _TAG.search(shape):
        return _hermes(text, specs)
    try:
        calls = _unit_calls(text, specs)
        if calls:
            return calls
    except _Reject:
        pass  # not one unit as a whole: look for units inside
    signals = _signals(text, specs)
    reasons: list[str] = []
    units, fences = _fence_units(text, shape, specs, signals, reasons)
    spans = _span_units(text, _blank(shape, fences), specs, signals, reasons)
    units += spans
    units += _prose_units(_blank(text, fences + [(u.start, u.end) for u in spans]), specs, reasons)
    return _finish(text, units, signals, reasons)


def parse_text(text: str, specs: Specs = None) -> list[ToolCall]:
    """Calls written in the content of a message; [] for a plain-text answer; BadAnswer for a text
    that attempts a call (see the module docstring) and does not parse."""
    if not text or not text.strip():
        return []
    try:
        return _any(text, specs)
    except _Reject as err:
        raise _bad(str(err), text) from None


def parse_message(message: Message, specs: Specs = None) -> list[ToolCall]:
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
    """The call checked against its function's schema, stored as the model said it: a value that fits
    its type is kept exactly (3 stays 3 for a "number", an explicit null stays null); only a value of
    the wrong type is coerced by graph.schema's documented safe coercions ("3" -> 3 for an integer).

    Raises ``ArgumentError`` (from graph.schema) with an API-style message: an unknown function
    or arguments that do not fit. Callers decide whether that is a retry or a tool error.
    """
    spec = specs.get(call.name)
    if spec is None:
        raise ArgumentError(f"unknown function '{call.name}'; available: {', '.join(sorted(specs)) or 'none'}")
    return ToolCall(name=call.name, arguments=check_arguments(spec.parameters, call.arguments), id=call.id)
