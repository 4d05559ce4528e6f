"""BFCL's eight multi-turn API classes as a tool pool: BFCL's own docs, BFCL's real code.

Schemas and descriptions come from BFCL's function docs (``data/multi_turn_func_doc/*.json``,
its dialect converted to JSON Schema: dict -> object, float -> number, tuple -> array);
execution calls the real class methods on an instance loaded with ``_load_scenario(state)``.

The paper's option (Magnet section 2): rename the functions and rewrite their descriptions
so the benchmark's names are never shown to the model; only the implementation is kept.
``rename_map()`` is deterministic and invertible (a class prefix plus verb/noun synonyms);
descriptions lose BFCL's "This tool belongs to ..." preamble and mention the new names.
``rewrite`` takes any per-function description rewriter; ``rewrite_descriptions`` is the
teacher-driven one (prompt -> one paragraph, cached by the caller if it wants).
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import inspect
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import BadAnswer, UserInputError
from engine.records import FunctionSpec, Message
from engine.teacher import Teacher
from graph.adapters import PythonToolkit
from graph.schema import check_schema
from graph.toolkit import Catalog, Entry, Toolkit, ToolPool

# class name -> (module stem under func_source_code, doc file stem, toolkit name, rename prefix)
BFCL_CLASSES: dict[str, tuple[str, str, str, str]] = {
    "GorillaFileSystem": ("gorilla_file_system", "gorilla_file_system", "file_system", "fs"),
    "MathAPI": ("math_api", "math_api", "math_api", "calc"),
    "MessageAPI": ("message_api", "message_api", "message", "chat"),
    "TwitterAPI": ("posting_api", "posting_api", "posting", "social"),
    "TicketAPI": ("ticket_api", "ticket_api", "ticket", "desk"),
    "TradingBot": ("trading_bot", "trading_bot", "trading", "broker"),
    "TravelAPI": ("travel_booking", "travel_booking", "travel_booking", "trip"),
    "VehicleControlAPI": ("vehicle_control", "vehicle_control", "vehicle", "car"),
}

# BFCL's file system has no default tree; a small one makes the class usable without a scenario.
_DEFAULT_FS = {"root": {"workspace": {"type": "directory", "contents": {
    "notes.txt": {"type": "file", "content": "buy milk\ncall Alice\nreview budget"},
    "reports": {"type": "directory", "contents": {"q1.txt": {"type": "file", "content": "revenue 120\ncost 80"}}},
}}}}

# Whole-name replacements where a word-by-word synonym would be meaningless (shell commands).
_WHOLE = {
    "cat": "read_file", "cd": "change_dir", "cp": "copy_file", "diff": "compare_files", "du": "disk_usage",
    "echo": "write_text", "find": "locate_entries", "grep": "match_lines", "ls": "list_dir", "mkdir": "make_dir",
    "mv": "move_entry", "pwd": "current_dir", "rm": "remove_entry", "rmdir": "remove_dir", "sort": "order_lines",
    "tail": "last_lines", "touch": "create_file", "wc": "count_text", "add": "plus", "mean": "average",
    "comment": "reply_to_post", "mention": "tag_users", "retweet": "repost", "logout": "sign_out",
    "contact_customer_support": "support_request",
}
_WORD = {
    "get": "fetch", "list": "show", "display": "show", "view": "show", "search": "query", "find": "locate",
    "add": "put", "delete": "erase", "remove": "drop", "create": "new", "cancel": "revoke", "book": "reserve",
    "send": "deliver", "set": "configure", "check": "inspect", "compute": "calc", "retrieve": "obtain",
    "purchase": "buy", "register": "enroll", "contact": "connection", "verify": "validate", "login": "signin",
    "logout": "signout", "authenticate": "auth", "post": "publish", "follow": "subscribe", "unfollow": "unsubscribe",
    "tweet": "post", "tweets": "posts", "twitter": "social", "close": "shut", "resolve": "settle", "edit": "amend",
    "place": "submit", "make": "perform", "fund": "topup", "update": "refresh", "notify": "alert", "estimate": "approx",
    "fill": "refill", "press": "push", "release": "lift", "start": "launch", "lock": "secure", "activate": "engage",
    "adjust": "tune", "message": "chat", "messages": "chats", "ticket": "case", "tickets": "cases",
    "trading": "broker", "posting": "social", "travel": "trip", "absolute": "abs", "divide": "quotient",
    "multiply": "product", "subtract": "minus", "logarithm": "log", "percentage": "percent", "power": "exponent",
    "round": "rounded", "square": "sq", "standard": "std", "sum": "total", "max": "largest", "min": "smallest",
    "conversion": "convert", "imperial": "imp", "si": "metric", "values": "items", "value": "item",
    "gallon": "gal", "liter": "litre", "filter": "screen", "watchlist": "watch_list", "shop": "store",
    "comments": "replies", "stats": "statistics", "users": "members", "user": "member",
}


def _words(name: str) -> list[str]:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower().split("_")


def rename_map() -> dict[str, str]:
    """BFCL function name -> a new name (class prefix + synonyms); a bijection, fixed for all runs."""
    return dict(_rename_map())


@functools.cache
def _rename_map() -> dict[str, str]:
    mapping: dict[str, str] = {}
    for _cls, (_mod, doc, _tk, prefix) in BFCL_CLASSES.items():
        for spec in _doc_entries(doc):
            name = spec["name"]
            body = _WHOLE.get(name) or "_".join(_WORD.get(w, w) for w in _words(name) if w)
            mapping[name] = f"{prefix}_{body}"
    if len(set(mapping.values())) != len(mapping):
        raise AssertionError("BFCL rename map is not one-to-one")  # a bug in the tables above
    return mapping


def set_project_root() -> None:
    """Point ``BFCL_PROJECT_ROOT`` (unless the user set it) at magnet's cache and create it.

    BFCL creates its result folders there when its constants are imported, so this runs before
    anything imports bfcl_eval: here for the API classes, in ``bench.bfcl.data`` for the checkers."""
    if "BFCL_PROJECT_ROOT" not in os.environ:
        from engine.models import cache_dir

        os.environ["BFCL_PROJECT_ROOT"] = str(cache_dir() / "bfcl_project")
    Path(os.environ["BFCL_PROJECT_ROOT"]).mkdir(parents=True, exist_ok=True)


def _package_dir() -> Path:
    set_project_root()
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError("bfcl-eval is not installed; run `pip install --no-deps bfcl-eval==2025.6.8` (see setup.sh)")
    return Path(spec.submodule_search_locations[0])


def _doc_entries(doc_stem: str) -> list[dict[str, Any]]:
    path = _package_dir() / "data" / "multi_turn_func_doc" / f"{doc_stem}.json"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def to_json_schema(schema: Any) -> Any:
    """BFCL's schema dialect -> JSON Schema."""
    if isinstance(schema, list):
        return [to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: to_json_schema(v) for k, v in schema.items()}
    kind = schema.get("type")
    if isinstance(kind, str):
        mapped = {"dict": "object", "float": "number", "tuple": "array", "any": None}.get(kind, kind)
        if mapped is None:
            out.pop("type")
        else:
            out["type"] = mapped
    if "properties" in schema and isinstance(schema["properties"], dict):
        out["properties"] = {k: to_json_schema(v) for k, v in schema["properties"].items()}
    return out


