"""Rate limiter and retry policy on a virtual clock: buckets, header learning, AIMD, backoff,
the request rate learned from 429s alone (on a virtual clock and against the loopback server),
and one key's limits shared by several Ray actors (``engine.ray_limit``, its actor called in-process)."""

from __future__ import annotations

import asyncio
import json
import math
import random
import selectors
import time
import types
import urllib.request
from collections import deque
from typing import Any

import pytest

from engine import metrics
from engine.errors import BadAnswer, FatalTeacherError, RateLimited, RetryableError
from engine.ratelimit import MIN_ADMITTED, RATE_BACKOFF, RATE_GROWTH_PER_MIN, Limiter, TokenBucket, parse_duration, retry_after_seconds
from engine.ray_limit import KeyLimiter, SharedLimiter
from engine.records import Message
from engine.retry import backoff_delay, with_retries
from engine.sim_server import serve_sim
from engine.teachers.openai_http import OpenAIHTTPTeacher


class VirtualClock:
    """``clock`` and ``sleep`` for a Limiter: sleeping advances time instantly."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.mark.parametrize(("text", "seconds"), [
    ("6m0s", 360.0), ("1s", 1.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5", 0.5), ("17", 17.0),
    ("", None), (None, None), ("soon", None), ("5x", None), ("1s junk", None),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_retry_after_prefers_ms_then_seconds_then_reset_headers():
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == pytest.approx(1.5)
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"x-ratelimit-reset-requests": "250ms", "x-ratelimit-reset-tokens": "2s"}) == 2.0
    assert retry_after_seconds({}) is None


def test_token_bucket_refills_at_the_limit_and_caps_a_burst_at_one_second():
    bucket = TokenBucket(600, now=0.0)  # 10/s, at most 10 saved
    assert bucket.level == 1.0  # starts nearly empty: no burst on top of a fresh rolling window
    assert bucket.wait(1, 0.0) == 0.0
    bucket.level -= 1
    assert bucket.wait(1, 0.0) == pytest.approx(1 / (600 * 0.99 / 60))
    assert bucket.wait(1, 1000.0) == 0.0 and bucket.level == bucket.capacity == 10.0
    # A reservation bigger than the capacity is allowed once a full second's worth is saved.
    assert bucket.wait(50, 1000.0) == 0.0


async def _grant_times(limiter: Limiter, clock: VirtualClock, n: int, est_in: int = 0, est_out: int = 0,
                       used_out: int | None = None) -> list[float]:
    times = []
    for _ in range(n):
        await limiter.acquire(est_in, est_out)
        times.append(clock.now)
        limiter.release(est_in, est_out, est_in, used_out if used_out is not None else est_out)
    return times


async def test_configured_rpm_is_respected_within_every_rolling_minute():
    clock = VirtualClock()
    limiter = Limiter(rpm=60, clock=clock, sleep=clock.sleep)
    times = await _grant_times(limiter, clock, 200)
    for i, t in enumerate(times):
        in_window = sum(1 for u in times[i:] if u < t + 60.0)
        assert in_window <= 60, f"{in_window} requests in the minute after t={t}"
    rate_per_min = (len(times) - 1) / (times[-1] - times[0]) * 60
    assert 0.97 * 60 <= rate_per_min <= 60


async def test_stalls_never_let_a_catch_up_burst_overrun_a_rolling_minute():
    clock = VirtualClock()
    limiter = Limiter(rpm=120, clock=clock, sleep=clock.sleep)
    times = []
    for i in range(400):
        if i % 25 == 0:
            clock.now += 0.9  # the sender was busy elsewhere: the bucket refills meanwhile
        await limiter.acquire()
        times.append(clock.now)
        limiter.release()
    worst = max(sum(1 for u in times[i:] if u < t + 60.0) for i, t in enumerate(times))
    assert worst <= 118  # 99% of 120
    assert worst >= 110  # and the budget is still used


async def test_concurrent_senders_share_the_rpm_budget():
    clock = VirtualClock()
    limiter = Limiter(rpm=120, max_concurrency=8, clock=clock, sleep=clock.sleep)
    grants: list[float] = []

    async def sender() -> None:
        for _ in range(10):
            await limiter.acquire()
            grants.append(clock.now)
            await asyncio.sleep(0)
            limiter.release()

    await asyncio.gather(*(sender() for _ in range(8)))
    assert len(grants) == 80
    assert sum(1 for t in grants if t < 30.0) <= 60  # 120/min -> at most 60 in any half minute (+ the 1 start token)


async def test_output_tokens_are_reserved_then_refunded_from_real_usage():
    clock = VirtualClock()
    limiter = Limiter(tpm_out=600, clock=clock, sleep=clock.sleep)  # 10 tokens/s, 9.9 after the safety margin
    # Reserving max_tokens=10 but using only 1 refunds 9: the next request goes at once.
    cheap = await _grant_times(limiter, clock, 5, est_out=10, used_out=1)
    clock_after_cheap = clock.now
    # Using all 10 reserved tokens: each request must wait ~1 s for the bucket.
    full = await _grant_times(limiter, clock, 5, est_out=10, used_out=10)
    assert cheap[-1] - cheap[0] < 2.0
    assert full[-1] - clock_after_cheap == pytest.approx(4 * 10 / 9.9 + (full[0] - clock_after_cheap), rel=0.05)


async def test_input_and_combined_token_buckets_both_gate():
    clock = VirtualClock()
    limiter = Limiter(tpm_in=6000, tpm=12000, clock=clock, sleep=clock.sleep)
    times = await _grant_times(limiter, clock, 6, est_in=100, est_out=100)
    # input: 100/request at 99/s; combined: 200/request at 198/s -> ~1 s per request either way
    assert times[-1] - times[1] == pytest.approx(4 * 100 / 99, rel=0.05)


def test_limits_are_learned_from_headers_and_lower_configured_limit_wins():
    clock = VirtualClock()
    limiter = Limiter(clock=clock, sleep=clock.sleep)
    assert limiter.requests is None
    limiter.observe({"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "599",
                     "x-ratelimit-reset-requests": "100ms", "x-ratelimit-limit-tokens": "90000",
                     "x-ratelimit-remaining-tokens": "400", "x-ratelimit-reset-tokens": "6m0s"})
    assert limiter.learned == {"requests": 600.0, "tokens": 90000.0}
    assert limiter.requests.rate == pytest.approx(600 * 0.99 / 60)
    assert limiter.requests.level <= limiter.requests.capacity == 10.0
    assert limiter.tokens.level == 400.0  # clamped to what the server says is left

    # The requests the server already counts (599 left of 600: our probe) fill the rolling minute too.
    assert list(limiter.window.sent) == [0.0] and limiter.window.cap == 594

    configured = Limiter(rpm=100, clock=clock, sleep=clock.sleep)
    configured.observe({"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "599"})
    assert configured.requests.rate == pytest.approx(100 * 0.99 / 60)


async def test_remaining_zero_pauses_until_the_reset():
    clock = VirtualClock()
    limiter = Limiter(clock=clock, sleep=clock.sleep)
    limiter.observe({"x-ratelimit-limit-requests": "6000", "x-ratelimit-remaining-requests": "0",
                     "x-ratelimit-reset-requests": "2s"})
    await limiter.acquire()
    assert clock.now >= 2.0


async def test_first_request_probes_alone_then_full_concurrency():
    limiter = Limiter(max_concurrency=4)
    await limiter.acquire()
    second = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(0.01)
    assert not second.done()  # no limits known yet: wait for the probe's reply
    limiter.release()
    await asyncio.wait_for(second, 1)
    for _ in range(3):
        await asyncio.wait_for(limiter.acquire(), 1)
    assert limiter.in_flight == 4
    fifth = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(0.01)
    assert not fifth.done()
    limiter.release()
    await asyncio.wait_for(fifth, 1)


async def test_without_the_probe_the_first_burst_fills_every_slot():
    """Our own servers (vllm:) have no limits to learn: max_concurrency requests start at once."""
    limiter = Limiter(max_concurrency=4, probe_first=False)
    for _ in range(4):
        await asyncio.wait_for(limiter.acquire(), 1)
    fifth = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(0.01)
    assert limiter.in_flight == 4 and not fifth.done()
    limiter.release()
    await asyncio.wait_for(fifth, 1)


def test_the_vllm_teacher_skips_the_probe_and_openai_keeps_it():
    from engine.teachers import make_teacher
    from engine.teachers.openai_http import OpenAIHTTPTeacher

    assert make_teacher("openai:m@http://127.0.0.1:9/v1").limiter.slots == 1
    assert make_teacher("openai:m@http://127.0.0.1:9/v1", probe_limits=False).limiter.slots == 64
    assert OpenAIHTTPTeacher("m", "http://127.0.0.1:9/v1", max_concurrency=8, probe_limits=False).limiter.slots == 8


async def test_429_pauses_every_sender_and_halves_concurrency_once_per_episode():
    clock = VirtualClock()
    limiter = Limiter(max_concurrency=64, clock=clock, sleep=clock.sleep)
    for _ in range(5):  # a burst of 429s from requests that were in flight together
        limiter.on_rate_limited(3.0)
    assert limiter.concurrency == 32.0 and limiter.paused_until == 3.0
    await limiter.acquire()
    assert clock.now >= 3.0
    limiter.release()
    limiter.on_rate_limited(1.0)  # a new episode after the pause
    assert limiter.concurrency == 16.0
    for _ in range(10):
        limiter.on_rate_limited(None)
        clock.now = limiter.paused_until
    assert limiter.concurrency == 1.0  # bounded below
    for _ in range(5000):
        limiter.on_success()
    assert limiter.concurrency == 64.0 and limiter.slots == 64  # additive recovery, bounded above


async def test_additive_increase_is_about_one_slot_per_window():
    limiter = Limiter(max_concurrency=64)
    limiter.concurrency = 8.0
    for _ in range(8):
        limiter.on_success()
    assert 8.9 < limiter.concurrency < 9.1


# -- the request rate learned from 429s (no x-ratelimit headers) -----------------------------------


class _VirtualSelector(selectors.SelectSelector):
    """Nothing ever waits: a select that would block moves the loop's clock to its deadline."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None):
        ready = super().select(0)
        if not ready and timeout:
            self.now += timeout
        return ready


