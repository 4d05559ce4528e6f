"""Child process for the kill -9 tests: commits items into a run store until done or killed.

usage: python tests/_store_writer.py RUN_DIR N_ITEMS DURABILITY

Item i stores a path, an episode and a trajectory, except every 7th item, which is
dead-lettered. After each item it prints one padded line ("<i>") so the parent can kill it
at a chosen point; the padding keeps the pipe small, so the child cannot run far ahead.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import _records_factory as F  # noqa: E402
from engine.store import RunStore  # noqa: E402

LINE = 512


def main() -> None:
    run_dir, n, durability = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with RunStore.open(run_dir, config_fingerprint="crash-test", shard_bytes=64 << 10, durability=durability,
                       buffer_bytes=4 << 10, flush_interval=0.05) as store:
        for i in range(n):
            item = f"item-{i}"
            if store.is_finished(item):
                continue
            if i % 7 == 3:
                store.dead_letter(F.dead_letter(i))
            else:
                store.commit(item, [("paths", F.path(i)), ("episodes", F.episode(i)), ("trajectories", F.trajectory(i))])
            sys.stdout.write(f"{i}".ljust(LINE - 1) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
