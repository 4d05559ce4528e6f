"""`magnet generate --ray`: a real local Ray cluster (a head started here on 127.0.0.1, two actor
worker processes) against loopback simulator servers. The Ray run equals the single-process
run record for record; kill -9 of an actor's worker and of the driver lose and duplicate
nothing; one key's rate limit, configured or learned from 429s, is shared by both actors. The
cluster is tests/conftest.py's, shared with tests/test_ray_eval.py.

"Equal record for record": with ``--draw-factor 1`` every stratum draws exactly its target, paths
``<stratum>-<seed>-0 .. target-1``, whatever the timing (in-flight paths never make a stratum stop
early: it stops at ``max_draws``), so both runs work on the same ids, and every record of every
kind (dead letters included) must be byte-identical. With a larger draw factor the ids drawn
depend on timing, in one process too, and only the ids both runs drew compare.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import pytest
import ray  # noqa: F401 - an optional extra of the project; setup.sh installs it, and these tests fail loudly without it

from distill.cli import SUMMARY_FILE, generate_main
from engine import metrics
from engine.sim_server import serve_sim_thread
from engine.store import read_records

KINDS = ("paths", "episodes", "trajectories", "pairs", "dead_letters", "done")
ARGS = ["--paths", "24", "--toolkits", "travel", "--draw-factor", "1", "--seed", "3", "--no-progress"]
WORKER_TITLE = "ray::LeaseWorker"  # the process title Ray gives a LeaseWorker actor's worker


@pytest.fixture(scope="module")
def server():
    # 100 ms per answer: a path takes about a second, so a run lasts long enough to kill things mid-way.
    with serve_sim_thread(seed=1, latency_ms=100) as url:
        yield url


@pytest.fixture(scope="module")
def reference(server, tmp_path_factory):
    """The single-process run of the same paths."""
    run = tmp_path_factory.mktemp("single") / "run"
    assert generate_main(["--teacher", f"openai:sim@{server}", "--out", str(run), "--concurrency", "6", *ARGS]) == 0
    return _records(run)


def _records(run: Path) -> dict[str, dict[str, bytes]]:
    """Kind -> id -> the record's bytes; fails on an id stored twice."""
    out = {}
    for kind in KINDS:
        records = [(r.id, msgspec.json.encode(r)) for r in read_records(run, kind)]
        ids = [i for i, _ in records]
        assert len(ids) == len(set(ids)), f"{kind}: ids stored twice: {sorted(i for i in set(ids) if ids.count(i) > 1)}"
        out[kind] = dict(records)
    return out


def _assert_equal(got: dict[str, dict[str, bytes]], want: dict[str, dict[str, bytes]]) -> None:
    for kind in KINDS:
        assert got[kind].keys() == want[kind].keys(), kind
        differ = [i for i in want[kind] if got[kind][i] != want[kind][i]]
        assert not differ, f"{kind}: records differ: {differ[:5]}"


def _worker_pids() -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    return [int(line.split(None, 1)[0]) for line in out.splitlines() if line.split(None, 1)[1:2]
            and line.split(None, 1)[1].startswith(WORKER_TITLE)]


def test_two_actors_equal_the_single_process_run(cluster, server, reference, tmp_path):
    run = tmp_path / "run"
    argv = ["--teacher", f"openai:sim@{server}", "--out", str(run), "--concurrency", "3", "--ray", cluster, "--ray-actors", "2", *ARGS]
    assert generate_main(argv) == 0
    summary = json.loads((run / SUMMARY_FILE).read_text())
    _assert_equal(_records(run), reference)
    assert summary["ray"]["actors"] == 2 and summary["ray"]["leases_lost"] == 0
    # the final table adds up the actors' teacher calls (each path makes several)
    assert summary["teacher_calls"] >= 2 * summary["paths_finished"] > 0
    assert sum(len(reference[k]) for k in ("done", "dead_letters")) >= 24


def test_kill_9_of_an_actor_worker_reruns_its_lease(cluster, server, reference, tmp_path):
    run = tmp_path / "run"
    argv = ["--teacher", f"openai:sim@{server}", "--out", str(run), "--concurrency", "3", "--ray", cluster, "--ray-actors", "2", *ARGS]
    killed: dict[str, int] = {}
    finished = threading.Event()

    def kill_one_worker() -> None:
        while not finished.is_set():
            pids = _worker_pids()
            # mid-run: two actors up and a few paths committed, most still to do
            if len(pids) == 2 and metrics.METRICS.items_done >= 3:
                killed["at_done"] = metrics.METRICS.items_done
                killed["pid"] = pids[0]
                os.kill(pids[0], signal.SIGKILL)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    try:
        assert generate_main(argv) == 0
    finally:
        finished.set()
        killer.join(5)
    summary = json.loads((run / SUMMARY_FILE).read_text())
    assert killed and killed["at_done"] < 12, killed
    assert summary["ray"]["leases_lost"] >= 1 and summary["ray"]["items_released"] >= 1, summary["ray"]
    assert killed["pid"] not in _worker_pids()
    _assert_equal(_records(run), reference)


