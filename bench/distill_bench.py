"""End-to-end distillation throughput and yields: `magnet generate`'s job on a path stream.

Simulator mode (default) measures the engine's own cost per episode, the teacher being free:
the same paths run with the simulator in-process and behind the loopback HTTP server (the
ratio is the HTTP client's share). ``--vllm`` runs the embedded SmolLM2 on vLLM instead:
episodes per minute, and the fraction of wall time the teacher had no request in flight,
i.e. was waiting on our code (tokenizing, parsing, executing tools, verifying, storing).

Writes bench/results/distill_bench.{json,md}; a --vllm run adds its section to the same files.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.results_io import RESULTS, describe, load_results, loadavg, machine, utc_now, write_results


class Timed:
    """Wraps a teacher: records the wall time during which no request was in flight."""

    def __init__(self, inner: Any):
        self.inner, self.name = inner, inner.name
        self.in_flight, self.idle, self.calls = 0, 0.0, 0
        self._since = time.perf_counter()

    async def chat(self, *args: Any, **kwargs: Any) -> Any:
        if self.in_flight == 0:
            self.idle += time.perf_counter() - self._since
        self.in_flight += 1
        try:
            return await self.inner.chat(*args, **kwargs)
        finally:
            self.in_flight -= 1
            self.calls += 1
            if self.in_flight == 0:
                self._since = time.perf_counter()

    def start(self) -> None:
        self.idle, self._since = 0.0, time.perf_counter()

    def idle_until_now(self) -> float:
        return self.idle + (time.perf_counter() - self._since if self.in_flight == 0 else 0.0)

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()


async def run_once(spec: str, *, paths: int, concurrency: int, toolkits: list[str], seed: int,
                   max_tokens: int = 512, **teacher_options: Any) -> dict[str, Any]:
    from distill.generate_config import GenerateConfig
    from distill.pipeline import Distiller
    from engine import metrics
    from engine.reasons import reason_key
    from engine.scheduler import run_jobs
    from engine.store import RunStore, read_records
    from engine.teachers import make_teacher
    from graph.depgraph import build_graph
    from graph.paths import sample_paths
    from graph.paths_config import path_config
    from graph.pool import tool_pool

    metrics.reset_metrics()
    load_before = loadavg()[0]
    config = GenerateConfig(out="-", teacher=spec, toolkits=toolkits, paths=paths, seed=seed, concurrency=concurrency,
                            max_tokens=max_tokens)
    pool = tool_pool(config.toolkits or ["builtin"])
    graph = build_graph(pool.specs())
    path_cfg = path_config(config.path_options, where="path_options")
    teacher = Timed(make_teacher(spec, **teacher_options))
    distiller = Distiller(pool, teacher, config)
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore.open(tmp, config_fingerprint="bench")
        try:
            teacher.start()
            t0 = time.perf_counter()
            await run_jobs(sample_paths(graph, pool.specs(), path_cfg, seed), distiller.run_path, store,
                           item_id=lambda p: p.id, stage="bench", max_in_flight=concurrency, total=paths, progress=False)
            wall = time.perf_counter() - t0
            idle = teacher.idle_until_now()
            store.flush()
            counts = store.counts()
            dead = list(read_records(tmp, "dead_letters"))
        finally:
            store.close()
            await teacher.aclose()
    path_dead = [d for d in dead if "#" not in d.item_id]
    positives = counts["trajectories"] - counts["pairs"]
    spend = distiller.spend
    return {
        "teacher": spec, "paths": paths, "concurrency": concurrency, "toolkits": toolkits or "all built-in",
        "wall_s": round(wall, 3), "paths_per_s": round(paths / wall, 2), "episodes_per_min": round(counts["episodes"] * 60 / wall, 2),
        "ms_per_path": round(wall * 1000 / paths, 2), "teacher_calls": spend.calls,
        "ms_per_teacher_call": round(wall * 1000 / max(spend.calls, 1), 3),
        "tokens_per_path": round((spend.prompt_tokens + spend.completion_tokens) / paths, 1),
        "teacher_idle_fraction": round(idle / wall, 4),
        "episodes": counts["episodes"], "positives": positives, "pairs": counts["pairs"],
        "yield_positive": round(positives / paths, 4),
        "dead_letters_by_reason": dict(Counter(f"{d.stage}: {reason_key(d.error)}" for d in dead).most_common()),
        "paths_dead_lettered": len(path_dead),
        # Other processes on the machine slow a CPU teacher down; recorded so runs can be compared fairly.
        "load_average_1m": [load_before, loadavg()[0]],
    }


def _markdown(result: dict[str, Any]) -> str:
    lines = [f"# Distillation benchmark ({result['date']})", "", f"Machine: {describe(result['machine'])}", ""]
    rows = [r for r in (result.get("sim_inprocess"), result.get("sim_http"), result.get("vllm")) if r]
    keys = ["teacher", "paths", "concurrency", "load_average_1m", "wall_s", "paths_per_s", "episodes_per_min", "ms_per_path", "ms_per_teacher_call",
            "tokens_per_path", "teacher_idle_fraction", "yield_positive", "pairs"]
    lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    if "http_over_inprocess" in result:
        lines += ["", f"HTTP loopback / in-process wall time: {result['http_over_inprocess']}x"]
    for r in rows:
        lines += ["", f"Dead letters ({r['teacher']}):", ""]
        lines += [f"- {reason}: {n}" for reason, n in r["dead_letters_by_reason"].items()] or ["- none"]
    lines += ["", "teacher_idle_fraction: share of wall time with no teacher request in flight, i.e. the teacher waiting",
              "on our code (prompting, parsing, executing tools, verifying, storing). For the in-process simulator a call",
              "is never really in flight, so there it is simply our code's share of the wall time.",
              "On the simulator the teacher is free, so wall time is engine cost; yields there reflect the simulator's",
              "placeholder argument values (most dead letters), not a real teacher's quality.",
              "load_average_1m: the machine's load before/after a run (other jobs slow a CPU teacher down)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="magnet bench distill_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--paths", type=int, default=300, help="paths per simulator run")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vllm", action="store_true", help="also run the embedded SmolLM2 on vLLM (slow on CPU)")
    p.add_argument("--vllm-paths", type=int, default=8)
    p.add_argument("--vllm-timeout-s", type=float, default=600.0,
                   help="per-request timeout for the vLLM teacher (a shared, loaded CPU queues requests for minutes)")
    p.add_argument("--vllm-only", action="store_true", help="run only the vLLM section; other sections on file are kept")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for distill_bench.{json,md}")
    args = p.parse_args(argv)
    from engine.scheduler import run
    from engine.sim_server import serve_sim_thread

    result = load_results("distill_bench", args.out)  # a run updates its own sections
    result.update({"date": utc_now(), "machine": machine()})
    if not args.vllm_only:
        result["sim_inprocess"] = run(run_once("sim", paths=args.paths, concurrency=args.concurrency, toolkits=[], seed=args.seed))
        with serve_sim_thread(seed=0) as url:
            result["sim_http"] = run(run_once(f"openai:sim@{url}", paths=args.paths, concurrency=args.concurrency,
                                              toolkits=[], seed=args.seed))
        result["sim_http"]["teacher"] = "openai:sim@loopback"
        result["http_over_inprocess"] = round(result["sim_http"]["wall_s"] / result["sim_inprocess"]["wall_s"], 2)
    if args.vllm or args.vllm_only:
        result["vllm"] = run(run_once("vllm:smollm2", paths=args.vllm_paths, concurrency=8, toolkits=[], seed=args.seed,
                                      timeout_s=args.vllm_timeout_s))
    report = _markdown(result)
    write_results("distill_bench", result, report, args.out)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
