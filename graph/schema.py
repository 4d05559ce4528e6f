"""JSON Schema from Python type hints and Google-style docstrings, plus argument validation.

Three jobs, all pure functions:

- ``type_schema`` turns a type hint (str, int, float, bool, list[X], dict[str, X], Literal,
  Optional, TypedDict) into JSON Schema; a TypedDict becomes an object with named properties
  so the dependency matcher can pair an output field of one function with a parameter of
  another.
- ``parse_docstring`` reads the summary, ``Args:`` and ``Returns:`` sections.
- ``check_arguments`` checks a call's arguments against a parameters schema and returns them as the
  model gave them: a value that fits its type is never rewritten (3 stays 3 for a "number", an
  explicit null stays null); a value of the wrong type gets *safe* coercion only ("3" -> 3 for an
  integer, "2.5" -> 2.5 for a number, "true" -> True, 7 -> "7" for a string, 4.0 -> 4 for an
  integer); nothing is ever evaluated. ``validate_arguments`` is the same check for execution: a
  "number" becomes a float and an optional argument given as null is left out (its default
  applies). Both raise ``ArgumentError`` with a message an API would give.

``check_schema`` validates a user-supplied schema structurally (we do not depend on the
``jsonschema`` package) and raises ``UserInputError`` naming the function and field.
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import re
import types
import typing
from typing import Any, Literal, NamedTuple, Union, get_args, get_origin

from engine.errors import UserInputError

JSON_TYPES = ("string", "integer", "number", "boolean", "array", "object", "null")
_SCALARS: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_INT_RE = re.compile(r"^[+-]?\d+$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class ArgumentError(ValueError):
    """A call's arguments do not fit the function's schema (reported as a tool error)."""


# ----------------------------------------------------------------------------- type hints


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__annotations__") and hasattr(
        tp, "__total__"
    )


def type_schema(tp: Any, where: str) -> dict[str, Any]:
    """JSON Schema for a type hint; ``where`` names the function and field in errors."""
    if tp is Any:
        return {}
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    if tp is list:
        return {"type": "array"}
    if tp is dict:
        return {"type": "object"}
    if tp is type(None):
        return {"type": "null"}
    if _is_typeddict(tp):
        return typeddict_schema(tp, where)
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        kinds = {type(a) for a in args}
        if len(kinds) != 1 or next(iter(kinds)) not in _SCALARS:
            raise UserInputError(f"{where}: Literal values must all be str, int, float or bool; fix the type hint")
        return {"type": _SCALARS[next(iter(kinds))], "enum": list(args)}
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return type_schema(rest[0], where)
        return {"anyOf": [type_schema(a, where) for a in rest]}
    if origin in (list, tuple, set, frozenset, collections.abc.Sequence):
        item = args[0] if args and args[0] is not Ellipsis else Any
        schema: dict[str, Any] = {"type": "array"}
        item_schema = type_schema(item, where)
        if item_schema:
            schema["items"] = item_schema
        return schema
    if origin is dict:
        if args and args[0] is not str:
            raise UserInputError(f"{where}: dict keys must be str for JSON; use dict[str, ...]")
        schema = {"type": "object"}
        if len(args) == 2 and args[1] is not Any:
            schema["additionalProperties"] = type_schema(args[1], where)
        return schema
    raise UserInputError(
        f"{where}: type {tp!r} has no JSON Schema; use str, int, float, bool, list[...], dict[str, ...], "
        "Literal[...], Optional[...] or a TypedDict"
    )


def typeddict_schema(td: type, where: str) -> dict[str, Any]:
    """Object schema of a TypedDict; field descriptions come from ``name: text`` lines of its docstring."""
    hints = typing.get_type_hints(td)
    docs = parse_field_lines(inspect.getdoc(td) or "")
    props: dict[str, Any] = {}
    for field, hint in hints.items():
        sub = type_schema(hint, f"{where}.{field}")
        if field in docs:
            sub = {**sub, "description": docs[field][1]}
        props[field] = sub
    required = sorted(getattr(td, "__required_keys__", hints.keys()))
    return {"type": "object", "properties": props, "required": [r for r in props if r in required]}


# ----------------------------------------------------------------------------- docstrings

_SECTION_RE = re.compile(r"^(Args|Arguments|Parameters|Returns|Return|Yields|Raises|Attributes|Examples?|Notes?):\s*$")
_FIELD_RE = re.compile(r"^(\*{0,2}\w+)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")


def parse_field_lines(text: str) -> dict[str, tuple[str, str]]:
    """``name (type): description`` lines (continuations indented deeper) -> {name: (type, description)}."""
    out: dict[str, tuple[str, str]] = {}
    current: str | None = None
    base_indent: int | None = None
    for raw in text.splitlines():
        if not raw.strip():
            continue
        indent = len(raw) - len(raw.lstrip())
        line = raw.strip()
        m = _FIELD_RE.match(line)
        if m and (base_indent is None or indent <= base_indent):
            base_indent = indent
            current = m.group(1).lstrip("*")
            out[current] = (m.group(2) or "", m.group(3).strip())
        elif current is not None and base_indent is not None and indent > base_indent:
            kind, desc = out[current]
            out[current] = (kind, f"{desc} {line}".strip())
        else:
            current = None
    return out


def doc_type_schema(text: str) -> dict[str, Any]:
    """Best-effort schema of a docstring type such as ``int``, ``List[str]`` or ``dict`` ({} if unknown)."""
    word = re.split(r"[\[\s,|]", text.strip().lower(), maxsplit=1)[0]
    kinds = {"str": "string", "string": "string", "int": "integer", "integer": "integer", "float": "number",
             "number": "number", "bool": "boolean", "boolean": "boolean", "list": "array", "tuple": "array",
             "array": "array", "dict": "object", "object": "object"}
    return {"type": kinds[word]} if word in kinds else {}


class Docstring(NamedTuple):
    description: str
    params: dict[str, str]  # parameter -> description
    returns: str  # prose of the Returns: section
    return_fields: dict[str, tuple[str, str]]  # output field -> (type text, description)


def parse_docstring(doc: str) -> Docstring:
    """Google-style docstring -> summary, parameter descriptions and the Returns: section."""
    sections: dict[str, list[str]] = {"": []}
    name = ""
    for line in inspect.cleandoc(doc or "").splitlines():
        m = _SECTION_RE.match(line.strip())
        if m and not line.startswith((" ", "\t")):
            name = {"Arguments": "Args", "Parameters": "Args", "Return": "Returns"}.get(m.group(1), m.group(1))
            sections.setdefault(name, [])
            continue
        sections.setdefault(name, []).append(line)
    ret_lines = sections.get("Returns", [])
    # Prose is what precedes the first "field: description" line of the Returns: section.
    first_field = next((i for i, ln in enumerate(ret_lines) if _FIELD_RE.match(ln.strip())), len(ret_lines))
    return Docstring(
        description=" ".join(" ".join(sections[""]).split()),
        params={k: d for k, (_t, d) in parse_field_lines("\n".join(sections.get("Args", []))).items()},
        returns=" ".join(ln.strip() for ln in ret_lines[:first_field] if ln.strip()),
        return_fields=parse_field_lines("\n".join(ret_lines)),
    )


# ----------------------------------------------------------------------------- schema checks


def check_schema(schema: Any, where: str, *, require_type: bool = True) -> None:
    """Structural JSON Schema check of a user-supplied (OpenAI style) schema; raises UserInputError."""
    if not isinstance(schema, dict):
        raise UserInputError(f"{where}: schema must be a JSON object, got {type(schema).__name__}")
    if "anyOf" in schema or "oneOf" in schema:
        subs = schema.get("anyOf", schema.get("oneOf"))
        if not isinstance(subs, list) or not subs:
            raise UserInputError(f"{where}: anyOf/oneOf must be a non-empty list of schemas")
        for i, sub in enumerate(subs):
            check_schema(sub, f"{where}.anyOf[{i}]", require_type=require_type)
        return
    kind = schema.get("type")
    if kind is None:
        if require_type and "enum" not in schema:
            raise UserInputError(f"{where}: missing 'type'; add one of {', '.join(JSON_TYPES)}")
    else:
        kinds = kind if isinstance(kind, list) else [kind]
        bad = [k for k in kinds if k not in JSON_TYPES]
        if bad or not kinds:
            raise UserInputError(f"{where}: invalid type {kind!r}; use one of {', '.join(JSON_TYPES)}")
    if "enum" in schema and (not isinstance(schema["enum"], list) or not schema["enum"]):
        raise UserInputError(f"{where}: 'enum' must be a non-empty list")
    if "description" in schema and not isinstance(schema["description"], str):
        raise UserInputError(f"{where}: 'description' must be a string")
    props = schema.get("properties")
    if props is not None:
        if not isinstance(props, dict):
            raise UserInputError(f"{where}: 'properties' must be an object of schemas")
        for key, sub in props.items():
            check_schema(sub, f"{where}.{key}", require_type=require_type)
    required = schema.get("required")
    if required is not None:
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise UserInputError(f"{where}: 'required' must be a list of property names")
        missing = [r for r in required if r not in (props or {})]
        if missing:
            raise UserInputError(f"{where}.{missing[0]}: listed in 'required' but not in 'properties'")
    if "items" in schema:
        check_schema(schema["items"], f"{where}[]", require_type=require_type)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        check_schema(extra, f"{where}.*", require_type=require_type)


# ----------------------------------------------------------------------------- validation


def _coerce(schema: dict[str, Any], value: Any, where: str, *, loose: bool, widen: bool) -> Any:
    """``value`` checked against ``schema``. A value that fits a type as it is wins over any coercion
    (``"3"`` stays a string for ``["integer", "string"]``); ``loose`` allows the safe coercions of a
    value of the wrong type; ``widen`` turns a fitting int into a float for "number" (execution only)."""
    if not schema:
        return value
    subs = schema.get("anyOf", schema.get("oneOf"))
    if subs is not None:
        errors = []
        for allow in (False, True) if loose else (False,):
            for sub in subs:
                try:
                    return _coerce(sub, value, where, loose=allow, widen=widen)
                except ArgumentError as e:
                    errors.append(str(e))
        raise ArgumentError(errors[0] if errors else f"{where}: no schema matches")
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    if kinds:
        fit = next((k for k in kinds if _fits(k, value)), None)
        if fit is None and loose:
            for k in kinds:
                ok, out = _convert(k, value)
                if ok:
                    fit, value = k, out
                    break
        if fit is None:
            raise ArgumentError(f"{where}: expected {' or '.join(kinds)}, got {type(value).__name__} {_short(value)}")
        if fit == "number" and widen:
            value = float(value)
    if "enum" in schema and value not in schema["enum"]:
        raise ArgumentError(f"{where}: {_short(value)} is not one of {schema['enum']}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        value = [_coerce(schema["items"], v, f"{where}[{i}]", loose=loose, widen=widen) for i, v in enumerate(value)]
    if isinstance(value, dict) and ("properties" in schema or "additionalProperties" in schema):
        value = _coerce_object(schema, value, where, strict=False, loose=loose, widen=widen)
    return value


def _fits(kind: str, value: Any) -> bool:
    """Whether ``value`` already is a JSON ``kind`` (bool is never a number; inf and nan are no numbers)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return {
        "string": isinstance(value, str),
        "integer": number and isinstance(value, int),
        "number": number and math.isfinite(value),
        "boolean": isinstance(value, bool),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
        "null": value is None,
    }.get(kind, False)


