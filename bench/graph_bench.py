"""Benchmark: dependency-graph construction and signature-path sampling at scale.

`python -m bench.graph_bench [--quick]` builds graphs with the offline matcher for generated
pools of 1k, 2.5k, 5k and 10k spec functions (time, peak RSS, time per function so growth can
be read as near-linear or not), then samples paths from the 10k graph: rate, and RSS every
100k paths over 1,000,000 to show memory stays flat. Writes bench/results/graph_bench.{json,md}.

Construction runs in a fresh child process per size, so each peak RSS is that size's own and
not the high-water mark of an earlier, larger run.

``synthetic_pool`` is also the test suites' generator of realistic spec pools: toolkits of one
domain each, functions named ``verb_entity`` whose outputs (``flight_id``, ``total_price``)
are the parameters of others, as in real APIs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.results_io import RESULTS, describe, loadavg, machine, utc_now, write_results
from engine.records import FunctionSpec

# domain -> entities; every entity gets an ``<entity>_id`` and some attributes.
DOMAINS: dict[str, list[str]] = {
    "travel": ["flight", "hotel", "booking", "passenger", "airport", "seat", "itinerary", "visa"],
    "files": ["file", "directory", "document", "attachment", "archive", "share_link"],
    "messaging": ["message", "conversation", "contact", "channel", "thread", "draft"],
    "calendar": ["event", "meeting", "reminder", "invite", "room", "schedule"],
    "banking": ["account", "transaction", "card", "payment", "transfer", "statement", "loan"],
    "shopping": ["order", "product", "cart", "coupon", "shipment", "review", "wishlist"],
    "geo": ["location", "route", "city", "place", "forecast", "region"],
    "notes": ["note", "notebook", "tag", "checklist", "page"],
    "home": ["device", "scene", "thermostat", "light", "lock", "sensor"],
    "vehicle": ["vehicle", "trip", "charger", "parking_spot", "maintenance"],
    "health": ["patient", "appointment", "prescription", "doctor", "lab_result"],
    "social": ["post", "comment", "profile", "follower", "story"],
    "music": ["song", "album", "playlist", "artist", "podcast"],
    "jobs": ["job", "application", "candidate", "interview", "offer"],
    "food": ["restaurant", "menu_item", "reservation", "delivery", "recipe"],
    "support": ["ticket", "agent", "article", "escalation", "survey"],
}
ATTRIBUTES: list[tuple[str, str]] = [
    ("name", "string"), ("title", "string"), ("total_price", "number"), ("amount", "number"),
    ("currency", "string"), ("date", "string"), ("email", "string"), ("address", "string"),
    ("city", "string"), ("quantity", "integer"), ("status", "string"), ("url", "string"),
    ("distance_km", "number"), ("duration_minutes", "integer"), ("latitude", "number"),
    ("longitude", "number"), ("content", "string"), ("access_token", "string"), ("rating", "number"),
    ("phone_number", "string"), ("start_time", "string"), ("end_time", "string"), ("user_id", "string"),
]
VERBS = ["search", "get", "create", "update", "delete", "list", "share", "archive", "estimate", "validate"]


def _prop(name: str, kind: str, what: str) -> dict[str, Any]:
    return {"type": kind, "description": f"The {name.replace('_', ' ')} of the {what.replace('_', ' ')}."}


def _function(rng: random.Random, name: str, verb: str, entity: str, others: list[str], toolkit: str, domain: str) -> FunctionSpec:
    """One CRUD-style function whose parameters and outputs name ids and attributes."""
    eid = f"{entity}_id"
    attrs = rng.sample(ATTRIBUTES, 3)
    other = rng.choice(others)
    if verb in ("search", "list"):
        params = {"query": _prop("query", "string", entity), "limit": _prop("limit", "integer", "result list")}
        if verb == "list":
            params = {f"{other}_id": _prop(f"{other}_id", "string", other), "limit": params["limit"]}
        item = {eid: _prop(eid, "string", entity)} | {a: _prop(a, t, entity) for a, t in attrs[:2]}
        returns: dict[str, Any] = {"type": "array", "items": {"type": "object", "properties": item}}
        required = list(params)[:1]
    elif verb == "create":
        params = {a: _prop(a, t, entity) for a, t in attrs} | {f"{other}_id": _prop(f"{other}_id", "string", other)}
        returns = {"type": "object", "properties": {eid: _prop(eid, "string", entity), "status": _prop("status", "string", entity)}}
        required = list(params)
    else:
        params = {eid: _prop(eid, "string", entity)} | {a: _prop(a, t, entity) for a, t in attrs[:1]}
        props = {a: _prop(a, t, entity) for a, t in attrs[1:]} | {f"{other}_id": _prop(f"{other}_id", "string", other)}
        returns = {"type": "object", "properties": props}
        required = [eid]
    return FunctionSpec(
        name=name,
        description=f"{verb.capitalize()} {entity.replace('_', ' ')} records in the {domain} service.",
        parameters={"type": "object", "properties": params, "required": required},
        returns=returns,
        category=domain,
        toolkit=toolkit,
        source="synthetic",
    )


def synthetic_pool(n: int, *, seed: int = 0, per_toolkit: int = 25) -> list[FunctionSpec]:
    """``n`` spec functions in toolkits of ``per_toolkit``, deterministic in ``seed``."""
    rng = random.Random(seed)
    domains = list(DOMAINS)
    used: dict[str, int] = {}
    specs: list[FunctionSpec] = []
    t = 0
    while len(specs) < n:
        domain = domains[t % len(domains)]
        toolkit = f"{domain}_{t // len(domains)}"
        entities = DOMAINS[domain]
        for _ in range(min(per_toolkit, n - len(specs))):
            verb, entity = rng.choice(VERBS), rng.choice(entities)
            plural = entity[:-1] + "ies" if entity.endswith("y") else entity + "s"
            base = f"{verb}_{plural}" if verb in ("search", "list") else f"{verb}_{entity}"
            used[base] = used.get(base, 0) + 1
            name = base if used[base] == 1 else f"{base}_{used[base]}"
            specs.append(_function(rng, name, verb, entity, [e for e in entities if e != entity], toolkit, domain))
        t += 1
    return specs


def _rss_mb() -> float:
    """Current resident set size (Linux /proc), in MiB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _build_one(n: int, queue: Any, save_to: str | None) -> None:
    from graph.depgraph import build_graph, graph_stats, save_graph

    specs = synthetic_pool(n, seed=n)
    start, cpu = time.perf_counter(), time.process_time()
    graph = build_graph(specs)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    stats = graph_stats(graph)
    if save_to:
        save_graph(graph, save_to)
    queue.put({"functions": n, "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "peak_rss_mb": round(_peak_rss_mb(), 1),
               "edges": stats["edges"], "isolated": stats["isolated"], "components": stats["weak_components"]})


