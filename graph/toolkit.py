"""Executable, stateful toolkits: the function pool the whole pipeline draws from.

A ``Toolkit`` is a Python class whose public methods are the functions. Their type hints become
JSON Schema and their Google-style docstrings the descriptions (``graph.schema``), so a
function is written once and both the model-facing spec and the executable behaviour come
from the same place. Return annotations are TypedDicts where possible: named output fields
(``flight_id``, ``token``, ``distance_km``) are what the dependency matcher pairs with the
parameters of other functions.

State lives in ``self.state`` (a JSON-able dict). It is built from ``default_state(rng)`` with
a ``random.Random(seed)``, then the top-level keys of the ``state`` argument replace the
defaults, so a toolkit rebuilt from ``(initial_state, seed)`` behaves identically: that is
how reference calls and a model's calls are replayed and compared by ``snapshot()``.

``execute`` never raises: unknown functions, bad arguments and domain failures (not found,
insufficient funds, expired token) come back as ``ToolResult(ok=False, error=...)`` the way a
real API answers, so one bad call never kills a run.
"""

from __future__ import annotations

import copy
import inspect
import random
import typing
from collections.abc import Iterable
from typing import Any, ClassVar, NamedTuple

import msgspec

from engine.errors import UserInputError
from engine.records import FunctionSpec, ToolCall
from graph.schema import ArgumentError, Docstring, doc_type_schema, parse_docstring, type_schema, validate_arguments


class ToolResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What executing one call gave: ``output`` when ``ok``, else a one-line ``error``."""

    ok: bool
    output: Any = None
    error: str | None = None


class ToolError(Exception):
    """Raised inside a tool for a domain failure (not found, insufficient funds, ...)."""


def require(condition: Any, message: str) -> None:
    """Raise ToolError(message) unless ``condition``: the one-line guard every tool uses."""
    if not condition:
        raise ToolError(message)


class Entry(NamedTuple):
    spec: FunctionSpec
    method: str  # attribute name of the implementation (differs from spec.name after a rename)


class Catalog(NamedTuple):
    specs: list[FunctionSpec]
    entries: dict[str, Entry]


def jsonable(value: Any) -> Any:
    """A deep, JSON-able copy (objects become their public attributes, anything else ``str``)."""

    def hook(obj: Any) -> Any:
        return public_state(obj) if hasattr(obj, "__dict__") else str(obj)

    return msgspec.json.decode(msgspec.json.encode(value, enc_hook=hook))


def public_state(obj: Any) -> dict[str, Any]:
    """The public attributes of an object as JSON (what a state-based check compares)."""

    def convert(value: Any, seen: frozenset[int]) -> Any:
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
        if id(value) in seen:  # back-references (a folder's parent) would recurse forever
            return None
        seen = seen | {id(value)}
        if isinstance(value, dict):
            return {str(k): convert(v, seen) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(v, seen) for v in value]
        if isinstance(value, (set, frozenset)):
            return sorted((convert(v, seen) for v in value), key=repr)
        if hasattr(value, "__dict__"):
            return {k: convert(v, seen) for k, v in vars(value).items() if not k.startswith("_") and k != "parent"}
        return str(value)

    return {k: convert(v, frozenset({id(obj)})) for k, v in vars(obj).items()
            if not k.startswith("_") and not callable(v)}


def introspect(target: type, *, toolkit: str, category: str, source: str, exclude: Iterable[str] = ()) -> Catalog:
    """Specs of ``target``'s public methods from type hints and docstrings; bad definitions -> UserInputError."""
    skip = set(exclude)
    specs: list[FunctionSpec] = []
    entries: dict[str, Entry] = {}
    for attr, member in inspect.getmembers(target, predicate=inspect.isfunction):
        if attr.startswith("_") or attr in skip or isinstance(inspect.getattr_static(target, attr), (staticmethod, classmethod)):
            continue
        spec = function_spec(member, owner=target.__name__, toolkit=toolkit, category=category, source=source)
        specs.append(spec)
        entries[spec.name] = Entry(spec, attr)
    if not specs:
        raise UserInputError(f"{target.__name__}: no public methods to expose; define typed, docstringed methods")
    return Catalog(specs, entries)


