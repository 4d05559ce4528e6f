"""A real headless Chromium for the viewer tests, driven over the DevTools protocol.

No driver package: Chromium is started with ``--remote-debugging-port=0``, the page target's
WebSocket is opened with aiohttp (a project dependency) on an event loop of its own thread, and
the few calls the tests need are CDP methods (Page.navigate, Runtime.evaluate,
Page.captureScreenshot). Chromium is Debian's ``chromium`` package (setup.sh installs it);
``MAGNET_CHROMIUM`` names another binary. A test module that imports ``browser_fixture`` gets the
``browser`` fixture: one Chromium for all its tests.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MISSING = ("Chromium is not installed: the `magnet view` tests drive a real headless Chromium. Install it with "
           "`sudo apt-get install chromium` (setup.sh does this when run as root), point MAGNET_CHROMIUM at a "
           "Chromium binary, or deselect these tests with `-m 'not browser'`.")


def find_chromium() -> str | None:
    named = os.environ.get("MAGNET_CHROMIUM")
    if named:
        return named if shutil.which(named) else None
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


class CDPError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with one page. Synchronous methods; the socket lives on a private loop."""

    def __init__(self, binary: str, *, width: int = 1400, height: int = 1000):
        self._profile = tempfile.mkdtemp(prefix="magnet-chromium-")
        args = [binary, "--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-dev-shm-usage",
                "--remote-debugging-port=0", f"--user-data-dir={self._profile}", f"--window-size={width},{height}",
                "--hide-scrollbars", "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run its sandbox as root (CI containers)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port = self._devtools_port()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            targets = json.load(r)
        ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._load = None
        self.console: list[str] = []
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="cdp", daemon=True).start()
        self._call(self._connect(ws_url), 20)
        for domain in ("Page.enable", "Runtime.enable"):
            self.send(domain)

    def _devtools_port(self) -> int:
        lines = []
        for line in self.proc.stderr:
            lines.append(line)
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()  # keep the pipe drained
                return int(m.group(1))
        raise CDPError("Chromium exited before opening its DevTools port:\n" + "".join(lines[-20:]))

    def _call(self, coro: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _connect(self, ws_url: str) -> None:
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(ws_url, max_msg_size=0)
        self._load = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self._ws:
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
            elif data.get("method") == "Page.loadEventFired":
                self._load.set()
            elif data.get("method") == "Runtime.consoleAPICalled":
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in data["params"]["args"]))
            elif data.get("method") == "Runtime.exceptionThrown":
                self.console.append("exception: " + json.dumps(data["params"]["exceptionDetails"])[:500])

    async def _send(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        n = next(self._ids)
        fut = self._loop.create_future()
        self._pending[n] = fut
        await self._ws.send_str(json.dumps({"id": n, "method": method, "params": params}))
        reply = await fut
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def send(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        return self._call(self._send(method, params), timeout)

    async def _goto(self, url: str) -> None:
        self._load.clear()
        result = await self._send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"navigating to {url}: {result['errorText']}")
        await self._load.wait()

    def goto(self, url: str, timeout: float = 120) -> None:
        """Open ``url`` and wait for its load event (images included)."""
        self._call(self._goto(url), timeout)

    def eval(self, expression: str, timeout: float = 60) -> Any:
        """The value of a JavaScript expression in the page (JSON-able values come back as Python)."""
        result = self.send("Runtime.evaluate", timeout, expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise CDPError(f"{expression[:80]}: {result['exceptionDetails'].get('text')} "
                           f"{result['exceptionDetails'].get('exception', {}).get('description', '')}")
        return result["result"].get("value")

    def click(self, selector: str, timeout: float = 120) -> None:
        """Click a link (follows it; waits for the next page's load)."""
        async def go() -> None:
            self._load.clear()
            await self._send("Runtime.evaluate", {"expression": f"document.querySelector({json.dumps(selector)}).click()"})
            await self._load.wait()

        self._call(go(), timeout)

    def screenshot(self, path: Path, *, max_height: int = 3000) -> Path:
        """A PNG of the page from the top, as tall as its content (up to ``max_height`` pixels)."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], max_height), "scale": 1}
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self._call(self._close(), 10)
        except (OSError, RuntimeError, TimeoutError, aiohttp.ClientError):
            pass  # the browser is terminated below either way
        self._loop.call_soon_threadsafe(self._loop.stop)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    async def _close(self) -> None:
        await self._ws.close()
        await self._session.close()


@pytest.fixture(scope="module", name="browser")
def browser_fixture():
    """One Chromium per test module; fails (does not skip) where none is installed: see MISSING."""
    binary = find_chromium()
    if binary is None:
        pytest.fail(MISSING, pytrace=False)
    b = Browser(binary)
    yield b
    b.close()