class _WindowServer:
    """A server admitting ``limit`` requests per rolling ``window_s``; a refusal carries only
    Retry-After in whole seconds (what many proxies send)."""

    def __init__(self, limit: int, window_s: float):
        self.limit, self.window_s = limit, window_s
        self.admitted: deque[float] = deque()
        self.log: list[tuple[float, bool]] = []

    def answer(self, now: float) -> int | None:
        """None = admitted, else the Retry-After of a 429."""
        while self.admitted and self.admitted[0] <= now - self.window_s:
            self.admitted.popleft()
        ok = len(self.admitted) < self.limit
        self.log.append((now, ok))
        if ok:
            self.admitted.append(now)
            return None
        return max(1, math.ceil(self.admitted[0] + self.window_s - now))

    def after(self, start: float) -> tuple[float, int]:
        """429 share and accepted count from ``start`` on."""
        tail = [ok for t, ok in self.log if t >= start]
        return tail.count(False) / len(tail), tail.count(True)


class _KeyHandle:
    """A Ray handle to a ``KeyLimiter`` living in this event loop: ``handle.permit.remote(...)`` is a task
    to await, and a call nobody awaits still runs, as on Ray."""

    def __init__(self, key: KeyLimiter):
        self.key, self.calls = key, []
        self._tasks: set[asyncio.Task[Any]] = set()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.key, name)

        def remote(*args: Any) -> asyncio.Task[Any]:
            self.calls.append(name)
            task = asyncio.ensure_future(method(*args))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return task

        return types.SimpleNamespace(remote=remote)


