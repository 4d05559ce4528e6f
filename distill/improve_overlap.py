"""Round N+1's generation, run while round N trains: one background thread per overlapped round.

When the generation teacher is not the model being trained (the simulator, an API, another
served model) and negatives are not mined from that model, round N+1's generation needs
nothing round N produces except a path mixture; it is steered by round N's probe (one round
stale) and can run during round N's SFT and mDPO instead of after them. LoopTool (arXiv
2511.09148) runs its loop serially; this overlap is what an external teacher buys.

A thread, not a subprocess: a kill -9 of the loop takes the generation with it, so a rerun never
races an orphan writing the same store. The thread runs ordinary stages (``Stages.run``), so its
markers and its store resume exactly like the serial loop's. It is joined before the round's
evaluation: evaluation serves the new checkpoint and wants every CPU, and the generation's
process-wide token counters must not mix with the evaluation's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Ahead:
    """``fn`` running in a daemon thread; ``join`` waits and re-raises what it raised.

    Daemon: when the loop itself dies (Ctrl-C, an error), the process exits without waiting;
    the store survives an abrupt end (the kill -9 tests) and the rerun resumes it."""

    def __init__(self, name: str, fn: Callable[[], Any]):
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, args=(fn,), name=name, daemon=True)
        self._thread.start()

    def _main(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except BaseException as err:  # noqa: BLE001 - handed to the joining thread, which raises it
            self._error = err

    def join(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error