def _strip_preamble(text: str) -> str:
    return text.split("Tool description:", 1)[1].strip() if "Tool description:" in text else text


class _Renamer:
    """Replaces BFCL names in descriptions. Only identifier-looking names (snake_case, camelCase)
    are replaced in prose: one-word names such as "add" or "sort" are ordinary English there."""

    def __init__(self, mapping: dict[str, str]):
        self.mapping = mapping
        names = sorted((n for n in mapping if "_" in n or re.search(r"[a-z][A-Z]", n)), key=len, reverse=True)
        self.pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b") if names else None

    def text(self, text: str) -> str:
        return self.pattern.sub(lambda m: self.mapping[m.group(1)], text) if self.pattern else text

    def schema(self, schema: Any) -> Any:
        if isinstance(schema, dict):
            return {k: (self.text(v) if k == "description" and isinstance(v, str) else self.schema(v))
                    for k, v in schema.items()}
        if isinstance(schema, list):
            return [self.schema(v) for v in schema]
        return schema


@functools.cache
def _accepted(api_class: type, method: str) -> frozenset[str]:
    return frozenset(inspect.signature(getattr(api_class, method)).parameters)


class BfclToolkit(PythonToolkit):
    """One BFCL API class (``target``, the real implementation) with BFCL's documented specs."""

    source = "bfcl"

    def __init__(self, state: dict[str, Any] | None = None, seed: int = 0):
        scenario = copy.deepcopy(state) if state else {}
        if self.target.__name__ == "GorillaFileSystem" and "root" not in scenario:
            scenario.update(copy.deepcopy(_DEFAULT_FS))
        super().__init__(scenario, seed)

    def invoke(self, entry: Entry, arguments: dict[str, Any]) -> Any:
        # BFCL documents a few optional parameters its code does not take (delete_message's
        # message_id): accept them as documented and leave them out of the real call.
        accepted = _accepted(self.target, entry.method)
        return super().invoke(entry, {k: v for k, v in arguments.items() if k in accepted})


