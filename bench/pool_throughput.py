"""Benchmark: a teacher pool of N loopback endpoints vs one endpoint: does throughput add up?

`python -m bench.pool_throughput [--sizes 1,2,4,8,16] [--latency-ms 100] [--capacity 4]` writes
bench/results/pool_throughput.{json,md}.

Each endpoint is a simulator server (``engine.sim_server``) with a fixed answer latency, and the
client may keep ``--capacity`` requests in flight on each (its ``max_concurrency``), so one
endpoint serves at most capacity / latency requests per second, like a vLLM server with a fixed
batch. The servers run in a child process so that the client's CPU time is its own. The
baseline is one plain ``OpenAIHTTPTeacher``; a pool of N runs N times the requests with twice
N times the capacity offered (the pool, not the caller, must spread them). Target: pool
throughput >= 0.9 N times the single endpoint's while the client is not CPU-bound (its CPU
seconds per wall second are reported beside every row).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import time
from pathlib import Path
from typing import Any

from bench.results_io import RESULTS, describe, loadavg, machine, utc_now, write_results
from engine.records import Message
from engine.scheduler import run
from engine.teachers import make_teacher


def _serve(n: int, latency_ms: float, conn: Any) -> None:
    """Child process: N simulator servers on one loop; send their URLs, serve until told to stop."""
    import contextlib

    from engine.sim_server import serve_sim

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            urls = [await stack.enter_async_context(serve_sim(same_loop=True, seed=i, latency_ms=latency_ms)) for i in range(n)]
            conn.send(urls)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)

    asyncio.run(main())


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def drive(teacher: Any, requests: int, in_flight: int) -> dict[str, float]:
    """Send ``requests`` chats with ``in_flight`` callers; wall time, rate and client CPU share."""
    todo = iter(range(min(8, in_flight)))  # warm-up: connections, first-request probes

    async def caller() -> None:
        for i in todo:
            await teacher.chat([Message(role="user", content=f"Summarise item {i} in a few words.")], max_tokens=16)

    await asyncio.gather(*(caller() for _ in range(in_flight)))
    todo = iter(range(requests))
    cpu, start = _cpu_s(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(in_flight)))
    wall = time.perf_counter() - start
    return {"requests": requests, "wall_s": round(wall, 3), "req_per_s": round(requests / wall, 2),
            "client_cpu_share": round((_cpu_s() - cpu) / wall, 3)}


async def measure(urls: list[str], sizes: list[int], capacity: int, per_endpoint: int) -> list[dict[str, Any]]:
    rows = []
    single = make_teacher(f"openai:sim@{urls[0]}", max_concurrency=capacity, probe_limits=False)
    try:
        base = await drive(single, per_endpoint, 2 * capacity)
    finally:
        await single.aclose()
    rows.append({"endpoints": 1, "teacher": "single OpenAIHTTPTeacher", **base, "ratio_to_single": 1.0, "ratio_per_endpoint": 1.0})
    for n in sizes:
        spec = "pool:" + ",".join(f"openai:sim@{u}" for u in urls[:n])
        pool = make_teacher({"spec": spec, "max_concurrency": capacity, "probe_limits": False})
        try:
            got = await drive(pool, per_endpoint * n, 2 * capacity * n)
            served = [m["served"] for m in pool.snapshot()]  # warm-up requests included
        finally:
            await pool.aclose()
        ratio = got["req_per_s"] / base["req_per_s"]
        rows.append({"endpoints": n, "teacher": f"pool of {n}", **got, "ratio_to_single": round(ratio, 3),
                     "ratio_per_endpoint": round(ratio / n, 3), "served_per_member": served})
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Teacher pool throughput: N endpoints vs one ({result['date']})", "",
             f"Machine: {describe(result['machine'])}.", "",
             f"Each endpoint: a loopback simulator server answering after {result['latency_ms']:g} ms, at most "
             f"{result['capacity']} requests in flight from the client (so at most "
             f"{result['capacity'] * 1000 / result['latency_ms']:.0f} requests/s). Servers run in a child process; "
             f"{result['per_endpoint']} requests per endpoint, callers = 2 x capacity x N.", "",
             "| teacher | endpoints | requests | wall s | requests/s | x single | x single / N | client CPU s per s | served per member |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['teacher']} | {r['endpoints']} | {r['requests']} | {r['wall_s']} | {r['req_per_s']} | "
                     f"{r['ratio_to_single']} | {r['ratio_per_endpoint']} | {r['client_cpu_share']} | {r.get('served_per_member', '')} |")
    worst = min(r["ratio_per_endpoint"] for r in result["rows"])
    lines += ["", f"Target: a pool of N gives >= 0.9 N times one endpoint's throughput: worst x single / N = {worst} "
              f"-> **{'met' if result['met'] else 'NOT met'}** (client CPU share stays well under one core).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pool_throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,2,4,8,16", help="pool sizes to measure, comma-separated")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="each endpoint's answer latency")
    parser.add_argument("--capacity", type=int, default=4, help="requests in flight per endpoint (max_concurrency)")
    parser.add_argument("--per-endpoint", type=int, default=100, help="requests per endpoint in the pool")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for pool_throughput.{json,md}")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    info = machine()
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_serve, args=(max(sizes), args.latency_ms, child), daemon=True)
    server.start()
    try:
        urls = parent.recv()
        rows = run(measure(urls, sizes, args.capacity, args.per_endpoint))
    finally:
        parent.send("stop")
        server.join(timeout=10)
    result = {"date": utc_now(), "machine": info, "latency_ms": args.latency_ms, "capacity": args.capacity,
              "per_endpoint": args.per_endpoint, "rows": rows, "loadavg_end": loadavg(),
              "met": all(r["ratio_per_endpoint"] >= 0.9 for r in rows)}
    write_results("pool_throughput", result, markdown(result), args.out)
    print(json.dumps({"rows": [(r["endpoints"], r["req_per_s"], r["ratio_per_endpoint"]) for r in rows], "met": result["met"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
