"""A managed server dies with its parent, however the parent dies (issue 11, item 1).

A real parent process (tests/vllm_parent_child.py) starts a managed server and is killed with
SIGKILL; the server's whole process group (server, its worker) must then be gone and its port
closed. The fast tests use a stand-in server (tests/standin_server.py: /health on loopback plus a
worker process it leaves behind); the last one does it with vLLM serving SmolLM2, requests in flight.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from engine.errors import FatalTeacherError
from engine.teachers.pdeath_guard import group_members

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from vllm_parent_child import StandInServer  # noqa: E402


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Parent:
    """tests/vllm_parent_child.py in its own process; ``info`` is the JSON line it prints."""

    def __init__(self, tmp_path: Path, *flags: str, startup_s: float = 60.0):
        self.log = tmp_path / "server.log"
        self.proc = subprocess.Popen([sys.executable, str(HERE / "vllm_parent_child.py"), "--log", str(self.log), *flags],
                                     stdout=subprocess.PIPE, text=True)
        self.info = json.loads(self._line(startup_s))
        self.guard, self.port = self.info["guard"], self.info["port"]

    def _line(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line:
                return line
            if self.proc.poll() is not None:
                break
        log = self.log.read_text()[-3000:] if self.log.exists() else "(none)"
        raise AssertionError(f"the parent printed nothing (exit {self.proc.poll()}); server log:\n{log}")

    def wait_for(self, text: str, timeout_s: float) -> None:
        assert self._line(timeout_s).strip() == text

    def kill9(self) -> float:
        """SIGKILL the parent; returns when, for timing how long its server outlives it."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        return time.monotonic()

    def wait_gone(self, since: float, timeout_s: float) -> float:
        """Seconds from ``since`` until no process of the server's group is left and its port is closed."""
        while time.monotonic() - since < timeout_s:
            if not group_members(self.guard) and not _port_open(self.port):
                return time.monotonic() - since
            time.sleep(0.1)
        left = group_members(self.guard)
        for pid in left:  # do not leak them into the rest of the test session
            os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"{len(left)} process(es) of the server's group still alive {timeout_s:g} s after the parent died")

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in group_members(self.guard):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def parents():
    started: list[Parent] = []
    yield started
    for parent in started:
        parent.cleanup()


def test_kill_9_of_the_parent_takes_the_whole_group_down(tmp_path, parents):
    # Started from a thread that exits at once: a parent-death signal would already have killed it.
    parent = Parent(tmp_path, "--standin=", "--thread")
    parents.append(parent)
    time.sleep(1.0)
    members = group_members(parent.guard)
    assert _healthy(parent.port) and len(members) == 3  # guard, server, the server's worker
    took = parent.wait_gone(parent.kill9(), timeout_s=10)
    assert took < 5.0  # the pipe tells the guard at once; SIGTERM is enough for this server


def test_a_server_that_ignores_sigterm_is_killed_after_the_grace(tmp_path, parents):
    parent = Parent(tmp_path, "--standin=--ignore-sigterm", "--grace", "1.5")
    parents.append(parent)
    assert _healthy(parent.port)
    killed = parent.kill9()
    time.sleep(1.0)
    assert _healthy(parent.port)  # within the grace: SIGTERM is ignored
    assert 1.5 <= parent.wait_gone(killed, timeout_s=10) < 6.0


def test_a_forked_child_holding_the_pipe_does_not_keep_the_server_alive(tmp_path, parents):
    parent = Parent(tmp_path, "--standin=", "--fork")
    parents.append(parent)
    forked = parent.info["forked"]
    try:
        assert _healthy(parent.port)
        # The fork keeps the pipe's write end open: the guard notices it was re-parented instead.
        assert parent.wait_gone(parent.kill9(), timeout_s=10) < 5.0
    finally:
        os.kill(forked, signal.SIGKILL)


async def test_stop_takes_the_group_down_and_a_failed_start_keeps_its_exit_code(tmp_path):
    server = StandInServer(flags=[], grace_s=5.0, log_path=tmp_path / "ok.log", startup_timeout_s=60)
    await server.start()
    guard, port = server.proc.pid, server.port
    assert _healthy(port) and len(group_members(guard)) == 3
    await server.stop()
    assert not group_members(guard) and not _port_open(port) and server.proc is None

    failing = StandInServer(flags=["--exit", "3"], grace_s=5.0, log_path=tmp_path / "bad.log", startup_timeout_s=60)
    with pytest.raises(FatalTeacherError, match="exited with code 3") as info:
        await failing.start()
    assert "failing at start-up with code 3" in str(info.value)  # the log's tail
    assert failing.proc is None


@pytest.mark.vllm
@pytest.mark.slow
def test_kill_9_while_vllm_serves_smollm2_frees_everything(tmp_path, parents):
    parent = Parent(tmp_path, "--serve", startup_s=900)
    parents.append(parent)
    parent.wait_for("serving", timeout_s=300)  # requests are in flight now
    members = group_members(parent.guard)
    assert _healthy(parent.port) and len(members) >= 3  # guard, API server, engine core (+ workers)
    took = parent.wait_gone(parent.kill9(), timeout_s=60)
    assert took < 30.0
    log = parent.log.read_text()
    assert "Application startup complete" in log
