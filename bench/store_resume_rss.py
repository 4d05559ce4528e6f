"""Benchmark: resident memory of resuming a run of N paths (the store's id index), compact vs sets.

`python -m bench.store_resume_rss [--sizes 1000000,4000000] [--direct 100000000] [--baseline-max 2000000]`
writes bench/results/store_resume_rss.{json,md}.

A finished path of a real run leaves a done marker listing its records, and the records:
``<stratum>-<seed>-<j>`` (path), ``ep-<path id>`` (episode) and ``ep-<path id>-pos`` (positive).
The benchmark writes exactly these frames, synthetically (minimal record bodies, five strata
round-robin, so path j of a stratum is the stratum's j-th), into a real run directory, then opens
it with ``RunStore.open`` in a fresh child process, as a resume does, and reads RSS. The
baseline is the index the store kept before: a Python ``set`` of every id per kind, measured by
building those sets in the same child after the open (only up to ``--baseline-max`` paths: at
~100 bytes per id it outgrows the machine). RSS at 100M paths is extrapolated from the two
largest sizes, at the larger of the measured RSS growth per path and the bitmaps' exact bytes per
path (writing and reading 100M paths' frames, ~50 GB of shards and ~45 minutes of opening on
this machine, is out of proportion). ``--direct N`` measures the done set of an N-path run for
real: N done ids put into the store's ``IdSet`` in a fresh process. Target: < 1 GB at 100M paths.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from bench.results_io import RESULTS, describe, loadavg, machine, utc_now, write_results

STRATA = ("single", "parallel", "multiple", "irrelevance", "multi_turn.base")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries that over exec from the
    forked parent, so a child would report the parent's peak."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def synthesize(run_dir: Path, paths: int, seed: int = 0) -> float:
    """A run directory holding ``paths`` finished paths (records + done markers); returns seconds taken."""
    from engine.records import Episode, SignaturePath, Trajectory, WorkDone
    from engine.shards import ShardWriter
    from engine.store import RunStore

    start = time.perf_counter()
    RunStore.open(run_dir, config_fingerprint="resume-rss").close()  # the manifest a resume checks
    encode = msgspec.msgpack.Encoder().encode
    writers = {kind: ShardWriter.open(run_dir / kind) for kind in ("paths", "episodes", "trajectories", "done")}
    try:
        for i in range(paths):
            stratum, j = STRATA[i % len(STRATA)], i // len(STRATA)
            pid = f"{stratum}-{seed}-{j}"
            ep, pos = f"ep-{pid}", f"ep-{pid}-pos"
            writers["paths"].append(encode(SignaturePath(id=pid, kind="single", turns=[])))
            writers["episodes"].append(encode(Episode(id=ep, path_id=pid, kind="single", tools=[])))
            writers["trajectories"].append(encode(Trajectory(id=pos, episode_id=ep, polarity="positive", tools=[], messages=[], teacher="sim")))
            writers["done"].append(encode(WorkDone(id=pid, outputs=[pid, ep, pos])))
    finally:
        for writer in writers.values():
            writer.close(fsync=False)
    return time.perf_counter() - start


def measure(run_dir: Path, baseline: bool) -> dict[str, Any]:
    """In a fresh process: open the run as a resume does; RSS before, after, and with the old sets."""
    from engine.records import RECORD_KINDS
    from engine.store import RunStore, read_records

    before = rss_mb()
    start = time.perf_counter()
    store = RunStore.open(run_dir, config_fingerprint="resume-rss")
    open_s = time.perf_counter() - start
    after = rss_mb()
    counts = store.counts()
    # Every finished path is recognised, and a path never run is not.
    probes = [f"{s}-0-{j}" for s in STRATA for j in (0, counts["done"] // len(STRATA) - 1)]
    assert all(store.is_finished(p) for p in probes) and not store.is_finished(f"single-0-{counts['done']}")
    out = {"rss_mb_before_open": round(before, 1), "rss_mb_after_open": round(after, 1), "open_s": round(open_s, 2),
           "counts": counts, "index_bytes": sum(ids.nbytes() for ids in store._ids.values())}
    if baseline:
        sets = {kind: {r.id for r in read_records(run_dir, kind)} for kind in RECORD_KINDS}
        out["rss_mb_with_sets"] = round(rss_mb(), 1)
        out["set_ids"] = sum(map(len, sets.values()))
    store.close()
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def direct(paths: int) -> dict[str, Any]:
    """In a fresh process: the done ids of a ``paths``-path run in one ``IdSet``; RSS and seconds."""
    from engine.id_index import IdSet

    before = rss_mb()
    start = time.perf_counter()
    done = IdSet()
    add = done.add
    per = len(STRATA)
    for stratum in STRATA:
        for j in range(paths // per):
            add(f"{stratum}-0-{j}")
    took = time.perf_counter() - start
    assert len(done) == paths // per * per and f"single-0-{paths // per - 1}" in done and f"single-0-{paths // per}" not in done
    return {"paths": paths, "rss_mb_before": round(before, 1), "rss_mb_after": round(rss_mb(), 1), "build_s": round(took, 1),
            "index_bytes": done.nbytes(), "peak_rss_mb": round(peak_rss_mb(), 1)}


def child(*args: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.store_resume_rss", *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    lines = [f"# Resuming a run of N paths: RSS of the store's id index ({result['date']})", "",
             f"Machine: {describe(result['machine'])}.", "",
             "Each path: a done marker plus three records (path, episode, positive trajectory): four ids. The run is "
             "opened with `RunStore.open` in a fresh process, as a resume does. `sets` = the index the store kept "
             "before (a Python set of every id per kind), built in the same process after the open.", "",
             "| paths | shards MiB | open s | RSS before open MB | RSS after open MB | RSS growth MB | bitmaps MiB | "
             "RSS with sets MB | sets growth MB | sets / compact |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        m = r["measured"]
        grow = m["rss_mb_after_open"] - m["rss_mb_before_open"]
        compact = max(grow, m["index_bytes"] / 2**20)  # RSS moves in pages: never credit less than the bitmaps
        sets = m.get("rss_mb_with_sets")
        set_grow = sets - m["rss_mb_after_open"] if sets is not None else None
        lines.append(f"| {r['paths']:,} | {r['shard_mib']} | {m['open_s']} | {m['rss_mb_before_open']} | {m['rss_mb_after_open']} | "
                     f"{grow:.1f} | {m['index_bytes'] / 2**20:.2f} | {sets if sets is not None else '-'} | "
                     f"{f'{set_grow:.1f}' if set_grow is not None else '-'} | "
                     f"{f'{set_grow / compact:.0f}x' if set_grow is not None else '-'} |")
    x = result["extrapolation"]
    lines += ["", f"Extrapolated to 100,000,000 paths from the two largest sizes: RSS after open about "
              f"**{x['rss_mb_at_100m']:,.0f} MB** ({x['bytes_per_path']:.2f} bytes per path above {x['intercept_mb']:.0f} MB), "
              f"against about {x['sets_mb_at_100m']:,.0f} MB for the old sets ({x['sets_bytes_per_path']:.0f} bytes per path). "
              "The compact index holds one bit per id for path-numbered ids (a bitmap per id shape and stratum).", ""]
    d = result.get("direct")
    if d:
        lines += [f"Measured at scale: the done ids of a {d['paths']:,}-path run ({len(STRATA)} strata) put into one `IdSet` "
                  f"in a fresh process: RSS {d['rss_mb_before']} MB -> {d['rss_mb_after']} MB (peak {d['peak_rss_mb']} MB), "
                  f"{d['index_bytes'] / 2**20:.1f} MiB of bitmaps, built in {d['build_s']} s.", ""]
    lines += [f"Target: < 1 GB when resuming a 100M-path run: **{'met' if result['met'] else 'NOT met'}**.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store_resume_rss", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,4000000", help="run sizes in paths, comma-separated")
    parser.add_argument("--direct", type=int, default=100_000_000, help="paths whose done ids are put into an IdSet directly (0: skip)")
    parser.add_argument("--baseline-max", type=int, default=2_000_000, help="largest size at which the old sets are built too")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for store_resume_rss.{json,md}")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # child mode: open this run and report
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--direct-child", type=int, help=argparse.SUPPRESS)  # child mode: the direct measurement
    args = parser.parse_args(argv)
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.baseline)))
        return 0
    if args.direct_child is not None:
        print(json.dumps(direct(args.direct_child)))
        return 0
    info = machine()
    rows = []
    for n in sorted(int(s) for s in args.sizes.split(",")):
        tmp = Path(tempfile.mkdtemp(prefix="magnet-resume-rss-"))
        try:
            made_s = synthesize(tmp / "run", n)
            shard_mib = round(sum(p.stat().st_size for p in (tmp / "run").rglob("*") if p.is_file()) / 2**20, 1)
            measured = child("--measure", str(tmp / "run"), *(["--baseline"] if n <= args.baseline_max else []))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        rows.append({"paths": n, "synthesize_s": round(made_s, 1), "shard_mib": shard_mib, "measured": measured})
        print(json.dumps(rows[-1]), flush=True)
    (a, b) = rows[-2:] if len(rows) > 1 else (rows[0], rows[0])
    rss = lambda r: r["measured"]["rss_mb_after_open"]  # noqa: E731
    measured = (rss(b) - rss(a)) / (b["paths"] - a["paths"]) if b is not a else 0.0
    slope = max(measured, b["measured"]["index_bytes"] / b["paths"] / 2**20)
    intercept = rss(b) - slope * b["paths"]
    with_sets = [r for r in rows if "rss_mb_with_sets" in r["measured"]]
    set_slope = max((r["measured"]["rss_mb_with_sets"] - rss(r)) / r["paths"] for r in with_sets) if with_sets else float("nan")
    extrapolation = {"bytes_per_path": slope * 2**20, "intercept_mb": intercept, "rss_mb_at_100m": intercept + slope * 1e8,
                     "sets_bytes_per_path": set_slope * 2**20, "sets_mb_at_100m": intercept + set_slope * 1e8}
    at_scale = child("--direct-child", str(args.direct)) if args.direct else None
    if at_scale:
        print(json.dumps(at_scale), flush=True)
    result = {"date": utc_now(), "machine": info, "rows": rows, "extrapolation": extrapolation, "direct": at_scale,
              "loadavg_end": loadavg(),
              "met": extrapolation["rss_mb_at_100m"] < 1024 and (at_scale is None or at_scale["peak_rss_mb"] < 1024)}
    write_results("store_resume_rss", result, markdown(result), args.out)
    print(json.dumps({"extrapolation": extrapolation, "met": result["met"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