def _convert(kind: str, value: Any) -> tuple[bool, Any]:
    """The documented safe coercions of a value of the wrong type; nothing is ever evaluated."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    text = value.strip() if isinstance(value, str) else None
    if kind == "string" and number:
        return True, str(value)
    if kind == "integer":
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        if text is not None and _INT_RE.match(text):
            return True, int(text)
    if kind == "number" and text is not None and _FLOAT_RE.match(text) and math.isfinite(float(text)):
        return True, float(text)
    if kind == "boolean" and text is not None and text.lower() in ("true", "false"):
        return True, text.lower() == "true"
    if kind == "array" and isinstance(value, tuple):
        return True, list(value)
    return False, value


def _coerce_object(schema: dict[str, Any], value: dict[str, Any], where: str, *, strict: bool, loose: bool,
                   widen: bool) -> dict[str, Any]:
    props: dict[str, Any] = schema.get("properties", {})
    out: dict[str, Any] = {}
    for key, val in value.items():
        name = f"{where}.{key}" if where else key
        if key in props:
            out[key] = _coerce(props[key], val, name, loose=loose, widen=widen)
        elif isinstance(schema.get("additionalProperties"), dict):
            out[key] = _coerce(schema["additionalProperties"], val, name, loose=loose, widen=widen)
        elif strict or schema.get("additionalProperties") is False:
            raise ArgumentError(f"unexpected argument '{name}'; allowed: {', '.join(props) or 'none'}")
        else:
            out[key] = val
    for req in schema.get("required", []):
        if req not in out:
            raise ArgumentError(f"missing required argument '{f'{where}.{req}' if where else req}'")
    return out


def _check(parameters: dict[str, Any], arguments: Any, *, widen: bool) -> tuple[dict[str, Any], set[str]]:
    """Checked arguments without the optional ones set to null, and the names of those."""
    if not isinstance(arguments, dict):
        raise ArgumentError(f"arguments must be an object of keyword arguments, got {type(arguments).__name__}")
    props, required = parameters.get("properties", {}), set(parameters.get("required", []))
    # An explicit null for an optional parameter means "use the default" (as BFCL answers write it).
    defaults = {k for k, v in arguments.items() if v is None and k in props and k not in required}
    rest = {k: v for k, v in arguments.items() if k not in defaults}
    return _coerce_object(parameters, rest, "", strict=True, loose=True, widen=widen), defaults


def check_arguments(parameters: dict[str, Any], arguments: Any) -> dict[str, Any]:
    """The arguments as the model gave them, checked: a value that fits its type is kept exactly
    (3 stays 3 for a "number"; an explicit null for an optional parameter stays null); a value of
    the wrong type is coerced safely or rejected. This is what a stored call holds."""
    checked, defaults = _check(parameters, arguments, widen=False)
    return {k: None if k in defaults else checked[k] for k in arguments}


def validate_arguments(parameters: dict[str, Any], arguments: Any) -> dict[str, Any]:
    """The arguments a function is called with: checked as ``check_arguments`` does, a "number" made a
    float, and an optional parameter given as null left out so that its default applies."""
    return _check(parameters, arguments, widen=True)[0]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
