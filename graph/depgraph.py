"""The function dependency graph: build (matcher, optionally refined by the LLM judge), save, load, stats.

Nodes are function names carrying their FunctionSpec fields; an edge f -> g says an output
of f feeds g's input and carries ``score``, ``fields`` ("output->parameter" pairs), ``how``
(matcher, judge or matcher+judge) and ``nested`` (g can be inserted after f as an implicit
call: the Insert operation's check). Files are networkx node-link JSON, gzip when the name
ends in ``.gz``, written atomically.
"""

from __future__ import annotations

import asyncio
import gzip
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import networkx as nx
import orjson

from engine.atomic import write_atomic
from engine.errors import UserInputError
from engine.records import FunctionSpec
from engine.teacher import Teacher
from graph.judges import Judge, JudgeConfig
from graph.matcher import Matcher, MatcherConfig

FORMAT = "magnet-graph"
VERSION = 1
_SPEC_FIELDS = tuple(FunctionSpec.__struct_fields__)


def validate_specs(specs: list[FunctionSpec]) -> None:
    """Reject pools the graph cannot be built from, naming the function and the field."""
    if not specs:
        raise UserInputError("function pool is empty; give at least one toolkit or spec file")
    seen: set[str] = set()
    for spec in specs:
        if not isinstance(spec, FunctionSpec):
            raise UserInputError(f"function pool: expected FunctionSpec, got {type(spec).__name__}; convert specs first")
        if not spec.name or not spec.name.strip():
            raise UserInputError("function pool: a function has an empty name; give every function a name")
        if spec.name in seen:
            raise UserInputError(f"function pool: duplicate function name {spec.name!r}; rename one of them")
        seen.add(spec.name)
        params = spec.parameters
        if not isinstance(params, dict) or not isinstance(params.get("properties", {}), dict):
            raise UserInputError(f"function {spec.name!r}: field 'parameters' must be a JSON Schema object with a 'properties' dict")


def build_graph(specs: list[FunctionSpec], teacher: Teacher | None = None, *, matcher: MatcherConfig | None = None,
                judge: JudgeConfig | None = None) -> nx.DiGraph:
    """Dependency graph of ``specs``: the offline matcher, refined by the LLM judge when ``teacher`` is given."""
    if teacher is None:
        return _matcher_graph(specs, matcher)[0]
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(abuild_graph(specs, teacher, matcher=matcher, judge=judge))
    raise RuntimeError("build_graph with a teacher inside a running event loop: await abuild_graph(...) instead")


async def abuild_graph(specs: list[FunctionSpec], teacher: Teacher | None = None, *, matcher: MatcherConfig | None = None,
                       judge: JudgeConfig | None = None) -> nx.DiGraph:
    graph, m, candidates = _matcher_graph(specs, matcher)
    if teacher is not None:
        await _refine(graph, m, candidates, Judge(teacher, judge))
    return graph


def _matcher_graph(specs: list[FunctionSpec], config: MatcherConfig | None) -> tuple[nx.DiGraph, Matcher, list[list[int]]]:
    validate_specs(specs)
    m = Matcher(specs, config)
    graph = nx.DiGraph(format=FORMAT, version=VERSION, matcher=msgspec.to_builtins(m.config))
    for spec in specs:
        graph.add_node(spec.name, **msgspec.to_builtins(spec))
    candidates = []
    for f, spec in enumerate(specs):
        chosen, found = m.match(f)
        candidates.append(chosen)
        for g, match in found:
            graph.add_edge(spec.name, specs[g].name, score=match.score, fields=match.fields, how="matcher", nested=match.nested)
    return graph, m, candidates


async def _refine(graph: nx.DiGraph, m: Matcher, candidates: list[list[int]], judge: Judge) -> None:
    specs, cfg = m.specs, judge.config
    shown = [c[: cfg.max_candidates] for c in candidates]
    answers = await judge.related_all([(specs[f], [specs[g] for g in shown[f]]) for f in range(len(specs))])
    for f, related in enumerate(answers):
        if related is None:  # no usable answer: the matcher's edges stand for this function
            continue
        source = specs[f].name
        if cfg.mode == "replace":
            keep = set(related)
            graph.remove_edges_from([(source, specs[g].name) for g in shown[f]
                                     if specs[g].name not in keep and graph.has_edge(source, specs[g].name)])
        for name in related:
            if graph.has_edge(source, name):
                graph.edges[source, name]["how"] = "matcher+judge"
                continue
            match = m.score(f, m.index_of[name])
            graph.add_edge(source, name, score=match.score, fields=match.fields, how="judge", nested=match.nested)
    if cfg.nested:
        pairs = list(graph.edges)
        verdicts = await judge.nested_all([(specs[m.index_of[u]], specs[m.index_of[v]]) for u, v in pairs])
        for (u, v), verdict in zip(pairs, verdicts):
            if verdict is not None:
                graph.edges[u, v].update(nested=verdict.nested, nested_reason=verdict.reason, nested_by="judge")
    graph.graph["judge"] = {"teacher": judge.teacher.name, "mode": cfg.mode, "calls": judge.calls,
                            "cached": judge.cached, "failed": judge.failed}


