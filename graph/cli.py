"""`magnet graph build|show|stats` and `magnet paths sample`.

Each prints a rich summary table; bad input raises UserInputError (the router prints it as one
line and exits 2).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from engine.atomic import atomic_output
from engine.config_cli import ConfigCLI, describe
from engine.errors import UserInputError
from engine.records import FunctionSpec
from graph.judges import JudgeConfig
from graph.matcher import MatcherConfig
from graph.paths_config import KINDS, PathConfig

_TOOLKITS_HELP = ("toolkits to pool: builtin (all built-in domains), a built-in toolkit name, bfcl (BFCL's eight "
                  "multi-turn API classes), a .json file of OpenAI tool specs, or a .py module of tool classes")


class _Parser(argparse.ArgumentParser):
    """argparse that raises UserInputError instead of exiting, so callers (and tests) see one error type."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserInputError(f"{self.prog}: {message}; see `{self.prog} --help`")


def load_pool(names: list[str], *, bfcl_rename: bool = False) -> list[FunctionSpec]:
    """FunctionSpecs of the named toolkits (see --toolkits); unknown names -> UserInputError."""
    from graph.pool import tool_pool

    return tool_pool(names, bfcl_rename=bfcl_rename).specs()


def _stats_table(stats: dict[str, Any], title: str) -> Table:
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [("functions (nodes)", stats["nodes"]), ("dependencies (edges)", stats["edges"]),
            ("mean out-degree", stats["mean_degree"]), ("max out-degree", stats["max_out_degree"]),
            ("max in-degree", stats["max_in_degree"]), ("functions without out-edges", stats["no_out_edges"]),
            ("nested edges (Insert)", stats["nested_edges"]), ("weakly connected components", stats["weak_components"]),
            ("largest component", stats["largest_component"]), ("isolated functions", stats["isolated"]),
            ("out-degree histogram", " ".join(f"{k}:{v}" for k, v in stats["out_degree_histogram"].items())),
            ("in-degree histogram", " ".join(f"{k}:{v}" for k, v in stats["in_degree_histogram"].items())),
            ("edges by source", " ".join(f"{k}:{v}" for k, v in stats["edges_by_how"].items()))]
    if stats["isolated_examples"]:
        rows.append(("isolated (first 10)", ", ".join(stats["isolated_examples"])))
    if stats.get("judge"):
        j = stats["judge"]
        rows.append(("judge", f"{j['teacher']} ({j['mode']}): {j['calls']} calls, {j['cached']} cached, {j['failed']} failed"))
    for key, value in rows:
        table.add_row(key, str(value))
    return table


async def _build(specs: list[FunctionSpec], teacher_spec: str | None, matcher: Any, judge: Any) -> Any:
    from graph.depgraph import abuild_graph

    if teacher_spec is None:
        return await abuild_graph(specs, matcher=matcher)
    from engine.teachers import make_teacher

    teacher = make_teacher(teacher_spec)
    try:
        return await abuild_graph(specs, teacher, matcher=matcher, judge=judge)
    finally:
        await teacher.aclose()


# `graph build` flags: every MatcherConfig and JudgeConfig field (no --config: the two would share it);
# the established spellings --same-domain, --cross-domain and --judge-mode are kept.
MATCHER_CLI = ConfigCLI(MatcherConfig, config_file=False, flags={"same_domain_candidates": "--same-domain",
                                                                 "cross_domain_candidates": "--cross-domain"})
JUDGE_CLI = ConfigCLI(JudgeConfig, config_file=False, flags={"mode": "--judge-mode"})
# `paths sample` flags: every PathConfig field, also settable in --config (flat, or under [paths]).
PATHS_CLI = ConfigCLI(PathConfig, section="paths")


def _cmd_build(args: argparse.Namespace, console: Console) -> int:
    from graph.depgraph import graph_stats, save_graph

    matcher, judge = MATCHER_CLI.load(args), JUDGE_CLI.load(args)
    specs = load_pool(args.toolkits, bfcl_rename=args.bfcl_rename)
    graph = asyncio.run(_build(specs, args.teacher, matcher, judge))
    save_graph(graph, args.out)
    console.print(_stats_table(graph_stats(graph), f"dependency graph -> {args.out}"))
    return 0


def _cmd_show(args: argparse.Namespace, console: Console) -> int:
    from graph.depgraph import load_graph
    from graph.viz import render

    out = render(load_graph(args.graph), args.node, args.out, depth=args.depth, max_nodes=args.max_nodes)
    console.print(f"wrote {out} (neighbourhood of {args.node}, depth {args.depth})")
    return 0


def _cmd_stats(args: argparse.Namespace, console: Console) -> int:
    from graph.depgraph import graph_stats, load_graph

    stats = graph_stats(load_graph(args.graph))
    if args.json:
        console.print_json(msgspec.json.encode(stats).decode())
    else:
        console.print(_stats_table(stats, str(args.graph)))
    return 0