def bench_build(sizes: list[int], keep_last: Path) -> list[dict[str, Any]]:
    """Build each size in its own process; the largest graph is saved to ``keep_last`` for the path benchmark."""
    ctx = mp.get_context("spawn")
    rows = []
    for n in sizes:
        queue = ctx.Queue()
        proc = ctx.Process(target=_build_one, args=(n, queue, str(keep_last) if n == sizes[-1] else None))
        proc.start()
        row = queue.get()
        proc.join()
        row["ms_per_function"] = round(1000 * row["seconds"] / n, 3)
        row["cpu_ms_per_function"] = round(1000 * row["cpu_seconds"] / n, 3)
        rows.append(row)
        print(f"build {n:>6} functions: {row['seconds']:.2f} s, {row['edges']} edges, peak {row['peak_rss_mb']:.0f} MiB", flush=True)
    base = rows[0]["cpu_ms_per_function"]
    for row in rows:
        row["cpu_ms_per_function_vs_smallest"] = round(row["cpu_ms_per_function"] / base, 3)
    return rows


def bench_paths(graph_file: Path, total: int, every: int) -> dict[str, Any]:
    from graph.depgraph import graph_specs, load_graph
    from graph.paths import sample_paths
    from graph.paths_config import PathConfig

    graph = load_graph(graph_file)
    specs = graph_specs(graph)
    n_functions = len(specs)
    samples = []
    turns = 0
    start, cpu = time.perf_counter(), time.process_time()
    for i, path in enumerate(sample_paths(graph, specs, PathConfig(), seed=1, n=total), 1):
        turns += len(path.turns)
        if i % every == 0:
            samples.append({"paths": i, "seconds": round(time.perf_counter() - start, 2), "rss_mb": round(_rss_mb(), 1)})
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    rss = [s["rss_mb"] for s in samples]
    return {"functions": n_functions, "paths": total, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "paths_per_s": round(total / seconds), "paths_per_cpu_s": round(total / cpu), "avg_turns": round(turns / total, 3),
            "rss_samples": samples, "rss_growth_mb_first_to_last": round(rss[-1] - rss[0], 1) if rss else 0.0}


