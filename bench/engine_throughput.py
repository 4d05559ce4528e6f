"""Benchmark: the engine's HTTP teacher against the loopback simulator, side by side with the
floor (plain aiohttp + semaphore + orjson) and with the openai SDK (AsyncOpenAI + semaphore).

`python -m bench.engine_throughput [--quick]` writes bench/results/engine_throughput.{json,md}.

The simulator server (`magnet serve-sim`) and each client run in separate processes pinned
with `taskset` to different cores, so client CPU is measured alone (getrusage of the client
process, after a warm-up) and the server never steals the client's core. Every client is
driven the same way: N coroutines gathered, at most C at once by an asyncio.Semaphore, on uvloop;
the engine additionally goes through its own limiter (probe, buckets, AIMD) and retry policy.

Scenarios:
1. zero latency, 5,000 requests at concurrency 64: client CPU us/request and requests/s;
2. 200 ms server latency at concurrency 256: wall vs the ideal N x latency / concurrency;
3. a server-enforced request limit with Retry-After: the engine with the limit configured,
   and with it only learned from the x-ratelimit-* headers: achieved rate, 429s, failures.
   Kept short: 600 RPM over the server's real rolling 60 s window, 700 requests per mode
   (a little over one window, so the window fills and slides); --quick sends 200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.results_io import RESULTS, describe, loadavg, machine, utc_now, write_results

ROOT = Path(__file__).resolve().parents[1]
SERVER_CORE, CLIENT_CORE = "0", "1"
CLIENTS = ("plain", "engine", "openai_sdk")
SYSTEM = "You are a helpful assistant."
PROMPT = "Give me a one-line answer: what is the capital of France, and why is it famous?"

# -- the clients (run inside the pinned client process) ------------------------------------------


async def _drive(call: Any, n: int, concurrency: int) -> tuple[int, int, dict[str, int]]:
    sem = asyncio.Semaphore(concurrency)
    ok = failed = 0
    errors: dict[str, int] = {}

    async def one(i: int) -> None:
        nonlocal ok, failed
        async with sem:
            try:
                await call(i)
                ok += 1
            except Exception as err:
                failed += 1
                errors[type(err).__name__] = errors.get(type(err).__name__, 0) + 1

    await asyncio.gather(*(one(i) for i in range(n)))
    return ok, failed, errors


async def _client(kind: str, url: str, n: int, concurrency: int, warmup: int, rpm: float | None) -> dict[str, Any]:
    closers = []
    if kind == "plain":
        import aiohttp
        import orjson

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))
        closers.append(session.close)
        endpoint = url + "/chat/completions"
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]

        async def call(i: int) -> str:
            body = orjson.dumps({"model": "sim", "messages": messages, "max_tokens": 64, "temperature": 0.0})
            async with session.post(endpoint, data=body, headers={"Content-Type": "application/json"}) as resp:
                data = orjson.loads(await resp.read())
                if resp.status != 200:
                    raise RuntimeError(resp.status)
                return data["choices"][0]["message"]["content"]
    elif kind == "engine":
        from engine import metrics
        from engine.records import Message
        from engine.teachers import make_teacher

        # rpm None: no server limit, but huge configured ones keep the bucket arithmetic on the hot
        # path; rpm 0: nothing configured (the limit is learned from headers); else configured.
        if rpm is None:
            limits: dict[str, float] = {"rpm": 1e7, "tpm_in": 1e9, "tpm_out": 1e9}
        else:
            limits = {"rpm": rpm} if rpm > 0 else {}
        teacher = make_teacher(f"openai:sim@{url}", max_concurrency=concurrency, **limits)
        closers.append(teacher.aclose)
        messages = [Message(role="system", content=SYSTEM), Message(role="user", content=PROMPT)]

        async def call(i: int) -> str:
            return (await teacher.chat(messages, max_tokens=64)).message.content
    elif kind == "openai_sdk":
        from openai import AsyncOpenAI

        client = AsyncOpenAI(base_url=url, api_key="sim")
        closers.append(client.close)
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]

        async def call(i: int) -> str:
            resp = await client.chat.completions.create(model="sim", messages=messages, max_tokens=64, temperature=0.0)
            return resp.choices[0].message.content
    else:
        raise SystemExit(f"unknown client {kind!r}")
    if warmup:
        await _drive(call, warmup, concurrency)
    if kind == "engine":
        metrics.reset_metrics()
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    ok, failed, errors = await _drive(call, n, concurrency)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    for close in closers:
        await close()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out = {"client": kind, "n": n, "concurrency": concurrency, "ok": ok, "failed": failed, "wall_s": round(wall, 3),
           "cpu_s": round(cpu, 3), "cpu_us_per_request": round(cpu / n * 1e6, 1), "requests_per_s": round(n / wall, 1),
           "errors": errors}
    if kind == "engine":
        out["client_429s"] = metrics.METRICS.rate_limited
        out["retries"] = metrics.METRICS.retries
        out["limiter"] = teacher.limiter.snapshot()
    return out


def _client_main(args: argparse.Namespace) -> int:
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    rpm = None if args.rpm is None else float(args.rpm)
    print(json.dumps(run(_client(args.client, args.url, args.n, args.concurrency, args.warmup, rpm))), flush=True)
    return 0


# -- orchestration (the parent process) ----------------------------------------------------------


def _pinned(core: str, argv: list[str]) -> list[str]:
    return (["taskset", "-c", core] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []) + argv


class Server:
    """`magnet serve-sim` in its own pinned process."""

    def __init__(self, *flags: str):
        argv = _pinned(SERVER_CORE, [sys.executable, "-m", "engine.cli", "serve-sim", "--port", "0", *flags])
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        match = re.search(r"at (http://\S+/v1)", line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"serve-sim did not start: {line}{self.proc.stderr.read()}")
        self.url = match.group(1)

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url.removesuffix("/v1") + "/stats", timeout=30) as resp:
            data = json.loads(resp.read())
        return {"counts": data["counts"], "arrivals": data["arrivals"]}

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def run_client(kind: str, url: str, n: int, concurrency: int, *, warmup: int = 0, rpm: float | None = None) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.engine_throughput", "--client", kind, "--url", url, "--n", str(n),
            "--concurrency", str(concurrency), "--warmup", str(warmup)]
    if rpm is not None:
        argv += ["--rpm", str(rpm)]
    done = subprocess.run(_pinned(CLIENT_CORE, argv), cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"client {kind} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def zero_latency(n: int, concurrency: int, reps: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in CLIENTS}
    with Server() as server:
        for rep in range(reps):  # interleaved, so drift in machine load hits every client alike
            for kind in CLIENTS:
                if kind == "openai_sdk" and rep:  # an order of magnitude slower: one run says enough
                    continue
                runs[kind].append(run_client(kind, server.url, n, concurrency, warmup=min(n, 2 * concurrency)))
    summary = {}
    for kind, rs in runs.items():
        # Best of the runs: contention from other jobs only ever adds CPU time (cache, SMT) and wall time.
        summary[kind] = {"cpu_us_per_request": min(r["cpu_us_per_request"] for r in rs),
                         "requests_per_s": max(r["requests_per_s"] for r in rs),
                         "failed": sum(r["failed"] for r in rs), "runs": rs}
    floor = summary["plain"]["cpu_us_per_request"]
    for kind in CLIENTS:
        summary[kind]["cpu_vs_plain"] = round(summary[kind]["cpu_us_per_request"] / floor, 3)
    return {"n": n, "concurrency": concurrency, "reps": reps, "clients": summary,
            "target_cpu_vs_plain": 1.25, "met": summary["engine"]["cpu_vs_plain"] <= 1.25}


def latency_bound(n: int, concurrency: int, latency_ms: float, reps: int) -> dict[str, Any]:
    ideal = n * latency_ms / 1000.0 / concurrency
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in CLIENTS}
    with Server("--latency-ms", str(latency_ms)) as server:
        for rep in range(reps):
            for kind in CLIENTS:
                if kind == "openai_sdk" and rep:
                    continue
                runs[kind].append(run_client(kind, server.url, n, concurrency, warmup=concurrency))
    # Best of the runs: waiting for a core on a busy machine only ever adds wall time.
    clients = {kind: min(rs, key=lambda r: r["wall_s"]) | {"walls_s": [r["wall_s"] for r in rs]} for kind, rs in runs.items()}
    for r in clients.values():
        r["wall_vs_ideal"] = round(r["wall_s"] / ideal, 3)
        r["wall_vs_plain"] = round(r["wall_s"] / clients["plain"]["wall_s"], 3)
    return {"n": n, "concurrency": concurrency, "latency_ms": latency_ms, "ideal_wall_s": round(ideal, 3), "reps": reps,
            "clients": clients, "target_wall_vs_ideal": 1.15, "met": clients["engine"]["wall_vs_ideal"] <= 1.15}


def rate_limited(n: int, concurrency: int, rpm: int, window_s: float) -> dict[str, Any]:
    per_window = round(rpm * window_s / 60.0)
    out = {}
    for mode, configured in (("configured", float(rpm)), ("learned", 0.0)):
        with Server("--rpm", str(per_window), "--window-s", str(window_s)) as server:
            r = run_client("engine", server.url, n, concurrency, rpm=configured)
            stats = server.stats()
        arrivals = sorted(stats["arrivals"])
        server_429 = stats["counts"]["429"]
        # Steady state: after the first 2 s, in which a learned limit may start with a short burst
        # (the bucket begins with the quota the server reports left, up to one second's worth).
        cut = arrivals[0] + 2.0
        steady = [t for t in arrivals if t >= cut]
        steady_rpm = (len(steady) - 1) / (steady[-1] - steady[0]) * 60.0 if len(steady) > 1 and steady[-1] > steady[0] else float("nan")
        overall_rpm = (len(arrivals) - server_429 - 1) / (arrivals[-1] - arrivals[0]) * 60.0
        out[mode] = {"n": n, "ok": r["ok"], "failed": r["failed"], "server_429s": server_429,
                     "share_429": round(server_429 / max(len(arrivals), 1), 4), "wall_s": r["wall_s"],
                     "overall_rpm": round(overall_rpm, 1), "steady_rpm": round(steady_rpm, 1),
                     "steady_vs_limit": round(steady_rpm / rpm, 4), "retries": r["retries"], "limiter": r["limiter"]}
    cfg, lrn = out["configured"], out["learned"]
    return {"limit_rpm": rpm, "window_s": window_s, "requests_per_window": per_window, "concurrency": concurrency, **out,
            "targets": "configured: 0 429s and >= 97% of the limit; learned: < 1% answered 429, none lost",
            "met_configured": cfg["server_429s"] == 0 and cfg["steady_vs_limit"] >= 0.97 and cfg["failed"] == 0,
            "met_learned": lrn["share_429"] < 0.01 and lrn["failed"] == 0}


def markdown(result: dict[str, Any]) -> str:
    m, z, lat, rl = result["machine"], result["zero_latency"], result["latency"], result["rate_limit"]
    lines = [f"# Engine throughput ({result['date']}{', quick' if result['quick'] else ''})", "",
             f"Machine: `{m['uname']}`; {describe(m)}, at end {result['loadavg_end']}; {m['pinning']} "
             "(the machine is shared with other jobs: CPU time per request is the stable measure, wall time includes waiting for a core).", "",
             f"## 1. Zero latency: {z['n']} requests, concurrency {z['concurrency']} (plain and engine: best of {z['reps']} interleaved runs; openai "
             f"SDK: one run)", "",
             "| client | CPU us/request | vs plain aiohttp | requests/s | failed |", "|---|---:|---:|---:|---:|"]
    for kind, s in z["clients"].items():
        lines.append(f"| {kind} | {s['cpu_us_per_request']} | {s['cpu_vs_plain']} | {s['requests_per_s']} | {s['failed']} |")
    lines += ["", f"Target: engine CPU within 1.25x of plain aiohttp: **{'met' if z['met'] else 'NOT met'}** "
              f"({z['clients']['engine']['cpu_vs_plain']}x). Requests/s is bounded by the single-core simulator server.", "",
              f"## 2. {lat['latency_ms']:g} ms latency: {lat['n']} requests, concurrency {lat['concurrency']}, ideal wall {lat['ideal_wall_s']} s "
              f"(plain and engine: best of {lat['reps']} runs; openai SDK: one run)", "",
              "| client | wall s | wall / ideal | wall / plain | CPU us/request | failed |", "|---|---:|---:|---:|---:|---:|"]
    for kind, r in lat["clients"].items():
        failed = f"{r['failed']} {r['errors']}" if r["failed"] else "0"
        lines.append(f"| {kind} | {r['wall_s']} | {r['wall_vs_ideal']} | {r['wall_vs_plain']} | {r['cpu_us_per_request']} | {failed} |")
    lines += ["", f"Target: engine wall within 1.15x of ideal: **{'met' if lat['met'] else 'NOT met'}** "
                  f"({lat['clients']['engine']['wall_vs_ideal']}x).", "",
              f"## 3. Server-enforced limit: {rl['limit_rpm']} RPM, engine only, concurrency {rl['concurrency']}", "",
              f"The server admits {rl['requests_per_window']} requests per rolling {rl['window_s']:g} s window "
              f"(= {rl['limit_rpm']}/min), answers 429 with Retry-After above it and announces limit {rl['limit_rpm']} in "
              "x-ratelimit-* headers. Steady RPM = arrivals after the first 2 s over their span (a learned limit may start with a "
              "burst of up to one second's worth of the quota the server reports left); overall RPM = accepted requests "
              "over the whole span.", "",
              "| mode | requests | ok | failed | 429s (server) | share 429 | steady RPM | steady / limit | overall RPM | wall s |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for mode in ("configured", "learned"):
        r = rl[mode]
        lines.append(f"| {mode} | {r['n']} | {r['ok']} | {r['failed']} | {r['server_429s']} | {r['share_429']} | "
                     f"{r['steady_rpm']} | {r['steady_vs_limit']} | {r['overall_rpm']} | {r['wall_s']} |")
    lines += ["", f"Targets ({rl['targets']}): configured **{'met' if rl['met_configured'] else 'NOT met'}**, "
              f"learned **{'met' if rl['met_learned'] else 'NOT met'}**.", "",
              "Not measured here: RSS at 1M jobs and the vLLM saturation ratio (bench/engine_rss.py, bench/vllm_saturation.py); "
              "bespokelabs-curator was not installed (the project avoids extra dependencies), so it is not compared.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engine_throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (about a minute) for a smoke check")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for engine_throughput.{json,md}")
    parser.add_argument("--client", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--rpm", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        return _client_main(args)
    started = time.perf_counter()
    result: dict[str, Any] = {"date": utc_now(), "quick": args.quick,
                              "machine": machine(pinning=f"server core {SERVER_CORE}, client core {CLIENT_CORE} (taskset)")}
    if args.quick:
        result["zero_latency"] = zero_latency(1000, 64, reps=1)
        result["latency"] = latency_bound(1280, 256, 200.0, reps=1)
        result["rate_limit"] = rate_limited(200, 64, 600, window_s=60.0)
    else:
        result["zero_latency"] = zero_latency(5000, 64, reps=3)
        result["latency"] = latency_bound(5120, 256, 200.0, reps=2)
        result["rate_limit"] = rate_limited(700, 64, 600, window_s=60.0)
    result["loadavg_end"] = loadavg()
    result["bench_wall_s"] = round(time.perf_counter() - started, 1)
    report = markdown(result)
    write_results("engine_throughput", result, report, args.out)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