def graph_specs(graph: nx.DiGraph) -> list[FunctionSpec]:
    """The FunctionSpecs stored on the nodes, in node order."""
    return [msgspec.convert({k: v for k, v in attrs.items() if k in _SPEC_FIELDS} | {"name": name}, FunctionSpec)
            for name, attrs in graph.nodes(data=True)]


def save_graph(graph: nx.DiGraph, path: str | Path) -> Path:
    """Write node-link JSON (gzip for ``.gz``) atomically; returns the path."""
    path = Path(path)
    data = nx.node_link_data(graph, edges="edges")
    data["graph"] = {**data.get("graph", {}), "format": FORMAT, "version": VERSION}
    raw = orjson.dumps(data)
    if path.suffix == ".gz":
        raw = gzip.compress(raw, compresslevel=6, mtime=0)
    write_atomic(path, raw)
    return path


def load_graph(path: str | Path) -> nx.DiGraph:
    """Read a file written by ``save_graph``; anything else -> UserInputError naming the file."""
    path = Path(path)
    hint = f"build one with `magnet graph build --out {path}`"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserInputError(f"graph file {path} not found; {hint}") from None
    except OSError as err:
        raise UserInputError(f"graph file {path} cannot be read ({err.strerror}); check the path") from None
    try:
        data = orjson.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    except (orjson.JSONDecodeError, OSError, EOFError):
        raise UserInputError(f"graph file {path} is not valid JSON (or is a truncated .gz); {hint}") from None
    if not isinstance(data, dict) or not isinstance(data.get("graph"), dict) or data["graph"].get("format") != FORMAT:
        raise UserInputError(f"graph file {path} is not a magnet graph (no graph.format={FORMAT!r}); {hint}")
    nodes, edges = data.get("nodes"), data.get("edges")
    if not isinstance(nodes, list) or not isinstance(edges, list):
        raise UserInputError(f"graph file {path}: 'nodes' and 'edges' must be lists; {hint}")
    ids = set()
    for node in nodes:
        if not isinstance(node, dict) or not isinstance(node.get("id"), str):
            raise UserInputError(f"graph file {path}: a node has no string 'id'; {hint}")
        try:
            msgspec.convert({k: v for k, v in node.items() if k in _SPEC_FIELDS} | {"name": node["id"]}, FunctionSpec)
        except msgspec.ValidationError as err:
            raise UserInputError(f"graph file {path}: node {node['id']!r} is not a valid function spec ({err}); {hint}") from None
        ids.add(node["id"])
    for edge in edges:
        if not isinstance(edge, dict) or edge.get("source") not in ids or edge.get("target") not in ids:
            raise UserInputError(f"graph file {path}: edge {str(edge)[:80]} names an unknown node; {hint}")
    return nx.node_link_graph(data, directed=True, multigraph=False, edges="edges")


def _histogram(degrees: list[int]) -> dict[str, int]:
    """Degrees bucketed by powers of two: 0, 1, 2-3, 4-7, ..."""
    out: Counter[str] = Counter()
    for d in degrees:
        lo = 0 if d == 0 else 1 << (d.bit_length() - 1)
        out[str(lo) if lo <= 1 else f"{lo}-{2 * lo - 1}"] += 1
    return dict(sorted(out.items(), key=lambda kv: int(kv[0].split("-")[0])))


def graph_stats(graph: nx.DiGraph) -> dict[str, Any]:
    """Nodes, edges, degree distributions, weakly connected components and isolated functions."""
    n = graph.number_of_nodes()
    outs = [d for _, d in graph.out_degree()]
    ins = [d for _, d in graph.in_degree()]
    components = sorted((len(c) for c in nx.weakly_connected_components(graph)), reverse=True)
    isolated = sorted(nx.isolates(graph))
    return {
        "nodes": n,
        "edges": graph.number_of_edges(),
        "mean_degree": round(graph.number_of_edges() / n, 3) if n else 0.0,
        "max_out_degree": max(outs, default=0),
        "max_in_degree": max(ins, default=0),
        "no_out_edges": sum(1 for d in outs if d == 0),
        "out_degree_histogram": _histogram(outs),
        "in_degree_histogram": _histogram(ins),
        "weak_components": len(components),
        "largest_component": components[0] if components else 0,
        "isolated": len(isolated),
        "isolated_examples": isolated[:10],
        "edges_by_how": dict(Counter(h for _, _, h in graph.edges(data="how"))),
        "nested_edges": sum(1 for _, _, v in graph.edges(data="nested") if v),
        "judge": graph.graph.get("judge"),
    }
