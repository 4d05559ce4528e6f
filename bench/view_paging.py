"""`magnet view` on a run of 1,000,000 trajectories: how soon the first page shows, and what the
paging index costs.

    python -m bench.view_paging [--records 1000000] [--run DIR]

Writes a synthetic run with the real shard store (RunStore; records built from engine.records,
varied in stratum, polarity, verification, teacher, toolkits and functions), starts a real
`magnet view` server on it (a subprocess, cold: nothing indexed) and times over HTTP: the first
page of the trajectories list (the target: under 2 s), a filtered first page, a text search, a
record by id, a deep page once the index is complete; then the index's full build time, its
bytes per record, and the server's resident memory next to the shards' size.
Results: bench/results/view_paging.{json,md}.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec

from bench.results_io import describe, machine, write_results
from engine.records import FunctionSpec, Message, ToolCall, Trajectory, Verification
from engine.store import RunStore

STRATA = ["single", "parallel", "multiple", "parallel_multiple", "irrelevance", "multi_turn.base", "multi_turn.nested",
          "multi_turn.long", "multi_turn.miss_func", "multi_turn.miss_param"]
TEACHERS = ["sim", "openai:gpt-4o-mini", "vllm:smollm2"]
TOOLKITS = ["travel", "shopping", "calendar", "files", "math", "banking", "smarthome"]
NEEDLE_EVERY = 10_000  # one trajectory in this many mentions the rare word "zanzibar"


def trajectory(i: int) -> Trajectory:
    """Trajectory ``i`` of the synthetic run: everything a filter looks at is a function of ``i``."""
    stratum = STRATA[i % len(STRATA)]
    toolkit = TOOLKITS[i % len(TOOLKITS)]
    fn = f"{toolkit}_op_{i % 13}"
    positive = i % 2 == 0
    city = "Zanzibar" if i % NEEDLE_EVERY == 7 else "Lisbon"
    call = ToolCall(name=fn, arguments={"city": city, "n": i % 97}, id=f"call_{i}")
    return Trajectory(
        id=f"ep-{stratum}-0-{i}-{'pos' if positive else 'neg'}",
        episode_id=f"ep-{stratum}-0-{i}",
        polarity="positive" if positive else "negative",
        tools=[FunctionSpec(name=fn, description=f"Operation {i % 13} of the {toolkit} toolkit.", toolkit=toolkit,
                            parameters={"type": "object", "properties": {"city": {"type": "string"}, "n": {"type": "integer"}}})],
        messages=[Message(role="user", content=f"Please run operation {i % 13} for {city} with n={i % 97}."),
                  Message(role="assistant", tool_calls=[call]),
                  Message(role="tool", content='{"ok": true}', tool_call_id=call.id, name=fn),
                  Message(role="assistant", content=f"Done for {city}.")],
        turn_tools=[[fn]],
        teacher=TEACHERS[i % len(TEACHERS)],
        hints=[f"[{fn}(city='{city}', n={i % 97})]"],
        source="teacher_hinted" if positive else "perturbed:wrong_value",
        error_types=[] if positive else ["wrong_value"],
        verification=Verification(ok=positive, outputs_match=positive, errors=[] if positive else ["turn 0: 1 reference output(s) not produced"]),
        usage={"prompt_tokens": 300, "completion_tokens": 20},
    )


def write_run(run_dir: Path, records: int) -> dict[str, Any]:
    """A run of ``records`` trajectories written through RunStore (buffered, fsync on close)."""
    t0 = time.perf_counter()
    with RunStore.open(run_dir, config_fingerprint="view-paging-bench", config={"bench": "view_paging", "records": records},
                       durability="close", buffer_bytes=8 << 20, flush_interval=3600) as store:
        for i in range(records):
            store.put("trajectories", trajectory(i))
    size = sum(p.stat().st_size for p in (run_dir / "trajectories").iterdir())
    return {"records": records, "shard_bytes": size, "write_s": round(time.perf_counter() - t0, 2)}


class Server:
    """A real `magnet view` subprocess on a free loopback port."""

    def __init__(self, run_dir: Path, *extra: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "view", str(run_dir), "--port", "0", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"magnet view did not start: {line!r} {self.proc.stderr.read()[-2000:]}")
        self.url = m.group(1).rstrip("/")

    def get(self, path: str) -> tuple[float, bytes]:
        t0 = time.perf_counter()
        with urllib.request.urlopen(self.url + path, timeout=120) as r:
            body = r.read()
        return time.perf_counter() - t0, body

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def index_stats(server: Server) -> dict[str, Any]:
    return msgspec.json.decode(server.get("/api/index")[1])


def wait_indexed(server: Server, kind: str, timeout_s: float = 900) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = index_stats(server).get(kind)
        if stats and stats["complete"]:
            return stats
        time.sleep(0.5)
    raise TimeoutError(f"the {kind} index was not complete after {timeout_s} s")


def _rows(page: bytes) -> int:
    return page.count(b'href="/record/trajectories?id=')


def measure(run_dir: Path, records: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with Server(run_dir) as server:
        out["first_page_s"] = round(server.get("/list/trajectories")[0], 3)
        out["filtered_first_page_s"] = round(server.get("/list/trajectories?polarity=negative&teacher=vllm%3Asmollm2")[0], 3)
        seconds, body = server.get("/list/trajectories?q=zanzibar")
        out["text_search_first_page_s"], out["text_search_first_page_rows"] = round(seconds, 3), _rows(body)
        out["record_by_id_s"] = round(server.get(f"/record/trajectories?id=ep-single-0-{records // 2 // 10 * 10}-pos")[0], 3)
        stats = wait_indexed(server, "trajectories")
        out["index_build_s"] = stats["seconds"]
        out["index_bytes"] = stats["index_bytes"]
        out["index_bytes_per_record"] = round(stats["index_bytes"] / max(stats["records"], 1), 1)
        seconds, body = server.get("/list/trajectories?q=zanzibar")
        out["text_search_indexed_s"], out["text_search_indexed_rows"] = round(seconds, 3), _rows(body)
        out["deep_page_s"] = round(server.get(f"/list/trajectories?start={records - 100}")[0], 3)
        out["rare_filter_page_s"] = round(server.get("/list/trajectories?stratum=multi_turn.long&function=math_op_3&start=500000")[0], 3)
        out["server_rss_bytes"] = server.rss_bytes()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.view_paging", description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=1_000_000, help="trajectories in the synthetic run")
    p.add_argument("--run", default=None, help="folder for the run (default: a temporary one, removed after)")
    args = p.parse_args(argv)
    info = machine()
    tmp = None if args.run else tempfile.mkdtemp(prefix="view-paging-")
    run_dir = Path(args.run or tmp) / "run"
    try:
        written = write_run(run_dir, args.records) if not (run_dir / "manifest.json").exists() else {"records": args.records}
        written["shard_bytes"] = sum(p.stat().st_size for p in (run_dir / "trajectories").iterdir())
        result = measure(run_dir, args.records)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    data = {"bench": "view_paging", "machine": info, "run": written, "result": result, "target_first_page_s": 2.0}
    r = result
    md = "\n".join([
        "# `magnet view`: paging a run of {:,} trajectories".format(written["records"]),
        "",
        f"Machine: {describe(info)}. Run: {written['shard_bytes'] / 1e9:.2f} GB of shards"
        + (f", written in {written['write_s']} s through RunStore" if "write_s" in written else "") + ".",
        "A cold `magnet view` server (a subprocess; nothing indexed when the first request arrives), timed over HTTP:",
        "",
        "| request | seconds |",
        "|---|---|",
        f"| first page of the trajectories list (target < 2 s) | {r['first_page_s']} |",
        f"| first page, filtered (polarity + teacher) | {r['filtered_first_page_s']} |",
        f"| first page of a text search (1 record in {NEEDLE_EVERY:,} matches; cold, {r['text_search_first_page_rows']} rows: "
        "the search stops at its 1.5 s budget and links to go on) | "
        f"{r['text_search_first_page_s']} |",
        f"| the same search, index complete ({r['text_search_indexed_rows']} rows, a full page, in one pass over the shards) | "
        f"{r['text_search_indexed_s']} |",
        f"| a record by id from the middle of the run | {r['record_by_id_s']} |",
        f"| last page (index complete) | {r['deep_page_s']} |",
        f"| a page deep in a rare filter (stratum + function) | {r['rare_filter_page_s']} |",
        "",
        f"The index of all {written['records']:,} records took {r['index_build_s']} s to build in the background "
        f"(pages are served from what is indexed so far). It holds {r['index_bytes'] / 1e6:.1f} MB "
        f"({r['index_bytes_per_record']} bytes per record); the server's resident memory at the end was "
        f"{r['server_rss_bytes'] / 1e6:.0f} MB against {written['shard_bytes'] / 1e9:.2f} GB of shards.",
    ])
    json_path, md_path = write_results("view_paging", data, md)
    print(md)
    print(f"\nresults: {json_path} {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
