"""One API key's rate limits, shared by every Ray actor that sends with it.

A key's limits belong to the key, not to one process: N actors each holding (or each learning)
the whole limit would send N times it. So on Ray every HTTP endpoint (an ``openai:`` spec) gets
one ``KeyLimiter`` actor, and every request of every actor, after its own teacher's limiter
(concurrency, its pauses), waits there for a permit. The ``KeyLimiter`` runs the same
``engine.ratelimit.Limiter`` a single process runs (token buckets, the rolling minute, FIFO),
seeing every actor's sends, so everything the key knows is shared:

- configured budgets (``rpm``, ``tpm``, ``tpm_in``, ``tpm_out``) are the key's, not split;
- a limit announced in ``x-ratelimit-*`` headers: the actor that reads it passes the headers on
  (once per new value, not per reply), and the key adopts the newest value as for one process;
- a limit told only by 429s (Retry-After alone): each actor passes its 429s on, and the key pauses
  every actor until the Retry-After, then measures the rate from *all* sends of the last minute
  (an actor alone would measure only its own share, and keep that share when the others go idle).
  The rate creeps up while it holds permits back, as ``Limiter.on_success`` does for one process;
- tokens: a permit reserves the request's estimate at the key, and each actor passes the unused
  rest (the answer's real usage is known only after it) on with its next permit, so token budgets
  need no second call per request and an idle actor holds no share of them.

Until a limit is known, permits are granted at once. A permit is one Ray call (about a millisecond
here) per request; the key actor serves a few thousand a second, far above the limits of the APIs
it guards. Teachers without a key actor (a pool, whose members are separate endpoints, the
simulator, a local vLLM) get 1/N of the configured budgets instead (``actor_teacher``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from engine.ratelimit import RATE_HEADERS, Limiter

# TeacherConfig's budgets: a key actor's arguments; split evenly over the actors for teachers without one.
BUDGETS = ("rpm", "tpm", "tpm_in", "tpm_out")


class KeyLimiter:
    """Ray actor (wrapped with ``ray.remote`` by the driver): the budgets of one API key, configured or learned.
    Every method is async, so all of them run on the actor's one event loop, as the ``Limiter`` expects."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None, tpm_in: float | None = None, tpm_out: float | None = None,
                 *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep):
        """``clock``, ``sleep``: for tests on a virtual clock (the driver passes the budgets only)."""
        self.budgets = {"rpm": rpm, "tpm": tpm, "tpm_in": tpm_in, "tpm_out": tpm_out}
        self.clock, self.sleep = clock, sleep
        self.limiter: Limiter | None = None

    def _limiter(self) -> Limiter:
        if self.limiter is None:
            # Built at the first request, not when the driver starts: a bucket left to fill while the
            # actors start up would let a burst through at once. No concurrency cap of its own (each
            # actor's Limiter has one) and no probe (each actor's first request goes alone).
            self.limiter = Limiter(**self.budgets, max_concurrency=1 << 30, probe_first=False, clock=self.clock, sleep=self.sleep)
        return self.limiter

    async def permit(self, est_in: int = 0, est_out: int = 0, unused_in: int = 0, unused_out: int = 0) -> None:
        """Wait for the key's budgets, reserving ``est_*`` tokens; ``unused_*``: what the caller's earlier
        requests reserved here but did not use."""
        limiter = self._limiter()
        limiter.refund(unused_in, unused_out)
        await limiter.acquire(est_in, est_out)
        limiter.release()  # the slot only: the tokens stay reserved until their refund comes
        # The key hears of no successes (that would be a second call per request): a grant that had to wait
        # for a 429-learned rate stands for one, so the rate creeps up (the 429s, under 1%, cut it back).
        if limiter.rate_bound:
            limiter.on_success()

    async def observe(self, headers: dict[str, str]) -> None:
        """A reply's ``x-ratelimit-*`` headers, passed on by an actor when they announce a new limit."""
        self._limiter().observe(headers)

    async def rate_limited(self, retry_after: float | None) -> None:
        """An actor's 429: every actor waits out the Retry-After, and the rate the key allows is measured."""
        self._limiter().on_rate_limited(retry_after)

    async def snapshot(self) -> dict[str, Any]:
        return self._limiter().snapshot()


