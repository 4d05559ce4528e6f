"""Retries with exponential backoff and full jitter, honouring the server's Retry-After.

Transient errors (429, 5xx, timeouts, dropped connections) get up to ``max_retries`` more
attempts; bad answers (unparsable, truncated, filtered) get a smaller budget of their own,
since asking again rarely fixes a model that misread the prompt. A fatal error, or one whose
budget is spent, propagates with ``.attempts`` set so the scheduler's dead letter says how
often it was tried. An error that already carries ``.attempts`` was exhausted by an inner
``with_retries`` and is not retried again, so nesting never multiplies the attempts.

For a 429 the wait is the server's Retry-After; the next attempt then re-enters the teacher's
rate limiter, which has paused every sender until the same moment.

``with_reasks`` is the other policy, for a model's answers rather than a server's errors: what
the teacher answered could not be used (a BadAnswer), so it is asked again at once, with
whatever the caller changes per attempt (temperature, seed, a correction shown to the model).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from engine import metrics
from engine.errors import BadAnswer, RateLimited, RetryableError, TeacherError

T = TypeVar("T")
# A Retry-After longer than this (a daily quota, say) is not waited out inside one job: the job
# retries after this long and, if still refused, ends as a dead letter to be resumed later.
MAX_RETRY_AFTER_S = 120.0


def backoff_delay(retry: int, *, base_s: float = 0.5, max_s: float = 30.0, rng: Callable[[], float] = random.random) -> float:
    """Full jitter: uniform in [0, min(max_s, base_s * 2**(retry-1))] for the ``retry``-th retry."""
    return rng() * min(max_s, base_s * (2 ** (retry - 1)))


def transient_delay(err: RetryableError, retry: int, *, base_s: float = 0.5, max_s: float = 30.0,
                    rng: Callable[[], float] = random.random) -> float:
    """The wait before the ``retry``-th retry of ``err``: a 429's Retry-After as sent (capped), else
    full-jitter backoff but never shorter than a Retry-After the server sent with a 5xx."""
    if isinstance(err, RateLimited) and err.retry_after is not None:
        return min(err.retry_after, MAX_RETRY_AFTER_S)
    return max(min(err.retry_after or 0.0, MAX_RETRY_AFTER_S), backoff_delay(retry, base_s=base_s, max_s=max_s, rng=rng))


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    max_retries: int = 6,
    max_bad_answer_retries: int = 2,
    base_s: float = 0.5,
    max_s: float = 30.0,
    rng: Callable[[], float] = random.random,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
) -> T:
    """Await ``call()`` until it succeeds or its error is fatal / out of budget.

    ``on_retry(error, attempt, delay)`` runs before each wait (for logging)."""
    attempt = transient = bad = 0
    while True:
        attempt += 1
        try:
            return await call()
        except (RetryableError, BadAnswer) as err:
            if getattr(err, "attempts", None) is not None:
                raise
            error: BaseException = err  # `err` is unbound after the except block
            if isinstance(err, BadAnswer):
                bad += 1
                if bad > max_bad_answer_retries:
                    err.attempts = attempt  # type: ignore[attr-defined]
                    raise
                delay = backoff_delay(bad, base_s=base_s, max_s=max_s, rng=rng)
            else:
                transient += 1
                if transient > max_retries:
                    err.attempts = attempt  # type: ignore[attr-defined]
                    raise
                delay = transient_delay(err, transient, base_s=base_s, max_s=max_s, rng=rng)
        except TeacherError as err:  # fatal: no retry
            if getattr(err, "attempts", None) is None:
                err.attempts = attempt  # type: ignore[attr-defined]
            raise
        metrics.METRICS.retries += 1
        if on_retry is not None:
            on_retry(error, attempt, delay)
        await sleep(delay)


async def with_reasks(
    ask: Callable[[int, BadAnswer | None], Awaitable[T]],
    *,
    attempts: int,
    transient: bool = False,
    rng: Callable[[], float] = random.random,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> T:
    """Await ``ask(attempt, last)`` until it returns, at most ``attempts`` times; ``last`` is the
    previous attempt's BadAnswer (None at first), for a caller that shows the model its mistake.

    A BadAnswer is asked again without waiting: nothing is overloaded, the model misread the
    prompt, and what helps is a new temperature, seed or correction, not time. ``transient``: a
    RetryableError (the teacher's own retries spent, or a teacher without any) costs an attempt
    too, after ``transient_delay``; otherwise it propagates at once. The last error propagates."""
    last: BadAnswer | None = None
    waits = 0
    for attempt in range(attempts):
        if attempt:
            metrics.METRICS.retries += 1
        try:
            return await ask(attempt, last)
        except BadAnswer as err:
            error: Exception = err
            last = err
        except RetryableError as err:
            if not transient:
                raise
            error = err
            waits += 1
            if attempt + 1 < attempts:
                await sleep(transient_delay(err, waits, rng=rng))
    raise error