def function_spec(fn: Any, *, owner: str, toolkit: str, category: str, source: str) -> FunctionSpec:
    where = f"{owner}.{fn.__name__}"
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # an unresolvable forward reference is the user's to fix
        raise UserInputError(f"{where}: type hints cannot be resolved ({exc}); import the names they use") from exc
    doc = parse_docstring(inspect.getdoc(fn) or "")
    if not doc.description:
        raise UserInputError(f"{where}: no docstring; add a one-line description (Google style, with Args:)")
    props: dict[str, Any] = {}
    required: list[str] = []
    for pname, param in list(inspect.signature(fn).parameters.items())[1:]:
        field = f"{where}.{pname}"
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise UserInputError(f"{field}: *args/**kwargs cannot be described to a model; name each parameter")
        if pname not in hints:
            raise UserInputError(f"{field}: parameter '{pname}' has no type hint; annotate it (e.g. `{pname}: str`)")
        schema = dict(type_schema(hints[pname], field))
        if pname in doc.params:
            schema["description"] = doc.params[pname]
        if param.default is param.empty:
            required.append(pname)
        elif param.default is not None:
            try:
                schema["default"] = jsonable_default(param.default)
            except (TypeError, msgspec.EncodeError) as exc:
                raise UserInputError(
                    f"{field}: default {param.default!r} is not JSON-serializable; use None, str, number, bool, list or dict"
                ) from exc
        props[pname] = schema
    return FunctionSpec(
        name=fn.__name__,
        description=doc.description,
        parameters={"type": "object", "properties": props, "required": required},
        returns=returns_schema(hints.get("return"), doc, where),
        category=category,
        toolkit=toolkit,
        source=source,
    )


def returns_schema(hint: Any, doc: Docstring, where: str) -> dict[str, Any] | str:
    """Output schema: the return annotation, with descriptions (and, for an untyped dict, the
    fields themselves) from the docstring's Returns: section."""
    if hint is None or hint is type(None):
        if not doc.return_fields:
            return doc.returns
        schema: dict[str, Any] = {"type": "object"}
    else:
        schema = dict(type_schema(hint, f"{where}.<return>"))
    if doc.returns:
        schema["description"] = doc.returns
    props = schema.get("properties")
    if props is None and schema.get("type") == "object" and doc.return_fields:
        schema["properties"] = {f: {**doc_type_schema(t), "description": d} for f, (t, d) in doc.return_fields.items()}
    elif props is not None:
        for field, (_t, desc) in doc.return_fields.items():
            if field in props:
                props[field] = {**props[field], "description": desc}
    return schema


def jsonable_default(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool, list, dict, tuple)):
        return msgspec.json.decode(msgspec.json.encode(value))
    raise TypeError(type(value).__name__)


class Toolkit:
    """Base of every toolkit. Subclasses set ``name``/``category`` and define typed public methods."""

    name: ClassVar[str] = ""
    category: ClassVar[str] = ""
    source: ClassVar[str] = "builtin"

    def __init__(self, state: dict[str, Any] | None = None, seed: int = 0):
        self.seed = seed
        self.state: dict[str, Any] = self.default_state(random.Random(seed))
        if state:
            self.state.update(copy.deepcopy(state))
        self.initial_state = self.snapshot()

    # -- for subclasses --------------------------------------------------------------------

    def default_state(self, rng: random.Random) -> dict[str, Any]:
        """The state a fresh toolkit starts from; built only from ``rng`` so it is reproducible."""
        return {}

    def new_id(self, prefix: str) -> str:
        """A fresh id such as ``BK-4F1A09``; a counter in the state keeps replays identical."""
        counters = self.state.setdefault("_counters", {})
        n = counters.get(prefix, 0) + 1
        counters[prefix] = n
        return f"{prefix}-{random.Random(f'{self.seed}|{prefix}|{n}').getrandbits(24):06X}"

    def stable_rng(self, *keys: Any) -> random.Random:
        """A generator fixed by the seed and ``keys``: the same question always gets the same answer."""
        return random.Random("|".join(map(str, (self.seed, *keys))))

    # -- the interface ---------------------------------------------------------------------

    @classmethod
    def toolkit_name(cls) -> str:
        return cls.name or cls.__name__

    @classmethod
    def catalog(cls) -> Catalog:
        cached = cls.__dict__.get("_catalog_cache")
        if cached is None:
            cached = cls.build_catalog()
            cls._catalog_cache = cached
        return cached

    @classmethod
    def build_catalog(cls) -> Catalog:
        base_attrs = {a for a in dir(Toolkit) if not a.startswith("_")}
        return introspect(
            cls, toolkit=cls.toolkit_name(), category=cls.category or cls.toolkit_name(), source=cls.source, exclude=base_attrs
        )

    @classmethod
    def specs(cls) -> list[FunctionSpec]:
        return list(cls.catalog().specs)

    def invoke(self, entry: Entry, arguments: dict[str, Any]) -> Any:
        """Run one validated call; adapters override this to reach a wrapped object."""
        return getattr(self, entry.method)(**arguments)

    def execute(self, call: ToolCall) -> ToolResult:
        entry = self.catalog().entries.get(call.name)
        if entry is None:
            return ToolResult(ok=False, error=f"unknown function '{call.name}' in toolkit '{self.toolkit_name()}'")
        try:
            arguments = validate_arguments(entry.spec.parameters, call.arguments)
            return ToolResult(ok=True, output=jsonable(self.invoke(entry, arguments)))
        except (ArgumentError, ToolError) as exc:
            return ToolResult(ok=False, error=f"{call.name}: {exc}")
        except Exception as exc:  # a bug in a tool must not kill a run; it reads as a server error
            return ToolResult(ok=False, error=f"{call.name}: internal error: {type(exc).__name__}: {exc}")

    async def aexecute(self, call: ToolCall) -> ToolResult:
        return self.execute(call)

    def snapshot(self) -> dict[str, Any]:
        return jsonable(self.state)