def test_kill_9_of_the_driver_then_resume(cluster, server, reference, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "engine.cli", "generate", "--teacher", f"openai:sim@{server}", "--out", str(run),
           "--concurrency", "3", "--ray", cluster, "--ray-actors", "2", *ARGS]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while sum(1 for _ in read_records(run, "done", on_corrupt=lambda _c: None)) < 4:
            assert driver.poll() is None, driver.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        driver.kill()  # SIGKILL: no flush, no manifest, actors orphaned (Ray ends them with their owner)
        driver.wait(10)
    finally:
        if driver.poll() is None:
            driver.kill()
    partial = sum(1 for _ in read_records(run, "done", on_corrupt=lambda _c: None))
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run / SUMMARY_FILE).read_text())
    # the resumed driver ran only what the killed one had not finished (the source skips finished ids)
    assert partial >= 4 and 0 < summary["paths_this_run"] <= 24 - partial, (partial, summary["paths_this_run"])
    _assert_equal(_records(run), reference)


def _limited_run(cluster: str, tmp_path: Path, paths: int, limit: dict[str, Any], flags: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """2 actors, 8 paths in flight each (each able to send far faster than the limit), against a loopback
    server that enforces ``limit`` for the key (20 ms answers); the server's /stats and the run's summary."""
    with serve_sim_thread(seed=2, latency_ms=20, **limit) as url:
        run = tmp_path / "run"
        argv = ["--teacher", f"openai:sim@{url}", "--out", str(run), "--concurrency", "8", "--ray", cluster, "--ray-actors", "2",
                *flags, "--paths", str(paths), "--toolkits", "travel", "--draw-factor", "1", "--seed", "4", "--no-progress"]
        assert generate_main(argv) == 0
        with urllib.request.urlopen(url.removesuffix("/v1") + "/stats", timeout=10) as resp:
            stats = json.loads(resp.read())
    summary = json.loads((run / SUMMARY_FILE).read_text())
    assert summary["paths_finished"] == paths
    return stats, summary


def _admitted_per_min(stats: dict[str, Any], start: float) -> float:
    """Requests the server admitted per minute, from ``start`` to the last request before the run's tail
    (the last paths in flight cannot keep the key busy)."""
    arrivals = sorted(stats["arrivals"])
    end = arrivals[int(len(arrivals) * 0.85)]
    admitted = sum(1 for t in arrivals if start <= t <= end) - sum(1 for t in stats["refused"] if start <= t <= end)
    return admitted / (end - start) * 60.0


def test_one_key_limit_is_shared_by_two_actors(cluster, tmp_path):
    """The server admits 100 requests per rolling 5 s (1,200 a minute) for the key, and --rpm says so."""
    limit_rpm = 1200
    # Only a 429's Retry-After tells the limit (x-ratelimit-* headers would count a 5 s window as a minute).
    stats, _ = _limited_run(cluster, tmp_path, 60, {"rpm": 100, "window_s": 5.0, "rate_headers": "retry-after"}, ["--rpm", str(limit_rpm)])
    counts, arrivals = stats["counts"], sorted(stats["arrivals"])
    print(f"429s {counts['429']} of {len(arrivals)} requests, over {arrivals[-1] - arrivals[0]:.1f} s")
    assert counts["429"] / len(arrivals) < 0.01, counts
    rate = _admitted_per_min(stats, arrivals[0] + 2.0)  # steady state: from 2 s after the first request
    print(f"steady {rate:.0f} requests/min of {limit_rpm}")
    assert 0.95 * limit_rpm <= rate <= limit_rpm * 1.01, f"{rate:.0f} requests/min of {limit_rpm}"


def test_a_key_limit_learned_from_429s_is_shared_by_two_actors(cluster, tmp_path):
    """No --rpm, no x-ratelimit-* headers: the server admits 600 requests per rolling 30 s (1,200 a minute)
    and answers the rest 429 with a Retry-After in whole seconds. The key's limiter measures the rate from
    both actors' sends (each actor alone would see half of them) and holds both to it. (A whole-second
    Retry-After after a W-second window measures between W/(W+1) and all of the limit: 30 s keeps that
    above 96.8%, where 20 s would leave 95% to the slow growth of the estimate.)"""
    limit_rpm, window_s = 1200, 30.0
    stats, summary = _limited_run(cluster, tmp_path, 220, {"rpm": 600, "window_s": window_s, "rate_headers": "retry-after"}, [])
    (key,) = summary["ray"]["keys"].values()
    arrivals, refused = sorted(stats["arrivals"]), sorted(stats["refused"])
    # Learning: the first window fills at once, its 429s measure the rate, everyone waits out the window.
    learned = arrivals[0] + window_s + 2.0
    after = [t for t in arrivals if t >= learned]
    late = [t for t in refused if t >= learned]
    rate = _admitted_per_min(stats, learned)
    print(f"429s {len(refused)} of {len(arrivals)} requests ({len(refused) - len(late)} while learning), over "
          f"{arrivals[-1] - arrivals[0]:.1f} s; after learning {len(late)} of {len(after)}, {rate:.0f} requests/min of {limit_rpm}")
    print(f"the key's limiter learned {key['estimated_rpm']} requests/min")
    assert key["estimated_rpm"] is not None and not key["learned"], key  # the key measured it, from 429s alone
    assert len(late) / len(after) < 0.01, (len(late), len(after))
    assert 0.95 * limit_rpm <= rate <= limit_rpm * 1.01, f"{rate:.0f} requests/min of {limit_rpm}"