class SharedLimiter:
    """A teacher's own limiter, plus the key's ``KeyLimiter``: a permit before each request, and what the
    replies tell about the key's limits (their headers, their 429s, the tokens they did not use)."""

    def __init__(self, local: Limiter, key: Any):
        self.local, self.key = local, key
        local.measure_rate = False  # this actor sees only its own share of the key's sends; the key measures
        self._told: dict[str, float] = {}  # the header limits last passed on to the key
        self._unused_in = self._unused_out = 0  # reserved at the key, not used: passed on with the next permit

    async def acquire(self, est_in: int = 0, est_out: int = 0) -> None:
        await self.local.acquire(est_in, est_out)
        unused_in, unused_out = self._unused_in, self._unused_out
        self._unused_in = self._unused_out = 0
        try:
            await self.key.permit.remote(est_in, est_out, unused_in, unused_out)
        except BaseException:
            self.local.release(est_in, est_out)
            # Once sent, the call reserves at the key even if this caller stops waiting: give it back next time.
            self._unused_in += unused_in + est_in
            self._unused_out += unused_out + est_out
            raise

    def release(self, est_in: int = 0, est_out: int = 0, used_in: int | None = None, used_out: int | None = None) -> None:
        self.local.release(est_in, est_out, used_in, used_out)
        self._unused_in += est_in - (used_in or 0)
        self._unused_out += est_out - (used_out or 0)

    def observe(self, headers: Any) -> None:
        local = self.local
        local.observe(headers)
        if local.learned != self._told:  # a new limit: the key learns it too (a reply repeating it tells nothing new)
            self._told = dict(local.learned)
            self.key.observe.remote({name: value for name in RATE_HEADERS if (value := headers.get(name)) is not None})

    def on_rate_limited(self, retry_after: float | None) -> None:
        self.local.on_rate_limited(retry_after)
        self.key.rate_limited.remote(retry_after)  # not awaited: the caller's own pause has begun already

    def __getattr__(self, name: str) -> Any:  # on_success, snapshot, ...
        return getattr(self.local, name)


def key_budgets(spec: str, options: dict[str, Any]) -> dict[str, float | None] | None:
    """The configured budgets of ``spec``'s API key (``KeyLimiter``'s arguments), from the spec (a ``.toml``
    too) and ``options``; None when ``spec`` is no single HTTP endpoint, so has no key actor."""
    from engine.teachers.spec import load_config, parse_spec

    config = load_config(spec, **options)
    if parse_spec(config.spec).backend != "openai":
        return None
    return {name: getattr(config, name) for name in BUDGETS}


def share_key(teacher: Any, key: Any) -> bool:
    """Route an HTTP teacher's requests through ``key``. False for teachers without a key's limiter
    (the simulator, a pool, whose members are separate endpoints with limits each, a local vLLM)."""
    if not isinstance(getattr(teacher, "limiter", None), Limiter):
        return False
    teacher.limiter = SharedLimiter(teacher.limiter, key)
    return True


def actor_teacher(spec: str, overrides: dict[str, Any], keys: dict[str, Any], actors: int) -> Any:
    """``make_teacher(spec, **overrides)`` inside one of ``actors`` Ray actors: its requests through the key's
    ``KeyLimiter`` when ``keys`` holds one for ``spec``, else its 1/N share of the configured budgets."""
    from engine.teachers import make_teacher

    key = keys.get(spec)
    options = dict(overrides)
    if key is None:
        for name in BUDGETS:
            if options.get(name):
                options[name] = max(1, options[name] // actors)
    teacher = make_teacher(spec, **options)
    if key is not None and not share_key(teacher, key):
        # key_budgets (the driver) and make_teacher (here) disagree on what an HTTP endpoint is: a bug, not a setting
        raise RuntimeError(f"teacher {spec!r} got a key limiter but has no HTTP limiter to share it with")
    return teacher
