"""A teacher pool: several endpoints of one model behind one ``Teacher``, in one process.

Each member is a full teacher of its own (an ``OpenAIHTTPTeacher`` or a managed vLLM server,
one per GPU), so it keeps its own rate limiter, learned limits and connection pool: a pool's
throughput is the sum of its members'. The pool adds routing and health:

* Routing: each request goes to the member with the fewest requests in flight relative to its
  capacity (its ``max_concurrency``); ties rotate so equal members share the load evenly. A member
  that answered 429 is passed over until its Retry-After has passed, while others are free.
* Health: ``eject_after`` transport failures in a row (connection refused, timeout, 5xx, a body
  cut off) take a member out. After ``probe_s`` one request is let through as a probe (the
  circuit breaker's half-open state): success puts the member back, failure takes it out again
  for twice as long (up to ``max_probe_s``). 429s and bad answers say nothing about health.
* Retries: members are built without retries of their own (``max_retries=0``) and the pool
  retries instead, so a failed request moves to another member at once instead of waiting out
  a backoff on a dead endpoint. Only when no other member can take it does it back off (or wait
  for the Retry-After / the next probe). The budgets are the pool config's ``max_retries`` and
  ``max_bad_answer_retries``; the final error carries ``.attempts`` like ``with_retries``'.

Spec: ``pool:SPEC1,SPEC2,...`` (the pool config's limits apply to each member), or in TOML
``spec = "pool"`` with one ``[[teacher.endpoints]]`` table per member (its own spec and limits).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from engine import metrics
from engine.errors import BadAnswer, RateLimited, RetryableError, TeacherError, UserInputError
from engine.records import FunctionSpec, Message
from engine.retry import MAX_RETRY_AFTER_S, backoff_delay
from engine.teacher import Completion, Teacher
from engine.teachers.spec import TeacherConfig

log = logging.getLogger(__name__)

# Pool settings read from the pool config's ``options`` table (the rest of it configures members).
POOL_OPTIONS = {"eject_after": 3, "probe_s": 2.0, "max_probe_s": 60.0}


class _Member:
    """One endpoint's routing and health state (the endpoint's own limiter lives in its teacher)."""

    __slots__ = ("teacher", "capacity", "in_flight", "failures", "out_until", "probe_s", "probing",
                 "busy_until", "served", "failed", "ejections")

    def __init__(self, teacher: Teacher, capacity: int, probe_s: float):
        self.teacher = teacher
        self.capacity = max(1, capacity)
        self.in_flight = 0
        self.failures = 0  # transport failures in a row
        self.out_until: float | None = None  # ejected until then; None = in the pool
        self.probe_s = probe_s  # how long the next ejection lasts
        self.probing = False  # the one request let through while out is in flight
        self.busy_until = 0.0  # a 429's Retry-After: route elsewhere until then
        self.served = self.failed = self.ejections = 0


class PoolTeacher:
    """``Teacher`` over several member teachers; see the module doc for routing and health."""

    def __init__(self, members: list[Teacher], *, capacities: list[int] | None = None, name: str | None = None,
                 max_retries: int = 6, max_bad_answer_retries: int = 2, backoff_s: float = 0.5,
                 eject_after: int = 3, probe_s: float = 2.0, max_probe_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 rng: Callable[[], float] = random.random):
        if not members:
            raise UserInputError("a teacher pool needs at least one member; write pool:SPEC1,SPEC2")
        if eject_after < 1 or probe_s <= 0 or max_probe_s < probe_s:
            raise UserInputError(f"teacher pool options eject_after={eject_after}, probe_s={probe_s}, max_probe_s={max_probe_s}: "
                                 "need eject_after >= 1 and 0 < probe_s <= max_probe_s")
        caps = capacities or [64] * len(members)
        self.members = [_Member(t, c, probe_s) for t, c in zip(members, caps, strict=True)]
        self.name = name or "pool:" + ",".join(t.name for t in members)
        self.max_retries, self.max_bad_answer_retries, self.backoff_s = max_retries, max_bad_answer_retries, backoff_s
        self.eject_after, self.first_probe_s, self.max_probe_s = eject_after, probe_s, max_probe_s
        self.clock, self.sleep, self.rng = clock, sleep, rng
        self._turn = 0  # rotates the tie-break between equally loaded members

    def __repr__(self) -> str:
        return f"PoolTeacher(name={self.name!r}, members={len(self.members)})"

    # -- routing ---------------------------------------------------------------------------

    def _pick(self, avoid: _Member | None) -> _Member | None:
        """The member for the next attempt, or None when every member is out (or probing)."""
        now = self.clock()
        members = self.members
        n = len(members)
        self._turn = (self._turn + 1) % n
        best: _Member | None = None
        best_key: tuple[int, float, int] | None = None
        for k in range(n):
            m = members[(self._turn + k) % n]
            if m.out_until is not None:
                if m.probing or now < m.out_until:
                    continue
                # A due probe goes first: the sooner a revived endpoint is back, the sooner it adds throughput.
                m.probing = True
                return m
            # Avoided (just failed this request) or rate limited: only if nothing better is free.
            penalty = (m is avoid) + (m.busy_until > now)
            key = (penalty, m.in_flight / m.capacity, k)
            if best_key is None or key < best_key:
                best, best_key = m, key
        return best

    def _next_probe_in(self) -> float:
        now = self.clock()
        due = [m.out_until - now for m in self.members if m.out_until is not None and not m.probing]
        return max(min(due), 0.0) if due else self.first_probe_s

    def _free_now(self, failed: _Member) -> bool:
        """Whether another member could take a retry without waiting."""
        now = self.clock()
        return any(m is not failed and (m.out_until is None or (not m.probing and now >= m.out_until)) and m.busy_until <= now
                   for m in self.members)

    # -- health ----------------------------------------------------------------------------

    # Only the probe's outcome moves a member that is out: requests sent before it was taken out
    # may still end either way (answers in the server's last moments, then dropped connections).

    def _alive(self, m: _Member, probe: bool) -> None:
        """The member answered (well, or with a 429 or a bad answer): its transport works."""
        if probe:
            log.info("teacher pool %s: %s answered its probe and is back in", self.name, m.teacher.name)
            m.out_until, m.probing, m.probe_s = None, False, self.first_probe_s
        if m.out_until is None:
            m.failures = 0

    def _transport_failure(self, m: _Member, probe: bool, err: BaseException) -> None:
        m.failed += 1
        if probe:  # out again, for longer
            m.probing = False
            m.probe_s = min(m.probe_s * 2, self.max_probe_s)
            m.out_until = self.clock() + m.probe_s
            return
        if m.out_until is not None:
            return
        m.failures += 1
        if m.failures >= self.eject_after:
            m.ejections += 1
            m.out_until = self.clock() + m.probe_s
            log.warning("teacher pool %s: %s failed %d times in a row (%s); out for %.1f s, then probed",
                        self.name, m.teacher.name, m.failures, err, m.probe_s)

    # -- Teacher protocol ------------------------------------------------------------------

    async def chat(self, messages: list[Message], tools: list[FunctionSpec] | None = None, *,
                   tool_choice: str | dict[str, Any] | None = None, response_format: dict[str, Any] | None = None,
                   temperature: float = 0.0, max_tokens: int = 512, seed: int | None = None) -> Completion:
        attempt = transient = bad = 0
        failed: _Member | None = None
        while True:
            attempt += 1
            m = self._pick(failed)
            probe = m is not None and m.probing  # _pick lets only the probe through to a member that is out
            if m is None:
                wait = self._next_probe_in()
                err: TeacherError = RetryableError(f"all {len(self.members)} endpoints of {self.name} are out "
                                                   f"(next probe in {wait:.1f} s)", retry_after=wait)
            else:
                m.in_flight += 1
                try:
                    completion = await m.teacher.chat(messages, tools, tool_choice=tool_choice, response_format=response_format,
                                                      temperature=temperature, max_tokens=max_tokens, seed=seed)
                except RateLimited as exc:
                    # The member's limiter pauses its own senders; the pool sends elsewhere meanwhile.
                    m.busy_until = self.clock() + min(exc.retry_after if exc.retry_after is not None else 1.0, MAX_RETRY_AFTER_S)
                    self._alive(m, probe)
                    err = exc
                except RetryableError as exc:
                    self._transport_failure(m, probe, exc)
                    err = exc
                except BadAnswer as exc:
                    self._alive(m, probe)
                    err = exc
                except BaseException:
                    if probe:  # a fatal answer or a cancellation: let the next request probe again
                        m.probing = False
                    raise
                else:
                    m.served += 1
                    self._alive(m, probe)
                    return completion
                finally:
                    m.in_flight -= 1
            err.attempts = None  # type: ignore[attr-defined]  # a member's own (zero-retry) count is not ours
            if isinstance(err, BadAnswer):
                bad += 1
                if bad > self.max_bad_answer_retries:
                    err.attempts = attempt  # type: ignore[attr-defined]
                    raise err
                delay = 0.0 if m is not None and self._free_now(m) else backoff_delay(bad, base_s=self.backoff_s, rng=self.rng)
            else:
                transient += 1
                if transient > self.max_retries:
                    err.attempts = attempt  # type: ignore[attr-defined]
                    raise err
                if m is not None and self._free_now(m):
                    delay = 0.0  # another member can take it now: no reason to wait
                elif isinstance(err, RetryableError) and err.retry_after is not None:
                    delay = min(err.retry_after, MAX_RETRY_AFTER_S)
                else:
                    delay = backoff_delay(transient, base_s=self.backoff_s, rng=self.rng)
            failed = m
            metrics.METRICS.retries += 1
            log.debug("teacher pool %s: attempt %d failed (%s: %s); retrying in %.2f s", self.name, attempt,
                      type(err).__name__, err, delay)
            if delay > 0:
                await self.sleep(delay)

    def snapshot(self) -> list[dict[str, Any]]:
        """Per member: name, in flight, answers served, transport failures, ejections, whether out now."""
        return [{"name": m.teacher.name, "in_flight": m.in_flight, "served": m.served, "failed": m.failed,
                 "ejections": m.ejections, "out": m.out_until is not None} for m in self.members]

    async def aclose(self) -> None:
        errors = await asyncio.gather(*(m.teacher.aclose() for m in self.members), return_exceptions=True)
        for err in errors:
            if isinstance(err, BaseException):
                raise err


def member_configs(config: TeacherConfig) -> list[dict[str, Any]]:
    """The members of a pool config: one config dict per member spec and ``endpoints`` table.

    A member inherits the pool config's limits and timeouts (each member gets its own limiter
    with them) unless its table sets its own; retries are the pool's, so members get none."""
    from engine.teachers.spec import parse_spec

    inherited = {k: v for k, v in msgspec.structs.asdict(config).items() if k not in ("spec", "endpoints", "options")}
    specs = [{"spec": s.strip()} for s in parse_spec(config.spec).target.split(",") if s.strip()]
    out = []
    for table in specs + [dict(t) for t in config.endpoints]:
        member = inherited | table
        backend = parse_spec(str(member.get("spec", ""))).backend
        if backend == "pool":
            raise UserInputError(f"teacher pool {config.spec!r} has a member that is itself a pool; list the endpoints directly")
        if backend in ("openai", "vllm"):  # the HTTP backends retry on their own unless told not to
            member |= {"max_retries": 0, "max_bad_answer_retries": 0}
        out.append(member)
    if not out:
        raise UserInputError(f"teacher pool {config.spec!r} names no members; write pool:SPEC1,SPEC2 or add [[teacher.endpoints]] tables")
    return out


def make_pool(config: TeacherConfig) -> PoolTeacher:
    """Build a ``PoolTeacher`` from a pool config (see ``member_configs``)."""
    from engine.teachers import make_teacher

    unknown = set(config.options) - set(POOL_OPTIONS)
    if unknown:
        raise UserInputError(f"teacher pool option(s) {', '.join(sorted(unknown))} unknown; use: {', '.join(POOL_OPTIONS)} "
                             "(member options go in their [[teacher.endpoints]] tables)")
    settings = POOL_OPTIONS | config.options
    configs = member_configs(config)
    # Members open sessions and start servers on first use, so one that fails to build leaves nothing to close.
    members = [make_teacher(member) for member in configs]
    return PoolTeacher(members, capacities=[int(c.get("max_concurrency", config.max_concurrency)) for c in configs],
                       max_retries=config.max_retries, max_bad_answer_retries=config.max_bad_answer_retries,
                       backoff_s=config.backoff_s, eject_after=int(settings["eject_after"]),
                       probe_s=float(settings["probe_s"]), max_probe_s=float(settings["max_probe_s"]))

