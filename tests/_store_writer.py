"""Child process for the kill -9 tests: commits items into a run store until done or killed.

usage: python tests/_store_writer.py RUN_DIR N_ITEMS DURABILITY [MAX_FILE_BYTES]

Item i stores a path, an episode and a trajectory, except every 7th item, which is
dead-lettered. After each item it prints one padded line ("<i>") so the parent can kill it
at a chosen point; the padding keeps the pipe small, so the child cannot run far ahead.
MAX_FILE_BYTES sets RLIMIT_FSIZE: the kernel then really fails (EFBIG, after a short write)
the write that crosses it, a disk failure without any mock; the child prints the store's
error and exits 2, as the CLI would.
"""

from __future__ import annotations

import resource
import signal
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import _records_factory as F  # noqa: E402

from engine.store import RunStore, StoreWriteError  # noqa: E402

LINE = 512


def main() -> int:
    run_dir, n, durability = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if len(sys.argv) > 4:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of dying
        limit = int(sys.argv[4])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        run(run_dir, n, durability)
    except StoreWriteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def run(run_dir: str, n: int, durability: str) -> None:
    with RunStore.open(run_dir, config_fingerprint="crash-test", shard_bytes=64 << 10, durability=durability,
                       buffer_bytes=4 << 10, flush_interval=0.2) as store:
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
    sys.exit(main())
