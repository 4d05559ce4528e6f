"""Client-side rate limiting: token buckets, limits learned from headers, adaptive concurrency.

Every request reserves, before it is sent, one request plus an estimate of its tokens
(input from the body size, output from ``max_tokens``) from each known bucket; after the
reply the estimate is trued up with the real usage. Limits come from the config and/or
from ``x-ratelimit-*`` response headers (the lower one wins). Concurrency adapts AIMD
style within [1, max_concurrency]: halved once per 429 episode, +1 per window of successes.
A request limit is also kept over every rolling minute (``RollingWindow``), since servers
that count a rolling window see a bucket's catch-up burst after a stall as an overrun.

Until the first reply arrives only one request is in flight, so limits announced in headers
are known before the first burst. A 429 pauses *every* sender until its Retry-After has passed, so a retry re-enters here and
waits like any new request: nothing is retried blindly below the limiter.

The fast path (a slot free, budget available, nobody queued) takes no lock and never yields.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

# OpenAI-style durations: "6m0s", "1s", "20ms", "1h2m3.5s"; a bare number is seconds.
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_durations: dict[str, float | None] = {}
_MAX_PAUSE_S = 60.0  # never trust a header to stop us for longer than one rate window


def parse_duration(text: str | None) -> float | None:
    """Seconds in an OpenAI-style duration header, None if unparsable. Cached: servers repeat values."""
    if not text:
        return None
    if text in _durations:
        return _durations[text]
    value: float | None
    try:
        value = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        value = sum(float(n) * _UNIT[u] for n, u in parts) if parts and "".join(n + u for n, u in parts) == text.strip() else None
    if len(_durations) < 4096:
        _durations[text] = value
    return value


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The server's wait hint: ``retry-after-ms``, ``Retry-After`` (seconds) or ``x-ratelimit-reset-*``."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    if (sec := headers.get("retry-after")) is not None:
        try:
            return max(float(sec), 0.0)
        except ValueError:
            pass  # an HTTP date: rare for APIs, fall through to the reset headers
    resets = [parse_duration(headers.get(h)) for h in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")]
    known = [r for r in resets if r is not None]
    return max(known) if known else None


class TokenBucket:
    """``per_minute`` units per minute, at most one second's worth saved up (so an idle spell
    allows only a short burst: providers often enforce limits per second). The level may go negative: a large
    reservation is allowed once the bucket holds a full second's worth, and later senders wait
    for the debt to be paid."""

    __slots__ = ("rate", "capacity", "level", "stamp")

    def __init__(self, per_minute: float, now: float, *, level: float | None = None):
        self.rate = self.capacity = 0.0
        self.set_limit(per_minute)
        self.level = min(self.capacity, 1.0) if level is None else min(level, self.capacity)
        self.stamp = now

    def set_limit(self, per_minute: float) -> None:
        # 1% under the limit: clocks and windows never line up exactly with the server's.
        self.rate = per_minute * 0.99 / 60.0
        self.capacity = max(per_minute / 60.0, 1.0)

    def refill(self, now: float) -> None:
        if now > self.stamp:
            level = self.level + (now - self.stamp) * self.rate
            self.level = level if level < self.capacity else self.capacity
            self.stamp = now

    def wait(self, need: float, now: float) -> float:
        """Seconds until ``need`` (capped at the capacity) is available; 0 = now."""
        if now > self.stamp:
            level = self.level + (now - self.stamp) * self.rate
            self.level = level if level < self.capacity else self.capacity
            self.stamp = now
        short = (need if need < self.capacity else self.capacity) - self.level
        # Ignore float dust: a wait too small to move the clock would spin forever.
        return short / self.rate if short > 1e-9 else 0.0

    def clamp(self, at_most: float) -> None:
        if self.level > at_most:
            self.level = at_most


class RollingWindow:
    """At most 99% of ``per_minute`` sends in any 60 s: what a server counting a rolling minute
    allows. The bucket alone cannot promise it (a stall refills the bucket, and the catch-up
    burst lands in the same minute as the sends before the stall)."""

    __slots__ = ("cap", "sent")

    def __init__(self, per_minute: float):
        self.cap = 1
        self.set_limit(per_minute)
        self.sent: deque[float] = deque()

    def set_limit(self, per_minute: float) -> None:
        self.cap = max(1, int(per_minute * 0.99))

    def wait(self, now: float) -> float:
        sent = self.sent
        while sent and sent[0] <= now - 60.0:
            sent.popleft()
        return sent[len(sent) - self.cap] + 60.0 - now if len(sent) >= self.cap else 0.0


class Limiter:
    """Admission for one teacher endpoint. ``acquire`` before sending, ``release`` after."""

    def __init__(self, *, rpm: float | None = None, tpm: float | None = None, tpm_in: float | None = None,
                 tpm_out: float | None = None, max_concurrency: int = 64, probe_first: bool = True,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep):
        self.clock, self.sleep = clock, sleep
        now = clock()
        self.configured = {"requests": rpm, "tokens": tpm, "input": tpm_in, "output": tpm_out}
        self.learned: dict[str, float] = {}
        self.requests = TokenBucket(rpm, now) if rpm else None
        self.window = RollingWindow(rpm) if rpm else None
        self.tokens = TokenBucket(tpm, now) if tpm else None
        self.input = TokenBucket(tpm_in, now) if tpm_in else None
        self.output = TokenBucket(tpm_out, now) if tpm_out else None
        self.max_concurrency = max(1, int(max_concurrency))
        self.concurrency = float(self.max_concurrency)  # AIMD state; `slots` is its integer part
        # One request goes first and alone: its reply may carry the limits, which a blind burst
        # of max_concurrency requests would overrun before learning them.
        self.slots = 1 if probe_first else self.max_concurrency
        self.in_flight = 0
        self.paused_until = 0.0
        self._next_decrease = 0.0
        self._lock = asyncio.Lock()
        self._slot: asyncio.Future[None] | None = None

    # -- admission -------------------------------------------------------------------------

    def _delay(self, est_in: int, est_out: int, now: float) -> float:
        delay = self.paused_until - now
        if self.requests is not None:
            if (w := self.requests.wait(1, now)) > delay:
                delay = w
            if self.window is not None and (w := self.window.wait(now)) > delay:
                delay = w
        if self.tokens is not None and (w := self.tokens.wait(est_in + est_out, now)) > delay:
            delay = w
        if self.input is not None and (w := self.input.wait(est_in, now)) > delay:
            delay = w
        if self.output is not None and (w := self.output.wait(est_out, now)) > delay:
            delay = w
        return delay

    def _take(self, est_in: int, est_out: int, now: float) -> None:
        self.in_flight += 1
        if self.requests is not None:
            self.requests.level -= 1
            if self.window is not None:
                self.window.sent.append(now)
        if self.tokens is not None:
            self.tokens.level -= est_in + est_out
        if self.input is not None:
            self.input.level -= est_in
        if self.output is not None:
            self.output.level -= est_out

    async def acquire(self, est_in: int = 0, est_out: int = 0) -> None:
        """Wait for a concurrency slot and budget, then reserve them (FIFO among waiters)."""
        if not self._lock.locked() and self.in_flight < self.slots:
            now = self.clock()
            if self._delay(est_in, est_out, now) <= 0:
                self._take(est_in, est_out, now)
                return
        async with self._lock:
            while True:
                if self.in_flight >= self.slots:
                    self._slot = asyncio.get_running_loop().create_future()
                    await self._slot
                    continue
                now = self.clock()
                delay = self._delay(est_in, est_out, now)
                if delay > 0:
                    await self.sleep(delay)
                    continue
                self._take(est_in, est_out, now)
                return

    def release(self, est_in: int = 0, est_out: int = 0, used_in: int | None = None, used_out: int | None = None) -> None:
        """Free the slot; true up token reservations with real usage (None = not charged: refund)."""
        self.in_flight -= 1
        self.slots = int(self.concurrency)
        if self.tokens is not None:
            self.tokens.level += (est_in + est_out) - ((used_in or 0) + (used_out or 0))
            self.tokens.clamp(self.tokens.capacity)
        if self.input is not None:
            self.input.level += est_in - (used_in or 0)
            self.input.clamp(self.input.capacity)
        if self.output is not None:
            self.output.level += est_out - (used_out or 0)
            self.output.clamp(self.output.capacity)
        if self._slot is not None and not self._slot.done():
            self._slot.set_result(None)

    # -- feedback --------------------------------------------------------------------------

    def on_success(self) -> None:
        """Additive increase: +1 slot per window of successes."""
        if self.concurrency < self.max_concurrency:
            self.concurrency = min(self.max_concurrency, self.concurrency + 1.0 / self.concurrency)
            self.slots = int(self.concurrency)

    def on_rate_limited(self, retry_after: float | None) -> None:
        """A 429: pause every sender until Retry-After, halve concurrency once per episode."""
        now = self.clock()
        wait = min(retry_after if retry_after is not None else 1.0, _MAX_PAUSE_S)
        self.paused_until = max(self.paused_until, now + wait)
        if now >= self._next_decrease:
            self.concurrency = max(1.0, self.concurrency / 2.0)
            self.slots = int(self.concurrency)
            self._next_decrease = self.paused_until
        if self.requests is not None:
            self.requests.clamp(0.0)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Learn limits from ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` headers."""
        get = headers.get
        values = (get("x-ratelimit-limit-requests"), get("x-ratelimit-remaining-requests"), get("x-ratelimit-reset-requests"),
                  get("x-ratelimit-limit-tokens"), get("x-ratelimit-remaining-tokens"), get("x-ratelimit-reset-tokens"))
        if values[0] is None and values[3] is None:
            return
        now = self.clock()
        self._learn("requests", values[0], values[1], values[2], now)
        self._learn("tokens", values[3], values[4], values[5], now)

    def _learn(self, kind: str, limit: str | None, remaining: str | None, reset: str | None, now: float) -> None:
        if limit is None:
            return
        try:
            learned = float(limit)
            left = float(remaining) if remaining is not None else None
        except ValueError:
            return
        if learned <= 0:
            return
        configured = self.configured[kind]
        per_minute = min(learned, configured) if configured else learned
        bucket: TokenBucket | None = getattr(self, kind)
        if bucket is None:
            bucket = TokenBucket(per_minute, now, level=left if left is not None else None)
            setattr(self, kind, bucket)
            if kind == "requests":
                self.window = RollingWindow(per_minute)
                if left is not None:  # what the server already counts (our probe, other clients) fills the window too
                    self.window.sent.extend([now] * min(max(int(learned - left), 0), self.window.cap))
        elif self.learned.get(kind) != learned:
            bucket.refill(now)
            bucket.set_limit(per_minute)
            if kind == "requests" and self.window is not None:
                self.window.set_limit(per_minute)
        self.learned[kind] = learned
        if left is None:
            return
        bucket.refill(now)
        # Requests sent after this one was counted will spend from `left` too.
        bucket.clamp(left - (max(self.in_flight - 1, 0) if kind == "requests" else 0))
        if left <= 0 and (wait := parse_duration(reset)) is not None:
            self.paused_until = max(self.paused_until, now + min(wait, _MAX_PAUSE_S))

    def snapshot(self) -> dict[str, Any]:
        """Current limits for progress displays and tests."""
        return {
            "concurrency": round(self.concurrency, 2),
            "in_flight": self.in_flight,
            "paused_for_s": round(max(self.paused_until - self.clock(), 0.0), 3),
            "limits_per_min": {k: round(b.rate * 60 / 0.99, 1) for k in ("requests", "tokens", "input", "output")
                               if (b := getattr(self, k)) is not None},
            "learned": dict(self.learned),
        }