def _run_virtual(server: _WindowServer, *, minutes: float, senders: int = 64, latency_s: float = 0.05,
                 gap_s: float = 0.0, seed: int = 0, actors: tuple[float, ...] = ()) -> Limiter:
    """``senders`` coroutines send through one Limiter for ``minutes`` of virtual time; each waits
    ``gap_s`` between its requests (0: demand far above any limit). With ``actors`` (the minutes each
    sends for), that many Ray actors share the key instead, ``senders`` each, through a SharedLimiter
    each and one KeyLimiter, whose Limiter is returned."""
    selector = _VirtualSelector()
    loop = asyncio.SelectorEventLoop(selector)
    loop.time = lambda: selector.now  # type: ignore[method-assign]
    rng = random.Random(seed)

    async def main() -> Limiter:
        key = KeyLimiter(clock=loop.time)
        handle = _KeyHandle(key)
        groups: list[tuple[Any, float]] = [(SharedLimiter(Limiter(max_concurrency=senders, clock=loop.time), handle), until)
                                           for until in actors] or [(Limiter(max_concurrency=senders, clock=loop.time), minutes)]

        async def sender(limiter: Any, until: float) -> None:
            while loop.time() < until * 60:
                await limiter.acquire()
                retry_after = server.answer(loop.time())
                await asyncio.sleep(rng.expovariate(1 / latency_s))
                limiter.release()
                if retry_after is None:
                    limiter.on_success()
                else:
                    limiter.on_rate_limited(retry_after)
                await asyncio.sleep(gap_s)

        await asyncio.gather(*(sender(limiter, until) for limiter, until in groups for _ in range(senders)))
        return key._limiter() if actors else groups[0][0]

    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def test_a_rate_is_learned_from_retry_after_alone_and_held_under_the_limit():
    """1,200 RPM, 50 ms answers: one request in flight already outruns the limit, so only a learned
    *rate* can hold it (concurrency AIMD alone left 12-21% of requests answered 429)."""
    server = _WindowServer(1200, 60.0)
    limiter = _run_virtual(server, minutes=6)
    share_429, accepted = server.after(60.0)
    assert share_429 < 0.005
    assert accepted / 5 >= 0.97 * 1200  # per minute, over the five minutes after the first
    assert 0.95 * 1200 <= limiter.estimated <= 1.03 * 1200
    assert limiter.snapshot()["estimated_rpm"] == round(limiter.estimated, 1)