def _markdown(result: dict[str, Any]) -> str:
    lines = [f"# Graph benchmark ({result['date']})", "", f"Machine: {describe(result['machine'])}, at end "
             f"{result['loadavg_end']} (the machine is shared: CPU time is the stable measure, "
             "wall time includes waiting for a core)", "",
             "## Construction (offline matcher)", "",
             "| functions | wall s | CPU s | CPU ms/function | vs smallest | peak RSS MiB | edges | isolated | components |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["build"]:
        lines.append(f"| {r['functions']} | {r['seconds']} | {r['cpu_seconds']} | {r['cpu_ms_per_function']} | "
                     f"{r['cpu_ms_per_function_vs_smallest']} | {r['peak_rss_mb']} | {r['edges']} | {r['isolated']} | {r['components']} |")
    p = result["paths"]
    lines += ["", "## Path sampling", "", f"{p['paths']} paths from the {p['functions']}-function graph: {p['seconds']} s wall, "
              f"{p['cpu_seconds']} s CPU: **{p['paths_per_cpu_s']} paths per CPU-second** ({p['paths_per_s']} per wall second), "
              f"avg {p['avg_turns']} turns; RSS growth first to last sample: {p['rss_growth_mb_first_to_last']} MiB.", "",
              "| paths | wall seconds | RSS MiB |", "|---:|---:|---:|"]
    lines += [f"| {s['paths']} | {s['seconds']} | {s['rss_mb']} |" for s in p["rss_samples"]]
    lines += ["", "Targets: 10k functions under 60 s and 2 GB, near-linear growth (CPU ms/function flat); "
              ">= 20,000 paths/s; RSS flat over the sampled paths.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.graph_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and 100k paths (a smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for graph_bench.json/.md")
    args = parser.parse_args(argv)
    sizes = [250, 500, 1000] if args.quick else [1000, 2500, 5000, 10000]
    total, every = (100_000, 20_000) if args.quick else (1_000_000, 100_000)
    result: dict[str, Any] = {
        "date": utc_now(),
        "machine": machine(),
        "quick": args.quick,
    }
    with tempfile.TemporaryDirectory() as tmp:
        graph_file = Path(tmp) / "graph.json"
        result["build"] = bench_build(sizes, graph_file)
        result["paths"] = bench_paths(graph_file, total, every)
    result["loadavg_end"] = loadavg()
    print(f"paths: {result['paths']['paths_per_s']} paths/s wall, {result['paths']['paths_per_cpu_s']} per CPU-s, RSS growth "
          f"{result['paths']['rss_growth_mb_first_to_last']} MiB", flush=True)
    write_results("graph_bench", result, _markdown(result), args.out)
    print(json.dumps({k: result[k] for k in ("date", "machine")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
