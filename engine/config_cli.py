"""A typed config Struct as a command line: one flag per field, ``--config FILE``, help from field docs.

The role TRL's HfArgumentParser plays. A command declares its knobs once, as a msgspec Struct
whose fields carry ``doc(...)`` metadata, and gets its flags, their help (the field's doc and
default) and config-file loading from it. Precedence: defaults < ``--config`` file (flat, or
under a ``[section]`` table) < flags. What is not a knob (positional run folders, ``--force``,
``--no-progress``) the command declares itself.

Flags by annotation (``X | None`` and ``Annotated`` are looked through):
- ``bool``: ``--x`` / ``--no-x``
- ``Literal[...]``: ``--x CHOICE``
- ``int`` / ``float`` / ``str``: ``--x VALUE``
- ``list[X]``: ``--x A B``, ``--x A,B`` and ``--x A --x B`` alike (every spelling the commands used)
- ``dict``: ``--x-singular KEY=VALUE`` (``teacher_options`` -> ``--teacher-option``), repeatable;
  VALUE is read as JSON, else as text; the pairs update the file's table key by key
- anything else: only in the config file
"""

from __future__ import annotations

import argparse
import json
import re
import tomllib
import types
import typing
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from engine.errors import UserInputError

_SCALARS = (int, float, str)


def doc(text: str, **bounds: Any) -> msgspec.Meta:
    """A field's help text (and msgspec bounds) as Annotated metadata: ``Annotated[int, doc("...", ge=1)]``."""
    return msgspec.Meta(description=text, **bounds)


def _description(hint: Any) -> str:
    """The outermost ``Meta(description=...)`` on a type (metadata of nested Annotated types flattens into one list)."""
    metas = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, msgspec.Meta) and m.description]
    return metas[-1].description if metas else ""


def _bare(tp: Any) -> Any:
    """The type under ``Annotated`` and ``| None``: what a flag's value is."""
    while True:
        if typing.get_origin(tp) is Annotated:
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp):
            rest = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(rest) != 1:
                return tp
            tp = rest[0]
        else:
            return tp


def _default(field: msgspec.structs.FieldInfo) -> Any:
    if field.default is not msgspec.NODEFAULT:
        return field.default
    return field.default_factory() if field.default_factory is not msgspec.NODEFAULT else msgspec.NODEFAULT


def field_docs(cls: type[msgspec.Struct]) -> dict[str, str]:
    """Field name -> its help text with its default (or "required")."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out = {}
    for f in msgspec.structs.fields(cls):
        default = _default(f)
        tail = "required" if default is msgspec.NODEFAULT else "default: " + msgspec.json.encode(default).decode()
        out[f.name] = f"{_description(hints[f.name])} ({tail})".lstrip()
    return out


def describe(cls: type[msgspec.Struct]) -> str:
    """One line per field, as a config file names it: ``name: help (default: ...)``."""
    return "\n".join(f"{name}: {text}" for name, text in field_docs(cls).items())


def _items(item: type) -> Any:
    """The argparse type of one list argument: comma-separated values of ``item``."""

    def parse(text: str) -> list[Any]:
        return [item(x.strip()) for x in text.split(",") if x.strip()]

    parse.__name__ = f"{item.__name__} list"  # argparse's error says "invalid int list value"
    return parse


def _key_values(items: list[str], flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UserInputError(f"{flag} {item!r} is not KEY=VALUE; give one KEY=VALUE per {flag}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a plain string, e.g. dtype=float32
    return out


def _read_table(path: str, section: str | None) -> dict[str, Any]:
    """A config file's fields: TOML (JSON for a .json file), flat or under ``[section]``."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        why = "it does not exist" if isinstance(err, FileNotFoundError) else err.strerror
        raise UserInputError(f"--config {path} cannot be read ({why}); give an existing TOML file") from None
    is_json = path.endswith(".json")
    try:
        data = json.loads(raw) if is_json else tomllib.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as err:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        raise UserInputError(f"--config {path} is not valid {'JSON' if is_json else 'TOML'} ({err}); fix the file") from None
    if not isinstance(data, dict):
        raise UserInputError(f"--config {path}: expected a table of fields; write one `name = value` per field")
    return data[section] if section and isinstance(data.get(section), dict) else data


