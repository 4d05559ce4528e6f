"""`magnet generate --ray`: a real local Ray cluster (a head started here on 127.0.0.1, two actor
worker processes) against loopback simulator servers. The Ray run equals the single-process
run record for record; kill -9 of an actor's worker and of the driver lose and duplicate
nothing; one key's rate limit is shared by both actors. The cluster is tests/conftest.py's, shared
with tests/test_ray_eval.py.

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


def test_one_key_limit_is_shared_by_two_actors(cluster, tmp_path):
    """The server admits 100 requests per rolling 5 s (1,200 a minute) for the key; both actors
    send with it, each able to send far faster (8 paths in flight, 20 ms answers)."""
    limit_rpm = 1200
    # Only a 429's Retry-After tells the limit (x-ratelimit-* headers would count a 5 s window as a minute).
    with serve_sim_thread(seed=2, latency_ms=20, rpm=100, window_s=5.0, rate_headers="retry-after") as url:
        run = tmp_path / "run"
        argv = ["--teacher", f"openai:sim@{url}", "--out", str(run), "--concurrency", "8", "--ray", cluster, "--ray-actors", "2",
                "--rpm", str(limit_rpm), "--paths", "60", "--toolkits", "travel", "--draw-factor", "1", "--seed", "4", "--no-progress"]
        assert generate_main(argv) == 0
        with urllib.request.urlopen(url.removesuffix("/v1") + "/stats", timeout=10) as resp:
            stats = json.loads(resp.read())
    counts, arrivals = stats["counts"], sorted(stats["arrivals"])
    print(f"429s {counts['429']} of {len(arrivals)} requests, over {arrivals[-1] - arrivals[0]:.1f} s")
    assert counts["429"] / len(arrivals) < 0.01, counts
    # Steady state: from 2 s after the first request to the last request admitted before the run's
    # tail (the last paths in flight cannot keep the key busy).
    cut = [t for t in arrivals if arrivals[0] + 2.0 <= t <= arrivals[int(len(arrivals) * 0.85)]]
    rate = (len(cut) - 1) / (cut[-1] - cut[0]) * 60.0
    print(f"steady {rate:.0f} requests/min of {limit_rpm}")
    assert rate >= 0.95 * limit_rpm, f"{rate:.0f} requests/min of {limit_rpm}"
    assert rate <= limit_rpm * 1.01
    summary = json.loads((run / SUMMARY_FILE).read_text())
    assert summary["paths_finished"] == 60
