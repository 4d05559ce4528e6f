"""Client-side rate limiting: token buckets, limits learned from headers, adaptive concurrency.

Every request reserves, before it is sent, one request plus an estimate of its tokens
(input from the body size, output from ``max_tokens``) from each known bucket; after the
reply the estimate is trued up with the real usage. Limits come from the config and/or
from ``x-ratelimit-*`` response headers (the lower one wins). Concurrency adapts AIMD
style within [1, max_concurrency]: halved once per 429 episode that no measured request rate
explains (below), +1 per window of successes.
A request limit is also kept over every rolling minute (``RollingWindow``), since servers
that count a rolling window see a bucket's catch-up burst after a stall as an overrun.

A server that sends no ``x-ratelimit-*`` headers (many proxies and providers answer a 429 with
only Retry-After) still has a request rate, and concurrency cannot express it: at 1,200 RPM and
50 ms answers, one request in flight already sends faster than the limit. So each 429 episode
*measures* the rate the server let through: requests sent over the last minute minus those it
refused, spread over the time we were sending plus the Retry-After it asks for (a rolling window
exhausted by a burst in 2 s answers "retry after 58 s": 1,200 / (2 + 58) s is 1,200 per minute,
where a server that limits per second would have answered "1 s"; our earlier pauses are left
out, as a limit counted per second would have admitted requests during them). That estimate drives the request bucket and
the rolling window like a configured RPM (a configured RPM stays the ceiling); while it holds
senders back it creeps up by ``RATE_GROWTH_PER_MIN`` of itself per minute, faster the longer no
429 came, so a raised limit (or a rate set by a stray 429) is found again; a 429 that the measure
cannot explain cuts it multiplicatively (``RATE_BACKOFF``). Under ``MIN_ADMITTED`` requests a
minute there is nothing to measure, and concurrency AIMD with the pauses is all there is.

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
RATE_WINDOW_S = 60.0  # requests per minute: the span a 429-learned rate is measured over
# A 429-learned rate grows by this fraction of itself per minute spent at it (one success adds this
# many requests per minute), times 1 + the minutes since the last 429. Slow near the last 429,
# where the server's rolling count (which lags our rate by half a window) overshoots the limit by
# ~1% before the next 429 re-measures it; faster the longer no 429 says the limit is near.
RATE_GROWTH_PER_MIN = 0.03
# Fewer requests let through in the last minute measure nothing: a lone 429 after the first
# request is not a limit of one request per minute.
MIN_ADMITTED = 10
# A 429 although at least the current estimate got through in the last minute: the limit fell,
# or other clients share it.
RATE_BACKOFF = 0.9
# The response headers that announce a limit (``Limiter.observe``): requests, then tokens; limit, remaining, reset.
RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
                "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")


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
    burst lands in the same minute as the sends before the stall). Without a limit (None) it only
    keeps the last minute's send times, from which a 429 measures the rate the server allows."""

    __slots__ = ("cap", "sent")

    def __init__(self, per_minute: float | None):
        self.cap: int | None = None
        self.set_limit(per_minute)
        self.sent: deque[float] = deque()

    def set_limit(self, per_minute: float | None) -> None:
        self.cap = max(1, int(per_minute * 0.99)) if per_minute else None

    def wait(self, now: float) -> float:
        sent, cap = self.sent, self.cap
        while sent and sent[0] <= now - RATE_WINDOW_S:
            sent.popleft()
        return sent[len(sent) - cap] + RATE_WINDOW_S - now if cap is not None and len(sent) >= cap else 0.0