def test_the_first_burst_is_measured_with_the_wait_the_server_asks_for():
    # 600 requests go out in the first second; the window only frees up a minute later, so
    # "retry after 59 s" makes that 600 per minute, not 36,000.
    server = _WindowServer(600, 60.0)
    limiter = _run_virtual(server, minutes=0.1, latency_s=0.01)
    assert 0.95 * 600 <= limiter.estimated <= 1.03 * 600  # requests in flight at the 429 count as admitted
    assert limiter.paused_until >= 59.0


def test_a_per_second_limit_is_learned_safely():
    """20 requests per rolling second (1,200 per minute) with the same Retry-After-only 429s:
    few 429s after the first minute; the rate then creeps up to it."""
    server = _WindowServer(20, 1.0)
    limiter = _run_virtual(server, minutes=4)
    share_429, accepted = server.after(60.0)
    assert share_429 < 0.01
    assert accepted / 3 >= 0.75 * 1200
    assert limiter.estimated <= 1.05 * 1200


def _send_steadily(limiter: Limiter, clock: VirtualClock, n: int, every_s: float) -> None:
    for _ in range(n):
        limiter._take(0, 0, clock.now)
        limiter.release()
        clock.now += every_s


async def test_the_learned_rate_creeps_up_only_while_it_holds_senders_back():
    clock = VirtualClock()
    limiter = Limiter(clock=clock, sleep=clock.sleep)
    _send_steadily(limiter, clock, 60, 1.0)
    limiter.on_rate_limited(1.0)  # in the last minute: 59 sent, 1 refused; over (60 + 1) s
    learned = limiter.estimated
    assert learned == pytest.approx(58 * 60 / 61)
    limited_until = clock.now = limiter.paused_until
    for _ in range(50):  # demand at a fifth of the rate: every grant is immediate, no evidence of more room
        clock.now += 5.0
        await limiter.acquire()
        limiter.release()
        limiter.on_success()
    assert limiter.estimated == learned
    calm_from = (clock.now - limited_until) / 60
    for _ in range(30):  # back to back: every request waits for the bucket
        await limiter.acquire()
        limiter.release()
        limiter.on_success()
    calm_to = (clock.now - limited_until) / 60
    # RATE_GROWTH_PER_MIN per success, times 1 + the minutes since the 429 (about 4.5 here)
    assert learned + 30 * RATE_GROWTH_PER_MIN * (1 + calm_from) <= limiter.estimated <= learned + 30 * RATE_GROWTH_PER_MIN * (1 + calm_to)
    assert limiter.snapshot()["limits_per_min"]["requests"] == round(limiter.estimated, 1)


