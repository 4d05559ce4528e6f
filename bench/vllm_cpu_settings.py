"""Benchmark: vLLM-CPU throughput under vLLM's own defaults vs the settings ``engine.teachers.vllm_cpu`` picks.

`python -m bench.vllm_cpu_settings [--requests 48] [--concurrency 32] [--max-tokens 64]`
writes bench/results/vllm_cpu_settings.{json,md}.

Three managed SmolLM2 servers, one after the other, each sent the same requests by the bare
aiohttp client of ``bench.vllm_saturation`` (temperature 0, same ``max_tokens``):

* **vllm defaults**: bfloat16 weights, vLLM's automatic OpenMP binding;
* **dtype only**: the dtype ``auto`` picks for this CPU, vLLM's automatic binding;
* **magnet defaults**: that dtype, and on a small machine every CPU bound, none reserved.

Ratios are completion tokens/s over the first configuration's, measured in one run. Machines
with AVX512-BF16/AMX keep bfloat16, so the first two rows are the same configuration there.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from bench.results_io import RESULTS, describe, loadavg, machine, utc_now, write_results
from bench.vllm_saturation import plain_phase, questions
from engine.scheduler import run
from engine.teachers.vllm_cpu import cpu_flags, vllm_dtype
from engine.teachers.vllm_server import managed_vllm_server

_BINDING = ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU")


async def measure(name: str, dtype: str, auto_binding: bool, args: argparse.Namespace) -> dict[str, Any]:
    """One configuration: start its server, warm up, send the requests; its rates and the vLLM log's binding line."""
    saved = {k: os.environ.pop(k, None) for k in _BINDING}
    if auto_binding:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "auto"  # vLLM's default, spelled out so ours stays out
    try:
        async with managed_vllm_server("smollm2", device="cpu", dtype=dtype, max_model_len=4096) as url:
            await plain_phase(url, "smollm2", questions(8), args.concurrency, args.max_tokens)  # warm-up
            result = await plain_phase(url, "smollm2", questions(args.requests), args.concurrency, args.max_tokens)
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value
    rate = result["completion_tokens"] / result["wall_s"]
    print(f"{name}: {rate:.1f} completion tok/s over {result['wall_s']:.1f} s", flush=True)
    return {"config": name, "dtype": dtype, "binding": "vllm auto" if auto_binding else "all CPUs, none reserved",
            **result, "wall_s": round(result["wall_s"], 2), "completion_tokens_per_s": round(rate, 2)}


async def measure_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    picked = vllm_dtype("auto", "cpu")
    return [await measure("vllm defaults", "bfloat16", True, args),
            await measure("dtype only", picked, True, args),
            await measure("magnet defaults", picked, False, args)]


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# vLLM-CPU settings: vLLM's defaults vs magnet's ({result['date']})", "",
             f"Machine: {describe(result['machine'])}, end {result['loadavg_end']}; bfloat16 hardware: "
             f"{result['bf16_hardware']}. SmolLM2-135M-Instruct, {result['requests']} short questions per configuration at "
             f"concurrency {result['concurrency']}, max_tokens {result['max_tokens']}, temperature 0, bare aiohttp client.",
             f"Reproduce: `python -m bench.vllm_cpu_settings --requests {result['requests']} --concurrency {result['concurrency']} "
             f"--max-tokens {result['max_tokens']}`.", "",
             "| configuration | dtype | OpenMP binding | completion tokens | wall s | completion tok/s | x vllm defaults | failed |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    base = result["configs"][0]["completion_tokens_per_s"]
    for c in result["configs"]:
        lines.append(f"| {c['config']} | {c['dtype']} | {c['binding']} | {c['completion_tokens']} | {c['wall_s']} | "
                     f"{c['completion_tokens_per_s']} | {c['completion_tokens_per_s'] / base:.2f} | {c['failed']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.vllm_cpu_settings", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=48, help="requests per configuration")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens of every request")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for vllm_cpu_settings.{json,md}")
    args = parser.parse_args(argv)
    info, started = machine(), time.perf_counter()
    configs = run(measure_all(args))
    result = {"date": utc_now(), "machine": info, "loadavg_end": loadavg(), "wall_s": round(time.perf_counter() - started, 1),
              "bf16_hardware": sorted(f for f in cpu_flags() if f.endswith("bf16")) or "none (AVX512-BF16/AMX absent)",
              "requests": args.requests, "concurrency": args.concurrency, "max_tokens": args.max_tokens, "configs": configs}
    write_results("vllm_cpu_settings", result, markdown(result), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
