"""The Ray actor that works through leases: blocks of work items, each result streamed back alone.

A ``LeaseWorker`` holds one ``Work`` object (built in the actor's own process by the factory the
driver names: its own teacher clients, its own local vLLM on its GPU) and runs every item of a
lease at once on its event loop. It writes nothing: each item's outcome goes back to the driver,
which is the run folder's single writer, so an actor that dies (kill -9) loses only unfinished
work, which the driver leases again (``engine.ray_leases``).

A failure crosses the process boundary as its scheduler-relevant facts (``Failure``), not as a
pickled exception: exception classes with keyword-only constructors (``JobFailed``) cannot be
unpickled, and the dead letter must read exactly as a single-process run would have written it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import msgspec

from engine import metrics
from engine.errors import JobFailed, failure_kind

# Counters each actor reports, added up by the driver (engine.ray_leases.start_pool): its METRICS
# (progress, run_jobs' summary) and its Work's spend (a run's calls and tokens).
METRIC_FIELDS = ("requests", "prompt_tokens", "completion_tokens", "rate_limited", "retries", "cost_usd")
SPEND_FIELDS = ("calls", "prompt_tokens", "completion_tokens")


def work_counters(spend: Any) -> dict[str, float]:
    """A ``Work.counters()``: this process's METRICS and ``spend`` (a ``distill.spend.Spend``), as running totals."""
    m = metrics.METRICS
    return {**{f"m.{k}": getattr(m, k) for k in METRIC_FIELDS}, **{f"s.{k}": getattr(spend, k) for k in SPEND_FIELDS}}


class Work(Protocol):
    """What a lease runs: one item -> the records to commit, plus counters the driver adds up."""

    async def run(self, item: Any) -> list[tuple[str, Any]]: ...

    def counters(self) -> dict[str, float]: ...

    async def aclose(self) -> None: ...


class Failure(msgspec.Struct, kw_only=True):
    """A failed item as the scheduler needs it: how to treat it, its dead letter's fields."""

    kind: str  # engine.errors.failure_kind: data | outage | refused
    line: str  # engine.scheduler.one_line_error of the original exception
    stage: str | None  # JobFailed's stage, None for any other exception (the scheduler's default applies)
    attempts: int | None
    status: int | None  # HTTP status of a teacher error, so a refusal stays a refusal


def describe_failure(exc: BaseException) -> Failure:
    from engine.scheduler import one_line_error

    attempts = getattr(exc, "attempts", None)
    status = getattr(exc, "status", None)
    return Failure(kind=failure_kind(exc), line=one_line_error(exc), stage=exc.stage if isinstance(exc, JobFailed) else None,
                   attempts=attempts if isinstance(attempts, int) else None, status=status if isinstance(status, int) else None)


class LeaseWorker:
    """Ray actor (wrapped with ``ray.remote`` by the driver, so this module imports without Ray)."""

    def __init__(self, factory: Callable[..., Work], *args: Any):
        self._factory, self._args = factory, args
        self._work: Work | None = None
        self._sent: dict[str, float] = {}

    def _delta(self) -> dict[str, float]:
        """Counters since the last item reported: summed by the driver, they are the actor's totals,
        and an actor killed mid-lease loses only what it had not reported."""
        now = self._work.counters() if self._work is not None else {}
        delta = {k: v - self._sent.get(k, 0) for k, v in now.items() if v != self._sent.get(k, 0)}
        self._sent = now
        return delta

    async def run_lease(self, items: list[Any]) -> AsyncIterator[tuple[int, Any, dict[str, float]]]:
        """Yields ``(index in the lease, records | Failure, counters delta)`` as each item finishes."""
        if self._work is None:
            self._work = self._factory(*self._args)
        work = self._work

        async def one(i: int, item: Any) -> tuple[int, Any]:
            try:
                return i, await work.run(item)
            except Exception as exc:  # noqa: BLE001 - every failure is reported to the driver, which decides
                return i, describe_failure(exc)

        tasks = [asyncio.ensure_future(one(i, item)) for i, item in enumerate(items)]
        try:
            for next_done in asyncio.as_completed(tasks):
                i, outcome = await next_done
                yield i, outcome, self._delta()
        finally:
            for task in tasks:  # the driver went away (or cancelled the lease): stop the rest
                task.cancel()

    async def aclose(self) -> None:
        if self._work is not None:
            await self._work.aclose()
