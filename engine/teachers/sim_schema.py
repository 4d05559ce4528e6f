"""Schema-valid example values: what the simulator answers when all it knows is a JSON Schema
(a ``response_format`` it has no role for, a call it must make without a hint)."""

from __future__ import annotations

import math
from typing import Any

from engine.teachers.sim_values import digest

_FORMATS = {"date": "2025-03-14", "date-time": "2025-03-14T09:30:00Z", "time": "09:30:00", "email": "alex@example.com",
            "uri": "https://example.com/item", "uuid": "123e4567-e89b-42d3-a456-426614174000"}
WORDS = ("alpha", "bravo", "delta", "echo", "lima", "nova", "orion", "pixel", "quartz", "river", "sierra", "tango")


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
        return schema["enum"][digest(key, salt) % len(schema["enum"])]
    if "default" in schema:
        return schema["default"]
    for combo in ("anyOf", "oneOf", "allOf"):
        if schema.get(combo):
            options = [s for s in schema[combo] if not (isinstance(s, dict) and s.get("type") == "null")]
            return example_value((options or schema[combo])[0], key, salt, root, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    h = digest(key, salt)
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
    word = f"{WORDS[h % len(WORDS)]}_{key}" if key else WORDS[h % len(WORDS)]
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
