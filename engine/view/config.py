"""Every knob of `magnet view`, one typed struct; the command line is made from its fields."""

from __future__ import annotations

import argparse
import typing
from pathlib import Path
from typing import Annotated, Any

import msgspec

from engine.errors import UserInputError

Doc = msgspec.Meta
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ViewConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    run: Annotated[str, Doc(description="run folder to look at (the --out of `magnet generate`)")] = ""
    host: Annotated[str, Doc(description=(
        "address to listen on; the default serves this machine only. Anything else shows the run "
        "(model text, configs) to the network: pass it knowingly"))] = "127.0.0.1"
    port: Annotated[int, Doc(description="TCP port (0 = any free port; the address is printed)")] = 8470
    reports: Annotated[list[str], Doc(description=(
        "more folders (or files) with reports to show: `magnet eval bfcl` / `eval paths` --out folders "
        "(report.json), training --out folders (metrics.jsonl), `magnet improve` folders (rounds.json). The "
        "run folder itself is always searched"))] = []
    page_size: Annotated[int, Doc(description="records per page of a list")] = 50
    wait_s: Annotated[float, Doc(description=(
        "seconds a page may wait for the index of a large run to reach its records (after that it shows what "
        "was found and says the index is still being built)"))] = 10.0
    search_budget_s: Annotated[float, Doc(description=(
        "seconds one page of a text search may scan records; a search that runs out offers to continue "
        "from where it stopped"))] = 1.5
    graph_depth: Annotated[int, Doc(description="neighbourhood of a signature path's functions drawn from graph.json.gz: edges away")] = 1
    graph_max_nodes: Annotated[int, Doc(description="at most this many functions in a neighbourhood picture")] = 40

    def __post_init__(self) -> None:
        if not self.run:
            raise UserInputError("give the run folder to view: magnet view RUN")
        if not 0 <= self.port <= 65535:
            raise UserInputError(f"--port {self.port} is not a TCP port; use 1-65535, or 0 for any free port")
        if self.page_size < 1 or self.page_size > 1000:
            raise UserInputError(f"--page-size {self.page_size} must be 1-1000")
        if self.wait_s < 0 or self.search_budget_s <= 0:
            raise UserInputError("--wait-s must be >= 0 and --search-budget-s > 0")
        if self.graph_depth < 0 or self.graph_max_nodes < 1:
            raise UserInputError("--graph-depth must be >= 0 and --graph-max-nodes >= 1")

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK


def field_help() -> dict[str, str]:
    hints = typing.get_type_hints(ViewConfig, include_extras=True)
    return {name: next((m.description for m in getattr(h, "__metadata__", ()) if isinstance(m, msgspec.Meta)), "")
            for name, h in hints.items()}


def parser() -> argparse.ArgumentParser:
    """Flags made from the struct: a field's type picks the argparse type, its doc the help."""
    helps = field_help()
    hints = typing.get_type_hints(ViewConfig)
    p = argparse.ArgumentParser(prog="magnet view", argument_default=argparse.SUPPRESS,
                                description="Serve a read-only page to look at a run: its records, conversations, "
                                            "preference pairs, dead letters, graph and reports.")
    for name in ViewConfig.__struct_fields__:
        if name == "run":
            p.add_argument("run", help=helps["run"])
        elif hints[name] == list[str]:
            p.add_argument(f"--{name.replace('_', '-')}", dest=name, nargs="+", metavar="PATH", help=helps[name])
        else:
            p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=hints[name], help=helps[name])
    return p


def load_config(argv: list[str]) -> ViewConfig:
    args: dict[str, Any] = vars(parser().parse_args(argv))
    config = msgspec.convert(args, ViewConfig)
    run = Path(config.run)
    if not run.is_dir():
        raise UserInputError(f"run folder {run} does not exist; pass the --out of a `magnet generate` run")
    return config
