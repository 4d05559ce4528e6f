"""Test-wide setup: offline hub, the repo root importable, a private cache per session; the local Ray cluster."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def cluster():
    """A Ray head on 127.0.0.1 with 2 CPUs (room for two actors, one CPU each), started once for every
    Ray test of the session (tests/test_ray_*.py): a start costs seconds on a small box."""
    import shutil
    import signal
    import subprocess
    import tempfile
    import time

    import ray  # imported here: only the Ray tests need the optional extra

    # A loopback-only cluster: no token (Ray's default would read or write one under ~/.ray).
    # The drivers the tests start, in this process and in subprocesses, inherit the setting.
    saved_auth = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="/tmp/mray")  # short: Ray's socket paths live under it
    ray_cli = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen([ray_cli, "start", "--head", "--block", "--port", str(port), "--node-ip-address", "127.0.0.1",
                             "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard=false", "--disable-usage-stats",
                             "--temp-dir", temp], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                ray.init(address=address, include_dashboard=False, logging_level="WARNING")
                break
            except Exception:  # noqa: BLE001 - the head is still starting
                if head.poll() is not None or time.monotonic() > deadline:
                    why = head.stderr.read().decode()[-2000:] if head.poll() is not None else "timeout"
                    raise RuntimeError(f"the Ray head did not start: {why}") from None
                time.sleep(1.0)
        yield address
    finally:
        ray.shutdown()
        if saved_auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved_auth
        # The head's session holds every process it started (GCS, raylet, workers): end them by group id.
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(10)
        shutil.rmtree(temp, ignore_errors=True)
