"""Benchmark: resident memory while streaming 1,000,000 small jobs through run_jobs + RunStore.

`python -m bench.engine_rss [--jobs N] [--max-in-flight C]` writes bench/results/engine_rss.{json,md}.

Each job is a simulator-teacher call (``SimTeacher``, no latency) that produces one small
Trajectory, committed to a real RunStore in a temporary run directory. A sampler task
records RSS (from /proc/self/statm) every ``--sample-s`` seconds together with the number of
items finished. The source is a generator, so nothing but the in-flight items and the
store's id index (needed to never store an id twice) grows with the run: the report gives
RSS at each tenth of the run and the growth per 1,000 items after the first tenth.
Target: RSS stays under 1 GB at 1M jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.results_io import RESULTS, describe, loadavg, machine, utc_now, write_results
from engine import metrics
from engine.records import Message, Trajectory
from engine.scheduler import run, run_jobs
from engine.store import RunStore
from engine.teachers.sim import SimTeacher

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


async def stream(n: int, max_in_flight: int, run_dir: Path, sample_s: float) -> dict[str, Any]:
    teacher = SimTeacher(seed=0)
    samples: list[tuple[float, int, float]] = []
    start = time.monotonic()

    async def job(i: int) -> list[tuple[str, Trajectory]]:
        messages = [Message(role="user", content=f"Summarise item {i} in a few words.")]
        answer = await teacher.chat(messages, max_tokens=32)
        return [("trajectories", Trajectory(id=f"t{i}", episode_id=f"e{i}", polarity="positive", tools=[],
                                            messages=messages + [answer.message], teacher=teacher.name))]

    async def sampler() -> None:
        while True:
            m = metrics.METRICS
            samples.append((round(time.monotonic() - start, 2), m.items_done + m.items_failed, round(rss_mb(), 1)))
            await asyncio.sleep(sample_s)

    metrics.reset_metrics()
    task = asyncio.create_task(sampler())
    with RunStore.open(run_dir, config_fingerprint="engine-rss-bench") as store:
        summary = await run_jobs(range(n), job, store, item_id=lambda i: f"item-{i}", stage="rss", max_in_flight=max_in_flight,
                                 total=n, progress=False, handle_signals=False)
        disk = sum(store.sizes().values())
    task.cancel()
    samples.append((round(time.monotonic() - start, 2), n, round(rss_mb(), 1)))
    return {"summary": summary, "samples": samples, "disk_bytes": disk}


def analyse(samples: list[tuple[float, int, float]], n: int) -> dict[str, Any]:
    def at(fraction: float) -> float:
        return next(rss for _, done, rss in samples if done >= fraction * n)

    tenths = {f"{int(f * 100)}%": at(f) for f in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)}
    first, last = tenths["10%"], tenths["100%"]
    return {"rss_mb_at": tenths, "peak_rss_mb": max(r for *_, r in samples),
            "growth_mb_per_1k_items_after_10pct": round((last - first) / (0.9 * n / 1000), 4)}


def markdown(result: dict[str, Any]) -> str:
    m, a, s = result["machine"], result["analysis"], result["summary"]
    lines = [f"# Engine RSS while streaming {result['jobs']:,} jobs ({result['date']})", "",
             f"Machine: {describe(m)}.", "",
             f"Each job: one SimTeacher chat call -> one Trajectory committed to a RunStore (max {result['max_in_flight']} in flight). "
             f"Wall {s['wall_s']} s, {s['items_per_s']:,} items/s, {s['done']:,} done, {s['failed']} failed; "
             f"{result['disk_bytes'] / 2**20:.1f} MiB of shards.", "",
             "| progress | " + " | ".join(a["rss_mb_at"]) + " |", "|---|" + "---:|" * len(a["rss_mb_at"]),
             "| RSS MB | " + " | ".join(str(v) for v in a["rss_mb_at"].values()) + " |", "",
             f"Peak RSS {a['peak_rss_mb']} MB (ru_maxrss {result['ru_maxrss_mb']} MB); after the first tenth RSS grows "
             f"{a['growth_mb_per_1k_items_after_10pct']} MB per 1,000 items (about {a['growth_mb_per_1k_items_after_10pct'] * 2**20 / 1000:.0f} "
             f"bytes per item), the size of the "
             "store's in-memory id index: two ids per item (the record's and the done marker's), kept so no id is ever "
             "stored twice. In-flight work is bounded by max_in_flight and does not grow.", "",
             f"Target: < 1 GB at 1M jobs: **{'met' if result['met'] else 'NOT met'}**.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engine_rss", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000, help="number of jobs to stream")
    parser.add_argument("--max-in-flight", type=int, default=64, help="scheduler concurrency")
    parser.add_argument("--sample-s", type=float, default=0.5, help="seconds between RSS samples")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for engine_rss.{json,md}")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="magnet-rss-"))
    try:
        info = machine()
        rss_start = rss_mb()
        data = run(stream(args.jobs, args.max_in_flight, tmp / "run", args.sample_s))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    analysis = analyse(data["samples"], args.jobs)
    result = {"date": utc_now(), "machine": info, "jobs": args.jobs,
              "max_in_flight": args.max_in_flight, "rss_mb_before": round(rss_start, 1), "summary": data["summary"],
              "analysis": analysis, "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "disk_bytes": data["disk_bytes"], "samples": data["samples"], "loadavg_end": loadavg(),
              "met": analysis["peak_rss_mb"] < 1024 and data["summary"]["done"] == args.jobs}
    write_results("engine_rss", result, markdown(result), args.out)
    print(json.dumps({k: result[k] for k in ("jobs", "analysis", "met")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