def _bfcl_catalog(cls_name: str, toolkit: str, renamer: _Renamer, rewrite: Callable[[FunctionSpec], str] | None) -> Catalog:
    _mod, doc, _tk, _prefix = BFCL_CLASSES[cls_name]
    specs, entries = [], {}
    for raw in _doc_entries(doc):
        original = raw["name"]
        parameters = renamer.schema(to_json_schema(raw["parameters"]))
        returns = renamer.schema(to_json_schema(raw.get("response", {})))
        check_schema(parameters, f"{cls_name}.{original}.parameters", require_type=False)
        description = renamer.text(_strip_preamble(raw["description"]) if renamer.mapping else raw["description"])
        spec = FunctionSpec(name=renamer.mapping.get(original, original), description=description, parameters=parameters,
                            returns=returns, category=toolkit, toolkit=toolkit, source="bfcl")
        if rewrite is not None:
            spec.description = rewrite(spec)
        specs.append(spec)
        entries[spec.name] = Entry(spec, original)
    return Catalog(specs, entries)


def bfcl_toolkits(rename: bool = False, rewrite: Callable[[FunctionSpec], str] | None = None) -> list[type[Toolkit]]:
    """One toolkit class per BFCL multi-turn API class, in BFCL's order (built once per process
    unless a rewrite hook is given)."""
    return list(_cached_toolkits(rename)) if rewrite is None else _build_toolkits(rename, rewrite)


@functools.cache
def _cached_toolkits(rename: bool) -> tuple[type[Toolkit], ...]:
    return tuple(_build_toolkits(rename, None))


def _build_toolkits(rename: bool, rewrite: Callable[[FunctionSpec], str] | None) -> list[type[Toolkit]]:
    renamer = _Renamer(rename_map() if rename else {})
    base = "bfcl_eval.eval_checker.multi_turn_eval.func_source_code"
    _package_dir()
    out: list[type[Toolkit]] = []
    for cls_name, (module, _doc, toolkit, _prefix) in BFCL_CLASSES.items():
        api_class = getattr(importlib.import_module(f"{base}.{module}"), cls_name)
        tk = type(f"Bfcl{cls_name}", (BfclToolkit,), {
            "target": api_class, "name": toolkit, "category": toolkit,
            "__module__": __name__,
        })
        tk._catalog_cache = _bfcl_catalog(cls_name, toolkit, renamer, rewrite)
        out.append(tk)
    return out


def bfcl_pool(rename: bool = False, rewrite: Callable[[FunctionSpec], str] | None = None) -> ToolPool:
    """BFCL's eight multi-turn API classes as a ToolPool (optionally renamed / rewritten)."""
    return ToolPool(bfcl_toolkits(rename=rename, rewrite=rewrite))


_REWRITE_PROMPT = (
    "Rewrite the description of this API function in your own words for a developer. Keep every fact "
    "(what it does, what it returns, constraints) and do not mention any benchmark. Reply with the new "
    "description only, one paragraph.\n\nFunction: {name}\nDescription: {description}\nParameters: {parameters}"
)


async def rewrite_descriptions(teacher: Teacher, specs: list[FunctionSpec]) -> dict[str, str]:
    """The paper's description rewrite, done by a teacher: function name -> new description.

    Use it as ``bfcl_pool(rename=True, rewrite=lambda s: new[s.name])``."""
    out: dict[str, str] = {}
    for spec in specs:
        prompt = _REWRITE_PROMPT.format(name=spec.name, description=spec.description,
                                        parameters=json.dumps(spec.parameters.get("properties", {}))[:2000])
        reply = await teacher.chat([Message(role="user", content=prompt)], temperature=0.0, max_tokens=300)
        text = " ".join((reply.message.content or "").split())
        if not text:
            raise BadAnswer(f"empty description rewrite for {spec.name}", text=reply.message.content or "")
        out[spec.name] = text
    return out
