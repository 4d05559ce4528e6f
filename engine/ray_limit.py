"""One API key's request rate, shared by every Ray actor that sends with it.

Each actor's teacher keeps its own ``engine.ratelimit.Limiter`` (concurrency, AIMD, 429 pauses,
limits learned from headers), but a key's requests-per-minute budget belongs to the key, not to
one process: N actors each holding the full budget would send N times the limit. So the key's
budget lives in one ``KeyLimiter`` actor (a token bucket plus the rolling minute of
``engine.ratelimit``, FIFO), and every request, after its local slot, waits there for a permit.
A permit is one Ray call (about a millisecond here), which only a rate-limited key pays, and
whose requests wait for the rate anyway. Token budgets (tpm) are split evenly instead: a token
count is only known after the answer, so a central token bucket would need a second call per
request; each actor's teacher gets 1/N of them (``actor_teacher``).
"""

from __future__ import annotations

from typing import Any

from engine.ratelimit import Limiter

TOKEN_LIMITS = ("tpm", "tpm_in", "tpm_out")  # TeacherConfig's token budgets, split evenly over the actors


class KeyLimiter:
    """Ray actor (wrapped with ``ray.remote`` by the driver): admits ``rpm`` requests a minute in all."""

    def __init__(self, rpm: float):
        self.rpm = rpm
        self.limiter: Limiter | None = None

    async def permit(self) -> None:
        if self.limiter is None:
            # Built at the first request, not when the driver starts: a bucket left to fill while the
            # actors start up would let a burst through at once. No concurrency cap of its own (each
            # actor's Limiter has one) and no probe (the budget is known).
            self.limiter = Limiter(rpm=self.rpm, max_concurrency=1 << 30, probe_first=False)
        await self.limiter.acquire()
        self.limiter.release()


class SharedLimiter:
    """A teacher's own limiter, plus a permit from the key's ``KeyLimiter`` before each request."""

    def __init__(self, local: Limiter, key: Any):
        self.local, self.key = local, key

    async def acquire(self, est_in: int = 0, est_out: int = 0) -> None:
        await self.local.acquire(est_in, est_out)
        try:
            await self.key.permit.remote()
        except BaseException:
            self.local.release(est_in, est_out)
            raise

    def __getattr__(self, name: str) -> Any:  # release, observe, on_success, on_rate_limited, snapshot, ...
        return getattr(self.local, name)


def share_key(teacher: Any, key: Any) -> bool:
    """Route an HTTP teacher's requests through ``key``. False for teachers without a key's limiter
    (the simulator, a pool, whose members are separate endpoints with limits each, a local vLLM)."""
    if not isinstance(getattr(teacher, "limiter", None), Limiter):
        return False
    teacher.limiter = SharedLimiter(teacher.limiter, key)
    return True


def actor_teacher(spec: str, overrides: dict[str, Any], keys: dict[str, Any], actors: int) -> Any:
    """``make_teacher(spec, **overrides)`` inside one of ``actors`` Ray actors: its share of the key's token
    budgets, and its requests through the key's ``KeyLimiter`` when ``keys`` holds one for ``spec``."""
    from engine.teachers import make_teacher

    options = dict(overrides)
    for name in TOKEN_LIMITS:
        if options.get(name):
            options[name] = max(1, options[name] // actors)
    teacher = make_teacher(spec, **options)
    if spec in keys:
        share_key(teacher, keys[spec])
    return teacher