class ToolRuntime:
    """Live toolkit instances of one episode; routes each call by function name."""

    def __init__(self, toolkits: dict[str, Toolkit], owner: dict[str, str]):
        self.toolkits = toolkits
        self._owner = owner

    def _route(self, call: ToolCall) -> Toolkit | None:
        tk = self._owner.get(call.name)
        return self.toolkits.get(tk) if tk is not None else None

    def execute(self, call: ToolCall) -> ToolResult:
        toolkit = self._route(call)
        if toolkit is None:
            return ToolResult(ok=False, error=f"unknown function '{call.name}'")
        return toolkit.execute(call)

    async def aexecute(self, call: ToolCall) -> ToolResult:
        """Works for every toolkit kind; spec-only toolkits need it (their teacher is async)."""
        toolkit = self._route(call)
        if toolkit is None:
            return ToolResult(ok=False, error=f"unknown function '{call.name}'")
        return await toolkit.aexecute(call)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {name: tk.snapshot() for name, tk in self.toolkits.items()}

    @property
    def initial_state(self) -> dict[str, dict[str, Any]]:
        return {name: copy.deepcopy(tk.initial_state) for name, tk in self.toolkits.items()}


class ToolPool:
    """A set of toolkit classes whose function names are unique across the pool."""

    def __init__(self, toolkits: Iterable[type[Toolkit]]):
        self.toolkits: dict[str, type[Toolkit]] = {}
        self._owner: dict[str, str] = {}
        self._specs: dict[str, FunctionSpec] = {}
        for cls in toolkits:
            name = cls.toolkit_name()
            if name in self.toolkits:
                raise UserInputError(f"toolkit '{name}' is in the pool twice; give each toolkit a unique name")
            self.toolkits[name] = cls
            for spec in cls.specs():
                if spec.name in self._owner:
                    raise UserInputError(
                        f"{name}.{spec.name}: function name already defined by toolkit '{self._owner[spec.name]}'; rename one"
                    )
                self._owner[spec.name] = name
                self._specs[spec.name] = spec

    def specs(self) -> list[FunctionSpec]:
        return list(self._specs.values())

    def spec(self, function: str) -> FunctionSpec:
        return self._specs[function]

    def toolkit_of(self, function: str) -> str:
        return self._owner[function]

    def __len__(self) -> int:
        return len(self._specs)

    def instantiate(
        self, states: dict[str, dict[str, Any]] | None = None, seed: int = 0, only: Iterable[str] | None = None
    ) -> ToolRuntime:
        """Fresh instances (all toolkits, or those named in ``only``), each from its state in ``states``."""
        states = states or {}
        names = list(only) if only is not None else list(self.toolkits)
        unknown = [n for n in names if n not in self.toolkits]
        if unknown:
            raise UserInputError(f"unknown toolkit '{unknown[0]}'; the pool has {', '.join(self.toolkits)}")
        instances = {n: self.toolkits[n](state=states.get(n), seed=seed) for n in names}
        owner = {f: t for f, t in self._owner.items() if t in instances}
        return ToolRuntime(instances, owner)