def graph_main(argv: list[str]) -> int:
    parser = _Parser(prog="magnet graph", description="build, show and summarise the function dependency graph")
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    b = sub.add_parser("build", help="build the dependency graph of a function pool")
    b.add_argument("--toolkits", nargs="+", default=["builtin"], help=_TOOLKITS_HELP)
    b.add_argument("--bfcl-rename", action="store_true", help="rename BFCL functions so the benchmark's names are not exposed")
    b.add_argument("--teacher", help="refine the matcher's graph with the LLM dependency judge of this teacher (sim, openai:MODEL@URL, vllm:DIR, "
                                     "hf:DIR, FILE.toml)")
    b.add_argument("--out", required=True, type=Path, help="graph file to write (.json, or .json.gz)")
    MATCHER_CLI.add_arguments(b, "matcher (the offline edges)")
    JUDGE_CLI.add_arguments(b, "judge (with --teacher)")
    s = sub.add_parser("show", help="draw a function's neighbourhood as PNG or HTML")
    s.add_argument("graph", type=Path, help="graph file from `magnet graph build`")
    s.add_argument("--node", required=True, help="function at the centre")
    s.add_argument("--depth", type=int, default=2, help="edges away from the centre (either direction)")
    s.add_argument("--max-nodes", type=int, default=80, help="draw at most this many functions, nearest first")
    s.add_argument("--out", required=True, type=Path, help="picture to write: NAME.png or NAME.html")
    t = sub.add_parser("stats", help="print the graph's summary table")
    t.add_argument("graph", type=Path, help="graph file from `magnet graph build`")
    t.add_argument("--json", action="store_true", help="print the statistics as JSON")
    args = parser.parse_args(argv)
    console = Console()
    return {"build": _cmd_build, "show": _cmd_show, "stats": _cmd_stats}[args.cmd](args, console)


def _paths_table(summary: dict[str, dict[str, Any]], ops: Counter[str], title: str) -> Table:
    table = Table(title=title)
    for col in ("kind", "paths", "avg turns", "avg calls", "miss_func", "miss_param"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for kind, row in summary.items():
        n = row["paths"]
        table.add_row(kind, str(n), f"{row['turns'] / n:.2f}", f"{row['calls'] / n:.2f}", str(row["miss_func"]), str(row["miss_param"]))
    table.caption = "ops applied: " + (", ".join(f"{k} {v}" for k, v in ops.most_common()) or "none")
    return table


def paths_main(argv: list[str]) -> int:
    parser = _Parser(prog="magnet paths", description="sample signature paths from a dependency graph")
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    p = sub.add_parser("sample", help="sample paths and write them as JSONL")
    p.add_argument("--graph", type=Path, help="graph file from `magnet graph build`")
    p.add_argument("--n", type=int, default=100, help="number of paths (the mixture is rescaled to it)")
    p.add_argument("--kinds", nargs="+", choices=KINDS, help="only these kinds (keeping their mixture weights)")
    p.add_argument("--seed", type=int, default=0, help="stream seed: the same seed gives the same paths")
    p.add_argument("--start", type=int, default=0, help="first path index (to shard or resume a stream)")
    p.add_argument("--help-config", action="store_true", help="list every PathConfig field as --config names it, with its default and help")
    p.add_argument("--out", type=Path, help="JSONL file of SignaturePath records (default: summary only)")
    PATHS_CLI.add_arguments(p, "path config (a .json --config file works too)")
    args = parser.parse_args(argv)
    console = Console()
    if args.help_config:
        console.print(describe(PathConfig), highlight=False)
        return 0
    if args.graph is None:
        raise UserInputError("magnet paths sample: --graph is required; build one with `magnet graph build --out graph.json`")
    return _sample(args, console)


def _sample(args: argparse.Namespace, console: Console) -> int:
    from graph.depgraph import graph_specs, load_graph
    from graph.paths import sample_paths

    config = PATHS_CLI.load(args)
    if args.kinds:
        weights = {k: w for k, w in config.mixture.items() if k in args.kinds and w > 0}
        config.mixture = weights or {k: 1.0 for k in args.kinds}
    if args.n < 0:
        raise UserInputError(f"--n {args.n}: give a number of paths >= 0")
    graph = load_graph(args.graph)
    stream = sample_paths(graph, graph_specs(graph), config, args.seed, n=args.n, start=args.start)
    summary: dict[str, dict[str, Any]] = defaultdict(Counter)
    ops: Counter[str] = Counter()
    encode = msgspec.json.Encoder().encode
    with atomic_output(args.out) if args.out else contextlib.nullcontext() as fh:
        for path in stream:
            row = summary[path.kind]
            row["paths"] += 1
            row["turns"] += len(path.turns)
            row["calls"] += sum(len(t.functions) for t in path.turns)
            for t in path.turns:
                if t.label != "call":
                    row[t.label] += 1
            ops.update(path.ops)
            if fh is not None:
                fh.write(encode(path) + b"\n")
    title = f"{sum(r['paths'] for r in summary.values())} paths (seed {args.seed})" + (f" -> {args.out}" if args.out else "")
    console.print(_paths_table(dict(summary), ops, title))
    return 0
