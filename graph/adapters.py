"""Users' own tools as toolkits: Python classes and modules, BFCL's API classes, OpenAI JSON specs.

A plain Python class becomes a toolkit by introspection (public methods, type hints,
Google-style docstrings, exactly like the built-ins). Its instance is the state: a toolkit is
rebuilt from a state dict by ``_load_scenario(state)`` when the class has one (BFCL's
convention) or by setting the attributes named in the dict, and ``snapshot()`` returns its
public attributes. Definition errors (missing type hints, unserializable defaults, duplicate
names, no docstring) raise ``UserInputError`` naming the class, function and field.

BFCL's eight multi-turn classes (``graph.bfcl_tools``, built on ``PythonToolkit``) and
OpenAI-style JSON specs whose execution is simulated (``graph.spec_tools``) are reachable from
here too, so every adapter has one import path; they load on first use.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from engine.errors import UserInputError
from graph.toolkit import Entry, ToolError, Toolkit, introspect, jsonable, public_state

# Re-exports resolved on first access (PEP 562): graph.bfcl_tools builds on PythonToolkit below.
_LAZY = {
    "BFCL_CLASSES": "graph.bfcl_tools", "bfcl_pool": "graph.bfcl_tools", "bfcl_toolkits": "graph.bfcl_tools",
    "rename_map": "graph.bfcl_tools", "rewrite_descriptions": "graph.bfcl_tools",
    "SpecToolkit": "graph.spec_tools", "spec_toolkit": "graph.spec_tools",
}
__all__ = ["PythonToolkit", "api_error", "public_state", "toolkit_from_class", "toolkit_from_module", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def api_error(out: Any) -> str | None:
    """The message of a failure returned BFCL-style ({"error": "..."}, or a list holding only that)."""
    if isinstance(out, list) and len(out) == 1:
        out = out[0]
    if isinstance(out, dict) and set(out) == {"error"}:
        return str(out["error"])
    return None


class PythonToolkit(Toolkit):
    """A toolkit around an instance of a user's class (``target``)."""

    target: ClassVar[type]
    source = "python"

    def __init__(self, state: dict[str, Any] | None = None, seed: int = 0):
        self.seed = seed
        self.obj = self.target()
        self.initial_state = jsonable(state or {})
        if hasattr(self.obj, "_load_scenario"):  # BFCL's convention; it fills in its own defaults
            self.obj._load_scenario(copy.deepcopy(state or {}))
        else:
            for key, value in copy.deepcopy(state or {}).items():
                setattr(self.obj, key, value)

    @classmethod
    def build_catalog(cls):  # type: ignore[override]
        return introspect(cls.target, toolkit=cls.toolkit_name(), category=cls.category or cls.toolkit_name(), source=cls.source)

    def invoke(self, entry: Entry, arguments: dict[str, Any]) -> Any:
        out = getattr(self.obj, entry.method)(**arguments)
        message = api_error(out)
        if message is not None:
            raise ToolError(message)
        return out

    @property
    def state(self) -> dict[str, Any]:  # type: ignore[override]
        """The live state is the wrapped object; read it as its public attributes."""
        return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        return jsonable(public_state(self.obj))


def toolkit_from_class(cls: type, *, name: str | None = None, category: str | None = None, source: str | None = None) -> type[Toolkit]:
    """A toolkit class for ``cls`` (a Toolkit subclass is returned as it is, after its specs check)."""
    if not inspect.isclass(cls):
        raise UserInputError(f"{cls!r} is not a class; pass the class itself, not an instance")
    if issubclass(cls, Toolkit):
        cls.specs()
        return cls
    init = inspect.signature(cls.__init__) if cls.__init__ is not object.__init__ else None
    if init is not None:
        needed = [p for p in list(init.parameters.values())[1:]
                  if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if needed:
            raise UserInputError(f"{cls.__name__}.__init__.{needed[0].name}: the constructor must work without "
                                 "arguments; give it a default and load state through _load_scenario(state)")
    tk_name = name or cls.__name__
    wrapper = type(f"{cls.__name__}Toolkit", (PythonToolkit,), {
        "target": cls, "name": tk_name, "category": category or tk_name,
        "source": source or f"python:{cls.__module__}", "__module__": __name__,
    })
    wrapper.specs()  # validate now: a definition error surfaces when the toolkit is loaded, not mid-run
    return wrapper


def _load_module(module_or_path: str | Path | ModuleType) -> ModuleType:
    if isinstance(module_or_path, ModuleType):
        return module_or_path
    text = str(module_or_path)
    if text.endswith(".py") or Path(text).is_file():
        path = Path(text)
        if not path.is_file():
            raise UserInputError(f"tool module '{text}' does not exist; give a .py file path or a dotted module name")
        name = f"magnet_user_tools_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise UserInputError(f"tool module '{text}' cannot be imported; is it a Python file?")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses/typing resolve names through sys.modules
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise UserInputError(f"tool module '{text}' failed to import: {type(exc).__name__}: {exc}") from exc
        return module
    try:
        return importlib.import_module(text)
    except ImportError as exc:
        raise UserInputError(f"tool module '{text}' cannot be imported ({exc}); check the name or give a file path") from exc


def _is_tool_class(obj: Any, module: ModuleType) -> bool:
    if not inspect.isclass(obj) or obj.__module__ != module.__name__ or obj.__name__.startswith("_"):
        return False
    if issubclass(obj, (BaseException, dict, tuple)) or obj is Toolkit:  # errors, TypedDicts, NamedTuples
        return False
    return any(not n.startswith("_") for n, _ in inspect.getmembers(obj, predicate=inspect.isfunction))


def toolkit_from_module(module_or_path: str | Path | ModuleType) -> list[type[Toolkit]]:
    """Every public class defined in a module (a dotted name, a .py path or the module) as a toolkit."""
    module = _load_module(module_or_path)
    classes = [obj for _n, obj in inspect.getmembers(module) if _is_tool_class(obj, module)]
    if not classes:
        raise UserInputError(f"module '{module.__name__}' defines no class with public methods; nothing to load")
    return [toolkit_from_class(c, source=f"python:{module.__name__}") for c in classes]
