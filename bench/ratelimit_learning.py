"""Benchmark: how close the engine runs to a request limit it must learn from 429s alone.

`python -m bench.ratelimit_learning [--duration S] [--modes ...]` writes
bench/results/ratelimit_learning.{json,md}.

The loopback simulator (`magnet serve-sim`, its own process pinned to one core) admits
``--rpm`` requests per rolling 60 s window and answers the rest 429. The engine's HTTP teacher
(limiter + retries, as `magnet generate` uses it) sends with more demand than the limit allows
(``--concurrency`` senders, ~50 ms answers) for ``--duration`` seconds, side by side in three modes:

- ``configured``: the client is told the limit (``rpm=``); the server sends only Retry-After;
- ``headers``: the server announces the limit in x-ratelimit-* headers, the client learns it;
- ``retry-after``: the server sends only a 429's Retry-After (whole seconds), as many proxies
  and providers do; the client learns the rate from the 429s themselves (issue 11, item 7).

Counts come from the server (``/stats`` read at every minute boundary), so a 429 is counted
where it happened. The first minute is warm-up (the first burst fills the window); the targets,
for the time after it: < 1% of requests answered 429 and >= 97% of the limit accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from bench.engine_throughput import PROMPT, SYSTEM, Server
from bench.results_io import RESULTS, describe, loadavg, machine, utc_now, write_results
from engine.records import Message
from engine.teachers.openai_http import OpenAIHTTPTeacher

MODES = ("configured", "headers", "retry-after")
WARMUP_S = 60.0
TARGET_429, TARGET_SHARE = 0.01, 0.97


async def _drive(url: str, rpm: int, mode: str, duration_s: float, concurrency: int, server: Server) -> dict[str, Any]:
    teacher = OpenAIHTTPTeacher("sim", url, rpm=rpm if mode == "configured" else None, max_concurrency=concurrency)
    messages = [Message(role="system", content=SYSTEM), Message(role="user", content=PROMPT)]
    ok = failed = 0

    async def sender() -> None:
        nonlocal ok, failed
        while True:
            try:
                await teacher.chat(messages, max_tokens=32)
                ok += 1
            except Exception:  # noqa: BLE001 - counted: a request lost after every retry is a result here
                failed += 1

    started = time.monotonic()
    senders = [asyncio.create_task(sender()) for _ in range(concurrency)]
    marks = []  # the server's counts at every minute boundary and at the end
    for boundary in [*range(60, int(duration_s), 60), duration_s]:
        await asyncio.sleep(max(started + boundary - time.monotonic(), 0.0))
        marks.append({"t": boundary, **(await asyncio.to_thread(server.stats))["counts"]})
    for task in senders:  # what is still in flight or queued at the end is not counted
        task.cancel()
    await asyncio.gather(*senders, return_exceptions=True)
    wall = time.monotonic() - started
    limiter = teacher.limiter.snapshot()
    await teacher.aclose()
    return {"marks": marks, "client_ok": ok, "client_failed": failed, "wall_s": round(wall, 1), "limiter": limiter}


def measure(mode: str, rpm: int, duration_s: float, concurrency: int, latency_ms: float) -> dict[str, Any]:
    flags = ["--rpm", str(rpm), "--latency-ms", str(latency_ms), "--latency-dist", "exp"]
    if mode != "headers":
        flags += ["--rate-headers", "retry-after"]
    with Server(*flags) as server:
        run = asyncio.run(_drive(server.url, rpm, mode, duration_s, concurrency, server))
    marks = run["marks"]
    rows, previous = [], {"t": 0, "ok": 0, "429": 0}
    for mark in marks:
        span = mark["t"] - previous["t"]
        accepted, refused = mark["ok"] - previous["ok"], mark["429"] - previous["429"]
        rows.append({"from_s": previous["t"], "to_s": mark["t"], "accepted": accepted, "refused_429": refused,
                     "share_429": round(refused / max(accepted + refused, 1), 4),
                     "accepted_vs_limit": round(accepted / span * 60.0 / rpm, 4) if span > 0 else None})
        previous = mark
    first, last = marks[0], marks[-1]
    accepted, refused = last["ok"] - first["ok"], last["429"] - first["429"]
    after_s = last["t"] - first["t"]
    return {"mode": mode, "per_minute": rows, "wall_s": run["wall_s"], "client_ok": run["client_ok"],
            "client_failed": run["client_failed"], "limiter": run["limiter"],
            "after_warmup": {"seconds": round(after_s, 1), "accepted": accepted, "refused_429": refused,
                             "share_429": round(refused / max(accepted + refused, 1), 4),
                             "accepted_vs_limit": round(accepted / after_s * 60.0 / rpm, 4)},
            "first_minute_429s": first["429"]}


def markdown(result: dict[str, Any]) -> str:
    m, modes = result["machine"], result["modes"]
    base = modes.get("configured", {}).get("after_warmup", {}).get("accepted_vs_limit")
    lines = [f"# Rate limit learned from 429s ({result['date']})", "",
             f"Machine: {describe(m)}, at end {result['loadavg_end']}; {m['pinning']}.", "",
             f"Loopback simulator: {result['limit_rpm']} requests per rolling 60 s window, answers ~{result['latency_ms']:g} ms "
             f"(exponential); the engine's HTTP teacher with {result['concurrency']} senders for {result['duration_s']:g} s per mode "
             "(demand far above the limit). Counts are the server's; after warm-up = everything after the first minute.", "",
             "| mode | what the client knows | 429s in the 1st minute | 429 share after | accepted / limit after | vs configured | "
             "lost requests | learned RPM at end |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    knows = {"configured": "rpm given", "headers": "x-ratelimit-* headers", "retry-after": "429 + Retry-After only"}
    for mode, r in modes.items():
        after = r["after_warmup"]
        ratio = round(after["accepted_vs_limit"] / base, 3) if base else "-"
        lim = r["limiter"]
        learned = lim["estimated_rpm"] or lim["learned"].get("requests") or lim["limits_per_min"].get("requests", "-")
        lines.append(f"| {mode} | {knows[mode]} | {r['first_minute_429s']} | {after['share_429']:.2%} | "
                     f"{after['accepted_vs_limit']:.1%} | {ratio} | {r['client_failed']} | {learned} |")
    lines += ["", f"Targets after the first minute: < {TARGET_429:.0%} answered 429 and >= {TARGET_SHARE:.0%} of the limit accepted.", ""]
    for mode, r in modes.items():
        after = r["after_warmup"]
        met = after["share_429"] < TARGET_429 and after["accepted_vs_limit"] >= TARGET_SHARE and r["client_failed"] == 0
        lines.append(f"- {mode}: **{'met' if met else 'NOT met'}**")
    lines += ["", "Per minute (accepted / limit and 429 share):", "", "| mode | " +
              " | ".join(f"{row['from_s']:g}-{row['to_s']:g} s" for row in next(iter(modes.values()))["per_minute"]) + " |",
              "|---|" + "---:|" * len(next(iter(modes.values()))["per_minute"])]
    for mode, r in modes.items():
        lines.append(f"| {mode} | " + " | ".join(f"{row['accepted_vs_limit']:.1%}, {row['share_429']:.2%} 429"
                                                for row in r["per_minute"]) + " |")
    lines += ["", "Before this change (issue 11): 12-21% of requests were 429s in the retry-after mode at 1,200 RPM, "
              "where only concurrency adapted.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ratelimit_learning", description=__doc__.split("\n")[0])
    parser.add_argument("--rpm", type=int, default=1200, help="the server's limit per rolling minute")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds per mode (the first minute is warm-up)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ", ".join(MODES))
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for ratelimit_learning.{json,md}")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown mode(s) {', '.join(sorted(unknown))}; choose from {', '.join(MODES)}")
    if args.duration < 2 * WARMUP_S:
        parser.error(f"--duration must be at least {2 * WARMUP_S:g} s: the first minute is warm-up")
    result: dict[str, Any] = {"date": utc_now(), "machine": machine(pinning="server pinned to core 0 (taskset), client unpinned"),
                              "limit_rpm": args.rpm, "duration_s": args.duration, "concurrency": args.concurrency,
                              "latency_ms": args.latency_ms, "modes": {}}
    for mode in modes:
        result["modes"][mode] = measure(mode, args.rpm, args.duration, args.concurrency, args.latency_ms)
        after = result["modes"][mode]["after_warmup"]
        print(f"{mode}: 429 share after warm-up {after['share_429']:.2%}, accepted {after['accepted_vs_limit']:.1%} of the limit", flush=True)
    result["loadavg_end"] = loadavg()
    report = markdown(result)
    write_results("ratelimit_learning", result, report, args.out)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
