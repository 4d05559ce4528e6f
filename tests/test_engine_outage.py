"""A teacher outage is not a data failure (issue 11, item 2), run for real: `magnet generate` in a
subprocess against a closed loopback port and against a server that answers 401 to everything.
The run stops early with exit 3 and one line, stores no dead letter, and the same command with
the teacher fixed (the simulator served on the same port) then finishes every path."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import orjson

from engine.records import RECORD_KINDS
from engine.sim_server import serve_sim_thread
from engine.store import MANIFEST, read_records

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-test-0123456789abcdef-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def magnet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**os.environ, **(env or {})})


def fast_retries(tmp_path: Path) -> Path:
    """Teacher options (not part of the run's fingerprint) that keep a dead teacher's retries short."""
    path = tmp_path / "fast.toml"
    path.write_text("[teacher_options]\nmax_retries = 1\nbackoff_s = 0.01\n")
    return path


def generate_argv(port: int, run: Path, config: Path) -> list[str]:
    return ["generate", "--teacher", f"openai:sim@http://127.0.0.1:{port}/v1", "--out", str(run), "--paths", "20",
            "--concurrency", "4", "--config", str(config), "--no-progress"]


def ids(run: Path) -> dict[str, Counter]:
    return {kind: Counter(r.id for r in read_records(run, kind)) for kind in RECORD_KINDS}


def run_summary(run: Path) -> dict:
    return orjson.loads((run / MANIFEST).read_bytes())["extra"]["run_jobs:generate"]


def assert_one_line_exit_3(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 3, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("magnet generate: error: ") and "Traceback" not in result.stderr
    assert "nothing was lost" in line and "left pending" in line and "rerun the same command" in line
    for needle in needles:
        assert needle in line, line
    return line


def ended(run: Path) -> set[str]:
    """Paths that ended: committed (done marker) or dead-lettered as a whole."""
    return set(ids(run)["done"]) | {dl.item_id for dl in read_records(run, "dead_letters") if "#" not in dl.item_id}


def assert_every_path_ended(run: Path, outage_words: str) -> None:
    """Each path the source drew is now committed, all its records present once, or dead-lettered
    for a reason of its own; none is pending. (The source adapts to what is stored, so which
    paths it draws is not compared with another run.)"""
    got = ids(run)
    for kind in RECORD_KINDS:
        assert not [i for i, n in got[kind].items() if n > 1], f"{kind} stored twice"
    summary = run_summary(run)
    assert summary["skipped"] == 0, "the outage run must not have finished any path"
    assert summary["left_pending_teacher_unavailable"] == 0 and not summary["stopped_by_breaker"]
    assert summary["done"] > 0, "the fixed teacher stored no path"
    assert len(ended(run)) == summary["done"] + summary["failed"]
    letters = list(read_records(run, "dead_letters"))
    data = set().union(*(got[k] for k in RECORD_KINDS if k != "done"))
    assert all(set(marker.outputs) <= data for marker in read_records(run, "done"))
    assert not any(outage_words in dl.error for dl in letters)


def test_unreachable_teacher_exits_3_leaves_everything_pending_and_the_fixed_teacher_finishes(tmp_path):
    port = free_port()  # nothing listens here: connection refused
    run, config = tmp_path / "run", fast_retries(tmp_path)
    t0 = time.monotonic()
    down = magnet(*generate_argv(port, run, config))
    assert time.monotonic() - t0 < 60
    assert_one_line_exit_3(down, f"cannot connect to http://127.0.0.1:{port}/v1/chat/completions",
                           "work items in a row failed after every retry")
    stored = ids(run)
    assert not stored["dead_letters"] and not stored["done"], "an outage must not finish (or dead-letter) any path"
    summary = run_summary(run)
    assert summary["stopped_by_breaker"] and summary["failed"] == 0

    with serve_sim_thread(port=port, seed=3) as url:
        assert url == f"http://127.0.0.1:{port}/v1"
        up = magnet(*generate_argv(port, run, config))
        assert up.returncode == 0, up.stderr[-2000:]
    assert_every_path_ended(run, "cannot connect")


def test_a_teacher_answering_401_stops_at_once_without_repeating_the_key(tmp_path):
    port = free_port()
    run, config = tmp_path / "run", fast_retries(tmp_path)
    # The simulator's "401" echoes the bearer token back, as a careless proxy might.
    with serve_sim_thread(port=port, script=["401"] * 10_000) as url:
        refused = magnet(*generate_argv(port, run, config), env={"OPENAI_API_KEY": SECRET})
        with urllib.request.urlopen(url.removesuffix("/v1") + "/stats") as resp:
            seen = json.load(resp)
    line = assert_one_line_exit_3(refused, "refuses the requests", "answered 401", "check the key in OPENAI_API_KEY")
    assert SECRET not in refused.stderr + refused.stdout and SECRET not in line
    for path in run.rglob("*"):
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path
    requests = sum(seen["counts"].values())
    assert 1 <= requests <= 8, seen  # stopped at the first refusals, not after every path
    assert not ids(run)["dead_letters"] and not ids(run)["done"]

    with serve_sim_thread(port=port, seed=3):
        up = magnet(*generate_argv(port, run, config), env={"OPENAI_API_KEY": SECRET})
        assert up.returncode == 0, up.stderr[-2000:]
    assert_every_path_ended(run, "401")
