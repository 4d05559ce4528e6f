"""Run a command as a child and take its whole process group down when our parent dies.

``python -I pdeath_guard.py PARENT_PID WATCH_FD GRACE_S -- COMMAND...`` is what ``VLLMServer``
starts, as the leader of a new session and process group: the server and everything it spawns
(vLLM's engine-core and worker processes) stay in that group. The guard stops the group

- when the parent dies, however it dies (kill -9 included): the parent holds the write end of a
  pipe whose read end is ``WATCH_FD``, and the kernel closes it with the parent's last file
  descriptor table, so the read end sees end-of-file. A child the parent forked without exec
  could keep a copy of the write end open, so the guard also checks once a second whether it has
  been re-parented (``getppid()`` no longer ``PARENT_PID``);
- when it is sent SIGTERM or SIGINT (``VLLMServer.stop``): it passes SIGTERM on to the group;
- when the command exits on its own: its leftovers (a worker whose parent crashed) are stopped.

Stopping is SIGTERM to the group, then SIGKILL to whatever is left after ``GRACE_S`` seconds: a
server that ignores SIGTERM or hangs in its shutdown (3.5 GB that keeps answering /health) is
still gone. The guard then exits with the command's exit code (128 + N for signal N).

Why not ``prctl(PR_SET_PDEATHSIG)`` on the server itself: the kernel sends that signal when the
*thread* that started the child exits, not the process (a server started from a short-lived
thread dies with the thread), the server's own children do not get it, and a server that ignores
or stalls on the signal stays. The guard is stdlib-only and runs with ``-I`` (no site packages,
no project imports), so it costs one small interpreter.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 1.0  # how often a re-parenting is checked for when the pipe stays quiet


def group_members(pgid: int) -> list[int]:
    """Live processes of group ``pgid`` (zombies waiting to be reaped do not count); Linux /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def _signal_others(pgid: int, sig: int) -> bool:
    """Send ``sig`` to every member of our group but us; whether any was left."""
    others = [pid for pid in group_members(pgid) if pid != os.getpid()]
    for pid in others:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return bool(others)


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def guard(parent: int, watch_fd: int, grace_s: float, command: list[str]) -> int:
    pgid = os.getpgid(0)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)  # a signal (SIGCHLD, SIGTERM) ends the select below at once
    asked: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: asked.append(signum))
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    if os.getppid() != parent:  # the parent died before we started watching it
        return 1
    child = subprocess.Popen(command)
    watched = [watch_fd, wake_r]
    orphaned = killed = False
    deadline: float | None = None  # set once the group has been told to stop
    while True:
        timeout = POLL_S if deadline is None or killed else max(min(POLL_S, deadline - time.monotonic()), 0.0)
        ready, _, _ = select.select(watched, [], [], timeout)
        if wake_r in ready:
            os.read(wake_r, 512)
        if watch_fd in ready and not os.read(watch_fd, 512):
            watched.remove(watch_fd)  # at end-of-file it would stay readable forever
            orphaned = True
        orphaned = orphaned or os.getppid() != parent
        if child.poll() is not None:
            break
        if deadline is None:
            if orphaned or asked:
                os.killpg(pgid, signal.SIGTERM)  # reaches us too: the handler only records it
                deadline = time.monotonic() + grace_s
        elif not killed and time.monotonic() >= deadline:
            _signal_others(pgid, signal.SIGKILL)  # the server outstayed its grace
            killed = True
    # The command is gone; the rest of its group (engine-core workers) gets the same grace.
    deadline = time.monotonic() + grace_s if deadline is None else deadline
    if _signal_others(pgid, signal.SIGTERM):
        while _signal_others(pgid, 0) and time.monotonic() < deadline:
            time.sleep(0.1)
        _signal_others(pgid, signal.SIGKILL)
    return _exit_code(child.returncode)


def main(argv: list[str]) -> int:
    if len(argv) < 5 or argv[3] != "--":
        print("usage: pdeath_guard.py PARENT_PID WATCH_FD GRACE_S -- COMMAND...", file=sys.stderr)
        return 2
    return guard(int(argv[0]), int(argv[1]), float(argv[2]), argv[4:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
