"""Toolkits named on a command line -> one executable ``ToolPool``: the loader behind every
``--toolkits`` (`magnet generate`, `magnet graph build`, `magnet eval paths`), so each command
accepts the same names."""

from __future__ import annotations

from pathlib import Path

from engine.errors import UserInputError
from graph.toolkit import Toolkit, ToolPool


def tool_pool(names: list[str], *, bfcl_rename: bool = False) -> ToolPool:
    """The named toolkits (see --toolkits) as one executable pool; unknown names -> UserInputError."""
    from graph.toolkits import builtin_toolkits

    builtins = builtin_toolkits()
    classes: list[type[Toolkit]] = []
    for name in names:
        if name == "builtin":
            classes += builtins.values()
        elif name in builtins:
            classes.append(builtins[name])
        elif name == "bfcl":
            from graph.adapters import bfcl_toolkits

            classes += bfcl_toolkits(rename=bfcl_rename)
        elif name.endswith(".json"):
            from graph.adapters import spec_toolkit

            classes.append(spec_toolkit(name))
        elif name.endswith(".py"):
            from graph.adapters import toolkit_from_module

            if not Path(name).is_file():
                raise UserInputError(f"--toolkits {name}: no such file; give an existing .py module of tool classes")
            classes += toolkit_from_module(name)
        else:
            raise UserInputError(f"--toolkits {name}: unknown toolkit; choose builtin, bfcl, one of "
                                 f"{', '.join(sorted(builtins))}, a .json spec file or a .py module")
    return ToolPool(classes)