def test_a_429_the_measure_cannot_explain_backs_off_multiplicatively():
    clock = VirtualClock()
    limiter = Limiter(clock=clock, sleep=clock.sleep)
    _send_steadily(limiter, clock, 100, 0.1)
    limiter.on_rate_limited(50.0)  # 99 admitted in 10 s, and the window frees up 50 s later: 99 per minute
    assert limiter.estimated == pytest.approx(99.0)
    clock.now = limiter.paused_until
    _send_steadily(limiter, clock, 30, 0.01)
    limiter.on_rate_limited(1.0)  # more got through than the estimate, yet refused: others share the limit
    assert limiter.estimated == pytest.approx(RATE_BACKOFF * 99.0)


def test_a_lone_429_measures_nothing_and_halves_concurrency():
    clock = VirtualClock()
    limiter = Limiter(max_concurrency=8, clock=clock, sleep=clock.sleep)
    _send_steadily(limiter, clock, MIN_ADMITTED - 1, 0.5)
    limiter.on_rate_limited(1.0)  # too few got through to say anything about a rate
    assert limiter.estimated is None and limiter.requests is None and limiter.concurrency == 4.0
    clock.now = limiter.paused_until
    _send_steadily(limiter, clock, 20, 0.5)
    limiter.on_rate_limited(1.0)  # now a rate is measured, and it explains the 429: concurrency stays
    assert limiter.estimated is not None and limiter.concurrency == 4.0


