"""kill -9 a real writer process at several points, or let the kernel fail its writes, then
resume: every id stored exactly once, no finished item without its records, and the run completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from engine.records import RECORD_KINDS
from engine.shards import FRAME_OVERHEAD, iter_frames, shard_files
from engine.store import MANIFEST, RunStore, read_records

WRITER = Path(__file__).with_name("_store_writer.py")
N_ITEMS = 1500
KILL_AT = [2, 90, 400, 1100]


def dead(i: int) -> bool:
    return i % 7 == 3


def run_writer(run_dir: Path, durability: str, kill_at: int | None) -> int:
    """Start the writer; SIGKILL it once it reports item ``kill_at``. Returns its exit status."""
    proc = subprocess.Popen([sys.executable, str(WRITER), str(run_dir), str(N_ITEMS), durability], stdout=subprocess.PIPE)
    try:
        if kill_at is not None:
            for line in proc.stdout:
                if int(line) >= kill_at:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
        proc.stdout.read()
        return proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def check_consistent(run_dir: Path) -> set[int]:
    """Every id once per kind; every finished item has all its records. Returns finished items."""
    ids = {kind: Counter(r.id for r in read_records(run_dir, kind)) for kind in RECORD_KINDS}
    for kind, counter in ids.items():
        doubled = [i for i, n in counter.items() if n > 1]
        assert not doubled, f"{kind} stored twice: {doubled[:5]}"
    finished = set()
    for item in ids["done"]:
        i = int(item.split("-")[1])
        assert not dead(i)
        assert f"path-{i}" in ids["paths"] and f"ep-{i}" in ids["episodes"] and f"traj-{i}-positive" in ids["trajectories"]
        finished.add(i)
    for dl in read_records(run_dir, "dead_letters"):
        finished.add(int(dl.item_id.split("-")[1]))
    return finished


@pytest.mark.parametrize("durability", ["close", "interval"])
def test_kill_9_at_several_points_then_resume(tmp_path, durability):
    run_dir = tmp_path / "run"
    progress = []
    for kill_at in KILL_AT:
        status = run_writer(run_dir, durability, kill_at)
        assert status == -signal.SIGKILL, "the writer finished before it could be killed"
        finished = check_consistent(run_dir)
        with RunStore.open(run_dir, config_fingerprint="crash-test") as store:  # resume: truncates torn tails
            assert {i for i in range(N_ITEMS) if store.is_finished(f"item-{i}")} == finished
        progress.append(len(finished))
    assert progress == sorted(progress) and progress[-1] >= KILL_AT[-1] - 200

    assert run_writer(run_dir, durability, None) == 0
    assert check_consistent(run_dir) == set(range(N_ITEMS))
    live = [i for i in range(N_ITEMS) if not dead(i)]
    assert sorted(int(t.id.split("-")[1]) for t in read_records(run_dir, "trajectories")) == live
    manifest = orjson.loads((run_dir / MANIFEST).read_bytes())
    assert manifest["counts"] == {
        "paths": len(live), "episodes": len(live), "trajectories": len(live), "pairs": 0,
        "dead_letters": N_ITEMS - len(live), "done": len(live),
    }


def test_real_write_failure_then_resume(tmp_path):
    """RLIMIT_FSIZE makes the kernel cut a write short and then fail it (EFBIG): a real
    failed write mid-frame, no mock. The error is clear, the stored part stays readable,
    and the rerun completes with every id once."""
    run_dir = tmp_path / "run"
    limit = 40_000
    proc = subprocess.run([sys.executable, str(WRITER), str(run_dir), str(N_ITEMS), "interval", str(limit)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot write to run directory {run_dir}" in proc.stderr and "File too large" in proc.stderr
    assert "ulimit -f" in proc.stderr and "rerun the same command to resume" in proc.stderr
    full = max(shard_files(run_dir / "trajectories"), key=lambda p: p.stat().st_size)
    assert full.stat().st_size <= limit
    last = [off + FRAME_OVERHEAD + len(p) for off, p in iter_frames(full)][-1]
    assert full.stat().st_size == last  # the short write was cut back to the last whole frame
    finished = check_consistent(run_dir)
    assert 0 < len(finished) < N_ITEMS

    assert run_writer(run_dir, "interval", None) == 0
    assert check_consistent(run_dir) == set(range(N_ITEMS))
