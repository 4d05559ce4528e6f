"""Benchmark: `magnet generate` in one process vs on 1 and 2 Ray actors, side by side in one run.

`python -m bench.ray_generate [--paths 120] [--latency-ms 100] [--concurrency 8]` writes
bench/results/ray_generate.{json,md}.

One simulator server (``engine.sim_server``, fixed answer latency) runs in a child process; a
Ray head on 127.0.0.1 is started here. Each mode is a fresh `magnet generate` subprocess on the
same paths (``--draw-factor 1``: every mode runs exactly the same ids): one process with
``--concurrency C`` (and 2C, the single-process counterpart of two actors), then ``--ray`` with 1
actor and 2 actors of ``C`` each. Paths/s is over the scheduler's wall (from the first path drawn
to the last stored, the manifest's ``run_jobs:generate``); the startup (Ray connect, actors
importing the pipeline) is reported beside it. Ray's overhead per path is 1 actor vs one process
at the same concurrency (target <= 5%); growth is 2 actors vs 1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.results_io import describe, loadavg, machine, write_results
from engine.store import read_manifest

HERE = Path(__file__).resolve().parent.parent


def _serve(latency_ms: float, conn: Any) -> None:
    from engine.sim_server import serve_sim_thread

    with serve_sim_thread(seed=1, latency_ms=latency_ms) as url:
        conn.send(url)
        conn.recv()  # until told to stop


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_head(temp: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    head = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--port", str(port),
                             "--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard=false",
                             "--disable-usage-stats", "--temp-dir", temp], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return head, f"127.0.0.1:{port}"


def _generate(url: str, out: Path, paths: int, concurrency: int, ray: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "engine.cli", "generate", "--teacher", f"openai:sim@{url}", "--out", str(out), "--paths", str(paths),
           "--toolkits", "travel", "--draw-factor", "1", "--concurrency", str(concurrency), "--no-progress", *ray]
    for attempt in range(60):  # the head may still be starting: the first Ray run retries
        started = time.monotonic()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE)
        if done.returncode == 0:
            break
        if not ray or attempt == 59:
            raise RuntimeError(f"generate failed: {done.stderr[-2000:]}")
        shutil.rmtree(out, ignore_errors=True)
        time.sleep(1.0)
    wall = time.monotonic() - started
    extra = read_manifest(out)["extra"]
    sched = extra["run_jobs:generate"]
    n = sched["done"] + sched["failed"]
    return {"paths": n, "scheduler_wall_s": sched["wall_s"], "paths_per_s": round(n / sched["wall_s"], 3),
            "process_wall_s": round(wall, 2), "startup_s": round(wall - sched["wall_s"], 2),
            "teacher_calls": extra["generate"]["teacher_calls"], "ray": extra["generate"].get("ray")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--paths", type=int, default=120)
    ap.add_argument("--latency-ms", type=float, default=100.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = ap.parse_args(argv)
    info = machine()
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a loopback-only cluster, inherited by the drivers
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=_serve, args=(args.latency_ms, child), daemon=True)
    server.start()
    url = parent.recv()
    temp = tempfile.mkdtemp(prefix="/tmp/mrb")
    head, address = _start_head(temp)
    work = Path(tempfile.mkdtemp(prefix="magnet-ray-bench-"))
    c = args.concurrency
    modes = {f"1 process, concurrency {c}": (c, []), f"1 process, concurrency {2 * c}": (2 * c, []),
             f"1 Ray actor x {c}": (c, ["--ray", address, "--ray-actors", "1"]),
             f"2 Ray actors x {c}": (c, ["--ray", address, "--ray-actors", "2"])}
    try:
        rows = {name: _generate(url, work / str(i), args.paths, conc, ray) for i, (name, (conc, ray)) in enumerate(modes.items())}
    finally:
        parent.send("stop")
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    single, single2, one, two = rows.values()
    overhead = single["paths_per_s"] / one["paths_per_s"] - 1.0
    result = {"machine": info, "loadavg_end": loadavg(), "paths": args.paths, "latency_ms": args.latency_ms, "concurrency": c,
              "modes": rows, "ray_overhead_per_path": round(overhead, 4), "two_vs_one_actor": round(two["paths_per_s"] / one["paths_per_s"], 3),
              "two_actors_vs_single_2c": round(two["paths_per_s"] / single2["paths_per_s"], 3), "target_overhead": 0.05,
              "met": overhead <= 0.05}
    write_results("ray_generate", result, markdown(result), *([Path(args.out)] if args.out else []))
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    return 0


def markdown(r: dict[str, Any]) -> str:
    lines = [f"# `magnet generate` on Ray actors vs one process ({r['date'] if 'date' in r else ''})".replace(" ()", ""), "",
             f"Machine: {describe(r['machine'])}; load average at end {r['loadavg_end']} (shared with other jobs: read the ratios).", "",
             f"{r['paths']} paths (`--draw-factor 1`: the same ids in every mode) against one loopback simulator at a fixed "
             f"{r['latency_ms']:g} ms per answer; a local Ray head on 127.0.0.1 (2 CPUs). Paths/s over the scheduler's wall; "
             "startup = process wall minus that (imports, Ray connect, actors building their pipelines).", "",
             "| mode | paths | paths/s | vs 1 process (same concurrency) | scheduler wall s | startup s | teacher calls |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    base = next(iter(r["modes"].values()))["paths_per_s"]
    for name, m in r["modes"].items():
        lines.append(f"| {name} | {m['paths']} | {m['paths_per_s']} | {m['paths_per_s'] / base:.3f}x | {m['scheduler_wall_s']} | "
                     f"{m['startup_s']} | {m['teacher_calls']} |")
    lines += ["", f"Ray overhead per path (1 actor vs 1 process, same concurrency): {r['ray_overhead_per_path']:+.1%} "
              f"(target <= 5%: **{'met' if r['met'] else 'NOT met'}**).",
              f"2 actors vs 1 actor: {r['two_vs_one_actor']}x paths/s; vs one process at twice the concurrency: "
              f"{r['two_actors_vs_single_2c']}x."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
