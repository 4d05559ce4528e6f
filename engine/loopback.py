"""Start an aiohttp app on a loopback socket: on the caller's event loop, or in a thread of its own.

Every server the project runs for itself starts here: the simulator (`magnet serve-sim`), the
BFCL replay and adversary servers, `magnet view`, and the tests' servers. A server in its own
thread never competes with its client's loop, so synchronous clients (BFCL's handler, urllib in
a test) and a subprocess of `magnet generate` can use it while the caller waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator

from aiohttp import web

# Hundreds of clients (a throughput benchmark's) may connect at once; the default 128 drops some.
_BACKLOG = 4096


@contextlib.asynccontextmanager
async def serving(app: web.Application, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve ``app`` on the running loop; yields ``http://HOST:PORT`` (the bound port when 0 was asked).
    On exit the app's ``on_shutdown`` hooks run before in-flight requests get a second to finish."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=_BACKLOG).start()
        bound = runner.addresses[0][1]
        yield f"http://{f'[{host}]' if ':' in host else host}:{bound}"
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def serve_in_thread(make_app: Callable[[], web.Application], *, host: str = "127.0.0.1", port: int = 0,
                    name: str = "magnet-loopback") -> Iterator[str]:
    """Serve the app ``make_app()`` builds from a background thread with its own event loop;
    yields ``http://HOST:PORT``. A start-up error (a port in use) is raised in the caller's thread."""
    loop = new_loop()
    ready: asyncio.Future[str] = loop.create_future()
    stop = asyncio.Event()
    started = threading.Event()

    async def run() -> None:
        try:
            async with serving(make_app(), host=host, port=port) as url:
                ready.set_result(url)
                started.set()
                await stop.wait()
        except Exception as err:  # bind errors and the like: re-raised in the caller's thread
            if not ready.done():
                ready.set_exception(err)
            started.set()

    thread = threading.Thread(target=lambda: loop.run_until_complete(run()), name=name, daemon=True)
    thread.start()
    started.wait()
    try:
        yield ready.result()
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()


def new_loop() -> asyncio.AbstractEventLoop:
    """A fresh event loop: uvloop's when it is installed (faster I/O), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
