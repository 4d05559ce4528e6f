"""Live progress of a run, read from the shared METRICS counters.

On a terminal: a rich live line refreshed about twice a second. Otherwise (CI, pipes, log
files): one plain line every ``log_every_s`` seconds, so logs stay readable. Rates are the
difference of two snapshots over the last refresh window, so the hot path only ever adds
integers to METRICS.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, TextIO

from engine import metrics

_FIELDS = ("items_done", "items_failed", "items_skipped", "requests", "prompt_tokens", "completion_tokens",
           "rate_limited", "cost_usd")


def _snapshot() -> dict[str, float]:
    m = metrics.METRICS
    return {f: getattr(m, f) for f in _FIELDS} | {"t": time.monotonic()}


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Shows done, failed, skipped, in flight, requests/s, tokens/s, 429s, ETA and cost.

    Counts are this run's (relative to ``start()``); rates are over the last refresh window.
    """

    def __init__(self, *, stage: str, total: int | None = None, refresh_s: float = 0.5, log_every_s: float = 10.0,
                 stream: TextIO | None = None):
        self.stage, self.total = stage, total
        self.stream = stream if stream is not None else sys.stderr
        self.live_mode = self.stream.isatty()
        self.refresh_s = refresh_s if self.live_mode else log_every_s
        self._base: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._live: Any = None

    def line(self) -> str:
        """One status line; also updates the rate window."""
        now = _snapshot()
        base, last = self._base, self._last
        window = max(now["t"] - last["t"], 1e-9)
        d = {f: now[f] - base[f] for f in _FIELDS}
        finished = d["items_done"] + d["items_failed"] + d["items_skipped"]
        rps = (now["requests"] - last["requests"]) / window
        tps = (now["prompt_tokens"] + now["completion_tokens"] - last["prompt_tokens"] - last["completion_tokens"]) / window
        eta = None
        if self.total is not None:
            worked = d["items_done"] + d["items_failed"]
            rate = worked / max(now["t"] - base["t"], 1e-9)
            remaining = max(self.total - finished, 0)
            eta = 0.0 if remaining == 0 else (remaining / rate if rate > 0 else None)
        self._last = now
        of_total = f"/{self.total}" if self.total is not None else ""
        return (f"[{self.stage}] done {int(d['items_done'])}{of_total}  failed {int(d['items_failed'])}  "
                f"skipped {int(d['items_skipped'])}  in flight {metrics.METRICS.in_flight}  "
                f"req/s {rps:.1f}  tok/s {tps:.0f}  429s {int(d['rate_limited'])}  "
                f"ETA {_eta(eta)}  cost ${d['cost_usd']:.4f}")

    def start(self) -> None:
        self._base = self._last = _snapshot()
        if self.live_mode:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self.line(), console=Console(file=self.stream), refresh_per_second=4, transient=False)
            self._live.start()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            self._show()

    def _show(self) -> None:
        text = self.line()
        if self._live is not None:
            self._live.update(text)
        else:
            print(text, file=self.stream, flush=True)

    def stop(self) -> None:
        """Stop refreshing and show the final counts once."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._last = self._base  # final line: whole-run rates
        self._show()
        if self._live is not None:
            self._live.stop()
            self._live = None