class ConfigCLI:
    """The flags of one config Struct on an argparse parser, and the Struct back from parsed args."""

    def __init__(self, cls: type[msgspec.Struct], *, section: str | None = None, positional: Collection[str] = (),
                 flags: dict[str, str] | None = None, config_file: bool = True):
        """``section``: the config file table read when present; ``positional``: fields taken as positional
        arguments; ``flags``: field -> flag spelling where a command's established one differs from the
        field name; ``config_file``: add ``--config`` (off where two structs share one parser)."""
        self.cls, self.section, self.positional, self.config_file = cls, section, set(positional), config_file
        self.fields = msgspec.structs.fields(cls)
        hints = typing.get_type_hints(cls)
        self.types = {f.name: _bare(hints[f.name]) for f in self.fields}
        self.flag = {f.name: (flags or {}).get(f.name) or self._flag_name(f.name) for f in self.fields}
        self.prog = cls.__name__  # the command's name once add_arguments has seen its parser

    def _flag_name(self, name: str) -> str:
        # A dict flag gives one KEY=VALUE per use: singular (teacher_options -> --teacher-option).
        stem = name.removesuffix("s") if typing.get_origin(self.types[name]) is dict else name
        return "--" + stem.replace("_", "-")

    def add_arguments(self, parser: argparse.ArgumentParser, title: str = "options") -> None:
        """``--config`` (if wanted) and one argument per field, in a group titled ``title``."""
        self.prog = parser.prog
        if self.config_file:
            table = f" (flat, or under a [{self.section}] table)" if self.section else ""
            parser.add_argument("--config", metavar="FILE.toml", help=f"TOML file of the options below{table}; flags override it")
        group = parser.add_argument_group(title)
        helps, hints = field_docs(self.cls), typing.get_type_hints(self.cls, include_extras=True)
        for f in self.fields:
            tp, help_ = self.types[f.name], helps[f.name].replace("%", "%%")
            if f.name in self.positional:  # always given: its default is no help
                group.add_argument(f.name, help=_description(hints[f.name]).replace("%", "%%"))
                continue
            kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_}
            origin = typing.get_origin(tp)
            if tp is bool:
                group.add_argument(self.flag[f.name], action=argparse.BooleanOptionalAction, **kw)
            elif origin is Literal:
                group.add_argument(self.flag[f.name], choices=typing.get_args(tp), **kw)
            elif tp in _SCALARS:
                group.add_argument(self.flag[f.name], type=tp, **kw)
            elif origin is list and _bare(typing.get_args(tp)[0]) in _SCALARS:
                item = _bare(typing.get_args(tp)[0])
                kw["help"] += "; several values: A B or A,B"
                group.add_argument(self.flag[f.name], nargs="+", action="extend", type=_items(item), **kw)
            elif origin is dict:
                kw["help"] += "; one KEY=VALUE per flag (VALUE read as JSON, else as text), repeatable"
                group.add_argument(self.flag[f.name], action="append", metavar="KEY=VALUE", **kw)
            # other types (nested structs, ...) are set in the config file only

    def flag_values(self, args: argparse.Namespace) -> dict[str, Any]:
        """The fields the command line set."""
        out: dict[str, Any] = {}
        for name in (f.name for f in self.fields if hasattr(args, f.name)):
            value, origin = getattr(args, name), typing.get_origin(self.types[name])
            if origin is list:
                value = [x for part in value for x in part]  # each argument is a comma-split list
            elif origin is dict:
                value = _key_values(value, self.flag[name])
            out[name] = value
        return out

    def values(self, args: argparse.Namespace) -> dict[str, Any]:
        """The config file's fields with the command line's on top (a dict field merges key by key)."""
        path = getattr(args, "config", None) if self.config_file else None
        data = dict(_read_table(str(path), self.section)) if path else {}
        for name, value in self.flag_values(args).items():
            merge = isinstance(value, dict) and isinstance(data.get(name), dict)
            data[name] = {**data[name], **value} if merge else value
        return data

    def convert(self, data: dict[str, Any]) -> Any:
        """The Struct; a bad value is one line naming the flag, the file key and the fix."""
        try:
            return msgspec.convert(data, self.cls)
        except msgspec.ValidationError as err:
            raise UserInputError(self._explain(str(err), data)) from None

    def load(self, args: argparse.Namespace) -> Any:
        """defaults < --config file < flags, as the Struct."""
        return self.convert(self.values(args))

    def _explain(self, message: str, data: dict[str, Any]) -> str:
        where = re.search(r"`\$\.(\w+)|field `(\w+)`", message)
        name = next((g for g in where.groups() if g), "") if where else ""
        see = f"see `{self.prog} --help`"
        if "unknown field" in message:  # only a config file can name one
            return f"{self.prog} --config: unknown option {name!r}; valid ones are {', '.join(f.name for f in self.fields)}"
        if name not in self.flag:
            return f"{self.prog} config: {message}; {see}"
        label = name if name in self.positional else self.flag[name] + (f" ({name} in --config)" if self.config_file else "")
        if "missing required field" in message:
            hint = typing.get_type_hints(self.cls, include_extras=True)[name]
            return f"{label} is required: {_description(hint)}"
        detail = re.sub(r" - at `[^`]*`$", "", message)
        given = f" {data[name]!r}" if name in data else ""
        return f"{label}{given}: {detail}; give a valid value ({see})"
