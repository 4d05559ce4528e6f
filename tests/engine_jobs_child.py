"""A real run for the signal and kill -9 tests: ``run_jobs`` over N sleep jobs into a RunStore.

Usage: python tests/engine_jobs_child.py RUN_DIR N SLEEP_S MAX_IN_FLIGHT GRACE_S
Each job appends "start ID" to RUN_DIR/../events.log (so the parent knows how far it got),
sleeps, and returns one SignaturePath record. The summary JSON is printed on stdout.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.records import PathTurn, SignaturePath  # noqa: E402
from engine.scheduler import run, run_jobs  # noqa: E402
from engine.store import RunStore  # noqa: E402


async def main(run_dir: Path, n: int, sleep_s: float, max_in_flight: int, grace_s: float) -> dict:
    events = open(run_dir.parent / "events.log", "a", buffering=1)

    async def job(i: int) -> list:
        events.write(f"start {i}\n")
        await asyncio.sleep(sleep_s)
        return [("paths", SignaturePath(id=f"path-{i}", kind="single", turns=[PathTurn(functions=[f"f{i % 7}"])]))]

    with RunStore.open(run_dir, config_fingerprint="signals-test") as store:
        return await run_jobs(range(n), job, store, item_id=lambda i: f"item-{i}", stage="test",
                              max_in_flight=max_in_flight, total=n, progress=False, grace_s=grace_s)


if __name__ == "__main__":
    run_dir, n, sleep_s, max_in_flight, grace_s = sys.argv[1:6]
    summary = run(main(Path(run_dir), int(n), float(sleep_s), int(max_in_flight), float(grace_s)))
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