def test_headers_win_over_the_429_estimate():
    clock = VirtualClock()
    limiter = Limiter(clock=clock, sleep=clock.sleep)
    limiter.observe({"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "599"})
    limiter._take(0, 0, clock.now)
    limiter.release()
    limiter.on_rate_limited(1.0)
    assert limiter.estimated is None and limiter.snapshot()["limits_per_min"]["requests"] == 600.0


async def test_the_loopback_server_limit_is_learned_from_retry_after_alone():
    """End to end through the HTTP teacher: the simulator admits 100 requests per rolling 5 s
    (1,200 per minute) and answers 429 with only Retry-After; 64 senders for 20 s."""
    async with serve_sim(rpm=100, window_s=5.0, rate_headers="retry-after", latency_ms=20, latency_dist="exp") as url:
        teacher = OpenAIHTTPTeacher("sim", url, max_concurrency=64)
        messages = [Message(role="user", content="What is the capital of France?")]
        stats_url = url.removesuffix("/v1") + "/stats"

        def counts() -> dict[str, int]:
            with urllib.request.urlopen(stats_url, timeout=10) as resp:
                return json.loads(resp.read())["counts"]

        async def sender() -> None:
            while True:
                await teacher.chat(messages, max_tokens=16)

        senders = [asyncio.create_task(sender()) for _ in range(64)]
        try:
            await asyncio.sleep(8.0)  # warm-up: the first burst fills the window, the first 429s measure the rate
            before, started = await asyncio.to_thread(counts), time.monotonic()
            await asyncio.sleep(12.0)
            after, span = await asyncio.to_thread(counts), time.monotonic() - started
        finally:
            for task in senders:
                task.cancel()
            await asyncio.gather(*senders, return_exceptions=True)
            await teacher.aclose()
    accepted, refused = after["ok"] - before["ok"], after["429"] - before["429"]
    assert refused / (accepted + refused) < 0.03
    # requests per second, of 20 allowed: a limiter that learned nothing collapses far below this; the
    # exact share is measured in bench/ratelimit_learning.py (this box's load moves it a lot)
    assert accepted / span >= 0.5 * 20
    assert teacher.limiter.estimated is not None and not teacher.limiter.learned


# -- one key shared by Ray actors (engine.ray_limit) ----------------------------------------------


def test_two_actors_learn_one_rate_for_their_key_from_429s():
    """Each actor alone sends faster than the key's 1,200 RPM; the key measures the rate from both
    actors' sends (an actor's own limiter would see half of them) and holds them to it together."""
    server = _WindowServer(1200, 60.0)
    key = _run_virtual(server, minutes=4, senders=32, actors=(4.0, 4.0))
    share_429, accepted = server.after(60.0)
    assert share_429 < 0.005
    assert accepted / 3 >= 0.97 * 1200
    assert 0.95 * 1200 <= key.estimated <= 1.03 * 1200


def test_an_idle_actor_leaves_the_key_s_rate_to_the_other():
    """Two actors asking for ~800 RPM each share a 1,200 RPM key (~600 each); once one stops, the other
    gets its whole demand at once, where a share learned per actor would hold it near 600."""
    server = _WindowServer(1200, 60.0)
    demand = 8 / (0.05 + 0.55) * 60  # senders / (answer + gap): 800 per minute
    _run_virtual(server, minutes=5, senders=8, gap_s=0.55, actors=(2.0, 5.0))
    alone = [ok for t, ok in server.log if t >= 150.0]
    assert alone.count(False) == 0
    assert alone.count(True) / 2.5 >= 0.95 * demand


async def test_a_header_limit_read_by_one_actor_becomes_the_key_s():
    handle = _KeyHandle(KeyLimiter())
    a, b = SharedLimiter(Limiter(), handle), SharedLimiter(Limiter(), handle)
    headers = {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "590", "content-type": "application/json"}
    await a.acquire()
    a.observe(headers)
    a.release()
    a.observe(headers)  # the same limit again: nothing new to pass on
    await asyncio.sleep(0)
    assert handle.calls == ["permit", "observe"]
    key = handle.key.limiter
    assert key.learned == {"requests": 600.0} and key.snapshot()["limits_per_min"]["requests"] == 600.0
    # The rolling minute holds what the server counted, whoever sent it: both actors' permits wait in it.
    assert len(key.window.sent) == 10 and b.local.learned == {}


async def test_a_429_pauses_the_key_and_only_the_key_measures():
    clock = VirtualClock()
    handle = _KeyHandle(KeyLimiter(clock=clock, sleep=clock.sleep))
    a, b = (SharedLimiter(Limiter(clock=clock, sleep=clock.sleep), handle) for _ in range(2))
    for i in range(40):
        limiter = (a, b)[i % 2]
        await limiter.acquire()
        limiter.release()
        limiter.on_success()
        clock.now += 0.5
    a.on_rate_limited(10.0)
    await asyncio.sleep(0)
    key = handle.key.limiter
    # 39 of 40 sends in 20 s admitted, and the window frees up 10 s later: 78 per minute, measured on both actors' sends
    assert key.estimated == pytest.approx(39 * 60 / 30.0)
    assert a.local.estimated is None and a.local.concurrency == a.local.max_concurrency
    before = clock.now
    await b.acquire()  # b got no 429 itself, yet waits out the key's pause
    assert clock.now >= before + 10.0


async def test_token_budgets_are_the_key_s_and_unused_tokens_come_back_with_the_next_permit():
    clock = VirtualClock()
    handle = _KeyHandle(KeyLimiter(tpm=6000, clock=clock, sleep=clock.sleep))  # 99 tokens a second
    a, b = (SharedLimiter(Limiter(tpm=6000, clock=clock, sleep=clock.sleep), handle) for _ in range(2))
    await a.acquire(10, 90)
    a.release(10, 90, 10, 20)  # used 70 fewer than reserved: the key hears of it with a's next permit
    tokens = handle.key.limiter.tokens
    level = tokens.level
    await a.acquire(0, 0)
    assert tokens.level == pytest.approx(level + 70)
    # b alone (a idle) gets the key's whole token budget, not half of it.
    start = clock.now
    for _ in range(50):
        await b.acquire(20, 80)
        b.release(20, 80, 20, 80)
    assert 50 * 100 / (clock.now - start) >= 0.95 * 6000 / 60


# -- retry policy ------------------------------------------------------------------------------


def test_backoff_is_full_jitter_under_an_exponential_cap():
    assert backoff_delay(1, base_s=0.5, rng=lambda: 1.0) == 0.5
    assert backoff_delay(4, base_s=0.5, rng=lambda: 1.0) == 4.0
    assert backoff_delay(20, base_s=0.5, max_s=30, rng=lambda: 1.0) == 30.0
    assert backoff_delay(3, base_s=0.5, rng=lambda: 0.25) == 0.5


class Flaky:
    def __init__(self, *errors: BaseException):
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_with_retries_honours_retry_after_and_backs_off_for_5xx():
    metrics.reset_metrics()
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    flaky = Flaky(RateLimited("429", retry_after=2.5), RetryableError("503", status=503), RetryableError("503"))
    assert await with_retries(flaky, sleep=sleep, rng=lambda: 1.0, base_s=0.5) == "ok"
    assert slept == [2.5, 1.0, 2.0]  # Retry-After exactly; then jitter bound 0.5*2^(n-1) for the 2nd, 3rd transient
    assert metrics.METRICS.retries == 3


async def test_with_retries_gives_up_with_attempts_set():
    async def sleep(s: float) -> None:
        pass

    flaky = Flaky(*(RetryableError("down") for _ in range(10)))
    with pytest.raises(RetryableError) as info:
        await with_retries(flaky, max_retries=3, sleep=sleep)
    assert info.value.attempts == 4 and flaky.calls == 4

    bad = Flaky(*(BadAnswer("unparsable", text="{oops") for _ in range(10)))
    with pytest.raises(BadAnswer) as info:
        await with_retries(bad, max_retries=6, max_bad_answer_retries=2, sleep=sleep)
    assert info.value.attempts == 3 and bad.calls == 3

    fatal = Flaky(FatalTeacherError("401"))
    with pytest.raises(FatalTeacherError) as info:
        await with_retries(fatal, sleep=sleep)
    assert info.value.attempts == 1 and fatal.calls == 1


async def test_nested_retries_do_not_multiply():
    async def sleep(s: float) -> None:
        pass

    inner = Flaky(*(RetryableError("down") for _ in range(100)))

    async def wrapped() -> str:
        return await with_retries(inner, max_retries=2, sleep=sleep)

    with pytest.raises(RetryableError) as info:
        await with_retries(wrapped, max_retries=5, sleep=sleep)
    assert inner.calls == 3 and info.value.attempts == 3
