"""Stopping a real run process: SIGTERM/SIGINT stop cleanly and resume; kill -9 at several
points then resume. Every item id ends up done exactly once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from engine.store import read_records

CHILD = Path(__file__).with_name("engine_jobs_child.py")
N = 120


def _start(run_dir: Path, n=N, sleep_s=0.05, max_in_flight=8, grace_s=10.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(CHILD), str(run_dir), str(n), str(sleep_s), str(max_in_flight), str(grace_s)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_started(run_dir: Path, count: int, proc: subprocess.Popen, timeout=60.0) -> None:
    events = run_dir.parent / "events.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if events.exists() and events.read_text().count("start ") >= count:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"the child did not start {count} jobs in {timeout}s")


def _finish(proc: subprocess.Popen, timeout=60.0) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return orjson.loads(out.strip().splitlines()[-1])


def _assert_exactly_once(run_dir: Path, n=N) -> None:
    done = [r.id for r in read_records(run_dir, "done")]
    assert len(done) == len(set(done)) and set(done) == {f"item-{i}" for i in range(n)}
    paths = [r.id for r in read_records(run_dir, "paths")]
    assert len(paths) == len(set(paths)) == n


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_then_resumes(tmp_path, sig):
    run_dir = tmp_path / "run"
    proc = _start(run_dir)
    _wait_started(run_dir, 20, proc)
    proc.send_signal(sig)
    summary = _finish(proc)
    assert summary["interrupted"] is True
    assert summary["cancelled"] == 0  # 50 ms jobs finish well inside the 10 s grace
    assert 0 < summary["done"] < N
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    assert manifest["counts"]["done"] == summary["done"]
    assert manifest["extra"]["run_jobs:test"]["interrupted"] is True

    again = _finish(_start(run_dir))
    assert again["interrupted"] is False
    assert again["skipped"] == summary["done"] and again["done"] == N - summary["done"]
    _assert_exactly_once(run_dir)


def test_second_signal_cancels_in_flight_at_once(tmp_path):
    run_dir = tmp_path / "run"
    proc = _start(run_dir, n=20, sleep_s=60.0, max_in_flight=4, grace_s=120.0)
    _wait_started(run_dir, 4, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert proc.poll() is None  # first signal: waiting for the grace period
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    summary = _finish(proc, timeout=30)
    assert time.monotonic() - start < 10
    assert summary["interrupted"] is True and summary["cancelled"] == 4 and summary["done"] == 0
    assert (run_dir / "manifest.json").exists()


def test_kill_9_at_several_points_then_resume(tmp_path):
    run_dir = tmp_path / "run"
    stored = []
    for started in (10, 60, 30):  # jobs started in that attempt before the kill
        proc = _start(run_dir, sleep_s=0.1, max_in_flight=4)
        _wait_started(run_dir, started, proc)
        proc.kill()
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        (run_dir.parent / "events.log").unlink()
        stored.append(len({r.id for r in read_records(run_dir, "done")}))
    assert stored == sorted(stored) and stored[-1] > 0  # progress survives kills, partial state was resumed
    summary = _finish(_start(run_dir, sleep_s=0.0))
    assert summary["skipped"] == stored[-1] and summary["done"] + summary["skipped"] == N
    _assert_exactly_once(run_dir)
