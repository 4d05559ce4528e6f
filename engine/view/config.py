"""Every knob of `magnet view`, one typed struct; the command line is made from its fields (engine.config_cli)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated

import msgspec

from engine.config_cli import ConfigCLI, doc
from engine.errors import UserInputError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ViewConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    run: Annotated[str, doc("run folder to look at (the --out of `magnet generate`)")] = ""
    host: Annotated[str, doc(
        "address to listen on; the default serves this machine only. Anything else shows the run "
        "(model text, configs) to the network: pass it knowingly")] = "127.0.0.1"
    port: Annotated[int, doc("TCP port (0 = any free port; the address is printed)")] = 8470
    reports: Annotated[list[str], doc(
        "more folders (or files) with reports to show: `magnet eval bfcl` / `eval paths` --out folders "
        "(report.json), training --out folders (metrics.jsonl), `magnet improve` folders (rounds.json). The "
        "run folder itself is always searched")] = []
    page_size: Annotated[int, doc("records per page of a list")] = 50
    wait_s: Annotated[float, doc(
        "seconds a page may wait for the index of a large run to reach its records (after that it shows what "
        "was found and says the index is still being built)")] = 10.0
    search_budget_s: Annotated[float, doc(
        "seconds one page of a text search may scan records; a search that runs out offers to continue "
        "from where it stopped")] = 1.5
    graph_depth: Annotated[int, doc("neighbourhood of a signature path's functions drawn from graph.json.gz: edges away")] = 1
    graph_max_nodes: Annotated[int, doc("at most this many functions in a neighbourhood picture")] = 40

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


# Every option is a ViewConfig field; the run folder is the positional argument.
CONFIG = ConfigCLI(ViewConfig, section="view", positional=("run",))


def load_config(argv: list[str]) -> ViewConfig:
    p = argparse.ArgumentParser(prog="magnet view", description="Serve a read-only page to look at a run: its records, "
                                "conversations, preference pairs, dead letters, graph and reports.")
    CONFIG.add_arguments(p)
    config = CONFIG.load(p.parse_args(argv))
    run = Path(config.run)
    if not run.is_dir():
        raise UserInputError(f"run folder {run} does not exist; pass the --out of a `magnet generate` run")
    return config