class Limiter:
    """Admission for one teacher endpoint. ``acquire`` before sending, ``release`` after."""

    def __init__(self, *, rpm: float | None = None, tpm: float | None = None, tpm_in: float | None = None,
                 tpm_out: float | None = None, max_concurrency: int = 64, probe_first: bool = True, measure_rate: bool = True,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep):
        """``measure_rate=False``: a 429 only pauses; the request rate is measured by a limiter that sees every
        sender of the key (``engine.ray_limit.KeyLimiter``), where this one would see only its own share."""
        self.clock, self.sleep = clock, sleep
        self.measure_rate = measure_rate
        now = clock()
        self.configured = {"requests": rpm, "tokens": tpm, "input": tpm_in, "output": tpm_out}
        self.learned: dict[str, float] = {}
        self.requests = TokenBucket(rpm, now) if rpm else None
        self.window = RollingWindow(rpm)
        self.estimated: float | None = None  # requests per minute measured from 429s (see the module doc)
        self.rate_bound = False  # whether the last grant had to wait for the request rate
        self._rate_wait = 0.0
        self._first_send: float | None = None
        self._refused: deque[float] = deque()  # times of the last minute's 429s
        self._pauses: deque[tuple[float, float]] = deque()  # the last minute's Retry-After pauses (from, to)
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
        rate = self.window.wait(now)
        if self.requests is not None and (w := self.requests.wait(1, now)) > rate:
            rate = w
        self._rate_wait = rate
        if rate > delay:
            delay = rate
        if self.tokens is not None and (w := self.tokens.wait(est_in + est_out, now)) > delay:
            delay = w
        if self.input is not None and (w := self.input.wait(est_in, now)) > delay:
            delay = w
        if self.output is not None and (w := self.output.wait(est_out, now)) > delay:
            delay = w
        return delay

    def _take(self, est_in: int, est_out: int, now: float) -> None:
        self.in_flight += 1
        self.window.sent.append(now)
        if self._first_send is None:
            self._first_send = now
        if self.requests is not None:
            self.requests.level -= 1
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
                self.rate_bound = False
                self._take(est_in, est_out, now)
                return
        async with self._lock:
            bound = False
            while True:
                if self.in_flight >= self.slots:
                    self._slot = asyncio.get_running_loop().create_future()
                    await self._slot
                    continue
                now = self.clock()
                delay = self._delay(est_in, est_out, now)
                if delay > 0:
                    bound = bound or self._rate_wait > 0
                    await self.sleep(delay)
                    continue
                self.rate_bound = bound
                self._take(est_in, est_out, now)
                return

    def release(self, est_in: int = 0, est_out: int = 0, used_in: int | None = None, used_out: int | None = None) -> None:
        """Free the slot; true up token reservations with real usage (None = not charged: refund)."""
        self.in_flight -= 1
        self.slots = int(self.concurrency)
        self.refund(est_in - (used_in or 0), est_out - (used_out or 0))
        if self._slot is not None and not self._slot.done():
            self._slot.set_result(None)

    def refund(self, tokens_in: float, tokens_out: float) -> None:
        """Give back reserved tokens a request did not use (negative: it used more than it reserved)."""
        if self.tokens is not None:
            self.tokens.level += tokens_in + tokens_out
            self.tokens.clamp(self.tokens.capacity)
        if self.input is not None:
            self.input.level += tokens_in
            self.input.clamp(self.input.capacity)
        if self.output is not None:
            self.output.level += tokens_out
            self.output.clamp(self.output.capacity)

    # -- feedback --------------------------------------------------------------------------

    def on_success(self) -> None:
        """Additive increase: +1 slot per window of successes; a 429-learned rate creeps up while it binds."""
        if self.concurrency < self.max_concurrency:
            self.concurrency = min(self.max_concurrency, self.concurrency + 1.0 / self.concurrency)
            self.slots = int(self.concurrency)
        # Only while the rate holds senders back: below it, a success is no evidence of more room.
        if self.rate_bound and self.estimated is not None and "requests" not in self.learned:
            calm_min = max(self.clock() - self._next_decrease, 0.0) / 60.0
            self._apply_estimate(self.estimated + RATE_GROWTH_PER_MIN * (1.0 + calm_min))

    def on_rate_limited(self, retry_after: float | None) -> None:
        """A 429: pause every sender until Retry-After. Once per episode, unless headers announce
        the limit, measure the request rate the server allows; halve concurrency if none is known."""
        now = self.clock()
        wait = min(retry_after if retry_after is not None else 1.0, _MAX_PAUSE_S)
        self.paused_until = max(self.paused_until, now + wait)
        measure = self.measure_rate and "requests" not in self.learned
        if measure:
            self._refused.append(now)
        if now >= self._next_decrease:
            self._next_decrease = self.paused_until
            # A measured rate explains the 429 (without measure_rate, the key's limiter measures it); halving
            # concurrency too would starve slow answers (1,200 RPM at 2 s per answer needs 40 in flight).
            if "requests" in self.learned or (measure and not self._measure_rate(now, wait)):
                self.concurrency = max(1.0, self.concurrency / 2.0)
                self.slots = int(self.concurrency)
        if self.requests is not None:
            # Empty, and saving nothing up during the pause: a full bucket after it would burst into
            # a window that has only just begun to free up.
            self.requests.clamp(0.0)
            self.requests.stamp = max(self.requests.stamp, self.paused_until)

    def _measure_rate(self, now: float, wait: float) -> bool:
        """Apply the requests per minute the server let through up to this 429 (see the module doc);
        False when too little was let through to measure and no estimate is known."""
        self.window.wait(now)  # drops sends older than the window
        refused = self._refused
        while refused[0] <= now - RATE_WINDOW_S:
            refused.popleft()
        admitted = len(self.window.sent) - len(refused)
        start = now - min(now - self._first_send, RATE_WINDOW_S) if self._first_send is not None else now
        pauses = self._pauses
        while pauses and pauses[0][1] <= start:
            pauses.popleft()
        paused = sum(min(end, now) - max(begin, start) for begin, end in pauses)
        sending = now - start - paused + wait
        measured = admitted * 60.0 / sending if admitted >= MIN_ADMITTED and sending > 0 else None
        current = self.estimated
        if measured is not None and (current is None or measured < current):
            self._apply_estimate(measured)
        elif current is not None:
            self._apply_estimate(current * RATE_BACKOFF)
        self._pauses.append((now, now + wait))
        return self.estimated is not None

    def _apply_estimate(self, per_minute: float) -> None:
        configured = self.configured["requests"]
        per_minute = max(min(per_minute, configured) if configured else per_minute, 1.0)
        self.estimated = per_minute
        now = self.clock()
        if self.requests is None:
            self.requests = TokenBucket(per_minute, now, level=0.0)
        else:
            self.requests.refill(now)
            self.requests.set_limit(per_minute)
        self.window.set_limit(per_minute)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Learn limits from ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` headers."""
        values = [headers.get(name) for name in RATE_HEADERS]
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
        elif self.learned.get(kind) != learned:
            bucket.refill(now)
            bucket.set_limit(per_minute)
        if kind == "requests" and kind not in self.learned:
            window = self.window
            window.set_limit(per_minute)
            if left is not None:  # what the server already counts beyond our own sends (other clients) fills the window too
                window.sent.extend([now] * min(max(int(learned - left) - len(window.sent), 0), window.cap))
        elif kind == "requests" and self.learned[kind] != learned:
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
            "estimated_rpm": round(self.estimated, 1) if self.estimated is not None else None,
        }
